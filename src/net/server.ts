/**
 * zivm.Server: a real net.Server (callable without `new`) that listens on TCP
 * as usual and, once the kernel has given it the port, also registers the
 * address in the domain's directory so co-resident clients reach it over
 * shared memory. Connections arrive as zivm.Socket either way.
 */
import net from 'node:net';
import dc from 'node:diagnostics_channel';
import type { Domain } from '../shm/domain';
import { guestDomains, hostDomain, watchGuestDomains } from '../shm/route';
import { Channel } from '../shm/channel';
import { type ListenSpec, register, unregister } from '../shm/directory';
import { type Addr, formatAddr, isLoopback, parseAddr } from '../shm/addrs';
import * as Ticket from '../shm/ticket';
import { servePair } from '../shm/pairs';
import { ShmHandle } from './handle';
import { acceptedSocket, type Socket } from './socket';
import { internals } from './internals';
import { debug } from '../log';
import { zivmOffOnce } from '../config';
import { errnoException } from '../errors';
import { kListener } from '../symbols';
import { getSystemErrorName } from 'node:util';
import { track, trackServer } from './stats';

const NetServer = net.Server;
const base = NetServer.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
const serverSocketChannel = dc.channel('net.server.socket');

interface Registration {
  domain: Domain;
  index: number;
  word: number;
  /** What the listener is bound to. */
  addr: Addr;
  port: number;
}

/** What net's listening handle (a libuv TCP handle) offers here: its connection callback, and its owner. */
interface ListenHandle {
  onconnection?: (this: ListenHandle, err: number, handle: AcceptedHandle) => void;
  [k: symbol]: unknown;
}

/** A net.Server with the parts of node:net's internals used here (@types/node has none of them). */
type ServerInternals = net.Server & {
  _handle: ListenHandle | null;
  _connections: number;
  pauseOnConnect: boolean;
  allowHalfOpen: boolean;
  highWaterMark?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay: number;
  [kListener]?: Listening;
};

/** An accepted socket, before it is handed to the application. */
type AcceptedSocket = Socket & { server?: net.Server; _server?: net.Server };

export interface ServerConstructor {
  new (connectionListener?: (socket: net.Socket) => void): net.Server;
  new (options?: net.ServerOpts, connectionListener?: (socket: net.Socket) => void): net.Server;
  (connectionListener?: (socket: net.Socket) => void): net.Server;
  (options?: net.ServerOpts, connectionListener?: (socket: net.Socket) => void): net.Server;
  readonly prototype: net.Server;
}

export const Server = function Server(this: unknown, options?: unknown, connectionListener?: unknown): net.Server | void {
  if (!(this instanceof NetServer))
    return new (Server as unknown as new (options: unknown, connectionListener: unknown) => net.Server)(options, connectionListener);
  (NetServer as unknown as (this: unknown, options?: unknown, connectionListener?: unknown) => void).call(this, options, connectionListener);
} as unknown as ServerConstructor;
Object.setPrototypeOf(Server.prototype, NetServer.prototype);
Object.setPrototypeOf(Server, NetServer);
/** Server.prototype, where net's methods are overridden. */
const patched = Server.prototype as unknown as Record<string, unknown>;

const UV_TCP_IPV6ONLY = 1;

/** net's listen path ends here once it has an address; the TCP listen comes first. */
patched._listen2 = function _listen2(this: ServerInternals, ...args: unknown[]) {
  base._listen2.apply(this, args);
  if (this._handle) trackServer(this);
  if (this._handle && internals.available && typeof this._handle.onconnection === 'function') this._handle.onconnection = onTcpConnection;
  if (!this._handle || this[kListener] || zivmOffOnce() || !internals.available) return;
  // A TLS server wraps each connection's kernel handle: it stays on TCP.
  if (this instanceof tlsServer()) return;
  // A server that accepts its connections paused may hand them to other
  // processes (what pauseOnConnect is for): only kernel connections can go.
  if (this.pauseOnConnect) {
    debug('pauseOnConnect: connections may be handed to other processes: served over TCP only');
    return;
  }
  // node:cluster's round robin: the primary's server only holds the port, its
  // connections go to the workers, whose servers register instead.
  if (roundRobinPrimary(this)) {
    debug('node:cluster round robin in the primary: the workers serve shared memory');
    return;
  }
  registerShm(this, Number(args[3]) || 511, Number(args[5]) || 0);
  // Whoever takes the listening handle away takes the connections with it.
  const handle = this._handle;
  process.nextTick(() => {
    if (this._handle !== handle && this[kListener]) {
      debug('listening handle taken over: no longer registered for shared memory');
      unregisterShm(this);
    }
  });
};

/**
 * Is `server` the one node:cluster's primary makes to hold a port for round
 * robin? It is made with an internal assertion as its connection listener,
 * and its listening handle is taken away once it listens.
 */
function roundRobinPrimary(server: net.Server): boolean {
  const listeners = server.listeners('connection');
  if (listeners.length !== 1 || listeners[0].name !== 'fail') return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a server that looks like node:cluster's primary one: other processes never load node:cluster
  const cluster = require('node:cluster') as { isPrimary: boolean; schedulingPolicy: number; SCHED_RR: number };
  return cluster.isPrimary && cluster.schedulingPolicy === cluster.SCHED_RR;
}

/** tls.Server, loaded once a server listens: node:tls builds on node:net's classes as they are when it loads, after the preload hook replaced them. */
function tlsServer(): typeof import('node:tls').Server {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazily: loading node:tls with this module would bind it to node:net's classes before zivm/register replaces them
  return (require('node:tls') as typeof import('node:tls')).Server;
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
const forGuests = new Set<ServerInternals>();

function registerShm(server: ServerInternals, backlog: number, flags: number): void {
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

function registerIn(server: ServerInternals, listening: Listening, domain: Domain): void {
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
      hostListeners.set(domain, (byIndex = new Map<number, { server: ServerInternals; reg: Registration }>()));
      domain.bells.on('serve', (payload, fd, peer) => onServe(domain, payload, fd, peer));
    }
    byIndex.set(entry.index, { server, reg });
  }
  const whose = domain.guest || !domain.admitsGuests ? 'shared memory' : 'the shared memory of guests';
  debug('listening on %s over TCP and %s (listener %d)', listening.text, whose, entry.index);
}

function unregisterShm(server: ServerInternals): void {
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
const hostListeners = new Map<Domain, Map<number, { server: ServerInternals; reg: Registration }>>();

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

/*
 * Connections already reported connected to their clients (in the listener's
 * backlog, as it were) are accepted before the listener goes: a server in the
 * same process that closes right after its client's 'connect' has, over TCP,
 * in practice accepted that connection already.
 */
patched.close = function close(this: ServerInternals, cb?: (err?: Error) => void) {
  const listening = this[kListener];
  if (listening && this._handle) {
    for (const reg of listening.regs) for (const [slot, word] of reg.domain.requestsFor(reg.index)) incoming(this, reg, slot, word);
  }
  unregisterShm(this);
  return base.close.call(this, cb);
};

/** A connection request in `slot`: accept it the way net's onconnection does. */
function incoming(server: ServerInternals, reg: Registration, slot: number, word: number): void {
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

/** What getsockname/getpeername fill in. */
interface SockAddr {
  address?: string;
  port?: number;
  family?: string;
}

interface AcceptedHandle {
  getsockname?(out: SockAddr): number;
  getpeername?(out: SockAddr): number;
  close(cb?: () => void): void;
}

/** Hands an accepted connection (shared memory or kernel) to the server, as net's onconnection does. */
function deliver(server: ServerInternals, handle: AcceptedHandle, transport: 'shm' | 'tcp'): void {
  if (server.maxConnections && server._connections >= server.maxConnections) {
    const local: SockAddr = {};
    const remote: SockAddr = {};
    handle.getsockname?.(local);
    handle.getpeername?.(remote);
    server.emit('drop', {
      localAddress: local.address,
      localPort: local.port,
      localFamily: local.family,
      remoteAddress: remote.address,
      remotePort: remote.port,
      remoteFamily: remote.family,
    });
    handle.close();
    return;
  }
  const socket: AcceptedSocket = acceptedSocket(
    handle,
    {
      allowHalfOpen: server.allowHalfOpen,
      pauseOnCreate: server.pauseOnConnect,
      readable: true,
      writable: true,
      readableHighWaterMark: server.highWaterMark,
      writableHighWaterMark: server.highWaterMark,
    },
    transport,
  );
  if (server.noDelay) socket.setNoDelay(true);
  if (server.keepAlive) socket.setKeepAlive(true, server.keepAliveInitialDelay * 1000);
  track(socket);
  server._connections++;
  socket.server = server;
  socket._server = server;
  server.emit('connection', socket);
  if (serverSocketChannel.hasSubscribers) serverSocketChannel.publish({ socket });
}

/** Kernel connections also arrive as zivm sockets (transport 'tcp'). */
function onTcpConnection(this: ListenHandle, err: number, clientHandle: AcceptedHandle): void {
  const server = this[internals.owner] as ServerInternals;
  if (err) {
    server.emit('error', errnoException(getSystemErrorName(err), 'accept'));
    return;
  }
  deliver(server, clientHandle, clientHandle instanceof ShmHandle ? 'shm' : 'tcp');
}
