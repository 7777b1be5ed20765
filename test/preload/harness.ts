/**
 * Runs the unmodified-style programs in test/preload/apps/ as child processes,
 * with or without the preload hook, and judges their loopback traffic and
 * their ends (a crash of any of them fails the run).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Json, Proc, killAll, spawnNode } from '../../tools/kit/proc';

/** test/preload/apps in the source tree (the apps are data files, not compiled). */
export const APPS = path.join(__dirname, '..', '..', '..', 'test', 'preload', 'apps');
/** The package's preload hook as users get it (zivm/register: the bundled zivm, see tools/bundle.ts). */
export const REGISTER = path.join(__dirname, '..', '..', 'src', 'bundle', 'register.js');

export const MiB = 1 << 20;

/**
 * How a program is started:
 *  - 'require': NODE_OPTIONS gains --require <register>
 *  - 'import':  NODE_OPTIONS gains --import <register as file URL>
 *  - 'off':     NODE_OPTIONS gains --require <register>, and ZIVM=off
 *  - 'plain':   no hook at all
 */
export type Mode = 'require' | 'import' | 'off' | 'plain';

/** A program started by startApp(): JSON lines in `lines`, next(), event(), exit(). */
export type App = Proc;

/** NODE_OPTIONS for a mode, appended to whatever NODE_OPTIONS this process has. */
export function nodeOptions(mode: Mode): string | undefined {
  const base = process.env.NODE_OPTIONS ?? '';
  let hook = '';
  if (mode === 'require' || mode === 'off') hook = `--require ${JSON.stringify(REGISTER)}`;
  else if (mode === 'import') hook = `--import ${JSON.stringify(pathToFileURL(REGISTER).href)}`;
  const value = [base, hook].filter((str) => str.trim()).join(' ');
  return value || undefined;
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

/** Programs that died of a signal nobody sent them (a crash), across the whole preload suite. */
export const crashes: string[] = [];

/** Starts test/preload/apps/<file> with `args`; its stdout lines that parse as JSON are collected. A death by a signal nobody sent counts in `crashes`. */
export function startApp(file: string, args: (string | number)[], mode: Mode, extraEnv: NodeJS.ProcessEnv = {}): App {
  const script = path.join(APPS, file);
  if (!fs.existsSync(script)) throw new Error(`no such app: ${script}`);
  return spawnNode(script, args, { name: `${file} (${mode})`, env: envFor(mode, extraEnv), cwd: APPS, stdin: false, crashes });
}

/** Judges a finished program by its exit (done already checked by the caller): code 0, or an error. */
export async function settle(app: App, ms = 20000): Promise<void> {
  const { code, signal } = await app.exit(ms);
  if (code === 0) return;
  throw new Error(`${app.name} exited ${code ?? signal}; stderr:\n${app.stderr().slice(-4000)}`);
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
    const res = await run();
    runs.push(res.lo);
    if (!best || res.lo < best.lo) best = res;
    if (res.lo < limit(res)) break;
    console.log(`        (loopback +${res.lo} bytes with the hook on run ${i + 1}: over ${limit(res)}, running again)`);
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

export { killAll } from '../../tools/kit/proc';
export { loBytes } from '../../tools/kit/lo';

/** The next line of `app` with this `event` (an 'error' event fails the wait at once). */
export function event(app: App, ev: string, ms = 30000): Promise<Json> {
  return app.event(ev, ms);
}

/**
 * Waits until `app` has printed at least `n` lines with `event` equal to `ev`
 * (lines from another process of its own, a cluster worker say, can come
 * after the line that says the work is done), and returns them. Does not move
 * the cursor of next() and event().
 */
export async function linesOf(app: App, ev: string, count: number, ms = 15000): Promise<Json[]> {
  const matches = (): Json[] => app.lines.filter((list) => list.event === ev);
  await app.find(() => matches().length >= count, ms);
  const got = matches();
  if (got.length < count) throw new Error(`${app.name}: ${got.length} of ${count} '${ev}' lines within ${ms} ms; stderr:\n${app.stderr().slice(-4000)}`);
  return got;
}
