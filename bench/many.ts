/**
 * many: 100 concurrent connections between one client and one server process,
 * each an echo loop of 64-byte messages with one message in flight per
 * connection. Counts echoes completed across all connections.
 *
 * scale: the same with 10,000 connections (--scale), and the memory they hold
 * while they run: for zivm over shared memory the region's pages that became
 * memory (mincore), for TCP the kernel's TCP buffer memory (/proc/net/sockstat);
 * a Unix socket's buffers have no such counter.
 */
import fs from 'node:fs';
import type { Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, connectTo, cpuSince, echoServer, netFor, now, pairedTrial, say, serverReport, watchdog, zivmStats } from './common';
import type nodeNet from 'node:net';

const SIZE = 64;
/** Connections opened at once. */
const BATCH = 1000;

function makeScenario(name: 'many' | 'scale', countOf: (subject: RunSettings) => number): Scenario {
  return {
    name,
    method: (subject) =>
      `${countOf(subject)} connections opened at once by one client process; when all are up, each runs a ${SIZE} B echo loop (one message in flight per connection); ` +
      `${warmupOf(subject.duration)} s warm-up, then round trips completed across all connections in ${subject.duration} s, per second` +
      (name === 'scale'
        ? '; memory held at the end, while all are open: shared memory that became resident for zivm over shm (mincore over the region), kernel TCP buffers for TCP (/proc/net/sockstat), none measured for Unix sockets'
        : ''),
    metrics: (subject) => [
      { key: 'rate', label: `${countOf(subject)} connections, ${SIZE} B echoes`, unit: 'msg/s', better: 'higher' },
      ...(name === 'scale' ? [{ key: 'held', label: `${countOf(subject)} connections, memory held`, unit: 'MiB', better: 'lower' as const }] : []),
    ],
    trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
      pairedTrial(
        'many',
        target,
        subject,
        { client: { duration: subject.duration, warmup: warmupOf(subject.duration), count: countOf(subject) } },
        async (server, client) => {
          const res = await client.expect('result', 30000 + countOf(subject) * 5 + subject.duration * 4000);
          const sr = await serverReport(server);
          if (res.connected !== countOf(subject)) throw new Error(`${name}: ${res.connected} of ${countOf(subject)} connections came up`);
          return {
            metrics: { rate: res.count / res.seconds, held: typeof res.held === 'number' ? res.held / 1048576 : NaN },
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
}

export const scenario = makeScenario('many', (subject) => subject.many);
export const scaleScenario = makeScenario('scale', (subject) => subject.scale);

/** Kernel memory of TCP buffers in this network namespace (/proc/net/sockstat, pages), in bytes. */
function tcpMemory(): number {
  const match = /^TCP:.* mem (\d+)/m.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'));
  return match ? Number(match[1]) * 4096 : NaN;
}

/** Memory held by this transport's connections now: the domain's resident shared memory for zivm over shm, kernel TCP buffers for TCP. */
function heldNow(target: TransportKey): number {
  if (target === 'zivm-shm') return (zivmStats()?.memory?.resident as number | undefined) ?? 0;
  if (target === 'net-tcp' || target === 'zivm-tcp') return tcpMemory();
  return NaN;
}

function warmupOf(duration: number): number {
  return Math.min(0.25, duration / 4);
}

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const heldBefore = heldNow(target);
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
  // Opened a batch at a time (each batch once the one before is up): a Unix socket's
  // connect fails with EAGAIN when its listener's backlog is full.
  const open = (from: number): void => {
    const to = Math.min(count, from + BATCH);
    for (let i = from; i < to; i++) openOne(i, () => to < count && connected === to && open(to));
  };
  const openOne = (i: number, upped: () => unknown): void => {
    const sock = connectTo(net, params.ep);
    socks.push(sock);
    sock.setNoDelay(true);
    let got = 0;
    sock.on('connect', () => {
      dog.poke();
      seen.add(sock);
      if (++connected === count) start();
      else upped();
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
  };
  open(0);
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
            const held = heldNow(target) - heldBefore;
            stopped = true;
            dog.stop();
            say({
              event: 'result',
              count: count2,
              seconds,
              cpu,
              connected,
              connectSeconds,
              seen: seen.counts,
              zivm: zivmStats(),
              held: Number.isFinite(held) ? held : null,
            });
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
