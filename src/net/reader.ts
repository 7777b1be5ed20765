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

/** Reads are delivered in chunks of at most this many bytes, as libuv does. */
const READ_CHUNK = 64 * 1024;

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
  /** The read waiting to be handed to the native stream: a chunk, null for the end, undefined for none. */
  private feeding: Buffer | null | undefined = undefined;
  /** Hands the waiting read to the native stream; called by the domain from outside JavaScript. */
  readonly feed = (): void => this.feedNow();

  constructor(
    private readonly h: HandleCore,
    private readonly stream: NativeReads | undefined,
  ) {}

  /**
   * Moves one chunk (up to 64 KiB) from the ring into the socket, and asks for
   * another turn while there is more (or the end): whatever the application
   * queued on nextTick or as a microtask while handling this chunk runs before
   * the next one, or 'end'. Returns true if it delivered a chunk.
   */
  pump(): boolean {
    const h = this.h;
    const ch = h.ch;
    if (!h.reading || h.closed || this.eof || this.feeding !== undefined) return false;
    // Looked at before the ring: a FIN seen now means every byte before it is in the ring.
    const peer = ch.peerEnd();
    if (peer === 'reset' && !this.resetUnseen) {
      h.fail('ECONNRESET', 'read');
      return false;
    }
    let buf: Buffer | null;
    try {
      buf = ch.read(READ_CHUNK);
    } catch (e) {
      h.corrupt(e as Error);
      return false;
    }
    const sock = h.socket;
    if (!sock) return false;
    if (buf !== null) {
      h.bytesRead += buf.length;
      sock._unrefTimer();
      if (this.native) {
        this.handOver(buf);
        return true;
      }
      if (!sock.push(buf)) {
        h.reading = false;
        h.updateActive();
        return true;
      }
      if (h.closed || !h.reading) return true;
      // More, or news of the peer: on the next turn. Else sleep until rung.
      if (ch.peerEnd() !== 'open' || !ch.sleepRead()) ch.again();
      return true;
    }
    if (peer === 'fin' || this.resetUnseen || (peer === 'gone' && this.peerDied() === 'fin')) {
      this.eof = true;
      h.reading = false;
      h.updateActive();
      sock._unrefTimer();
      if (this.native) {
        this.handOver(null);
        return false;
      }
      sock.push(null);
      sock.read(0);
      return false;
    }
    if (peer === 'gone') {
      h.fail('ECONNRESET', 'read');
      return false;
    }
    if (!ch.sleepRead()) ch.again();
    return false;
  }

  /** Queues a read (or the end) for the native stream: the domain hands it over from outside JavaScript. */
  private handOver(buf: Buffer | null): void {
    this.feeding = buf;
    this.h.ch.d.feed(this);
  }

  private feedNow(): void {
    const buf = this.feeding;
    if (buf === undefined || !this.stream) return;
    this.feeding = undefined;
    const h = this.h;
    if (h.closed) return;
    if (buf === null) {
      this.stream.emitEOF();
      return;
    }
    this.stream.readBuffer(buf);
    // The consumer stops us (onreadstop) from inside readBuffer when it has enough.
    if (h.reading && !h.closed && (h.ch.peerEnd() !== 'open' || !h.ch.sleepRead())) h.ch.again();
  }

  /** How a dead peer looks to us: TCP resets if it died with our bytes unread, else it sent a FIN. */
  private peerDied(): 'fin' | 'rst' {
    return this.h.ch.unreadByPeer() > 0 ? 'rst' : 'fin';
  }

  /**
   * Things that matter even while nobody reads: a reset, a dead peer, a
   * closed peer with writes waiting (`writesWaiting`).
   */
  checkPeer(writesWaiting: boolean): void {
    const h = this.h;
    if (this.resetUnseen) {
      if (writesWaiting) h.fail('ECONNRESET', 'write');
      return;
    }
    let reset = h.ch.peerEnd() === 'reset';
    if (!reset && h.ch.peerDied() && !this.peerDeathSeen) {
      this.peerDeathSeen = true;
      reset = this.peerDied() === 'rst';
    }
    if (reset) {
      // Not reading and nothing to write: nobody looks at the socket, as a paused kernel socket.
      if (!h.reading && !writesWaiting) this.resetUnseen = true;
      else h.fail('ECONNRESET', h.reading ? 'read' : 'write');
      return;
    }
    // Nobody will ever read what is waiting.
    if (writesWaiting && h.ch.peerClosed()) h.fail('ECONNRESET', 'write');
  }
}
