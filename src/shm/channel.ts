/**
 * A channel: one end of one connection, i.e. one slot of the region seen from
 * the client or the server side. It owns the slot's two rings (tx: the one it
 * produces into, rx: the one it consumes), its own flag word, and the doorbell
 * discipline: a reader says it sleeps before it waits, a writer rings only
 * when the reader sleeps (and the same the other way round when a ring is full).
 */
import { native, NativeRing } from './native';
import type { Domain, SlotHandler } from './domain';
import type { Addr, Found } from './directory';
import { mapV4, publishedAddrs, readAddr, writeAddr } from './directory';
import * as Lay from './layout';

const EPHEMERAL_LOW = 32768;
const EPHEMERAL_COUNT = 60999 - 32768 + 1;

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

export class Channel implements SlotHandler {
  readonly d: Domain;
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
  /** Set once the remote peer is known to have left the domain. */
  peerGone = false;
  private readonly base: number;
  private readonly myFlags: number;
  private readonly theirFlags: number;
  private readonly txReaderSleeping: number;
  private readonly txWriterSleeping: number;
  private readonly rxReaderSleeping: number;
  private readonly rxWriterSleeping: number;
  private released = false;

  private constructor(d: Domain, slot: number, gen: number, side: Side, peer: number, peerGen: number) {
    this.d = d;
    this.slot = slot;
    this.gen = gen;
    this.side = side;
    this.peer = peer;
    this.peerGen = peerGen;
    const N = native();
    const r = Lay.ringOffsets(d.g, slot);
    const client = side === 'client';
    const txHdr = client ? r.c2sHdr : r.s2cHdr;
    const rxHdr = client ? r.s2cHdr : r.c2sHdr;
    this.tx = new N.Ring(d.region, txHdr, client ? r.c2sData : r.s2cData, d.g.ringSize, true);
    this.rx = new N.Ring(d.region, rxHdr, client ? r.s2cData : r.c2sData, d.g.ringSize, false);
    this.base = Lay.slotOffset(d.g, slot) >> 2;
    this.myFlags = this.base + (client ? Lay.S.CLIENT_FLAGS : Lay.S.SERVER_FLAGS);
    this.theirFlags = this.base + (client ? Lay.S.SERVER_FLAGS : Lay.S.CLIENT_FLAGS);
    this.txReaderSleeping = (txHdr + Lay.RING_READER_SLEEPING) >> 2;
    this.txWriterSleeping = (txHdr + Lay.RING_WRITER_SLEEPING) >> 2;
    this.rxReaderSleeping = (rxHdr + Lay.RING_READER_SLEEPING) >> 2;
    this.rxWriterSleeping = (rxHdr + Lay.RING_WRITER_SLEEPING) >> 2;
    d.attach(slot, side === 'server', this);
  }

  /**
   * Client side: claims a free slot for a connection to listener `l`, and asks
   * its owner to accept. Returns undefined when every slot is taken.
   */
  static connect(d: Domain, l: Found, remote: Addr, remotePort: number, local: Addr | undefined, localPort = 0): Channel | undefined {
    const { i32, g } = d;
    for (let slot = 0; slot < g.nslots; slot++) {
      const s = Lay.slotOffset(g, slot) >> 2;
      const w = Atomics.load(i32, s + Lay.S.STATE);
      if (Lay.stateOf(w) !== Lay.SLOT_FREE) continue;
      const gen = (Lay.genOf(w) + 1) & 0xffffff;
      if (Atomics.compareExchange(i32, s + Lay.S.STATE, w, Lay.makeState(gen, Lay.SLOT_CLAIMED)) !== w) continue;
      // The slot is ours alone until it is published as CONNECTING.
      const sb = Lay.slotOffset(g, slot);
      new Uint8Array(d.region.buffer, sb + 4, Lay.SLOT_HEADER_SIZE - 4).fill(0);
      Atomics.store(i32, s + Lay.S.CLIENT, d.id);
      Atomics.store(i32, s + Lay.S.CLIENT_GEN, d.gen);
      Atomics.store(i32, s + Lay.S.SERVER, l.owner);
      Atomics.store(i32, s + Lay.S.SERVER_GEN, l.ownerGen);
      Atomics.store(i32, s + Lay.S.LISTENER, l.index);
      Atomics.store(i32, s + Lay.S.LISTENER_STATE, l.word);
      Atomics.store(i32, s + Lay.S.FAMILY, remote.family);
      // The client's address as the server sees it: on one node, the source the
      // kernel would pick (127.0.0.1 for all of 127/8, else the dialled address
      // itself); across nodes, one its own node published. A port the socket
      // was bound to (localPort) is kept; otherwise an ephemeral one is made up.
      const localAddr = local ?? (l.sameNode ? sourceFor(remote) : publishedAddrs(i32, g, d.id).find((a) => a.family === remote.family) ?? remote);
      writeAddr(i32, s + Lay.S.CLIENT_ADDR, localAddr.bytes);
      const port = localPort > 0 && localPort < 65536 ? localPort : EPHEMERAL_LOW + ((Atomics.add(i32, Lay.H.PORT_COUNTER, 1) >>> 0) % EPHEMERAL_COUNT);
      Atomics.store(i32, s + Lay.S.CLIENT_PORT, port);
      writeAddr(i32, s + Lay.S.SERVER_ADDR, remote.bytes);
      Atomics.store(i32, s + Lay.S.SERVER_PORT, remotePort);
      Atomics.store(i32, s + Lay.S.MAPPED, l.family === 6 && remote.family === 4 ? 1 : 0);
      // Both readers start asleep: the first byte each way rings the doorbell.
      const r = Lay.ringOffsets(g, slot);
      Atomics.store(i32, (r.c2sHdr + Lay.RING_READER_SLEEPING) >> 2, 1);
      Atomics.store(i32, (r.s2cHdr + Lay.RING_READER_SLEEPING) >> 2, 1);
      const ch = new Channel(d, slot, gen, 'client', l.owner, l.ownerGen);
      Atomics.store(i32, s + Lay.S.STATE, Lay.makeState(gen, Lay.SLOT_CONNECTING));
      d.notify(l.owner, slot, l.ownerGen, true);
      return ch;
    }
    return undefined;
  }

  /** Server side: accepts the connection waiting in `slot`. Undefined if the client gave up meanwhile. */
  static accept(d: Domain, slot: number, word: number): Channel | undefined {
    const { i32, g } = d;
    const s = Lay.slotOffset(g, slot) >> 2;
    const client = Atomics.load(i32, s + Lay.S.CLIENT);
    const clientGen = Atomics.load(i32, s + Lay.S.CLIENT_GEN);
    const ch = new Channel(d, slot, Lay.genOf(word), 'server', client, clientGen);
    if (Atomics.compareExchange(i32, s + Lay.S.STATE, word, Lay.makeState(Lay.genOf(word), Lay.SLOT_ESTABLISHED)) !== word) {
      d.detach(slot, true, ch);
      ch.released = true;
      return undefined;
    }
    d.notify(client, slot, clientGen, true);
    return ch;
  }

  /** Server side: turns the connection in `slot` away (its client falls back to TCP). */
  static refuse(d: Domain, slot: number, word: number): void {
    refuseSlot(d.i32, d.g, slot, word, (client, gen) => d.notify(client, slot, gen, true));
  }

  /** SLOT_* of the slot, or -1 if the slot no longer belongs to this connection. */
  state(): number {
    const w = Atomics.load(this.d.i32, this.base + Lay.S.STATE);
    if (Lay.genOf(w) !== this.gen) return -1;
    return Lay.stateOf(w);
  }

  endpoints(): Endpoints {
    const i32 = this.d.i32;
    const fam = Atomics.load(i32, this.base + Lay.S.FAMILY) === 6 ? 6 : 4;
    const c = readAddr(i32, this.base + Lay.S.CLIENT_ADDR, fam);
    const cp = Atomics.load(i32, this.base + Lay.S.CLIENT_PORT);
    const sv = readAddr(i32, this.base + Lay.S.SERVER_ADDR, fam);
    const sp = Atomics.load(i32, this.base + Lay.S.SERVER_PORT);
    if (this.side === 'client') return { family: fam, local: c, localPort: cp, remote: sv, remotePort: sp };
    // A dual-stack listener sees an IPv4 client at IPv4-mapped addresses, as the kernel shows them.
    if (Atomics.load(i32, this.base + Lay.S.MAPPED) === 1) return { family: 6, local: mapV4(sv), localPort: sp, remote: mapV4(c), remotePort: cp };
    return { family: fam, local: sv, localPort: sp, remote: c, remotePort: cp };
  }

  // -- data -------------------------------------------------------------------

  /** Writes what fits of `chunks` (in order); returns bytes written. Rings the reader if it sleeps. */
  write(chunks: Uint8Array[]): number {
    // A released slot may already carry another connection.
    if (this.released) throw Object.assign(new Error('write EBADF'), { code: 'EBADF', errno: -9, syscall: 'write' });
    const n = chunks.length === 1 ? this.tx.write(chunks[0]) : this.tx.writev(chunks);
    if (n > 0) {
      this.wakeIf(this.txReaderSleeping);
      this.d.kick(); // an answer is likely: look for it before sleeping
    }
    return n;
  }

  /** Reads up to `max` bytes, or null if none. Rings the writer if it was waiting for room. */
  read(max: number): Buffer | null {
    if (this.released) return null;
    const b = this.rx.read(max);
    // A writer waiting for room is woken once half the ring is free, not for
    // every chunk: both sides then move big batches per wakeup.
    if (b !== null && Atomics.load(this.d.i32, this.rxWriterSleeping) !== 0 && this.rx.available() <= this.rx.capacity >>> 1) {
      this.wakeIf(this.rxWriterSleeping);
    }
    return b;
  }

  /**
   * Announces that this end will wait for data. Returns false if data arrived
   * meanwhile (do not wait: read again).
   */
  sleepRead(): boolean {
    Atomics.store(this.d.i32, this.rxReaderSleeping, 1);
    return this.rx.available() === 0;
  }

  /** Announces that this end waits for room in its tx ring. Returns false if room appeared meanwhile. */
  sleepWrite(): boolean {
    Atomics.store(this.d.i32, this.txWriterSleeping, 1);
    return this.tx.free() === 0;
  }

  /** Room in our ring now. */
  writable(): number {
    return this.released ? 0 : this.tx.free();
  }

  /** Bytes written by us and not yet read by the peer. */
  unreadByPeer(): number {
    return this.tx.capacity - this.tx.free();
  }

  private wakeIf(flagIdx: number): void {
    const i32 = this.d.i32;
    if (Atomics.load(i32, flagIdx) !== 0 && Atomics.exchange(i32, flagIdx, 0) !== 0) this.d.notify(this.peer, this.slot, this.peerGen);
  }

  /** Asks the domain for another unit of work for this end, on a later call from the event loop. */
  again(): void {
    if (!this.released) this.d.again(this.slot, this.side === 'server');
  }

  // -- the other end, in words ---------------------------------------------------

  /** What the other end did, looked at once (read it before the ring: a 'fin' then means every byte is in). */
  peerEnd(): PeerEnd {
    const f = this.peerFlags();
    if (f & Lay.F_RST) return 'reset';
    if (f & Lay.F_FIN) return 'fin';
    if (f & Lay.F_DEAD || this.peerGone) return 'gone';
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
    const st = this.state();
    if (st === -1) return 'lost';
    if (st === Lay.SLOT_ESTABLISHED) return 'accepted';
    if (st === Lay.SLOT_REFUSED) return 'refused';
    return 'pending';
  }

  /** Half-close: we write no more. */
  sendFin(): void {
    this.signal(Lay.F_FIN);
  }

  /**
   * Lets go of the connection: the other end sees an orderly close ('fin') or
   * a reset. `keepRequest`: see release().
   */
  close(how: 'fin' | 'reset', keepRequest = false): void {
    this.release(how === 'fin' ? Lay.F_FIN : Lay.F_RST, keepRequest);
  }

  // -- flags ------------------------------------------------------------------

  peerFlags(): number {
    return Atomics.load(this.d.i32, this.theirFlags);
  }

  myFlagsNow(): number {
    return Atomics.load(this.d.i32, this.myFlags);
  }

  /** Sets flag bits on our side and tells the peer. */
  signal(bits: number): void {
    if (this.released) return;
    Atomics.or(this.d.i32, this.myFlags, bits);
    this.d.notify(this.peer, this.slot, this.peerGen);
  }

  /**
   * Lets go of the slot: `how` says what the peer sees (F_FIN: orderly close,
   * F_RST: reset). The slot is freed by whichever side lets go last.
   */
  release(how: number, keepRequest = false): void {
    if (this.released) return;
    this.released = true;
    this.d.detach(this.slot, this.side === 'server', this);
    const i32 = this.d.i32;
    const s = this.base + Lay.S.STATE;
    const w = Atomics.load(i32, s);
    if (Lay.genOf(w) !== this.gen) return; // freed already (the peer died and the daemon reaped)
    const st = Lay.stateOf(w);
    if (st === Lay.SLOT_CLAIMED || st === Lay.SLOT_REFUSED || (st === Lay.SLOT_CONNECTING && !keepRequest)) {
      // Still a request: take it back. If the server accepts meanwhile the CAS fails and we close normally.
      if (this.side === 'client' && Atomics.compareExchange(i32, s, w, Lay.makeState(this.gen + 1, Lay.SLOT_FREE)) === w) return;
    }
    // keepRequest: a connection already reported connected that the server has yet to
    // accept keeps its slot (what was written, and the FIN, reach the server as over
    // TCP); the server frees it after accepting, or when refusing.
    Atomics.or(i32, this.myFlags, how | Lay.F_CLOSED);
    if (Atomics.load(i32, this.theirFlags) & Lay.F_CLOSED) {
      const now = Atomics.load(i32, s);
      if (Lay.genOf(now) === this.gen && Lay.stateOf(now) !== Lay.SLOT_FREE) {
        Atomics.compareExchange(i32, s, now, Lay.makeState(this.gen + 1, Lay.SLOT_FREE));
      }
      return;
    }
    this.d.notify(this.peer, this.slot, this.peerGen);
  }

  get isReleased(): boolean {
    return this.released;
  }

  // -- SlotHandler ------------------------------------------------------------

  onEvent(): void {
    this.onchange();
  }

  onLeaving(): void {
    // We are no longer a member: the connection is over, as if the other side had died.
    this.peerGone = true;
    this.again();
  }

  onPeerLeft(): void {
    if (!this.d.peerAlive(this.peer, this.peerGen)) {
      this.peerGone = true;
      this.again();
    }
  }
}

function noop(): void {}

/**
 * Turns the request in `slot` (state `word`) away; a client that is gone
 * already (it closed after being told it was connected) leaves the slot to
 * us: free it. Otherwise `tell` the client.
 */
export function refuseSlot(i32: Int32Array, g: Lay.Geometry, slot: number, word: number, tell: (client: number, gen: number) => void): void {
  const s = Lay.slotOffset(g, slot) >> 2;
  const refused = Lay.makeState(Lay.genOf(word), Lay.SLOT_REFUSED);
  if (Atomics.compareExchange(i32, s + Lay.S.STATE, word, refused) !== word) return;
  if (Atomics.load(i32, s + Lay.S.CLIENT_FLAGS) & Lay.F_CLOSED) {
    Atomics.compareExchange(i32, s + Lay.S.STATE, refused, Lay.makeState(Lay.genOf(word) + 1, Lay.SLOT_FREE));
    return;
  }
  tell(Atomics.load(i32, s + Lay.S.CLIENT), Atomics.load(i32, s + Lay.S.CLIENT_GEN));
}

/** The source address Linux picks for a connection to `remote` on this node. */
function sourceFor(remote: Addr): Addr {
  if (remote.family === 4 && remote.bytes[0] === 127) {
    const b = new Uint8Array(16);
    b.set([127, 0, 0, 1]);
    return { family: 4, bytes: b };
  }
  return remote;
}

