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

/** Modules of this process that patchTlsIfLoaded() last looked at (their count: the list only grows). */
let modulesSeen = -1;
let patched = false;

/**
 * Patches TLSSocket if node:tls is loaded already, and says whether it is
 * patched. node:tls is not loaded for it (1.5 ms on Node 20, 4 ms on Node 24,
 * on a process's first connection): until something loads it no TLS socket
 * can exist, and a connection that may have been wrapped by one since its
 * connect() began stays on TCP (see dial.ts). Where Node does not list the
 * modules it loaded, or a shared-memory handle is no native stream (TLS then
 * needs the patch to take it at all), node:tls is loaded and patched now.
 */
export function patchTlsIfLoaded(): boolean {
  if (patched) return true;
  const list = (process as unknown as { moduleLoadList?: unknown }).moduleLoadList;
  if (!Array.isArray(list) || !nativeStreams) {
    patchTls();
    return true;
  }
  if (list.length === modulesSeen) return false;
  modulesSeen = list.length;
  if (!list.includes('NativeModule tls')) return false;
  patchTls();
  return true;
}

/**
 * Patches TLSSocket#_wrapHandle. node:tls is loaded here, so the preload hook
 * calls this only after it patched node:net: tls then builds on zivm's classes.
 */
export function patchTls(): void {
  patched = true;
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
