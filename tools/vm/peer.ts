/**
 * The VM peer kit: what the peer scripts of the VM tests and the VM bench
 * share, so that each script holds only its scenario. A peer script runs as
 * `node <script> <role> [--option value ...]`, in a QEMU guest (as root,
 * chrooted into the host's root: qemu.ts) or on the host in a network
 * namespace of its own (harness.ts spawnNsPeer).
 *
 *   - the set-up of a guest: its address, `zivm guest setup` (the ivshmem
 *     device on vfio-pci, the agent), the join through the agent;
 *   - report(): `PREFIX {json}` lines on the console, what the host reads;
 *   - the standard servers (echo; echo with a half-closing tail) and clients
 *     (ping-pong and a sha256-checked echo; the tail's counterpart; a port
 *     nobody listens on);
 *   - runRoles(): the dispatch on the role and what an error does.
 *
 * zivm is loaded on first use only: a guest's environment (ZIVM_GUEST_PCI)
 * is set by then.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Proc } from '../kit/proc';

export type Any = any;
export type Res = Record<string, unknown>;

/** The host peer's address in the guest <-> host tests (on its namespace's lo or tap). */
export const HOST_ADDR = '10.77.1.1';
/** The guest's address in the guest <-> host tests. */
export const GUEST_ADDR = '10.77.2.2';

/** zivm of this build (dist/src/index.js). */
export function zivm(): Any {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- on first use: a guest's environment (ZIVM_GUEST_PCI) is set by then
  return require('../../src/index');
}

/** The value after `name` in argv, or `d`; without a default a missing option is an error. */
export function arg(argv: string[], name: string, chunk?: string): string {
  const i = argv.indexOf(name);
  if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
  if (chunk === undefined) throw new Error(`missing ${name}`);
  return chunk;
}

/** A deterministic block of `n` bytes. */
export function block(count: number, seed: number): Buffer {
  const buf = Buffer.alloc(count + 3);
  let val = seed >>> 0 || 1;
  for (let i = 0; i < count; i += 4) {
    val ^= val << 13;
    val ^= val >>> 17;
    val ^= val << 5;
    buf.writeUInt32LE(val >>> 0, i);
  }
  return buf.subarray(0, count);
}

export const sha = (buf: Buffer): string => crypto.createHash('sha256').update(buf).digest('hex');

/** A finding, as a console line `PREFIX {"what": ..., ...}`. */
export type Report = (what: string, o?: Res) => void;

/** report() for a script whose console lines start with `prefix` (with its trailing space). */
export function reporter(prefix: string): Report {
  return (what, out = {}) => void process.stdout.write(`${prefix}${JSON.stringify({ what, ...out })}\n`);
}

// ---- set-up of a guest -------------------------------------------------------------

/** Brings lo up and puts `addr/bits` on `dev` (brought up too). */
export function setAddress(addr: string, bits: number, dev: string): void {
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  if (dev !== 'lo') execFileSync('ip', ['link', 'set', dev, 'up']);
  execFileSync('ip', ['addr', 'add', `${addr}/${bits}`, 'dev', dev]);
}

/**
 * `zivm guest setup`: binds the only ivshmem device to vfio-pci and starts the
 * agent. Its output, and the device it names in `export ZIVM_GUEST_PCI=...`.
 */
export function guestSetup(options: string[] = []): { out: string; pci: string | undefined } {
  const out = execFileSync(process.execPath, [require.resolve('../../src/cli/main'), 'guest', 'setup', ...options], { encoding: 'utf8' });
  return { out, pci: /^export ZIVM_GUEST_PCI=(\S+)$/m.exec(out)?.[1] };
}

/**
 * The whole set-up of a guest process: `zivm guest setup`, then joins the
 * domain through the agent (ZIVM_GUEST_PCI=auto finds the device). What it
 * joined as, for the `joined` report: ids, vector, the addresses published.
 * (The address goes on first: a guest publishes its node's addresses when it joins.)
 */
export function joinAsGuest(setupOptions: string[] = []): Res {
  const t0 = Date.now();
  const setup = guestSetup(setupOptions);
  if (!setup.pci) throw new Error(`zivm guest setup said: ${setup.out}`);
  process.env.ZIVM_GUEST_PCI = 'auto';
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- after the guest's environment was set just above
  const { getDomain, lastJoinError } = require('../../src/shm/join');
  const data = getDomain(false);
  if (!data) throw new Error(`guest join failed: ${lastJoinError?.message}`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- zivm's modules are loaded on first use (see the top of this file)
  const { publishedAddrs, formatAddr } = require('../../src/shm/addrs');
  return {
    pci: data.guest.pci,
    setupPci: setup.pci,
    id: data.id,
    guestPeer: data.guest.ivPosition,
    vector: data.guest.vector,
    gen: data.gen,
    nodeId: data.nodeId,
    guest: !!data.guest,
    published: (publishedAddrs(data.i32, data.geo, data.id) as Any[]).map(formatAddr),
    ms: Date.now() - t0,
  };
}

/**
 * Two joins at once by `uid`, as raw clients of the agent's protocol (a
 * Python program given as text: nothing of the checkout needs to be readable
 * by that user): the values each got and where the fds passed with them point.
 */
export async function joinsAs(uid: number, socket: string): Promise<Any> {
  const program = [
    'import json, os, select, socket, struct, sys',
    'out, socks = [], []',
    'for _ in range(2):',
    '    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
    '    s.connect(sys.argv[1])',
    '    socks.append(s)',
    '    values, links = [], []',
    '    while len(values) < 9 and select.select([s], [], [], 5)[0]:',
    '        data, fds, _f, _a = socket.recv_fds(s, 8, 4)',
    '        if len(data) < 8:',
    '            break',
    "        values.append(struct.unpack('<q', data)[0])",
    "        links += [os.readlink('/proc/self/fd/%d' % fd) for fd in fds]",
    '        if values[-1] < 0:',
    '            break',
    "    out.append({'values': values, 'links': links})",
    "print(json.dumps({'joins': out}))",
  ].join('\n');
  const proc = new Proc('python3', ['-c', program, socket], { name: `uid ${uid}`, uid, gid: uid, cwd: '/', timeoutMs: 20000 });
  const exit = await proc.exit(20000);
  return { code: exit.code, joins: proc.lines[0]?.joins ?? null, stderr: proc.stderr().slice(-500) };
}

/** This process in the domain: its peer id and vector, its guest's peer id; or why it is not in it. */
export function membership(): Res {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- zivm's modules are loaded on first use (see the top of this file)
  const { currentDomain, lastJoinError } = require('../../src/shm/join');
  const data = currentDomain();
  return data
    ? { peer: data.id, vector: data.guest?.vector ?? null, guestPeer: data.guest?.ivPosition ?? null }
    : { peer: null, reason: lastJoinError?.message ?? null };
}

// ---- the standard servers ----------------------------------------------------------

function listenAll(srv: Any, port: number): Promise<Any> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '0.0.0.0', () => resolve(srv));
  });
}

/** zivm echo server on 0.0.0.0:port: every connection echoes what it gets; `onConn` sees each socket. */
export function echoServer(port: number, onConn: (s: Any) => void): Promise<Any> {
  const srv = zivm().createServer((subject: Any) => {
    subject.on('error', () => undefined);
    onConn(subject);
    subject.pipe(subject);
  });
  return listenAll(srv, port);
}

/**
 * zivm server on 0.0.0.0:port that echoes, and answers the client's end()
 * with `tail <bytes received>` and its own end (half-close, allowHalfOpen);
 * `onConn` sees each socket and its number.
 */
export function tailServer(port: number, onConn: (s: Any, id: number) => void): Promise<Any> {
  let count = 0;
  const srv = zivm().createServer({ allowHalfOpen: true }, (subject: Any) => {
    const id = ++count;
    let got = 0;
    subject.on('error', () => undefined);
    onConn(subject, id);
    subject.on('data', (chunk: Buffer) => {
      got += chunk.length;
      subject.write(chunk);
    });
    subject.on('end', () => {
      // Half-closed by the client: we may still write.
      subject.end(`tail ${got}`);
    });
  });
  return listenAll(srv, port);
}

// ---- the standard clients ----------------------------------------------------------

/**
 * Client of an echo server: connects to host:port, ping-pongs `rounds` single
 * bytes, then writes `bytes` bytes, ends, and compares the sha256 of what
 * comes back.
 */
export async function echoClient(host: string, port: number, bytes: number, rounds: number): Promise<Res> {
  const t0 = process.hrtime.bigint();
  const subject = zivm().connect({ host, port });
  const res: Res = {};
  await new Promise<void>((resolve, reject) => {
    subject.once('connect', resolve);
    subject.once('error', reject);
  });
  res.connectMs = Number(process.hrtime.bigint() - t0) / 1e6;
  res.transport = subject.transport;
  res.remoteAddress = subject.remoteAddress;
  res.remotePort = subject.remotePort;
  // Ping-pong.
  const rtt: number[] = [];
  let failed: Error | undefined;
  const onError = (err: Error) => (failed = err);
  subject.on('error', onError);
  const one = () =>
    new Promise<void>((resolve, reject) => {
      if (failed) return reject(failed);
      const target = process.hrtime.bigint();
      subject.once('data', () => {
        rtt.push(Number(process.hrtime.bigint() - target) / 1e3);
        resolve();
      });
      subject.write('x');
    });
  for (let i = 0; i < rounds; i++) await one();
  subject.off('error', onError);
  rtt.sort((lhs, rhs) => lhs - rhs);
  res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(rtt[rtt.length >> 1]), max: Math.round(rtt[rtt.length - 1]) } : null;
  Object.assign(res, await bulkEcho(subject, bytes));
  subject.destroy();
  return res;
}

/**
 * The bulk part of an echo: writes `bytes` deterministic bytes and ends, then
 * reads what comes back until 'end'. How many bytes came back, whether their
 * sha256 is that of what went, and how long it took.
 */
export async function bulkEcho(subject: Any, bytes: number): Promise<{ echoMs: number; bytes: number; sha256Ok: boolean }> {
  const data = block(bytes, 0x5eed);
  const want = sha(data);
  const holder = crypto.createHash('sha256');
  let got = 0;
  const t1 = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    subject.on('data', (chunk: Buffer) => {
      got += chunk.length;
      holder.update(chunk);
    });
    subject.once('end', resolve);
    subject.once('error', reject);
    subject.end(data);
  });
  return { echoMs: Number(process.hrtime.bigint() - t1) / 1e6, bytes: got, sha256Ok: got === bytes && holder.digest('hex') === want };
}

/**
 * Client of a tail server: writes `bytes` bytes and ends; checks that all of
 * them came back, then takes the `tail` line after its end (half-close), then end.
 */
export async function tailClient(host: string, port: number, bytes: number): Promise<Res> {
  const subject = zivm().connect({ host, port, allowHalfOpen: true });
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => {
    subject.once('connect', resolve);
    subject.once('error', reject);
  });
  const res: Res = { transport: subject.transport, remoteAddress: subject.remoteAddress };
  const data = block(bytes, 0x7a11 + bytes);
  const want = sha(data);
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    subject.on('data', (chunk: Buffer) => chunks.push(chunk));
    subject.once('end', resolve);
    subject.once('error', reject);
    subject.end(data);
  });
  const all = Buffer.concat(chunks);
  res.ms = Date.now() - t0;
  res.echoOk = all.length >= bytes && sha(all.subarray(0, bytes)) === want;
  res.tail = all.subarray(bytes).toString();
  res.bytes = bytes;
  subject.destroy();
  return res;
}

/** Connects where nobody listens: the error it gets (or `hung` after 10 s). */
export function refused(host: string, port: number): Promise<Res> {
  return new Promise((resolve) => {
    const time = Date.now();
    const subject = zivm().connect({ host, port });
    const timer = setTimeout(() => {
      subject.destroy();
      resolve({ error: 'hung', ms: Date.now() - time });
    }, 10000);
    subject.once('connect', () => {
      clearTimeout(timer);
      subject.destroy();
      resolve({ connected: true, transport: subject.transport });
    });
    subject.once('error', (err: Error & { code?: string; syscall?: string }) => {
      clearTimeout(timer);
      resolve({ code: err.code ?? null, syscall: err.syscall ?? null, message: err.message, transport: subject.transport, ms: Date.now() - time });
    });
  });
}

/** Powers the guest off at once (sysrq o): no shutdown, no close of anything. */
export function powerOff(): void {
  fs.writeFileSync('/proc/sysrq-trigger', 'o');
}

// ---- roles ------------------------------------------------------------------------------

export interface RoleOptions {
  /** The usage line printed for an unknown role. */
  usage: string;
  /** How an error of a role in `reporting` is told: report('error', { message, stack }). */
  report: Report;
  /** The roles whose errors are reported on the console (the others print the stack on stderr); default all. */
  reporting?: string[];
  /** The roles whose process lives on when their function has resolved (servers); the others exit 0. */
  stays?: string[];
}

/** Runs the role named by argv[2] with the rest of argv; an error exits 1 (see RoleOptions). */
export function runRoles(roles: Record<string, (argv: string[]) => Promise<unknown>>, out: RoleOptions): void {
  const [role, ...rest] = process.argv.slice(2);
  const run = Object.prototype.hasOwnProperty.call(roles, role) ? roles[role] : undefined;
  if (!run) {
    process.stderr.write(`${out.usage}\n`);
    process.exit(2);
  }
  run(rest).then(
    () => {
      if (!out.stays?.includes(role)) process.exit(0);
    },
    (err) => {
      if (!out.reporting || out.reporting.includes(role)) out.report('error', { message: (err as Error).message, stack: (err as Error).stack });
      else process.stderr.write(`${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
}
