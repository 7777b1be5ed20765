/**
 * ShmHandle: what a net.Socket sees as its `_handle` when its bytes move
 * through shared memory. It offers the parts of libuv's TCP handle that
 * node:net calls (readStart/readStop, shutdown, close, reset, ref/unref,
 * getsockname/getpeername, setNoDelay/setKeepAlive, the byte counters) and
 * drives the socket the way libuv does: data with push(), EOF with
 * push(null), errors with destroy(err), one read per turn of the loop's
 * callbacks.
 *
 * It is built on Node's JSStream where there is one (see streambase.ts), so
 * it is also a native stream: the HTTP parser, HTTP/2 and TLS can take it as
 * they take a TCP handle. Once something asks whether it is one
 * (`isStreamBase`, which those consumers do before they take a stream), reads
 * are handed in through the native stream (readBuffer/emitEOF) from outside
 * any JavaScript, as libuv hands a TCP handle's reads to its consumer, and
 * the consumer's writes come out through onwrite().
 */
import type { Socket as NetSocket } from 'node:net';
import os from 'node:os';
import { AsyncResource } from 'node:async_hooks';
import { Channel } from '../shm/channel';
import { formatAddr } from '../shm/addrs';
import { internals } from './internals';
import { jsStreamClass } from './streambase';
import { errnoException, ZivmError } from '../errors';
import { debug } from '../log';
import { kTransport } from '../symbols';

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

/** A status for a native stream request: 0, or a negative errno as libuv gives them. */
function status(err?: Error | null): number {
  if (!err) return 0;
  const errno = (err as { errno?: unknown }).errno;
  return typeof errno === 'number' && errno < 0 ? errno : -((os.constants.errno as Record<string, number>).EPIPE ?? 32);
}

const JSStream = jsStreamClass();
/** The native stream under a handle, where this Node.js has one. */
const Base = (JSStream ?? class {}) as new () => object;
/** Whether shared-memory handles are native streams here. */
export const nativeStreams = JSStream !== undefined;
/** Reads handed to a native stream, to deliver from outside any JavaScript: the chunk, or null for the end. */
const EOF = null;

export class ShmHandle extends Base {
  reading = false;
  bytesRead = 0;
  bytesWritten = 0;
  writeQueueSize = 0;
  readonly fd = -1;
  readonly transport = 'shm';
  readonly ch: Channel;
  [k: symbol]: unknown;

  /** Reads go through the native stream (a native consumer may have taken it). */
  private nativeReads = false;
  /** The read waiting to be handed to the native stream. */
  private feeding: Buffer | null | undefined = undefined;
  /** Hands `feeding` to the native stream; called by the domain from outside JavaScript. */
  readonly feed = (): void => this.feedNow();

  private refd = true;
  private active = false;
  private closed = false;
  private eof = false;
  private queue: PendingWrite[] = [];
  private held: HeldConnect | null = null;
  /** 0: peer open; 1: one write went to a closed peer (accepted, as TCP does); 2: later writes fail. */
  private wroteToClosed = 0;
  private peerDeathSeen = false;
  /**
   * The peer reset (or died with our bytes unread) while we were not reading:
   * as a kernel socket, reads then give what is left and the end, not an error.
   */
  private resetUnseen = false;
  /** The server took the connection (always true on the server's side). */
  private accepted: boolean;
  private asyncId = -1;
  private shutdownReq: ShutdownReq | null = null;

  constructor(ch: Channel) {
    super();
    // net sets `onread` on its handle; on a native stream that is an accessor of its own.
    if (!JSStream) (this as unknown as { onread: unknown }).onread = null;
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
    // A listener of this process takes the request on the loop's next look
    // (as its listening socket would be looked at), before this completes.
    if (this.ch.peer === this.ch.d.id) this.ch.again();
    else process.nextTick(() => this.onChange());
  }

  private checkConnect(): void {
    const held = this.held!;
    const st = this.ch.request();
    if (st === 'refused' || st === 'lost' || this.ch.peerDied()) {
      this.fallBack(st === 'refused' ? 'refused' : 'listener went away');
      return;
    }
    this.held = null;
    this.accepted = st === 'accepted';
    this.updateActive();
    held.tcp.close();
    held.req.oncomplete(0, this, held.req, true, true);
    // Bytes or a FIN may have come with the accept: look on a later turn, as a kernel socket would.
    this.ch.again();
  }

  /** Connected but not yet accepted: a refusal now (the listener closed, its owner died) is a reset, as over TCP. */
  private checkAccepted(): boolean {
    const st = this.ch.request();
    if (st === 'accepted') {
      this.accepted = true;
      return true;
    }
    if (st === 'refused' || st === 'lost') {
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
    this.ch.close('reset');
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
      if (!(e instanceof ZivmError)) throw e;
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
    // A chunk delivered now: anything else the peer did waits for its own turn.
    if (this.reading && this.pump() && this.reading) return;
    if (this.closed) return;
    this.checkPeer();
  }

  /**
   * Moves one chunk (up to 64 KiB) from the ring into the socket, as one read
   * callback of a kernel socket does, and asks for another turn while there is
   * more (or the end): whatever the application queued on nextTick or as a
   * microtask while handling this chunk runs before the next one, or 'end'.
   * Returns true if it delivered a chunk.
   */
  private pump(): boolean {
    const ch = this.ch;
    if (!this.reading || this.closed || this.eof || this.feeding !== undefined) return false;
    // Looked at before the ring: a FIN seen now means every byte before it is in the ring.
    const peer = ch.peerEnd();
    if (peer === 'reset' && !this.resetUnseen) {
      this.fail('ECONNRESET', 'read');
      return false;
    }
    let buf: Buffer | null;
    try {
      buf = ch.read(READ_CHUNK);
    } catch (e) {
      this.corrupt(e as Error);
      return false;
    }
    const sock = this.socket;
    if (!sock) return false;
    if (buf !== null) {
      this.bytesRead += buf.length;
      sock._unrefTimer();
      if (this.nativeReads) {
        this.handOver(buf);
        return true;
      }
      if (!sock.push(buf)) {
        this.reading = false;
        this.updateActive();
        return true;
      }
      if (this.closed || !this.reading) return true;
      // More, or news of the peer: on the next turn. Else sleep until rung.
      if (ch.peerEnd() !== 'open' || !ch.sleepRead()) ch.again();
      return true;
    }
    if (peer === 'fin' || this.resetUnseen || (peer === 'gone' && this.peerDied() === 'fin')) {
      this.eof = true;
      this.reading = false;
      this.updateActive();
      sock._unrefTimer();
      if (this.nativeReads) {
        this.handOver(EOF);
        return false;
      }
      sock.push(null);
      sock.read(0);
      return false;
    }
    if (peer === 'gone') {
      this.fail('ECONNRESET', 'read');
      return false;
    }
    if (!ch.sleepRead()) ch.again();
    return false;
  }

  /** Reads go through the native stream from the start (a native consumer will take it). */
  useNativeReads(): void {
    if (JSStream) this.nativeReads = true;
  }

  /** Queues a read (or the end) for the native stream: the domain hands it over from outside JavaScript. */
  private handOver(buf: Buffer | null): void {
    this.feeding = buf;
    this.ch.d.feed(this);
  }

  private feedNow(): void {
    const buf = this.feeding;
    if (buf === undefined) return;
    this.feeding = undefined;
    if (this.closed) return;
    const stream = this as unknown as InstanceType<NonNullable<typeof JSStream>>;
    if (buf === EOF) {
      stream.emitEOF();
      return;
    }
    stream.readBuffer(buf);
    // The consumer stops us (onreadstop) from inside readBuffer when it has enough.
    if (this.reading && !this.closed) {
      if (this.ch.peerEnd() !== 'open' || !this.ch.sleepRead()) this.ch.again();
    }
  }

  /** How a dead peer looks to us: TCP resets if it died with our bytes unread, else it sent a FIN. */
  private peerDied(): 'fin' | 'rst' {
    return this.ch.unreadByPeer() > 0 ? 'rst' : 'fin';
  }

  /** Things that matter even while nobody reads: a reset, a dead peer, a closed peer with writes waiting. */
  private checkPeer(): void {
    if (this.resetUnseen) {
      if (this.queue.length > 0) this.fail('ECONNRESET', 'write');
      return;
    }
    let reset = this.ch.peerEnd() === 'reset';
    if (!reset && this.ch.peerDied() && !this.peerDeathSeen) {
      this.peerDeathSeen = true;
      reset = this.peerDied() === 'rst';
    }
    if (reset) {
      // Not reading and nothing to write: nobody looks at the socket, as a paused kernel socket.
      if (!this.reading && this.queue.length === 0) this.resetUnseen = true;
      else this.fail('ECONNRESET', this.reading ? 'read' : 'write');
      return;
    }
    if (this.queue.length > 0 && this.ch.peerClosed()) {
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
    // As libuv: what is there is read on a later turn of the loop.
    if (!this.held) this.ch.again();
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
    if (this.ch.peerClosed()) {
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
    this.ch.sendFin();
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
      this.ch.close('reset');
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
      this.ch.close(unread ? 'reset' : 'fin', !this.accepted);
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
    this.ch.close('reset', connected && !this.accepted);
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
    const own = (Base.prototype as { getAsyncId?: (this: unknown) => number }).getAsyncId;
    if (own) return own.call(this);
    if (this.asyncId < 0) this.asyncId = new AsyncResource('ZIVMSHM').asyncId();
    return this.asyncId;
  }

  // -- the native stream (JSStream hooks, called from C++ by native consumers) -----

  /**
   * Native consumers (the HTTP parser, HTTP/2, TLS) ask this before they take
   * a stream: from then on reads go through the native stream, where they
   * would be.
   */
  get isStreamBase(): boolean {
    if (!JSStream) return false;
    this.nativeReads = true;
    return true;
  }

  onreadstart(): number {
    return this.readStart();
  }

  onreadstop(): number {
    return this.readStop();
  }

  isClosing(): boolean {
    return this.closed;
  }

  /** A native consumer writes: into the ring; the request completes on a later turn, as a libuv write does. */
  onwrite(req: object, bufs: Uint8Array[]): number {
    const stream = this as unknown as InstanceType<NonNullable<typeof JSStream>>;
    this.writeBuffers(bufs, (err) => setImmediate(() => stream.finishWrite(req, status(err))));
    return 0;
  }

  /** A native consumer half-closes. */
  onshutdown(req: object): number {
    const stream = this as unknown as InstanceType<NonNullable<typeof JSStream>>;
    if (!this.closed) this.ch.sendFin();
    setImmediate(() => stream.finishShutdown(req, 0));
    return 0;
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
