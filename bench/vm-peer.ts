/**
 * Both guests of the guest<->guest benchmark (bench/vm.ts); the pair's
 * set-up, servers, clients and control are tools/vm/pair.ts.
 *
 *   node vm-peer.js server --addr 10.77.3.2 --ctrl-port C [options]
 *   node vm-peer.js bench  --addr 10.77.3.1 --peer 10.77.3.2 --ctrl-port C [bench options]
 *
 * `server` serves (pairServer). `bench` connects to control, then measures
 * round trips and bulk throughput to the server guest over zivm and over
 * plain node:net TCP, interleaved: --warmup trials (numbered up to 0, not to
 * be counted), then --trials, each a fresh connection per transport for
 * --warm + --rounds round trips of --msg bytes and another for --bytes one way.
 *
 * Everything is reported as `ZIVM-PAIR {json}` lines on the console.
 */
import nodeNet from 'node:net';
import {
  closeGently,
  ctrlConnect,
  eth0,
  eth0Since,
  now,
  open,
  pairOptions,
  pairServer,
  pairSetup,
  pick,
  pingPong,
  report,
  sockInfo,
  startServers,
} from '../tools/vm/pair';
import { Any, Res, arg, block, runRoles, zivm } from '../tools/vm/peer';

/** Connects timed per trial and transport (the last one carries the round trips). */
const CONNECTS = 5;

async function bench(argv: string[]): Promise<void> {
  const out = pairOptions(argv);
  const peer = arg(argv, '--peer');
  const trials = Number(arg(argv, '--trials', '5'));
  const msg = Buffer.alloc(Number(arg(argv, '--msg', '1')), 0x61);
  const warm = Number(arg(argv, '--warm', '50'));
  const warmup = Number(arg(argv, '--warmup', '1'));
  pairSetup(out.addr);
  await startServers(out.port, out.tcpPort, out.tail);
  const ctrl = await ctrlConnect(peer, out.ctrlPort);
  const mods: Record<string, Any> = { shm: zivm(), tcp: nodeNet };
  const ports: Record<string, number> = { shm: out.port, tcp: out.tcpPort };
  const data = block(out.bytes, 0xb1c);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(out.bytes));
  // Trials up to 0 warm both paths up (TCG translates the guests' code as it first runs) and are not counted.
  for (let trial = 1 - warmup; trial <= trials; trial++) {
    for (const text of trial & 1 ? ['shm', 'tcp'] : ['tcp', 'shm']) {
      const res: Res = { trial, transport: text };
      // Round trips.
      {
        // Connection set-up: the median of CONNECTS connects (one connect under TCG varies by a factor of three).
        const connects: number[] = [];
        for (let k = 1; k < CONNECTS; k++) {
          const once = await open(mods[text], peer, ports[text], 'E', `conn-${text}-${trial}-${k}`);
          connects.push(once.connectMs);
          await closeGently(once.s);
        }
        const { s, connectMs } = await open(mods[text], peer, ports[text], 'E', `lat-${text}-${trial}`);
        connects.push(connectMs);
        res.connectsMs = connects;
        res.connectMs = pick(
          [...connects].sort((one, other) => one - other),
          0.5,
        );
        res.client = sockInfo(s);
        await pingPong(s, warm, msg);
        const e0 = eth0();
        const rtt = await pingPong(s, out.rounds, msg);
        res.latEth0 = eth0Since(e0);
        res.rttUs = { n: rtt.length, median: pick(rtt, 0.5), p99: pick(rtt, 0.99), min: rtt[0], max: rtt[rtt.length - 1] };
        await closeGently(s);
      }
      // Bulk, one way: the sink answers when it has it all.
      {
        const { s } = await open(mods[text], peer, ports[text], 'S', `bulk-${text}-${trial}`);
        res.bulkClient = sockInfo(s);
        const e0 = eth0();
        const t0 = now();
        await new Promise<void>((resolve, reject) => {
          s.once('data', () => resolve());
          s.once('error', reject);
          s.once('close', () => reject(new Error('closed before the sink answered')));
          s.write(head);
          s.write(data);
        });
        const ms = now() - t0;
        res.bulkEth0 = eth0Since(e0);
        res.bulk = { bytes: out.bytes, ms, MBps: out.bytes / 1e6 / (ms / 1000) };
        await closeGently(s);
      }
      report('bench', res);
    }
  }
  await ctrl.ask({ cmd: 'bye' });
  ctrl.s.destroy();
}

if (require.main === module) {
  runRoles({ server: (argv) => pairServer(argv), bench }, { usage: 'usage: vm-peer.js server|bench --addr A [--peer B] ...', report, stays: ['server'] });
}
