/**
 * The two implementations every compat spec runs against, and the helpers
 * they share. Each test body runs once with node:net and once with zivm;
 * for zivm, a connection between a zivm server and a zivm client must be
 * carried over shared memory (see Impl.expectShm and pair()).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Our own zivm daemon, before anything of zivm is loaded.
const zivmDir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-compat-'));
process.env.ZIVM_DIR = zivmDir;
process.env.ZIVM_IDLE_MS = '300';

import { expect } from 'chai';
import { once } from 'node:events';
import * as nodeNet from 'node:net';
import type * as ZivmModule from '../../src/index';
import { sleep, until as waitUntil } from '../../tools/kit/wait';

type NetModule = typeof nodeNet;

/** The compiled zivm module (dist/src/index.js), loaded only now that ZIVM_DIR is set. */
export const ZIVM_MODULE_PATH = path.resolve(__dirname, '..', '..', 'src', 'index.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const zivmNet = require(ZIVM_MODULE_PATH) as typeof ZivmModule;

export interface Impl {
  name: 'node:net' | 'zivm';
  isZivm: boolean;
  /** The module itself, untouched: for instanceof, validation, calling without `new`. */
  net: NetModule;
  /** What a child process passes to require() to get this implementation. */
  requireId: string;
  /** net.createServer, with the server (and every socket it accepts) closed after the test. */
  createServer: NetModule['createServer'];
  /** net.connect, with the socket destroyed after the test. */
  connect: NetModule['connect'];
  /** new net.Socket(), destroyed after the test. */
  socket(options?: nodeNet.SocketConstructorOpts): nodeNet.Socket;
  /** For zivm: each socket must be carried over shared memory. No-op for node:net. */
  expectShm(...sockets: nodeNet.Socket[]): void;
  /** For zivm: each socket must be carried over `transport`. No-op for node:net. */
  expectTransport(transport: 'shm' | 'tcp', ...sockets: nodeNet.Socket[]): void;
}

// -- cleanup --------------------------------------------------------------------

const liveSockets = new Set<nodeNet.Socket>();
const liveServers = new Set<nodeNet.Server>();
/** The hadError of each tracked socket's 'close'. */
const closeResults = new WeakMap<nodeNet.Socket, boolean>();

/** Destroys `s` after the current test. */
export function trackSocket<T extends nodeNet.Socket>(s: T): T {
  liveSockets.add(s);
  closeResults.delete(s);
  s.once('close', (hadError: boolean) => {
    closeResults.set(s, hadError);
    liveSockets.delete(s);
  });
  return s;
}

/** Closes `srv` after the current test, destroying whatever it accepted. */
export function trackServer<T extends nodeNet.Server>(srv: T): T {
  liveServers.add(srv);
  srv.on('connection', (s: nodeNet.Socket) => trackSocket(s));
  return srv;
}

async function cleanup(): Promise<void> {
  for (const s of liveSockets) s.destroy();
  liveSockets.clear();
  const closing: Promise<unknown>[] = [];
  for (const srv of liveServers) {
    if (srv.listening) {
      closing.push(
        Promise.race([new Promise<void>((resolve) => srv.close(() => resolve())), delay(2000)]),
      );
    }
  }
  liveServers.clear();
  await Promise.all(closing);
}

afterEach(async function () {
  this.timeout(5000);
  await cleanup();
});

after(function () {
  try {
    fs.rmSync(zivmDir, { recursive: true, force: true });
  } catch {
    /* ignore */
  }
});

// -- the two implementations ------------------------------------------------------

function makeImpl(name: 'node:net' | 'zivm', net: NetModule, requireId: string): Impl {
  const isZivm = name === 'zivm';
  return {
    name,
    isZivm,
    net,
    requireId,
    createServer: ((...args: unknown[]) =>
      trackServer((net.createServer as (...a: unknown[]) => nodeNet.Server)(...args))) as NetModule['createServer'],
    connect: ((...args: unknown[]) =>
      trackSocket((net.connect as (...a: unknown[]) => nodeNet.Socket)(...args))) as NetModule['connect'],
    socket: (options?: nodeNet.SocketConstructorOpts) => trackSocket(new net.Socket(options)),
    expectShm(...sockets: nodeNet.Socket[]) {
      this.expectTransport('shm', ...sockets);
    },
    expectTransport(transport: 'shm' | 'tcp', ...sockets: nodeNet.Socket[]) {
      if (!isZivm) return;
      for (const s of sockets) {
        expect((s as nodeNet.Socket & { transport?: string }).transport, 'zivm transport').to.equal(transport);
      }
    },
  };
}

export const netImpl = makeImpl('node:net', nodeNet, 'node:net');
export const zivmImpl = makeImpl('zivm', zivmNet as unknown as NetModule, ZIVM_MODULE_PATH);
export const impls: Impl[] = [netImpl, zivmImpl];

/** Runs `body` in describe('node:net') and describe('zivm'), with a watchdog on every test. */
export function forEachImpl(body: (impl: Impl) => void): void {
  for (const impl of impls) {
    describe(impl.name, function () {
      this.timeout(10000);
      body(impl);
    });
  }
}

// -- helpers ------------------------------------------------------------------------

export const delay = sleep;

/** Resolves once `server` listens on `host` (null: no host given); returns its port. */
export async function listen(server: nodeNet.Server, host: string | null = '127.0.0.1', port = 0): Promise<number> {
  const onError = once(server, 'error').then(([e]) => Promise.reject(e));
  const listening = new Promise<void>((resolve) => (host === null ? server.listen(port, resolve) : server.listen(port, host, resolve)));
  await Promise.race([listening, onError]);
  return (server.address() as nodeNet.AddressInfo).port;
}

/** Resolves with the socket's 'close' argument (hadError), also when it has already closed. */
export function closed(s: nodeNet.Socket): Promise<boolean> {
  const r = closeResults.get(s);
  if (r !== undefined) return Promise.resolve(r);
  return new Promise((resolve) => s.once('close', (hadError: boolean) => resolve(hadError)));
}

/** Resolves with the first 'error' the emitter emits. */
export function nextError(e: NodeJS.EventEmitter): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve) => e.once('error', resolve));
}

/** Everything `s` receives until 'end', as one Buffer. */
export function readAll(s: nodeNet.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer | string) => chunks.push(Buffer.isBuffer(d) ? d : Buffer.from(d)));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Resolves once `s` has received at least `n` bytes (it stays flowing); returns them. */
export function readBytes(s: nodeNet.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer): void => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        s.off('data', onData);
        s.off('error', reject);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

/** Resolves once `pred()` holds, looking again every 5 ms; rejects after 10 s. */
export function until(pred: () => boolean, what = 'condition'): Promise<void> {
  return waitUntil(pred, 10000, what, 5);
}

export interface Pair {
  server: nodeNet.Server;
  port: number;
  /** The client end. */
  client: nodeNet.Socket;
  /** The end the server accepted. */
  peer: nodeNet.Socket;
}

export interface PairOptions {
  server?: nodeNet.ServerOpts;
  client?: Partial<nodeNet.TcpNetConnectOpts>;
  host?: string;
  /** Called with the accepted socket in the 'connection' event, before anything else sees it. */
  onConnection?: (s: nodeNet.Socket) => void;
  /** The accepted socket is paused in its 'connection' event (it reads nothing until resume()). */
  paused?: boolean;
}

/**
 * A listening server and one connection to it, both ends connected.
 * For zivm, both ends are checked to be carried over shared memory.
 */
export async function pair(impl: Impl, opts: PairOptions = {}): Promise<Pair> {
  const host = opts.host ?? '127.0.0.1';
  const server = impl.createServer(opts.server ?? {});
  const accepted = new Promise<nodeNet.Socket>((resolve) =>
    server.once('connection', (s: nodeNet.Socket) => {
      if (opts.paused) s.pause();
      opts.onConnection?.(s);
      resolve(s);
    }),
  );
  const port = await listen(server, host);
  const client = impl.connect({ port, host, ...opts.client } as nodeNet.TcpNetConnectOpts);
  const [peer] = await Promise.all([accepted, once(client, 'connect')]);
  // A pauseOnConnect server may hand its connections to other processes: zivm keeps it on TCP.
  if (opts.server?.pauseOnConnect) impl.expectTransport('tcp', client, peer);
  else impl.expectShm(client, peer);
  return { server, port, client, peer };
}

/** A deterministic buffer of `n` bytes (not all alike, so reordering shows). */
export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export type { NetModule };
