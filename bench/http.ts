/**
 * http: an unmodified node:http server loaded with autocannon from another
 * process. zivm comes in only through the preload hook
 * (NODE_OPTIONS="--require dist/src/register.js"), in both processes:
 *   zivm-shm  hook in server and load generator
 *   zivm-tcp  hook in both, ZIVM=off in the server (not in the domain), so the
 *             load generator's zivm falls back to TCP
 *   net-tcp   no hook
 *   net-unix  no hook, server on a Unix socket (autocannon's socketPath)
 */
import dc from 'node:diagnostics_channel';
import http from 'node:http';
import type nodeNet from 'node:net';
import type { Commands, Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childEnv, childMain, listen, pairedTrial, say, serverReport, zivmStats } from './common';

const NAME = 'http';
const BODY = 'hello world\n';

/** autocannon, if installed (it is a devDependency). */
export function autocannonPath(): string | undefined {
  try {
    return require.resolve('autocannon');
  } catch {
    return undefined;
  }
}

/** Seconds of responses not counted at the start (JIT, connection setup). */
const WARMUP = 0.3;

export const scenario: Scenario = {
  name: NAME,
  method: (s) =>
    `node:http server answering every request with a ${BODY.length} B text body; autocannon (${s.httpConnections} connections, no pipelining) in a separate process, ` +
    `one run of whole seconds (autocannon's granularity), of which the 2xx responses from ${WARMUP} s after the first one, for ${s.duration} s, count; zivm only through the preload hook (NODE_OPTIONS=--require dist/src/register.js); requests per second`,
  metrics: (s) => [{ key: 'rps', label: `node:http, ${s.httpConnections} connections`, unit: 'req/s', better: 'higher' }],
  async trial(t: TransportKey, s: RunSettings): Promise<TrialOutcome> {
    if (!autocannonPath()) throw new Error('autocannon is not installed (npm install -D autocannon)');
    const zivm = t.startsWith('zivm');
    const spec = {
      client: { duration: s.duration, warmup: WARMUP, connections: s.httpConnections },
      serverEnv: childEnv(s, { preload: zivm, zivmOff: t === 'zivm-tcp' }),
      clientEnv: childEnv(s, { preload: zivm }),
    };
    return pairedTrial(NAME, t, s, spec, async (server, client) => {
      const r = await client.expect('result', 15000 + s.duration * 4000);
      const sr = await serverReport(server);
      if (r.errors || r.timeouts || r.non2xx) throw new Error(`http: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx responses`);
      if (!(r.requests > 0)) throw new Error('http: no request completed');
      if (zivm && (!r.zivm || !sr.hooked)) throw new Error(`http: the preload hook is not active (client ${!!r.zivm}, server ${sr.hooked})`);
      return {
        metrics: { rps: r.requests / r.seconds },
        seen: { client: r.seen, server: sr.seen },
        detail: { requests: r.requests, seconds: r.seconds, requestsWholeRun: r.total, latencyP50ms: r.p50, latencyP99ms: r.p99, zivm: r.zivm },
      };
    });
  },
};

function server(t: TransportKey, params: Json, commands: Commands): void {
  const seen = new TransportTally();
  const srv = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
    res.end(BODY);
  });
  srv.on('connection', (sock: nodeNet.Socket) => seen.add(sock));
  listen(srv as unknown as nodeNet.Server, t, params);
  commands.on('report', () => say({ event: 'report', seen: seen.counts, hooked: zivmStats() !== undefined }));
}

interface CannonResult {
  requests: { total: number };
  latency: { p50: number; p99: number };
  errors: number;
  timeouts: number;
  non2xx: number;
}

interface Cannon {
  on(event: 'response', fn: (client: unknown, status: number) => void): void;
}

/**
 * One autocannon run (it works in whole seconds, so it runs for
 * ceil(warm-up + duration)); the rate counts 2xx responses from `warmup`
 * seconds after the first response to `warmup + duration`.
 */
function client(_t: TransportKey, params: Json): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const autocannon = require('autocannon') as (opts: Json, cb: (err: Error | null, r: CannonResult) => void) => Cannon;
  const seen = new TransportTally();
  // node:net and zivm both publish every client socket here.
  dc.subscribe('net.client.socket', (m) => {
    const sock = (m as { socket: nodeNet.Socket }).socket;
    sock.once('connect', () => seen.add(sock));
  });
  const ep = params.ep as { path?: string; port?: number };
  const warmup = Number(params.warmup);
  const duration = Number(params.duration);
  const opts: Json = ep.path ? { url: 'http://localhost/', socketPath: ep.path } : { url: `http://127.0.0.1:${ep.port}/` };
  opts.connections = Number(params.connections);
  opts.duration = Math.ceil(warmup + duration + 0.1);
  let first = 0;
  let from = 0;
  let to = 0;
  let inWindow = 0;
  let windowEnd = 0;
  let last = 0;
  const inst = autocannon(opts, (err, r) => {
    if (err) {
      say({ event: 'error', message: err.stack ?? err.message });
      process.exit(1);
    }
    say({
      event: 'result',
      requests: inWindow,
      seconds: (windowEnd || Math.min(to, last)) - from,
      total: r.requests.total,
      p50: r.latency.p50,
      p99: r.latency.p99,
      errors: r.errors,
      timeouts: r.timeouts,
      non2xx: r.non2xx,
      seen: seen.counts,
      zivm: zivmStats(),
    });
  });
  inst.on('response', (_c, status) => {
    const t = performance.now() / 1000;
    last = t;
    if (!first) {
      first = t;
      from = first + warmup;
      to = from + duration;
    }
    if (t < from || windowEnd) return;
    if (t >= to) {
      windowEnd = t;
      return;
    }
    if (status >= 200 && status < 300) inWindow++;
  });
}

if (require.main === module) childMain({ server, client });
