/**
 * What the read and write sides of a shared-memory handle (reader.ts,
 * writer.ts) need of the handle they belong to (handle.ts).
 */
import type { Socket as NetSocket } from 'node:net';
import type { Channel } from '../shm/channel';

/** The net.Socket a handle drives, with the parts of net's internals used. */
export type SocketLike = NetSocket & {
  _handle: unknown;
  _unrefTimer(): void;
  push(chunk: Buffer | null): boolean;
  read(size?: number): unknown;
  destroy(err?: Error): unknown;
  [k: symbol]: unknown;
};

export interface HandleCore {
  readonly ch: Channel;
  /** The socket, once net has taken the handle. */
  readonly socket: SocketLike | undefined;
  /** net asked for reads (readStart) and has not stopped them. */
  reading: boolean;
  /** The handle was closed or reset: nothing more goes through it. */
  readonly closed: boolean;
  bytesRead: number;
  bytesWritten: number;
  writeQueueSize: number;
  /** Fails the socket with a system error, as libuv would (`read ECONNRESET`...). */
  fail(code: string, syscall: string): void;
  /** Fails the socket with the error of memory that makes no sense (ZivmCorruptError). */
  corrupt(err: Error): void;
  /** Keeps the event loop alive while the handle has work (as a libuv handle does). */
  updateActive(): void;
}
