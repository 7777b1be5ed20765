/**
 * The life of a slot (one connection), in one place. Its state word is
 * (gen << 8) | state, so a compare-and-swap on a stale view fails:
 *
 *   FREE ──claim (client)──▶ CLAIMED ──request──▶ CONNECTING ──accept (server)──▶ ESTABLISHED
 *                                                  │   │
 *                                   refuse (server)│   │withdraw (client, before it was told "connected")
 *                                                  ▼   ▼
 *                                             REFUSED  FREE
 *
 * Once a request is in place each side has a flag word of its own: FIN (it
 * writes no more), RST (reset), CLOSED (it let go of the slot; with FIN or
 * RST), DEAD (it left the domain: set by whoever reaps it). The side that
 * lets go last frees the slot (gen + 1, FREE); a REFUSED slot is freed by its
 * client, or by the server when the client is gone already.
 */
import * as Lay from './layout';

export type SlotState = 'free' | 'claimed' | 'connecting' | 'established' | 'refused';

const NAMES: Record<number, SlotState> = {
  [Lay.SLOT_FREE]: 'free',
  [Lay.SLOT_CLAIMED]: 'claimed',
  [Lay.SLOT_CONNECTING]: 'connecting',
  [Lay.SLOT_ESTABLISHED]: 'established',
  [Lay.SLOT_REFUSED]: 'refused',
};

/** The state named by a state word ('free' for anything unknown). */
export function stateName(word: number): SlotState {
  return NAMES[Lay.stateOf(word)] ?? 'free';
}

/** Word index of slot `slot`'s header. */
export function base(geo: Lay.Geometry, slot: number): number {
  return Lay.slotOffset(geo, slot) >>> 2;
}

/** What goes with a request: who asks whom, through which listener, and the two endpoints. */
export interface Request {
  client: number;
  clientGen: number;
  server: number;
  serverGen: number;
  listener: number;
  listenerWord: number;
  family: 4 | 6;
  clientAddr: Uint8Array;
  clientPort: number;
  serverAddr: Uint8Array;
  serverPort: number;
  /** The server listens on an IPv6 wildcard and sees this IPv4 client as ::ffff:a.b.c.d. */
  mapped: boolean;
}

function writeBytes(i32: Int32Array, at: number, bytes: Uint8Array): void {
  for (let k = 0; k < 4; k++) Atomics.store(i32, at + k, bytes[4 * k] | (bytes[4 * k + 1] << 8) | (bytes[4 * k + 2] << 16) | (bytes[4 * k + 3] << 24));
}

/**
 * Zeroes the part of a ring's data area that its last connection wrote into
 * (its head: bytes ever written; all of it past one lap, or if the head makes
 * no sense), so that no later user of the slot reads them.
 */
function wipeUsed(region: Zeroes, i32: Int32Array, hdr: number, data: number, ringSize: number): void {
  const used = usedOf(i32, hdr, ringSize);
  if (used > 0) region.zero(data, used);
}

/** What wipes ring data (beyond the control area JavaScript views): the region. */
export interface Zeroes {
  zero(offset: number, length: number): void;
}

/** Bytes of a ring's data area its connection has written into: its head (bytes ever written), all of it past one lap. */
export function usedOf(i32: Int32Array, hdr: number, ringSize: number): number {
  const low = Atomics.load(i32, (hdr + Lay.RING_HEAD) >>> 2) >>> 0;
  const high = Atomics.load(i32, ((hdr + Lay.RING_HEAD) >>> 2) + 1);
  return high !== 0 ? ringSize : Math.min(low, ringSize);
}

/** A ring whose data area was given back (all zeros): its indexes go to zero too, so that nothing is wiped again. */
export function forgetRing(i32: Int32Array, hdr: number): void {
  for (const at of [Lay.RING_HEAD, Lay.RING_TAIL]) {
    Atomics.store(i32, (hdr + at) >>> 2, 0);
    Atomics.store(i32, ((hdr + at) >>> 2) + 1, 0);
  }
}

/** A byte view of the region behind `i32`, made once per region. */
const byteViews = new WeakMap<ArrayBufferLike, Uint8Array>();
function bytesOf(i32: Int32Array): Uint8Array {
  let view = byteViews.get(i32.buffer);
  if (!view) byteViews.set(i32.buffer, (view = new Uint8Array(i32.buffer)));
  return view;
}

/**
 * Client: claims a free slot and puts a request in it (CONNECTING). Returns the
 * slot and the connection's generation, or undefined when every slot is taken.
 * `prepare(slot)` runs while the slot is ours alone, before the request is
 * published (the caller attaches itself there). The search starts at slot
 * `from` (a hint: where this process last found one free) and wraps around,
 * looking at `count` slots at most.
 */
export function request(
  region: Zeroes,
  i32: Int32Array,
  geo: Lay.Geometry,
  req: Request,
  prepare: (slot: number, gen: number) => void,
  from = 0,
  count = geo.nslots,
): { slot: number; gen: number } | undefined {
  const start = from >= 0 && from < geo.nslots ? from : 0;
  const tries = Math.min(count, geo.nslots);
  for (let k = 0; k < tries; k++) {
    const slot = start + k < geo.nslots ? start + k : start + k - geo.nslots;
    const header = base(geo, slot);
    const word = Atomics.load(i32, header + Lay.SLOT.STATE);
    if (Lay.stateOf(word) !== Lay.SLOT_FREE) continue;
    const gen = (Lay.genOf(word) + 1) & 0xffffff;
    if (Atomics.compareExchange(i32, header + Lay.SLOT.STATE, word, Lay.makeState(gen, Lay.SLOT_CLAIMED)) !== word) continue;
    // Ours alone until published as CONNECTING. What the last connection left in its rings goes first.
    const rings = Lay.ringOffsets(geo, slot);
    wipeUsed(region, i32, rings.c2sHdr, rings.c2sData, geo.ringSize);
    wipeUsed(region, i32, rings.s2cHdr, rings.s2cData, geo.ringSize);
    bytesOf(i32).fill(0, Lay.slotOffset(geo, slot) + 4, Lay.slotOffset(geo, slot) + Lay.SLOT_SIZE);
    Atomics.store(i32, header + Lay.SLOT.CLIENT, req.client);
    Atomics.store(i32, header + Lay.SLOT.CLIENT_GEN, req.clientGen);
    Atomics.store(i32, header + Lay.SLOT.SERVER, req.server);
    Atomics.store(i32, header + Lay.SLOT.SERVER_GEN, req.serverGen);
    Atomics.store(i32, header + Lay.SLOT.LISTENER, req.listener);
    Atomics.store(i32, header + Lay.SLOT.LISTENER_STATE, req.listenerWord);
    Atomics.store(i32, header + Lay.SLOT.FAMILY, req.family);
    writeBytes(i32, header + Lay.SLOT.CLIENT_ADDR, req.clientAddr);
    Atomics.store(i32, header + Lay.SLOT.CLIENT_PORT, req.clientPort);
    writeBytes(i32, header + Lay.SLOT.SERVER_ADDR, req.serverAddr);
    Atomics.store(i32, header + Lay.SLOT.SERVER_PORT, req.serverPort);
    Atomics.store(i32, header + Lay.SLOT.MAPPED, req.mapped ? 1 : 0);
    // Both readers start asleep: the first byte each way rings the doorbell.
    Atomics.store(i32, (rings.c2sHdr + Lay.RING_READER_SLEEPING) >>> 2, 1);
    Atomics.store(i32, (rings.s2cHdr + Lay.RING_READER_SLEEPING) >>> 2, 1);
    prepare(slot, gen);
    Atomics.store(i32, header + Lay.SLOT.STATE, Lay.makeState(gen, Lay.SLOT_CONNECTING));
    return { slot, gen };
  }
  return undefined;
}

/**
 * The request waiting in `slot` for peer `id` (generation `gen`): its state
 * word and listener index, or undefined if there is none for it.
 */
export function pendingRequest(i32: Int32Array, geo: Lay.Geometry, slot: number, id: number, gen?: number): { word: number; listener: number } | undefined {
  const header = base(geo, slot);
  const word = Atomics.load(i32, header + Lay.SLOT.STATE);
  if (Lay.stateOf(word) !== Lay.SLOT_CONNECTING) return undefined;
  if (Atomics.load(i32, header + Lay.SLOT.SERVER) !== id) return undefined;
  if (gen !== undefined && Atomics.load(i32, header + Lay.SLOT.SERVER_GEN) !== gen) return undefined;
  return { word, listener: Atomics.load(i32, header + Lay.SLOT.LISTENER) };
}

/** The requester of the request in `slot`: [peer id, generation]. */
export function requester(i32: Int32Array, geo: Lay.Geometry, slot: number): [number, number] {
  const header = base(geo, slot);
  return [Atomics.load(i32, header + Lay.SLOT.CLIENT), Atomics.load(i32, header + Lay.SLOT.CLIENT_GEN)];
}

/** Whether peer `id` is either side of `slot`. */
export function involves(i32: Int32Array, geo: Lay.Geometry, slot: number, id: number): boolean {
  const header = base(geo, slot);
  return Atomics.load(i32, header + Lay.SLOT.CLIENT) === id || Atomics.load(i32, header + Lay.SLOT.SERVER) === id;
}

/** Server: takes the request (state `word`). False if its client withdrew it meanwhile. */
export function accept(i32: Int32Array, geo: Lay.Geometry, slot: number, word: number): boolean {
  const header = base(geo, slot);
  return Atomics.compareExchange(i32, header + Lay.SLOT.STATE, word, Lay.makeState(Lay.genOf(word), Lay.SLOT_ESTABLISHED)) === word;
}

/**
 * Server: turns the request in `slot` (state `word`) away. A client that is
 * gone already (it closed after being told it was connected) leaves the slot
 * to us: it is freed. Otherwise `tell` the client.
 */
export function refuse(i32: Int32Array, geo: Lay.Geometry, slot: number, word: number, tell: (client: number, gen: number) => void): void {
  const header = base(geo, slot);
  const refused = Lay.makeState(Lay.genOf(word), Lay.SLOT_REFUSED);
  if (Atomics.compareExchange(i32, header + Lay.SLOT.STATE, word, refused) !== word) return;
  if (Atomics.load(i32, header + Lay.SLOT.CLIENT_FLAGS) & Lay.F_CLOSED) {
    Atomics.compareExchange(i32, header + Lay.SLOT.STATE, refused, Lay.makeState(Lay.genOf(word) + 1, Lay.SLOT_FREE));
    return;
  }
  tell(Atomics.load(i32, header + Lay.SLOT.CLIENT), Atomics.load(i32, header + Lay.SLOT.CLIENT_GEN));
}

/** The state of connection `gen` in `slot`, or 'lost' if the slot no longer carries it. */
export function stateOf(i32: Int32Array, geo: Lay.Geometry, slot: number, gen: number): SlotState | 'lost' {
  const word = Atomics.load(i32, base(geo, slot) + Lay.SLOT.STATE);
  return Lay.genOf(word) === gen ? stateName(word) : 'lost';
}

/** Flag word indexes of the two sides of `slot`: [ours, theirs]. */
export function flagWords(geo: Lay.Geometry, slot: number, client: boolean): [number, number] {
  const header = base(geo, slot);
  return client ? [header + Lay.SLOT.CLIENT_FLAGS, header + Lay.SLOT.SERVER_FLAGS] : [header + Lay.SLOT.SERVER_FLAGS, header + Lay.SLOT.CLIENT_FLAGS];
}

export type CloseHow = 'fin' | 'reset';

/**
 * One side lets go of connection `gen` in `slot`. Returns whether the other
 * side must be told (it still holds its end). See the diagram above:
 * - the client takes back a request not yet accepted (unless `keepRequest`: a
 *   connection already reported connected keeps its request, with what was
 *   written and the FIN, for the server to accept and free);
 * - otherwise the side's flags get `how` and CLOSED, and whichever side lets go
 *   last frees the slot.
 */
export function letGo(
  i32: Int32Array,
  geo: Lay.Geometry,
  slot: number,
  gen: number,
  client: boolean,
  how: CloseHow,
  keepRequest: boolean,
  beforeFree?: () => void,
): boolean {
  const stateWord = base(geo, slot) + Lay.SLOT.STATE;
  const word = Atomics.load(i32, stateWord);
  if (Lay.genOf(word) !== gen) return false; // freed already (the peer died and was reaped)
  const state = Lay.stateOf(word);
  if (client && (state === Lay.SLOT_CLAIMED || state === Lay.SLOT_REFUSED || (state === Lay.SLOT_CONNECTING && !keepRequest))) {
    // Still a request: take it back. If the server accepts meanwhile the CAS fails and we close normally.
    if (Atomics.compareExchange(i32, stateWord, word, Lay.makeState(gen + 1, Lay.SLOT_FREE)) === word) return false;
  }
  const [mine, theirs] = flagWords(geo, slot, client);
  Atomics.or(i32, mine, (how === 'fin' ? Lay.F_FIN : Lay.F_RST) | Lay.F_CLOSED);
  if (Atomics.load(i32, theirs) & Lay.F_CLOSED) {
    const now = Atomics.load(i32, stateWord);
    if (Lay.genOf(now) === gen && Lay.stateOf(now) !== Lay.SLOT_FREE) {
      // Both sides are done with the rings and nobody else may take the slot yet.
      beforeFree?.();
      Atomics.compareExchange(i32, stateWord, now, Lay.makeState(gen + 1, Lay.SLOT_FREE));
    }
    return false;
  }
  return true;
}

/**
 * Reaping, for one slot: peer `id` of generation `gen` left the domain. Its
 * side's flags get DEAD|CLOSED; then a request it made is withdrawn, a request
 * made to it is refused (freed if its client is gone too), and a connection
 * whose other side has let go already is freed. The surviving side gets the
 * slot's bit in its pending bitmap, and `wake(survivor)` when the bit was
 * clear. Returns false when the slot changed while being examined (examine it
 * again).
 */
export function reapSide(
  i32: Int32Array,
  geo: Lay.Geometry,
  slot: number,
  id: number,
  gen: number,
  wake: (peer: number) => void,
  alive: (peer: number, gen: number) => boolean,
): boolean {
  const header = base(geo, slot);
  let word = Atomics.load(i32, header + Lay.SLOT.STATE);
  if (Lay.stateOf(word) === Lay.SLOT_FREE) return true;
  const client = Atomics.load(i32, header + Lay.SLOT.CLIENT);
  const clientGen = Atomics.load(i32, header + Lay.SLOT.CLIENT_GEN);
  const server = Atomics.load(i32, header + Lay.SLOT.SERVER);
  const serverGen = Atomics.load(i32, header + Lay.SLOT.SERVER_GEN);
  const isClient = client === id && clientGen === gen;
  const isServer = server === id && serverGen === gen;
  if (!isClient && !isServer) return true;
  // Act only on the state the owners were read against (the slot may have been recycled meanwhile).
  if (Atomics.load(i32, header + Lay.SLOT.STATE) !== word) return false;
  if (isClient) Atomics.or(i32, header + Lay.SLOT.CLIENT_FLAGS, Lay.F_DEAD | Lay.F_CLOSED);
  if (isServer) Atomics.or(i32, header + Lay.SLOT.SERVER_FLAGS, Lay.F_DEAD | Lay.F_CLOSED);
  const connGen = Lay.genOf(word);
  for (let tries = 0; tries < 1000; tries++) {
    const state = Lay.stateOf(word);
    if (state === Lay.SLOT_FREE || Lay.genOf(word) !== connGen) break; // freed, or freed and reused: not ours any more
    let next: number | undefined;
    if ((state === Lay.SLOT_CLAIMED || state === Lay.SLOT_CONNECTING) && isClient) next = Lay.makeState(connGen + 1, Lay.SLOT_FREE);
    else if (state === Lay.SLOT_CONNECTING && isServer) {
      // Refused; a client already gone (closed after being told it was connected) leaves the slot to be freed.
      next =
        Atomics.load(i32, header + Lay.SLOT.CLIENT_FLAGS) & Lay.F_CLOSED ? Lay.makeState(connGen + 1, Lay.SLOT_FREE) : Lay.makeState(connGen, Lay.SLOT_REFUSED);
    } else if (Atomics.load(i32, header + (isClient ? Lay.SLOT.SERVER_FLAGS : Lay.SLOT.CLIENT_FLAGS)) & Lay.F_CLOSED)
      next = Lay.makeState(connGen + 1, Lay.SLOT_FREE);
    if (next === undefined) break;
    const seen = Atomics.compareExchange(i32, header + Lay.SLOT.STATE, word, next);
    if (seen === word) break;
    word = seen;
  }
  // Wake the other side, if it is a live peer of the recorded generation.
  if (isClient && isServer) return true;
  const other = isClient ? server : client;
  const otherGen = isClient ? serverGen : clientGen;
  if (other < 0 || other >= geo.maxPeers || other === id || !alive(other, otherGen)) return true;
  if (Lay.markPending(i32, geo, other, slot)) wake(other);
  return true;
}
