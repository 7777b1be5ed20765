/** Small helpers around the operating system, for the client side and the daemon alike. */
import fs from 'node:fs';

export function myUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/** Blocks the thread for `ms` (start-up paths only: joining, taking a lock). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The `code` of an error from Node or the addon (ENOENT, EAGAIN...), if any. */
export function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Unlinks `file`; a file that is already gone is fine. */
export function unlinkQuiet(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // Gone already, or never made: nothing to undo.
  }
}

/** Removes folder `dir` if it is empty; one that is not empty (or gone) stays as it is. */
export function rmdirQuiet(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // Someone else's files are in it, or it is gone: leave it.
  }
}
