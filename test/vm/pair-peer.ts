/**
 * Both guests of the guest<->guest test (guest-pair.test.ts); the pair's
 * set-up, servers, clients and control are tools/vm/pair.ts.
 *
 *   node pair-peer.js server --addr 10.77.3.2 --ctrl-port C [options]
 *   node pair-peer.js client --addr 10.77.3.1 --peer 10.77.3.2 --ctrl-port C [options]
 *
 * `server` serves (pairServer) and, asked by `client` over control, runs the
 * client tests against it. `client` connects to control, runs the client
 * tests against the server guest, has the server guest run them back, then a
 * second process of its own (`victim`) connected to the server guest is
 * SIGKILLed, and last it holds a zivm connection to the server guest while
 * that one powers off.
 *
 * The client tests: a zivm echo (ping-pong, then a sha256-checked echo of
 * --bytes), a plain node:net echo over eth0, a zivm half-close, and a zivm
 * connection to --refused-port where nobody listens.
 *
 * Everything is reported as `ZIVM-PAIR {json}` lines on the console.
 */
import nodeNet from 'node:net';
import { say } from '../../tools/kit/child';
import { spawnNode } from '../../tools/kit/proc';
import { sleep } from '../../tools/kit/wait';
import {
  PairOptions,
  ctrlConnect,
  eth0,
  eth0Since,
  now,
  open,
  pairOptions,
  pairServer,
  pairSetup,
  pick,
  pingPong,
  report,
  sockInfo,
  startServers,
} from '../../tools/vm/pair';
import { Any, Res, arg, block, bulkEcho, membership, refused, runRoles, sha, zivm } from '../../tools/vm/peer';

/** Ping-pong, then a sha256-checked echo of `bytes`. */
async function echoTest(mod: Any, host: string, port: number, tag: string, bytes: number, rounds: number): Promise<Res> {
  const { s, connectMs } = await open(mod, host, port, 'E', tag);
  const res: Res = { tag, connectMs, ...sockInfo(s) };
  const rtt = await pingPong(s, rounds, Buffer.from('x'));
  res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(pick(rtt, 0.5)), max: Math.round(rtt[rtt.length - 1]) } : null;
  const e0 = eth0();
  Object.assign(res, await bulkEcho(s, bytes));
  res.eth0 = eth0Since(e0);
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
    s.on('data', (chunk: Buffer) => {
      firstAfterEnd ??= s.writableEnded;
      chunks.push(chunk);
    });
    s.once('end', () => (endedAt = now()));
    s.on('error', (err: Error & { code?: string }) => (error = err.code ?? err.message));
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

/** The client tests against `peer`, each reported as `what` with `from` (our address). */
async function clientTests(peer: string, out: PairOptions): Promise<void> {
  const from = out.addr;
  const run = async (what: string, fn: () => Promise<Res>) => {
    try {
      report(what, { from, to: peer, ...(await fn()) });
    } catch (err) {
      report(what, { from, to: peer, error: (err as Error).message, code: (err as Error & { code?: string }).code ?? null });
    }
  };
  await run('echo', () => echoTest(zivm(), peer, out.port, `echo-${from}`, out.bytes, out.rounds));
  await run('plain', () => echoTest(nodeNet, peer, out.tcpPort, `plain-${from}`, out.tcpBytes, out.rounds));
  await run('half', () => halfCloseTest(zivm(), peer, out.port, `half-${from}`, out.halfBytes, out.tail));
  await run('refused', () => refused(peer, out.refusedPort));
}

// ---- roles -----------------------------------------------------------------------------

async function client(argv: string[]): Promise<void> {
  const out = pairOptions(argv);
  const peer = arg(argv, '--peer');
  pairSetup(out.addr);
  await startServers(out.port, out.tcpPort, out.tail);
  const ctrl = await ctrlConnect(peer, out.ctrlPort);
  // This guest -> the other.
  await clientTests(peer, out);
  // The other guest -> this one.
  await ctrl.ask({ cmd: 'client', peer: out.addr });
  // A process of this guest, connected to the other guest's zivm server, is killed.
  await killedProcess(peer, out.port, `victim-${out.addr}`);
  // A zivm connection to the other guest, which then powers off with it open.
  const { s } = await open(zivm(), peer, out.port, 'E', `poweroff-${out.addr}`);
  await pingPong(s, 3, Buffer.from('still here'));
  report('pre-poweroff', sockInfo(s));
  const gone = new Promise<Res>((resolve) => {
    let code: string | null = null;
    let time = 0;
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: 'hung', ms: now() - time });
    }, 20000);
    s.on('error', (err: Error & { code?: string }) => (code = err.code ?? err.message));
    s.on('end', () => undefined);
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ code, ms: now() - time });
    });
    s.resume();
    time = now();
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
  const value = spawnNode(__filename, ['victim', '--peer', peer, '--port', String(port), '--tag', tag], {
    name: 'victim',
    stdin: false,
    stderr: 'inherit',
    timeoutMs: Infinity,
  });
  let info: Res;
  try {
    info = await value.next();
  } catch (err) {
    info = { error: (err as Error).message };
  }
  report('victim-connected', { tag, ...info });
  await sleep(300);
  report('killing-victim', { tag });
  value.kill('SIGKILL');
  await value.exited;
  await sleep(1000);
}

/** The process killedProcess kills: connects, exchanges a few bytes, prints its socket, waits. */
async function victim(argv: string[]): Promise<void> {
  const { s } = await open(zivm(), arg(argv, '--peer'), Number(arg(argv, '--port')), 'E', arg(argv, '--tag'));
  await pingPong(s, 3, Buffer.from('doomed'));
  const { peer, vector } = membership();
  say({ ...sockInfo(s), peer, vector: vector ?? null });
  await new Promise(() => undefined); // until killed
}

if (require.main === module) {
  runRoles(
    { server: (argv) => pairServer(argv, clientTests), client, victim },
    { usage: 'usage: pair-peer.js server|client --addr A [--peer B] ...', report, stays: ['server'] },
  );
}
