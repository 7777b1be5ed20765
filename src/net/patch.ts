/**
 * What the preload hook does: puts zivm's Socket, Server and connect
 * functions on the builtin node:net exports, so that everything built on net
 * (node:http, frameworks, clients) uses them. ZIVM=off makes it a no-op, and
 * so does a second call (another copy of the hook, or the hook loaded twice).
 */
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';
import { zivmOff } from '../config';
import { debug } from '../log';
import { kNetPatched } from '../symbols';
import { Socket } from './socket';
import { Server } from './server';
import { connect, createConnection, createServer } from './connect';
import { guardIpcSend } from './ipc';

export function patchNet(): void {
  const target = net as unknown as Record<string | symbol, unknown>;
  if (zivmOff() || target[kNetPatched]) return;
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
