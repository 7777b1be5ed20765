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

/** Writes of at most this many bytes are staged (see Writer). */
const STAGE_MAX = 16 * 1024;
/** Bytes staged at most before they go into the ring. */
const STAGE_SIZE = 64 * 1024;

/** Stages not in use (a connection takes one only while it has bytes staged). */
const spareStages: Uint8Array[] = [];
const SPARE_STAGES = 16;

/** Writers with staged bytes: they go into the rings before the process exits (process.exit() included). */
const staging = new Set<Writer>();
let exitHook = false;

function endTurn(writer: Writer): void {
  writer.endTurn();
}

export class Writer {
  private queue: PendingWrite[] = [];
  /** One write went to a peer that had closed (accepted, as TCP does): later ones fail. */
  private wroteToClosed = false;
  /**
   * Small writes after the first of a turn are copied here and reported done
   * at once, and go into the ring together once the JavaScript running now
   * returns (before the event loop waits for anything, so no later than a
   * kernel socket's would be seen): many small writes of one turn cost two
   * ring writes, and the reader gets them in two chunks. Only as many bytes
   * are staged as the ring has room for, so staged bytes always fit when they
   * go.
   */
  private stage: Uint8Array | undefined;
  private staged = 0;
  /** Ring room at the last look, less what was staged since (the peer's reads only make more). */
  private room = 0;
  private stagedEof = false;
  /** A small write went into the ring this turn: the next ones of the turn are staged. */
  private busyTurn = false;
  /** Staged bytes were reported written already: an error now fails the socket. */
  private readonly stagedDone = (err?: Error | null): void => {
    if (err) this.handle.socket?.destroy(err);
  };

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
    if (total <= STAGE_MAX && this.queue.length === 0) {
      if (!this.busyTurn) {
        // The first write of a turn goes straight in (an answer to wait for: the peer starts on it at once).
        this.busyTurn = true;
        process.nextTick(endTurn, this);
      } else if (this.tryStage(bufs, total, eof)) {
        cb();
        return;
      }
    }
    if (this.staged > 0) this.flushStaged();
    this.room = 0; // the ring's room is looked at again before the next write is staged
    this.send(bufs, total, cb, eof);
  }

  /**
   * A small write that is done now or not taken at all (Socket#write's fast
   * path, which skips the Writable machinery): into the ring if it is the
   * first of the turn and fits, else into the stage. False: nothing was
   * written, the ordinary path takes it (and says what is wrong, if anything).
   */
  writeNow(buf: Uint8Array, eof: boolean): boolean {
    const total = buf.byteLength;
    const handle = this.handle;
    if (total > STAGE_MAX || this.queue.length > 0 || handle.closed) return false;
    if (this.busyTurn) {
      if (!this.tryStage(buf, total, eof)) return false;
      handle.bytesWritten += total;
      return true;
    }
    const ch = handle.ch;
    let count: number;
    try {
      if (ch.peerClosed() || ch.writable() < total) return false;
      count = ch.write([buf]);
    } catch {
      return false;
    }
    this.busyTurn = true;
    process.nextTick(endTurn, this);
    this.room = 0;
    handle.bytesWritten += total;
    // The ring had room for all of it; a ring whose indices were tampered with may take less: the rest waits, reported
    // done, in a copy of its own (the caller may write into its buffer again once we return: a scratch buffer does).
    if (count < total) this.send([new Uint8Array(buf.subarray(count))], total - count, this.stagedDone, eof);
    return true;
  }

  /** Copies a small write into the stage, if it may go there now. */
  private tryStage(bufs: Uint8Array[] | Uint8Array, total: number, eof: boolean): boolean {
    if (this.staged + total > STAGE_SIZE) return false;
    const ch = this.handle.ch;
    if (total > this.room) {
      try {
        if (ch.peerClosed()) return false;
        this.room = ch.writable() - this.staged;
      } catch {
        return false; // the normal path says what is wrong
      }
      if (total > this.room) return false;
    }
    let stage = this.stage;
    if (!stage) stage = this.stage = spareStages.pop() ?? new Uint8Array(STAGE_SIZE);
    let at = this.staged;
    if (bufs instanceof Uint8Array) {
      stage.set(bufs, at);
      at += total;
    } else {
      for (const buf of bufs) {
        stage.set(buf, at);
        at += buf.byteLength;
      }
    }
    if (this.staged === 0) {
      staging.add(this);
      if (!exitHook) {
        exitHook = true;
        process.on('exit', () => {
          for (const writer of staging) writer.flushStaged();
        });
      }
    }
    this.staged = at;
    this.room -= total;
    this.stagedEof = eof;
    return true;
  }

  /** The turn of the first write ended: what the others staged goes into the ring. */
  endTurn(): void {
    this.busyTurn = false;
    this.flushStaged();
  }

  /** Staged bytes go into the ring (before anything else is written, a FIN, or a close). */
  flushStaged(): void {
    const count = this.staged;
    if (count === 0) return;
    this.staged = 0;
    staging.delete(this);
    const handle = this.handle;
    if (handle.closed) return; // a reset drops them, as it drops a kernel socket's unsent bytes
    const stage = this.stage!;
    this.stage = undefined;
    this.send([stage.subarray(0, count)], count, this.stagedDone, this.stagedEof);
    // Used again unless the ring did not take it all (a peer that broke its ring): then it waits in the queue.
    if (this.queue.length === 0 && spareStages.length < SPARE_STAGES) spareStages.push(stage);
  }

  private send(bufs: Uint8Array[], total: number, cb: (err?: Error | null) => void, eof: boolean): void {
    const handle = this.handle;
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
    if (this.stage && spareStages.length < SPARE_STAGES) spareStages.push(this.stage);
    this.stage = undefined;
    this.staged = 0;
    staging.delete(this);
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
