/**
 * Shared by the benchmark driver and its scenario processes: the four
 * transports, the roles' start (JSON lines on stdout, commands on stdin,
 * through tools/kit), the echo-server role and the paired trial, CPU
 * accounting and small statistics.
 *
 * Every scenario file doubles as the program of its server and client
 * processes: `node dist/bench/<case>.js <role> <transport> <json params>`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type nodeNet from 'node:net';
import { Commands, say } from '../tools/kit/child';
import { Proc, spawnNode } from '../tools/kit/proc';
import { watchdog as stallWatchdog } from '../tools/kit/wait';

/** A role's side of the protocol: its lines out, the driver's commands in. */
export { Commands, say };

/** The four transports every case compares, in table order. */
export const TRANSPORTS = ['zivm-shm', 'zivm-tcp', 'net-tcp', 'net-unix'] as const;
export type TransportKey = (typeof TRANSPORTS)[number];

export const TRANSPORT_LABELS: Record<TransportKey, string> = {
  'zivm-shm': 'zivm shm',
  'zivm-tcp': 'zivm TCP fallback',
  'net-tcp': 'node:net TCP',
  'net-unix': 'node:net Unix',
};

/** What each end's socket must report for a trial to count (socket.transport, or the handle class for node:net). */
export const EXPECTED: Record<TransportKey, string> = {
  'zivm-shm': 'shm',
  'zivm-tcp': 'tcp',
  'net-tcp': 'tcp',
  'net-unix': 'pipe',
};

/** zivm as users load it (the package's bundled entry points) in this build, and its command (bench compiles to dist/bench). */
export const ZIVM_INDEX = path.join(__dirname, '..', 'src', 'bundle', 'zivm.js');
export const ZIVM_REGISTER = path.join(__dirname, '..', 'src', 'bundle', 'register.js');
export const ZIVM_CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');

export type Json = Record<string, any>;

/** Where a server listens: a TCP port on 127.0.0.1 or a Unix socket path. */
export interface Endpoint {
  host?: string;
  port?: number;
  path?: string;
}

// ---------------------------------------------------------------------------
// Inside a scenario process
// ---------------------------------------------------------------------------

/** The net module a role uses: zivm for zivm-*, node:net otherwise (zivm is then never loaded). */
export function netFor(target: TransportKey): typeof nodeNet {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- chosen at run time: a node:net role must not load zivm at all
  return target.startsWith('zivm') ? (require(ZIVM_INDEX) as typeof nodeNet) : (require('node:net') as typeof nodeNet);
}

/** zivm's stats() when zivm is loaded in this process (directly or by the preload hook). */
export function zivmStats(): Json | undefined {
  if (!require.cache[ZIVM_INDEX] && !require.cache[ZIVM_REGISTER]) return undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- only when zivm is loaded already (the cache is looked at above): this never loads it
    const stats = (require(ZIVM_INDEX) as { stats(): Json }).stats();
    return { connections: stats.connections, peer: stats.peer, memory: stats.memory };
  } catch {
    return undefined;
  }
}

/** 'shm' | 'tcp' | 'pipe': zivm's socket.transport, else the kernel handle's kind. Call while connected. */
export function transportOf(sock: nodeNet.Socket): string {
  const target = (sock as unknown as { transport?: string }).transport;
  if (target) return target;
  const holder = (sock as unknown as { _handle?: { constructor?: { name?: string } } })._handle;
  const name = holder?.constructor?.name;
  if (name === 'Pipe') return 'pipe';
  if (name === 'TCP') return 'tcp';
  return `unknown(${name ?? 'no handle'})`;
}

/** Counts transports seen on connections: { shm: 3 }. */
export class TransportTally {
  readonly counts: Record<string, number> = {};
  add(sock: nodeNet.Socket): string {
    const text = transportOf(sock);
    this.counts[text] = (this.counts[text] ?? 0) + 1;
    return text;
  }
}

/** CPU seconds (user + system) of this process since `from` (a process.cpuUsage() value). */
export function cpuSince(from: NodeJS.CpuUsage): number {
  const data = process.cpuUsage(from);
  return (data.user + data.system) / 1e6;
}

/** How long a client may go without progress before it reports a stall and exits. */
export const STALL_MS = 5000;

/**
 * A stall detector for a client: call poke() on progress; if none comes for
 * STALL_MS, the process reports an error (with describe()) and exits, so a
 * hung connection fails its trial quickly and says where it stood.
 */
export function watchdog(describe: () => string, ms = STALL_MS): { poke(): void; stop(): void } {
  return stallWatchdog(ms, () => {
    say({ event: 'error', message: `stalled: no progress for ${ms / 1000} s (${describe()})` });
    process.exit(1);
  });
}

export function now(): number {
  return performance.now() / 1000;
}

/**
 * Common start of a scenario process: parses argv, exits when stdin closes
 * (no child outlives the driver), and dispatches stdin command lines.
 */
export function childMain(roles: Record<string, (t: TransportKey, params: Json, commands: Commands) => void>): void {
  const [role, transport, raw] = process.argv.slice(2);
  const fn = roles[role];
  if (!fn || !(TRANSPORTS as readonly string[]).includes(transport)) {
    process.stderr.write(`usage: ${path.basename(process.argv[1])} <${Object.keys(roles).join('|')}> <${TRANSPORTS.join('|')}> [json]\n`);
    process.exit(2);
  }
  const commands = new Commands();
  process.on('uncaughtException', (err) => {
    say({ event: 'error', message: err?.stack ?? String(err) });
    process.exit(1);
  });
  fn(transport as TransportKey, raw ? (JSON.parse(raw) as Json) : {}, commands);
}

/** A standard server: listens per transport and reports { event: 'listening', port | path }. */
export function listen(server: nodeNet.Server, target: TransportKey, params: Json): void {
  server.on('error', (err) => {
    say({ event: 'error', message: err.message });
    process.exit(1);
  });
  const host = typeof params.host === 'string' ? params.host : '127.0.0.1';
  const done = (): void => {
    const addr = server.address();
    if (typeof addr === 'string') say({ event: 'listening', path: addr, pid: process.pid });
    else say({ event: 'listening', host, port: addr?.port, pid: process.pid });
  };
  // A deep backlog (the kernel caps it at net.core.somaxconn): the scale case opens thousands of connections at once.
  if (target === 'net-unix') server.listen({ path: String(params.path), backlog: 65535 }, done);
  else server.listen({ port: 0, host, backlog: 65535 }, done);
}

export function connectTo(net: typeof nodeNet, ep: Endpoint): nodeNet.Socket {
  return ep.path ? net.connect(ep.path) : net.connect(ep.port!, ep.host ?? '127.0.0.1');
}

// ---------------------------------------------------------------------------
// In the driver
// ---------------------------------------------------------------------------

/** Settings shared by every trial of a run. */
export interface RunSettings {
  quick: boolean;
  trials: number;
  /** Seconds of measurement for the time-based cases (pump per size, connect, many, http). */
  duration: number;
  /** ping-pong round trips measured, and before them for warm-up. */
  rounds: number;
  warmup: number;
  /** pump write sizes in bytes. */
  sizes: number[];
  /** idle window in seconds. */
  idleSeconds: number;
  /** concurrent connections for `many` and for the http load generator. */
  many: number;
  /** concurrent connections for `scale`. */
  scale: number;
  httpConnections: number;
  /** Private folder of this run: the zivm daemon's socket, Unix sockets. */
  tmp: string;
  /** The zivm daemon socket every zivm process of the run joins through. */
  zivmSocket: string;
  /** That daemon's pid (its CPU is recorded in the idle case). */
  daemonPid?: number;
}

export interface Metric {
  key: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
}

/** What a scenario's trial returns; the driver checks `seen` against EXPECTED. */
export interface TrialOutcome {
  metrics: Record<string, number>;
  /** Transports observed on each side's connections, e.g. { client: { shm: 1 }, server: { shm: 1 } }. */
  seen: Record<string, Record<string, number>>;
  detail?: Json;
}

export interface Scenario {
  name: string;
  /** One sentence: what one trial does. */
  method(s: RunSettings): string;
  metrics(s: RunSettings): Metric[];
  /** Runs one trial over one transport in a fresh server/client process pair. */
  trial?(t: TransportKey, s: RunSettings, index: number): Promise<TrialOutcome>;
  /** The transports it compares, if not all (the others show no figure). */
  transports?: readonly TransportKey[];
  /** Alternatively: one trial of every transport at once (the idle case). */
  trialAll?(ts: readonly TransportKey[], s: RunSettings, index: number): Promise<Map<TransportKey, TrialOutcome | Error>>;
}

/** Environment of a scenario process: no inherited hooks, zivm pinned to the run's daemon. */
export function childEnv(subject: RunSettings, extra: { zivmOff?: boolean; preload?: boolean } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['NODE_OPTIONS', 'ZIVM', 'ZIVM_DIR', 'ZIVM_SOCKET', 'ZIVM_AUTOSTART']) delete env[k];
  env.ZIVM_SOCKET = subject.zivmSocket;
  env.ZIVM_AUTOSTART = '0';
  if (extra.zivmOff) env.ZIVM = 'off';
  if (extra.preload) env.NODE_OPTIONS = `--require ${JSON.stringify(ZIVM_REGISTER)}`;
  return env;
}

/** A scenario process seen from the driver: its JSON lines, commands to it, stop(). */
export type Child = Proc;

/** Starts a scenario process: dist/bench/<scenario>.js <role> <transport> <params>; in network namespace `netns` if given (ip netns exec). */
export function startChild(scenario: string, role: string, target: TransportKey, params: Json, env: NodeJS.ProcessEnv, netns?: string): Child {
  const file = path.join(__dirname, `${scenario}.js`);
  const name = `${scenario} ${role} (${target})${netns ? ` in ${netns}` : ''}`;
  if (netns) return new Proc('ip', ['netns', 'exec', netns, process.execPath, file, role, target, JSON.stringify(params)], { env, name });
  return spawnNode(file, [role, target, JSON.stringify(params)], { env, name });
}

/** The usual pair: a server for transport t, listening; its endpoint. */
export async function startServer(
  scenario: string,
  target: TransportKey,
  subject: RunSettings,
  params: Json = {},
  env?: NodeJS.ProcessEnv,
): Promise<{ server: Child; ep: Endpoint }> {
  const part = { ...params };
  if (target === 'net-unix') part.path = path.join(subject.tmp, `${scenario}-${process.hrtime.bigint()}.sock`);
  const server = startChild(scenario, 'server', target, part, env ?? serverEnv(target, subject));
  try {
    const list = await server.expect('listening');
    return { server, ep: list.path ? { path: list.path } : { host: '127.0.0.1', port: list.port } };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/**
 * zivm-tcp: the server runs zivm with ZIVM=off (it does not register in the domain,
 * like a server on another host), the client runs zivm normally, finds no
 * co-resident listener and falls back to TCP.
 */
export function serverEnv(target: TransportKey, subject: RunSettings): NodeJS.ProcessEnv {
  return childEnv(subject, { zivmOff: target === 'zivm-tcp' });
}

export function clientEnv(_t: TransportKey, subject: RunSettings): NodeJS.ProcessEnv {
  return childEnv(subject);
}

/** Runs fn, then stops the children whatever happened. */
export async function withChildren<T>(children: Child[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    await Promise.all(children.map((item) => item.stop()));
  }
}

/** How a case's pair of processes is started: the server's and the client's parameters and environments. */
export interface PairSpec {
  /** The server's parameters (it learns where to listen itself). */
  server?: Json;
  /** The client's parameters; `ep`, where the server listens, is added. */
  client: Json;
  /** Default: serverEnv(). */
  serverEnv?: NodeJS.ProcessEnv;
  /** Default: clientEnv(). */
  clientEnv?: NodeJS.ProcessEnv;
}

/**
 * One trial in a fresh pair of processes: the case's server, listening, then
 * its client, told where; `fn` reads their lines, and both are stopped
 * afterwards whatever happened.
 */
export async function pairedTrial<T>(
  scenario: string,
  target: TransportKey,
  subject: RunSettings,
  spec: PairSpec,
  fn: (server: Child, client: Child) => Promise<T>,
): Promise<T> {
  const { server, ep } = await startServer(scenario, target, subject, spec.server, spec.serverEnv);
  const client = startChild(scenario, 'client', target, { ep, ...spec.client }, spec.clientEnv ?? clientEnv(target, subject));
  return withChildren([server, client], () => fn(server, client));
}

/** Asks a server for its `report` (what it saw: transports, CPU) and waits for it. */
export function serverReport(server: Child): Promise<Json> {
  server.send({ cmd: 'report' });
  return server.expect('report');
}

/**
 * The echo-server role: echoes whatever each connection sends, with Nagle
 * off; on `report`, the transports of its connections and its CPU seconds.
 */
export function echoServer(target: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const cpu0 = process.cpuUsage();
  const srv = net.createServer((sock) => {
    seen.add(sock);
    sock.setNoDelay(true);
    sock.on('data', (chunk) => sock.write(chunk));
    sock.on('error', () => undefined);
  });
  listen(srv, target, params);
  commands.on('report', () => say({ event: 'report', seen: seen.counts, cpu: cpuSince(cpu0) }));
}

// ---------------------------------------------------------------------------
// Statistics and CPU
// ---------------------------------------------------------------------------

export function quantile(sorted: ArrayLike<number>, queue: number): number {
  const count = sorted.length;
  if (count === 0) return NaN;
  const pos = (count - 1) * queue;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  q1: number;
  q3: number;
  samples: number[];
}

export function summarize(values: number[]): Summary {
  const slotWord = [...values].sort((lhs, rhs) => lhs - rhs);
  return {
    n: slotWord.length,
    median: quantile(slotWord, 0.5),
    min: slotWord[0] ?? NaN,
    max: slotWord[slotWord.length - 1] ?? NaN,
    q1: quantile(slotWord, 0.25),
    q3: quantile(slotWord, 0.75),
    samples: values,
  };
}

/** The CPU ticks (utime + stime) of a process, from /proc/<pid>/stat. */
export function procTicks(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return Number(rest[11]) + Number(rest[12]);
}
