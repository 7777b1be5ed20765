/**
 * connect: connection setup and teardown, one at a time. Each connection:
 * connect, 1 byte to the server, 1 byte back, the client ends, both sides
 * close; the next starts on the client's 'close'. Two figures: how long the
 * first 1,000 connections of a fresh pair of processes take (from the
 * client's start: loading the module, joining, code not yet optimised), and
 * the rate once warm.
 */
import type { Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import {
  TransportTally,
  childMain,
  connectTo,
  cpuSince,
  echoServer,
  netFor,
  now,
  pairedTrial,
  say,
  serverReport,
  transportOf,
  watchdog,
  zivmStats,
} from './common';

const NAME = 'connect';
/**
 * Warm-up by time, from the client's start: V8 takes one to three seconds of
 * connections to optimise the set-up code (longer the more code there is,
 * and on Node 20, which has no mid tier); what comes before is the cold figure's.
 */
const WARMUP_S = 3;
/** A smoke run (--quick) warms up for a second only. */
const warmupOf = (subject: RunSettings): number => (subject.quick ? 1 : WARMUP_S);
/** Connections of the cold figure. */
const COLD_COUNT = 1000;

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `sequential connections from one client process: connect, 1 byte each way, client end(), next one on 'close'; ` +
    `cold: ms from the client process's start (before it loads the module) until its first ${COLD_COUNT} connections have closed, in a fresh pair of processes; ` +
    `warm: connections per second in ${subject.duration} s after ${warmupOf(subject)} s (from the start) of warm-up connections`,
  metrics: () => [
    { key: 'rate', label: 'connect + 1 B each way + close', unit: 'conn/s', better: 'higher' },
    { key: 'cold', label: 'first 1,000 conns, fresh process', unit: 'ms', better: 'lower' },
  ],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, target, subject, { client: { duration: subject.duration, warmup: warmupOf(subject) } }, async (server, client) => {
      const res = await client.expect('result', 15000 + subject.duration * 4000);
      const sr = await serverReport(server);
      return {
        metrics: { rate: res.count / res.seconds, cold: res.coldMs },
        seen: { client: res.seen, server: sr.seen },
        detail: { connections: res.count, seconds: res.seconds, clientCpuSeconds: res.cpu, zivm: res.zivm },
      };
    }),
};

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const one = Buffer.from('x');
  const duration = Number(params.duration);
  const warmup = Number(params.warmup);
  let done = 0;
  let warm = true;
  let opened = 0;
  let coldMs = 0;
  /** now() counts from the process's start. */
  const start = 0;
  let t0 = 0;
  let cpu0 = process.cpuUsage();
  let stage = '';
  const dog = watchdog(() => `connection ${done + 1}${warm ? ' (warm-up)' : ''}: ${stage}`);
  const next = (): void => {
    stage = 'connecting';
    const sock = connectTo(net, params.ep);
    sock.setNoDelay(true);
    sock.on('connect', () => {
      stage = `connected over ${seen.add(sock)}, waiting for the byte back`;
      sock.write(one);
    });
    sock.on('data', () => {
      stage = `byte back, ended, waiting for 'close' (transport ${transportOf(sock)})`;
      sock.end();
    });
    sock.on('error', (err) => {
      say({ event: 'error', message: `client socket: ${err.message}` });
      process.exit(1);
    });
    sock.on('close', () => {
      dog.poke();
      if (++opened === COLD_COUNT) coldMs = performance.now();
      if (warm) {
        if (now() - start < warmup) return next();
        warm = false;
        done = 0;
      } else done++;
      if (done === 0) {
        t0 = now();
        cpu0 = process.cpuUsage();
      }
      if (done <= 0 || now() - t0 < duration || opened < COLD_COUNT) return next();
      dog.stop();
      say({ event: 'result', count: done, seconds: now() - t0, coldMs, cpu: cpuSince(cpu0), seen: seen.counts, zivm: zivmStats() });
    });
  };
  next();
}

if (require.main === module) childMain({ server: echoServer, client });
