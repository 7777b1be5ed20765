/**
 * The life of a peer entry (one member of the domain), in one place:
 *
 *   FREE ──claim──▶ JOINING ──the member announces itself──▶ ALIVE ──it leaves──▶ DEAD ──reaped──▶ FREE
 *
 * The daemon claims entries for host processes and QEMU guests from the bottom
 * of the table, a guest's agent claims entries for that guest's processes
 * from the top, both by compare-and-swap. Each hand-out bumps the entry's
 * generation: whoever remembers a peer by (id, gen) notices when the id has
 * gone to someone else. Who reaps: the daemon (its own members, and a guest's
 * processes with the guest), a guest's agent (its processes), or a guest
 * process whose agent went away (itself).
 */
import * as Lay from './layout';
import * as Slot from './slot';

export type PeerKind = 'process' | 'guest' | 'guest-process';

const KINDS: Record<PeerKind, number> = {
  process: Lay.PEER_KIND_PROCESS,
  guest: Lay.PEER_KIND_GUEST,
  'guest-process': Lay.PEER_KIND_GUEST_PROCESS,
};

function word(geo: Lay.Geometry, id: number): number {
  return Lay.peerOffset(geo, id) >>> 2;
}

/**
 * Claims a FREE entry (it goes JOINING): the lowest id (`from: 'bottom'`,
 * the daemon's way) or the highest (`'top'`, a guest agent's). Ids listed in
 * `skip` are passed over. Returns the id, or -1 when the table is full.
 */
export function claim(i32: Int32Array, geo: Lay.Geometry, from: 'bottom' | 'top', skip?: (id: number) => boolean): number {
  const count = Math.min(geo.maxPeers, 0x10000);
  for (let k = 0; k < count; k++) {
    const id = from === 'bottom' ? k : count - 1 - k;
    if (skip?.(id)) continue;
    if (Atomics.compareExchange(i32, word(geo, id) + Lay.PEER.STATE, Lay.PEER_FREE, Lay.PEER_JOINING) === Lay.PEER_FREE) return id;
  }
  return -1;
}

/** Gives a claimed entry back unused. */
export function unclaim(i32: Int32Array, geo: Lay.Geometry, id: number): void {
  Atomics.store(i32, word(geo, id) + Lay.PEER.STATE, Lay.PEER_FREE);
}

/**
 * Prepares a claimed entry for its newcomer: nothing of the previous holder's
 * stays (addresses, route, pending bits: a late doorbell for the previous
 * holder could have left one), and the generation moves on. Returns it.
 */
export function admit(i32: Int32Array, geo: Lay.Geometry, id: number, fields: { pid: number; kind?: PeerKind; route?: number; node?: number }): number {
  const entry = word(geo, id);
  let gen = (Atomics.load(i32, entry + Lay.PEER.GEN) + 1) | 0;
  if (gen === 0) gen = 1;
  Atomics.store(i32, entry + Lay.PEER.KIND, fields.kind ? KINDS[fields.kind] : 0);
  setNode(i32, geo, id, fields.node ?? 0);
  Atomics.store(i32, entry + Lay.PEER.ROUTE, fields.route ?? 0);
  Atomics.store(i32, entry + Lay.PEER.POLLING, 0);
  Atomics.store(i32, entry + Lay.PEER.PID, fields.pid);
  Atomics.store(i32, entry + Lay.PEER_ADDRS.ADDR_COUNTS, 0);
  clearPending(i32, geo, id);
  Atomics.store(i32, entry + Lay.PEER.GEN, gen);
  Atomics.store(i32, entry + Lay.PEER.STATE, Lay.PEER_JOINING);
  return gen;
}

/** The member announces itself: what it is and which node it is on, then ALIVE. */
export function announce(i32: Int32Array, geo: Lay.Geometry, id: number, fields: { kind: PeerKind; node: number; pid?: number; route?: number }): void {
  const entry = word(geo, id);
  if (fields.pid !== undefined) Atomics.store(i32, entry + Lay.PEER.PID, fields.pid);
  Atomics.store(i32, entry + Lay.PEER.KIND, KINDS[fields.kind]);
  setNode(i32, geo, id, fields.node);
  if (fields.route !== undefined) Atomics.store(i32, entry + Lay.PEER.ROUTE, fields.route);
  Atomics.store(i32, entry + Lay.PEER.POLLING, 0);
}

/** The entry goes ALIVE (its addresses, if any, are published by then). */
export function goAlive(i32: Int32Array, geo: Lay.Geometry, id: number): void {
  Atomics.store(i32, word(geo, id) + Lay.PEER.STATE, Lay.PEER_ALIVE);
}

function setNode(i32: Int32Array, geo: Lay.Geometry, id: number, node: number): void {
  const entry = word(geo, id);
  Atomics.store(i32, entry + Lay.PEER.NODE_LO, (node % 0x100000000) | 0);
  Atomics.store(i32, entry + Lay.PEER.NODE_HI, Math.floor(node / 0x100000000) | 0);
}

export function genOf(i32: Int32Array, geo: Lay.Geometry, id: number): number {
  return Atomics.load(i32, word(geo, id) + Lay.PEER.GEN);
}

export function pidOf(i32: Int32Array, geo: Lay.Geometry, id: number): number {
  return Atomics.load(i32, word(geo, id) + Lay.PEER.PID);
}

export function kindOf(i32: Int32Array, geo: Lay.Geometry, id: number): PeerKind | undefined {
  const code = Atomics.load(i32, word(geo, id) + Lay.PEER.KIND);
  return (Object.keys(KINDS) as PeerKind[]).find((kind) => KINDS[kind] === code);
}

/** The node id the member announced. */
export function nodeOf(i32: Int32Array, geo: Lay.Geometry, id: number): number {
  const entry = word(geo, id);
  return (Atomics.load(i32, entry + Lay.PEER.NODE_HI) >>> 0) * 0x100000000 + (Atomics.load(i32, entry + Lay.PEER.NODE_LO) >>> 0);
}

/** Whether the entry is handed out (JOINING or ALIVE, not FREE or DEAD). */
export function inUse(i32: Int32Array, geo: Lay.Geometry, id: number): boolean {
  const state = Atomics.load(i32, word(geo, id) + Lay.PEER.STATE);
  return state === Lay.PEER_ALIVE || state === Lay.PEER_JOINING;
}

/** Whether `id` is FREE. */
export function isFree(i32: Int32Array, geo: Lay.Geometry, id: number): boolean {
  return Atomics.load(i32, word(geo, id) + Lay.PEER.STATE) === Lay.PEER_FREE;
}

/** Is peer `id` of generation `gen` a member right now? */
export function alive(i32: Int32Array, geo: Lay.Geometry, id: number, gen: number): boolean {
  if (id < 0 || id >= geo.maxPeers) return false;
  const entry = word(geo, id);
  return Atomics.load(i32, entry + Lay.PEER.GEN) === gen && Atomics.load(i32, entry + Lay.PEER.STATE) === Lay.PEER_ALIVE;
}

/** Is peer `id` of generation `gen` handed out (joining or alive)? */
export function present(i32: Int32Array, geo: Lay.Geometry, id: number, gen: number): boolean {
  if (id < 0 || id >= geo.maxPeers) return false;
  return Atomics.load(i32, word(geo, id) + Lay.PEER.GEN) === gen && inUse(i32, geo, id);
}

/** The member says it busy-polls its pending bitmap (producers then skip its doorbell). */
export function pollingWordOf(geo: Lay.Geometry, id: number): number {
  return word(geo, id) + Lay.PEER.POLLING;
}

export function isPolling(i32: Int32Array, geo: Lay.Geometry, id: number): boolean {
  return Atomics.load(i32, word(geo, id) + Lay.PEER.POLLING) !== 0;
}

/** Which doorbell rings `peer`: [peer id whose eventfds it is, vector]. */
export const routeOf = Lay.routeOf;

function clearPending(i32: Int32Array, geo: Lay.Geometry, id: number): void {
  const bitmap = Lay.pendingOffset(geo, id) >>> 2;
  for (let k = 0; k < geo.pendingStride >>> 2; k++) Atomics.store(i32, bitmap + k, 0);
}

/**
 * Cleans the region after peer `id` of generation `gen` left: the entry goes
 * DEAD for the duration; its listeners are freed; each of its slots is reaped
 * (see Slot.reapSide: the survivors are flagged and woken through `wake`);
 * its pending bits are cleared and the entry goes FREE (GEN kept).
 */
export function reap(i32: Int32Array, geo: Lay.Geometry, id: number, gen: number, wake: (peer: number) => void): void {
  const entry = word(geo, id);
  Atomics.store(i32, entry + Lay.PEER.STATE, Lay.PEER_DEAD);

  for (let i = 0; i < geo.maxListeners; i++) {
    const listener = Lay.listenerOffset(geo, i) >>> 2;
    for (let tries = 0; tries < 1000; tries++) {
      const stateWord = Atomics.load(i32, listener + Lay.LISTENER.STATE);
      if (Lay.stateOf(stateWord) === Lay.LST_FREE) break;
      if (Atomics.load(i32, listener + Lay.LISTENER.OWNER) !== id || Atomics.load(i32, listener + Lay.LISTENER.OWNER_GEN) !== gen) break;
      if (Atomics.compareExchange(i32, listener + Lay.LISTENER.STATE, stateWord, Lay.makeState(Lay.genOf(stateWord) + 1, Lay.LST_FREE)) === stateWord) break;
    }
  }

  const isPresent = (peer: number, peerGen: number): boolean => present(i32, geo, peer, peerGen);
  for (let i = 0; i < geo.nslots; i++) {
    // A slot that changes while we read its owners is read again (bounded: a dead peer's slots settle fast).
    for (let attempts = 0; attempts < 1000 && !Slot.reapSide(i32, geo, i, id, gen, wake, isPresent); attempts++) {
      // examine it again
    }
  }

  clearPending(i32, geo, id);
  // A peer killed while busy-polling leaves POLLING set: its successor must be rung.
  Atomics.store(i32, entry + Lay.PEER.POLLING, 0);
  Atomics.store(i32, entry + Lay.PEER.STATE, Lay.PEER_FREE);
}

/**
 * Reaps guest `id` (of generation `gen`) and, first, every process of that
 * guest (entries routed through its doorbells): they went with it. An id the
 * daemon handed to a member of its own (`member(peer)`) is never one of them,
 * whatever its entry says: entries are in shared memory. Returns the ids of
 * the processes reaped.
 */
export function reapGuest(
  i32: Int32Array,
  geo: Lay.Geometry,
  id: number,
  gen: number,
  wake: (peer: number) => void,
  member: (peer: number) => boolean,
): number[] {
  const procs: number[] = [];
  for (let peer = 0; peer < geo.maxPeers; peer++) {
    if (peer === id || member(peer) || kindOf(i32, geo, peer) !== 'guest-process' || isFree(i32, geo, peer)) continue;
    if (routeOf(i32, geo, peer)[0] !== id) continue;
    reap(i32, geo, peer, genOf(i32, geo, peer), wake);
    procs.push(peer);
  }
  reap(i32, geo, id, gen, wake);
  return procs;
}
