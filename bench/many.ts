/**
 * many: 100 concurrent connections between one client and one server process,
 * each an echo loop of 64-byte messages with one message in flight per
 * connection. Counts echoes completed across all connections.
 */
import type { Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, connectTo, cpuSince, echoServer, netFor, now, pairedTrial, say, serverReport, watchdog, zivmStats } from './common';
import type nodeNet from 'node:net';

const NAME = 'many';
const SIZE = 64;

export const scenario: Scenario = {
  name: NAME,
  method: (s) =>
    `${s.many} connections opened at once by one client process; when all are up, each runs a ${SIZE} B echo loop (one message in flight per connection); ` +
    `${warmupOf(s.duration)} s warm-up, then round trips completed across all connections in ${s.duration} s, per second`,
  metrics: (s) => [{ key: 'rate', label: `${s.many} connections, ${SIZE} B echoes`, unit: 'msg/s', better: 'higher' }],
  trial: (t: TransportKey, s: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, t, s, { client: { duration: s.duration, warmup: warmupOf(s.duration), count: s.many } }, async (server, client) => {
      const r = await client.expect('result', 15000 + s.duration * 4000);
      const sr = await serverReport(server);
      if (r.connected !== s.many) throw new Error(`many: ${r.connected} of ${s.many} connections came up`);
      return {
        metrics: { rate: r.count / r.seconds },
        seen: { client: r.seen, server: sr.seen },
        detail: { echoes: r.count, seconds: r.seconds, connectSeconds: r.connectSeconds, clientCpuSeconds: r.cpu, serverCpuSeconds: sr.cpu, zivm: r.zivm },
      };
    }),
};

function warmupOf(duration: number): number {
  return Math.min(0.25, duration / 4);
}

function client(t: TransportKey, params: Json): void {
  const net = netFor(t);
  const seen = new TransportTally();
  const count = Number(params.count);
  const msg = Buffer.alloc(SIZE, 0x63);
  const socks: nodeNet.Socket[] = [];
  const tc = now();
  let connected = 0;
  let echoes = 0;
  let running = false;
  let stopped = false;
  const dog = watchdog(() => `${connected} of ${count} connected, ${echoes} echoes so far`);
  for (let i = 0; i < count; i++) {
    const sock = connectTo(net, params.ep);
    socks.push(sock);
    sock.setNoDelay(true);
    let got = 0;
    sock.on('connect', () => {
      dog.poke();
      seen.add(sock);
      if (++connected === count) start();
    });
    sock.on('data', (d) => {
      got += d.length;
      while (got >= SIZE) {
        got -= SIZE;
        echoes++;
        dog.poke();
        if (!stopped) sock.write(msg);
      }
    });
    sock.on('error', (e) => {
      if (stopped) return;
      say({ event: 'error', message: `client socket ${i}: ${e.message}` });
      process.exit(1);
    });
  }
  function start(): void {
    if (running) return;
    running = true;
    const connectSeconds = now() - tc;
    for (const s of socks) s.write(msg);
    setTimeout(() => {
      const e0 = echoes;
      const t0 = now();
      const cpu0 = process.cpuUsage();
      setTimeout(() => {
        const n = echoes - e0;
        const seconds = now() - t0;
        const cpu = cpuSince(cpu0);
        stopped = true;
        dog.stop();
        say({ event: 'result', count: n, seconds, cpu, connected, connectSeconds, seen: seen.counts, zivm: zivmStats() });
        for (const s of socks) s.destroy();
      }, Number(params.duration) * 1000);
    }, Number(params.warmup) * 1000);
  }
}

if (require.main === module) childMain({ server: echoServer, client });
