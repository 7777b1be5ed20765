/** createServer / connect / createConnection, as net's but building zivm objects. */
import net from 'node:net';
import dc from 'node:diagnostics_channel';
import { Socket } from './socket';
import { Server } from './server';

const clientSocketChannel = dc.channel('net.client.socket');
/** Node 22 and later publish each client socket from Socket#connect itself; Node 20 from net.connect only. */
const connectPublishes = /clientSocketChannel/i.test(Function.prototype.toString.call(Reflect.get(net.Socket.prototype, 'connect')));

export function createServer(connectionListener?: (socket: net.Socket) => void): net.Server;
export function createServer(options?: net.ServerOpts, connectionListener?: (socket: net.Socket) => void): net.Server;
export function createServer(options?: unknown, connectionListener?: unknown): net.Server {
  return new (Server as unknown as new (options: unknown, connectionListener: unknown) => net.Server)(options, connectionListener);
}

/*
 * connect(options[, connectListener])
 * connect(port[, host][, connectListener])
 * connect(path[, connectListener])
 */
export function connect(options: net.NetConnectOpts, connectionListener?: () => void): Socket;
export function connect(port: number, host?: string, connectionListener?: () => void): Socket;
export function connect(path: string, connectionListener?: () => void): Socket;
export function connect(...args: unknown[]): Socket {
  const normalized = net._normalizeArgs(args);
  const options = normalized[0] as net.SocketConstructorOpts & { timeout?: number };
  const socket = new Socket(options);
  if (!connectPublishes && clientSocketChannel.hasSubscribers) clientSocketChannel.publish({ socket });
  if (options.timeout) socket.setTimeout(options.timeout);
  return (socket as unknown as { connect(args: unknown): Socket }).connect(normalized);
}

export const createConnection = connect;
