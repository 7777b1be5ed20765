/**
 * zivm: node:net, with connections between co-resident peers carried over
 * shared memory. Everything not listed here is node:net's own.
 */
import type net from 'node:net';
import { guardIpcSend } from './net/ipc';
import type { Socket, Transport } from './net/socket';

// Children forked from now on check the handles they are sent (ipc.ts).
guardIpcSend();

export * from 'node:net';
export { Socket, Socket as Stream } from './net/socket';
export type { Transport } from './net/socket';
export { Server } from './net/server';
export { createServer, connect, createConnection } from './net/connect';
export { stats } from './net/stats';
export type { Stats, SocketStats } from './net/stats';

/**
 * The diagnostics_channel on which zivm publishes a TransportMessage for every
 * connection it routes: `require('node:diagnostics_channel').subscribe(TRANSPORT_CHANNEL, fn)`.
 */
export const TRANSPORT_CHANNEL = 'zivm:transport';

/** What zivm publishes on TRANSPORT_CHANNEL when it decides how a connection goes. */
export interface TransportMessage {
  /** The client socket. */
  socket: Socket | net.Socket;
  /** 'shm': over shared memory; 'tcp': over the kernel, for `reason`. */
  transport: Exclude<Transport, 'pipe'>;
  /** Why: the listener and slot for 'shm'; for 'tcp', e.g. 'no zivm domain here', 'no co-resident listener for 10.0.0.2:80'. */
  reason: string;
  /** The address and port being connected to (the resolved address when known). */
  address?: string;
  port?: number;
}
