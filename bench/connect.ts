/**
 * connect: connection setup and teardown, one at a time. Each connection:
 * connect, 1 byte to the server, 1 byte back, the client ends, both sides
 * close; the next starts on the client's 'close'.
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
/** Warm-up by time: connection set-up code takes about a second to be optimised by V8, for every transport. */
const WARMUP_S = 1;

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `sequential connections from one client process: connect, 1 byte each way, client end(), next one on 'close'; ` +
    `${WARMUP_S} s of warm-up connections, then as many as fit in ${subject.duration} s; connections per second`,
  metrics: () => [{ key: 'rate', label: 'connect + 1 B each way + close', unit: 'conn/s', better: 'higher' }],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, target, subject, { client: { duration: subject.duration } }, async (server, client) => {
      const res = await client.expect('result', 15000 + subject.duration * 4000);
      const sr = await serverReport(server);
      return {
        metrics: { rate: res.count / res.seconds },
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
  let done = 0;
  let warm = true;
  const start = now();
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
      if (warm) {
        if (now() - start < WARMUP_S) return next();
        warm = false;
        done = 0;
      } else done++;
      if (done === 0) {
        t0 = now();
        cpu0 = process.cpuUsage();
      }
      if (done <= 0 || now() - t0 < duration) return next();
      dog.stop();
      say({ event: 'result', count: done, seconds: now() - t0, cpu: cpuSince(cpu0), seen: seen.counts, zivm: zivmStats() });
    });
  };
  next();
}

if (require.main === module) childMain({ server: echoServer, client });
