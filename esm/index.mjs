// zivm for ES modules: the CommonJS module itself (one instance whichever way it
// is loaded), with node:net's named exports as the running Node has them and
// zivm's own in place of net's Socket, Server and connect functions.
import zivm from '../dist/src/bundle/zivm.js';

export * from 'node:net';
export default zivm;
export const { Socket, Stream, Server, createServer, connect, createConnection, stats, TRANSPORT_CHANNEL } = zivm;
