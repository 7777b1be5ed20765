/**
 * Both ends of the guest<->host zivm socket test (guest-net.test.ts).
 *
 *   node net-peer.js host --port P
 *     The host side, run in a private network namespace whose only address
 *     besides loopback is 10.77.1.1 (on lo, or on a tap device the guest's eth0
 *     is plugged into): a zivm echo server on 0.0.0.0:P; on stdin,
 *     `{"cmd":"connect","host":H,"port":N,"bytes":B}` lines make it a client of
 *     the guest (ping-pong, then a sha256-checked echo of B bytes), and
 *     `{"cmd":"refused","host":H,"port":N}` connects where nobody listens.
 *     Everything it sees is a JSON line on stdout.
 *
 *   node net-peer.js guest --host-addr A --port P --refused-port R --guest-port G --bytes B
 *     The guest side (as root in the guest, chrooted into the host's node): puts
 *     10.77.2.2 on eth0 (on lo if there is no eth0), binds the ivshmem device to vfio-pci and starts the guest
 *     agent (`zivm guest setup`), joins the domain through the agent
 *     (ZIVM_GUEST_PCI=auto), then
 *       1. client of the host's echo server at A:P (ping-pong, sha256 echo);
 *       2. connects to A:R where nobody listens;
 *       3. echo server on 0.0.0.0:G until the host's client has been served;
 *       4. with --victim-addr V --victim-port Q: connects to a second host peer
 *          there and waits for the connection to end (the test kills that peer);
 *       5. connects to A:P again, exchanges a few bytes and powers the guest off
 *          with the connection open (sysrq o: no shutdown, no close).
 *     Lines `ZIVM-NET {json}` on the console.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export const HOST_ADDR = '10.77.1.1';
export const GUEST_ADDR = '10.77.2.2';

export function arg(argv: string[], name: string, d?: string): string {
  const i = argv.indexOf(name);
  if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
  if (d === undefined) throw new Error(`missing ${name}`);
  return d;
}

function zivm(): Any {
  // Loaded after the environment is set (ZIVM_GUEST_PCI is read on first use).
  return require('../../src/index'); // eslint-disable-line @typescript-eslint/no-require-imports
}

/** A deterministic block of `n` bytes. */
export function block(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n + 3);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b.subarray(0, n);
}

/** Echo server: every connection echoes what it gets; `onConn` sees each socket. */
function echoServer(port: number, onConn: (s: Any) => void): Promise<Any> {
  const net = zivm();
  const srv = net.createServer((s: Any) => {
    s.on('error', () => undefined);
    onConn(s);
    s.pipe(s);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '0.0.0.0', () => resolve(srv));
  });
}

/**
 * Connects to host:port; ping-pong `rounds` single bytes, then writes `bytes`
 * bytes, ends, and compares the sha256 of what comes back.
 */
async function client(host: string, port: number, bytes: number, rounds: number): Promise<Record<string, unknown>> {
  const net = zivm();
  const t0 = process.hrtime.bigint();
  const s = net.connect({ host, port });
  const res: Record<string, unknown> = {};
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  res.connectMs = Number(process.hrtime.bigint() - t0) / 1e6;
  res.transport = s.transport;
  res.remoteAddress = s.remoteAddress;
  res.remotePort = s.remotePort;
  // Ping-pong.
  const rtt: number[] = [];
  let failed: Error | undefined;
  const onError = (e: Error) => (failed = e);
  s.on('error', onError);
  const one = () =>
    new Promise<void>((resolve, reject) => {
      if (failed) return reject(failed);
      const t = process.hrtime.bigint();
      s.once('data', () => {
        rtt.push(Number(process.hrtime.bigint() - t) / 1e3);
        resolve();
      });
      s.write('x');
    });
  for (let i = 0; i < rounds; i++) await one();
  s.off('error', onError);
  rtt.sort((a, b) => a - b);
  res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(rtt[rtt.length >> 1]), max: Math.round(rtt[rtt.length - 1]) } : null;
  // Bulk echo.
  const data = block(bytes, 0x5eed);
  const want = crypto.createHash('sha256').update(data).digest('hex');
  const h = crypto.createHash('sha256');
  let got = 0;
  const t1 = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      got += d.length;
      h.update(d);
    });
    s.once('end', resolve);
    s.once('error', reject);
    s.end(data);
  });
  res.echoMs = Number(process.hrtime.bigint() - t1) / 1e6;
  res.bytes = got;
  res.sha256Ok = got === bytes && h.digest('hex') === want;
  s.destroy();
  return res;
}

/** Connects where nobody listens: the error it gets (or `hung` after 10 s). */
export function refused(host: string, port: number): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const t = Date.now();
    const s = zivm().connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: 'hung', ms: Date.now() - t });
    }, 10000);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ connected: true, transport: s.transport });
    });
    s.once('error', (e: Error & { code?: string; syscall?: string }) => {
      clearTimeout(timer);
      resolve({ code: e.code ?? null, syscall: e.syscall ?? null, message: e.message, transport: s.transport, ms: Date.now() - t });
    });
  });
}

// ---- host ------------------------------------------------------------------------

async function host(argv: string[]): Promise<void> {
  const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const port = Number(arg(argv, '--port'));
  let conns = 0;
  await echoServer(port, (s) => {
    const id = ++conns;
    const t = Date.now();
    let bytes = 0;
    out({ ev: 'accepted', id, transport: s.transport, remoteAddress: s.remoteAddress });
    s.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    s.on('error', (e: Error & { code?: string }) => out({ ev: 'conn-error', id, code: e.code ?? null, message: e.message, bytes, at: Date.now(), ms: Date.now() - t }));
    s.on('close', () => out({ ev: 'conn-close', id, bytes, at: Date.now(), ms: Date.now() - t }));
  });
  const d = require('../../src/shm/join').currentDomain(); // eslint-disable-line @typescript-eslint/no-require-imports
  out({ ev: 'listening', port, peer: d?.id ?? null });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const m = JSON.parse(line) as { cmd: string; host: string; port: number; bytes: number; rounds: number };
    if (m.cmd === 'refused') {
      refused(m.host, m.port).then((r) => out({ ev: 'refused', ...r }));
    }
    if (m.cmd === 'connect') {
      client(m.host, m.port, m.bytes, m.rounds).then(
        (r) => out({ ev: 'client', ...r }),
        (e: Error & { code?: string }) => out({ ev: 'client', error: e.message, code: e.code ?? null }),
      );
    }
  });
  rl.on('close', () => process.exit(0));
}

// ---- guest -----------------------------------------------------------------------

function report(what: string, o: Record<string, unknown>): void {
  process.stdout.write(`ZIVM-NET ${JSON.stringify({ what, ...o })}\n`);
}

async function guest(argv: string[]): Promise<void> {
  const hostAddr = arg(argv, '--host-addr');
  const port = Number(arg(argv, '--port'));
  const refusedPort = Number(arg(argv, '--refused-port'));
  const guestPort = Number(arg(argv, '--guest-port'));
  const bytes = Number(arg(argv, '--bytes'));
  const rounds = Number(arg(argv, '--rounds', '20'));
  const victimAddr = arg(argv, '--victim-addr', '');
  const victimPort = Number(arg(argv, '--victim-port', '0'));

  // Setup (root): an address on lo that exists only in this guest, and the device on vfio-pci.
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  if (fs.existsSync('/sys/class/net/eth0')) {
    // On the host peer's tap link: TCP between the two works, so fallbacks are real.
    execFileSync('ip', ['link', 'set', 'eth0', 'up']);
    execFileSync('ip', ['addr', 'add', `${GUEST_ADDR}/16`, 'dev', 'eth0']);
  } else {
    execFileSync('ip', ['addr', 'add', `${GUEST_ADDR}/32`, 'dev', 'lo']);
  }
  // `zivm guest setup` binds the only ivshmem device to vfio-pci and starts the agent; ZIVM_GUEST_PCI=auto finds it.
  const t0 = Date.now();
  const setup = execFileSync(process.execPath, [require.resolve('../../src/cli/main'), 'guest', 'setup'], { encoding: 'utf8' });
  const pci = /^export ZIVM_GUEST_PCI=(\S+)$/m.exec(setup)?.[1];
  if (!pci) throw new Error(`zivm guest setup said: ${setup}`);
  process.env.ZIVM_GUEST_PCI = 'auto';
  const { getDomain, lastJoinError } = require('../../src/shm/join'); // eslint-disable-line @typescript-eslint/no-require-imports
  const d = getDomain(false);
  if (!d) throw new Error(`guest join failed: ${lastJoinError?.message}`);
  const { publishedAddrs } = require('../../src/shm/directory'); // eslint-disable-line @typescript-eslint/no-require-imports
  const { formatAddr } = require('../../src/shm/directory'); // eslint-disable-line @typescript-eslint/no-require-imports
  report('joined', {
    pci: d.guest.pci,
    setupPci: pci,
    id: d.id,
    guestPeer: d.guest.ivPosition,
    vector: d.guest.vector,
    gen: d.gen,
    nodeId: d.nodeId,
    guest: !!d.guest,
    published: (publishedAddrs(d.i32, d.geo, d.id) as Any[]).map(formatAddr),
    ms: Date.now() - t0,
  });

  // 1. Guest client -> host server.
  try {
    report('to-host', await client(hostAddr, port, bytes, rounds));
  } catch (e) {
    report('to-host', { error: (e as Error).message });
  }

  // 2. Nobody listens there.
  report('refused', await refused(hostAddr, refusedPort));

  // 3. Guest server <- host client: serve one connection to its end.
  let srv: Any;
  await new Promise<void>((resolve, reject) => {
    echoServer(guestPort, (s) => {
      report('accepted', { transport: s.transport, remoteAddress: s.remoteAddress });
      s.once('close', () => {
        srv.close();
        resolve();
      });
    }).then((x) => {
      srv = x;
      report('listening', { port: guestPort });
    }, reject);
  });

  // 4. A connection to a second host peer, which the test kills: the daemon's reap
  //    flags the slot and wakes us through QEMU (vector 0).
  if (victimAddr) {
    const v = zivm().connect({ host: victimAddr, port: victimPort });
    await new Promise<void>((resolve, reject) => {
      v.once('connect', () => v.write('hello'));
      v.once('data', () => resolve());
      v.once('error', reject);
    });
    const t = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        report('victim-gone', { error: 'hung', ms: Date.now() - t });
        v.destroy();
        resolve();
      }, 20000);
      let code: string | null = null;
      v.on('error', (e: Error & { code?: string }) => (code = e.code ?? e.message));
      v.on('end', () => undefined);
      v.once('close', () => {
        clearTimeout(timer);
        report('victim-gone', { code, ms: Date.now() - t });
        resolve();
      });
      v.resume();
      report('victim-connected', { transport: v.transport });
    });
  }

  // 5. A connection to the host, then power off with it open.
  const s = zivm().connect({ host: hostAddr, port });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => s.write('still here'));
    s.once('data', () => resolve());
    s.once('error', reject);
  });
  report('powering-off', { transport: s.transport });
  fs.writeFileSync('/proc/sysrq-trigger', 'o');
  await new Promise((r) => setTimeout(r, 60000));
}

if (require.main === module) {
  const [role, ...rest] = process.argv.slice(2);
  const run = role === 'host' ? host : role === 'guest' ? guest : undefined;
  if (!run) {
    process.stderr.write('usage: net-peer.js host|guest ...\n');
    process.exit(2);
  }
  run(rest).catch((e) => {
    if (role === 'guest') report('error', { message: (e as Error).message, stack: (e as Error).stack });
    else process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  });
}
