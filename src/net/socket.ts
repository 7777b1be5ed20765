/**
 * zivm.Socket: a real net.Socket (callable without `new`, like net's) whose
 * connect() looks for a co-resident listener and, if there is one, carries
 * the connection over shared memory. Everything else (argument checks, DNS,
 * happy eyeballs, errors, timeouts, the TCP path itself) is node:net's own.
 */
import net from 'node:net';
import type { ShmHandle } from './handle';
import type * as Dial from './dial';
import type { SocketInternals, Transport } from './dial';
import { netInternals } from './internals';
import { zivmOffOnce } from '../config';
import { kShmHandle, kTransport, kTryShm } from '../symbols';
import { track, untrack } from './stats';

const NetSocket = net.Socket;
const base = NetSocket.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
export type { Transport } from './dial';

export interface Socket extends net.Socket {
  /** 'shm' when the bytes move through shared memory, 'tcp' or 'pipe' when through the kernel; undefined before connect. */
  readonly transport: Transport | undefined;
}

export interface SocketConstructor {
  new (options?: net.SocketConstructorOpts): Socket;
  (options?: net.SocketConstructorOpts): Socket;
  readonly prototype: Socket;
}

/**
 * node:net's Socket copies its options (`{ ...options }`) and then sets four
 * of them to fixed values. With the V8 of Node 20, adding properties to such
 * a copy makes new hidden classes every time: about 10 µs per socket, more
 * than the rest of a shared-memory connect. The copy of an options object that
 * has the four already only changes their values. Newer V8s need no help.
 */
const PREFILL =
  Number(process.versions.v8.split('.')[0]) < 12 &&
  [
    'options = { ...options };',
    'options.allowHalfOpen = Boolean(options.allowHalfOpen);',
    'options.emitClose = false;',
    'options.autoDestroy = true;',
    'options.decodeStrings = false;',
  ].every((line) => Function.prototype.toString.call(NetSocket).includes(line));

function prefilled(options: net.SocketConstructorOpts | undefined): net.SocketConstructorOpts | undefined {
  if (!PREFILL || options === null || typeof options !== 'object') return options;
  const given = options as Record<string, unknown>;
  if (given.emitClose === false && given.autoDestroy === true && given.decodeStrings === false && typeof given.allowHalfOpen === 'boolean') return options;
  return { allowHalfOpen: Boolean(options.allowHalfOpen), emitClose: false, autoDestroy: true, decodeStrings: false, ...options } as net.SocketConstructorOpts;
}

// A plain function, not a class: http, tls and tty call net.Socket without `new`.
export const Socket = function Socket(this: unknown, options?: net.SocketConstructorOpts): Socket | void {
  // Subclasses of node:net's own Socket (tls.TLSSocket when node:tls was loaded
  // first) call this on their instance too: initialise it rather than make another.
  if (!(this instanceof NetSocket)) return new (Socket as unknown as new (options?: unknown) => Socket)(options);
  (NetSocket as unknown as (this: unknown, options?: unknown) => void).call(this, prefilled(options));
} as unknown as SocketConstructor;
Object.setPrototypeOf(Socket.prototype, NetSocket.prototype);
Object.setPrototypeOf(Socket, NetSocket);

/** Socket.prototype, where net's methods are overridden. */
const patched = Socket.prototype as unknown as Record<string, unknown>;

let dialModule: typeof Dial | undefined;

/**
 * The shared-memory side of connect() and the data plane under it, loaded by
 * the first connect() that may use them (dial.ts).
 */
function dial(): typeof Dial {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- on first use, not with this module: a process that loads zivm and never connects or listens does not load the data plane
  return (dialModule ??= require('./dial') as typeof Dial);
}

/** Is `handle` a shared-memory handle? (Without loading handle.ts: there is none before it is loaded.) */
export function isShmHandle(handle: unknown): handle is ShmHandle {
  return (handle as Record<symbol, unknown> | null | undefined)?.[kShmHandle] === true;
}

Object.defineProperty(Socket.prototype, 'transport', {
  configurable: true,
  enumerable: false,
  get(this: SocketInternals): Transport | undefined {
    const handle = this._handle;
    if (isShmHandle(handle)) return 'shm';
    if (this[kTransport]) return this[kTransport];
    if (!handle) return undefined;
    return (handle as { constructor?: { name?: string } }).constructor?.name === 'Pipe' ? 'pipe' : 'tcp';
  },
});

/** The mark net._normalizeArgs puts on the arrays it makes (net's normalizedArgsSymbol), found on one. */
let normalizedMark: symbol | null | undefined;

/** Whether `arg` is an array net._normalizeArgs made: net's connect() takes only those as its arguments, as is. */
function isNormalized(arg: unknown): boolean {
  if (!Array.isArray(arg)) return false;
  if (normalizedMark === undefined) normalizedMark = Object.getOwnPropertySymbols(net._normalizeArgs([]))[0] ?? null;
  // Without the mark (a Node.js that no longer sets one), an array is taken as net would have made it.
  return normalizedMark === null || (arg as unknown as Record<symbol, unknown>)[normalizedMark] === true;
}

/*
 * connect() overloads, as net's:
 *   connect(options[, connectListener])
 *   connect(port[, host][, connectListener])
 *   connect(path[, connectListener])      -> plain net, always
 * or an array already normalized by net._normalizeArgs.
 */
patched.connect = function connect(this: SocketInternals, ...args: unknown[]) {
  const normalized = (isNormalized(args[0]) ? args[0] : net._normalizeArgs(args)) as ReturnType<typeof net._normalizeArgs>;
  const options = normalized[0] ?? {};
  track(this);
  this[kTryShm] = false;
  // TLS needs a kernel handle to wrap: TLS sockets (and user-buffer reads) stay on TCP.
  if (options.path != null || zivmOffOnce() || this.encrypted === true || !netInternals().available || this[netInternals().kBuffer]) {
    this[kTransport] = options.path != null ? 'pipe' : 'tcp';
    return base.connect.call(this, normalized);
  }
  const result = dial().connectMaybeShm(this, normalized, options, base.connect);
  // net's connect() sets an own `write` (its own, undoing a write-after-FIN guard): ours again.
  if ((this as unknown as Record<string, unknown>).write === base.write) (this as unknown as Record<string, unknown>).write = patched.write;
  return result;
};

/*
 * Happy eyeballs (autoSelectFamily) gives every attempt after the first a new
 * kernel handle through net's internal kReinitializeHandle: intercept that one too.
 */
const kReinitializeHandle = Object.getOwnPropertySymbols(NetSocket.prototype).find((k) => k.description === 'kReinitializeHandle');
if (kReinitializeHandle) {
  const reinit = (NetSocket.prototype as unknown as Record<symbol, (handle: unknown) => unknown>)[kReinitializeHandle];
  Object.defineProperty(Socket.prototype, kReinitializeHandle, {
    configurable: true,
    writable: true,
    value: function (this: SocketInternals, handle: unknown) {
      const result = reinit.call(this, handle);
      if (this[kTryShm]) dial().intercept(this);
      return result;
    },
  });
}

/** The parts of a Writable's state the fast path looks at (getters on Node 22 and later, fields before). */
interface WriteState {
  length: number;
  highWaterMark: number;
  defaultEncoding: string;
  corked: number;
  ending: boolean;
  destroyed: boolean;
  errored: unknown;
  writing: boolean;
  constructed: boolean;
}

/** Where net keeps a socket's handle: read directly, it costs a tenth of the `_handle` accessor (Node 20 to 26). */
let handleKey: symbol | '_handle' | undefined;

/*
 * write() of a small Buffer or string on a connected shared-memory socket
 * with nothing queued before it (not corked, not ending, no write in
 * progress) is done at once, in the ring or in the writer's stage, without
 * the Writable machinery: what node:net's write() would do for a write its
 * handle completes at once, with the same result (true), the same callback
 * (null, on a later tick, in order with the others) and the same idle-timer
 * reset. A string (node:http's head and small bodies) is encoded into a
 * scratch buffer first, which the ring or the stage copies before write()
 * returns. Anything else (another encoding, a full ring, a socket with
 * writes waiting) takes node:net's own write(), which also makes the errors.
 */
/** The encodings of the string fast path, each with the most bytes one UTF-16 unit can take in it. */
const STRING_BYTES = new Map<unknown, number>([
  ['utf8', 3],
  ['utf-8', 3],
  ['latin1', 1],
  ['binary', 1],
  ['ascii', 1],
]);
/** The longest string write (in bytes at most) the fast path encodes: the writer's largest small write. */
const SCRATCH_SIZE = 16 * 1024;
let scratch: Buffer | undefined;

patched.write = function write(this: SocketInternals, chunk: unknown, encoding?: unknown, cb?: unknown) {
  const handle = (this as unknown as Record<symbol | string, unknown>)[(handleKey ??= netInternals().kHandle)];
  if (isShmHandle(handle) && !this.connecting) {
    // As net's: a Buffer's encoding is not looked at (other than to be checked), a callback that is not a function is none.
    const done = typeof encoding === 'function' ? encoding : typeof cb === 'function' ? cb : undefined;
    const state = (this as unknown as { _writableState: WriteState })._writableState;
    let bytes: Uint8Array | undefined;
    if (chunk instanceof Uint8Array) {
      if ((encoding == null || encoding === done || encoding === 'buffer') && chunk.byteLength > 0 && chunk.byteLength < state.highWaterMark) bytes = chunk;
    } else if (typeof chunk === 'string' && chunk.length > 0 && chunk.length < state.highWaterMark) {
      // A string counts its UTF-16 units towards the high-water mark, as in net's Writable (which does not decode strings).
      const enc = encoding == null || encoding === done ? state.defaultEncoding : encoding;
      const most = STRING_BYTES.get(enc);
      if (most !== undefined && chunk.length * most <= SCRATCH_SIZE) {
        scratch ??= Buffer.allocUnsafeSlow(SCRATCH_SIZE);
        bytes = scratch.subarray(0, scratch.write(chunk, 0, enc as BufferEncoding));
      }
    }
    if (bytes !== undefined && ready(state) && handle.writeNow(bytes)) {
      this._unrefTimer();
      if (done) process.nextTick(done, null);
      return true;
    }
  }
  return base.write.call(this, chunk, encoding, cb);
};

/** Nothing waits in the Writable before a new write, and it may take one. */
function ready(state: WriteState): boolean {
  return state.length === 0 && !state.corked && !state.ending && !state.writing && !state.destroyed && !state.errored && state.constructed !== false;
}

patched._writeGeneric = function _writeGeneric(
  this: SocketInternals,
  writev: boolean,
  data: unknown,
  encoding: BufferEncoding,
  cb: (err?: Error | null) => void,
) {
  const handle = this._handle;
  if (this.connecting || !isShmHandle(handle)) return base._writeGeneric.call(this, writev, data, encoding, cb);
  this._pendingData = null;
  this._pendingEncoding = '';
  this._unrefTimer();
  let bufs: Uint8Array[];
  if (writev) {
    const list = data as { chunk: string | Uint8Array; encoding: BufferEncoding }[];
    bufs = new Array<Uint8Array>(list.length);
    for (let i = 0; i < list.length; i++) {
      const chunk = list[i].chunk;
      bufs[i] = typeof chunk === 'string' ? Buffer.from(chunk, list[i].encoding) : chunk;
    }
  } else {
    bufs = [typeof data === 'string' ? Buffer.from(data, encoding) : (data as Uint8Array)];
  }
  handle.writeBuffers(bufs, cb);
};

patched._destroy = function _destroy(this: SocketInternals, err: Error | null, cb: (err: Error | null) => void) {
  untrack(this);
  return base._destroy.call(this, err, cb);
};

patched.resetAndDestroy = function resetAndDestroy(this: SocketInternals) {
  if (!isShmHandle(this._handle)) return base.resetAndDestroy.call(this);
  if (this.connecting) this.once('connect', () => this._reset());
  else this._reset();
  return this;
};

/** Builds the socket for an accepted connection (its handle a shared-memory or a kernel one). */
export function acceptedSocket(handle: object, options: net.SocketConstructorOpts & Record<string, unknown>, transport: Transport): Socket {
  const socket = new Socket(
    (PREFILL
      ? { allowHalfOpen: Boolean(options.allowHalfOpen), emitClose: false, autoDestroy: true, decodeStrings: false, ...options, handle }
      : { ...options, handle }) as unknown as net.SocketConstructorOpts,
  );
  (socket as unknown as SocketInternals)[kTransport] = transport;
  return socket;
}
