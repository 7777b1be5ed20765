/**
 * Sending a socket to another process (child.send(msg, socket),
 * process.send(msg, socket)) passes its kernel handle; a connection over
 * shared memory has none. Such a send fails at once, as Node fails a handle
 * it cannot send (ERR_INVALID_HANDLE_TYPE), instead of reaching the IPC code
 * with a handle it would misread. Servers meant to hand their connections
 * over listen with pauseOnConnect, and zivm keeps those on TCP (server.ts).
 */
import { ChildProcess } from 'node:child_process';
import { isShmHandle } from './socket';

const kWrapped = Symbol.for('zivm.ipcSend');

type Send = (this: unknown, message: unknown, handle?: unknown, ...rest: unknown[]) => boolean;

function sendable(sent: unknown): void {
  const handle = (sent as { _handle?: unknown } | null | undefined)?._handle;
  if (isShmHandle(handle)) {
    const err = new TypeError(
      'This handle type cannot be sent: the connection is over zivm shared memory (listen with pauseOnConnect, or set ZIVM=off, to keep connections that are handed to other processes on TCP)',
    ) as TypeError & { code: string };
    err.code = 'ERR_INVALID_HANDLE_TYPE';
    throw err;
  }
}

function wrap(send: Send): Send {
  if ((send as unknown as Record<symbol, unknown>)[kWrapped]) return send;
  const wrapped = function (this: unknown, message: unknown, handle?: unknown, ...rest: unknown[]): boolean {
    sendable(handle);
    return send.call(this, message, handle, ...rest);
  } as Send;
  (wrapped as unknown as Record<symbol, unknown>)[kWrapped] = true;
  return wrapped;
}

/** Every IPC channel of this process checks the handles it is given: this process's own, and each child's as it is set up. */
export function guardIpcSend(): void {
  const proto = ChildProcess.prototype as unknown as Record<string | symbol, unknown>;
  if (!proto[kWrapped]) {
    proto[kWrapped] = true;
    // node:child_process sets `send` on each child when its channel is made: take it through here.
    Object.defineProperty(proto, 'send', {
      configurable: true,
      get(this: Record<string, unknown>) {
        return this._zivmSend;
      },
      set(this: Record<string, unknown>, fn: Send) {
        Object.defineProperty(this, '_zivmSend', { value: wrap(fn), writable: true, configurable: true, enumerable: false });
      },
    });
  }
  // eslint-disable-next-line @typescript-eslint/unbound-method -- taken off `process` on purpose: the wrapper calls it with the `this` it is called with (process)
  if (typeof process.send === 'function') process.send = wrap(process.send as unknown as Send);
}
