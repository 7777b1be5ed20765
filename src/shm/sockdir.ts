/**
 * The checks on the daemon socket's folder. It is private to the user:
 * created 0700, and refused when it is not a real directory owned by us (or
 * by root: a system daemon that admits us with --allow-uid) or when others may
 * write into it (anyone who can write there could put their own socket in our
 * daemon's place). Where the folder is: config.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZivmUnsafeDirError } from '../errors';
import { errCode, myUid } from '../sys';

/**
 * Checks an existing folder: a directory (not a symlink), owned by us or by
 * root, with no group or other write bit. Throws ZivmUnsafeDirError otherwise; lets
 * lstat errors (ENOENT...) through unchanged.
 */
export function checkDir(dir: string): void {
  const stats = fs.lstatSync(dir);
  if (!stats.isDirectory()) throw new ZivmUnsafeDirError(dir, stats.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a directory');
  const uid = myUid();
  if (stats.uid !== uid && stats.uid !== 0) throw new ZivmUnsafeDirError(dir, `it is owned by uid ${stats.uid}, not ${uid}`);
  if ((stats.mode & 0o022) !== 0)
    throw new ZivmUnsafeDirError(dir, `it is writable by group or others (mode ${(stats.mode & 0o7777).toString(8).padStart(4, '0')})`);
}

/**
 * mkdir -p `dir` with mode 0700 (under umask 077), then checks it (see
 * checkDir). Returns true when this call created `dir` itself.
 */
export function ensureDir(dir: string): boolean {
  let created = false;
  const oldMask = process.umask(0o077);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
    created = true;
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT') {
      fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
      process.umask(oldMask);
      return ensureDir(dir);
    }
    if (code !== 'EEXIST') throw err;
  } finally {
    process.umask(oldMask);
  }
  checkDir(dir);
  return created;
}
