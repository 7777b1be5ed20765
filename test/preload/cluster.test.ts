/**
 * node:cluster: a primary forks two HTTP workers on one port (picked free
 * beforehand), under round robin and under the 'none' policy, all under the
 * preload hook; a separate client makes 200 requests with a new connection
 * each, then 200 over keep-alive connections. No request is lost, every body
 * is intact, every connection the workers accept is over shared memory, and
 * the requests are spread over both workers (each at least 20% of them). The
 * split without the hook (ZIVM=off) is recorded too, and the loopback
 * counters stay still with the hook and move without.
 */
import net from 'node:net';
import { expect } from 'chai';
import { startApp, event, settle, killAll, loBytes, report, quietest, linesOf, Mode } from './harness';

const REQUESTS = 200;
const BODY = 8192;
const VOLUME = 2 * REQUESTS * BODY;

/** A port nothing listens on right now (the workers are given it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

type Done = Record<string, any>;

interface Result {
  lo: number;
  close: Done;
  keep: Done;
}

const split = (data: Done): string =>
  Object.entries(data.perWorker as Record<string, number>)
    .map(([write, count]) => `w${write} ${count}`)
    .join(' / ');

async function scenario(mode: Mode, policy: 'rr' | 'none'): Promise<Result> {
  const port = await freePort();
  const primary = startApp('cluster-server.js', [port, BODY], mode, { NODE_CLUSTER_SCHED_POLICY: policy });
  const ready = await event(primary, 'listening', 20000);
  expect(ready.policy).to.equal(policy);
  expect(ready.workers).to.have.length(2);

  const lo0 = loBytes();
  const c1 = startApp('cluster-client.js', [port, REQUESTS, 4, 'close'], mode);
  const close = await event(c1, 'done', 30000);
  await settle(c1);
  const c2 = startApp('cluster-client.js', [port, REQUESTS, 8, 'keepalive'], mode);
  const keep = await event(c2, 'done', 30000);
  await settle(c2);
  const lo = loBytes() - lo0;

  const want = mode === 'off' ? null : 'shm';
  const connections = close.sockets.length + keep.sockets.length;
  const accepted = await linesOf(primary, 'connection', connections);
  for (const data of [close, keep]) {
    const run = data.keepAlive ? 'keep-alive' : 'new connection each';
    expect(data.errors, `${run}: errors`).to.deep.equal([]);
    expect(data.ok, `${run}: intact responses`).to.equal(REQUESTS);
    expect(data.bad, `${run}: bad responses`).to.equal(0);
    expect(data.bytes).to.equal(REQUESTS * BODY);
    // Which workers answered is the kernel's business without the hook (with 'none' it may be one of them only).
    if (mode !== 'off') expect(Object.keys(data.perWorker).sort(), `${run}: workers that answered`).to.deep.equal(ready.workers.map(String).sort());
    // What the workers saw of each request's connection, and the client of each of its connections.
    expect(data.workerTransports, `${run}: transports on the worker side`).to.deep.equal({ [String(want)]: REQUESTS });
    for (const subject of data.sockets) expect(subject.transport, `${run}: client-side transport`).to.equal(want);
  }
  expect(close.sockets, 'one connection per request').to.have.length(REQUESTS);
  expect(keep.sockets.length, 'keep-alive connections').to.be.within(2, 8);
  expect(accepted, 'connections the workers accepted').to.have.length(connections);
  for (const first of accepted) expect(first.transport, `worker ${first.worker}: accepted connection`).to.equal(want);
  expect(
    primary.lines.filter((list) => list.event === 'error'),
    'workers that died',
  ).to.deep.equal([]);

  primary.proc.kill('SIGTERM');
  await settle(primary);
  return { lo, close, keep };
}

describe('preload: node:cluster, two HTTP workers on one port', function () {
  this.timeout(90000);
  afterEach(killAll);

  for (const policy of ['rr', 'none'] as const) {
    it(`NODE_CLUSTER_SCHED_POLICY=${policy}: ${REQUESTS} requests on new connections and ${REQUESTS} on keep-alive ones, none lost, spread over both workers, shared memory`, async () => {
      const hooked = await quietest(
        () => scenario('require', policy),
        () => VOLUME / 10,
      );
      const off = await scenario('off', policy);
      report(`cluster ${policy}`, hooked.lo, off.lo);
      console.log(
        `        (split with the hook: ${split(hooked.close)} new connections, ${split(hooked.keep)} keep-alive over ${hooked.keep.sockets.length} connections; ` +
          `without: ${split(off.close)}, ${split(off.keep)} over ${off.keep.sockets.length}; ${hooked.close.ms} + ${hooked.keep.ms} ms with the hook, ${off.close.ms} + ${off.keep.ms} ms without)`,
      );
      for (const data of [hooked.close, hooked.keep]) {
        for (const [worker, count] of Object.entries(data.perWorker as Record<string, number>)) {
          expect(count, `requests answered by worker ${worker} with the hook (${data.keepAlive ? 'keep-alive' : 'new connections'})`).to.be.at.least(
            REQUESTS / 5,
          );
        }
      }
      expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(VOLUME / 10);
      expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(VOLUME);
    });
  }
});
