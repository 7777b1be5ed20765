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
import os from 'node:os';
import { AsyncResource } from 'node:async_hooks';
import { errnoException, ZivmCorruptError, ZivmError } from '../errors';
import { debug } from '../log';
import { formatAddr } from '../shm/addrs';
import { AS_DOUBLE, Channel } from '../shm/channel';
import { native } from '../shm/native';
import { kShmHandle, kTransport } from '../symbols';
import type { HandleCore, SocketLike } from './core';
import { netInternals, type ConnectReq, type ShutdownReq, type TcpLike } from './internals';
import { NativeReads, Reader, insideHandOver } from './reader';
import { boundToHttp2Session, http2SessionOf, http2StreamsOf, jsStreamClass, type Http2SessionState } from './streambase';
import { Writer } from './writer';

const internals = netInternals();

/** The kernel socket held back while a shared-memory connect is tried. */
interface HeldConnect {
  req: ConnectReq;
  tcp: TcpLike;
  connect: (this: TcpLike, req: ConnectReq, address: string, port: number) => number;
}

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

export class ShmHandle extends Base implements HandleCore {
  reading = false;
  bytesRead = AS_DOUBLE;
  bytesWritten = AS_DOUBLE;
  writeQueueSize = 0;
  readonly fd = -1;
  readonly transport = 'shm';
  readonly ch: Channel;
  [k: symbol]: unknown;

  private readonly reader: Reader;
  private readonly writer: Writer;
  private refd = true;
  private active = false;
  private isClosed = false;
  private held: HeldConnect | null = null;
  /** The server took the connection (always true on the server's side). */
  private accepted: boolean;
  private asyncId = -1;
  private shutdownReq: ShutdownReq | null = null;
  /** The HTTP/2 session on this handle's socket, once a write looked for it (see sessionWritesNow). */
  private h2Session: Http2SessionState | undefined;

  constructor(ch: Channel) {
    super();
    this.bytesRead = 0;
    this.bytesWritten = 0;
    // net sets `onread` on its handle; on a native stream that is an accessor of its own.
    if (!JSStream) (this as unknown as { onread: unknown }).onread = null;
    this.ch = ch;
    this.accepted = ch.side === 'server';
    this.reader = new Reader(this, JSStream ? (this as unknown as NativeReads) : undefined);
    this.writer = new Writer(this);
    ch.onchange = () => this.onChange();
    ch.isQuiet = () => this.quiet();
  }

  get socket(): SocketLike | undefined {
    return this[internals.owner] as SocketLike | undefined;
  }

  get closed(): boolean {
    return this.isClosed;
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
    if (this.ch.peer === this.ch.domain.id) this.ch.again();
    else process.nextTick(() => this.onChange());
  }

  private checkConnect(): void {
    const held = this.held!;
    const state = this.ch.request();
    if (state === 'refused' || state === 'lost' || this.ch.peerDied()) {
      this.fallBack(state === 'refused' ? 'refused' : 'listener went away');
      return;
    }
    this.held = null;
    this.accepted = state === 'accepted';
    this.updateActive();
    held.tcp.close();
    // The server hears of the request now, before the 'connect' listeners run: it
    // accepts while they work (a TLS client builds its context and hello), as a
    // kernel connection is accepted while its client goes on. What they write
    // finds it awake, or spinning, or rings it again if it went back to sleep.
    this.ch.announce();
    held.req.oncomplete(0, this, held.req, true, true);
    // Bytes or a FIN may have come with the accept: look on a later turn, as a kernel socket would
    // (with nothing there, a reading end sleeps until rung; one not reading yet looks in readStart).
    if (this.reader.waiting() || (this.reading && !this.ch.sleepRead())) this.ch.again();
  }

  /** Connected but not yet accepted: a refusal now (the listener closed, its owner died) is a reset, as over TCP. */
  private checkAccepted(): boolean {
    const state = this.ch.request();
    if (state === 'accepted') {
      this.accepted = true;
      return true;
    }
    if (state === 'refused' || state === 'lost') {
      this.fail('ECONNRESET', 'read');
      return false;
    }
    return true;
  }

  /** The shared-memory connect failed: carry on with the kernel socket, as net would have. */
  private fallBack(reason: string): void {
    const held = this.held!;
    this.held = null;
    this.isClosed = true;
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
    } catch (err) {
      // The ring's errors (shared memory that makes no sense) fail this socket;
      // anything else was thrown by the application's listeners: theirs, as in net.
      if (!(err instanceof ZivmError)) throw err;
      this.corrupt(err);
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
    if (this.ch.stolen()) throw new ZivmCorruptError(`slot ${this.ch.slot} was taken from this connection`);
    if (this.writer.pending) this.writer.flush();
    if (this.closed) return;
    // A chunk delivered now: anything else the peer did waits for its own turn.
    if (this.reading && this.reader.pump() && this.reading) return;
    if (this.closed) return;
    this.reader.checkPeer(this.writer.pending);
  }

  /**
   * An event now would find nothing to do: connected, no writes waiting for
   * room, the other end open (and its slot still ours), and nothing to read
   * or nobody reading.
   */
  private quiet(): boolean {
    if (this.closed || this.held || this.shutdownReq || !this.accepted || this.writer.pending) return false;
    if (this.ch.peerEnd() !== 'open' || this.ch.stolen()) return false;
    return !this.reading || this.reader.quiet();
  }

  /** Reads go through the native stream from the start (a native consumer will take it). */
  useNativeReads(http2: boolean): void {
    if (JSStream) this.reader.useNative(http2, this.ch.side === 'server');
  }

  fail(code: string, syscall: string): void {
    const sock = this.socket;
    if (!sock || sock.destroyed || this.closed) return;
    sock.destroy(errnoException(code, syscall));
  }

  corrupt(err: Error): void {
    debug('slot %d: %s', this.ch.slot, err.message);
    const sock = this.socket;
    if (!sock || sock.destroyed || this.closed) return;
    sock.destroy(err);
  }

  // -- the handle interface node:net uses ---------------------------------------

  readStart(): number {
    if (this.closed) return 0;
    this.reading = true;
    this.updateActive();
    // As libuv: what is there is read on a later turn of the loop; with nothing there, the
    // reader sleeps (the other end rings it when it writes), and nobody is rung now.
    if (!this.held && (this.reader.waiting() || !this.ch.sleepRead())) this.ch.again();
    return 0;
  }

  readStop(): number {
    this.reading = false;
    this.updateActive();
    return 0;
  }

  /** Whether a read would find something now (bytes, the end, a reset): node:http's agent asks before it reuses an idle socket. */
  hasPendingRead(): boolean {
    return !this.closed && !this.held && this.reader.waiting();
  }

  /** Called by Socket#_writeGeneric with the bytes of one write or writev. */
  writeBuffers(bufs: Uint8Array[], cb: (err?: Error | null) => void): void {
    this.writer.write(bufs, cb, this.reader.eof);
  }

  /** Socket#write's fast path: a small write done now, or false (nothing written: take the ordinary path). */
  writeNow(buf: Uint8Array): boolean {
    return this.writer.writeNow(buf, this.reader.eof);
  }

  /** Sends the FIN (every byte is already in the ring) and completes later, as libuv does. */
  shutdown(req: ShutdownReq): number {
    this.writer.flushStaged();
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
    // What was written goes before the end.
    if (!this.held) this.writer.flushStaged();
    this.isClosed = true;
    if (this.held) {
      this.held.tcp.close();
      this.held = null;
      this.ch.close('reset');
    } else {
      // Unread bytes make TCP answer a close with a reset rather than a FIN
      // (and so does a ring too corrupt to tell). Bytes a native consumer
      // reads in place are its own: an HTTP server that answers a request it
      // cannot parse and closes, from inside that read, sends its answer and
      // a FIN, as over TCP (where libuv read them out of the kernel first).
      let unread = true;
      try {
        unread = !this.reader.eof && this.ch.untaken() > 0;
      } catch {
        // A ring too corrupt to tell how much is unread: reset, as with unread bytes.
      }
      // Not accepted yet: the request stays for the server, with what we wrote and our FIN.
      this.ch.close(unread ? 'reset' : 'fin', !this.accepted);
    }
    this.reading = false;
    // As net does for writes cut short by destroy().
    this.writer.cancel(cb);
    this.updateActive();
  }

  reset(cb?: () => void): number {
    if (this.closed) return 0;
    this.isClosed = true;
    const connected = !this.held;
    if (this.held) {
      this.held.tcp.close();
      this.held = null;
    }
    // Connected but not accepted yet: the server accepts it and sees the reset, as over TCP.
    this.ch.close('reset', connected && !this.accepted);
    this.reading = false;
    this.writer.cancel(cb);
    this.updateActive();
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
    const ends = this.ch.endpoints();
    out.address = formatAddr(ends.local);
    out.family = ends.local.family === 6 ? 'IPv6' : 'IPv4';
    out.port = ends.localPort;
    return 0;
  }

  getpeername(out: Record<string, unknown>): number {
    const ends = this.ch.endpoints();
    out.address = formatAddr(ends.remote);
    out.family = ends.remote.family === 6 ? 'IPv6' : 'IPv4';
    out.port = ends.remotePort;
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

  /** node:http's server marks the handle its HTTP parser takes: the parser's reads are handed over bare (see Reader). */
  set _consumed(taken: boolean) {
    this.reader.bare = taken;
  }

  get _consumed(): boolean {
    return this.reader.bare;
  }

  /**
   * Native consumers (the HTTP parser, HTTP/2, TLS) ask this before they take
   * a stream: from then on reads go through the native stream, where they
   * would be.
   */
  get isStreamBase(): boolean {
    if (!JSStream) return false;
    const sock = this.socket;
    this.useNativeReads(sock !== undefined && boundToHttp2Session(sock));
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

  /**
   * A native consumer writes: into the ring. For TLS the request completes
   * once the JavaScript running now has returned (never inside the
   * consumer's own write), not a loop turn later: TLS has one write in
   * flight at a time, and waiting a turn for each halved its throughput.
   * An HTTP/2 session's writes do too while the session is open and the
   * write comes from inside a read being handed to it, or once it closes
   * with no stream left (see sessionWritesNow); others complete a turn later, as a libuv write
   * that could not be done at once: its sessions then end in the order they
   * do over TCP (a session closed with a response in flight is destroyed
   * after the stream's 'close').
   *
   * `bufs` are copies Node's JSStream made for this call (one fresh
   * allocation each, which nothing else can reach): once the writer is done
   * with them (in the ring, or dropped) their memory is given back at once.
   * Left to the garbage collector, tens of megabytes of them piled up between
   * collections and each new one landed on pages the allocator had just
   * returned to the kernel: a page fault every 4 KiB, which halved TLS's bulk
   * rate.
   */
  onwrite(req: object, bufs: Uint8Array[]): number {
    const stream = this as unknown as InstanceType<NonNullable<typeof JSStream>>;
    const turnLater = this.reader.http2 && !this.sessionWritesNow();
    this.writeBuffers(bufs, (err) => {
      native().releaseCopies(bufs);
      if (turnLater) setImmediate(finishWrite, stream, req, status(err));
      else process.nextTick(finishWrite, stream, req, status(err));
    });
    return 0;
  }

  /**
   * An HTTP/2 session's write may complete without waiting a turn (over TCP
   * such writes complete at once: the kernel takes them):
   *  - the session is open and the write came from inside a read being
   *    handed over (the completion then runs once that returns to the event
   *    loop's caller, outside the session's own code; see insideHandOver). A
   *    session does not read while a write is in flight: a turn per write
   *    made it take one response per turn;
   *  - the session is closing and has no stream left: it ends, and lets go
   *    of its socket, within the turn, as over TCP (one that is still busy
   *    the next time the loop looks at immediates is seen still bound).
   * A session closing with streams in flight keeps the turn, and so the order
   * in which it ends over TCP (its last stream's 'close' before the session
   * is destroyed).
   */
  private sessionWritesNow(): boolean {
    const sock = this.socket;
    this.h2Session ??= sock ? http2SessionOf(sock) : undefined;
    const session = this.h2Session;
    if (session === undefined) return false;
    if (!session.closed && !session.destroyed) return insideHandOver();
    return http2StreamsOf(session) === 0;
  }

  /** A native consumer half-closes. */
  onshutdown(req: object): number {
    const stream = this as unknown as InstanceType<NonNullable<typeof JSStream>>;
    this.writer.flushStaged();
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
  updateActive(): void {
    const want = this.refd && !this.closed && (this.reading || this.writer.pending || this.held !== null);
    if (want === this.active) return;
    this.active = want;
    if (want) this.ch.domain.ref();
    else this.ch.domain.unref();
  }
}

function finishWrite(stream: InstanceType<NonNullable<typeof JSStream>>, req: object, code: number): void {
  stream.finishWrite(req, code);
}

// Marks shared-memory handles for code that does not load this module (socket.ts: isShmHandle).
Object.defineProperty(ShmHandle.prototype, kShmHandle, { value: true });
