/**
 * The directory of listeners, kept in the region: who listens on which
 * (node, address, port). A server registers only after its TCP listen
 * succeeded, so the kernel has already proved the port is its own.
 */
import type { Domain } from './domain';
import { Addr, holdsAddr, isLoopback, isOwnAddress, isUnspecified, publishedAddrs, readAddr, sameBytes, writeAddr } from './addrs';
import * as Lay from './layout';
import * as Peers from './peers';

/** What finding a listener needs of a domain (a daemon looks into its own region with the same view). */
export type DirectoryView = Pick<Domain, 'i32' | 'geo' | 'nodeId' | 'guest' | 'admitsGuests' | 'pair' | 'declares' | 'isHostProcess' | 'peerAlive'> & {
  /** Addresses other than this node's whose listeners count as on this node (a pair domain with another network namespace: the addresses the daemon found it holds). */
  podAddrs?: readonly Addr[];
};
/** What registering a listener needs: the region, and whose entry it is. */
export type RegisterView = Pick<Domain, 'i32' | 'geo' | 'id' | 'gen' | 'nodeId'>;

/**
 * May this node reach `peer`'s listener on another node through `addr`? Only
 * between a VM guest and the rest (one side a guest): between two network
 * namespaces of one host the kernel's routing and filtering decide, as before.
 */
function crossNodeOk(domain: DirectoryView, peer: number, addr: Addr): boolean {
  // A host process reaches a guest only at an address the operator declared for the domain's guests.
  if (!domain.guest && !domain.declares(addr)) return false;
  const kind = Peers.kindOf(domain.i32, domain.geo, peer);
  if (!domain.guest && kind !== 'guest' && kind !== 'guest-process') return false;
  return publishedAddrs(domain.i32, domain.geo, peer).some((published) => published.family === addr.family && sameBytes(published.bytes, addr.bytes));
}

export interface ListenSpec {
  addr: Addr;
  port: number;
  ipv6Only: boolean;
  backlog: number;
}

/** Registers a listener; returns its index and state word, or undefined if the table is full. */
export function register(domain: RegisterView, spec: ListenSpec): { index: number; word: number } | undefined {
  const { i32, geo } = domain;
  for (let i = 0; i < geo.maxListeners; i++) {
    const entry = Lay.listenerOffset(geo, i) >>> 2;
    const state = Atomics.load(i32, entry + Lay.LISTENER.STATE);
    if (Lay.stateOf(state) !== Lay.LST_FREE) continue;
    const gen = (Lay.genOf(state) + 1) & 0xffffff;
    const claimed = Lay.makeState(gen, Lay.LST_CLAIMED);
    if (Atomics.compareExchange(i32, entry + Lay.LISTENER.STATE, state, claimed) !== state) continue;
    Atomics.store(i32, entry + Lay.LISTENER.OWNER, domain.id);
    Atomics.store(i32, entry + Lay.LISTENER.OWNER_GEN, domain.gen);
    Atomics.store(i32, entry + Lay.LISTENER.PORT, spec.port);
    Atomics.store(i32, entry + Lay.LISTENER.FAMILY, spec.addr.family);
    Atomics.store(i32, entry + Lay.LISTENER.FLAGS, (spec.ipv6Only ? Lay.LFLAG_IPV6ONLY : 0) | (isUnspecified(spec.addr) ? Lay.LFLAG_WILDCARD : 0));
    Atomics.store(i32, entry + Lay.LISTENER.NODE_LO, (domain.nodeId % 0x100000000) | 0);
    Atomics.store(i32, entry + Lay.LISTENER.NODE_HI, Math.floor(domain.nodeId / 0x100000000) | 0);
    writeAddr(i32, entry + Lay.LISTENER.ADDR, spec.addr.bytes);
    Atomics.store(i32, entry + Lay.LISTENER.BACKLOG, spec.backlog);
    Atomics.store(i32, entry + Lay.LISTENER.ACCEPTED, 0);
    Atomics.store(i32, entry + Lay.LISTENER.PICKS, 0);
    const word = Lay.makeState(gen, Lay.LST_ACTIVE);
    Atomics.store(i32, entry + Lay.LISTENER.STATE, word);
    raiseHigh(i32, i + 1);
    return { index: i, word };
  }
  return undefined;
}

/** Raises the header's listener high-water mark to at least `high` (see Lay.HEADER.LISTENERS_HIGH). */
function raiseHigh(i32: Int32Array, high: number): void {
  for (;;) {
    const now = Atomics.load(i32, Lay.HEADER.LISTENERS_HIGH);
    if (now >= high || Atomics.compareExchange(i32, Lay.HEADER.LISTENERS_HIGH, now, high) === now) return;
  }
}

/**
 * How many listener entries a finder looks at: up to the high-water mark,
 * clamped to the table. Where guests (or, in a pair domain, another user's
 * process) map the memory they may write the mark: a mark set too low hides
 * the entries above it, as rewriting their state words would, and costs the
 * same (those connections go over TCP); one set too high or not at all means
 * every entry. A finder in a guest runs its code cold (a few connections, in
 * an emulated CPU): looking at the entries in use, not all of them, is most of
 * its connect.
 */
function scanLimit(domain: DirectoryView): number {
  const { i32, geo } = domain;
  const high = Atomics.load(i32, Lay.HEADER.LISTENERS_HIGH);
  return high > 0 && high < geo.maxListeners ? high : geo.maxListeners;
}

export function unregister(domain: Domain, index: number, word: number): void {
  const entry = Lay.listenerOffset(domain.geo, index) >>> 2;
  Atomics.compareExchange(domain.i32, entry + Lay.LISTENER.STATE, word, Lay.makeState(Lay.genOf(word) + 1, Lay.LST_FREE));
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
 * The live listener a connection from this node to (addr, port) would reach, as
 * the kernel would choose it: an exact address first, then a wildcard.
 * An address of this node (loopback included) reaches only this node's
 * listeners; any other address reaches the listeners of another node (a VM
 * guest, another network namespace) whose owner published that address
 * (publishAddrs), bound to it exactly or to the wildcard.
 */
export function find(domain: DirectoryView, addr: Addr, port: number, lenient = false): Found | undefined {
  const local = isOwnAddress(addr, lenient) || (domain.podAddrs?.some((held) => held.family === addr.family && sameBytes(held.bytes, addr.bytes)) ?? false);
  const { i32, geo } = domain;
  const nodeLo = (domain.nodeId % 0x100000000) | 0;
  const nodeHi = Math.floor(domain.nodeId / 0x100000000) | 0;
  const exacts: Found[] = [];
  const wildcards: Found[] = [];
  const limit = scanLimit(domain);
  for (let i = 0; i < limit; i++) {
    const entry = Lay.listenerOffset(geo, i) >>> 2;
    const word = Atomics.load(i32, entry + Lay.LISTENER.STATE);
    if (Lay.stateOf(word) !== Lay.LST_ACTIVE) continue;
    if (Atomics.load(i32, entry + Lay.LISTENER.PORT) !== port) continue;
    const sameNode = Atomics.load(i32, entry + Lay.LISTENER.NODE_LO) === nodeLo && Atomics.load(i32, entry + Lay.LISTENER.NODE_HI) === nodeHi;
    if (sameNode !== local) continue;
    const family = Atomics.load(i32, entry + Lay.LISTENER.FAMILY);
    const flags = Atomics.load(i32, entry + Lay.LISTENER.FLAGS);
    let exact = false;
    let wild = false;
    if (flags & Lay.LFLAG_WILDCARD) {
      wild = family === addr.family || (family === 6 && addr.family === 4 && !(flags & Lay.LFLAG_IPV6ONLY));
    } else if (family === addr.family) {
      exact =
        holdsAddr(i32, entry + Lay.LISTENER.ADDR, addr.bytes) || (local && isUnspecified(addr) && isLoopback(readAddr(i32, entry + Lay.LISTENER.ADDR, family)));
    }
    if (!exact && !wild) continue;
    const owner = Atomics.load(i32, entry + Lay.LISTENER.OWNER);
    const ownerGen = Atomics.load(i32, entry + Lay.LISTENER.OWNER_GEN);
    if (!domain.peerAlive(owner, ownerGen)) continue;
    // This host's addresses are served by host processes only, as the daemon named them (a guest may write any entry).
    if (local && !domain.guest && !domain.isHostProcess(owner)) continue;
    if (!local && !crossNodeOk(domain, owner, addr)) continue;
    if (Atomics.load(i32, entry + Lay.LISTENER.STATE) !== word) continue; // changed while we read it
    const found: Found = { index: i, word, owner, ownerGen, family: family === 6 ? 6 : 4, sameNode: local };
    (exact ? exacts : wildcards).push(found);
  }
  return pick(i32, geo, exacts.length > 0 ? exacts : wildcards);
}

/**
 * One of the listeners that share an address (the workers of a cluster, each
 * with the port): in turn, as node:cluster's round robin hands connections out.
 */
function pick(i32: Int32Array, geo: Lay.Geometry, found: Found[]): Found | undefined {
  if (found.length <= 1) return found[0];
  const first = Lay.listenerOffset(geo, found[0].index) >>> 2;
  const count = Atomics.add(i32, first + Lay.LISTENER.PICKS, 1) >>> 0;
  return found[count % found.length];
}
