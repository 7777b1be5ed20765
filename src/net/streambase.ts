/**
 * Node's JSStream: a C++ stream (a StreamBase, like a TCP handle) whose I/O is
 * done by JavaScript hooks. A handle built on it is a stream Node's native
 * consumers can take: the HTTP parser, HTTP/2 sessions and TLS read it and
 * write it from C++ (reads are handed in with readBuffer()/emitEOF(), writes
 * come out through onwrite()). The class is not exported by Node: it is found
 * in Node's binding list (process.binding('js_stream'), which costs nothing),
 * or else on the handle of Node's own JS stream adapter, built once around a
 * dummy stream (which loads node:tls and builds a TLS context: 6 ms on Node
 * 20, 12 ms on Node 22 and later, paid by a process's first connection).
 * Undefined if this Node.js has no such thing (then consumers get a
 * shared-memory socket through the adapter instead).
 */
import type { Duplex } from 'node:stream';
import { debug } from '../log';

export interface JSStreamInstance {
  readBuffer(chunk: Uint8Array): void;
  emitEOF(): void;
  finishWrite(req: object, status: number): void;
  finishShutdown(req: object, status: number): void;
  getAsyncId(): number;
}

export type JSStreamClass = new () => JSStreamInstance;

/** Node's JS stream adapter (the class of `new tls.TLSSocket(duplex)._handle._parentWrap`). */
export type AdapterClass = new (
  stream: unknown,
) => Record<string | symbol, unknown> & { _handle: unknown; destroy(): void; on(ev: string, fn: (...args: unknown[]) => void): unknown };

function dummy(): Duplex {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- node:stream (its public module takes 1.5 ms to load) only for the probe, which Node's binding list usually spares us
  const { Duplex: DuplexClass } = require('node:stream') as typeof import('node:stream');
  return new DuplexClass({
    read() {},
    write(_chunk, _encoding, cb) {
      cb();
    },
  });
}

let found: { adapter?: AdapterClass; jsStream?: JSStreamClass } | undefined;
let bound: { jsStream?: JSStreamClass } | undefined;

function isJSStream(candidate: unknown): candidate is JSStreamClass {
  const proto = (candidate as { prototype?: Record<string, unknown> } | undefined)?.prototype;
  return (
    typeof candidate === 'function' &&
    !!proto &&
    typeof proto.readBuffer === 'function' &&
    typeof proto.emitEOF === 'function' &&
    typeof proto.finishWrite === 'function'
  );
}

/**
 * JSStream from Node's list of bindings, unless that would warn: under
 * --pending-deprecation (or NODE_PENDING_DEPRECATION=1) process.binding is
 * wrapped to warn on its first call, and then we do not call it. Under the
 * permission model it throws; the adapter's handle is looked at then.
 */
function fromBinding(): JSStreamClass | undefined {
  const binding = (process as unknown as { binding?: (name: string) => unknown }).binding;
  if (typeof binding !== 'function' || binding.name !== 'binding') return undefined;
  try {
    const candidate = (binding.call(process, 'js_stream') as { JSStream?: unknown } | undefined)?.JSStream;
    return isJSStream(candidate) ? candidate : undefined;
  } catch {
    return undefined;
  }
}

function find(): { adapter?: AdapterClass; jsStream?: JSStreamClass } {
  if (found) return found;
  found = {};
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, not with this module: node:tls builds on node:net's classes as they are when it loads, after the preload hook replaced them
    const tls = require('node:tls') as typeof import('node:tls');
    const probe = new tls.TLSSocket(dummy()) as unknown as { _handle?: { _parentWrap?: { constructor: unknown } }; destroy(): void };
    const adapter = probe._handle?._parentWrap?.constructor;
    probe.destroy();
    if (typeof adapter !== 'function') throw new Error('no JS stream adapter');
    found.adapter = adapter as AdapterClass;
    const probeAdapter = new found.adapter(dummy());
    const jsStream = (probeAdapter._handle as { constructor?: unknown } | null)?.constructor;
    probeAdapter.destroy();
    if (isJSStream(jsStream)) {
      found.jsStream = jsStream;
    } else {
      debug('this Node.js has no JSStream: native stream consumers get shared-memory sockets through the JS stream adapter');
    }
  } catch (err) {
    debug('looking for Node.js stream classes failed: %s', (err as Error).message);
  }
  return found;
}

/** Node's JSStream class, if this Node.js has one. */
export function jsStreamClass(): JSStreamClass | undefined {
  if (!bound) bound = { jsStream: fromBinding() };
  return bound.jsStream ?? find().jsStream;
}

/** Node's JS stream adapter class. Throws if this Node.js has none. */
export function streamAdapter(): AdapterClass {
  const adapter = find().adapter;
  if (!adapter) throw new Error('node:tls has no JS stream adapter here');
  return adapter;
}

/**
 * Whether an HTTP/2 session is being built on `socket`: Http2Session marks
 * the socket before it asks whether its handle is a native stream. The mark
 * is a symbol of its own (kBoundSession); Node 20 imports that symbol from a
 * module that does not export it, so there the session sits at
 * socket['undefined'].
 */
export function boundToHttp2Session(socket: object): boolean {
  return http2SessionOf(socket) !== undefined;
}

/** The public side of an HTTP/2 session that zivm looks at. */
export interface Http2SessionState {
  readonly closed: boolean;
  readonly destroyed: boolean;
}

/** The HTTP/2 session bound to `socket` (see boundToHttp2Session), if any. */
export function http2SessionOf(socket: object): Http2SessionState | undefined {
  const own = socket as Record<string | symbol, unknown>;
  const misplaced = Object.prototype.hasOwnProperty.call(own, 'undefined') ? own['undefined'] : undefined;
  if (misplaced !== null && typeof misplaced === 'object' && /Http2Session$/.test((misplaced as { constructor?: { name?: string } }).constructor?.name ?? ''))
    return misplaced as Http2SessionState;
  for (const key of Object.getOwnPropertySymbols(socket)) {
    if (key.description === 'kBoundSession' && own[key] !== undefined && own[key] !== null) return own[key] as Http2SessionState;
  }
  return undefined;
}

/** The symbol of an HTTP/2 session's own state (streams and requests in progress among it): Node 20 to 26 call it 'state'. */
let sessionStateKey: symbol | null | undefined;

/**
 * Streams of an HTTP/2 session still open or being opened; -1 where this
 * Node.js keeps them where zivm does not look.
 */
export function http2StreamsOf(session: Http2SessionState): number {
  if (sessionStateKey === undefined) sessionStateKey = Object.getOwnPropertySymbols(session).find((key) => key.description === 'state') ?? null;
  if (sessionStateKey === null) return -1;
  const state = (session as unknown as Record<symbol, { streams?: { size?: unknown }; pendingStreams?: { size?: unknown } } | undefined>)[sessionStateKey];
  const open = state?.streams?.size;
  const pending = state?.pendingStreams?.size;
  return typeof open === 'number' && typeof pending === 'number' ? open + pending : -1;
}
