/**
 * The preload hook: NODE_OPTIONS="--require zivm/register" (or --import).
 * Puts zivm's Socket, Server and connect functions on the builtin node:net
 * exports, before the application loads, so that everything built on net
 * (node:http, frameworks, clients) uses them. ZIVM=off makes it a no-op.
 */
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';
import { zivmOff } from './config';
import { debug } from './log';
import { kNetPatched } from './symbols';
import { Socket } from './net/socket';
import { Server } from './net/server';
import { connect, createConnection, createServer } from './net/connect';
import { guardIpcSend } from './net/ipc';

const target = net as unknown as Record<string | symbol, unknown>;

if (!zivmOff() && !target[kNetPatched]) {
  target[kNetPatched] = true;
  target.Socket = Socket;
  target.Stream = Socket;
  target.Server = Server;
  target.connect = connect;
  target.createConnection = createConnection;
  target.createServer = createServer;
  guardIpcSend();
  syncBuiltinESMExports();
  debug('node:net patched by zivm/register');
}

declare module 'node:net' {
  interface Socket {
    /**
     * With the preload hook: 'shm' when zivm carries the connection over shared
     * memory, 'tcp' or 'pipe' when the kernel does; undefined before connect and
     * on sockets made without zivm (e.g. by code loaded before the hook).
     */
    readonly transport?: import('./net/socket').Transport;
  }
}
