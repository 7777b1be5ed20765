/**
 * Runs the unmodified-style programs in test/preload/apps/ as child processes,
 * with or without the preload hook, and reads the loopback byte counters.
 */
import { spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

/** test/preload/apps in the source tree (the apps are data files, not compiled). */
export const APPS = path.join(__dirname, '..', '..', '..', 'test', 'preload', 'apps');
/** dist/src/register.js, the compiled hook. */
export const REGISTER = path.join(__dirname, '..', '..', 'src', 'register.js');

export const MiB = 1 << 20;

/**
 * How a program is started:
 *  - 'require': NODE_OPTIONS gains --require <register>
 *  - 'import':  NODE_OPTIONS gains --import <register as file URL>
 *  - 'off':     NODE_OPTIONS gains --require <register>, and ZIVM=off
 *  - 'plain':   no hook at all
 */
export type Mode = 'require' | 'import' | 'off' | 'plain';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface App {
  name: string;
  proc: ChildProcess;
  /** The next JSON line printed on stdout (optionally the next one matching `pred`), within `ms`. */
  next(pred?: (v: Json) => boolean, ms?: number): Promise<Json>;
  /** Every JSON line printed so far. */
  lines: Json[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

const live = new Set<ChildProcess>();

/** NODE_OPTIONS for a mode, appended to whatever NODE_OPTIONS this process has. */
export function nodeOptions(mode: Mode): string | undefined {
  const base = process.env.NODE_OPTIONS ?? '';
  let hook = '';
  if (mode === 'require' || mode === 'off') hook = `--require ${JSON.stringify(REGISTER)}`;
  else if (mode === 'import') hook = `--import ${JSON.stringify(pathToFileURL(REGISTER).href)}`;
  const v = [base, hook].filter((s) => s.trim()).join(' ');
  return v || undefined;
}

export function envFor(mode: Mode, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  const no = nodeOptions(mode);
  if (no === undefined) delete env.NODE_OPTIONS;
  else env.NODE_OPTIONS = no;
  if (mode === 'off') env.ZIVM = 'off';
  else if (extra.ZIVM === undefined) delete env.ZIVM;
  return env;
}

/** Starts test/preload/apps/<file> with `args`; its stdout lines that parse as JSON are collected. */
export function startApp(file: string, args: (string | number)[], mode: Mode, extraEnv: NodeJS.ProcessEnv = {}): App {
  const script = path.join(APPS, file);
  if (!fs.existsSync(script)) throw new Error(`no such app: ${script}`);
  const proc = spawn(process.execPath, [script, ...args.map(String)], {
    env: envFor(mode, extraEnv),
    cwd: APPS,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  const name = `${file} (${mode})`;
  // Signals sent on purpose (by the test or killAll); any other signal death is a crash.
  const sent = new Set<string>();
  const kill = proc.kill.bind(proc);
  proc.kill = (sig?: NodeJS.Signals | number): boolean => {
    sent.add(String(sig ?? 'SIGTERM'));
    return kill(sig);
  };
  proc.on('exit', (_code, signal) => {
    if (signal && !sent.has(signal)) crashes.push(`${name} died of ${signal}; stderr:\n${err.slice(-2000)}`);
  });
  const lines: Json[] = [];
  let cursor = 0;
  const wake = new Set<() => void>();
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (err.length > 200000) err = err.slice(-100000);
  });
  readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
    let v: Json;
    try {
      v = JSON.parse(line);
    } catch {
      return;
    }
    if (v === null || typeof v !== 'object') return;
    lines.push(v);
    for (const w of [...wake]) w();
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      // Let the last stdout lines through before declaring the end.
      setImmediate(() => {
        done = true;
        for (const w of [...wake]) w();
        resolve({ code, signal });
      });
    });
  });
  function next(pred: (v: Json) => boolean = () => true, ms = 30000): Promise<Json> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        while (cursor < lines.length) {
          const v = lines[cursor++];
          if (pred(v)) {
            finish();
            resolve(v);
            return true;
          }
        }
        if (done) {
          finish();
          reject(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) without the expected line; stderr:\n${err.slice(-4000)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${name}: no expected line within ${ms} ms; lines so far: ${JSON.stringify(lines).slice(-2000)}; stderr:\n${err.slice(-4000)}`));
      }, ms);
      const finish = (): void => {
        clearTimeout(timer);
        wake.delete(onLine);
      };
      const onLine = (): void => void check();
      if (!check()) wake.add(onLine);
    });
  }
  return { name, proc, next, lines, exited, stderr: () => err };
}

/** A line with `event` equal to `ev` (an 'error' event from the app fails the wait at once). */
export async function event(app: App, ev: string, ms = 30000): Promise<Json> {
  const v = await app.next((l) => l.event === ev || l.event === 'error', ms);
  if (v.event === 'error' && ev !== 'error') throw new Error(`${app.name} reported an error: ${JSON.stringify(v)}\nstderr:\n${app.stderr().slice(-4000)}`);
  return v;
}

/**
 * Waits until the program has printed at least `n` lines with `event` equal to
 * `ev` (lines from another process of its own, a cluster worker say, can come
 * after the line that says the work is done), and returns them. Does not move
 * the cursor of next() and event().
 */
export async function linesOf(app: App, ev: string, n: number, ms = 15000): Promise<Json[]> {
  const t0 = Date.now();
  for (;;) {
    const got = app.lines.filter((l) => l.event === ev);
    if (got.length >= n) return got;
    if (Date.now() - t0 > ms || app.proc.exitCode !== null || app.proc.signalCode !== null) {
      throw new Error(`${app.name}: ${got.length} of ${n} '${ev}' lines within ${ms} ms; stderr:\n${app.stderr().slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for the program to exit; a clean exit is code 0. */
export async function exitOf(app: App, ms = 20000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${app.name} did not exit within ${ms} ms; stderr:\n${app.stderr().slice(-4000)}`)), ms);
  });
  try {
    return await Promise.race([app.exited, timeout]);
  } finally {
    clearTimeout(t);
  }
}

/** Programs that died of a signal nobody sent them (a crash), across the whole preload suite. */
export const crashes: string[] = [];

/** Judges a finished program by its exit (done already checked by the caller): code 0, or an error. */
export async function settle(app: App, ms = 20000): Promise<void> {
  const { code, signal } = await exitOf(app, ms);
  if (code === 0) return;
  throw new Error(`${app.name} exited ${code ?? signal}; stderr:\n${app.stderr().slice(-4000)}`);
}

/** Kills every app still running (after hooks). */
export async function killAll(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const p of live) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    waits.push(new Promise((r) => p.once('exit', r)));
    p.kill('SIGKILL');
  }
  await Promise.all(waits);
}

/** Bytes received plus sent on the loopback interface so far (/proc/net/dev, line lo:). */
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

/**
 * Runs a scenario whose loopback delta must stay under `limit` (bytes). The
 * loopback counters are machine-wide: another program's traffic during the
 * data phase (a concurrent test run, say) can push them over. So a run over
 * the limit is repeated, up to `tries` runs in all, and the smallest delta is
 * kept. A connection that really went over TCP is over the limit every time.
 */
export async function quietest<T extends { lo: number }>(run: () => Promise<T>, limit: (r: T) => number, tries = 3): Promise<T & { runs: number[] }> {
  const runs: number[] = [];
  let best: T | undefined;
  for (let i = 0; i < tries; i++) {
    const r = await run();
    runs.push(r.lo);
    if (!best || r.lo < best.lo) best = r;
    if (r.lo < limit(r)) break;
    console.log(`        (loopback +${r.lo} bytes with the hook on run ${i + 1}: over ${limit(r)}, running again)`);
    await killAll();
  }
  return { ...best!, runs };
}

/** The scenario's one closing line: "<scenario>: lo +X bytes with the hook, +Y without". */
export function report(scenario: string, withHook: number, without: number): void {
  console.log(`      ${scenario}: lo +${withHook} bytes with the hook, +${without} without`);
}

// A crash of any program fails the run, whatever its test asserted.
if (typeof after === 'function') {
  after(function () {
    if (crashes.length) throw new Error(`programs crashed during the preload tests:\n${crashes.join('\n')}`);
  });
}
