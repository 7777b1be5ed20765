/**
 * ShmHandle: what a net.Socket sees as its `_handle` when its bytes move
 * through shared memory. It offers the parts of libuv's TCP handle that
 * node:net calls (readStart/readStop, shutdown, close, reset, ref/unref,
 * getsockname/getpeername, setNoDelay/setKeepAlive, the byte counters) and
 * drives the socket the way libuv does: data with push(), EOF with
 * push(null), errors with destroy(err).
 */
import type { Socket as NetSocket } from 'node:net';
import { AsyncResource } from 'node:async_hooks';
import { Channel } from '../shm/channel';
import { formatAddr } from '../shm/directory';
import * as Lay from '../shm/layout';
import { internals } from './internals';
import { errnoException } from './errors';
import { debug } from './debug';

/** Reads are delivered in chunks of at most this many bytes, as libuv does. */
const READ_CHUNK = 64 * 1024;

/**
 * A write still in progress when its handle closes is cancelled by libuv
 * (UV_ECANCELED). Node before 22.9 calls it back without an error once the
 * socket is destroyed; 22.9 and later pass `write ECANCELED` on (net's
 * onWriteComplete looks at the status first). Cancelled writes here follow
 * the running Node.
 */
const [major, minor] = process.versions.node.split('.').map(Number);
const CANCEL_WITH_ERROR = major > 22 || (major === 22 && minor >= 9);

function cancelled(): Error | null {
  return CANCEL_WITH_ERROR ? errnoException('ECANCELED', 'write') : null;
}

interface PendingWrite {
  bufs: Uint8Array[];
  cb: (err?: Error | null) => void;
}

interface ShutdownReq {
  oncomplete?: (this: unknown, status: number) => void;
}

interface ConnectReq {
  oncomplete: (status: number, handle: unknown, req: unknown, readable: boolean, writable: boolean) => void;
  address: string;
  port: number;
}

/** The kernel socket held back while a shared-memory connect is tried. */
interface HeldConnect {
  req: ConnectReq;
  tcp: TcpLike;
  connect: (this: TcpLike, req: ConnectReq, address: string, port: number) => number;
}

export interface TcpLike {
  close(cb?: () => void): void;
  ref(): void;
  unref(): void;
  hasRef?(): boolean;
  getsockname?(out: { port?: number; address?: string; family?: string }): number;
  onread?: unknown;
  [k: symbol]: unknown;
}

type SocketLike = NetSocket & {
  _handle: unknown;
  _unrefTimer(): void;
  push(chunk: Buffer | null): boolean;
  read(n?: number): unknown;
  destroy(err?: Error): unknown;
  [k: symbol]: unknown;
};

export class ShmHandle {
  reading = false;
  bytesRead = 0;
  bytesWritten = 0;
  writeQueueSize = 0;
  readonly fd = -1;
  onread: unknown = null;
  readonly transport = 'shm';
  readonly ch: Channel;
  [k: symbol]: unknown;

  private refd = true;
  private active = false;
  private closed = false;
  private eof = false;
  private pumpQueued = false;
  private queue: PendingWrite[] = [];
  private held: HeldConnect | null = null;
  /** 0: peer open; 1: one write went to a closed peer (accepted, as TCP does); 2: later writes fail. */
  private wroteToClosed = 0;
  private peerDeathSeen = false;
  /** The server took the connection (always true on the server's side). */
  private accepted: boolean;
  private asyncId = -1;
  private shutdownReq: ShutdownReq | null = null;

  constructor(ch: Channel) {
    this.ch = ch;
    this.accepted = ch.side === 'server';
    ch.onchange = () => this.onChange();
  }

  private get socket(): SocketLike | undefined {
    return this[internals.owner] as SocketLike | undefined;
  }

  // -- connecting (client side) ----------------------------------------------

  /**
   * The request is in place: as a kernel connect completes from the listener's
   * backlog, before the server's code accepts, this one completes on the next
   * tick, unless refused by then (`held` then carries on over TCP). Bytes
   * written meanwhile wait in the ring for the accept.
   */
  beginConnect(held: HeldConnect): void {
    this.held = held;
    this.refd = held.tcp.hasRef ? held.tcp.hasRef() : true;
    this.updateActive();
    process.nextTick(() => this.onChange());
  }

  private checkConnect(): void {
    const held = this.held!;
    const st = this.ch.state();
    const gone = this.ch.peerGone || (this.ch.peerFlags() & Lay.F_DEAD) !== 0;
    if (st === Lay.SLOT_REFUSED || st === -1 || gone) {
      this.fallBack(st === Lay.SLOT_REFUSED ? 'refused' : 'listener went away');
      return;
    }
    this.held = null;
    this.accepted = st === Lay.SLOT_ESTABLISHED;
    this.updateActive();
    held.tcp.close();
    held.req.oncomplete(0, this, held.req, true, true);
    // Bytes or a FIN may have come with the accept.
    this.onChange();
  }

  /** Connected but not yet accepted: a refusal now (the listener closed, its owner died) is a reset, as over TCP. */
  private checkAccepted(): boolean {
    const st = this.ch.state();
    if (st === Lay.SLOT_ESTABLISHED) {
      this.accepted = true;
      return true;
    }
    if (st === Lay.SLOT_REFUSED || st === -1) {
      this.fail('ECONNRESET', 'read');
      return false;
    }
    return true;
  }

  /** The shared-memory connect failed: carry on with the kernel socket, as net would have. */
  private fallBack(reason: string): void {
    const held = this.held!;
    this.held = null;
    this.closed = true;
    this.ch.release(Lay.F_RST);
    this.updateActive();
    const sock = this.socket;
    debug('shared-memory connect to %s:%d %s: falling back to TCP', held.req.address, held.req.port, reason);
    if (!sock || sock.destroyed) {
      held.tcp.close();
      return;
    }
    sock._handle = held.tcp;
    sock[kTransport] = 'tcp';
    if (!this.refd) held.tcp.unref();
    const err = held.connect.call(held.tcp, held.req, held.req.address, held.req.port);
    if (err) held.req.oncomplete(err, held.tcp, held.req, false, false);
  }

  // -- events -------------------------------------------------------------------

  private onChange(): void {
    try {
      this.react();
    } catch (e) {
      // The ring's errors (shared memory that makes no sense) fail this socket;
      // anything else was thrown by the application's listeners: theirs, as in net.
      if (!String((e as { code?: unknown })?.code ?? '').startsWith('ERR_ZIVM_')) throw e;
      this.corrupt(e as Error);
    }
  }

  private react(): void {
    if (this.closed) return;
    if (this.shutdownReq) this.completeShutdown();
    if (this.held) {
      this.checkConnect();
      return;
    }
    if (!this.accepted && !this.checkAccepted()) return;
    if (this.queue.length > 0) this.flush();
    if (this.closed) return;
    if (this.reading) this.pump();
    if (this.closed) return;
    this.checkPeer();
  }

  /** Moves bytes from the ring into the socket while it wants them. */
  private pump(): void {
    const ch = this.ch;
    for (;;) {
      if (!this.reading || this.closed || this.eof) return;
      const pf = ch.peerFlags();
      if (pf & Lay.F_RST) {
        this.fail('ECONNRESET', 'read');
        return;
      }
      let buf: Buffer | null;
      try {
        buf = ch.read(READ_CHUNK);
      } catch (e) {
        this.corrupt(e as Error);
        return;
      }
      const sock = this.socket;
      if (!sock) return;
      if (buf !== null) {
        this.bytesRead += buf.length;
        sock._unrefTimer();
        if (!sock.push(buf)) {
          this.reading = false;
          this.updateActive();
          return;
        }
        continue;
      }
      // Empty. The flags were read before the ring, so a FIN seen then
      // means every byte before it has been read now.
      if (pf & Lay.F_FIN || ((pf & Lay.F_DEAD || ch.peerGone) && this.peerDied() === 'fin')) {
        this.eof = true;
        this.reading = false;
        this.updateActive();
        sock._unrefTimer();
        sock.push(null);
        sock.read(0);
        return;
      }
      if (pf & Lay.F_DEAD || ch.peerGone) {
        this.fail('ECONNRESET', 'read');
        return;
      }
      if (ch.sleepRead()) return;
    }
  }

  /** How a dead peer looks to us: TCP resets if it died with our bytes unread, else it sent a FIN. */
  private peerDied(): 'fin' | 'rst' {
    return this.ch.unreadByPeer() > 0 ? 'rst' : 'fin';
  }

  /** Things that matter even while nobody reads: a reset, a dead peer, a closed peer with writes waiting. */
  private checkPeer(): void {
    const pf = this.ch.peerFlags();
    const dead = (pf & Lay.F_DEAD) !== 0 || this.ch.peerGone;
    if (pf & Lay.F_RST) {
      this.fail('ECONNRESET', 'read');
      return;
    }
    if (dead && !this.peerDeathSeen) {
      this.peerDeathSeen = true;
      if (this.peerDied() === 'rst') {
        this.fail('ECONNRESET', 'read');
        return;
      }
    }
    if (pf & Lay.F_CLOSED && this.queue.length > 0) {
      // Nobody will ever read what is waiting.
      this.fail('ECONNRESET', 'write');
    }
  }

  private fail(code: string, syscall: string): void {
    const sock = this.socket;
    if (!sock || sock.destroyed || this.closed) return;
    sock.destroy(errnoException(code, syscall));
  }

  private corrupt(e: Error): void {
    debug('slot %d: %s', this.ch.slot, e.message);
    const sock = this.socket;
    if (!sock || sock.destroyed || this.closed) return;
    sock.destroy(e);
  }

  // -- the handle interface node:net uses ---------------------------------------

  readStart(): number {
    if (this.closed) return 0;
    this.reading = true;
    this.updateActive();
    if (!this.pumpQueued && !this.held) {
      this.pumpQueued = true;
      process.nextTick(() => {
        this.pumpQueued = false;
        if (this.reading && !this.held) this.onChange();
      });
    }
    return 0;
  }

  readStop(): number {
    this.reading = false;
    this.updateActive();
    return 0;
  }

  /** Called by Socket#_writeGeneric with the bytes of one write or writev. */
  writeBuffers(bufs: Uint8Array[], cb: (err?: Error | null) => void): void {
    if (this.closed) {
      // As a closed kernel handle: nothing goes anywhere (the slot may belong to another connection by now).
      cb(errnoException('EBADF', 'write'));
      return;
    }
    let total = 0;
    for (const b of bufs) total += b.byteLength;
    this.bytesWritten += total;
    const pf = this.ch.peerFlags();
    if (pf & (Lay.F_CLOSED | Lay.F_RST | Lay.F_DEAD) || this.ch.peerGone) {
      // The peer will never read this. TCP takes the first write if it fits
      // (the peer answers it with a reset), later writes fail with EPIPE; the
      // reset shows up on reading only while we still read.
      if (this.wroteToClosed === 0 && total <= this.ch.writable()) {
        this.wroteToClosed = 1;
        cb();
        if (!this.eof) setImmediate(() => this.fail('ECONNRESET', 'read'));
      } else {
        this.wroteToClosed = 1;
        cb(errnoException('EPIPE', 'write'));
      }
      return;
    }
    if (this.queue.length === 0) {
      let n: number;
      try {
        n = this.ch.write(bufs);
      } catch (e) {
        cb(e as Error);
        return;
      }
      if (n === total) {
        cb();
        return;
      }
      bufs = advance(bufs, n);
      total -= n;
    }
    this.queue.push({ bufs, cb });
    this.writeQueueSize += total;
    this.updateActive();
    if (this.queue.length === 1) this.waitForRoom();
  }

  private waitForRoom(): void {
    // Say we wait, then look again: room may have appeared in between.
    try {
      if (!this.ch.sleepWrite()) this.flush();
    } catch (e) {
      this.corrupt(e as Error);
    }
  }

  private flush(): void {
    const ch = this.ch;
    while (this.queue.length > 0 && !this.closed) {
      const w = this.queue[0];
      let n: number;
      try {
        n = ch.write(w.bufs);
      } catch (e) {
        this.queue.shift();
        w.cb(e as Error);
        return;
      }
      if (n > 0) {
        this.writeQueueSize -= n;
        w.bufs = advance(w.bufs, n);
        this.socket?._unrefTimer();
      }
      if (w.bufs.length > 0) {
        if (ch.sleepWrite()) return;
        continue;
      }
      this.queue.shift();
      this.updateActive();
      w.cb();
    }
  }

  /** Sends the FIN (every byte is already in the ring) and completes later, as libuv does. */
  shutdown(req: ShutdownReq): number {
    this.ch.signal(Lay.F_FIN);
    this.shutdownReq = req;
    setImmediate(() => this.completeShutdown());
    return 0;
  }

  /** Our FIN is out before anything the peer answers to it comes in: 'finish' before 'end'. */
  private completeShutdown(): void {
    const req = this.shutdownReq;
    if (!req) return;
    this.shutdownReq = null;
    req.oncomplete?.call(req, 0);
  }

  close(cb?: () => void): void {
    if (this.closed) return;
    this.closed = true;
    if (this.held) {
      this.held.tcp.close();
      this.held = null;
      this.ch.release(Lay.F_RST);
    } else {
      // Unread bytes make TCP answer a close with a reset rather than a FIN
      // (and so does a ring too corrupt to tell).
      let unread = true;
      try {
        unread = !this.eof && this.ch.rx.available() > 0;
      } catch {
        /* corrupt: reset */
      }
      // Not accepted yet: the request stays for the server, with what we wrote and our FIN.
      this.ch.release(unread ? Lay.F_RST : Lay.F_FIN, !this.accepted);
    }
    const dropped = this.queue;
    this.queue = [];
    this.writeQueueSize = 0;
    this.reading = false;
    this.updateActive();
    setImmediate(() => {
      // As net does for writes cut short by destroy().
      for (const w of dropped) w.cb(cancelled());
      if (cb) cb();
    });
  }

  reset(cb?: () => void): number {
    if (this.closed) return 0;
    this.closed = true;
    const connected = !this.held;
    if (this.held) {
      this.held.tcp.close();
      this.held = null;
    }
    // Connected but not accepted yet: the server accepts it and sees the reset, as over TCP.
    this.ch.release(Lay.F_RST, connected && !this.accepted);
    const dropped = this.queue;
    this.queue = [];
    this.writeQueueSize = 0;
    this.reading = false;
    this.updateActive();
    setImmediate(() => {
      for (const w of dropped) w.cb(cancelled());
      if (cb) cb();
    });
    return 0;
  }

  ref(): void {
    this.refd = true;
    this.updateActive();
  }

  unref(): void {
    this.refd = false;
    this.updateActive();
  }

  hasRef(): boolean {
    return this.refd;
  }

  getsockname(out: Record<string, unknown>): number {
    const e = this.ch.endpoints();
    out.address = formatAddr(e.local);
    out.family = e.local.family === 6 ? 'IPv6' : 'IPv4';
    out.port = e.localPort;
    return 0;
  }

  getpeername(out: Record<string, unknown>): number {
    const e = this.ch.endpoints();
    out.address = formatAddr(e.remote);
    out.family = e.remote.family === 6 ? 'IPv6' : 'IPv4';
    out.port = e.remotePort;
    return 0;
  }

  /** An async id of its own, as every libuv handle has (node:http asks for it). */
  getAsyncId(): number {
    if (this.asyncId < 0) this.asyncId = new AsyncResource('ZIVMSHM').asyncId();
    return this.asyncId;
  }

  setNoDelay(_enable: boolean): number {
    return 0;
  }

  setKeepAlive(_enable: boolean, _delay: number): number {
    return 0;
  }

  /** A libuv handle keeps the loop alive while it is referenced and has work: emulate that. */
  private updateActive(): void {
    const want = this.refd && !this.closed && (this.reading || this.queue.length > 0 || this.held !== null);
    if (want === this.active) return;
    this.active = want;
    if (want) this.ch.d.ref();
    else this.ch.d.unref();
  }
}

/** socket[kTransport] remembers the transport after the handle is gone. */
export const kTransport = Symbol('zivm.transport');

/** Drops the first `n` bytes of a list of chunks. */
function advance(bufs: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < bufs.length && n >= bufs[i].byteLength) {
    n -= bufs[i].byteLength;
    i++;
  }
  const rest = bufs.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0].subarray(n);
  return rest;
}
