/**
 * Node's JSStream: a C++ stream (a StreamBase, like a TCP handle) whose I/O is
 * done by JavaScript hooks. A handle built on it is a stream Node's native
 * consumers can take: the HTTP parser, HTTP/2 sessions and TLS read it and
 * write it from C++ (reads are handed in with readBuffer()/emitEOF(), writes
 * come out through onwrite()). The class is not exported by Node: it is found
 * on the handle of Node's own JS stream adapter, built once around a dummy
 * stream. Undefined if this Node.js has no such thing (then consumers get a
 * shared-memory socket through the adapter instead).
 */
import { Duplex } from 'node:stream';
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
export type AdapterClass = new (stream: unknown) => Record<string | symbol, unknown> & { _handle: unknown; destroy(): void };

function dummy(): Duplex {
  return new Duplex({
    read() {},
    write(_c, _e, cb) {
      cb();
    },
  });
}

let found: { adapter?: AdapterClass; jsStream?: JSStreamClass } | undefined;

function find(): { adapter?: AdapterClass; jsStream?: JSStreamClass } {
  if (found) return found;
  found = {};
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const tls = require('node:tls') as typeof import('node:tls');
    const probe = new tls.TLSSocket(dummy()) as unknown as { _handle?: { _parentWrap?: { constructor: unknown } }; destroy(): void };
    const adapter = probe._handle?._parentWrap?.constructor;
    probe.destroy();
    if (typeof adapter !== 'function') throw new Error('no JS stream adapter');
    found.adapter = adapter as AdapterClass;
    const inst = new found.adapter(dummy());
    const jsStream = (inst._handle as { constructor?: unknown } | null)?.constructor;
    inst.destroy();
    const proto = (jsStream as { prototype?: Record<string, unknown> } | undefined)?.prototype;
    if (typeof jsStream === 'function' && proto && typeof proto.readBuffer === 'function' && typeof proto.emitEOF === 'function' && typeof proto.finishWrite === 'function') {
      found.jsStream = jsStream as JSStreamClass;
    } else {
      debug('this Node.js has no JSStream: native stream consumers get shared-memory sockets through the JS stream adapter');
    }
  } catch (e) {
    debug('looking for Node.js stream classes failed: %s', (e as Error).message);
  }
  return found;
}

/** Node's JSStream class, if this Node.js has one. */
export function jsStreamClass(): JSStreamClass | undefined {
  return find().jsStream;
}

/** Node's JS stream adapter class. Throws if this Node.js has none. */
export function streamAdapter(): AdapterClass {
  const a = find().adapter;
  if (!a) throw new Error('node:tls has no JS stream adapter here');
  return a;
}
