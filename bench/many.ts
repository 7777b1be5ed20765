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
  method: (subject) =>
    `${subject.many} connections opened at once by one client process; when all are up, each runs a ${SIZE} B echo loop (one message in flight per connection); ` +
    `${warmupOf(subject.duration)} s warm-up, then round trips completed across all connections in ${subject.duration} s, per second`,
  metrics: (subject) => [{ key: 'rate', label: `${subject.many} connections, ${SIZE} B echoes`, unit: 'msg/s', better: 'higher' }],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(
      NAME,
      target,
      subject,
      { client: { duration: subject.duration, warmup: warmupOf(subject.duration), count: subject.many } },
      async (server, client) => {
        const res = await client.expect('result', 15000 + subject.duration * 4000);
        const sr = await serverReport(server);
        if (res.connected !== subject.many) throw new Error(`many: ${res.connected} of ${subject.many} connections came up`);
        return {
          metrics: { rate: res.count / res.seconds },
          seen: { client: res.seen, server: sr.seen },
          detail: {
            echoes: res.count,
            seconds: res.seconds,
            connectSeconds: res.connectSeconds,
            clientCpuSeconds: res.cpu,
            serverCpuSeconds: sr.cpu,
            zivm: res.zivm,
          },
        };
      },
    ),
};

function warmupOf(duration: number): number {
  return Math.min(0.25, duration / 4);
}

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
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
    sock.on('data', (chunk) => {
      got += chunk.length;
      while (got >= SIZE) {
        got -= SIZE;
        echoes++;
        dog.poke();
        if (!stopped) sock.write(msg);
      }
    });
    sock.on('error', (err) => {
      if (stopped) return;
      say({ event: 'error', message: `client socket ${i}: ${err.message}` });
      process.exit(1);
    });
  }
  function start(): void {
    if (running) return;
    running = true;
    const connectSeconds = now() - tc;
    for (const sock of socks) sock.write(msg);
    setTimeout(
      () => {
        const e0 = echoes;
        const t0 = now();
        const cpu0 = process.cpuUsage();
        setTimeout(
          () => {
            const count2 = echoes - e0;
            const seconds = now() - t0;
            const cpu = cpuSince(cpu0);
            stopped = true;
            dog.stop();
            say({ event: 'result', count: count2, seconds, cpu, connected, connectSeconds, seen: seen.counts, zivm: zivmStats() });
            for (const sock of socks) sock.destroy();
          },
          Number(params.duration) * 1000,
        );
      },
      Number(params.warmup) * 1000,
    );
  }
}

if (require.main === module) childMain({ server: echoServer, client });
