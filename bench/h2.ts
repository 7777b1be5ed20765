/**
 * h2: HTTP/2 without TLS (h2c) on each transport, node:http2 on both ends:
 * the server's sessions are made from the transport's connections
 * (http2Server.emit('connection', socket)), the client's session with
 * createConnection. Two figures on one session: requests per second with 10
 * streams in flight (GET, a 12 B answer each), then MB/s of one response
 * body the server writes in 64 KiB writes. HTTP/2's flow control lets 64 KiB
 * through per window update (node:http2's default window), so the bulk
 * figure is as much about how fast each side answers the other as about
 * moving bytes.
 */
import http2 from 'node:http2';
import type nodeNet from 'node:net';
import type { Commands, Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, connectTo, cpuSince, listen, netFor, now, pairedTrial, say, serverReport, watchdog } from './common';

const NAME = 'h2';
const WARMUP_S = 0.5;
const IN_FLIGHT = 10;
const CHUNK = 64 * 1024;
const ANSWER = 'hello world\n';

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `node:http2 (h2c) over a connection of each transport, one session: ` +
    `requests: ${IN_FLIGHT} GET streams in flight (a ${ANSWER.length} B answer each), ${WARMUP_S} s of warm-up, then ${subject.duration} s, requests completed per second; ` +
    `bulk: then one response whose body the server writes in ${CHUNK / 1024} KiB writes for ${subject.duration} s, MB/s at the client from its first byte to its end`,
  metrics: () => [
    { key: 'rps', label: `${IN_FLIGHT} streams in flight, small answers`, unit: 'req/s', better: 'higher' },
    { key: 'rate', label: 'one response, 64 KiB writes', unit: 'MB/s', better: 'higher' },
  ],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, target, subject, { server: { duration: subject.duration }, client: { duration: subject.duration } }, async (server, client) => {
      const rq = await client.expect('requests', 20000 + subject.duration * 4000);
      const bulk = await client.expect('bulk', 20000 + subject.duration * 4000);
      const sr = await serverReport(server);
      if (sr.sent !== bulk.bytes) throw new Error(`h2: the server wrote ${sr.sent} bytes of the body, the client received ${bulk.bytes}`);
      return {
        metrics: { rps: rq.count / rq.seconds, rate: bulk.bytes / 1e6 / bulk.seconds },
        seen: { client: rq.seen, server: sr.seen },
        detail: {
          requests: rq.count,
          seconds: rq.seconds,
          clientCpuSeconds: rq.cpu,
          bulkBytes: bulk.bytes,
          bulkSeconds: bulk.seconds,
          receiverCpuSeconds: bulk.cpu,
        },
      };
    }),
};

function server(target: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const duration = Number(params.duration);
  let sent = 0;
  const h2 = http2.createServer();
  h2.on('sessionError', () => undefined);
  h2.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    if (headers[':path'] !== '/bulk') {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end(ANSWER);
      return;
    }
    stream.respond({ ':status': 200 });
    const buf = Buffer.alloc(CHUNK, 0x61);
    const end = now() + duration;
    const go = (): void => {
      while (now() < end) {
        sent += buf.length;
        if (!stream.write(buf)) return void stream.once('drain', go);
      }
      stream.end();
    };
    go();
  });
  const srv = net.createServer((sock) => {
    seen.add(sock);
    sock.on('error', () => undefined);
    h2.emit('connection', sock);
  });
  listen(srv, target, params);
  commands.on('report', () => say({ event: 'report', seen: seen.counts, sent }));
}

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const duration = Number(params.duration);
  const fail = (what: string) => (err: Error) => {
    say({ event: 'error', message: `${what}: ${err.message}` });
    process.exit(1);
  };
  let sock: nodeNet.Socket | undefined;
  const session = http2.connect('http://localhost', {
    createConnection: () => {
      sock = connectTo(net, params.ep);
      sock.once('connect', () => seen.add(sock!));
      return sock;
    },
  });
  session.on('error', fail('client session'));

  // Requests, IN_FLIGHT at a time.
  let done = 0;
  let warm = true;
  let finished = false;
  const start = now();
  let t0 = 0;
  let cpu0 = process.cpuUsage();
  let open = 0;
  const dog = watchdog(() => `request ${done + 1}${warm ? ' (warm-up)' : ''}, ${open} in flight`);
  const one = (): void => {
    open++;
    const req = session.request({ ':path': '/' });
    req.on('error', fail('client stream'));
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      open--;
      dog.poke();
      if (body !== ANSWER) return fail('client stream')(new Error(`answer ${JSON.stringify(body)}`));
      if (warm) {
        if (now() - start >= WARMUP_S) {
          warm = false;
          t0 = now();
          cpu0 = process.cpuUsage();
        }
      } else if (!finished) done++;
      if (finished) {
        if (open === 0) bulk();
        return;
      }
      if (!warm && now() - t0 >= duration) {
        finished = true;
        dog.stop();
        say({ event: 'requests', count: done, seconds: now() - t0, cpu: cpuSince(cpu0), seen: seen.counts });
        if (open === 0) bulk();
        return;
      }
      one();
    });
    req.end();
  };

  // Then one large response.
  const bulk = (): void => {
    const req = session.request({ ':path': '/bulk' });
    req.on('error', fail('client bulk stream'));
    let bytes = 0;
    let first = 0;
    let bulkCpu = process.cpuUsage();
    const bulkDog = watchdog(() => `bulk: ${bytes} bytes received`);
    req.on('data', (chunk: Buffer) => {
      bulkDog.poke();
      if (first === 0) {
        first = now();
        bulkCpu = process.cpuUsage();
      }
      bytes += chunk.length;
    });
    req.on('end', () => {
      bulkDog.stop();
      say({ event: 'bulk', bytes, seconds: now() - first, cpu: cpuSince(bulkCpu), transport: sock ? seen.counts : undefined });
      session.close();
    });
    req.end();
  };
  session.once('connect', () => {
    for (let i = 0; i < IN_FLIGHT; i++) one();
  });
}

if (require.main === module) childMain({ server, client });
