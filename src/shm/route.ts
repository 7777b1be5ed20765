/**
 * Which memory carries a connection: one domain per trust relationship.
 *
 * A host process is a member of the host's domain (the daemon at
 * ZIVM_SOCKET, or the default one, started on demand), which only host
 * processes map: connections between host processes live there. Each daemon
 * that admits QEMU guests (`zivm server --guests` or `--guest-addr`) is a
 * domain of its own, shared by its guests (one guest, or the guests the
 * operator put into one trust zone) and the host; a host process finds such
 * daemons beside the host daemon's socket (`*.sock` in the same folder with
 * a zivm daemon's lock file beside it) and joins each one the first time it
 * may need it.
 * A connection goes to a guest domain only when its destination is an
 * address the operator declared for that domain's guests; a listener is
 * registered in every guest domain unless it is bound to loopback (which no
 * guest can reach).
 *
 * A process inside a guest has one domain, its agent's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { lockPath, socketPath } from '../config';
import { myUid } from '../sys';
import { debug } from '../log';
import { guestAgentFromEnv } from '../guest/link';
import { type Addr, isOwnAddress } from './addrs';
import { find, type Found } from './directory';
import type { Domain } from './domain';
import { getDomain, joinHost, lastJoinError } from './join';
import { pairRoute } from './pairs';
import { onLink, podRoute } from './podroute';

/** How often the folder is looked at for daemons of guests, at most. */
const SCAN_MS = 1000;

/** The guest domains joined, by socket path. */
const guests = new Map<string, Domain>();
/** Sockets that are not (or were not, when last tried) daemons of guests: by path, the inode then. */
const passed = new Map<string, number>();
let scannedAt = 0;
let scanTimer: NodeJS.Timeout | undefined;
const joinedListeners: ((domain: Domain) => void)[] = [];

/**
 * The inode of `file` if it is the socket of a zivm daemon: a socket with the
 * daemon's lock file beside it (a zivm daemon holds one while it runs), owned
 * by us or root. Anything else in the folder is never connected to.
 */
function daemonSocketInode(file: string): number | undefined {
  try {
    const stat = fs.statSync(file);
    const lock = fs.lstatSync(lockPath(file));
    if (!stat.isSocket() || !lock.isFile()) return undefined;
    const uid = myUid();
    if ((stat.uid !== uid && stat.uid !== 0) || (lock.uid !== uid && lock.uid !== 0)) return undefined;
    return stat.ino;
  } catch {
    return undefined;
  }
}

/** Joins the daemons of guests beside the host daemon's socket that we are not a member of yet (at most once a second). */
function scan(): void {
  const now = Date.now();
  if (now - scannedAt < SCAN_MS) return;
  scannedAt = now;
  const primary = socketPath();
  const dir = path.dirname(primary);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return; // no folder: no daemon at all
  }
  for (const name of names) {
    if (!name.endsWith('.sock')) continue;
    const file = path.join(dir, name);
    if (file === primary || guests.get(file)?.alive) continue;
    const ino = daemonSocketInode(file);
    if (ino === undefined || passed.get(file) === ino) continue;
    try {
      const domain = joinHost({ autostart: false, socketPath: file, guestsOnly: true });
      guests.set(file, domain);
      passed.delete(file);
      debug('joined the domain of guests at %s', file);
      for (const listener of joinedListeners) listener(domain);
    } catch (err) {
      // Tried again once the socket is made anew (a daemon started there).
      passed.set(file, ino);
      debug('not a domain of guests: %s (%s)', file, (err as Error).message);
    }
  }
}

/** The domains of guests this host process is a member of (the host daemon's own, if it admits guests, included). */
export function guestDomains(): Domain[] {
  if (guestAgentFromEnv()) return [];
  scan();
  const list: Domain[] = [];
  for (const domain of guests.values()) if (domain.alive) list.push(domain);
  return list;
}

/**
 * Calls `onJoined` for each domain of guests joined from now on, looking for
 * new ones once a second (a listener registers in each; see net/server.ts).
 */
export function watchGuestDomains(onJoined: (domain: Domain) => void): void {
  joinedListeners.push(onJoined);
  if (scanTimer || guestAgentFromEnv()) return;
  scanTimer = setInterval(() => scan(), SCAN_MS);
  scanTimer.unref();
}

/** The domain a host listener registers in for host processes: the host daemon's, unless guests map it. */
export function hostDomain(autostart: boolean): Domain | undefined {
  const domain = getDomain(autostart);
  if (domain && domain.admitsGuests) {
    // Reached through ZIVM_SOCKET: a domain of guests, then, and no host domain.
    guests.set(path.resolve(socketPath()), domain);
    return undefined;
  }
  return domain;
}

/** `via`: where a Service's address led (podroute.ts): the connection goes there and shows the address dialled. */
export type Route = { domain: Domain; listener: Found; via?: { addr: Addr; port: number } } | { reason: string };

/**
 * Where a connection from this process to (addr, port) goes over shared
 * memory, or why it does not: an address of this host reaches the host
 * domain's listeners; an address the operator declared for some domain's
 * guests reaches that domain's guests; anything else is not co-resident.
 */
export function route(addr: Addr, port: number, text: string): Route {
  const own = getDomain(false);
  if (own?.guest) {
    const listener = find(own, addr, port, true);
    return listener ? { domain: own, listener } : { reason: `no co-resident listener for ${text}:${port}` };
  }
  if (isOwnAddress(addr, true)) {
    const domain = hostDomain(false);
    const listener = domain ? find(domain, addr, port, true) : undefined;
    if (domain && listener) return { domain, listener };
    // A process of another user may listen there (pairs.ts).
    const paired = pairRoute(addr, port, text);
    if (paired) return paired;
    if (!domain) {
      if (own) return { reason: 'the zivm domain admits guests: host processes connect to each other only in a domain without guests' };
      return { reason: `no zivm domain here${lastJoinError ? ` (${lastJoinError.message})` : ''}` };
    }
    return { reason: `no co-resident listener for ${text}:${port}` };
  }
  // From a container or pod: the address may be another network namespace's of this host (podroute.ts).
  const podded = own?.inPod ? podRoute(addr, port, text) : undefined;
  if (podded && 'domain' in podded) return podded;
  if (own) hostDomain(false); // a ZIVM_SOCKET domain of guests is one of the guest domains
  for (const domain of guestDomains()) {
    if (!domain.declares(addr)) continue;
    const listener = find(domain, addr, port, true);
    return listener ? { domain, listener } : { reason: `no listener of the guests at ${text}:${port}` };
  }
  // From a host process: a container's address on one of this host's bridges (podroute.ts).
  if (!podded && own && !own.admitsGuests && onLink(addr)) return podRoute(addr, port, text);
  return podded ?? { reason: `${text} is not an address of this host or of a guest declared to zivm` };
}
