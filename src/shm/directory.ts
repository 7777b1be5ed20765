/**
 * The directory of listeners, kept in the region: who listens on which
 * (node, address, port). A server registers only after its TCP listen
 * succeeded, so the kernel has already proved the port is its own.
 */
import type { Domain } from './domain';
import { Addr, isLoopback, isOwnAddress, isUnspecified, publishedAddrs, readAddr, sameBytes, writeAddr } from './addrs';
import * as Lay from './layout';
import * as Peers from './peers';

/**
 * May this node reach `peer`'s listener on another node through `a`? Only
 * between a VM guest and the rest (one side a guest): between two network
 * namespaces of one host the kernel's routing and filtering decide, as before.
 */
function crossNodeOk(d: Domain, peer: number, a: Addr): boolean {
  const kind = Peers.kindOf(d.i32, d.g, peer);
  if (!d.guest && kind !== 'guest' && kind !== 'guest-process') return false;
  return publishedAddrs(d.i32, d.g, peer).some((o) => o.family === a.family && sameBytes(o.bytes, a.bytes));
}

export interface ListenSpec {
  addr: Addr;
  port: number;
  ipv6Only: boolean;
  backlog: number;
}

/** Registers a listener; returns its index and state word, or undefined if the table is full. */
export function register(d: Domain, spec: ListenSpec): { index: number; word: number } | undefined {
  const { i32, g } = d;
  for (let i = 0; i < g.maxListeners; i++) {
    const l = Lay.listenerOffset(g, i) >> 2;
    const w = Atomics.load(i32, l + Lay.L.STATE);
    if (Lay.stateOf(w) !== Lay.LST_FREE) continue;
    const gen = (Lay.genOf(w) + 1) & 0xffffff;
    const claimed = Lay.makeState(gen, Lay.LST_CLAIMED);
    if (Atomics.compareExchange(i32, l + Lay.L.STATE, w, claimed) !== w) continue;
    Atomics.store(i32, l + Lay.L.OWNER, d.id);
    Atomics.store(i32, l + Lay.L.OWNER_GEN, d.gen);
    Atomics.store(i32, l + Lay.L.PORT, spec.port);
    Atomics.store(i32, l + Lay.L.FAMILY, spec.addr.family);
    Atomics.store(i32, l + Lay.L.FLAGS, (spec.ipv6Only ? Lay.LFLAG_IPV6ONLY : 0) | (isUnspecified(spec.addr) ? Lay.LFLAG_WILDCARD : 0));
    Atomics.store(i32, l + Lay.L.NODE_LO, d.nodeId % 0x100000000 | 0);
    Atomics.store(i32, l + Lay.L.NODE_HI, Math.floor(d.nodeId / 0x100000000) | 0);
    writeAddr(i32, l + Lay.L.ADDR, spec.addr.bytes);
    Atomics.store(i32, l + Lay.L.BACKLOG, spec.backlog);
    Atomics.store(i32, l + Lay.L.ACCEPTED, 0);
    Atomics.store(i32, l + Lay.L.PICKS, 0);
    const word = Lay.makeState(gen, Lay.LST_ACTIVE);
    Atomics.store(i32, l + Lay.L.STATE, word);
    return { index: i, word };
  }
  return undefined;
}

export function unregister(d: Domain, index: number, word: number): void {
  const l = Lay.listenerOffset(d.g, index) >> 2;
  Atomics.compareExchange(d.i32, l + Lay.L.STATE, word, Lay.makeState(Lay.genOf(word) + 1, Lay.LST_FREE));
}

export interface Found {
  index: number;
  word: number;
  owner: number;
  ownerGen: number;
  /** The listener's family: an IPv6 listener sees IPv4 clients as mapped addresses. */
  family: 4 | 6;
  /** The listener lives on the client's own node (else it was reached by an address its node published). */
  sameNode: boolean;
}

/**
 * The live listener a connection from this node to (a, port) would reach, as
 * the kernel would choose it: an exact address first, then a wildcard.
 * An address of this node (loopback included) reaches only this node's
 * listeners; any other address reaches the listeners of another node (a VM
 * guest, another network namespace) whose owner published that address
 * (publishAddrs), bound to it exactly or to the wildcard.
 */
/** Whether any live listener of the domain has `port` (before the address is known). */
export function listensOnPort(d: Domain, port: number): boolean {
  const { i32, g } = d;
  for (let i = 0; i < g.maxListeners; i++) {
    const l = Lay.listenerOffset(g, i) >> 2;
    if (Lay.stateOf(Atomics.load(i32, l + Lay.L.STATE)) === Lay.LST_ACTIVE && Atomics.load(i32, l + Lay.L.PORT) === port) return true;
  }
  return false;
}

export function find(d: Domain, a: Addr, port: number): Found | undefined {
  const local = isOwnAddress(a);
  const { i32, g } = d;
  const nodeLo = d.nodeId % 0x100000000 | 0;
  const nodeHi = Math.floor(d.nodeId / 0x100000000) | 0;
  const exacts: Found[] = [];
  const wildcards: Found[] = [];
  for (let i = 0; i < g.maxListeners; i++) {
    const l = Lay.listenerOffset(g, i) >> 2;
    const w = Atomics.load(i32, l + Lay.L.STATE);
    if (Lay.stateOf(w) !== Lay.LST_ACTIVE) continue;
    if (Atomics.load(i32, l + Lay.L.PORT) !== port) continue;
    const sameNode = Atomics.load(i32, l + Lay.L.NODE_LO) === nodeLo && Atomics.load(i32, l + Lay.L.NODE_HI) === nodeHi;
    if (sameNode !== local) continue;
    const fam = Atomics.load(i32, l + Lay.L.FAMILY);
    const flags = Atomics.load(i32, l + Lay.L.FLAGS);
    const la = readAddr(i32, l + Lay.L.ADDR, fam);
    let exact = false;
    let wild = false;
    if (flags & Lay.LFLAG_WILDCARD) {
      wild = fam === a.family || (fam === 6 && a.family === 4 && !(flags & Lay.LFLAG_IPV6ONLY));
    } else if (fam === a.family) {
      exact = sameBytes(la.bytes, a.bytes) || (local && isUnspecified(a) && isLoopback(la));
    }
    if (!exact && !wild) continue;
    const owner = Atomics.load(i32, l + Lay.L.OWNER);
    const ownerGen = Atomics.load(i32, l + Lay.L.OWNER_GEN);
    if (!d.peerAlive(owner, ownerGen)) continue;
    if (!local && !crossNodeOk(d, owner, a)) continue;
    if (Atomics.load(i32, l + Lay.L.STATE) !== w) continue; // changed while we read it
    const f: Found = { index: i, word: w, owner, ownerGen, family: fam === 6 ? 6 : 4, sameNode: local };
    (exact ? exacts : wildcards).push(f);
  }
  return pick(i32, g, exacts.length > 0 ? exacts : wildcards);
}

/**
 * One of the listeners that share an address (the workers of a cluster, each
 * with the port): in turn, as node:cluster's round robin hands connections out.
 */
function pick(i32: Int32Array, g: Lay.Geometry, found: Found[]): Found | undefined {
  if (found.length <= 1) return found[0];
  const first = Lay.listenerOffset(g, found[0].index) >> 2;
  const n = Atomics.add(i32, first + Lay.L.PICKS, 1) >>> 0;
  return found[n % found.length];
}
