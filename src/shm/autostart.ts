/**
 * Finding the domain daemon, starting one when nobody serves.
 *
 * connectDaemon is synchronous: a process that wants the shared domain gets a
 * connected socket or an error before it returns. When several processes start
 * at once they may each start a daemon; the daemon's lock lets one win, the
 * others exit quietly, and every client ends up in the one domain.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { autostartAllowed, socketPath } from '../config';
import { ZivmNoDaemonError } from '../errors';
import { errCode, sleepSync } from '../sys';
import { native } from './native';
import { checkDir } from './sockdir';

export interface ConnectOptions {
  /** Default: socketPath() (ZIVM_SOCKET, ZIVM_DIR, XDG_RUNTIME_DIR/zivm, tmpdir/zivm-<uid>). */
  socketPath?: string;
  /** Start a daemon when none serves (default true). ZIVM_AUTOSTART=0 in the environment turns it off regardless. */
  autostart?: boolean;
  /** How long to keep trying to connect (default 5000 ms). */
  timeoutMs?: number;
  /** Environment for the daemon, and for the defaults above (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The CLI that runs `zivm server` (dist/src/cli/main.js; this file is dist/src/shm/autostart.js). */
export function cliPath(): string {
  return path.join(__dirname, '..', 'cli', 'main.js');
}

function noDaemon(sock: string, why: string, cause?: unknown): ZivmNoDaemonError {
  return new ZivmNoDaemonError(`zivm: no daemon at ${sock}: ${why}`, cause);
}

/** Starts `zivm server --auto` for `sock`, detached from us. */
export function spawnDaemon(sock: string, env: NodeJS.ProcessEnv = process.env): void {
  // The application's NODE_OPTIONS are not the daemon's business, and a preload hook named
  // by package (--require zivm/register) would not even resolve from the daemon's folder.
  const { NODE_OPTIONS: _nodeOptions, ...daemonEnv } = env;
  const child = spawn(process.execPath, [cliPath(), 'server', '--auto', '--socket', sock], {
    detached: true,
    stdio: 'ignore',
    env: daemonEnv, // carries ZIVM_SIZE, ZIVM_RING, ZIVM_IDLE_MS... through
    cwd: '/',
  });
  child.on('error', () => {
    // Reported as the connect timeout that follows.
  });
  child.unref();
}

/**
 * Connects to the domain daemon and returns the socket fd (non-blocking,
 * close-on-exec). Starts a daemon when none answers (ENOENT/ECONNREFUSED) and
 * autostart is on, then retries every few ms until `timeoutMs`.
 * Throws ERR_ZIVM_NO_DAEMON (with the last error as `cause`) on failure, and
 * ERR_ZIVM_UNSAFE_DIR when the socket folder is not private to us.
 */
export function connectDaemon(opts: ConnectOptions = {}): number {
  const env = opts.env ?? process.env;
  const sock = path.resolve(opts.socketPath ?? socketPath(env));
  const autostart = (opts.autostart ?? true) && autostartAllowed(env);
  const timeoutMs = opts.timeoutMs ?? 5000;
  const addon = native();
  const dir = path.dirname(sock);
  const start = Date.now();
  let spawnedAt = -1;
  let lastErr: unknown;
  let delay = 5;
  for (;;) {
    // Someone able to write into the folder could have put their own socket there.
    try {
      checkDir(dir);
    } catch (err) {
      if (errCode(err) !== 'ENOENT') throw err;
    }
    try {
      return addon.unixConnect(sock);
    } catch (err) {
      lastErr = err;
      const code = errCode(err);
      const retryable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
      if (!retryable) throw noDaemon(sock, (err as Error).message, err);
      if (!autostart) throw noDaemon(sock, `${(err as Error).message} (autostart is off)`, err);
    }
    const now = Date.now();
    if (now - start >= timeoutMs) break;
    // Start one; start another if it has not answered within a second (a daemon that lost a race with
    // one shutting down gives up after a while).
    if (spawnedAt < 0 || now - spawnedAt >= 1000) {
      spawnDaemon(sock, env);
      spawnedAt = now;
      delay = 5;
    }
    sleepSync(Math.min(delay, Math.max(1, timeoutMs - (now - start))));
    delay = Math.min(20, delay + 5);
  }
  throw noDaemon(sock, `no answer within ${timeoutMs} ms (${(lastErr as Error)?.message})`, lastErr);
}
