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
import { closeGently, ctrlConnect, eth0, eth0Since, now, open, pairOptions, pairServer, pairSetup, pick, pingPong, report, sockInfo, startServers } from '../tools/vm/pair';
import { Any, Res, arg, block, runRoles, zivm } from '../tools/vm/peer';

async function bench(argv: string[]): Promise<void> {
  const o = pairOptions(argv);
  const peer = arg(argv, '--peer');
  const trials = Number(arg(argv, '--trials', '5'));
  const msg = Buffer.alloc(Number(arg(argv, '--msg', '1')), 0x61);
  const warm = Number(arg(argv, '--warm', '50'));
  const warmup = Number(arg(argv, '--warmup', '1'));
  pairSetup(o.addr);
  await startServers(o.port, o.tcpPort, o.tail);
  const ctrl = await ctrlConnect(peer, o.ctrlPort);
  const mods: Record<string, Any> = { shm: zivm(), tcp: nodeNet };
  const ports: Record<string, number> = { shm: o.port, tcp: o.tcpPort };
  const data = block(o.bytes, 0xb1c);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(o.bytes));
  // Trials up to 0 warm both paths up (TCG translates the guests' code as it first runs) and are not counted.
  for (let trial = 1 - warmup; trial <= trials; trial++) {
    for (const t of trial & 1 ? ['shm', 'tcp'] : ['tcp', 'shm']) {
      const r: Res = { trial, transport: t };
      // Round trips.
      {
        const { s, connectMs } = await open(mods[t], peer, ports[t], 'E', `lat-${t}-${trial}`);
        r.connectMs = connectMs;
        r.client = sockInfo(s);
        await pingPong(s, warm, msg);
        const e0 = eth0();
        const rtt = await pingPong(s, o.rounds, msg);
        r.latEth0 = eth0Since(e0);
        r.rttUs = { n: rtt.length, median: pick(rtt, 0.5), p99: pick(rtt, 0.99), min: rtt[0], max: rtt[rtt.length - 1] };
        await closeGently(s);
      }
      // Bulk, one way: the sink answers when it has it all.
      {
        const { s } = await open(mods[t], peer, ports[t], 'S', `bulk-${t}-${trial}`);
        r.bulkClient = sockInfo(s);
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
        r.bulkEth0 = eth0Since(e0);
        r.bulk = { bytes: o.bytes, ms, MBps: o.bytes / 1e6 / (ms / 1000) };
        await closeGently(s);
      }
      report('bench', r);
    }
  }
  await ctrl.ask({ cmd: 'bye' });
  ctrl.s.destroy();
}

if (require.main === module) {
  runRoles({ server: (argv) => pairServer(argv), bench }, { usage: 'usage: vm-peer.js server|bench --addr A [--peer B] ...', report, stays: ['server'] });
}
