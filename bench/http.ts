/**
 * http, express: an unmodified node:http server (and the same answer from an
 * Express application) loaded with autocannon from another process. zivm
 * comes in only through the preload hook
 * (NODE_OPTIONS="--require zivm/register", the package's bundled hook), in both processes:
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

/** Seconds of responses not counted at the start of the first window (connection set-up). */
const WARMUP = 0.3;
/** Where the warm window starts, in seconds after the first response (1 with --quick): V8 has optimised both sides by then. */
const WARM_S = 3;
const warmOf = (subject: RunSettings): number => (subject.quick ? 1 : WARM_S);

/** The case for one kind of server: node:http itself, or an Express application on it. */
function httpCase(name: 'http' | 'express'): Scenario {
  const what = name === 'http' ? 'node:http' : 'express';
  return {
    name,
    method: (subject) =>
      `${name === 'http' ? 'node:http server' : 'Express 5 application (one route, on node:http)'} answering every request with a ${BODY.length} B text body; autocannon (${subject.httpConnections} connections, no pipelining) in a separate process, ` +
      `one run of whole seconds (autocannon's granularity), with two windows of ${subject.duration} s each: from ${WARMUP} s after the first response (a fresh pair of processes, V8 still compiling), and warm, from ${warmOf(subject)} s after it; ` +
      `2xx responses per second; zivm only through the preload hook (NODE_OPTIONS=--require zivm/register)`,
    metrics: (subject) => [
      { key: 'rps', label: `${what}, ${subject.httpConnections} conns, fresh`, unit: 'req/s', better: 'higher' },
      { key: 'rps:warm', label: `${what}, ${subject.httpConnections} conns, warm`, unit: 'req/s', better: 'higher' },
    ],
    async trial(target: TransportKey, subject: RunSettings): Promise<TrialOutcome> {
      if (!autocannonPath()) throw new Error('autocannon is not installed (npm install -D autocannon)');
      const zivm = target.startsWith('zivm');
      const spec = {
        server: { framework: name },
        client: { duration: subject.duration, warmup: WARMUP, warm: warmOf(subject), connections: subject.httpConnections },
        serverEnv: childEnv(subject, { preload: zivm, zivmOff: target === 'zivm-tcp' }),
        clientEnv: childEnv(subject, { preload: zivm }),
      };
      return pairedTrial(NAME, target, subject, spec, async (server, client) => {
        const res = await client.expect('result', 15000 + subject.duration * 4000);
        const sr = await serverReport(server);
        if (res.errors || res.timeouts || res.non2xx)
          throw new Error(`${name}: ${res.errors} errors, ${res.timeouts} timeouts, ${res.non2xx} non-2xx responses`);
        if (!(res.requests > 0) || !(res.warmRequests > 0)) throw new Error(`${name}: no request completed in a window (${res.requests}, ${res.warmRequests})`);
        if (zivm && (!res.zivm || !sr.hooked)) throw new Error(`${name}: the preload hook is not active (client ${!!res.zivm}, server ${sr.hooked})`);
        return {
          metrics: { rps: res.requests / res.seconds, 'rps:warm': res.warmRequests / res.warmSeconds },
          seen: { client: res.seen, server: sr.seen },
          detail: {
            requests: res.requests,
            seconds: res.seconds,
            warmRequests: res.warmRequests,
            warmSeconds: res.warmSeconds,
            requestsWholeRun: res.total,
            latencyP50ms: res.p50,
            latencyP99ms: res.p99,
            zivm: res.zivm,
          },
        };
      });
    },
  };
}

export const scenario = httpCase('http');
export const expressScenario = httpCase('express');

/** An Express application with one route giving the same answer as the node:http server. */
function expressApp(): http.RequestListener {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded in the express case's server only (a development dependency)
  const express = require('express') as () => http.RequestListener & {
    get(path: string, fn: (req: unknown, res: { type(t: string): { send(body: string): void } }) => void): void;
  };
  const app = express();
  app.get('/', (_req, res) => res.type('text/plain').send(BODY));
  return app;
}

/** Express, if installed (a development dependency, as autocannon). */
export function haveExpress(): boolean {
  try {
    require.resolve('express');
    return true;
  } catch {
    return false;
  }
}

function server(target: TransportKey, params: Json, commands: Commands): void {
  const seen = new TransportTally();
  const srv =
    params.framework === 'express'
      ? http.createServer(expressApp())
      : http.createServer((_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
          res.end(BODY);
        });
  srv.on('connection', (sock: nodeNet.Socket) => seen.add(sock));
  listen(srv, target, params);
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
 * ceil(warm + duration)); two rates: the 2xx responses from `warmup` seconds
 * after the first response to `warmup + duration`, and from `warm` seconds
 * after it to `warm + duration`.
 */
class Window {
  count = 0;
  /** When the window closed (the first response after its end), 0 while open. */
  closedAt = 0;
  constructor(
    readonly from: number,
    readonly to: number,
  ) {}

  add(time: number, ok: boolean): void {
    if (time < this.from || this.closedAt) return;
    if (time >= this.to) this.closedAt = time;
    else if (ok) this.count++;
  }

  /** Seconds the window covered (up to the last response seen, if the run ended first). */
  seconds(last: number): number {
    return (this.closedAt || Math.min(this.to, last)) - this.from;
  }
}

function client(_t: TransportKey, params: Json): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded in the client role only: the server roles never need it
  const autocannon = require('autocannon') as (opts: Json, cb: (err: Error | null, r: CannonResult) => void) => Cannon;
  const seen = new TransportTally();
  // node:net and zivm both publish every client socket here.
  dc.subscribe('net.client.socket', (msg) => {
    const sock = (msg as { socket: nodeNet.Socket }).socket;
    sock.once('connect', () => seen.add(sock));
  });
  const ep = params.ep as { path?: string; port?: number };
  const warmup = Number(params.warmup);
  const warmAt = Number(params.warm);
  const duration = Number(params.duration);
  const opts: Json = ep.path ? { url: 'http://localhost/', socketPath: ep.path } : { url: `http://127.0.0.1:${ep.port}/` };
  opts.connections = Number(params.connections);
  opts.duration = Math.ceil(Math.max(warmup, warmAt) + duration + 0.1);
  let fresh: Window | undefined;
  let warm: Window | undefined;
  let last = 0;
  const inst = autocannon(opts, (err, res) => {
    if (err) {
      say({ event: 'error', message: err.stack ?? err.message });
      process.exit(1);
    }
    say({
      event: 'result',
      requests: fresh?.count ?? 0,
      seconds: fresh?.seconds(last) ?? 0,
      warmRequests: warm?.count ?? 0,
      warmSeconds: warm?.seconds(last) ?? 0,
      total: res.requests.total,
      p50: res.latency.p50,
      p99: res.latency.p99,
      errors: res.errors,
      timeouts: res.timeouts,
      non2xx: res.non2xx,
      seen: seen.counts,
      zivm: zivmStats(),
    });
  });
  inst.on('response', (_c, status) => {
    const time = performance.now() / 1000;
    last = time;
    if (!fresh || !warm) {
      fresh = new Window(time + warmup, time + warmup + duration);
      warm = new Window(time + warmAt, time + warmAt + duration);
    }
    const ok = status >= 200 && status < 300;
    fresh.add(time, ok);
    warm.add(time, ok);
  });
}

if (require.main === module) childMain({ server, client });
