/**
 * Pair domains, from a process's side (the daemon's side: server/broker.ts).
 *
 * A connection to a port of this host that a process of another user
 * listens on: the kernel's table of TCP sockets (/proc/net/tcp, tcp6) says
 * which user holds the port, as the kernel would pick the listener (an exact
 * address before a wildcard); that user's daemon is asked through its broker
 * socket, whose owner is checked (SO_PEERCRED). If one of its processes
 * listens there under zivm, the daemon hands us our end of a pair domain
 * with that process, or names one we have already. Later connections to that
 * process's listeners find them in the pair domain without asking.
 *
 * The listening process is told by its daemon (SERVE) and joins the pair
 * domain on its side; the server registers its listener there (net/server.ts).
 */
import { brokerName, brokerOff } from '../config';
import { debug } from '../log';
import { myUid } from '../sys';
import type { Addr } from './addrs';
import { find, type Found } from './directory';
import type { Domain } from './domain';
import { joinHost } from './join';
import * as Lay from './layout';
import { closeQuiet, native } from './native';
import { dialNotes, NOTE_NO_PAIR, NOTE_PAIR, PAIR_REFUSALS, readNote } from './notes';
import { portOwner } from './ports';

/** How long asking a broker may hold the event loop (it answers in well under a millisecond). */
const DIAL_WAIT_MS = 200;
/** A user whose broker could not be reached is not asked again for this long. */
const NO_BROKER_MS = 1000;
/** Who holds a port (or that nobody of another user does) is looked up again after this long. */
const OWNER_MS = 1000;

/** The pair domains we dialled, by the broker's user and its serial. */
const dialled = new Map<string, Domain>();
/** The pair domains we serve in, by our host domain and the serial its daemon gave. */
const served = new Map<Domain, Map<number, Domain>>();
const noBroker = new Map<number, number>();
/** Who holds an address and port, as last looked up: the uid (or undefined), until when. */
const owners = new Map<string, { uid: number | undefined; until: number }>();

export type PairRoute = { domain: Domain; listener: Found } | { reason: string };

/** Can a connection to this host's address go to another user's process? (Brokers are not turned off.) */
export function pairsPossible(): boolean {
  return !brokerOff();
}

/**
 * Where a connection to (addr, port), an address of this host, goes when no
 * listener of our own domain holds it: a pair domain with the process of
 * another user that does, or why not (undefined: nobody of another user
 * listens there).
 */
export function pairRoute(addr: Addr, port: number, text: string): PairRoute | undefined {
  if (brokerOff()) return undefined;
  for (const domain of dialled.values()) {
    if (!domain.alive) continue;
    const listener = find(domain, addr, port);
    if (listener) return { domain, listener };
  }
  const now = Date.now();
  const ownerKey = `${addr.family}/${Buffer.from(addr.bytes).toString('hex')}/${port}`;
  let owner = owners.get(ownerKey);
  if (!owner || owner.until <= now) {
    // The kernel's table is read at most once a second per address and port: a pool of connections to a plain server reads it once.
    if (owners.size > 4096) owners.clear();
    owner = { uid: portOwner(addr, port), until: now + OWNER_MS };
    owners.set(ownerKey, owner);
  }
  const uid = owner.uid;
  if (uid === undefined || uid === myUid()) return undefined;
  if ((noBroker.get(uid) ?? 0) > now) return { reason: `user ${uid} listens on ${text}:${port} and has no zivm broker here` };
  return dial(uid, addr, port, text);
}

function dial(uid: number, addr: Addr, port: number, text: string): PairRoute {
  const addon = native();
  let fd: number;
  try {
    fd = addon.unixConnect(brokerName(uid));
  } catch (err) {
    noBroker.set(uid, Date.now() + NO_BROKER_MS);
    return { reason: `user ${uid} listens on ${text}:${port} and has no zivm broker here (${(err as Error).message})` };
  }
  let passed = -1;
  try {
    const owner = addon.peerCred(fd).uid;
    if (owner !== uid) {
      noBroker.set(uid, Date.now() + NO_BROKER_MS);
      return { reason: `the broker socket of user ${uid} is held by user ${owner}` };
    }
    for (const value of dialNotes(addr.family, addr.bytes, port)) addon.sendMsg(fd, value, -1);
    const deadline = Date.now() + DIAL_WAIT_MS;
    let msg: [number, number] | null | false;
    for (;;) {
      msg = addon.recvMsg(fd);
      if (msg !== null) break;
      const left = deadline - Date.now();
      if (left <= 0) return { reason: `the zivm broker of user ${uid} did not answer in time` };
      addon.waitReadable(fd, left);
    }
    if (msg === false) return { reason: `the zivm broker of user ${uid} closed the connection` };
    passed = msg[1];
    const seen = readNote(msg[0]);
    if (seen?.type === NOTE_NO_PAIR) return { reason: `the zivm daemon of user ${uid}: ${PAIR_REFUSALS[seen.payload] ?? 'refused'}` };
    if (seen?.type !== NOTE_PAIR) return { reason: `the zivm broker of user ${uid} answered something else` };
    const key = `${uid}/${Math.floor(seen.payload / 0x10000)}`;
    let domain = dialled.get(key);
    if (passed >= 0) {
      const fresh = joinHost({ autostart: false, pairFd: passed });
      passed = -1;
      domain = fresh;
      dialled.set(key, fresh);
      fresh.onLeft = () => {
        if (dialled.get(key) === fresh) dialled.delete(key);
      };
      debug('joined a pair domain with a process of user %d (pair %s)', uid, key);
    }
    if (!domain?.alive) return { reason: `the pair domain with user ${uid} is gone` };
    const listener = find(domain, addr, port);
    if (!listener) return { reason: `no listener of user ${uid} at ${text}:${port} in our pair domain` };
    return { domain, listener };
  } catch (err) {
    return { reason: `pairing with user ${uid} failed: ${(err as Error).message}` };
  } finally {
    closeQuiet(fd);
    if (passed >= 0) closeQuiet(passed);
  }
}

/**
 * Our daemon paired one of our listeners (notes.NOTE_SERVE): the pair domain
 * (joined now if `fd` is its socket), with the host listener's index and the
 * listener's index in the pair domain; undefined if it cannot be joined.
 */
export function servePair(
  host: Domain,
  payload: number,
  fd: number,
  peer?: Addr,
): { pair: Domain; hostIndex: number; pairIndex: number; word: number } | undefined {
  const serial = Math.floor(payload / 2 ** 32);
  const hostIndex = Math.floor(payload / 0x10000) % 0x10000;
  const pairIndex = payload % 0x10000;
  let byHost = served.get(host);
  if (!byHost) served.set(host, (byHost = new Map<number, Domain>()));
  let pair = byHost.get(serial);
  if (fd >= 0) {
    try {
      pair = joinHost({ autostart: false, pairFd: fd });
    } catch (err) {
      debug('cannot join the pair domain our daemon made: %s', (err as Error).message);
      return undefined;
    }
    const joined = pair;
    joined.podPeer = peer;
    const map = byHost;
    map.set(serial, joined);
    joined.onLeft = () => {
      if (map.get(serial) === joined) map.delete(serial);
    };
  }
  if (!pair?.alive || pairIndex >= pair.geo.maxListeners) return undefined;
  // The entry's state word as the daemon wrote it (unregistering later frees it only if it is still that).
  const word = Atomics.load(pair.i32, (Lay.listenerOffset(pair.geo, pairIndex) >>> 2) + Lay.LISTENER.STATE);
  return { pair, hostIndex, pairIndex, word };
}
