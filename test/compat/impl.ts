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
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the compiled module, by the path child processes require too, loaded once the setup has set ZIVM_DIR
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
export function trackSocket<T extends nodeNet.Socket>(subject: T): T {
  liveSockets.add(subject);
  closeResults.delete(subject);
  subject.once('close', (hadError: boolean) => {
    closeResults.set(subject, hadError);
    liveSockets.delete(subject);
  });
  return subject;
}

/** Closes `srv` after the current test, destroying whatever it accepted. */
export function trackServer<T extends nodeNet.Server>(srv: T): T {
  liveServers.add(srv);
  srv.on('connection', (sock: nodeNet.Socket) => trackSocket(sock));
  return srv;
}

async function cleanup(): Promise<void> {
  for (const sock of liveSockets) sock.destroy();
  liveSockets.clear();
  const closing: Promise<unknown>[] = [];
  for (const srv of liveServers) {
    if (srv.listening) {
      closing.push(Promise.race([new Promise<void>((resolve) => srv.close(() => resolve())), delay(2000)]));
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
    // A folder already gone (or busy) changes nothing for the results: left to the system's temporary files.
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
    createServer: (...args: unknown[]) => trackServer((net.createServer as (...args2: unknown[]) => nodeNet.Server)(...args)),
    connect: (...args: unknown[]) => trackSocket((net.connect as (...args2: unknown[]) => nodeNet.Socket)(...args)),
    socket: (options?: nodeNet.SocketConstructorOpts) => trackSocket(new net.Socket(options)),
    expectShm(...sockets: nodeNet.Socket[]) {
      this.expectTransport('shm', ...sockets);
    },
    expectTransport(transport: 'shm' | 'tcp', ...sockets: nodeNet.Socket[]) {
      if (!isZivm) return;
      for (const sock of sockets) {
        expect((sock as nodeNet.Socket & { transport?: string }).transport, 'zivm transport').to.equal(transport);
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
  const onError = once(server, 'error').then(([err]) => Promise.reject(err as Error));
  const listening = new Promise<void>((resolve) => (host === null ? server.listen(port, resolve) : server.listen(port, host, resolve)));
  await Promise.race([listening, onError]);
  return (server.address() as nodeNet.AddressInfo).port;
}

/** Resolves with the socket's 'close' argument (hadError), also when it has already closed. */
export function closed(sock: nodeNet.Socket): Promise<boolean> {
  const res = closeResults.get(sock);
  if (res !== undefined) return Promise.resolve(res);
  return new Promise((resolve) => sock.once('close', (hadError: boolean) => resolve(hadError)));
}

/** Resolves with the first 'error' the emitter emits. */
export function nextError(ev: NodeJS.EventEmitter): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve) => ev.once('error', resolve));
}

/** Everything `s` receives until 'end', as one Buffer. */
export function readAll(sock: nodeNet.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    sock.on('data', (chunk: Buffer | string) => chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)));
    sock.once('end', () => resolve(Buffer.concat(chunks)));
    sock.once('error', reject);
  });
}

/** Resolves once `s` has received at least `n` bytes (it stays flowing); returns them. */
export function readBytes(sock: nodeNet.Socket, count: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= count) {
        sock.off('data', onData);
        sock.off('error', reject);
        resolve(Buffer.concat(chunks));
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
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
    server.once('connection', (sock: nodeNet.Socket) => {
      if (opts.paused) sock.pause();
      opts.onConnection?.(sock);
      resolve(sock);
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
export function pattern(count: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(count);
  let val = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    val = (val * 1103515245 + 12345) >>> 0;
    buf[i] = val >>> 24;
  }
  return buf;
}

export type { NetModule };
