/**
 * ping-pong: one connection, 64-byte message, echoed back; the client sends
 * the next message when the whole echo has arrived. Round trip times are
 * taken with hrtime around each exchange, after a warm-up.
 */
import type { Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import {
  TransportTally,
  childMain,
  connectTo,
  cpuSince,
  echoServer,
  netFor,
  pairedTrial,
  quantile,
  say,
  serverReport,
  transportOf,
  watchdog,
  zivmStats,
} from './common';

const NAME = 'ping-pong';
const SIZE = 64;
/**
 * The warm-up lasts this long at least (a smoke run: a fifth), whatever the
 * count: with a count alone, the faster transport would be timed earlier in
 * its processes' lives, while V8's compiler threads still take turns on the
 * cores, and the tails would compare different phases.
 */
const WARMUP_MS = 1000;
export const warmupMsOf = (subject: RunSettings): number => (subject.quick ? WARMUP_MS / 5 : WARMUP_MS);

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `one connection; the client writes ${SIZE} B, the server echoes it, the client sends the next message once all ${SIZE} B are back; ` +
    `warm-up round trips for ${warmupMsOf(subject)} ms from the first (and at least ${subject.warmup}), then ${subject.rounds} timed with process.hrtime; p50/p99/p99.9 of those (µs)`,
  metrics: () => [
    { key: 'p50', label: `${SIZE} B round trip p50`, unit: 'µs', better: 'lower' },
    { key: 'p99', label: `${SIZE} B round trip p99`, unit: 'µs', better: 'lower' },
    { key: 'p999', label: `${SIZE} B round trip p99.9`, unit: 'µs', better: 'lower' },
  ],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(
      NAME,
      target,
      subject,
      { client: { rounds: subject.rounds, warmup: subject.warmup, warmupMs: warmupMsOf(subject) } },
      async (server, client) => {
        const res = await client.expect('result', 60000 + warmupMsOf(subject) + subject.rounds * 5);
        const sr = await serverReport(server);
        return {
          metrics: { p50: res.p50, p99: res.p99, p999: res.p999 },
          seen: { client: res.seen, server: sr.seen },
          detail: { mean: res.mean, min: res.min, max: res.max, rounds: res.rounds, clientCpuSeconds: res.cpu, zivm: res.zivm },
        };
      },
    ),
};

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const rounds = Number(params.rounds);
  const warmup = Number(params.warmup);
  const warmupNs = BigInt(Math.round(Number(params.warmupMs ?? 0) * 1e6));
  let first = 0n;
  const lat = new Float64Array(rounds);
  const msg = Buffer.alloc(SIZE, 0x61);
  const seen = new TransportTally();
  const sock = connectTo(net, params.ep);
  sock.setNoDelay(true);
  let i = -warmup;
  let got = 0;
  let t0 = 0n;
  let cpu0 = process.cpuUsage();
  const dog = watchdog(() =>
    i === -warmup && got === 0 ? `connecting or first round trip, transport ${transportOf(sock)}` : `after ${i + warmup} round trips, ${got} B of an echo in`,
  );
  const send = (): void => {
    t0 = process.hrtime.bigint();
    if (first === 0n) first = t0;
    sock.write(msg);
  };
  sock.on('connect', () => {
    seen.add(sock);
    send();
  });
  sock.on('data', (chunk) => {
    got += chunk.length;
    if (got < SIZE) return;
    const t1 = process.hrtime.bigint();
    dog.poke();
    got -= SIZE;
    if (i >= 0) lat[i] = Number(t1 - t0) / 1000;
    i++;
    // The warm-up goes on until it has lasted long enough too.
    if (i === 0 && t1 - first < warmupNs) i = -1;
    if (i === 0) cpu0 = process.cpuUsage();
    if (i < rounds) return send();
    const cpu = cpuSince(cpu0);
    dog.stop();
    const sorted = Float64Array.from(lat).sort();
    let sum = 0;
    for (const value of lat) sum += value;
    say({
      event: 'result',
      rounds,
      p50: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      p999: quantile(sorted, 0.999),
      mean: sum / rounds,
      min: sorted[0],
      max: sorted[rounds - 1],
      cpu,
      seen: seen.counts,
      zivm: zivmStats(),
    });
    sock.end();
  });
  sock.on('error', (err) => {
    say({ event: 'error', message: `client socket: ${err.message}` });
    process.exit(1);
  });
}

if (require.main === module) childMain({ server: echoServer, client });
