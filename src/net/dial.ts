/**
 * The shared-memory side of a client socket's connect(): whether a
 * co-resident listener takes the connection, and if so the switch of the
 * socket's kernel handle for a shared-memory one at the moment net would have
 * connected it. Loaded by socket.ts on the first connect() that may use
 * shared memory, with the rest of the data plane: a process that never
 * connects or listens (a build tool under the preload hook) does not load it.
 */
import net from 'node:net';
import type dns from 'node:dns';
import { ShmHandle, nativeStreams } from './handle';
import type { SocketLike } from './core';
import { boundToHttp2Session } from './streambase';
import { netInternals, type ConnectReq, type TcpLike } from './internals';
import { chose } from './debug';
import { patchTlsIfLoaded } from './tls';
import { kDialPort, kIntercepted, kNativeConsumed, kNativeReads, kTlsUnguarded, kTlsWrapped, kTransport, kTryShm } from '../symbols';
import { getDomain, lastJoinError } from '../shm/join';
import { Channel } from '../shm/channel';
import { guestDomains, route } from '../shm/route';
import { pairsPossible } from '../shm/pairs';
import { parseAddr } from '../shm/addrs';

/*
 * TLS learns about shared-memory handles, if node:tls is loaded already; else
 * on the first connect() after something loaded it (see intercept()).
 */
patchTlsIfLoaded();

const internals = netInternals();

/** A net.Socket with the parts of node:net's internals used here (@types/node has none of them). */
export type SocketInternals = SocketLike & {
  [kTransport]?: Transport;
  [kTryShm]?: boolean;
  [kDialPort]?: number;
  [kNativeReads]?: boolean;
  encrypted?: boolean;
  _pendingData: unknown;
  _pendingEncoding: string;
  _reset(): void;
};
export type Transport = 'shm' | 'tcp' | 'pipe';

type LookupFn = (host: string, opts: dns.LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void) => void;
type Normalized = ReturnType<typeof net._normalizeArgs>;

let dnsModule: typeof dns | undefined;
/** node:dns's lookup as it is when called: net loads node:dns on the first name it looks up, and so do we. */
const defaultLookup: LookupFn = (host, opts, cb) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, as net does: a process that dials addresses never loads it
  dnsModule ??= require('node:dns') as typeof dns;
  (dnsModule.lookup as unknown as LookupFn)(host, opts, cb);
};

/**
 * connect() of a socket that may go over shared memory (socket.ts has ruled
 * out paths, TLS and user-buffer reads): net connects it as usual, and the
 * kernel handle's connect is intercepted to try shared memory first.
 */
export function connectMaybeShm(
  socket: SocketInternals,
  normalized: Normalized,
  options: Record<string, unknown>,
  baseConnect: (this: SocketInternals, normalized: Normalized) => unknown,
): unknown {
  if (!getDomain(false) && guestDomains().length === 0 && !pairsPossible()) {
    socket[kTransport] = 'tcp';
    chose(socket, 'tcp', `no zivm domain here${lastJoinError ? ` (${lastJoinError.message})` : ''}`, options.host as string, options.port as number);
    return baseConnect.call(socket, normalized);
  }
  socket[kTransport] = undefined;
  socket[kTryShm] = true;
  socket[kDialPort] = Number(options.port);
  // Addresses are tried in net's order (happy eyeballs included); each attempt's
  // kernel handle is intercepted, so the first address with a co-resident
  // listener goes over shared memory, exactly where net would have connected.
  // `lookup` first: the copy then has it already (see PREFILL in socket.ts).
  const opts: Record<string, unknown> = { lookup: undefined, ...options };
  const userLookup = opts.lookup;
  if (userLookup === undefined || userLookup === null || typeof userLookup === 'function') {
    opts.lookup = interceptingLookup(socket, (userLookup ?? defaultLookup) as LookupFn);
  }
  baseConnect.call(socket, net._normalizeArgs([opts, normalized[1] ?? undefined].filter((arg) => arg !== undefined)));
  intercept(socket);
  return socket;
}

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

type ConnectFn = (this: TcpLike, req: ConnectReq, address: string, port: number) => number;

/** Wraps the kernel handle's connect so the choice is made on the resolved address. */
export function intercept(socket: SocketInternals): void {
  const tcp = socket._handle as TcpLike | null;
  if (!tcp || tcp instanceof ShmHandle || tcp[kIntercepted]) return;
  guardNativeConsumers(socket, tcp);
  // TLS marks the kernel handles it wraps (tls.ts) once it is patched; until then none can be wrapped, as no TLS socket exists yet.
  if (!patchTlsIfLoaded()) tcp[kTlsUnguarded] = true;
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
  // node:tls was loaded after this connect() began: a TLS socket made since may wrap the kernel handle unseen.
  if (tcp[kTlsUnguarded] && patchTlsIfLoaded()) return tcpPath('node:tls was loaded while connecting: TLS may wrap the kernel handle');
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
