/**
 * A channel: one end of one connection, i.e. one slot of the region seen from
 * the client or the server side. It owns the slot's two rings (tx: the one it
 * produces into, rx: the one it consumes), its own flag word, and the doorbell
 * discipline: a reader says it sleeps before it waits, a writer rings only
 * when the reader sleeps (and the same the other way round when a ring is full).
 */
import { errnoException } from '../errors';
import { debug } from '../log';
import { native, NativeRing } from './native';
import type { Domain, SlotHandler } from './domain';
import type { Found } from './directory';
import { Addr, mapV4, publishedAddrs, readAddr } from './addrs';
import * as Lay from './layout';
import * as Slot from './slot';

const EPHEMERAL_LOW = 32768;
/**
 * A ring that carried at least this much since it was last given back gives
 * its pages back once it has stood empty for a re-check (about a second), and
 * when the connection ends: memory follows traffic. Smaller ones keep theirs
 * (two pages at most), wiped when the slot is taken again.
 */
const TRIM_MIN = 8 * 1024;
const EPHEMERAL_COUNT = 60999 - 32768 + 1;
/** Slots let go of lately that a process remembers, and how many of them a new connection tries (see Domain.recentSlots). */
const RECENT_MAX = 64;
const RECENT_TRIES = 4;

/**
 * The first value of a class field that counts bytes or holds a ring
 * position, set to its real start in the constructor. Such a number outgrows
 * V8's small integers after 2 GiB; a field that started as one then changes
 * the shape of every object of its class, and the optimised code that uses
 * them is thrown away in the middle of a transfer. Started as a double, it
 * stays one.
 */
export const AS_DOUBLE = 0.5;

export type Side = 'client' | 'server';

/**
 * The other end, as the socket sees it: 'reset' (it reset the connection),
 * 'fin' (it will write no more; every byte it wrote is in our ring),
 * 'gone' (it died or left without a FIN), 'open'.
 */
export type PeerEnd = 'open' | 'fin' | 'reset' | 'gone';

/** A connection request, from the client's side: 'pending' (not yet taken), 'accepted', 'refused', 'lost' (the slot is no longer ours). */
export type RequestState = 'pending' | 'accepted' | 'refused' | 'lost';

export interface Endpoints {
  family: 4 | 6;
  local: Addr;
  localPort: number;
  remote: Addr;
  remotePort: number;
}

/** Reads of fewer bytes than this go into a slice of a pool (see read()). */
const SMALL_READ = 4096;
/**
 * The pool of small reads: slices of 8 KiB slabs, as Buffer.allocUnsafe
 * hands out Node's (a slice kept by the application keeps its slab).
 */
const POOL_SIZE = 8192;
let pool = Buffer.allocUnsafeSlow(POOL_SIZE);
let poolUsed = 0;

export class Channel implements SlotHandler {
  readonly domain: Domain;
  readonly slot: number;
  /** The slot's state word while we hold it: its generation identifies the connection. */
  readonly gen: number;
  readonly side: Side;
  readonly peer: number;
  readonly peerGen: number;
  readonly tx: NativeRing;
  readonly rx: NativeRing;
  /** Called on every event for the slot (set by the owner of the channel). */
  onchange: () => void = noop;
  /** Whether an event now would find nothing to do (see SlotHandler.quiet); set by the handle. */
  isQuiet: () => boolean = no;
  /** Set once the remote peer is known to have left the domain. */
  peerGone = false;
  private readonly base: number;
  private readonly myFlags: number;
  private readonly theirFlags: number;
  private readonly txReaderSleeping: number;
  private readonly txWriterSleeping: number;
  private readonly rxReaderSleeping: number;
  private readonly rxWriterSleeping: number;
  /** The low word of the rx ring's head (the producer's position), and our own position in it, mod 2^32. */
  private readonly rxHeadLow: number;
  private rxPos = 0;
  private released = false;
  /** A view of the rx ring is being read (readInPlace): letting go of the slot waits until it is done. */
  private viewing = false;
  /** Bytes of that view: taken by the consumer that reads it, though the ring holds them until viewed(). */
  private viewingBytes = 0;
  private letGoLater: (() => void) | undefined;
  /** Client side: the server has not been rung for the request yet (see announce()). */
  private unannounced = false;
  /** Our ring's head when its pages were last given back, and when last looked at (see idle()). */
  private trimmedAt = AS_DOUBLE;
  private headSeen = AS_DOUBLE;
  /** Client side: the address and port dialled, when the connection went elsewhere (a Service's address: podroute.ts). */
  dialledAs: { addr: Addr; port: number } | undefined;
  /** Server side: the request's words as they were vetted (ticket.ts). */
  private fixed: Int32Array | undefined;

  private constructor(domain: Domain, slot: number, gen: number, side: Side, peer: number, peerGen: number) {
    this.trimmedAt = 0;
    this.headSeen = -1;
    this.domain = domain;
    this.slot = slot;
    this.gen = gen;
    this.side = side;
    this.peer = peer;
    this.peerGen = peerGen;
    const addon = native();
    const rings = Lay.ringOffsets(domain.geo, slot);
    const client = side === 'client';
    const txHdr = client ? rings.c2sHdr : rings.s2cHdr;
    const rxHdr = client ? rings.s2cHdr : rings.c2sHdr;
    // The ring objects of this slot's last connection on our side, if kept; else new ones.
    const kept = domain.takeRings(slot, !client);
    let resynced = false;
    if (kept) {
      try {
        kept.tx.resync();
        kept.rx.resync();
        resynced = true;
      } catch {
        // Made anew below, which throws what is wrong (a corrupt header, a closed region).
      }
    }
    if (kept && resynced) {
      this.tx = kept.tx;
      this.rx = kept.rx;
    } else {
      this.tx = new addon.Ring(domain.region, txHdr, client ? rings.c2sData : rings.s2cData, domain.geo.ringSize, true);
      this.rx = new addon.Ring(domain.region, rxHdr, client ? rings.s2cData : rings.c2sData, domain.geo.ringSize, false);
    }
    this.base = Lay.slotOffset(domain.geo, slot) >>> 2;
    this.myFlags = this.base + (client ? Lay.SLOT.CLIENT_FLAGS : Lay.SLOT.SERVER_FLAGS);
    this.theirFlags = this.base + (client ? Lay.SLOT.SERVER_FLAGS : Lay.SLOT.CLIENT_FLAGS);
    this.txReaderSleeping = (txHdr + Lay.RING_READER_SLEEPING) >>> 2;
    this.txWriterSleeping = (txHdr + Lay.RING_WRITER_SLEEPING) >>> 2;
    this.rxReaderSleeping = (rxHdr + Lay.RING_READER_SLEEPING) >>> 2;
    this.rxWriterSleeping = (rxHdr + Lay.RING_WRITER_SLEEPING) >>> 2;
    this.rxHeadLow = (rxHdr + Lay.RING_HEAD) >>> 2;
    this.rxPos = this.rx.tail() % 0x100000000;
    domain.attach(slot, side === 'server', this);
  }

  /**
   * Client side: claims a free slot for a connection to `listener`, and asks
   * its owner to accept. Returns undefined when every slot is taken.
   */
  static connect(domain: Domain, listener: Found, remote: Addr, remotePort: number, local: Addr | undefined, localPort = 0): Channel | undefined {
    const { i32, geo } = domain;
    // The client's address as the server sees it: on one node, the source the
    // kernel would pick (127.0.0.1 for all of 127/8, else the dialled address
    // itself); across nodes, one its own node published. A port the socket
    // was bound to (localPort) is kept; otherwise an ephemeral one is made up.
    // With another network namespace, the address its daemon saw we have.
    const podSource = domain.podSource?.family === remote.family ? domain.podSource : undefined;
    const localAddr =
      local ??
      podSource ??
      (listener.sameNode ? sourceFor(remote) : (publishedAddrs(i32, geo, domain.id).find((addr) => addr.family === remote.family) ?? remote));
    const port = localPort > 0 && localPort < 65536 ? localPort : EPHEMERAL_LOW + ((Atomics.add(i32, Lay.HEADER.PORT_COUNTER, 1) >>> 0) % EPHEMERAL_COUNT);
    let ch: Channel | undefined;
    const req: Slot.Request = {
      client: domain.id,
      clientGen: domain.gen,
      server: listener.owner,
      serverGen: listener.ownerGen,
      listener: listener.index,
      listenerWord: listener.word,
      family: remote.family,
      clientAddr: localAddr.bytes,
      clientPort: port,
      serverAddr: remote.bytes,
      serverPort: remotePort,
      mapped: listener.family === 6 && remote.family === 4,
    };
    const prepare = (slot: number, gen: number): void => {
      ch = new Channel(domain, slot, gen, 'client', listener.owner, listener.ownerGen);
    };
    // A slot let go of lately first (see Domain.recentSlots), then the first free one from the hint.
    let claimed: { slot: number; gen: number } | undefined;
    const recent = domain.recentSlots;
    for (let k = recent.length - 1; k >= 0 && k >= recent.length - RECENT_TRIES && !claimed; k--) {
      claimed = Slot.request(domain.region, i32, geo, req, prepare, recent[k], 1);
      if (claimed) recent.splice(k, 1);
    }
    if (!claimed) {
      claimed = Slot.request(domain.region, i32, geo, req, prepare, domain.slotHint);
      if (claimed) domain.slotHint = claimed.slot + 1;
    }
    if (!claimed || !ch) return undefined;
    // A listener of this process looks on its next turn. Another is rung by
    // announce() once the connect completed, or by the first write before
    // that: one doorbell for the request and the bytes that come with it.
    if (listener.owner === domain.id) domain.notify(listener.owner, claimed.slot, listener.ownerGen, true);
    else ch.unannounced = true;
    return ch;
  }

  /** Server side: accepts the connection waiting in `slot`. Undefined if the client gave up meanwhile. */
  static accept(domain: Domain, slot: number, word: number, snap?: Int32Array): Channel | undefined {
    const [client, clientGen] = snap ? [snap[Lay.SLOT.CLIENT], snap[Lay.SLOT.CLIENT_GEN]] : Slot.requester(domain.i32, domain.geo, slot);
    let ch: Channel;
    try {
      ch = new Channel(domain, slot, Lay.genOf(word), 'server', client, clientGen);
      ch.fixed = snap;
    } catch (err) {
      // The request's rings make no sense (corrupt, or forged): that connection is refused, nothing else.
      debug('refused the connection request in slot %d: %s', slot, (err as Error).message);
      Channel.refuse(domain, slot, word);
      return undefined;
    }
    if (!Slot.accept(domain.i32, domain.geo, slot, word)) {
      domain.detach(slot, true, ch);
      ch.released = true;
      return undefined;
    }
    // The client is not rung: its connect completed already (see ShmHandle.beginConnect),
    // and it learns of the accept with the first bytes, the FIN or the close that follow.
    return ch;
  }

  /** Server side: turns the connection in `slot` away (its client falls back to TCP). */
  static refuse(domain: Domain, slot: number, word: number): void {
    Slot.refuse(domain.i32, domain.geo, slot, word, (client, gen) => domain.notify(client, slot, gen, true));
  }

  endpoints(): Endpoints {
    // The server's side: the request as it was vetted, not as the slot may read now.
    const i32 = this.fixed ?? this.domain.i32;
    const base = this.fixed ? 0 : this.base;
    const family = Atomics.load(i32, base + Lay.SLOT.FAMILY) === 6 ? 6 : 4;
    const clientAddr = readAddr(i32, base + Lay.SLOT.CLIENT_ADDR, family);
    const clientPort = Atomics.load(i32, base + Lay.SLOT.CLIENT_PORT) & 0xffff;
    const serverAddr = readAddr(i32, base + Lay.SLOT.SERVER_ADDR, family);
    const serverPort = Atomics.load(i32, base + Lay.SLOT.SERVER_PORT) & 0xffff;
    if (this.side === 'client') {
      const shown = this.dialledAs;
      if (shown) return { family: shown.addr.family, local: clientAddr, localPort: clientPort, remote: shown.addr, remotePort: shown.port };
      return { family, local: clientAddr, localPort: clientPort, remote: serverAddr, remotePort: serverPort };
    }
    // A dual-stack listener sees an IPv4 client at IPv4-mapped addresses, as the kernel shows them.
    if (Atomics.load(i32, base + Lay.SLOT.MAPPED) === 1)
      return { family: 6, local: mapV4(serverAddr), localPort: serverPort, remote: mapV4(clientAddr), remotePort: clientPort };
    return { family, local: serverAddr, localPort: serverPort, remote: clientAddr, remotePort: clientPort };
  }

  // -- data -------------------------------------------------------------------

  /** Writes what fits of `chunks` (in order); returns bytes written. Rings the reader if it sleeps. */
  write(chunks: Uint8Array[]): number {
    // A released slot may already carry another connection.
    if (this.released) throw errnoException('EBADF', 'write');
    const count = chunks.length === 1 ? this.tx.write(chunks[0]) : this.tx.writev(chunks);
    if (count > 0) {
      this.wakeIf(this.txReaderSleeping);
      this.domain.kick(); // an answer is likely: look for it before sleeping
    }
    return count;
  }

  /** Reads up to `max` bytes, or null if none. Rings the writer if it was waiting for room. */
  read(max: number): Buffer | null {
    if (this.released) return null;
    let buf: Buffer | null = null;
    // A small read is one call, into a slice of the pool: a Buffer made by the
    // addon costs about a microsecond, most of a small read.
    if (POOL_SIZE - poolUsed < SMALL_READ) {
      pool = Buffer.allocUnsafeSlow(POOL_SIZE);
      poolUsed = 0;
    }
    const got = max > 0 ? this.rx.readSmall(pool, poolUsed, max < SMALL_READ - 1 ? max : SMALL_READ - 1) : 0;
    if (got > 0) {
      buf = pool.subarray(poolUsed, poolUsed + got);
      poolUsed = (poolUsed + got + 7) & ~7;
    } else if (got < 0) {
      buf = this.rx.read(max);
    }
    if (buf === null) return null;
    this.consumed(buf.length);
    return buf;
  }

  /**
   * Up to `max` of the bytes waiting, as a view of the ring itself: no copy,
   * for a consumer that copies what it is given before it returns (a native
   * stream's readBuffer). Null if nothing waits, undefined if the region
   * cannot be viewed there (read a copy). Bytes past the ring's end come with
   * the next view. Nothing is released until viewed() says how much was
   * read; letting go of the connection meanwhile keeps the slot ours until
   * then: no other connection writes where the view points while it is read.
   */
  view(max: number): Buffer | null | undefined {
    if (this.released) return null;
    const view = this.rx.peek(max);
    if (view) {
      this.viewing = true;
      this.viewingBytes = view.length;
    }
    return view;
  }

  /**
   * Bytes in our receive ring nobody has taken: what waits there, less a
   * view being read (its consumer has them, as a kernel socket's reader has
   * what it read even while it still parses it).
   */
  untaken(): number {
    return this.rx.available() - this.viewingBytes;
  }

  /** The view from view() was read: its `count` bytes are released (unless the connection was let go of meanwhile). */
  viewed(count: number): void {
    if (!this.viewing) return;
    this.viewing = false;
    this.viewingBytes = 0;
    const letGo = this.letGoLater;
    this.letGoLater = undefined;
    if (letGo) return letGo();
    if (this.released) return;
    this.rx.release(count);
    this.consumed(count);
  }

  /** `count` bytes were read: our position moves on, the writer is woken if it waits for room. */
  private consumed(count: number): void {
    this.domain.kick(); // more is likely: look for it before sleeping, as after a write
    this.rxPos = (this.rxPos + count) % 0x100000000;
    // A writer waiting for room is woken once half the ring is free, not for
    // every chunk: both sides then move big batches per wakeup.
    if (Atomics.load(this.domain.i32, this.rxWriterSleeping) !== 0 && this.waiting() <= this.rx.capacity >>> 1) {
      this.wakeIf(this.rxWriterSleeping);
    }
  }

  /**
   * Bytes waiting in our rx ring, from the producer's head as the region says
   * and our own position: no call into the addon. A head that makes no sense
   * gives a count beyond the ring's size: a read then (the addon's) says what
   * is wrong.
   */
  waiting(): number {
    return (Atomics.load(this.domain.i32, this.rxHeadLow) - this.rxPos) >>> 0;
  }

  /**
   * Announces that this end will wait for data. Returns false if data arrived
   * meanwhile (do not wait: read again).
   */
  sleepRead(): boolean {
    Atomics.store(this.domain.i32, this.rxReaderSleeping, 1);
    return this.waiting() === 0;
  }

  /** Announces that this end waits for room in its tx ring. Returns false if room appeared meanwhile. */
  sleepWrite(): boolean {
    Atomics.store(this.domain.i32, this.txWriterSleeping, 1);
    return this.tx.free() === 0;
  }

  /** Something waits to be read: bytes in the ring, or news of the other end. */
  pending(): boolean {
    return !this.released && (this.waiting() > 0 || this.peerEnd() !== 'open');
  }

  /** Room in our ring now. */
  writable(): number {
    return this.released ? 0 : this.tx.free();
  }

  /** Bytes written by us and not yet read by the peer. */
  unreadByPeer(): number {
    return this.tx.capacity - this.tx.free();
  }

  private wakeIf(sleepingWord: number): void {
    const i32 = this.domain.i32;
    if (Atomics.load(i32, sleepingWord) !== 0 && Atomics.exchange(i32, sleepingWord, 0) !== 0) this.ringPeer();
  }

  /** Rings the other end for this slot; the first ring of a request always rings (a bit left set by the slot's last connection hides nothing). */
  private ringPeer(): void {
    const force = this.unannounced;
    this.unannounced = false;
    this.domain.notify(this.peer, this.slot, this.peerGen, force);
  }

  /** Client side: rings the server for the request unless a write, a FIN or a close did already. */
  announce(): void {
    if (this.unannounced && !this.released) this.ringPeer();
  }

  /** Asks the domain for another unit of work for this end, on a later call from the event loop. */
  again(): void {
    if (!this.released) this.domain.again(this.slot, this.side === 'server');
  }

  // -- the other end, in words ---------------------------------------------------

  /** What the other end did, looked at once (read it before the ring: a 'fin' then means every byte is in). */
  peerEnd(): PeerEnd {
    const flags = this.peerFlags();
    if (flags & Lay.F_RST) return 'reset';
    if (flags & Lay.F_FIN) return 'fin';
    if (flags & Lay.F_DEAD || this.peerGone) return 'gone';
    return 'open';
  }

  /** The other end died or left the domain (whatever it sent before). */
  peerDied(): boolean {
    return (this.peerFlags() & Lay.F_DEAD) !== 0 || this.peerGone;
  }

  /** The other end let go of the connection: it reads nothing any more. */
  peerClosed(): boolean {
    return (this.peerFlags() & (Lay.F_CLOSED | Lay.F_RST | Lay.F_DEAD)) !== 0 || this.peerGone;
  }

  /** Where our connection request stands. */
  request(): RequestState {
    const state = Slot.stateOf(this.domain.i32, this.domain.geo, this.slot, this.gen);
    if (state === 'lost' || state === 'free') return 'lost';
    if (state === 'established') return 'accepted';
    if (state === 'refused') return 'refused';
    return 'pending';
  }

  /**
   * The slot no longer carries this connection though we never let go of it:
   * only a write into the region by someone else does that.
   */
  stolen(): boolean {
    return !this.released && Lay.genOf(Atomics.load(this.domain.i32, this.base + Lay.SLOT.STATE)) !== this.gen;
  }

  /** Half-close: we write no more. */
  sendFin(): void {
    this.signal(Lay.F_FIN);
  }

  /**
   * Lets go of the connection: the other end sees an orderly close ('fin') or
   * a reset. `keepRequest`: see release().
   */
  close(how: Slot.CloseHow, keepRequest = false): void {
    if (this.released) return;
    this.released = true;
    this.domain.detach(this.slot, this.side === 'server', this);
    // Nothing of ours reads or writes through them any more (see write(), read()).
    this.domain.keepRings(this.slot, this.side === 'server', this.tx, this.rx);
    // Slots taken before are taken again first: their pages are memory already.
    if (this.slot < this.domain.slotHint) this.domain.slotHint = this.slot;
    const recent = this.domain.recentSlots;
    if (recent.length >= RECENT_MAX) recent.shift();
    recent.push(this.slot);
    // keepRequest: a connection already reported connected that the server has yet to
    // accept keeps its slot (what was written, and the FIN, reach the server as over
    // TCP); the server frees it after accepting, or when refusing.
    const letGo = (): void => {
      if (Slot.letGo(this.domain.i32, this.domain.geo, this.slot, this.gen, this.side === 'client', how, keepRequest, () => this.discardRings()))
        this.ringPeer();
    };
    if (this.viewing) this.letGoLater = letGo;
    else letGo();
  }

  // -- flags ------------------------------------------------------------------

  peerFlags(): number {
    return Atomics.load(this.domain.i32, this.theirFlags);
  }

  myFlagsNow(): number {
    return Atomics.load(this.domain.i32, this.myFlags);
  }

  /** Sets flag bits on our side and tells the peer. */
  signal(bits: number): void {
    if (this.released) return;
    Atomics.or(this.domain.i32, this.myFlags, bits);
    this.ringPeer();
  }

  get isReleased(): boolean {
    return this.released;
  }

  // -- memory -------------------------------------------------------------------

  /**
   * Both sides let go: the rings that carried bulk data give their pages back
   * before the slot is free for another connection. Where pages cannot be
   * given back (a guest's BAR) they are wiped here, by whoever lets go last,
   * rather than by the next connection's client while it connects.
   */
  private discardRings(): void {
    const { i32, geo, region } = this.domain;
    const rings = Lay.ringOffsets(geo, this.slot);
    for (const [hdr, data] of [
      [rings.c2sHdr, rings.c2sData],
      [rings.s2cHdr, rings.s2cData],
    ]) {
      const used = Slot.usedOf(i32, hdr, geo.ringSize);
      if (used < TRIM_MIN) continue;
      if (!region.discard(data, geo.ringSize)) region.zero(data, used);
      Slot.forgetRing(i32, hdr);
    }
  }

  /**
   * Called about once a second (Domain.recheck): our ring, if it carried bulk
   * data since it was last given back and has stood empty since the last call,
   * gives its pages back. Only we write into it, and with nothing unread the
   * reader touches none of it.
   */
  idle(): void {
    if (this.released) return;
    const head = this.tx.head();
    const seen = this.headSeen;
    this.headSeen = head;
    if (head !== seen || head - this.trimmedAt < TRIM_MIN || this.tx.tail() !== head) return;
    const { geo, region } = this.domain;
    const rings = Lay.ringOffsets(geo, this.slot);
    if (region.discard(this.side === 'client' ? rings.c2sData : rings.s2cData, geo.ringSize)) this.trimmedAt = head;
  }

  // -- SlotHandler ------------------------------------------------------------

  onEvent(): void {
    this.onchange();
  }

  quiet(): boolean {
    return !this.released && this.isQuiet();
  }

  onLeaving(): void {
    // We are no longer a member: the connection is over, as if the other side had died.
    this.peerGone = true;
    this.again();
  }

  onPeerLeft(): void {
    if (!this.domain.peerAlive(this.peer, this.peerGen)) {
      this.peerGone = true;
      this.again();
    }
  }
}

function noop(): void {}

function no(): boolean {
  return false;
}

/** The source address Linux picks for a connection to `remote` on this node. */
function sourceFor(remote: Addr): Addr {
  if (remote.family === 4 && remote.bytes[0] === 127) {
    const bytes = new Uint8Array(16);
    bytes.set([127, 0, 0, 1]);
    return { family: 4, bytes: bytes };
  }
  return remote;
}
