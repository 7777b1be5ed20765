/**
 * How a server hands over an accepted connection (shared memory or kernel),
 * as node:net's onconnection does: shared by server.ts (kernel connections)
 * and listen.ts (shared-memory ones).
 */
import net from 'node:net';
import dc from 'node:diagnostics_channel';
import { acceptedSocket, type Socket } from './socket';
import { kListener } from '../symbols';
import { track } from './stats';

const serverSocketChannel = dc.channel('net.server.socket');

/**
 * node:net before 21 limits connections only by a maxConnections that is
 * truthy; from 21 on, by any that is set (0 drops every connection).
 */
const ZERO_LIMITS = Number(process.versions.node.split('.')[0]) >= 21;

/** The part of net.BlockList a server's `blockList` option gives (Node 22 and later). */
interface BlockListLike {
  check(address: string, family: string): boolean;
}

/** What net's listening handle (a libuv TCP handle) offers here: its connection callback, and its owner. */
export interface ListenHandle {
  onconnection?: (this: ListenHandle, err: number, handle: AcceptedHandle) => void;
  [k: symbol]: unknown;
}

/** A net.Server with the parts of node:net's internals used here (@types/node has none of them). */
export type ServerInternals = net.Server & {
  _handle: ListenHandle | null;
  _connections: number;
  pauseOnConnect: boolean;
  allowHalfOpen: boolean;
  highWaterMark?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay: number;
  blockList?: BlockListLike;
  /** Its registrations for shared memory (listen.ts). */
  [kListener]?: object;
};

/** An accepted socket, before it is handed to the application. */
type AcceptedSocket = Socket & { server?: net.Server; _server?: net.Server };

/** What getsockname/getpeername fill in. */
interface SockAddr {
  address?: string;
  port?: number;
  family?: string;
}

export interface AcceptedHandle {
  getsockname?(out: SockAddr): number;
  getpeername?(out: SockAddr): number;
  close(cb?: () => void): void;
}

/** Hands an accepted connection (shared memory or kernel) to the server, as net's onconnection does. */
export function deliver(server: ServerInternals, handle: AcceptedHandle, transport: 'shm' | 'tcp'): void {
  const max = server.maxConnections as number | null | undefined;
  if ((ZERO_LIMITS ? max != null : max) && server._connections >= (max as number)) {
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
  // A peer the server's blockList names is closed unseen, as net does (no 'drop').
  if (server.blockList && typeof handle.getpeername === 'function') {
    const remote: SockAddr = {};
    handle.getpeername(remote);
    const family = typeof remote.address === 'string' ? net.isIP(remote.address) : 0;
    if (family && server.blockList.check(remote.address as string, `ipv${family}`)) {
      handle.close();
      return;
    }
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
