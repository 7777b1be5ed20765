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
  method: (subject) =>
    `a server and a client process with one connection open and no traffic; after ${SETTLE_MS} ms to settle, utime+stime from /proc/<pid>/stat ` +
    `over ${subject.idleSeconds} s (clock tick ${1000 / ticksPerSecond()} ms), as % of one core; the four transports of a trial run at the same time`,
  metrics: () => [
    { key: 'server', label: 'idle connection, server process', unit: '% core', better: 'lower' },
    { key: 'client', label: 'idle connection, client process', unit: '% core', better: 'lower' },
  ],
  async trialAll(ts: readonly TransportKey[], subject: RunSettings): Promise<Map<TransportKey, TrialOutcome | Error>> {
    const out = new Map<TransportKey, TrialOutcome | Error>();
    const pairs = new Map<TransportKey, { server: Child; client: Child; seen: Json }>();
    const children: Child[] = [];
    try {
      await Promise.all(
        ts.map(async (target) => {
          try {
            const { server, ep } = await startServer(NAME, target, subject);
            children.push(server);
            const client = startChild(NAME, 'client', target, { ep }, clientEnv(target, subject));
            children.push(client);
            const item = await client.expect('connected');
            const sc = await server.expect('connection');
            pairs.set(target, { server, client, seen: { client: { [item.transport]: 1 }, server: { [sc.transport]: 1 } } });
          } catch (err) {
            out.set(target, err as Error);
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const pids = [...pairs.values()].flatMap((part) => [part.server.pid, part.client.pid]);
      if (subject.daemonPid) pids.push(subject.daemonPid);
      const before = new Map(pids.map((pid) => [pid, procTicks(pid)]));
      const t0 = performance.now();
      await new Promise((resolve) => setTimeout(resolve, subject.idleSeconds * 1000));
      const seconds = (performance.now() - t0) / 1000;
      const pct = (pid: number): number => ((procTicks(pid) - before.get(pid)!) / ticksPerSecond() / seconds) * 100;
      const daemon = subject.daemonPid ? pct(subject.daemonPid) : undefined;
      for (const [target, part] of pairs) {
        // Still connected at the end of the window?
        part.client.send({ cmd: 'check' });
        part.server.send({ cmd: 'check' });
        const metrics = { server: pct(part.server.pid), client: pct(part.client.pid) };
        const [cc, sc] = await Promise.all([part.client.expect('check'), part.server.expect('check')]);
        if (!cc.open || !sc.open) out.set(target, new Error(`idle: the connection closed during the window (client ${cc.open}, server ${sc.open})`));
        else out.set(target, { metrics, seen: part.seen, detail: { seconds, daemonPercent: target === 'zivm-shm' ? daemon : undefined } });
      }
      return out;
    } finally {
      await Promise.all(children.map((item) => item.stop()));
    }
  },
};

function server(target: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(target);
  let open = false;
  const srv = net.createServer((sock) => {
    open = true;
    say({ event: 'connection', transport: new TransportTally().add(sock) });
    sock.on('close', () => (open = false));
    sock.on('error', () => undefined);
  });
  listen(srv, target, params);
  commands.on('check', () => say({ event: 'check', open }));
}

function client(target: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(target);
  let open = false;
  const sock = connectTo(net, params.ep);
  sock.on('connect', () => {
    open = true;
    say({ event: 'connected', transport: new TransportTally().add(sock) });
  });
  sock.on('close', () => (open = false));
  sock.on('error', (err) => say({ event: 'error', message: `client socket: ${err.message}` }));
  commands.on('check', () => say({ event: 'check', open }));
}

if (require.main === module) childMain({ server, client });
