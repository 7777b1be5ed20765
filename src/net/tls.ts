/**
 * TLS on a shared-memory socket (STARTTLS: tls.connect({ socket }) or
 * new tls.TLSSocket(socket) on an existing connection). node:tls wraps a
 * kernel handle in C++; a shared-memory socket has none, so it is handed to
 * TLS the way any JavaScript stream is: through Node's own stream adapter.
 */
import { Duplex } from 'node:stream';
import { ShmHandle } from './handle';
import { debug } from './debug';

type WrapHandle = (this: unknown, wrap: unknown, handle: unknown, active: boolean) => unknown;
type Any = Record<string | symbol, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const kPatched = Symbol.for('zivm.tls');
/** Set on a kernel handle TLS has wrapped: its connection must stay on it (TCP). */
export const kTlsWrapped = Symbol.for('zivm.tlsWrapped');
let adapter: (new (stream: unknown) => Any) | undefined;

/** Node's JS stream adapter class, found on a TLS socket built around a plain stream. */
function streamAdapter(): new (stream: unknown) => Any {
  if (adapter) return adapter;
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const probe = new (require('node:tls') as typeof import('node:tls')).TLSSocket(new Duplex({ read() {}, write(_c, _e, cb) { cb(); } })) as unknown as Any;
  adapter = probe._handle?._parentWrap?.constructor;
  probe.destroy();
  if (typeof adapter !== 'function') throw new Error('node:tls has no JS stream adapter here');
  return adapter;
}

/**
 * Patches TLSSocket#_wrapHandle. node:tls is loaded here, so the preload hook
 * calls this only after it patched node:net: tls then builds on zivm's classes.
 */
export function patchTls(): void {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const proto = (require('node:tls') as typeof import('node:tls')).TLSSocket.prototype as unknown as Any;
  if (proto[kPatched] || typeof proto._wrapHandle !== 'function') return;
  const original = proto._wrapHandle as WrapHandle;
  proto[kPatched] = true;
  proto._wrapHandle = function (this: unknown, wrap: unknown, handle: unknown, active: boolean) {
    if (handle instanceof ShmHandle) {
      debug('TLS over a shared-memory socket: through the JS stream adapter');
      const Adapter = streamAdapter();
      const w = new Adapter(wrap);
      return original.call(this, w, w._handle, active);
    }
    // A socket still connecting hands TLS its kernel handle: that connection stays on TCP.
    if (handle && typeof handle === 'object') (handle as Any)[kTlsWrapped] = true;
    return original.call(this, wrap, handle, active);
  };
}
