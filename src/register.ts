/**
 * The preload hook: NODE_OPTIONS="--require zivm/register" (or --import).
 * Puts zivm's Socket, Server and connect functions on the builtin node:net
 * exports, before the application loads, so that everything built on net
 * (node:http, frameworks, clients) uses them. ZIVM=off makes it a no-op.
 */
import { patchNet } from './net/patch';

patchNet();

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
