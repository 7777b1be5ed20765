/**
 * idle: two processes with one open connection and nothing to say. CPU time
 * is read from /proc/<pid>/stat (utime + stime) at the start and end of the
 * window, from outside. The four transports of a trial run at the same time
 * (being idle, they leave each other the cores).
 */
import { execFileSync } from 'node:child_process';
import type { Child, Commands, Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, clientEnv, connectTo, listen, netFor, procTicks, say, startChild, startServer } from './common';

const NAME = 'idle';
const SETTLE_MS = 500;

let clkTck = 0;
function ticksPerSecond(): number {
  if (!clkTck) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

export const scenario: Scenario = {
  name: NAME,
  method: (s) =>
    `a server and a client process with one connection open and no traffic; after ${SETTLE_MS} ms to settle, utime+stime from /proc/<pid>/stat ` +
    `over ${s.idleSeconds} s (clock tick ${1000 / ticksPerSecond()} ms), as % of one core; the four transports of a trial run at the same time`,
  metrics: () => [
    { key: 'server', label: 'idle connection, server process', unit: '% core', better: 'lower' },
    { key: 'client', label: 'idle connection, client process', unit: '% core', better: 'lower' },
  ],
  async trialAll(ts: readonly TransportKey[], s: RunSettings): Promise<Map<TransportKey, TrialOutcome | Error>> {
    const out = new Map<TransportKey, TrialOutcome | Error>();
    const pairs = new Map<TransportKey, { server: Child; client: Child; seen: Json }>();
    const children: Child[] = [];
    try {
      await Promise.all(
        ts.map(async (t) => {
          try {
            const { server, ep } = await startServer(NAME, t, s);
            children.push(server);
            const client = startChild(NAME, 'client', t, { ep }, clientEnv(t, s));
            children.push(client);
            const c = await client.expect('connected');
            const sc = await server.expect('connection');
            pairs.set(t, { server, client, seen: { client: { [c.transport]: 1 }, server: { [sc.transport]: 1 } } });
          } catch (e) {
            out.set(t, e as Error);
          }
        }),
      );
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const pids = [...pairs.values()].flatMap((p) => [p.server.pid, p.client.pid]);
      if (s.daemonPid) pids.push(s.daemonPid);
      const before = new Map(pids.map((pid) => [pid, procTicks(pid)]));
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, s.idleSeconds * 1000));
      const seconds = (performance.now() - t0) / 1000;
      const pct = (pid: number): number => ((procTicks(pid) - before.get(pid)!) / ticksPerSecond() / seconds) * 100;
      const daemon = s.daemonPid ? pct(s.daemonPid) : undefined;
      for (const [t, p] of pairs) {
        // Still connected at the end of the window?
        p.client.send({ cmd: 'check' });
        p.server.send({ cmd: 'check' });
        const metrics = { server: pct(p.server.pid), client: pct(p.client.pid) };
        const [cc, sc] = await Promise.all([p.client.expect('check'), p.server.expect('check')]);
        if (!cc.open || !sc.open) out.set(t, new Error(`idle: the connection closed during the window (client ${cc.open}, server ${sc.open})`));
        else out.set(t, { metrics, seen: p.seen, detail: { seconds, daemonPercent: t === 'zivm-shm' ? daemon : undefined } });
      }
      return out;
    } finally {
      await Promise.all(children.map((c) => c.stop()));
    }
  },
};

function server(t: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(t);
  let open = false;
  const srv = net.createServer((sock) => {
    open = true;
    say({ event: 'connection', transport: new TransportTally().add(sock) });
    sock.on('close', () => (open = false));
    sock.on('error', () => undefined);
  });
  listen(srv, t, params);
  commands.on('check', () => say({ event: 'check', open }));
}

function client(t: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(t);
  let open = false;
  const sock = connectTo(net, params.ep);
  sock.on('connect', () => {
    open = true;
    say({ event: 'connected', transport: new TransportTally().add(sock) });
  });
  sock.on('close', () => (open = false));
  sock.on('error', (e) => say({ event: 'error', message: `client socket: ${e.message}` }));
  commands.on('check', () => say({ event: 'check', open }));
}

if (require.main === module) childMain({ server, client });
