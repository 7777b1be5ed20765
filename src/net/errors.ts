/** Errors shaped exactly as node:net's. */
import os from 'node:os';

export interface ErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
  address?: string;
  port?: number;
}

/** `${syscall} ${code}` with a negative errno, as Node builds them from libuv. */
export function errnoException(code: string, syscall: string): ErrnoError {
  const n = (os.constants.errno as Record<string, number>)[code] ?? 0;
  const e = new Error(`${syscall} ${code}`) as ErrnoError;
  e.errno = -n;
  e.code = code;
  e.syscall = syscall;
  return e;
}
