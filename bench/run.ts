/**
 * The benchmark driver: `npm run bench` (node dist/bench/run.js) or `zivm bench`.
 *
 * Every case compares four transports side by side: zivm over shared memory,
 * zivm's TCP fallback, node:net over TCP loopback and node:net over a Unix
 * socket. Each trial runs in a fresh server process and a fresh client process;
 * the transports take turns within each round of trials. A trial's sockets must
 * report the transport it is for, or the trial is an error, not a data point.
 *
 * Prints a progress line per case on stderr, then the table on stdout, and
 * writes <out>/bench-<date>.json and .svg.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer as startDaemon, ServerProc } from '../tools/kit/daemon';
import { killAll } from '../tools/kit/proc';
import { EXPECTED, RunSettings, Scenario, TRANSPORTS, TRANSPORT_LABELS, TransportKey, TrialOutcome, summarize } from './common';
import { UsageError, fmt, listOption, parseSize, positive, readOptions, stringOption } from './format';
import { CaseResult, Machine, MetricResult, Results, TrialRecord, notes, ratios, svg, table } from './report';
import { scenario as pingPong } from './ping-pong';
import { scenario as pump } from './pump';
import { scenario as connect } from './connect';
import { scenario as many, scaleScenario as scale } from './many';
import { expressScenario, haveExpress, scenario as httpCase } from './http';
import { scenario as idle } from './idle';
import { scenario as tlsCase } from './tls';
import { scenario as h2Case } from './h2';
import { scenario as pods } from './pods';

export const SCENARIOS: Scenario[] = [pingPong, pump, connect, many, scale, httpCase, expressScenario, tlsCase, h2Case, idle, pods];

const ROOT = path.join(__dirname, '..', '..');
/** bench/results in a checkout (git-ignored), else zivm-bench-results in the current folder. */
export const DEFAULT_OUT = fs.existsSync(path.join(ROOT, '.git')) ? path.join(ROOT, 'bench', 'results') : path.resolve('zivm-bench-results');

export const USAGE = `usage: zivm bench [options]     (or: npm run bench -- [options])

Compares zivm over shared memory, zivm's TCP fallback, node:net over TCP
loopback and node:net over a Unix socket, each trial in a fresh pair of
server and client processes. Table on stdout, progress on stderr, results
as JSON and an SVG chart in --out.

cases: ${SCENARIOS.map((subject) => subject.name).join(', ')}

options:
  --cases LIST       cases to run, comma-separated (default: all)
  --transports LIST  subset of ${TRANSPORTS.join(',')} (default: all)
  --trials N         trials per case and transport (default 5, 3 with --quick)
  --duration SECS    measuring time of pump (per size), connect, many, http and express
                     (default 0.4, 0.2 with --quick; http and express run whole seconds)
  --sizes LIST       pump write sizes, e.g. 64,1K,64K,1M (the default)
  --rounds N         ping-pong round trips timed (default 20000, 2000 with --quick)
  --idle SECS        idle window (default 5, 1 with --quick)
  --scale N          connections of the scale case (default 10000, 1000 with --quick)
  --quick            short everything, for a smoke run
  --out DIR          where to write bench-<date>.json/.svg (default bench/results
                     in a checkout, else ./zivm-bench-results)
  --no-write         print the table only
  --one-daemon       one zivm daemon for the whole run (default: a fresh one
                     for every trial with a zivm side)
  --help             this text
`;

interface Options {
  settings: Omit<RunSettings, 'tmp' | 'zivmSocket' | 'daemonPid'>;
  cases: Scenario[];
  transports: TransportKey[];
  out: string;
  write: boolean;
  oneDaemon: boolean;
  /** Why a case of the default list was left out. */
  leftOut?: string;
}

/** The http case drives node:http with autocannon, a development dependency: an installed zivm may not have it. */
function haveAutocannon(): boolean {
  try {
    require.resolve('autocannon');
    return true;
  } catch {
    return false;
  }
}

export function parseArgs(argv: string[]): Options | 'help' {
  const out = readOptions(argv, {
    cases: { type: 'string' },
    transports: { type: 'string' },
    trials: { type: 'string' },
    duration: { type: 'string' },
    sizes: { type: 'string' },
    rounds: { type: 'string' },
    idle: { type: 'string' },
    scale: { type: 'string' },
    out: { type: 'string' },
    quick: { type: 'boolean' },
    'no-write': { type: 'boolean' },
    'one-daemon': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (out.help) return 'help';
  const quick = out.quick === true;
  const str = (k: string): string | undefined => stringOption(out[k]);
  const list = (k: string): string[] | undefined => listOption(out[k]);

  let caseNames = list('cases') ?? SCENARIOS.map((subject) => subject.name);
  let leftOut: string | undefined;
  if (caseNames.includes('http') && !haveAutocannon()) {
    const why = 'the http case needs autocannon (npm install autocannon)';
    if (list('cases')) throw new UsageError(why);
    caseNames = caseNames.filter((name) => name !== 'http');
    leftOut = `${why}: left out`;
  }
  if (caseNames.includes('express') && !(haveAutocannon() && haveExpress())) {
    const why = 'the express case needs autocannon and express (npm install autocannon express)';
    if (list('cases')) throw new UsageError(why);
    caseNames = caseNames.filter((name) => name !== 'express');
    leftOut = [leftOut, `${why}: left out`].filter(Boolean).join('; ');
  }
  if (caseNames.includes('pods') && process.getuid?.() !== 0) {
    const why = 'the pods case makes network namespaces: it runs as root only';
    if (list('cases')) throw new UsageError(why);
    caseNames = caseNames.filter((name) => name !== 'pods');
    leftOut = [leftOut, `${why}: left out`].filter(Boolean).join('; ');
  }
  const cases = caseNames.map((name) => {
    const subject = SCENARIOS.find((elem) => elem.name === name);
    if (!subject) throw new UsageError(`unknown case ${name} (cases: ${SCENARIOS.map((elem) => elem.name).join(', ')})`);
    return subject;
  });
  if (!cases.length) throw new UsageError('--cases is empty');
  const tnames = list('transports') ?? [...TRANSPORTS];
  const transports = tnames.map((name) => {
    if (!(TRANSPORTS as readonly string[]).includes(name)) throw new UsageError(`unknown transport ${name} (${TRANSPORTS.join(', ')})`);
    return name as TransportKey;
  });
  if (!transports.length) throw new UsageError('--transports is empty');
  const rounds = str('rounds') !== undefined ? positive(str('rounds')!, 'rounds', true, 1e7) : quick ? 2000 : 20000;
  return {
    settings: {
      quick,
      trials: str('trials') !== undefined ? positive(str('trials')!, 'trials', true, 1000) : quick ? 3 : 5,
      duration: str('duration') !== undefined ? positive(str('duration')!, 'duration', false, 3600) : quick ? 0.2 : 0.4,
      rounds,
      warmup: Math.max(100, Math.round(rounds / 10)),
      sizes: list('sizes')?.map((value) => parseSize(value, 'sizes', 64 << 20)) ?? [64, 1024, 64 * 1024, 1 << 20],
      idleSeconds: str('idle') !== undefined ? positive(str('idle')!, 'idle', false, 3600) : quick ? 1 : 5,
      many: 100,
      scale: str('scale') !== undefined ? positive(str('scale')!, 'scale', true, 100000) : quick ? 1000 : 10000,
      httpConnections: 10,
    },
    cases,
    transports,
    out: path.resolve(str('out') ?? DEFAULT_OUT),
    write: out['no-write'] !== true,
    oneDaemon: out['one-daemon'] === true,
    leftOut,
  };
}

function machine(): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const match = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (match) cpu = match[1].trim();
  } catch {
    // No /proc/cpuinfo (not Linux): the model os.cpus() gave stays.
  }
  return {
    cpu,
    cores: os.cpus().length,
    node: process.version,
    kernel: os.release(),
    platform: `${os.platform()} ${os.arch()}`,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadavgStart: os.loadavg(),
  };
}

function zivmVersion(): { version: string; commit?: string } {
  let version = 'unknown';
  try {
    version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // No readable package.json: the version stays unknown.
  }
  let commit: string | undefined;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src', 'native'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    if (dirty) commit += ' + uncommitted changes in src/native';
  } catch {
    // Not a git checkout (an installed package): no commit to record.
  }
  return { version, commit };
}

/**
 * The zivm daemon the trials join: `zivm server` on a socket in the run's
 * folder, so no other daemon's settings or load count. By default a fresh one
 * for every trial that has a zivm side (each trial starts from an empty
 * region); --one-daemon keeps one for the whole run.
 */
class Daemon {
  private server: ServerProc | undefined;
  constructor(
    private readonly settings: RunSettings,
    private readonly perTrial: boolean,
  ) {}

  /** Runs fn with a daemon up when any of `ts` is a zivm transport. */
  async around<T>(ts: readonly TransportKey[], fn: () => Promise<T>): Promise<T> {
    if (!ts.some((target) => target.startsWith('zivm'))) return fn();
    if (!this.alive()) {
      // No inherited hooks or domain; --idle-exit is only a safety net should this driver die without stopping it.
      const env = { NODE_OPTIONS: undefined, ZIVM: undefined, ZIVM_SOCKET: undefined, ZIVM_DIR: undefined };
      try {
        this.server = await startDaemon(this.settings.zivmSocket, ['--idle-exit', '120'], env, 10000);
      } catch (err) {
        throw new Error(`the zivm daemon did not start: ${(err as Error).message}`);
      }
      this.settings.daemonPid = this.server.child.pid;
    }
    try {
      return await fn();
    } finally {
      if (this.perTrial) await this.stop();
    }
  }

  private alive(): boolean {
    return !!this.server && this.server.child.exitCode === null && this.server.child.signalCode === null;
  }

  kill(): void {
    if (this.alive()) this.server!.child.kill('SIGTERM');
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.settings.daemonPid = undefined;
    if (server) await server.stop(5000);
  }
}

function checkSeen(target: TransportKey, out: TrialOutcome): string | undefined {
  const want = EXPECTED[target];
  for (const side of ['client', 'server']) {
    const seen = out.seen[side] ?? {};
    const total = Object.values(seen).reduce((lhs, rhs) => lhs + rhs, 0);
    if (!total) return `${side} reported no connection`;
    const other = Object.entries(seen).filter(([k]) => k !== want);
    if (other.length) return `expected every connection on ${want}, the ${side} saw ${other.map(([k, count]) => `${count} on ${k}`).join(', ')} (of ${total})`;
  }
  return undefined;
}

function rotate<T>(args: readonly T[], count: number): T[] {
  const k = count % args.length;
  return [...args.slice(k), ...args.slice(0, k)];
}

async function runCase(sc: Scenario, settings: RunSettings, all: TransportKey[], daemon: Daemon, errors: string[]): Promise<CaseResult> {
  const t0 = performance.now();
  const transports = sc.transports ? all.filter((target) => sc.transports!.includes(target)) : all;
  const trials: TrialRecord[] = [];
  const record = (target: TransportKey, i: number, seconds: number, out: TrialOutcome | Error): void => {
    let rec: TrialRecord;
    if (out instanceof Error) {
      rec = { case: sc.name, transport: target, trial: i + 1, ok: false, error: out.message, seconds };
    } else {
      const bad = checkSeen(target, out);
      rec = { case: sc.name, transport: target, trial: i + 1, ok: !bad, seconds, metrics: out.metrics, seen: out.seen, detail: out.detail };
      if (bad) rec.error = `wrong transport: ${bad}`;
    }
    if (rec.error) {
      const msg = `${sc.name} ${target} trial ${i + 1}: ${rec.error.split('\n')[0]}`;
      errors.push(msg);
      process.stderr.write(`  error: ${msg}\n`);
    }
    trials.push(rec);
  };
  for (let i = 0; i < settings.trials; i++) {
    const order = rotate(transports, i);
    if (sc.trialAll) {
      const ts = performance.now();
      let res: Map<TransportKey, TrialOutcome | Error>;
      try {
        res = await daemon.around(order, () => sc.trialAll!(order, settings, i));
      } catch (err) {
        res = new Map(order.map((target) => [target, err as Error]));
      }
      const secs = (performance.now() - ts) / 1000;
      for (const target of order) record(target, i, secs, res.get(target) ?? new Error('no result'));
    } else {
      for (const target of order) {
        const ts = performance.now();
        let out: TrialOutcome | Error;
        try {
          out = await daemon.around([target], () => sc.trial!(target, settings, i));
        } catch (err) {
          out = err instanceof Error ? err : new Error(String(err));
        }
        record(target, i, (performance.now() - ts) / 1000, out);
      }
    }
  }
  const metrics: MetricResult[] = sc.metrics(settings).map((msg) => {
    const results: MetricResult['results'] = {};
    for (const target of transports) {
      const vals = trials.filter((res) => res.ok && res.transport === target && Number.isFinite(res.metrics?.[msg.key])).map((res) => res.metrics![msg.key]);
      if (vals.length) results[target] = summarize(vals);
    }
    return { ...msg, results, ratios: ratios(results) };
  });
  const seconds = (performance.now() - t0) / 1000;
  const first = metrics[0];
  const brief = first ? transports.map((target) => `${target} ${fmt(first.results[target]?.median ?? NaN)}`).join(', ') : '';
  const failed = trials.filter((res) => !res.ok).length;
  process.stderr.write(
    `${sc.name}: ${trials.length} trials in ${seconds.toFixed(1)} s${failed ? `, ${failed} FAILED` : ''}` +
      (first ? ` (${first.label}, ${first.unit}: ${brief})` : '') +
      '\n',
  );
  return { name: sc.name, method: sc.method(settings), seconds, metrics, trials };
}

function stamp(data: Date): string {
  const entry = (count: number): string => String(count).padStart(2, '0');
  return `${data.getFullYear()}${entry(data.getMonth() + 1)}${entry(data.getDate())}-${entry(data.getHours())}${entry(data.getMinutes())}${entry(data.getSeconds())}`;
}

/**
 * Runs the benchmarks. argv as after `zivm bench` (no node/script). Resolves
 * with the exit code: 0, 1 when some trial failed (wrong transport, error), 2
 * for bad usage.
 */
export async function main(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`zivm bench: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (opts.leftOut) process.stderr.write(`zivm bench: ${opts.leftOut}\n`);
  const started = new Date();
  const t0 = performance.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-bench-'));
  const settings: RunSettings = { ...opts.settings, tmp, zivmSocket: path.join(tmp, 'zivm.sock') };
  const errors: string[] = [];
  const mach = machine();
  const daemon = new Daemon(settings, !opts.oneDaemon);
  const onSignal = (sig: NodeJS.Signals): void => {
    void killAll(); // the SIGKILLs go out at once; no waiting for the exits here
    daemon.kill();
    fs.rmSync(tmp, { recursive: true, force: true });
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const cases: CaseResult[] = [];
  try {
    process.stderr.write(
      `zivm bench: ${opts.cases.map((item) => item.name).join(', ')}; ${settings.trials} trial(s) x ${opts.transports.length} transports` +
        `${settings.quick ? ' (quick)' : ''}\n`,
    );
    for (const sc of opts.cases) cases.push(await runCase(sc, settings, opts.transports, daemon, errors));
  } finally {
    await killAll();
    await daemon.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  mach.loadavgEnd = os.loadavg();
  const { tmp: _t, zivmSocket: _z, daemonPid: _d, ...shownSettings } = settings;
  const res: Results = {
    tool: 'zivm bench',
    version: 1,
    date: started.toISOString(),
    zivm: zivmVersion(),
    machine: mach,
    settings: { ...shownSettings, oneDaemon: opts.oneDaemon, cases: opts.cases.map((item) => item.name), transports: opts.transports },
    method: [
      'every trial starts a fresh server process and a fresh client process (node ' +
        process.version +
        '), and stops both afterwards; ' +
        'within each round of trials the transports take turns, in an order rotated every round',
      'zivm processes load zivm as the package gives it, bundled in dist/src/bundle/zivm.js (the http and express cases: only the preload hook zivm/register) and join a zivm daemon started by the driver ' +
        `(\`zivm server\` on a private socket, default region and ring sizes unless ZIVM_SIZE / ZIVM_RING are set, autostart off), ` +
        (opts.oneDaemon ? 'one daemon for the whole run' : 'a fresh daemon for every trial with a zivm side'),
      "every connection's transport is checked on both sides (zivm's socket.transport, else the kernel handle: TCP or Pipe); " +
        'a trial with any connection on another transport is an error and left out of the figures',
      'zivm tcp-fb: a zivm server started with ZIVM=off (not registered in the domain, as on another host) and a zivm client that joins the domain, ' +
        'finds no co-resident listener and falls back to TCP on 127.0.0.1',
      'net tcp: node:net on both sides, 127.0.0.1; net unix: node:net on both sides, a Unix socket in a private temporary folder',
    ],
    transports: Object.fromEntries(TRANSPORTS.map((target) => [target, TRANSPORT_LABELS[target]])) as Results['transports'],
    cases,
    errors,
    seconds: (performance.now() - t0) / 1000,
  };
  process.stdout.write('\n' + table(res) + notes(res));
  if (opts.write) {
    fs.mkdirSync(opts.out, { recursive: true });
    const base = path.join(opts.out, `bench-${stamp(started)}`);
    fs.writeFileSync(`${base}.json`, JSON.stringify(res, null, 2) + '\n');
    fs.writeFileSync(`${base}.svg`, svg(res));
    process.stderr.write(`wrote ${base}.json and ${base}.svg\n`);
  }
  return errors.length ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`zivm bench: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
