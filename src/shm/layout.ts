/**
 * The shared region's layout: the one source of truth for every offset.
 * native/layout.h mirrors the ring header part (RING_*), nothing else.
 *
 * All fields are little-endian. 32-bit words that change after start-up are
 * accessed with Atomics on an Int32Array view; 64-bit ring positions only by
 * the native ring (increasing counters, masked by the power-of-two capacity).
 *
 *  offset 0                                  REGION HEADER (4096 bytes)
 *  ┌──────────┬──────────┬─────────┬─────────┬─────────┬─────────┬────────┬────────┐
 *  │ magic0   │ magic1   │ version │ hdrSize │ state   │ vectors │maxPeers│maxLsnr │  0..31
 *  ├──────────┼──────────┼─────────┼─────────┼─────────┼─────────┼────────┼────────┤
 *  │ nslots   │ ringSize │ringsOff │portCntr │ sizeLo  │ sizeHi  │peersOff│lsnrOff │ 32..63
 *  ├──────────┼──────────┼─────────┼─────────┼─────────┼─────────┼────────┼────────┤
 *  │pendingOff│pendStride│slotsOff │daemonPid│ nonce   │ (reserved up to 4096)        64..
 *  └──────────┴──────────┴─────────┴─────────┴─────────┴──────────────────────────────┘
 *  peersOff        maxPeers × PEER (128 bytes; words 8..31 hold the peer's node addresses, PEER_ADDRS)
 *  lsnrOff         maxListeners × LISTENER (64 bytes)
 *  pendingOff      maxPeers × pendStride: a summary (bit w: word w of the bitmap may have bits set;
 *                  64-byte aligned) then the bitmap (one bit per slot, "slot i needs you"
 *  slotsOff        nslots × SLOT_SIZE (1024 bytes, a dense table: four slots to a page):
 *                    0     SLOT header (client/server words, addresses)
 *                    256   ring client→server header (RING_HEADER_SIZE)
 *                    512   ring server→client header
 *  ringsOff        nslots × 2 × ringSize (page aligned): slot i's data area at ringsOff + i × 2 × ringSize,
 *                    ring client→server data first, then ring server→client data
 *
 * Everything up to ringsOff is the control area, a few MiB at most: the only part
 * JavaScript views (one Int32Array). Ring data is touched by the native side alone
 * (rings, wipe, discard, resident), so the data area may be larger than the
 * biggest TypedArray a runtime allows, and a walk over every slot header reads
 * a quarter as many pages as there are slots.
 *
 *  RING header (256 bytes, producer line and consumer line two cache lines apart):
 *    0   u64 head            written by the producer only (bytes ever written)
 *    8   u32 writerSleeping  set by the producer when the ring was full; cleared by the consumer
 *    128 u64 tail            written by the consumer only (bytes ever read)
 *    136 u32 readerSleeping  set by the consumer before it sleeps; cleared by the producer
 *
 * State words that can be recycled carry a generation: word = (gen << 8) | state,
 * so a compare-and-swap on a stale view fails (no ABA).
 */

import { ZivmBadRegionError, ZivmVersionMismatchError } from '../errors';

export const MAGIC0 = 0x4d56495a; // 'ZIVM'
export const MAGIC1 = 0x4e474552; // 'REGN'
export const VERSION = 2;
export const HEADER_SIZE = 4096;
export const PAGE = 4096;

/** Region header word indexes (Int32Array index = byte offset / 4). */
export const HEADER = {
  MAGIC0: 0,
  MAGIC1: 1,
  VERSION: 2,
  HEADER_SIZE: 3,
  STATE: 4,
  VECTORS: 5,
  MAX_PEERS: 6,
  MAX_LISTENERS: 7,
  NSLOTS: 8,
  RING_SIZE: 9,
  RINGS_OFF: 10,
  PORT_COUNTER: 11,
  SIZE_LO: 12,
  SIZE_HI: 13,
  PEERS_OFF: 14,
  LISTENERS_OFF: 15,
  PENDING_OFF: 16,
  PENDING_STRIDE: 17,
  SLOTS_OFF: 18,
  DAEMON_PID: 19,
  NONCE: 20,
  /**
   * One past the highest listener entry ever claimed (never lowered): finders
   * look no further. A hint only, clamped to MAX_LISTENERS where it is read
   * (where guests map the memory, a forged one hides listeners as forged state
   * words would: their connections go over TCP).
   */
  LISTENERS_HIGH: 21,
} as const;

export const REGION_STATE_INIT = 0;
export const REGION_STATE_READY = 1;

/** Peer entry: 128 bytes. Word indexes relative to the entry. */
export const PEER_SIZE = 128;
export const PEER = {
  STATE: 0, // PEER_*
  GEN: 1, // bumped by the daemon each time the id is handed out
  PID: 2,
  KIND: 3, // PEER_KIND_*
  NODE_LO: 4,
  NODE_HI: 5,
  ROUTE: 6, // how to ring this peer: 0 = its own vector 0; else ROUTE_VIA | vector << 16 | the peer id whose doorbells it shares
  POLLING: 7, // 1 while the peer busy-polls its pending bitmap: no need to ring its doorbell
} as const;
/**
 * The node addresses a peer publishes in its own entry (written before it goes
 * PEER_ALIVE; read only while the entry is ALIVE with the expected GEN): how a
 * listener on another node (a VM guest, another network namespace) is found by
 * the address that node has. Word ADDR_COUNTS: IPv4 count in bits 0..7, IPv6
 * count in bits 8..15; up to ADDR_MAX_V4 IPv4 addresses (one word each, the
 * bytes in order) from ADDR_V4, up to ADDR_MAX_V6 IPv6 addresses (four words
 * each) from ADDR_V6. Loopback addresses are never published.
 */
export const PEER_ADDRS = {
  ADDR_COUNTS: 8,
  ADDR_V4: 9,
  ADDR_V6: 16,
} as const;
export const ADDR_MAX_V4 = 7;
export const ADDR_MAX_V6 = 4;
export const PEER_FREE = 0;
export const PEER_JOINING = 1; // id handed out by the daemon, peer not yet announced itself
export const PEER_ALIVE = 2;
export const PEER_DEAD = 3; // left; the daemon is cleaning up after it
export const PEER_KIND_PROCESS = 1;
export const PEER_KIND_GUEST = 2;
/** A process in a VM guest: an entry claimed by the guest's agent, rung through the guest's doorbells (PEER.ROUTE). */
export const PEER_KIND_GUEST_PROCESS = 3;
export const ROUTE_VIA = 0x40000000;

/** PEER.ROUTE for a peer rung as vector `vector` of peer `via`. */
export function makeRoute(via: number, vector: number): number {
  return ROUTE_VIA | ((vector & 0x3fff) << 16) | (via & 0xffff);
}

/**
 * Which doorbell rings `peer`: [peer id whose eventfds it is, vector]. A
 * route that points outside the peer table or the vectors (the word is in
 * shared memory: anyone may have written it) is not followed: the peer's own
 * vector 0 is rung.
 */
export function routeOf(i32: Int32Array, geo: Geometry, peer: number): [number, number] {
  const route = Atomics.load(i32, (peerOffset(geo, peer) >>> 2) + PEER.ROUTE);
  if ((route & ROUTE_VIA) === 0) return [peer, 0];
  const via = route & 0xffff;
  const vector = (route >>> 16) & 0x3fff;
  if (via >= geo.maxPeers || vector >= geo.vectors) return [peer, 0];
  return [via, vector];
}

/** Listener entry: 64 bytes. */
export const LISTENER_SIZE = 64;
export const LISTENER = {
  STATE: 0, // (gen << 8) | LST_*
  OWNER: 1,
  OWNER_GEN: 2,
  PORT: 3,
  FAMILY: 4, // 4 or 6
  FLAGS: 5, // LFLAG_*
  NODE_LO: 6,
  NODE_HI: 7,
  ADDR: 8, // 16 bytes: words 8..11 (IPv4 in the first 4 bytes)
  BACKLOG: 12,
  ACCEPTED: 13,
  PICKS: 14, // connections handed to listeners sharing this one's address (cluster workers): round-robin counter
} as const;
export const LST_FREE = 0;
export const LST_CLAIMED = 1;
export const LST_ACTIVE = 2;
export const LFLAG_IPV6ONLY = 1;
export const LFLAG_WILDCARD = 2;

/** Slot header: word indexes relative to the slot start. */
export const SLOT = {
  STATE: 0, // (gen << 8) | SLOT_*
  CLIENT: 1,
  CLIENT_GEN: 2,
  SERVER: 3,
  SERVER_GEN: 4,
  LISTENER: 5,
  LISTENER_STATE: 6, // the listener's state word the client saw (gen check)
  FAMILY: 7,
  CLIENT_ADDR: 8, // 16 bytes: words 8..11
  CLIENT_PORT: 12,
  SERVER_ADDR: 13, // 16 bytes: words 13..16
  SERVER_PORT: 17,
  MAPPED: 18, // 1: the server listens on an IPv6 wildcard and sees this IPv4 client as ::ffff:a.b.c.d
  TICKET: 19, // 2 words: a host process's signature of the request (ticket.ts)
  CLIENT_FLAGS: 32, // byte 128: written by the client side (or the daemon when the client died)
  SERVER_FLAGS: 48, // byte 192: written by the server side (or the daemon when the server died)
} as const;
export const SLOT_FREE = 0;
export const SLOT_CLAIMED = 1;
export const SLOT_CONNECTING = 2;
export const SLOT_ESTABLISHED = 3;
export const SLOT_REFUSED = 4;

/** Bits in CLIENT_FLAGS / SERVER_FLAGS: what that side did. */
export const F_FIN = 1; // no more bytes will be written (half-close)
export const F_RST = 2; // reset: the other side drops what it has and fails with ECONNRESET
export const F_CLOSED = 4; // the side released the slot (its socket is gone)
export const F_DEAD = 8; // the side's peer left the domain (set by the daemon or a survivor)

/** A slot's entry in the slot table: its header words and both ring headers. */
export const SLOT_SIZE = 1024;
export const RING_C2S_HDR = 256;
export const RING_S2C_HDR = 512;

/** Ring header (bytes, relative to the ring header start). Mirrored in native/layout.h. */
export const RING_HEADER_SIZE = 256;
export const RING_HEAD = 0;
export const RING_WRITER_SLEEPING = 8;
export const RING_TAIL = 128;
export const RING_READER_SLEEPING = 136;

export function stateOf(word: number): number {
  return word & 0xff;
}
export function genOf(word: number): number {
  return word >>> 8;
}
export function makeState(gen: number, state: number): number {
  return ((gen & 0xffffff) << 8) | (state & 0xff) | 0;
}

export interface Geometry {
  size: number;
  vectors: number;
  maxPeers: number;
  maxListeners: number;
  nslots: number;
  ringSize: number;
  peersOff: number;
  listenersOff: number;
  pendingOff: number;
  pendingStride: number;
  slotsOff: number;
  ringsOff: number;
}

function alignUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export const MIN_RING = 4096;
export const MAX_RING = 1 << 30;
/** Slots of one region at most: the region's size decides (ZIVM_SIZE=256G holds 130,999 connections of 1 MiB rings). */
export const MAX_SLOTS = 1 << 20;

/**
 * Computes where everything goes for a region of `size` bytes.
 * Throws a RangeError if the numbers cannot make a usable region.
 */
export function computeGeometry(opts: {
  size: number;
  ringSize: number;
  vectors: number;
  maxPeers: number;
  maxListeners: number;
  maxSlots?: number;
}): Geometry {
  const { size, ringSize, vectors, maxPeers, maxListeners } = opts;
  if (!Number.isSafeInteger(ringSize) || ringSize < MIN_RING || ringSize > MAX_RING || (ringSize & (ringSize - 1)) !== 0)
    throw new RangeError(`ring size must be a power of two from ${MIN_RING} to ${MAX_RING}, got ${ringSize}`);
  if (!Number.isInteger(maxPeers) || maxPeers < 2 || maxPeers > 4096) throw new RangeError(`max peers must be 2..4096, got ${maxPeers}`);
  if (!Number.isInteger(maxListeners) || maxListeners < 1 || maxListeners > 65536) throw new RangeError(`max listeners must be 1..65536, got ${maxListeners}`);
  if (!Number.isInteger(vectors) || vectors < 1 || vectors > 1024) throw new RangeError(`vectors must be 1..1024, got ${vectors}`);
  const peersOff = HEADER_SIZE;
  const listenersOff = alignUp(peersOff + maxPeers * PEER_SIZE, 64);
  const dataStride = 2 * ringSize;
  const maxSlots = Math.min(opts.maxSlots ?? MAX_SLOTS, MAX_SLOTS);
  // The pending bitmaps depend on the slot count, which depends on the room left: take the
  // bitmaps for the largest count, then fit.
  let nslots = Math.max(1, Math.min(maxSlots, Math.floor(size / (dataStride + SLOT_SIZE))));
  let pendingStride = 0;
  let pendingOff = 0;
  let slotsOff = 0;
  let ringsOff = 0;
  for (;;) {
    pendingStride = summaryBytesFor(nslots) + alignUp(Math.ceil(nslots / 32) * 4, 64);
    pendingOff = alignUp(listenersOff + maxListeners * LISTENER_SIZE, 64);
    slotsOff = alignUp(pendingOff + maxPeers * pendingStride, PAGE);
    ringsOff = alignUp(slotsOff + nslots * SLOT_SIZE, PAGE);
    const fit = Math.floor((size - ringsOff) / dataStride);
    if (fit >= nslots) break;
    if (fit < 1 && nslots === 1) throw new RangeError(`a region of ${size} bytes has no room for one connection with ${ringSize}-byte rings`);
    nslots = Math.max(1, Math.min(nslots - 1, fit));
  }
  return { size, vectors, maxPeers, maxListeners, nslots, ringSize, peersOff, listenersOff, pendingOff, pendingStride, slotsOff, ringsOff };
}

/** Bytes of a pending area's summary for `nslots` slots: one bit per 32-bit word of the bitmap. */
function summaryBytesFor(nslots: number): number {
  return alignUp(Math.ceil(Math.ceil(nslots / 32) / 32) * 4, 64);
}

/** Words of a pending area's summary and of its bitmap. */
export function summaryWords(geo: Geometry): number {
  return Math.ceil(Math.ceil(geo.nslots / 32) / 32);
}
export function bitmapWords(geo: Geometry): number {
  return Math.ceil(geo.nslots / 32);
}

/** Writes a fresh header (state INIT). The caller sets STATE to READY last. */
export function writeHeader(i32: Int32Array, geo: Geometry, daemonPid: number, nonce: number): void {
  i32[HEADER.MAGIC0] = MAGIC0;
  i32[HEADER.MAGIC1] = MAGIC1;
  i32[HEADER.VERSION] = VERSION;
  i32[HEADER.HEADER_SIZE] = HEADER_SIZE;
  i32[HEADER.VECTORS] = geo.vectors;
  i32[HEADER.MAX_PEERS] = geo.maxPeers;
  i32[HEADER.MAX_LISTENERS] = geo.maxListeners;
  i32[HEADER.NSLOTS] = geo.nslots;
  i32[HEADER.RING_SIZE] = geo.ringSize;
  i32[HEADER.RINGS_OFF] = geo.ringsOff;
  i32[HEADER.PORT_COUNTER] = 0;
  i32[HEADER.SIZE_LO] = (geo.size % 0x100000000) | 0;
  i32[HEADER.SIZE_HI] = Math.floor(geo.size / 0x100000000);
  i32[HEADER.PEERS_OFF] = geo.peersOff;
  i32[HEADER.LISTENERS_OFF] = geo.listenersOff;
  i32[HEADER.PENDING_OFF] = geo.pendingOff;
  i32[HEADER.PENDING_STRIDE] = geo.pendingStride;
  i32[HEADER.SLOTS_OFF] = geo.slotsOff;
  i32[HEADER.DAEMON_PID] = daemonPid;
  i32[HEADER.NONCE] = nonce | 0;
  i32[HEADER.LISTENERS_HIGH] = 0;
  Atomics.store(i32, HEADER.STATE, REGION_STATE_INIT);
}

/**
 * Reads and checks a header written by writeHeader. `mappedSize` is what the
 * reader actually mapped: every offset must fall inside it.
 */
export function readHeader(i32: Int32Array, mappedSize: number): Geometry {
  if (i32.length < HEADER_SIZE / 4) throw new ZivmBadRegionError(`region of ${mappedSize} bytes is smaller than its header`);
  if (i32[HEADER.MAGIC0] >>> 0 !== MAGIC0 || i32[HEADER.MAGIC1] >>> 0 !== MAGIC1) throw new ZivmBadRegionError('shared region has no zivm header (bad magic)');
  const version = i32[HEADER.VERSION];
  if (version !== VERSION) throw new ZivmVersionMismatchError(`shared region has layout version ${version}, this zivm speaks ${VERSION}`);
  if (Atomics.load(i32, HEADER.STATE) !== REGION_STATE_READY) throw new ZivmBadRegionError('shared region is not initialised');
  const size = (i32[HEADER.SIZE_HI] >>> 0) * 0x100000000 + (i32[HEADER.SIZE_LO] >>> 0);
  const geo: Geometry = {
    size,
    vectors: i32[HEADER.VECTORS],
    maxPeers: i32[HEADER.MAX_PEERS],
    maxListeners: i32[HEADER.MAX_LISTENERS],
    nslots: i32[HEADER.NSLOTS],
    ringSize: i32[HEADER.RING_SIZE],
    peersOff: i32[HEADER.PEERS_OFF],
    listenersOff: i32[HEADER.LISTENERS_OFF],
    pendingOff: i32[HEADER.PENDING_OFF],
    pendingStride: i32[HEADER.PENDING_STRIDE],
    slotsOff: i32[HEADER.SLOTS_OFF],
    ringsOff: i32[HEADER.RINGS_OFF],
  };
  // Recompute from the primary numbers and insist on the same answer: a header
  // that disagrees with itself is corrupt, whatever its magic says.
  let expect: Geometry;
  try {
    expect = computeGeometry({
      size,
      ringSize: geo.ringSize,
      vectors: geo.vectors,
      maxPeers: geo.maxPeers,
      maxListeners: geo.maxListeners,
      maxSlots: geo.nslots,
    });
  } catch (err) {
    throw new ZivmBadRegionError(`shared region header is inconsistent: ${(err as Error).message}`);
  }
  for (const field of Object.keys(expect) as (keyof Geometry)[]) {
    if (expect[field] !== geo[field]) throw new ZivmBadRegionError(`shared region header is inconsistent (${field})`);
  }
  if (size > mappedSize) throw new ZivmBadRegionError(`shared region header says ${size} bytes, ${mappedSize} are mapped`);
  if (geo.ringsOff > i32.byteLength)
    throw new ZivmBadRegionError(`shared region's control area (${geo.ringsOff} bytes) is larger than the ${i32.byteLength} bytes viewed`);
  return geo;
}

/**
 * The name the daemon gives the region's memfd: its geometry. Nobody but the
 * creator names a memfd, so a host process reads the geometry from there
 * (readlink of /proc/self/fd/N: "/memfd:<name> (deleted)"), never from the
 * header, which every member can write.
 */
export function geometryName(geo: Geometry): string {
  return `zivm:g${VERSION}:${geo.size}:${geo.ringSize}:${geo.vectors}:${geo.maxPeers}:${geo.maxListeners}:${geo.nslots}`;
}

/** The geometry named by `link` (what /proc/self/fd/N of the memfd reads), or undefined if it names none. */
export function geometryFromName(link: string): Geometry | undefined {
  const match = /^\/memfd:zivm:g(\d+):(\d+):(\d+):(\d+):(\d+):(\d+):(\d+)(?: \(deleted\))?$/.exec(link);
  if (!match) return undefined;
  const [version, size, ringSize, vectors, maxPeers, maxListeners, nslots] = match.slice(1).map(Number);
  if (version !== VERSION) throw new ZivmVersionMismatchError(`shared region has layout version ${version}, this zivm speaks ${VERSION}`);
  try {
    const geo = computeGeometry({ size, ringSize, vectors, maxPeers, maxListeners, maxSlots: nslots });
    return geo.nslots === nslots ? geo : undefined;
  } catch {
    return undefined;
  }
}

/** The header fields that disagree with `geo` (a damaged header: the daemon's geometry still holds). */
export function headerDamage(i32: Int32Array, geo: Geometry): string[] {
  const expected: [keyof typeof HEADER, number][] = [
    ['MAGIC0', MAGIC0 | 0],
    ['MAGIC1', MAGIC1 | 0],
    ['VERSION', VERSION],
    ['HEADER_SIZE', HEADER_SIZE],
    ['STATE', REGION_STATE_READY],
    ['VECTORS', geo.vectors],
    ['MAX_PEERS', geo.maxPeers],
    ['MAX_LISTENERS', geo.maxListeners],
    ['NSLOTS', geo.nslots],
    ['RING_SIZE', geo.ringSize],
    ['RINGS_OFF', geo.ringsOff],
    ['SIZE_LO', (geo.size % 0x100000000) | 0],
    ['SIZE_HI', Math.floor(geo.size / 0x100000000)],
    ['PEERS_OFF', geo.peersOff],
    ['LISTENERS_OFF', geo.listenersOff],
    ['PENDING_OFF', geo.pendingOff],
    ['PENDING_STRIDE', geo.pendingStride],
    ['SLOTS_OFF', geo.slotsOff],
  ];
  return expected.filter(([field, value]) => Atomics.load(i32, HEADER[field]) !== value).map(([field]) => field);
}

/** The most a control area (everything before ringsOff) can take, whatever the geometry: what to view before the geometry is known. */
export const CONTROL_MAX = 256 * 1024 * 1024;

/** How many bytes of a `size`-byte region JavaScript views: the control area of `geo`, or as much as any control area takes when the geometry is not known yet. */
export function viewSize(size: number, geo?: Geometry): number {
  return geo ? geo.ringsOff : Math.min(size, CONTROL_MAX);
}

/** Byte offsets derived from a geometry. */
export function peerOffset(geo: Geometry, id: number): number {
  return geo.peersOff + id * PEER_SIZE;
}
export function listenerOffset(geo: Geometry, index: number): number {
  return geo.listenersOff + index * LISTENER_SIZE;
}
/** Peer `peer`'s pending area: its summary starts here. */
export function pendingOffset(geo: Geometry, peer: number): number {
  return geo.pendingOff + peer * geo.pendingStride;
}
/** Peer `peer`'s pending bitmap: one bit per slot. */
export function bitmapOffset(geo: Geometry, peer: number): number {
  return pendingOffset(geo, peer) + summaryBytesFor(geo.nslots);
}

/**
 * Marks slot `slot` as needing peer `peer`: its bit in the bitmap, then the
 * bitmap word's bit in the summary (a harvester clears the summary first, so
 * it never loses a bit: it sees this one now or on the next doorbell).
 * Returns whether the peer must be rung: the bitmap word was clear. Bits
 * already set in it were set since the peer last took the word, and whoever
 * set the first of them rang it (or saw it busy-polling, which it stops only
 * after looking at its bits once more): it takes this bit with those. So the
 * writes of one turn to many connections of one peer ring it once, not once
 * per connection (a doorbell that wakes a process costs the ringer 20 to
 * 35 µs in a VM). A bit that nobody rang for (someone wrote it into the
 * region) is found by the peer's re-check.
 */
export function markPending(i32: Int32Array, geo: Geometry, peer: number, slot: number): boolean {
  const word = slot >> 5;
  const old = Atomics.or(i32, (bitmapOffset(geo, peer) >>> 2) + word, 1 << (slot & 31));
  Atomics.or(i32, (pendingOffset(geo, peer) >>> 2) + (word >> 5), 1 << (word & 31));
  return old === 0;
}
export function slotOffset(geo: Geometry, slot: number): number {
  return geo.slotsOff + slot * SLOT_SIZE;
}
/** Where slot `slot`'s data area (both rings' data, 2 × ringSize bytes) starts: beyond the control area, so never behind `>>> 2`. */
export function dataOffset(geo: Geometry, slot: number): number {
  return geo.ringsOff + slot * 2 * geo.ringSize;
}
/** Ring offsets of a slot: c2s = client→server, s2c = server→client. */
export function ringOffsets(geo: Geometry, slot: number): { c2sHdr: number; s2cHdr: number; c2sData: number; s2cData: number } {
  const base = slotOffset(geo, slot);
  const data = dataOffset(geo, slot);
  return {
    c2sHdr: base + RING_C2S_HDR,
    s2cHdr: base + RING_S2C_HDR,
    c2sData: data,
    s2cData: data + geo.ringSize,
  };
}
