/**
 * The daemon's hold on its socket path: `<socket>.lock` (flock), taken before
 * anything else, so two daemons started at once for one path make one; and
 * the listening socket, made private to this user from the start.
 */
import fs from 'node:fs';
import path from 'node:path';
import { lockPath } from '../config';
import { debug } from '../log';
import { ensureDir } from '../shm/sockdir';
import { closeQuiet, Native } from '../shm/native';
import { errCode, rmdirQuiet, sleepSync, unlinkQuiet } from '../sys';

/** How long an auto-started daemon waits for a lock held by a daemon that is starting or stopping. */
const AUTO_LOCK_WAIT_MS = 3000;

export class DaemonLock {
  readonly socketPath: string;
  readonly lockPath: string;
  /** This daemon made the socket's folder (and removes it when it leaves, if empty). */
  createdDir = false;
  private fd = -1;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
    this.lockPath = lockPath(socketPath);
  }

  /**
   * Takes the lock. False when a live daemon holds it. An explicit server gives
   * up at once; an auto-started one (`auto`) was started because its client
   * could not connect: the holder may be starting (no socket yet) or leaving
   * (socket already gone), so it waits a little for it to serve or to go.
   */
  take(addon: Native, auto: boolean): boolean {
    const dir = path.dirname(this.socketPath);
    const deadline = Date.now() + AUTO_LOCK_WAIT_MS;
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
    for (;;) {
      if (ensureDir(dir)) this.createdDir = true;
      let fd: number;
      try {
        fd = fs.openSync(this.lockPath, flags, 0o600);
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue; // the folder went away under us (a daemon leaving): again
        throw err;
      }
      let kept = false;
      try {
        if (addon.tryLock(fd)) {
          // A daemon that is leaving unlinks the lock while holding it: ours must still be the one at the path.
          if (sameFile(fd, this.lockPath)) {
            this.fd = fd;
            kept = true;
            return true;
          }
          continue;
        }
        if (!auto || socketServed(this.socketPath) || Date.now() >= deadline) {
          if (this.createdDir) rmdirQuiet(dir); // the holder's lock file is in it unless it is leaving
          return false;
        }
        sleepSync(10);
      } finally {
        if (!kept) fs.closeSync(fd);
      }
    }
  }

  /** Lets go: the lock file is unlinked first (still held: nobody can be using this inode), the folder removed if we made it and it is empty. */
  release(): void {
    if (this.fd < 0) return;
    unlinkQuiet(this.lockPath);
    try {
      fs.closeSync(this.fd);
    } catch {
      // Closed already: the lock is gone either way.
    }
    this.fd = -1;
  }

  /** Removes the socket's folder if this daemon made it and it is empty. */
  removeDir(): void {
    if (this.createdDir) rmdirQuiet(path.dirname(this.socketPath));
  }
}

function sameFile(fd: number, file: string): boolean {
  const held = fs.fstatSync(fd);
  let atPath: fs.Stats;
  try {
    atPath = fs.statSync(file);
  } catch {
    // Nothing at the path any more: the file we hold is not the one there.
    return false;
  }
  return held.ino === atPath.ino && held.dev === atPath.dev;
}

/** Whether a socket sits at `file` (its daemon holds the lock: it serves or is about to). */
function socketServed(file: string): boolean {
  try {
    return fs.lstatSync(file).isSocket();
  } catch {
    // Nothing at the path: no socket is served there.
    return false;
  }
}

/**
 * Listens on `socketPath`, created owner-only (mode 0600: umask 177 while it
 * is made, so it is never reachable by others, not even for a moment). A socket file left
 * there by a daemon that died is replaced (we hold the lock); anything else
 * there is an error (EEXIST).
 */
export function listenOn(addon: Native, socketPath: string, backlog = 128): number {
  let existing: fs.Stats | undefined;
  try {
    existing = fs.lstatSync(socketPath);
  } catch (err) {
    if (errCode(err) !== 'ENOENT') throw err;
  }
  if (existing && !existing.isSocket()) throw Object.assign(new Error(`zivm: ${socketPath} exists and is not a socket`), { code: 'EEXIST' });
  if (existing) fs.unlinkSync(socketPath);
  const oldMask = process.umask(0o177);
  try {
    return addon.unixListen(socketPath, backlog);
  } finally {
    process.umask(oldMask);
  }
}

/**
 * Closes listening socket `fd` after turning away whoever is still in its
 * backlog (the socket file is gone already: nobody new can come). Returns how
 * many were turned away.
 */
export function turnAway(addon: Native, fd: number): number {
  const late = acceptEach(addon, fd, Infinity, closeQuiet);
  closeQuiet(fd);
  return late;
}

/** Accepts up to `max` connections waiting on listening socket `fd`, each handed to `onFd`; returns how many. */
export function acceptEach(addon: Native, fd: number, max: number, onFd: (fd: number) => void): number {
  let count = 0;
  while (count < max) {
    let conn: number;
    try {
      conn = addon.unixAccept(fd);
    } catch (err) {
      debug('accept failed: %s', (err as Error).message);
      break;
    }
    if (conn < 0) break;
    count++;
    onFd(conn);
  }
  return count;
}
