/**
 * Who may open a connection to a host process's listener. A request is words
 * in a slot, which any member of the region can write. In the host domain
 * the members are host processes the daemon admitted (its own uid, or ones
 * the operator allowed), which trust each other: a request there is taken.
 * In a domain of guests (route.ts) a request is taken only as the network
 * would take it from a guest: to a listener that is not bound to loopback,
 * dialled at an address of this host that is not loopback, from an address
 * the operator declared for the domain's guests (zivm server --guest-addr).
 * In a pair domain (pairs.ts), as from a process of this node; in one with
 * a process of another network namespace (server/pods.ts), as from the
 * address the daemon saw that process has.
 *
 * The server decides on a copy of the request's words taken once (snapshot),
 * and uses that copy afterwards: what was checked is what is used.
 */
import { Addr, isLoopback, isOwnAddress, isUnspecified, readAddr, sameBytes } from './addrs';
import * as Lay from './layout';
import * as Slot from './slot';

/** The words a request is made of: its state word up to the two words after SERVER_PORT (reserved). */
const WORDS = Lay.SLOT.TICKET + 2;

/** A copy of the request in `slot` (word 0 is the state word). */
export function snapshot(i32: Int32Array, geo: Lay.Geometry, slot: number): Int32Array {
  const base = Slot.base(geo, slot);
  const copy = new Int32Array(WORDS);
  for (let k = 0; k < WORDS; k++) copy[k] = Atomics.load(i32, base + k);
  return copy;
}

export interface Vetting {
  /** Why it is refused; undefined when it is taken. */
  refused?: string;
}

/**
 * Host process side: may the request `snap` reach our listener bound to
 * `listen`? In a domain of host processes (`host`) every request is taken; in
 * one of guests, as the network would take it from a guest; in a pair domain
 * (shared with one process of another user in our network namespace), as the
 * network would take it from a process of this node: dialled at an address of
 * this node the listener is bound to, from one.
 */
export function vet(kind: 'host' | 'guests' | 'pair' | 'pod', guestAddrs: readonly Addr[], listen: { addr: Addr; port: number }, snap: Int32Array): Vetting {
  if (kind === 'host') return {};
  const family = snap[Lay.SLOT.FAMILY];
  if (family !== 4 && family !== 6) return { refused: `address family ${family}` };
  const dialled = readAddr(snap, Lay.SLOT.SERVER_ADDR, family);
  const source = readAddr(snap, Lay.SLOT.CLIENT_ADDR, family);
  if (snap[Lay.SLOT.SERVER_PORT] !== listen.port) return { refused: `dialled port ${snap[Lay.SLOT.SERVER_PORT]} is not the listener's` };
  if (!isUnspecified(listen.addr) && !sameAddr(listen.addr, family, dialled)) return { refused: 'dialled at an address the listener is not bound to' };
  if (kind === 'pod') {
    // From a process of another network namespace: at one of ours, from the address its daemon saw it has (`guestAddrs`: that one).
    if (isLoopback(dialled) || isUnspecified(dialled) || !isOwnAddress(dialled))
      return { refused: 'dialled at an address that is not of this network namespace' };
    if (!guestAddrs.some((vouched) => vouched.family === family && sameBytes(vouched.bytes, source.bytes)))
      return { refused: 'a source address other than the one the daemon saw the dialler has' };
    return {};
  }
  if (kind === 'pair') {
    if (isUnspecified(dialled) || !isOwnAddress(dialled)) return { refused: 'dialled at an address that is not of this node' };
    if (isUnspecified(source) || !isOwnAddress(source)) return { refused: 'a source address that is not of this node' };
    return {};
  }
  // From the guest side: as the network would have it.
  if (isLoopback(listen.addr)) return { refused: 'a listener on loopback is for this host only' };
  if (isLoopback(dialled) || isUnspecified(dialled) || !isOwnAddress(dialled)) return { refused: 'dialled at an address that is not for guests' };
  if (isOwnAddress(source)) return { refused: 'a source address of this host' };
  if (!guestAddrs.some((declared) => declared.family === family && sameBytes(declared.bytes, source.bytes)))
    return { refused: 'a source address the operator did not declare for guests (zivm server --guest-addr)' };
  return {};
}

/**
 * Is `dialled` (of `family`) the address `listen` is bound to? An IPv6
 * listener takes IPv4 requests as their mapped form.
 */
function sameAddr(listen: Addr, family: number, dialled: Addr): boolean {
  if (listen.family === family) return sameBytes(listen.bytes, dialled.bytes);
  if (listen.family === 6 && family === 4) {
    const bytes = listen.bytes;
    return (
      bytes.subarray(0, 10).every((byte) => byte === 0) &&
      bytes[10] === 0xff &&
      bytes[11] === 0xff &&
      sameBytes(bytes.subarray(12, 16), dialled.bytes.subarray(0, 4))
    );
  }
  return false;
}
