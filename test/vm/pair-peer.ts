/**
 * Both guests of the guest<->guest test and benchmark (guest-pair.test.ts,
 * bench/vm.ts). Each runs in its own QEMU guest (as root, chrooted into the
 * host's node); the two guests share a private Ethernet link (eth0: a QEMU
 * socket netdev over host loopback, nothing else on it) and one zivm domain
 * (their ivshmem-doorbell devices are on one daemon).
 *
 *   node pair-peer.js server --addr 10.77.3.2 --ctrl-port C [common options]
 *   node pair-peer.js client --addr 10.77.3.1 --peer 10.77.3.2 --ctrl-port C [common options]
 *   node pair-peer.js bench  --addr 10.77.3.1 --peer 10.77.3.2 --ctrl-port C [bench options]
 *
 * Every role puts ADDR/24 on eth0, binds the ivshmem device to vfio-pci
 * (`zivm guest setup`), joins the domain through it (ZIVM_GUEST_PCI=auto),
 * and serves on two ports: a zivm server on 0.0.0.0:--port and a plain
 * node:net server on 0.0.0.0:--tcp-port (zivm is not involved there at all).
 * A connection to either starts with a line `MODE TAG\n`:
 *   E  echo until the client ends, then end;
 *   H  half-close: read until the client ends, then write `<sha256 of what
 *      came>\n` and --tail more bytes in pieces, then end (allowHalfOpen);
 *   S  sink: an 8-byte length L, then L bytes, answered by one byte 'K'; again.
 *
 * `server` also listens for control on plain node:net 0.0.0.0:--ctrl-port and
 * takes JSON lines from the other guest:
 *   {"cmd":"client","peer":A}  run the client tests against A, answer {"done":true};
 *   {"cmd":"poweroff"}         power off at once (sysrq o): no shutdown, no close;
 *   {"cmd":"bye"}              answer and exit.
 * `client` connects to control (retrying until `server` listens), runs the
 * client tests against the server guest, has the server guest run them back,
 * then holds a zivm connection to the server guest while it powers off.
 * `bench` connects to control, then measures round trips and bulk throughput
 * to the server guest over zivm and over plain node:net TCP, interleaved:
 * --warmup trials (numbered up to 0, not to be counted), then --trials, each a
 * fresh connection per transport for --warm + --rounds round trips of --msg
 * bytes and another for --bytes one way.
 *
 * The client tests: a zivm echo (ping-pong, then a sha256-checked echo of
 * --bytes), a plain node:net echo over eth0, a zivm half-close, and a zivm
 * connection to --refused-port where nobody listens.
 *
 * Everything is reported as `ZIVM-PAIR {json}` lines on the console.
 */
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import nodeNet from 'node:net';
import readline from 'node:readline';
import { arg, block, refused } from './net-peer';

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
type Res = Record<string, unknown>;

/** Addresses on the guests' eth0 (a /24 that exists only on their private link). */
export const PAIR_ADDRS = ['10.77.3.1', '10.77.3.2'] as const;
export const PREFIX = 'ZIVM-PAIR ';

function report(what: string, o: Res = {}): void {
  process.stdout.write(`${PREFIX}${JSON.stringify({ what, ...o })}\n`);
}

function zivm(): Any {
  // Loaded after the environment is set (ZIVM_GUEST_PCI is read on first use).
  return require('../../src/index'); // eslint-disable-line @typescript-eslint/no-require-imports
}

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

/** Bytes eth0 sent and received so far. */
function eth0(): { tx: number; rx: number } {
  const rd = (k: string) => Number(fs.readFileSync(`/sys/class/net/eth0/statistics/${k}`, 'utf8'));
  return { tx: rd('tx_bytes'), rx: rd('rx_bytes') };
}
function eth0Since(from: { tx: number; rx: number }): { tx: number; rx: number } {
  const e = eth0();
  return { tx: e.tx - from.tx, rx: e.rx - from.rx };
}

/** What a socket says about itself: zivm's transport, or that it is node:net's own class. */
function sockInfo(s: Any): Res {
  return {
    transport: s.transport ?? null,
    plainNet: Object.getPrototypeOf(s) === nodeNet.Socket.prototype,
    remoteAddress: s.remoteAddress ?? null,
    localAddress: s.localAddress ?? null,
  };
}

// ---- setup -------------------------------------------------------------------------

function setup(addr: string): void {
  const t0 = Date.now();
  // The address first: a guest publishes its node's addresses when it joins.
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  execFileSync('ip', ['link', 'set', 'eth0', 'up']);
  execFileSync('ip', ['addr', 'add', `${addr}/24`, 'dev', 'eth0']);
  const setupOut = execFileSync(process.execPath, [require.resolve('../../src/cli/main'), 'guest', 'setup'], { encoding: 'utf8' });
  const pci = /^export ZIVM_GUEST_PCI=(\S+)$/m.exec(setupOut)?.[1];
  if (!pci) throw new Error(`zivm guest setup said: ${setupOut}`);
  process.env.ZIVM_GUEST_PCI = 'auto';
  const { getDomain, lastJoinError } = require('../../src/shm/join'); // eslint-disable-line @typescript-eslint/no-require-imports
  const d = getDomain(false);
  if (!d) throw new Error(`guest join failed: ${lastJoinError?.message}`);
  const { publishedAddrs, formatAddr } = require('../../src/shm/directory'); // eslint-disable-line @typescript-eslint/no-require-imports
  report('joined', {
    addr,
    setupPci: pci,
    id: d.id,
    guest: !!d.guest,
    published: (publishedAddrs(d.i32, d.geo, d.id) as Any[]).map(formatAddr),
    ms: Date.now() - t0,
  });
}

// ---- servers -------------------------------------------------------------------------

/** Serves one connection of either server (see the header comment for the modes). */
function serve(s: Any, kind: 'zivm' | 'plain', tailBytes: number): void {
  s.setNoDelay?.(true);
  let head = Buffer.alloc(0);
  let mode = '';
  let tag = '';
  let onBody: (d: Buffer) => void = () => undefined;
  s.on('error', (e: Error & { code?: string }) => report('server-conn-error', { kind, tag, code: e.code ?? e.message }));
  s.on('close', () => report('server-conn-close', { kind, tag }));
  s.on('data', (d: Buffer) => {
    if (mode) return onBody(d);
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(10);
    if (nl < 0) return;
    [mode, tag] = head.subarray(0, nl).toString().split(' ');
    const rest = head.subarray(nl + 1);
    report('accepted', { kind, mode, tag, ...sockInfo(s) });
    if (mode === 'E') {
      onBody = (b) => {
        if (!s.write(b)) {
          s.pause();
          s.once('drain', () => s.resume());
        }
      };
      s.on('end', () => s.end());
    } else if (mode === 'H') {
      const h = crypto.createHash('sha256');
      let got = 0;
      onBody = (b) => {
        got += b.length;
        h.update(b);
      };
      s.on('end', () => {
        // The client's side is closed; ours stays open and keeps writing for a while.
        const tail = block(tailBytes, 0x7a11);
        report('half-server', { kind, tag, transport: s.transport ?? null, received: got, tailBytes });
        s.write(`${h.digest('hex')}\n`);
        let off = 0;
        const step = () => {
          if (s.destroyed) return;
          if (off >= tail.length) return void s.end();
          const n = Math.min(65536, tail.length - off);
          s.write(tail.subarray(off, off + n));
          off += n;
          setTimeout(step, 1);
        };
        setTimeout(step, 1);
      });
    } else if (mode === 'S') {
      let want = -1;
      let got = 0;
      let lenBuf = Buffer.alloc(0);
      onBody = (b) => {
        while (b.length) {
          if (want < 0) {
            const k = Math.min(8 - lenBuf.length, b.length);
            lenBuf = Buffer.concat([lenBuf, b.subarray(0, k)]);
            b = b.subarray(k);
            if (lenBuf.length < 8) return;
            want = Number(lenBuf.readBigUInt64LE(0));
            lenBuf = Buffer.alloc(0);
            got = 0;
          }
          const k = Math.min(want - got, b.length);
          got += k;
          b = b.subarray(k);
          if (got === want) {
            want = -1;
            s.write('K');
          }
        }
      };
      s.on('end', () => s.end());
    } else {
      s.destroy();
      return;
    }
    if (rest.length) onBody(rest);
  });
}

async function startServers(port: number, tcpPort: number, tailBytes: number): Promise<void> {
  const z = zivm().createServer({ allowHalfOpen: true }, (s: Any) => serve(s, 'zivm', tailBytes));
  const p = nodeNet.createServer({ allowHalfOpen: true }, (s: Any) => serve(s, 'plain', tailBytes));
  await Promise.all(
    [
      [z, port],
      [p, tcpPort],
    ].map(
      ([srv, n]) =>
        new Promise<void>((resolve, reject) => {
          (srv as nodeNet.Server).once('error', reject);
          (srv as nodeNet.Server).listen(n as number, '0.0.0.0', () => resolve());
        }),
    ),
  );
  report('listening', { port, tcpPort });
}

// ---- clients --------------------------------------------------------------------------

/** Connects with `mod` (zivm or node:net) and sends the mode line. */
async function open(mod: Any, host: string, port: number, mode: string, tag: string): Promise<{ s: Any; connectMs: number }> {
  const t0 = now();
  const s = mod.connect({ host, port });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const connectMs = now() - t0;
  s.setNoDelay(true);
  s.write(`${mode} ${tag}\n`);
  return { s, connectMs };
}

/** Sends `msg` and waits until as many bytes came back, `n` times; round trips in µs, sorted. */
async function pingPong(s: Any, n: number, msg: Buffer): Promise<number[]> {
  const rtt: number[] = [];
  let failed: Error | undefined;
  const onError = (e: Error) => (failed = e);
  s.on('error', onError);
  try {
    for (let i = 0; i < n; i++) {
      if (failed) throw failed;
      await new Promise<void>((resolve, reject) => {
        const t = process.hrtime.bigint();
        let got = 0;
        const onData = (d: Buffer) => {
          got += d.length;
          if (got < msg.length) return;
          s.off('data', onData);
          s.off('close', onClose);
          rtt.push(Number(process.hrtime.bigint() - t) / 1e3);
          resolve();
        };
        const onClose = () => reject(failed ?? new Error('closed during a round trip'));
        s.on('data', onData);
        s.once('close', onClose);
        s.write(msg);
      });
    }
  } finally {
    s.off('error', onError);
  }
  return rtt.sort((a, b) => a - b);
}

const pick = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/** Ends our side and waits (up to 5 s) until the server has ended its side too and the socket closed. */
function closeGently(s: Any): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    const timer = setTimeout(() => {
      s.destroy();
      resolve();
    }, 5000);
    s.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    s.on('error', () => undefined);
    s.resume();
    s.end();
  });
}

/** Ping-pong, then a sha256-checked echo of `bytes`. */
async function echoTest(mod: Any, host: string, port: number, tag: string, bytes: number, rounds: number): Promise<Res> {
  const { s, connectMs } = await open(mod, host, port, 'E', tag);
  const res: Res = { tag, connectMs, ...sockInfo(s) };
  const rtt = await pingPong(s, rounds, Buffer.from('x'));
  res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(pick(rtt, 0.5)), max: Math.round(rtt[rtt.length - 1]) } : null;
  const data = block(bytes, 0x5eed);
  const want = sha(data);
  const h = crypto.createHash('sha256');
  let got = 0;
  const e0 = eth0();
  const t1 = now();
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      got += d.length;
      h.update(d);
    });
    s.once('end', resolve);
    s.once('error', reject);
    s.end(data);
  });
  res.echoMs = now() - t1;
  res.eth0 = eth0Since(e0);
  res.bytes = got;
  res.sha256Ok = got === bytes && h.digest('hex') === want;
  s.destroy();
  return res;
}

/** Sends `bytes` and ends; the server answers after our end: the digest of what it got, then its tail, then its own end. */
async function halfCloseTest(mod: Any, host: string, port: number, tag: string, bytes: number, tailBytes: number): Promise<Res> {
  const { s } = await open(mod, host, port, 'H', tag);
  const data = block(bytes, 0x4a1f);
  const chunks: Buffer[] = [];
  let firstAfterEnd: boolean | undefined;
  let endedAt = 0;
  const t0 = now();
  const closed = await new Promise<{ hadError: boolean; error?: string }>((resolve) => {
    let error: string | undefined;
    s.on('data', (d: Buffer) => {
      firstAfterEnd ??= s.writableEnded;
      chunks.push(d);
    });
    s.once('end', () => (endedAt = now()));
    s.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
    s.once('close', (hadError: boolean) => resolve({ hadError, error }));
    s.end(data);
  });
  const all = Buffer.concat(chunks);
  const nl = all.indexOf(10);
  const header = nl >= 0 ? all.subarray(0, nl).toString() : '';
  const tail = nl >= 0 ? all.subarray(nl + 1) : Buffer.alloc(0);
  return {
    tag,
    ...sockInfo(s),
    sent: bytes,
    serverDigestOk: header === sha(data),
    tailBytes: tail.length,
    tailOk: tail.length === tailBytes && sha(tail) === sha(block(tailBytes, 0x7a11)),
    firstDataAfterOurEnd: firstAfterEnd ?? null,
    gotEnd: endedAt > 0,
    ms: (endedAt || now()) - t0,
    ...closed,
  };
}

interface Opts {
  addr: string;
  port: number;
  tcpPort: number;
  ctrlPort: number;
  refusedPort: number;
  bytes: number;
  tcpBytes: number;
  halfBytes: number;
  tail: number;
  rounds: number;
}

function options(argv: string[]): Opts {
  return {
    addr: arg(argv, '--addr'),
    port: Number(arg(argv, '--port', '7731')),
    tcpPort: Number(arg(argv, '--tcp-port', '7732')),
    ctrlPort: Number(arg(argv, '--ctrl-port', '7730')),
    refusedPort: Number(arg(argv, '--refused-port', '7739')),
    bytes: Number(arg(argv, '--bytes', String(16 << 20))),
    tcpBytes: Number(arg(argv, '--tcp-bytes', String(1 << 20))),
    halfBytes: Number(arg(argv, '--half-bytes', String(1 << 20))),
    tail: Number(arg(argv, '--tail', String(1 << 20))),
    rounds: Number(arg(argv, '--rounds', '20')),
  };
}

/** The client tests against `peer`, each reported as `what` with `from` (our address). */
async function clientTests(peer: string, o: Opts): Promise<void> {
  const from = o.addr;
  const run = async (what: string, f: () => Promise<Res>) => {
    try {
      report(what, { from, to: peer, ...(await f()) });
    } catch (e) {
      report(what, { from, to: peer, error: (e as Error).message, code: (e as Error & { code?: string }).code ?? null });
    }
  };
  await run('echo', () => echoTest(zivm(), peer, o.port, `echo-${from}`, o.bytes, o.rounds));
  await run('plain', () => echoTest(nodeNet, peer, o.tcpPort, `plain-${from}`, o.tcpBytes, o.rounds));
  await run('half', () => halfCloseTest(zivm(), peer, o.port, `half-${from}`, o.halfBytes, o.tail));
  await run('refused', () => refused(peer, o.refusedPort));
}

// ---- control ---------------------------------------------------------------------------

/** A control connection: JSON lines both ways. */
class Ctrl {
  private waiting: { resolve: (m: Res) => void; reject: (e: Error) => void }[] = [];
  private queue: Res[] = [];
  private closed = false;
  constructor(readonly s: nodeNet.Socket) {
    readline.createInterface({ input: s }).on('line', (line) => {
      const m = JSON.parse(line) as Res;
      const w = this.waiting.shift();
      if (w) w.resolve(m);
      else this.queue.push(m);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w.reject(new Error('control connection closed'));
    });
  }
  send(m: Res): void {
    this.s.write(`${JSON.stringify(m)}\n`);
  }
  next(): Promise<Res> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.closed) return Promise.reject(new Error('control connection closed'));
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }
  async ask(m: Res): Promise<Res> {
    this.send(m);
    return this.next();
  }
}

/** Connects to the server guest's control port (plain TCP), retrying until it listens. */
async function ctrlConnect(peer: string, port: number, timeoutMs = 120000): Promise<Ctrl> {
  const t0 = Date.now();
  let tries = 0;
  for (;;) {
    tries++;
    try {
      const s = nodeNet.connect({ host: peer, port });
      await new Promise<void>((resolve, reject) => {
        s.once('connect', resolve);
        s.once('error', reject);
      });
      report('ctrl-connected', { tries, ms: Date.now() - t0 });
      return new Ctrl(s);
    } catch (e) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`control connection to ${peer}:${port}: ${(e as Error).message} after ${tries} tries`);
      await sleep(200);
    }
  }
}

// ---- roles -----------------------------------------------------------------------------

async function server(argv: string[]): Promise<void> {
  const o = options(argv);
  setup(o.addr);
  await startServers(o.port, o.tcpPort, o.tail);
  const ctrlSrv = nodeNet.createServer((c) => {
    const ctrl = new Ctrl(c);
    c.on('close', () => process.exit(0));
    const loop = async () => {
      for (;;) {
        const m = await ctrl.next();
        if (m.cmd === 'client') {
          await clientTests(String(m.peer), o);
          ctrl.send({ done: true });
        } else if (m.cmd === 'poweroff') {
          report('powering-off');
          fs.writeFileSync('/proc/sysrq-trigger', 'o');
          await sleep(60000);
        } else if (m.cmd === 'bye') {
          ctrl.send({ bye: true });
          c.end();
          return;
        } else ctrl.send({ error: `unknown command ${String(m.cmd)}` });
      }
    };
    loop().catch(() => process.exit(0));
  });
  await new Promise<void>((resolve) => ctrlSrv.listen(o.ctrlPort, '0.0.0.0', () => resolve()));
  report('ctrl-listening', { port: o.ctrlPort });
}

async function client(argv: string[]): Promise<void> {
  const o = options(argv);
  const peer = arg(argv, '--peer');
  setup(o.addr);
  await startServers(o.port, o.tcpPort, o.tail);
  const ctrl = await ctrlConnect(peer, o.ctrlPort);
  // This guest -> the other.
  await clientTests(peer, o);
  // The other guest -> this one.
  await ctrl.ask({ cmd: 'client', peer: o.addr });
  // A process of this guest, connected to the other guest's zivm server, is killed.
  await killedProcess(peer, o.port, `victim-${o.addr}`);
  // A zivm connection to the other guest, which then powers off with it open.
  const { s } = await open(zivm(), peer, o.port, 'E', `poweroff-${o.addr}`);
  await pingPong(s, 3, Buffer.from('still here'));
  report('pre-poweroff', sockInfo(s));
  const gone = new Promise<Res>((resolve) => {
    let code: string | null = null;
    let t = 0;
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: 'hung', ms: now() - t });
    }, 20000);
    s.on('error', (e: Error & { code?: string }) => (code = e.code ?? e.message));
    s.on('end', () => undefined);
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ code, ms: now() - t });
    });
    s.resume();
    t = now();
    ctrl.send({ cmd: 'poweroff' });
  });
  report('peer-gone', { transport: s.transport, ...(await gone) });
  ctrl.s.destroy();
}

/**
 * Starts a second zivm process in this guest (a peer of its own, through the
 * agent) that connects to peer:port and exchanges a few bytes; then SIGKILLs it.
 * The other guest reports how its side of that connection ended (tag `tag`).
 */
async function killedProcess(peer: string, port: number, tag: string): Promise<void> {
  const v = spawn(process.execPath, [__filename, 'victim', '--peer', peer, '--port', String(port), '--tag', tag], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => v.once('exit', r));
  const line = await new Promise<string>((resolve) => {
    let buf = '';
    v.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')));
    });
    v.once('exit', () => resolve(buf));
  });
  let info: Res;
  try {
    info = JSON.parse(line) as Res;
  } catch {
    info = { error: line };
  }
  report('victim-connected', { tag, ...info });
  await sleep(300);
  report('killing-victim', { tag });
  v.kill('SIGKILL');
  await exited;
  await sleep(1000);
}

/** The process killedProcess kills: connects, exchanges a few bytes, prints its socket, waits. */
async function victim(argv: string[]): Promise<void> {
  const { s } = await open(zivm(), arg(argv, '--peer'), Number(arg(argv, '--port')), 'E', arg(argv, '--tag'));
  await pingPong(s, 3, Buffer.from('doomed'));
  const d = require('../../src/shm/join').currentDomain(); // eslint-disable-line @typescript-eslint/no-require-imports
  process.stdout.write(`${JSON.stringify({ ...sockInfo(s), peer: d?.id ?? null, vector: d?.guest?.vector ?? null })}\n`);
  await new Promise(() => undefined); // until killed
}

async function bench(argv: string[]): Promise<void> {
  const o = options(argv);
  const peer = arg(argv, '--peer');
  const trials = Number(arg(argv, '--trials', '5'));
  const msg = Buffer.alloc(Number(arg(argv, '--msg', '1')), 0x61);
  const warm = Number(arg(argv, '--warm', '50'));
  const warmup = Number(arg(argv, '--warmup', '1'));
  setup(o.addr);
  await startServers(o.port, o.tcpPort, o.tail);
  const ctrl = await ctrlConnect(peer, o.ctrlPort);
  const mods: Record<string, Any> = { shm: zivm(), tcp: nodeNet };
  const ports: Record<string, number> = { shm: o.port, tcp: o.tcpPort };
  const data = block(o.bytes, 0xb1c);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(o.bytes));
  // Trials up to 0 warm both paths up (TCG translates the guests' code as it first runs) and are not counted.
  for (let trial = 1 - warmup; trial <= trials; trial++) {
    for (const t of trial & 1 ? ['shm', 'tcp'] : ['tcp', 'shm']) {
      const r: Res = { trial, transport: t };
      // Round trips.
      {
        const { s, connectMs } = await open(mods[t], peer, ports[t], 'E', `lat-${t}-${trial}`);
        r.connectMs = connectMs;
        r.client = sockInfo(s);
        await pingPong(s, warm, msg);
        const e0 = eth0();
        const rtt = await pingPong(s, o.rounds, msg);
        r.latEth0 = eth0Since(e0);
        r.rttUs = { n: rtt.length, median: pick(rtt, 0.5), p99: pick(rtt, 0.99), min: rtt[0], max: rtt[rtt.length - 1] };
        await closeGently(s);
      }
      // Bulk, one way: the sink answers when it has it all.
      {
        const { s } = await open(mods[t], peer, ports[t], 'S', `bulk-${t}-${trial}`);
        r.bulkClient = sockInfo(s);
        const e0 = eth0();
        const t0 = now();
        await new Promise<void>((resolve, reject) => {
          s.once('data', () => resolve());
          s.once('error', reject);
          s.once('close', () => reject(new Error('closed before the sink answered')));
          s.write(head);
          s.write(data);
        });
        const ms = now() - t0;
        r.bulkEth0 = eth0Since(e0);
        r.bulk = { bytes: o.bytes, ms, MBps: o.bytes / 1e6 / (ms / 1000) };
        await closeGently(s);
      }
      report('bench', r);
    }
  }
  await ctrl.ask({ cmd: 'bye' });
  ctrl.s.destroy();
}

if (require.main === module) {
  const [role, ...rest] = process.argv.slice(2);
  const run = ({ server, client, bench, victim } as Record<string, (a: string[]) => Promise<void>>)[role];
  if (!run) {
    process.stderr.write('usage: pair-peer.js server|client|bench --addr A [--peer B] ...\n');
    process.exit(2);
  }
  run(rest).then(
    () => {
      if (role !== 'server') process.exit(0);
    },
    (e) => {
      report('error', { message: (e as Error).message, stack: (e as Error).stack });
      process.exit(1);
    },
  );
}
