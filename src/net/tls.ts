/**
 * TLS on a shared-memory socket (STARTTLS: tls.connect({ socket }) or
 * new tls.TLSSocket(socket) on an existing connection). A shared-memory
 * handle is a native stream where Node has JSStream (see streambase.ts): TLS
 * wraps it in C++ as it wraps a kernel handle. Elsewhere it is handed to TLS
 * the way any JavaScript stream is: through Node's own stream adapter.
 */
import { ShmHandle, nativeStreams } from './handle';
import { debug } from '../log';
import { kTlsPatched, kTlsWrapped } from '../symbols';
import { streamAdapter } from './streambase';

type WrapHandle = (this: unknown, wrap: unknown, handle: unknown, active: boolean) => unknown;

/** TLSSocket.prototype: its internal _wrapHandle, and our mark. */
interface TlsSocketProto {
  _wrapHandle?: unknown;
  [kTlsPatched]?: boolean;
}

/**
 * Patches TLSSocket#_wrapHandle. node:tls is loaded here, so the preload hook
 * calls this only after it patched node:net: tls then builds on zivm's classes.
 */
export function patchTls(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded here, not with this module: the preload hook replaces node:net's classes first, and node:tls builds on them as they are when it loads
  const proto = (require('node:tls') as typeof import('node:tls')).TLSSocket.prototype as unknown as TlsSocketProto;
  if (proto[kTlsPatched] || typeof proto._wrapHandle !== 'function') return;
  const original = proto._wrapHandle as WrapHandle;
  proto[kTlsPatched] = true;
  proto._wrapHandle = function (this: unknown, wrap: unknown, handle: unknown, active: boolean) {
    if (handle instanceof ShmHandle && !nativeStreams) {
      debug('TLS over a shared-memory socket: through the JS stream adapter');
      const Adapter = streamAdapter();
      const adapter = new Adapter(wrap);
      // node:tls listens for errors on the socket it was given (wrap); the adapter re-emits them: not without a listener.
      adapter.on('error', () => undefined);
      return original.call(this, adapter, adapter._handle, active);
    }
    // A socket still connecting hands TLS its kernel handle: that connection stays on TCP.
    if (handle && typeof handle === 'object') (handle as Record<symbol, unknown>)[kTlsWrapped] = true;
    return original.call(this, wrap, handle, active);
  };
}
