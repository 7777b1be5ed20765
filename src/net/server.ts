/**
 * zivm.Server: a real net.Server (callable without `new`) that listens on TCP
 * as usual and, once the kernel has given it the port, also registers the
 * address in the domain's directory so co-resident clients reach it over
 * shared memory. Connections arrive as zivm.Socket either way.
 */
import net from 'node:net';
import type * as Listen from './listen';
import { deliver, type AcceptedHandle, type ListenHandle, type ServerInternals } from './accept';
import { isShmHandle } from './socket';
import { netInternals } from './internals';
import { debug } from '../log';
import { zivmOffOnce } from '../config';
import { errnoException } from '../errors';
import { kListener } from '../symbols';
import { getSystemErrorName } from 'node:util';
import { trackServer } from './stats';

const NetServer = net.Server;
const base = NetServer.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;

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

let listenModule: typeof Listen | undefined;

/** The shared-memory side of listening (listen.ts), loaded when the first server registers. */
function listenShm(): typeof Listen {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- on first use, not with this module: a process that loads zivm and never connects or listens does not load the data plane
  return (listenModule ??= require('./listen') as typeof Listen);
}

/** net's listen path ends here once it has an address; the TCP listen comes first. */
patched._listen2 = function _listen2(this: ServerInternals, ...args: unknown[]) {
  base._listen2.apply(this, args);
  if (this._handle) trackServer(this);
  if (this._handle && netInternals().available && typeof this._handle.onconnection === 'function') this._handle.onconnection = onTcpConnection;
  if (!this._handle || this[kListener] || zivmOffOnce() || !netInternals().available) return;
  // A TLS server wraps each connection's kernel handle: it stays on TCP.
  if (isTlsServer(this)) return;
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
  listenShm().registerShm(this, Number(args[3]) || 511, Number(args[5]) || 0);
  // Whoever takes the listening handle away takes the connections with it.
  const handle = this._handle;
  process.nextTick(() => {
    if (this._handle !== handle && this[kListener]) {
      debug('listening handle taken over: no longer registered for shared memory');
      listenShm().unregisterShm(this);
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

/**
 * Is `server` a tls.Server? Not if nothing loaded node:tls yet (then it is not
 * loaded for the question). node:tls is required here, not with this module:
 * it builds on node:net's classes as they are when it loads, after the
 * preload hook replaced them.
 */
function isTlsServer(server: object): boolean {
  const list = (process as unknown as { moduleLoadList?: unknown }).moduleLoadList;
  if (Array.isArray(list) && !list.includes('NativeModule tls')) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazily, see above
  return server instanceof (require('node:tls') as typeof import('node:tls')).Server;
}

patched.close = function close(this: ServerInternals, cb?: (err?: Error) => void) {
  if (this[kListener]) listenShm().closeListener(this);
  return base.close.call(this, cb);
};

/** Kernel connections also arrive as zivm sockets (transport 'tcp'). */
function onTcpConnection(this: ListenHandle, err: number, clientHandle: AcceptedHandle): void {
  const server = this[netInternals().owner] as ServerInternals;
  if (err) {
    server.emit('error', errnoException(getSystemErrorName(err), 'accept'));
    return;
  }
  deliver(server, clientHandle, isShmHandle(clientHandle) ? 'shm' : 'tcp');
}
