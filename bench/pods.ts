/**
 * pods: two network namespaces of the run's own ("pods"), each with an
 * address on a bridge in a third namespace (veth pairs), as containers on
 * one node have. The ping-pong and pump programs run in them, the server in
 * pod A listening on all its addresses, the client in pod B dialling A's
 * address: zivm over shared memory (both pods share the run's daemon socket)
 * against node:net over the veth pairs and the bridge. Needs root (ip netns).
 */
import { execFileSync } from 'node:child_process';
import type { RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { childEnv, serverReport, startChild, withChildren } from './common';
import { sizeLabel } from './format';
import { warmupMsOf } from './ping-pong';
import { warmSizes } from './pump';

const NAME = 'pods';
const SIZES = [64 * 1024, 1024 * 1024];
const ADDR_A = '10.78.0.1';
const ADDR_B = '10.78.0.2';

let made: { a: string; b: string } | undefined;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** The two pods and their bridge, made once per run and removed when the driver exits. */
function pods(): { a: string; b: string } {
  if (made) return made;
  if (process.getuid?.() !== 0) throw new Error('the pods case makes network namespaces: run the bench as root');
  const prefix = `zb${process.pid % 100000}`;
  const bridge = `${prefix}br`;
  const names = { a: `${prefix}a`, b: `${prefix}b` };
  const remove = (): void => {
    for (const ns of [names.a, names.b, bridge]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // Not made (or gone already).
      }
    }
  };
  process.on('exit', remove);
  try {
    ip('netns', 'add', bridge);
    ip('-n', bridge, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', bridge, 'link', 'set', 'br0', 'up');
    for (const [ns, addr, end] of [
      [names.a, ADDR_A, 'pa'],
      [names.b, ADDR_B, 'pb'],
    ]) {
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', end, 'netns', bridge);
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', bridge, 'link', 'set', end, 'master', 'br0');
      ip('-n', bridge, 'link', 'set', end, 'up');
    }
  } catch (err) {
    remove();
    throw new Error(`cannot make the pods' network namespaces: ${(err as Error).message}`);
  }
  made = names;
  return made;
}

export const scenario: Scenario = {
  name: NAME,
  transports: ['zivm-shm', 'net-tcp'],
  method: (subject) =>
    `two network namespaces made for the run (pods, ${ADDR_A} and ${ADDR_B} on a bridge through veth pairs); server in pod A on all its addresses, ` +
    `client in pod B dialling ${ADDR_A}: the ping-pong case (${subject.rounds} timed round trips of 64 B) and the pump case ` +
    `(${SIZES.map(sizeLabel).join(', ')} writes for ${subject.duration} s each, in a fresh pair of processes, then warm, once more on new connections of the same processes); zivm shm: both pods share the run's daemon socket; node:net: over the veth pairs and the bridge`,
  metrics: () => [
    { key: 'p50', label: '64 B round trip p50, pod to pod', unit: 'µs', better: 'lower' },
    ...SIZES.map((size) => ({ key: `${size}:rate`, label: `${sizeLabel(size)} writes, pod to pod`, unit: 'MB/s', better: 'higher' as const })),
    ...warmSizes(SIZES).map((size) => ({ key: `${size}:warm`, label: `${sizeLabel(size)} writes, pod to pod, warm`, unit: 'MB/s', better: 'higher' as const })),
  ],
  trial: async (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> => {
    const { a, b } = pods();
    const env = childEnv(subject);
    const seen = { client: {} as Record<string, number>, server: {} as Record<string, number> };
    const add = (side: Record<string, number>, counts: Record<string, number>): void => {
      for (const [key, count] of Object.entries(counts)) side[key] = (side[key] ?? 0) + count;
    };
    const metrics: Record<string, number> = {};

    const echo = startChild('ping-pong', 'server', target, { host: '0.0.0.0' }, env, a);
    await withChildren([echo], async () => {
      const list = await echo.expect('listening');
      const client = startChild(
        'ping-pong',
        'client',
        target,
        { ep: { host: ADDR_A, port: list.port }, rounds: subject.rounds, warmup: subject.warmup, warmupMs: warmupMsOf(subject) },
        env,
        b,
      );
      await withChildren([client], async () => {
        const res = await client.expect('result', 60000 + warmupMsOf(subject) + subject.rounds * 5);
        metrics.p50 = res.p50;
        add(seen.client, res.seen);
        add(seen.server, (await serverReport(echo)).seen);
      });
    });

    const sink = startChild('pump', 'server', target, { host: '0.0.0.0' }, env, a);
    await withChildren([sink], async () => {
      const list = await sink.expect('listening');
      const client = startChild('pump', 'client', target, { ep: { host: ADDR_A, port: list.port }, sizes: SIZES, duration: subject.duration }, env, b);
      await withChildren([client], async () => {
        const wait = 30000 + subject.duration * 4000;
        // The pump client runs each size, then the larger ones once more (warm).
        const runs = [...SIZES.map((size) => ({ size, key: `${size}:rate` })), ...warmSizes(SIZES).map((size) => ({ size, key: `${size}:warm` }))];
        for (const { size, key } of runs) {
          const item = await client.expect('size-done', wait);
          const res = await sink.expect('conn-done', wait);
          if (res.bytes !== item.written) throw new Error(`pods ${sizeLabel(size)}: client wrote ${item.written} bytes, server received ${res.bytes}`);
          metrics[key] = res.bytes / 1e6 / res.seconds;
          add(seen.client, { [item.transport]: 1 });
          add(seen.server, { [res.transport]: 1 });
        }
      });
    });
    return { metrics, seen };
  },
};
