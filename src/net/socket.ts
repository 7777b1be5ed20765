/**
 * zivm.Socket: a real net.Socket (callable without `new`, like net's) whose
 * connect() looks for a co-resident listener and, if there is one, carries
 * the connection over shared memory. Everything else (argument checks, DNS,
 * happy eyeballs, errors, timeouts, the TCP path itself) is node:net's own.
 */
import net from 'node:net';
import dns from 'node:dns';
import { ShmHandle, nativeStreams } from './handle';
import type { SocketLike } from './core';
import { boundToHttp2Session } from './streambase';
import { internals, type ConnectReq, type TcpLike } from './internals';
import { chose } from './debug';
import { zivmOffOnce } from '../config';
import { kDialPort, kIntercepted, kNativeConsumed, kNativeReads, kTlsWrapped, kTransport, kTryShm } from '../symbols';
import { track, untrack } from './stats';
import { getDomain, lastJoinError } from '../shm/join';
import { Channel } from '../shm/channel';
import { guestDomains, route } from '../shm/route';
import { pairsPossible } from '../shm/pairs';
import { parseAddr } from '../shm/addrs';

const NetSocket = net.Socket;
const base = NetSocket.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
export type Transport = 'shm' | 'tcp' | 'pipe';

export interface Socket extends net.Socket {
  /** 'shm' when the bytes move through shared memory, 'tcp' or 'pipe' when through the kernel; undefined before connect. */
  readonly transport: Transport | undefined;
}

export interface SocketConstructor {
  new (options?: net.SocketConstructorOpts): Socket;
  (options?: net.SocketConstructorOpts): Socket;
  readonly prototype: Socket;
}

/**
 * node:net's Socket copies its options (`{ ...options }`) and then sets four
 * of them to fixed values. With the V8 of Node 20, adding properties to such
 * a copy makes new hidden classes every time: about 10 µs per socket, more
 * than the rest of a shared-memory connect. The copy of an options object that
 * has the four already only changes their values. Newer V8s need no help.
 */
const PREFILL =
  Number(process.versions.v8.split('.')[0]) < 12 &&
  [
    'options = { ...options };',
    'options.allowHalfOpen = Boolean(options.allowHalfOpen);',
    'options.emitClose = false;',
    'options.autoDestroy = true;',
    'options.decodeStrings = false;',
  ].every((line) => Function.prototype.toString.call(NetSocket).includes(line));

function prefilled(options: net.SocketConstructorOpts | undefined): net.SocketConstructorOpts | undefined {
  if (!PREFILL || options === null || typeof options !== 'object') return options;
  const given = options as Record<string, unknown>;
  if (given.emitClose === false && given.autoDestroy === true && given.decodeStrings === false && typeof given.allowHalfOpen === 'boolean') return options;
  return { allowHalfOpen: Boolean(options.allowHalfOpen), emitClose: false, autoDestroy: true, decodeStrings: false, ...options } as net.SocketConstructorOpts;
}

// A plain function, not a class: http, tls and tty call net.Socket without `new`.
export const Socket = function Socket(this: unknown, options?: net.SocketConstructorOpts): Socket | void {
  // Subclasses of node:net's own Socket (tls.TLSSocket when node:tls was loaded
  // first) call this on their instance too: initialise it rather than make another.
  if (!(this instanceof NetSocket)) return new (Socket as unknown as new (options?: unknown) => Socket)(options);
  (NetSocket as unknown as (this: unknown, options?: unknown) => void).call(this, prefilled(options));
} as unknown as SocketConstructor;
Object.setPrototypeOf(Socket.prototype, NetSocket.prototype);
Object.setPrototypeOf(Socket, NetSocket);

/** A net.Socket with the parts of node:net's internals used here (@types/node has none of them). */
type SocketInternals = SocketLike & {
  [kTransport]?: Transport;
  [kTryShm]?: boolean;
  [kDialPort]?: number;
  [kNativeReads]?: boolean;
  encrypted?: boolean;
  _pendingData: unknown;
  _pendingEncoding: string;
  _reset(): void;
};
/** Socket.prototype, where net's methods are overridden. */
const patched = Socket.prototype as unknown as Record<string, unknown>;
type LookupFn = (host: string, opts: dns.LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void) => void;

Object.defineProperty(Socket.prototype, 'transport', {
  configurable: true,
  enumerable: false,
  get(this: SocketInternals): Transport | undefined {
    const handle = this._handle;
    if (handle instanceof ShmHandle) return 'shm';
    if (this[kTransport]) return this[kTransport];
    if (!handle) return undefined;
    return (handle as { constructor?: { name?: string } }).constructor?.name === 'Pipe' ? 'pipe' : 'tcp';
  },
});

/*
 * connect() overloads, as net's:
 *   connect(options[, connectListener])
 *   connect(port[, host][, connectListener])
 *   connect(path[, connectListener])      -> plain net, always
 * or an array already normalized by net._normalizeArgs.
 */
patched.connect = function connect(this: SocketInternals, ...args: unknown[]) {
  const normalized = (Array.isArray(args[0]) && args.length === 1 ? args[0] : net._normalizeArgs(args)) as ReturnType<typeof net._normalizeArgs>;
  const options = normalized[0] ?? {};
  track(this);
  this[kTryShm] = false;
  // TLS needs a kernel handle to wrap: TLS sockets (and user-buffer reads) stay on TCP.
  if (options.path != null || zivmOffOnce() || !internals.available || this[internals.kBuffer] || this.encrypted === true) {
    this[kTransport] = options.path != null ? 'pipe' : 'tcp';
    return base.connect.call(this, normalized);
  }
  if (!getDomain(false) && guestDomains().length === 0 && !pairsPossible()) {
    this[kTransport] = 'tcp';
    chose(this, 'tcp', `no zivm domain here${lastJoinError ? ` (${lastJoinError.message})` : ''}`, options.host as string, options.port as number);
    return base.connect.call(this, normalized);
  }
  this[kTransport] = undefined;
  this[kTryShm] = true;
  this[kDialPort] = Number(options.port);
  // Addresses are tried in net's order (happy eyeballs included); each attempt's
  // kernel handle is intercepted, so the first address with a co-resident
  // listener goes over shared memory, exactly where net would have connected.
  // `lookup` first: the copy then has it already (see PREFILL).
  const opts: Record<string, unknown> = { lookup: undefined, ...options };
  const userLookup = opts.lookup;
  if (userLookup === undefined || userLookup === null || typeof userLookup === 'function') {
    opts.lookup = interceptingLookup(this, (userLookup ?? dns.lookup) as LookupFn);
  }
  base.connect.call(this, net._normalizeArgs([opts, normalized[1] ?? undefined].filter((arg) => arg !== undefined)));
  intercept(this);
  return this;
};

/** The lookup net would use, with the kernel handle intercepted by the time it answers. */
function interceptingLookup(socket: SocketInternals, lookup: LookupFn): LookupFn {
  return function zivmLookup(host, opts, cb) {
    lookup(host, opts, (err, address, family) => {
      // A lookup may answer synchronously, inside connect(): the handle must be wrapped by now.
      intercept(socket);
      cb(err, address, family);
    });
  };
}

/*
 * Happy eyeballs (autoSelectFamily) gives every attempt after the first a new
 * kernel handle through net's internal kReinitializeHandle: intercept that one too.
 */
const kReinitializeHandle = Object.getOwnPropertySymbols(NetSocket.prototype).find((k) => k.description === 'kReinitializeHandle');
if (kReinitializeHandle) {
  const reinit = (NetSocket.prototype as unknown as Record<symbol, (handle: unknown) => unknown>)[kReinitializeHandle];
  Object.defineProperty(Socket.prototype, kReinitializeHandle, {
    configurable: true,
    writable: true,
    value: function (this: SocketInternals, handle: unknown) {
      const result = reinit.call(this, handle);
      if (this[kTryShm]) intercept(this);
      return result;
    },
  });
}

type ConnectFn = (this: TcpLike, req: ConnectReq, address: string, port: number) => number;

/** Wraps the kernel handle's connect so the choice is made on the resolved address. */
function intercept(socket: SocketInternals): void {
  const tcp = socket._handle as TcpLike | null;
  if (!tcp || tcp instanceof ShmHandle || tcp[kIntercepted]) return;
  guardNativeConsumers(socket, tcp);
  const kernel = tcp as unknown as Record<'connect' | 'connect6', ConnectFn>;
  const connect4 = kernel.connect;
  const connect6 = kernel.connect6;
  kernel.connect = function (req, address, port) {
    return tryShm(socket, tcp, req, address, port, connect4);
  };
  kernel.connect6 = function (req, address, port) {
    return tryShm(socket, tcp, req, address, port, connect6);
  };
}

/*
 * Native stream consumers (HTTP/2's session, the HTTP parser, TLS) look at
 * `_handle.isStreamBase` before they take the C++ stream under a socket. A
 * socket still choosing its transport may yet swap its kernel handle for a
 * shared-memory one, so the kernel handle says yes, and, while the choice is
 * pending:
 *  - for HTTP/2, which takes the socket's handle only once connected, notes
 *    it: a shared-memory handle, itself a native stream, reads as HTTP/2
 *    needs (see Reader);
 *  - for anyone else (TLS, the HTTP parser: they take the kernel handle at
 *    once), marks the handle: the connection stays on it (TCP).
 */
function guardNativeConsumers(socket: SocketInternals, tcp: TcpLike): void {
  tcp[kIntercepted] = socket;
  // One descriptor for every handle: kernel handles keep sharing their hidden class.
  Object.defineProperty(tcp, 'isStreamBase', guardedIsStreamBase);
}

const guardedIsStreamBase: PropertyDescriptor = {
  configurable: true,
  enumerable: true,
  get(this: TcpLike): unknown {
    const native: unknown = Reflect.get(Object.getPrototypeOf(this) as object, 'isStreamBase', this);
    const socket = this[kIntercepted] as SocketInternals | undefined;
    if (!native || !socket || socket._handle !== this || !socket[kTryShm] || socket[kTransport] !== undefined) return native;
    if (nativeStreams && boundToHttp2Session(socket)) socket[kNativeReads] = true;
    else this[kNativeConsumed] = true;
    return native;
  },
};

function tryShm(socket: SocketInternals, tcp: TcpLike, req: ConnectReq, address: string, port: number, connect: ConnectFn): number {
  const tcpPath = (reason: string): number => {
    socket[kTransport] = 'tcp';
    chose(socket, 'tcp', reason, address, port);
    return connect.call(tcp, req, address, port);
  };
  if (socket._handle !== tcp) return tcpPath('socket changed handle');
  if (tcp[kTlsWrapped]) return tcpPath('TLS wraps the kernel handle');
  if (tcp[kNativeConsumed] || tcp._consumed) return tcpPath('a native stream consumer took the kernel handle');
  const addr = parseAddr(address);
  if (!addr) return tcpPath('unparsable address');
  const way = route(addr, port, address);
  if ('reason' in way) return tcpPath(way.reason);
  const { domain, listener } = way;
  const local = typeof req.localAddress === 'string' ? parseAddr(req.localAddress) : undefined;
  // A socket bound to a port (localPort) has it reserved in the kernel: the connection keeps it.
  let localPort = 0;
  if (req.localPort) {
    const bound: { port?: number } = {};
    if (typeof tcp.getsockname === 'function' && tcp.getsockname(bound) === 0) localPort = bound.port ?? 0;
  }
  let ch: Channel | undefined;
  try {
    // A Service's address leads elsewhere (the node's DNAT rules): the connection goes there and shows what was dialled.
    ch = way.via
      ? Channel.connect(domain, listener, way.via.addr, way.via.port, local, localPort)
      : Channel.connect(domain, listener, addr, port, local, localPort);
    if (ch && way.via) ch.dialledAs = { addr, port };
  } catch (err) {
    return tcpPath(`shared memory failed: ${(err as Error).message}`);
  }
  if (!ch) return tcpPath('every connection slot of the region is taken');
  const handle = new ShmHandle(ch);
  if (socket[kNativeReads]) handle.useNativeReads(true);
  handle[internals.owner] = socket;
  (handle as unknown as { onread: unknown }).onread = tcp.onread;
  // Options net applies to the handle once connected go to this one: so do overrides put on the kernel handle before.
  for (const name of ['setKeepAlive', 'setNoDelay'] as const) {
    if (Object.prototype.hasOwnProperty.call(tcp, name))
      (handle as unknown as Record<string, unknown>)[name] = (tcp as unknown as Record<string, unknown>)[name];
  }
  socket._handle = handle;
  socket[kTransport] = 'shm';
  chose(socket, 'shm', `listener of peer ${listener.owner} in slot ${ch.slot}`, address, port);
  handle.beginConnect({ req, tcp, connect });
  return 0;
}

patched._writeGeneric = function _writeGeneric(
  this: SocketInternals,
  writev: boolean,
  data: unknown,
  encoding: BufferEncoding,
  cb: (err?: Error | null) => void,
) {
  const handle = this._handle;
  if (this.connecting || !(handle instanceof ShmHandle)) return base._writeGeneric.call(this, writev, data, encoding, cb);
  this._pendingData = null;
  this._pendingEncoding = '';
  this._unrefTimer();
  let bufs: Uint8Array[];
  if (writev) {
    const list = data as { chunk: string | Uint8Array; encoding: BufferEncoding }[];
    bufs = new Array<Uint8Array>(list.length);
    for (let i = 0; i < list.length; i++) {
      const chunk = list[i].chunk;
      bufs[i] = typeof chunk === 'string' ? Buffer.from(chunk, list[i].encoding) : chunk;
    }
  } else {
    bufs = [typeof data === 'string' ? Buffer.from(data, encoding) : (data as Uint8Array)];
  }
  handle.writeBuffers(bufs, cb);
};

patched._destroy = function _destroy(this: SocketInternals, err: Error | null, cb: (err: Error | null) => void) {
  untrack(this);
  return base._destroy.call(this, err, cb);
};

patched.resetAndDestroy = function resetAndDestroy(this: SocketInternals) {
  if (!(this._handle instanceof ShmHandle)) return base.resetAndDestroy.call(this);
  if (this.connecting) this.once('connect', () => this._reset());
  else this._reset();
  return this;
};

/** Builds the socket for an accepted connection (its handle a shared-memory or a kernel one). */
export function acceptedSocket(handle: object, options: net.SocketConstructorOpts & Record<string, unknown>, transport: Transport): Socket {
  const socket = new Socket(
    (PREFILL
      ? { allowHalfOpen: Boolean(options.allowHalfOpen), emitClose: false, autoDestroy: true, decodeStrings: false, ...options, handle }
      : { ...options, handle }) as unknown as net.SocketConstructorOpts,
  );
  (socket as unknown as SocketInternals)[kTransport] = transport;
  return socket;
}
