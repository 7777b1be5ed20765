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
import { native } from './native';
import { checkDir, socketPath } from './paths';

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

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * Parses a byte count: "4096", "512K", "256M", "1G", "1.5G" (K/M/G/T are powers
 * of 1024; a trailing "B" or "iB" is allowed). Throws RangeError otherwise.
 */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new RangeError(`invalid size: ${text}`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`invalid size: ${JSON.stringify(text)} (try 512K, 256M, 1G)`);
  const bytes = Number(m[1]) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`invalid size: ${JSON.stringify(text)} (not a whole number of bytes)`);
  return bytes;
}

/** The CLI that runs `zivm server` (dist/src/cli.js next to dist/src/shm/). */
export function cliPath(): string {
  return path.join(__dirname, '..', 'cli.js');
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function noDaemon(sock: string, why: string, cause?: unknown): Error {
  const err = new Error(`zivm: no daemon at ${sock}: ${why}`, cause === undefined ? undefined : { cause }) as Error & { code: string };
  err.code = 'ERR_ZIVM_NO_DAEMON';
  return err;
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
    /* reported as a connect timeout */
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
  const autostart = (opts.autostart ?? true) && env.ZIVM_AUTOSTART !== '0';
  const timeoutMs = opts.timeoutMs ?? 5000;
  const n = native();
  const dir = path.dirname(sock);
  const start = Date.now();
  let spawnedAt = -1;
  let lastErr: unknown;
  let delay = 5;
  for (;;) {
    // Someone able to write into the folder could have put their own socket there.
    try {
      checkDir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    try {
      return n.unixConnect(sock);
    } catch (e) {
      lastErr = e;
      const code = (e as NodeJS.ErrnoException).code;
      const retryable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
      if (!retryable) throw noDaemon(sock, (e as Error).message, e);
      if (!autostart) throw noDaemon(sock, `${(e as Error).message} (autostart is off)`, e);
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
