/**
 * The shared-memory side of a listening server: its registrations in the
 * directories of the domains it is reachable from, and the connection
 * requests that arrive there, vetted and accepted as net accepts a kernel
 * connection. Loaded by server.ts when the first server listens, with the
 * rest of the data plane.
 */
import type net from 'node:net';
import type { Domain } from '../shm/domain';
import { guestDomains, hostDomain, watchGuestDomains } from '../shm/route';
import { Channel } from '../shm/channel';
import { type ListenSpec, register, unregister } from '../shm/directory';
import { type Addr, formatAddr, isLoopback, parseAddr } from '../shm/addrs';
import * as Ticket from '../shm/ticket';
import { servePair } from '../shm/pairs';
import { ShmHandle } from './handle';
import { deliver, type ServerInternals } from './accept';
import { patchTlsIfLoaded } from './tls';
import { debug } from '../log';
import { kListener } from '../symbols';

// As in dial.ts: TLS learns about shared-memory handles once it is loaded.
patchTlsIfLoaded();

const UV_TCP_IPV6ONLY = 1;

type Listener = ServerInternals & { [kListener]?: Listening };

interface Registration {
  domain: Domain;
  index: number;
  word: number;
  /** What the listener is bound to. */
  addr: Addr;
  port: number;
}

/**
 * The listener's registrations: in the host domain, for host processes, and
 * (unless it is bound to loopback) in each domain of guests, for theirs.
 */
interface Listening {
  regs: Registration[];
  spec: ListenSpec;
  text: string;
}

/** Servers whose listeners go into domains of guests joined later. */
const forGuests = new Set<Listener>();

export function registerShm(given: ServerInternals, backlog: number, flags: number): void {
  const server = given as Listener;
  if (server[kListener]) return;
  let address: net.AddressInfo | string | null;
  try {
    address = server.address();
  } catch {
    // A handle that cannot tell its address (closed meanwhile): nothing to register, TCP serves as usual.
    return;
  }
  if (!address || typeof address !== 'object') return; // a pipe
  const addr = parseAddr(address.address);
  if (!addr) return;
  const listening: Listening = {
    regs: [],
    spec: { addr, port: address.port, ipv6Only: (flags & UV_TCP_IPV6ONLY) !== 0, backlog },
    text: `${address.address}:${address.port}`,
  };
  const host = hostDomain(true);
  if (host) registerIn(server, listening, host);
  if (!isLoopback(addr)) {
    for (const domain of guestDomains()) registerIn(server, listening, domain);
    if (forGuests.size === 0) watchGuestDomains((domain) => forGuests.forEach((waiting) => registerIn(waiting, waiting[kListener]!, domain)));
    forGuests.add(server);
  }
  server[kListener] = listening;
}

function registerIn(server: Listener, listening: Listening, domain: Domain): void {
  domain.refreshAddrs(); // the addresses peers on other nodes will look for now
  const entry = register(domain, listening.spec);
  if (!entry) {
    debug('listener table of the region is full: %s is served over TCP only', listening.text);
    return;
  }
  const reg: Registration = { domain, index: entry.index, word: entry.word, addr: listening.spec.addr, port: listening.spec.port };
  listening.regs.push(reg);
  domain.acceptors.set(entry.index, { onIncoming: (slot, word) => incoming(server, reg, slot, word) });
  if (!domain.guest && !domain.admitsGuests && !domain.pair) {
    // Its daemon may pair this listener with processes of other users (shm/pairs.ts).
    let byIndex = hostListeners.get(domain);
    if (!byIndex) {
      hostListeners.set(domain, (byIndex = new Map<number, { server: Listener; reg: Registration }>()));
      domain.bells.on('serve', (payload, fd, peer) => onServe(domain, payload, fd, peer));
    }
    byIndex.set(entry.index, { server, reg });
  }
  const whose = domain.guest || !domain.admitsGuests ? 'shared memory' : 'the shared memory of guests';
  debug('listening on %s over TCP and %s (listener %d)', listening.text, whose, entry.index);
}

export function unregisterShm(given: ServerInternals): void {
  const server = given as Listener;
  const listening = server[kListener];
  if (!listening) return;
  server[kListener] = undefined;
  forGuests.delete(server);
  for (const reg of listening.regs.splice(0)) {
    reg.domain.acceptors.delete(reg.index);
    if (hostListeners.get(reg.domain)?.get(reg.index)?.reg === reg) hostListeners.get(reg.domain)!.delete(reg.index);
    if (reg.domain.alive) unregister(reg.domain, reg.index, reg.word);
  }
}

/** Our listeners in each host domain, by index: what its daemon names when it pairs one (SERVE). */
const hostListeners = new Map<Domain, Map<number, { server: Listener; reg: Registration }>>();

/**
 * The daemon paired our listener `hostIndex` with a process of another user:
 * it takes that listener's connections in the pair domain too, each vetted as
 * from the network within our namespace (ticket.ts).
 */
function onServe(host: Domain, payload: number, fd: number, peer: Addr | undefined): void {
  const served = servePair(host, payload, fd, peer);
  if (!served) return;
  const { pair, hostIndex, pairIndex, word } = served;
  const mine = hostListeners.get(host)?.get(hostIndex);
  const listening = mine?.server[kListener];
  if (!mine || !listening || !listening.regs.includes(mine.reg)) {
    debug('paired listener %d is gone: its requests in the pair domain are refused', hostIndex);
    return;
  }
  if (pair.acceptors.has(pairIndex)) return;
  const reg: Registration = { domain: pair, index: pairIndex, word, addr: mine.reg.addr, port: mine.reg.port };
  listening.regs.push(reg);
  pair.acceptors.set(pairIndex, { onIncoming: (slot, slotWord) => incoming(mine.server, reg, slot, slotWord) });
  debug(
    'listening on %s in a pair domain with a process of %s too (listener %d)',
    listening.text,
    peer ? `another network namespace (${formatAddr(peer)})` : 'another user',
    pairIndex,
  );
}

/**
 * The server closes: connections already reported connected to their clients
 * (in the listener's backlog, as it were) are accepted before the listener
 * goes (a server in the same process that closes right after its client's
 * 'connect' has, over TCP, in practice accepted that connection already),
 * then its registrations go.
 */
export function closeListener(given: ServerInternals): void {
  const server = given as Listener;
  const listening = server[kListener];
  if (listening && server._handle) {
    for (const reg of listening.regs) for (const [slot, word] of reg.domain.requestsFor(reg.index)) incoming(server, reg, slot, word);
  }
  unregisterShm(server);
}

/** A connection request in `slot`: accept it the way net's onconnection does. */
function incoming(server: Listener, reg: Registration, slot: number, word: number): void {
  if (!server._handle || !server[kListener]?.regs.includes(reg)) {
    Channel.refuse(reg.domain, slot, word);
    return;
  }
  const domain = reg.domain;
  let snap: Int32Array | undefined;
  // A host process vets each request (ticket.ts); inside a guest, its agent's domain is the guest's own.
  if (!domain.guest) {
    snap = Ticket.snapshot(domain.i32, domain.geo, slot);
    const verdict = domain.podPeer
      ? Ticket.vet('pod', [domain.podPeer], reg, snap)
      : Ticket.vet(domain.pair ? 'pair' : domain.admitsGuests ? 'guests' : 'host', domain.guestAddrs, reg, snap);
    if (verdict.refused !== undefined || snap[0] !== word) {
      debug('refused the connection request in slot %d: %s', slot, verdict.refused ?? 'it changed while being read');
      Channel.refuse(domain, slot, word);
      return;
    }
  }
  const ch = Channel.accept(domain, slot, word, snap);
  if (!ch) return;
  const handle = new ShmHandle(ch);
  // Through the listening handle's onconnection, as a kernel connection arrives:
  // code that wraps it (to watch or adjust accepted handles) sees this one too.
  const onconnection = server._handle.onconnection;
  if (typeof onconnection === 'function') onconnection.call(server._handle, 0, handle);
  else deliver(server, handle, 'shm');
}
