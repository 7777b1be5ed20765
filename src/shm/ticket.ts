/**
 * Who may open a connection to a host process's listener. A request is words
 * in a slot, which any member of the region can write, a guest included. A
 * host process signs its requests with the domain's secret, which the daemon
 * gives to host processes only (notes.ts): a request with a valid ticket from
 * a member the daemon named as a host process is one. Anything else comes
 * from the guest side and is taken only as the network would take it: to a
 * listener that is not bound to loopback, dialled at an address of this host
 * that is not loopback, from an address the operator declared for the
 * domain's guests (zivm server --guest-addr).
 *
 * The server decides on a copy of the request's words taken once (snapshot),
 * and uses that copy afterwards: what was checked is what is used.
 */
import crypto from 'node:crypto';
import { Addr, isLoopback, isOwnAddress, isUnspecified, readAddr, sameBytes } from './addrs';
import * as Lay from './layout';
import * as Slot from './slot';

/** The words a request is made of: its state word up to the ticket's two words. */
const WORDS = Lay.SLOT.TICKET + 2;

/** A copy of the request in `slot` (word 0 is the state word). */
export function snapshot(i32: Int32Array, geo: Lay.Geometry, slot: number): Int32Array {
  const base = Slot.base(geo, slot);
  const copy = new Int32Array(WORDS);
  for (let k = 0; k < WORDS; k++) copy[k] = Atomics.load(i32, base + k);
  return copy;
}

/** The ticket for the request `words` (a snapshot, or the slot's words from `base`) in `slot`. */
export function ticketFor(secret: Buffer, slot: number, words: Int32Array, base = 0): [number, number] {
  const data = Buffer.alloc(4 * (Lay.SLOT.TICKET + 1));
  data.writeInt32LE(slot, 0);
  data.writeInt32LE(Lay.genOf(words[base + Lay.SLOT.STATE]), 4);
  for (let k = 1; k < Lay.SLOT.TICKET; k++) data.writeInt32LE(words[base + k], 4 * (k + 1));
  const mac = crypto.createHmac('sha256', secret).update(data).digest();
  return [mac.readInt32LE(0), mac.readInt32LE(4)];
}

/** Client: signs the request just written into `slot` (before it is published). */
export function sign(secret: Buffer, i32: Int32Array, geo: Lay.Geometry, slot: number): void {
  const base = Slot.base(geo, slot);
  const [first, second] = ticketFor(secret, slot, i32, base);
  Atomics.store(i32, base + Lay.SLOT.TICKET, first);
  Atomics.store(i32, base + Lay.SLOT.TICKET + 1, second);
}

export interface Vetting {
  /** Whether the request is signed by a host process. */
  host: boolean;
  /** Why it is refused; undefined when it is taken. */
  refused?: string;
}

/**
 * Host process side: may the request `snap` in `slot` reach our listener
 * bound to `listenAddr`? `isHost(id)`: whether the daemon named member `id`
 * a host process.
 */
export function vet(
  secret: Buffer | undefined,
  isHost: (id: number) => boolean,
  guestAddrs: readonly Addr[],
  listen: { addr: Addr; port: number },
  slot: number,
  snap: Int32Array,
): Vetting {
  const client = snap[Lay.SLOT.CLIENT];
  if (secret && isHost(client)) {
    const [first, second] = ticketFor(secret, slot, snap);
    if (first === snap[Lay.SLOT.TICKET] && second === snap[Lay.SLOT.TICKET + 1]) return { host: true };
    return { host: false, refused: `a request in the name of host process ${client} without its signature` };
  }
  // From the guest side: as the network would have it.
  const family = snap[Lay.SLOT.FAMILY];
  if (family !== 4 && family !== 6) return { host: false, refused: `address family ${family}` };
  const dialled = readAddr(snap, Lay.SLOT.SERVER_ADDR, family);
  const source = readAddr(snap, Lay.SLOT.CLIENT_ADDR, family);
  if (isLoopback(listen.addr)) return { host: false, refused: 'a listener on loopback is for this host only' };
  if (snap[Lay.SLOT.SERVER_PORT] !== listen.port) return { host: false, refused: `dialled port ${snap[Lay.SLOT.SERVER_PORT]} is not the listener's` };
  if (!isUnspecified(listen.addr) && (listen.addr.family !== family || !sameBytes(listen.addr.bytes, dialled.bytes)))
    return { host: false, refused: 'dialled at an address the listener is not bound to' };
  if (isLoopback(dialled) || isUnspecified(dialled) || !isOwnAddress(dialled)) return { host: false, refused: 'dialled at an address that is not for guests' };
  if (isOwnAddress(source)) return { host: false, refused: 'a source address of this host' };
  if (!guestAddrs.some((declared) => declared.family === family && sameBytes(declared.bytes, source.bytes)))
    return { host: false, refused: 'a source address the operator did not declare for guests (zivm server --guest-addr)' };
  return { host: false };
}
