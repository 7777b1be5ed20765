/**
 * The read side of a shared-memory handle: one chunk from the ring per turn
 * of work (as one read callback of a kernel socket), the end, and what the
 * peer's flags mean for a socket (a FIN, a reset, a peer that died).
 *
 * Reads go to the socket with push(), or, once a native consumer may have
 * taken the handle (see handle.ts), through the native stream: handed over
 * by the domain from outside any JavaScript.
 */
import type { HandleCore } from './core';
import { netInternals } from './internals';

const internals = netInternals();

/**
 * Reads are delivered in chunks of at most this many bytes: twice libuv's
 * 64 KiB (a bulk reader then does a tenth less work per byte), the size of a
 * chunk of the native read pool.
 */
const READ_CHUNK = 128 * 1024;
/**
 * node:http's server parser (a consumer that marks the handle `_consumed`) is
 * handed at most libuv's 64 KiB at once, as from a kernel socket. Node's
 * JSStream cuts a larger piece into reads of the parser's buffer (64 KiB) and
 * hands them over one after the other, with no chance to stop in between: a
 * server that pauses its parser after one read (pipelined requests whose
 * answers wait) would have the next fed to it paused, a parse error
 * (HPE_PAUSED) over shared memory that never happens over TCP. TLS and HTTP/2
 * sessions take whatever they are given and keep the larger pieces (TLS moves
 * bulk data about a sixth faster with them).
 */
const PARSER_CHUNK = 64 * 1024;
/**
 * A native consumer reads at least this many waiting bytes in place: it is
 * handed a view of the ring and copies from there, one copy fewer (a TLS
 * receiver's fifth of its time). Fewer bytes are copied out in one call,
 * which costs less than the view.
 */
const IN_PLACE_MIN = 4096;
/** A piece to hand over that is read from the ring in place when its turn comes. */
const IN_PLACE = Buffer.alloc(0);

/**
 * Reads being handed to a native consumer from the event loop's call (in a
 * callback scope of that call's own): what the consumer writes meanwhile
 * reaches the handle from inside this hand-over, and JavaScript queued on
 * nextTick then runs once the hand-over has returned to the loop's caller,
 * outside the consumer's own code (see ShmHandle.onwrite).
 */
let handingOver = 0;

/** A read is being handed to a native consumer in a callback scope (see handingOver). */
export function insideHandOver(): boolean {
  return handingOver > 0;
}

/** The native stream's read entry points (Node's JSStream). */
export interface NativeReads {
  readBuffer(chunk: Uint8Array): void;
  emitEOF(): void;
}

export class Reader {
  /** The peer's end has been delivered. */
  eof = false;
  /** Reads go through the native stream (a native consumer may have taken it). */
  native = false;
  private peerDeathSeen = false;
  /**
   * The peer reset (or died with our bytes unread) while we were not reading:
   * as a kernel socket, reads then give what is left and the end, not an error.
   */
  private resetUnseen = false;
  /** What waits to be handed to the native stream, in order: chunks, and null for the end. */
  private pieces: (Buffer | null)[] = [];
  /** The domain has us in its list of reads to hand over. */
  private queued = false;
  /** Reads for an HTTP/2 session are cut after frames whose events the application sees (see Http2Frames). */
  private frames: Http2Frames | undefined;
  /**
   * Reads go to the HTTP parser, handed over outside any callback scope: its
   * callbacks into JavaScript are then callbacks of their own, as over a
   * kernel socket. Other consumers (HTTP/2, TLS) get them in a callback
   * scope: an exception thrown in what they call is then the process's, as it
   * must be.
   */
  bare = false;
  /** Hands the next piece to the native stream; called by the domain. */
  readonly feed = (): void => {
    if (this.bare) return this.feedNow();
    handingOver++;
    try {
      this.feedNow();
    } finally {
      handingOver--;
    }
  };

  constructor(
    private readonly handle: HandleCore,
    private readonly stream: NativeReads | undefined,
  ) {}

  /**
   * Moves one chunk (up to 128 KiB) from the ring into the socket, and asks for
   * another turn while there is more (or the end): whatever the application
   * queued on nextTick or as a microtask while handling this chunk runs before
   * the next one, or 'end'. Returns true if it delivered a chunk.
   */
  pump(): boolean {
    const handle = this.handle;
    const ch = handle.ch;
    if (!handle.reading || handle.closed || this.eof) return false;
    if (this.pieces.length > 0) {
      this.requestFeed();
      return false;
    }
    // Looked at before the ring: a FIN seen now means every byte before it is in the ring.
    const peer = ch.peerEnd();
    if (peer === 'reset' && !this.resetUnseen) {
      handle.fail('ECONNRESET', 'read');
      return false;
    }
    const sock = handle.socket;
    if (!sock) return false;
    if (this.native && ch.waiting() >= IN_PLACE_MIN) {
      this.pieces.push(IN_PLACE);
      this.requestFeed();
      return true;
    }
    let buf: Buffer | null;
    try {
      buf = ch.read(this.bare ? PARSER_CHUNK : READ_CHUNK);
    } catch (err) {
      handle.corrupt(err as Error);
      return false;
    }
    if (buf !== null) {
      handle.bytesRead += buf.length;
      sock._unrefTimer();
      if (this.native) {
        this.handOver(buf);
        return true;
      }
      if (this.takenOver()) {
        this.stream!.readBuffer(buf);
        return true;
      }
      if (!sock.push(buf)) {
        handle.reading = false;
        handle.updateActive();
        return true;
      }
      if (handle.closed || !handle.reading) return true;
      // More, or news of the peer: on the next turn. Else sleep until rung.
      if (ch.peerEnd() !== 'open' || !ch.sleepRead()) ch.again();
      return true;
    }
    if (peer === 'fin' || this.resetUnseen || (peer === 'gone' && this.peerDied() === 'fin')) {
      this.eof = true;
      handle.reading = false;
      handle.updateActive();
      sock._unrefTimer();
      if (this.native) {
        this.handOver(null);
        return false;
      }
      if (this.takenOver()) {
        this.stream!.emitEOF();
        return false;
      }
      sock.push(null);
      sock.read(0);
      return false;
    }
    if (peer === 'gone') {
      handle.fail('ECONNRESET', 'read');
      return false;
    }
    if (!ch.sleepRead()) ch.again();
    return false;
  }

  /** Nothing to hand over and nothing in the ring. */
  quiet(): boolean {
    return this.pieces.length === 0 && this.handle.ch.waiting() === 0;
  }

  /** Something is there to be read: a chunk not yet handed over, bytes in the ring, or news of the other end. */
  waiting(): boolean {
    return this.pieces.length > 0 || this.handle.ch.pending();
  }

  /**
   * Something other than net put its own read callback on the handle (as
   * node:http's agent does on an idle socket, to drop one the server sends
   * to unasked): reads then go to that callback, through the native stream,
   * as a kernel handle's reads would.
   */
  private takenOver(): boolean {
    if (!this.stream || internals.onStreamRead === undefined) return false;
    const onread = (this.handle as unknown as { onread?: unknown }).onread;
    return typeof onread === 'function' && onread !== internals.onStreamRead;
  }

  /**
   * The handle goes to a native consumer. An HTTP/2 session gets its reads
   * cut after the frames that make events (headers, settings, resets,
   * goaway), each piece in a callback scope of its own: what its callbacks
   * queue (the 'stream' event is emitted on nextTick) runs before the frames
   * that follow, as it runs between the JavaScript callbacks of a session on
   * a kernel socket. `server`: this end receives the client's preface first.
   */
  /** Reads go to an HTTP/2 session. */
  get http2(): boolean {
    return this.frames !== undefined;
  }

  useNative(http2: boolean, server: boolean): void {
    this.native = true;
    if (http2 && !this.frames) this.frames = new Http2Frames(server);
  }

  /** Queues a read (or the end, null) for the native stream. */
  private handOver(buf: Buffer | null): void {
    if (buf !== null && this.frames) this.pieces.push(...this.frames.split(buf));
    else this.pieces.push(buf);
    this.requestFeed();
  }

  private requestFeed(): void {
    if (this.queued) return;
    this.queued = true;
    this.handle.ch.domain.feed(this);
  }

  private feedNow(): void {
    this.queued = false;
    const handle = this.handle;
    if (!this.stream || handle.closed) {
      this.pieces = [];
      return;
    }
    const piece = this.pieces[0];
    if (piece === undefined) return;
    // The consumer stopped reading (onreadstop): the rest waits for readStart.
    if (piece !== null && !handle.reading) return;
    this.pieces.shift();
    if (piece === null) {
      this.stream.emitEOF();
      return;
    }
    if (piece === IN_PLACE) {
      if (!this.readInPlace()) return;
    } else {
      this.stream.readBuffer(piece);
    }
    if (this.pieces.length > 0) {
      if (handle.reading) this.requestFeed();
      return;
    }
    if (handle.reading && !handle.closed && (handle.ch.peerEnd() !== 'open' || !handle.ch.sleepRead())) handle.ch.again();
  }

  /**
   * Hands the native stream what waits in the ring, read in place (a copy
   * where the region cannot be viewed). False if the ring broke. What the
   * consumer's callbacks throw goes on up, as from any read.
   */
  private readInPlace(): boolean {
    const handle = this.handle;
    const ch = handle.ch;
    let piece: Uint8Array | null | undefined;
    try {
      const max = this.bare ? PARSER_CHUNK : READ_CHUNK;
      piece = ch.view(max);
      if (piece === undefined) piece = ch.read(max);
      else if (piece === null) return true;
    } catch (err) {
      handle.corrupt(err as Error);
      return false;
    }
    if (piece === null) return true;
    handle.bytesRead += piece.byteLength;
    handle.socket?._unrefTimer();
    // An HTTP/2 session's read is cut after frames that make events: the
    // first part goes now, in place, copies of the others on later turns
    // (rare: a bulk transfer's reads are all data frames, one part).
    const whole = piece.byteLength;
    if (this.frames) {
      const parts = this.frames.split(piece as Buffer);
      for (let k = parts.length - 1; k >= 1; k--) this.pieces.unshift(Buffer.from(parts[k]));
      piece = parts.length > 0 ? parts[0] : null;
    }
    try {
      if (piece !== null) this.stream!.readBuffer(piece);
    } finally {
      try {
        ch.viewed(whole);
      } catch (err) {
        handle.corrupt(err as Error);
      }
    }
    return true;
  }

  /** How a dead peer looks to us: TCP resets if it died with our bytes unread, else it sent a FIN. */
  private peerDied(): 'fin' | 'rst' {
    return this.handle.ch.unreadByPeer() > 0 ? 'rst' : 'fin';
  }

  /**
   * Things that matter even while nobody reads: a reset, a dead peer, a
   * closed peer with writes waiting (`writesWaiting`).
   */
  checkPeer(writesWaiting: boolean): void {
    const handle = this.handle;
    if (this.resetUnseen) {
      if (writesWaiting) handle.fail('ECONNRESET', 'write');
      return;
    }
    let reset = handle.ch.peerEnd() === 'reset';
    if (!reset && handle.ch.peerDied() && !this.peerDeathSeen) {
      this.peerDeathSeen = true;
      reset = this.peerDied() === 'rst';
    }
    if (reset) {
      // Not reading and nothing to write: nobody looks at the socket, as a paused kernel socket.
      if (!handle.reading && !writesWaiting) this.resetUnseen = true;
      else handle.fail('ECONNRESET', handle.reading ? 'read' : 'write');
      return;
    }
    // Nobody will ever read what is waiting.
    if (writesWaiting && handle.ch.peerClosed()) handle.fail('ECONNRESET', 'write');
  }
}

/**
 * Cuts an HTTP/2 byte stream at frame boundaries (a frame: a 9-byte header
 * whose first 3 bytes are the payload's length, then the payload), after the
 * client's 24-byte connection preface on the server's side. It only decides
 * where reads are cut; what the bytes mean is the session's business.
 */
export class Http2Frames {
  /** Bytes of the client's preface still to come. */
  private preface: number;
  /** Bytes of the current frame's payload still to come. */
  private left = 0;
  private readonly header = Buffer.alloc(9);
  private headerHave = 0;

  constructor(server: boolean) {
    this.preface = server ? 24 : 0;
  }

  /**
   * `buf` in pieces, each ending where the preface or a frame that makes
   * events ends (data, window updates, pings and priorities stay with what
   * follows them, as in one read of a kernel socket); the last piece may end
   * mid-frame.
   */
  split(buf: Buffer): Buffer[] {
    const pieces: Buffer[] = [];
    let start = 0;
    let pos = 0;
    while (pos < buf.length || this.headerHave === 9) {
      if (this.preface > 0) {
        const take = Math.min(this.preface, buf.length - pos);
        pos += take;
        this.preface -= take;
        if (this.preface > 0) break;
        if (pos > start) pieces.push(buf.subarray(start, pos));
        start = pos;
        continue;
      } else if (this.left > 0 || this.headerHave === 9) {
        const take = Math.min(this.left, buf.length - pos);
        pos += take;
        this.left -= take;
        if (this.left > 0) break;
        this.headerHave = 0;
        if (!CUT_AFTER.has(this.header[3])) continue;
      } else {
        this.header[this.headerHave++] = buf[pos++];
        if (this.headerHave < 9) continue;
        this.left = (this.header[0] << 16) | (this.header[1] << 8) | this.header[2];
        continue;
      }
      if (pos > start) pieces.push(buf.subarray(start, pos));
      start = pos;
    }
    if (start < buf.length) pieces.push(buf.subarray(start));
    return pieces;
  }
}

/** HTTP/2 frame types after which a read is cut: HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, GOAWAY, CONTINUATION. */
const CUT_AFTER = new Set([0x1, 0x3, 0x4, 0x5, 0x7, 0x9]);
