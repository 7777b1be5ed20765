/**
 * The write side of a shared-memory handle: bytes go straight into the ring
 * while it has room; what does not fit waits here, in order, until the reader
 * makes room (it rings us at half a free ring).
 */
import { errnoException } from '../errors';
import type { HandleCore } from './core';

interface PendingWrite {
  bufs: Uint8Array[];
  cb: (err?: Error | null) => void;
}

/**
 * A write still in progress when its handle closes is cancelled by libuv
 * (UV_ECANCELED). Node before 22.9 calls it back without an error once the
 * socket is destroyed; 22.9 and later pass `write ECANCELED` on (net's
 * onWriteComplete looks at the status first). Cancelled writes here follow
 * the running Node.
 */
const [major, minor] = process.versions.node.split('.').map(Number);
const CANCEL_WITH_ERROR = major > 22 || (major === 22 && minor >= 9);

export function cancelled(): Error | null {
  return CANCEL_WITH_ERROR ? errnoException('ECANCELED', 'write') : null;
}

export class Writer {
  private queue: PendingWrite[] = [];
  /** One write went to a peer that had closed (accepted, as TCP does): later ones fail. */
  private wroteToClosed = false;

  constructor(private readonly handle: HandleCore) {}

  /** Writes are waiting for room. */
  get pending(): boolean {
    return this.queue.length > 0;
  }

  /**
   * One write or writev. `eof`: we have read the peer's end already (a reset
   * the peer answers a late write with is then not read any more).
   */
  write(bufs: Uint8Array[], cb: (err?: Error | null) => void, eof: boolean): void {
    const handle = this.handle;
    if (handle.closed) {
      // As a closed kernel handle: nothing goes anywhere (the slot may belong to another connection by now).
      cb(errnoException('EBADF', 'write'));
      return;
    }
    let total = 0;
    for (const buf of bufs) total += buf.byteLength;
    handle.bytesWritten += total;
    if (handle.ch.peerClosed()) {
      // The peer will never read this. TCP takes the first write if it fits
      // (the peer answers it with a reset), later writes fail with EPIPE; the
      // reset shows up on reading only while we still read.
      if (!this.wroteToClosed && total <= handle.ch.writable()) {
        this.wroteToClosed = true;
        cb();
        // A peer that closed in order sent its FIN before the reset: reads end with it, as over TCP.
        if (!eof && handle.ch.peerEnd() !== 'fin') setImmediate(() => handle.fail('ECONNRESET', 'read'));
      } else {
        this.wroteToClosed = true;
        cb(errnoException('EPIPE', 'write'));
      }
      return;
    }
    if (this.queue.length === 0) {
      let count: number;
      try {
        count = handle.ch.write(bufs);
      } catch (err) {
        cb(err as Error);
        return;
      }
      if (count === total) {
        cb();
        return;
      }
      bufs = advance(bufs, count);
      total -= count;
    }
    this.queue.push({ bufs, cb });
    handle.writeQueueSize += total;
    handle.updateActive();
    if (this.queue.length === 1) this.waitForRoom();
  }

  private waitForRoom(): void {
    // Say we wait, then look again: room may have appeared in between.
    try {
      if (!this.handle.ch.sleepWrite()) this.flush();
    } catch (err) {
      this.handle.corrupt(err as Error);
    }
  }

  /** Moves what waits into the ring, as far as it has room. */
  flush(): void {
    const handle = this.handle;
    while (this.queue.length > 0 && !handle.closed) {
      const pending = this.queue[0];
      let count: number;
      try {
        count = handle.ch.write(pending.bufs);
      } catch (err) {
        this.queue.shift();
        pending.cb(err as Error);
        return;
      }
      if (count > 0) {
        handle.writeQueueSize -= count;
        pending.bufs = advance(pending.bufs, count);
        handle.socket?._unrefTimer();
      }
      if (pending.bufs.length > 0) {
        if (handle.ch.sleepWrite()) return;
        continue;
      }
      this.queue.shift();
      handle.updateActive();
      pending.cb();
    }
  }

  /** The handle closed: what waits is called back on a later turn (cancelled, as libuv does), then `cb`. */
  cancel(cb?: () => void): void {
    const dropped = this.queue;
    this.queue = [];
    this.handle.writeQueueSize = 0;
    setImmediate(() => {
      for (const pending of dropped) pending.cb(cancelled());
      if (cb) cb();
    });
  }
}

/** Drops the first `count` bytes of a list of chunks. */
function advance(bufs: Uint8Array[], count: number): Uint8Array[] {
  let i = 0;
  while (i < bufs.length && count >= bufs[i].byteLength) {
    count -= bufs[i].byteLength;
    i++;
  }
  const rest = bufs.slice(i);
  if (count > 0 && rest.length > 0) rest[0] = rest[0].subarray(count);
  return rest;
}
