/**
 * Module-private parts of node:net that a handle of our own must cooperate
 * with. They are found once, by description, on a socket built around a probe
 * handle, the first time they are needed. If Node changed them, `available`
 * is false and zivm uses TCP only.
 * Also the shapes of net's own objects that zivm handles (kernel handles,
 * connect and shutdown requests), which @types/node does not describe.
 */
import net from 'node:net';
import { debug } from '../log';

export interface Internals {
  available: boolean;
  /** handle[owner] is the socket or server that owns a handle. */
  owner: symbol;
  /** socket[kBuffer] is set when the socket reads into a user buffer (the onread option). */
  kBuffer: symbol;
  /** socket[kLastWriteQueueSize]: the write queue size the timeout logic compares with. */
  kLastWriteQueueSize: symbol;
  /** socket[kHandle]: where net keeps the handle (what its `_handle` accessor reads), or '_handle' when not found. */
  kHandle: symbol | '_handle';
  /** net's read callback (onStreamRead), which net puts on every handle it owns: anything else there took over reads. */
  onStreamRead: unknown;
}

/** net's shutdown request for a handle (a ShutdownWrap). */
export interface ShutdownReq {
  oncomplete?: (this: unknown, status: number) => void;
}

/** net's connect request for a kernel handle (a TCPConnectWrap). */
export interface ConnectReq {
  oncomplete: (status: number, handle: unknown, req: unknown, readable: boolean, writable: boolean) => void;
  address: string;
  port: number;
  localAddress?: string;
  localPort?: number;
}

/** A kernel handle (libuv TCP) as net holds it: what zivm calls on it or marks on it. */
export interface TcpLike {
  close(cb?: () => void): void;
  ref(): void;
  unref(): void;
  hasRef?(): boolean;
  getsockname?(out: { port?: number; address?: string; family?: string }): number;
  onread?: unknown;
  /** node:http marks the handle its HTTP parser takes. */
  _consumed?: boolean;
  [k: symbol]: unknown;
}

function find(target: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(target).find((sym) => sym.description === description);
}

function probe(): Internals {
  const none: Internals = {
    available: false,
    owner: Symbol('none'),
    kBuffer: Symbol('none'),
    kLastWriteQueueSize: Symbol('none'),
    kHandle: '_handle',
    onStreamRead: undefined,
  };
  try {
    const handle = {
      reading: false,
      bytesRead: 0,
      bytesWritten: 0,
      readStart: () => 0,
      readStop: () => 0,
      close: (cb?: () => void) => cb && setImmediate(cb),
    };
    const sock = new net.Socket({ handle, manualStart: true } as net.SocketConstructorOpts);
    const owner = find(handle, 'owner_symbol');
    const kBuffer = find(sock, 'kBuffer');
    const kLastWriteQueueSize = find(sock, 'lastWriteQueueSize');
    const onStreamRead = (handle as { onread?: unknown }).onread;
    const found = find(sock, 'kHandle');
    const kHandle = found && (sock as unknown as { [k: symbol]: unknown })[found] === handle ? found : '_handle';
    sock.destroy();
    if (!owner || !kBuffer || !kLastWriteQueueSize || (handle as { [k: symbol]: unknown })[owner] !== sock || typeof net._normalizeArgs !== 'function') {
      debug('this Node.js has changed node:net internals: shared memory disabled');
      return none;
    }
    return { available: true, owner, kBuffer, kLastWriteQueueSize, kHandle, onStreamRead };
  } catch (err) {
    debug('probing node:net failed (%s): shared memory disabled', (err as Error).message);
    return none;
  }
}

let probed: Internals | undefined;

/** node:net's internals, probed on first use (the probe builds a socket: a process that never makes one does not pay for it). */
export function netInternals(): Internals {
  return (probed ??= probe());
}

declare module 'node:net' {
  // Exported by node:net, not typed by @types/node.
  function _normalizeArgs(args: unknown[]): [Record<string, unknown>, ((...rest: unknown[]) => void) | null];
}
