/**
 * Where the domain daemon's socket lives, and the checks on its folder.
 *
 * The socket folder is private to the user: created 0700, and refused when it
 * is not a real directory owned by us or when others may write into it
 * (anyone who can write there could put their own socket in our daemon's place).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const SOCKET_NAME = 'zivm.sock';

function myUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/** The folder that holds the socket when ZIVM_SOCKET is not set. */
export function defaultDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ZIVM_DIR) return path.resolve(env.ZIVM_DIR);
  if (env.XDG_RUNTIME_DIR) return path.join(path.resolve(env.XDG_RUNTIME_DIR), 'zivm');
  return path.join(os.tmpdir(), `zivm-${myUid()}`);
}

/**
 * The daemon's socket path: ZIVM_SOCKET if set; else `zivm.sock` in ZIVM_DIR,
 * in `$XDG_RUNTIME_DIR/zivm`, or in `<tmpdir>/zivm-<uid>`.
 */
export function socketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ZIVM_SOCKET) return path.resolve(env.ZIVM_SOCKET);
  return path.join(defaultDir(env), SOCKET_NAME);
}

/** The lock file that goes with a socket path. */
export function lockPath(sock: string): string {
  return `${sock}.lock`;
}

export class UnsafeDirError extends Error {
  code = 'ERR_ZIVM_UNSAFE_DIR';
  dir: string;
  constructor(dir: string, why: string) {
    super(`zivm: refusing to use socket folder ${dir}: ${why}`);
    this.name = 'Error';
    this.dir = dir;
  }
}

/**
 * Checks an existing folder: a directory (not a symlink), owned by us, with
 * no group or other write bit. Throws ERR_ZIVM_UNSAFE_DIR otherwise; lets
 * lstat errors (ENOENT...) through unchanged.
 */
export function checkDir(dir: string): void {
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new UnsafeDirError(dir, st.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a directory');
  const uid = myUid();
  if (st.uid !== uid) throw new UnsafeDirError(dir, `it is owned by uid ${st.uid}, not ${uid}`);
  if ((st.mode & 0o022) !== 0)
    throw new UnsafeDirError(dir, `it is writable by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`);
}

/**
 * mkdir -p `dir` with mode 0700, then checks it (see checkDir).
 * Returns true when this call created `dir` itself.
 */
export function ensureDir(dir: string): boolean {
  let created = false;
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
    created = true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
      return ensureDir(dir);
    }
    if (code !== 'EEXIST') throw e;
  }
  checkDir(dir);
  return created;
}
