/**
 * zivm: node:net, with connections between co-resident peers carried over
 * shared memory. Everything not listed here is node:net's own.
 */
import { patchTls } from './net/tls';

patchTls();

export * from 'node:net';
export { Socket, Socket as Stream } from './net/socket';
export type { Transport } from './net/socket';
export { Server } from './net/server';
export { createServer, connect, createConnection } from './net/connect';
export { stats } from './net/stats';
export type { Stats, SocketStats } from './net/stats';
