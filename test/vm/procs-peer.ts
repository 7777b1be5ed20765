/**
 * Both ends of the test of several zivm processes in one guest (guest-procs.test.ts).
 *
 *   node procs-peer.js host --port P
 *     Host side, run in a private network namespace whose only address besides
 *     loopback is 10.77.1.1 (on lo): a zivm "tail" server on 0.0.0.0:P (echoes,
 *     and after the client's end() writes `tail <bytes received>` and ends:
 *     half-close). On stdin, `{"cmd":"hold","host":H,"port":N}` connects to the
 *     guest and keeps the connection open; `{"cmd":"end"}` half-closes the held
 *     connections. Everything it sees is a JSON line on stdout.
 *
 *   node procs-peer.js guest --host-addr A --port P --guest-port G --bytes B
 *     Guest orchestrator (as root in the guest). It never loads zivm itself: each
 *     step is a child process of its own, every one a peer of the domain through
 *     the agent `zivm guest setup` started. Lines `ZIVM-PROCS {json}` on the console.
 *
 *   node procs-peer.js child ROLE ...   (started by the orchestrator)
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';
import { GUEST_ADDR, HOST_ADDR, arg, block } from './net-peer';

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export { GUEST_ADDR, HOST_ADDR };

function zivm(): Any {
  return require('../../src/index'); // eslint-disable-line @typescript-eslint/no-require-imports
}

/** A server that echoes, and answers the client's end() with `tail <bytes>` and its own end (half-close). */
function tailServer(port: number, onConn: (s: Any, id: number) => void): Promise<Any> {
  let n = 0;
  const srv = zivm().createServer({ allowHalfOpen: true }, (s: Any) => {
    const id = ++n;
    let got = 0;
    s.on('error', () => undefined);
    onConn(s, id);
    s.on('data', (d: Buffer) => {
      got += d.length;
      s.write(d);
    });
    s.on('end', () => {
      // Half-closed by the client: we may still write.
      s.end(`tail ${got}`);
    });
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '0.0.0.0', () => resolve(srv));
  });
}

/**
 * Client of a tail server: writes `bytes` bytes and ends; checks that all of
 * them came back, then the `tail` line after our end (half-close), then end.
 */
async function tailClient(host: string, port: number, bytes: number): Promise<Record<string, unknown>> {
  const s = zivm().connect({ host, port, allowHalfOpen: true });
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const res: Record<string, unknown> = { transport: s.transport, remoteAddress: s.remoteAddress };
  const data = block(bytes, 0x7a11 + bytes);
  const want = crypto.createHash('sha256').update(data).digest('hex');
  const chunks: Buffer[] = [];
  let wroteEndAt = 0;
  let firstAfterEnd = -1;
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      if (wroteEndAt && firstAfterEnd < 0) firstAfterEnd = got;
      got += d.length;
      chunks.push(d);
    });
    s.once('end', resolve);
    s.once('error', reject);
    s.end(data, () => (wroteEndAt = Date.now()));
  });
  const all = Buffer.concat(chunks);
  res.ms = Date.now() - t0;
  res.echoOk = all.length >= bytes && crypto.createHash('sha256').update(all.subarray(0, bytes)).digest('hex') === want;
  res.tail = all.subarray(bytes).toString();
  res.bytes = bytes;
  s.destroy();
  return res;
}

// ---- host ------------------------------------------------------------------------

async function host(argv: string[]): Promise<void> {
  const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const port = Number(arg(argv, '--port'));
  await tailServer(port, (s, id) => {
    out({ ev: 'accepted', id, transport: s.transport, remoteAddress: s.remoteAddress });
    s.on('error', (e: Any) => out({ ev: 'conn-error', id, code: e.code ?? null }));
    s.on('close', () => out({ ev: 'conn-close', id }));
  });
  out({ ev: 'listening', port });
  const held: Any[] = [];
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const m = JSON.parse(line) as { cmd: string; host: string; port: number; tag: string };
    if (m.cmd === 'hold') {
      const s = zivm().connect({ host: m.host, port: m.port, allowHalfOpen: true });
      held.push(s);
      s.on('connect', () => {
        out({ ev: 'held', tag: m.tag, transport: s.transport });
        s.write('ping');
      });
      s.once('data', () => out({ ev: 'held-data', tag: m.tag }));
      s.on('error', (e: Any) => out({ ev: 'held-error', tag: m.tag, code: e.code ?? null }));
      s.on('end', () => {
        // The guest side is gone: as over TCP, the first write is taken (the peer would answer
        // it with a reset), the next fails with EPIPE and the socket closes.
        out({ ev: 'held-end', tag: m.tag });
        s.write('anyone there?');
        setTimeout(() => s.write('hello?'), 100);
      });
      s.on('close', () => out({ ev: 'held-close', tag: m.tag }));
    }
    if (m.cmd === 'tail') {
      tailClient(m.host, m.port, 1 << 20).then(
        (r) => out({ ev: 'tail', ...r }),
        (e: Any) => out({ ev: 'tail', error: e.message, code: e.code ?? null }),
      );
    }
  });
  rl.on('close', () => process.exit(0));
}

// ---- guest -----------------------------------------------------------------------

function report(what: string, o: Record<string, unknown>): void {
  process.stdout.write(`ZIVM-PROCS ${JSON.stringify({ what, ...o })}\n`);
}

interface Child {
  proc: ChildProcess;
  /** The next JSON line the child prints. */
  next(): Promise<Any>;
  exited: Promise<number | null>;
}

function child(role: string, args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [__filename, 'child', role, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const lines: Any[] = [];
  const waiting: ((v: Any) => void)[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; ) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let o: Any;
      try {
        o = JSON.parse(line);
      } catch {
        process.stdout.write(`[${role}] ${line}\n`);
        continue;
      }
      const w = waiting.shift();
      if (w) w(o);
      else lines.push(o);
    }
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  const next = () =>
    new Promise<Any>((resolve, reject) => {
      const o = lines.shift();
      if (o) return resolve(o);
      const t = setTimeout(() => reject(new Error(`${role}: no answer in 60 s`)), 60000);
      waiting.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  return { proc, next, exited };
}

async function guest(argv: string[]): Promise<void> {
  const hostAddr = arg(argv, '--host-addr');
  const port = Number(arg(argv, '--port'));
  const guestPort = Number(arg(argv, '--guest-port'));
  const bytes = Number(arg(argv, '--bytes'));

  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  execFileSync('ip', ['addr', 'add', `${GUEST_ADDR}/32`, 'dev', 'lo']);
  const setup = execFileSync(process.execPath, [require.resolve('../../src/cli/main'), 'guest', 'setup'], { encoding: 'utf8' });
  report('setup', { out: setup.trim() });

  // 1. A server process.
  const server = child('server', ['--port', String(guestPort)]);
  const sl = await server.next();
  report('server', sl);

  // 2. Two client processes at once: one to the server in this guest over loopback, one to the host.
  const local = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', String(bytes)]);
  const toHost = child('client', ['--host', hostAddr, '--port', String(port), '--bytes', String(bytes)]);
  const [lr, hr] = await Promise.all([local.next(), toHost.next()]);
  report('local', { ...lr, serverSaw: await server.next() });
  report('to-host', hr);
  // All three are members now, each with a vector of its own.
  report('members-up', { count: 3 });
  await new Promise((r) => setTimeout(r, 1500));
  local.proc.stdin!.end();
  toHost.proc.stdin!.end();
  await Promise.all([local.exited, toHost.exited]);

  // 3. With vectors=4: the server and three holders take them all; a fifth process finds none left.
  const holders = [child('idle', []), child('idle', []), child('idle', [])];
  for (const h of holders) report('holder', await h.next());
  const extra = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', '65536']);
  report('no-vector', { ...(await extra.next()), serverSaw: await server.next() });
  extra.proc.stdin!.end();
  await extra.exited;
  for (const h of holders) h.proc.kill('SIGKILL');
  await Promise.all(holders.map((h) => h.exited));
  // Their vectors are free again.
  const again = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', '65536']);
  report('vector-reused', { ...(await again.next()), serverSaw: await server.next() });
  again.proc.stdin!.end();
  await again.exited;

  // 4. A guest process killed mid-connection: a client holding a connection to the host,
  //    then the server holding one from the host (the host test connects when asked).
  const victim = child('hold', ['--host', hostAddr, '--port', String(port)]);
  report('victim-connected', await victim.next());
  await new Promise((r) => setTimeout(r, 300));
  report('killing-client', { at: Date.now() });
  victim.proc.kill('SIGKILL');
  await victim.exited;
  report('host-may-connect', { port: guestPort });
  report('host-tail', await server.next()); // the host's half-close exchange
  report('server-held', await server.next()); // the host's connection it holds open
  await new Promise((r) => setTimeout(r, 300));
  report('killing-server', {});
  server.proc.kill('SIGKILL');
  await server.exited;
  await new Promise((r) => setTimeout(r, 1500));

  // 5. The agent itself is killed: its processes leave the domain by themselves (their
  //    connections end on both sides); a new agent takes over and new processes join it.
  const pci = /^export ZIVM_GUEST_PCI=(\S+)$/m.exec(setup)?.[1];
  const agentPid = Number(fs.readFileSync(`/run/zivm/guest-${pci}.sock.pid`, 'utf8'));
  const orphan = child('hold', ['--host', hostAddr, '--port', String(port)]);
  report('orphan-connected', await orphan.next());
  report('killing-agent', { pid: agentPid });
  process.kill(agentPid, 'SIGKILL');
  report('orphan-closed', await orphan.next());
  orphan.proc.stdin!.end();
  await orphan.exited;
  const setup2 = execFileSync(process.execPath, [require.resolve('../../src/cli/main'), 'guest', 'setup'], { encoding: 'utf8' });
  report('setup-again', { out: setup2.trim() });
  const fresh = child('client', ['--host', hostAddr, '--port', String(port), '--bytes', '65536']);
  report('after-new-agent', await fresh.next());
  fresh.proc.stdin!.end();
  await fresh.exited;
  // Wait for the host test to see the ends before powering off.
  await new Promise((r) => setTimeout(r, 1500));
  report('done', {});
}

async function childMain(role: string, argv: string[]): Promise<void> {
  const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const who = () => {
    const d = require('../../src/shm/join').currentDomain(); // eslint-disable-line @typescript-eslint/no-require-imports
    return d ? { peer: d.id, vector: d.guest?.vector ?? null, guestPeer: d.guest?.ivPosition ?? null } : { peer: null, reason: require('../../src/shm/join').lastJoinError?.message ?? null }; // eslint-disable-line @typescript-eslint/no-require-imports
  };
  const stay = () => new Promise<void>((r) => process.stdin.on('end', r).resume());
  if (role === 'server') {
    await tailServer(Number(arg(argv, '--port')), (s) => {
      out({ ev: 'accepted', transport: s.transport, remoteAddress: s.remoteAddress });
    });
    out({ ev: 'listening', ...who() });
    await stay();
    return;
  }
  if (role === 'client') {
    const r = await tailClient(arg(argv, '--host'), Number(arg(argv, '--port')), Number(arg(argv, '--bytes')));
    out({ ...r, ...who() });
    await stay();
    return;
  }
  if (role === 'idle') {
    // Joins the domain (a listener makes it a member) and waits.
    await new Promise<void>((r) => zivm().createServer().listen(0, '127.0.0.1', r));
    out({ ev: 'idle', ...who() });
    await stay();
    return;
  }
  if (role === 'hold') {
    const s = zivm().connect({ host: arg(argv, '--host'), port: Number(arg(argv, '--port')) });
    let code: string | null = null;
    s.on('error', (e: Any) => (code = e.code ?? e.message));
    await new Promise<void>((r) => s.once('connect', r));
    s.write('hello');
    await new Promise<void>((r) => s.once('data', () => r()));
    out({ transport: s.transport, ...who() });
    s.resume();
    s.once('close', () => out({ ev: 'closed', code }));
    await stay();
    return;
  }
  throw new Error(`unknown child role ${role}`);
}

if (require.main === module) {
  const [role, ...rest] = process.argv.slice(2);
  const run = role === 'host' ? host : role === 'guest' ? guest : role === 'child' ? (a: string[]) => childMain(a[0], a.slice(1)) : undefined;
  if (!run) {
    process.stderr.write('usage: procs-peer.js host|guest|child ...\n');
    process.exit(2);
  }
  run(rest).then(
    () => {
      if (role !== 'host') process.exit(0);
    },
    (e) => {
      if (role === 'guest') report('error', { message: (e as Error).message, stack: (e as Error).stack });
      else process.stderr.write(`${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
