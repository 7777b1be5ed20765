/** Child processes for tests: every transport test has its server and client in separate processes. */
import { spawn, ChildProcess } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import readline from 'node:readline';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

export interface Peer {
  proc: ChildProcess;
  /** Resolves with each JSON line the child prints, in order. */
  next(): Promise<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

const live = new Set<ChildProcess>();

/** Runs test/fixtures/<name>.js with args; its stdout must be JSON lines. */
export function spawnPeer(name: string, args: string[], env: NodeJS.ProcessEnv = {}): Peer {
  const proc = spawn(process.execPath, [path.join(FIXTURES, `${name}.js`), ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(proc);
  const queue: Record<string, unknown>[] = [];
  const waiters: ((v: Record<string, unknown>) => void)[] = [];
  const failers: ((e: Error) => void)[] = [];
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
    let v: Record<string, unknown>;
    try {
      v = JSON.parse(line);
    } catch {
      return;
    }
    const w = waiters.shift();
    failers.shift();
    if (w) w(v);
    else queue.push(v);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      for (const f of failers.splice(0)) f(new Error(`${name} exited (${code ?? signal}) before answering: ${err}`));
      waiters.length = 0;
      resolve({ code, signal });
    });
  });
  return {
    proc,
    exited,
    stderr: () => err,
    next() {
      const v = queue.shift();
      if (v) return Promise.resolve(v);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`${name} has exited: ${err}`));
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        failers.push(reject);
      });
    },
  };
}

/** Kills every child still running (for after hooks). */
export async function killAll(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const p of live) {
    waits.push(new Promise((r) => p.once('exit', r)));
    p.kill('SIGKILL');
  }
  await Promise.all(waits);
}

/** Bytes received and sent on the loopback interface so far (/proc/net/dev). */
export function loBytes(): number {
  const text = fs.readFileSync('/proc/net/dev', 'utf8');
  for (const line of text.split('\n')) {
    const m = /^\s*lo:\s*(.*)$/.exec(line);
    if (m) {
      const f = m[1].trim().split(/\s+/).map(Number);
      return f[0] + f[8];
    }
  }
  throw new Error('no lo interface in /proc/net/dev');
}

/** Polls `cond` until true or the deadline; resolves with whether it became true. */
export async function waitFor(cond: () => boolean, ms: number, step = 20): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, step));
  }
  return cond();
}
