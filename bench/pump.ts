/**
 * pump: streaming throughput one way. For each write size, the client opens a
 * fresh connection and writes the same buffer as fast as backpressure allows
 * ('drain') for the set duration, then ends; the server only counts. The rate
 * is the server's: bytes received between the first byte and 'end'. CPU is
 * process.cpuUsage() in each process over its part of the transfer. The sizes
 * of WARM_MIN and up then run once more, on new connections of the same
 * processes: by then V8 has optimised the data path (the first runs include
 * that, as a fresh process would see it).
 */
import { loBytesOrNaN } from '../tools/kit/lo';
import type { Json, Metric, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, connectTo, cpuSince, listen, netFor, now, pairedTrial, say, watchdog, zivmStats } from './common';
import { sizeLabel } from './format';

const NAME = 'pump';
/** Sizes whose rate is measured a second time, warm. */
const WARM_MIN = 64 * 1024;
export const warmSizes = (sizes: number[]): number[] => sizes.filter((size) => size >= WARM_MIN);

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `one process pair per trial, a fresh connection per write size (${subject.sizes.map(sizeLabel).join(', ')}, in that order); ` +
    `the client writes one buffer repeatedly for ${subject.duration} s, waiting for 'drain' when write() returns false, then ends; ` +
    `MB/s = bytes received / (server's 'end' - first byte), 1 MB = 10^6 B; CPU = process.cpuUsage() user+system of each process over the transfer, ` +
    `in seconds per GB (10^9 B); the sizes of ${sizeLabel(WARM_MIN)} and up then once more on new connections of the same processes (warm: ` +
    `V8 has optimised the data path by then)`,
  metrics: (subject) => [
    ...subject.sizes.flatMap((count): Metric[] => [
      { key: `${count}:rate`, label: `${sizeLabel(count)} writes`, unit: 'MB/s', better: 'higher' },
      { key: `${count}:cpuTx`, label: `${sizeLabel(count)} writes, sender CPU`, unit: 's/GB', better: 'lower' },
      { key: `${count}:cpuRx`, label: `${sizeLabel(count)} writes, receiver CPU`, unit: 's/GB', better: 'lower' },
    ]),
    ...warmSizes(subject.sizes).map((count): Metric => ({ key: `${count}:warm`, label: `${sizeLabel(count)} writes, warm`, unit: 'MB/s', better: 'higher' })),
  ],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, target, subject, { client: { sizes: subject.sizes, duration: subject.duration } }, async (server, client) => {
      const metrics: Record<string, number> = {};
      const perSize: Json[] = [];
      const seen = { client: {} as Record<string, number>, server: {} as Record<string, number> };
      const wait = 30000 + subject.duration * 4000;
      const runs = [...subject.sizes.map((size) => ({ size, warm: false })), ...warmSizes(subject.sizes).map((size) => ({ size, warm: true }))];
      for (const { size, warm } of runs) {
        const item = await client.expect('size-done', wait);
        const res = await server.expect('conn-done', wait);
        if (item.size !== size) throw new Error(`pump: expected size ${size}, client reported ${item.size}`);
        if (res.bytes !== item.written) throw new Error(`pump ${sizeLabel(size)}: client wrote ${item.written} bytes, server received ${res.bytes}`);
        seen.client[item.transport] = (seen.client[item.transport] ?? 0) + 1;
        seen.server[res.transport] = (seen.server[res.transport] ?? 0) + 1;
        if (warm) {
          metrics[`${size}:warm`] = res.bytes / 1e6 / res.seconds;
          continue;
        }
        const gb = res.bytes / 1e9;
        metrics[`${size}:rate`] = res.bytes / 1e6 / res.seconds;
        metrics[`${size}:cpuTx`] = item.cpu / gb;
        metrics[`${size}:cpuRx`] = res.cpu / gb;
        perSize.push({
          size,
          bytes: res.bytes,
          receiverSeconds: res.seconds,
          senderSeconds: item.seconds,
          senderCpuSeconds: item.cpu,
          receiverCpuSeconds: res.cpu,
          receiverChunks: res.chunks,
          loopbackBytes: item.lo,
        });
      }
      const done = await client.expect('done');
      return { metrics, seen, detail: { perSize, zivm: done.zivm } };
    }),
};

function server(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const srv = net.createServer((sock) => {
    const transport = new TransportTally().add(sock);
    let bytes = 0;
    let chunks = 0;
    let t0 = 0;
    let cpu0 = process.cpuUsage();
    sock.on('data', (chunk) => {
      if (chunks++ === 0) {
        t0 = now();
        cpu0 = process.cpuUsage();
      }
      bytes += chunk.length;
    });
    sock.on('end', () => {
      say({ event: 'conn-done', bytes, chunks, seconds: now() - t0, cpu: cpuSince(cpu0), transport });
    });
    sock.on('error', (err) => say({ event: 'error', message: `server socket: ${err.message}` }));
  });
  listen(srv, target, params);
}

function oneSize(net: ReturnType<typeof netFor>, ep: Json, size: number, duration: number): Promise<Json> {
  return new Promise((resolve, reject) => {
    const buf = Buffer.alloc(size, 0x62);
    const sock = connectTo(net, ep);
    let transport = '';
    let written = 0;
    let count = 0;
    let t0 = 0;
    let deadline = 0;
    let cpu0 = process.cpuUsage();
    let lo0 = 0;
    const every = size >= 16384 ? 0 : 15;
    const dog = watchdog(() => `${size} B writes: ${transport ? `${written} B written over ${transport}` : 'connecting'}`);
    const pump = (): void => {
      dog.poke();
      for (;;) {
        if ((++count & every) === 0 && now() >= deadline) {
          sock.end();
          return;
        }
        written += size;
        if (!sock.write(buf)) {
          sock.once('drain', pump);
          return;
        }
      }
    };
    sock.on('connect', () => {
      transport = new TransportTally().add(sock);
      lo0 = loBytesOrNaN();
      cpu0 = process.cpuUsage();
      t0 = now();
      deadline = t0 + duration;
      pump();
    });
    sock.on('data', () => undefined);
    sock.on('close', (hadError) => {
      dog.stop();
      if (hadError) return;
      resolve({ event: 'size-done', size, written, transport, seconds: now() - t0, cpu: cpuSince(cpu0), lo: loBytesOrNaN() - lo0 });
    });
    sock.on('error', (err) => {
      dog.stop();
      reject(new Error(`client socket (${size} B writes): ${err.message}`));
    });
  });
}

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  void (async () => {
    const sizes = params.sizes as number[];
    for (const size of [...sizes, ...warmSizes(sizes)]) say(await oneSize(net, params.ep, size, Number(params.duration)));
    say({ event: 'done', zivm: zivmStats() });
  })().catch((err: Error) => {
    say({ event: 'error', message: err.message });
    process.exit(1);
  });
}

if (require.main === module) childMain({ server, client });
