/**
 * express under autocannon, both started with the preload hook: every
 * response 2xx with the expected body, and the traffic off the loopback
 * interface; with ZIVM=off the same load shows up on it.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, report, quietest, Mode, MiB } from './harness';

const SECONDS = 3;
const BODY = 8192;

async function scenario(mode: Mode): Promise<{ lo: number; bytes: number; requests: number }> {
  const server = startApp('express-server.js', [BODY], mode);
  const { port } = await server.event('listening', 15000);
  const lo0 = loBytes();
  const client = startApp('autocannon-client.js', [port, SECONDS, BODY], mode);
  const r = await client.event('done', (SECONDS + 20) * 1000);
  const lo = loBytes() - lo0;
  expect(r.requests, 'requests').to.be.above(0);
  expect(r.errors, 'errors').to.equal(0);
  expect(r.timeouts, 'timeouts').to.equal(0);
  expect(r.mismatches, 'body mismatches').to.equal(0);
  expect(r.non2xx, 'non-2xx').to.equal(0);
  expect(r.ok2xx).to.be.at.least(r.requests);
  const conns = server.lines.filter((l) => l.event === 'connection');
  expect(conns.length).to.be.at.least(1);
  for (const c of conns) expect(c.transport).to.equal(mode === 'off' ? null : 'shm');
  await settle(client);
  server.proc.kill('SIGTERM');
  return { lo, bytes: r.bytes, requests: r.requests };
}

describe('preload: express under autocannon', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`serves ${SECONDS} s of load with no errors, over shared memory with the hook and TCP without`, async () => {
    const limit = (r: { bytes: number }): number => Math.min(MiB, r.bytes / 10);
    const w = await quietest(() => scenario('require'), limit);
    const o = await scenario('off');
    report('express+autocannon', w.lo, o.lo);
    console.log(`        (${w.requests} requests, ${w.bytes} response bytes with the hook; ${o.requests}, ${o.bytes} without)`);
    expect(w.lo, `loopback bytes with the hook (runs: ${w.runs})`).to.be.below(limit(w));
    expect(o.lo, 'loopback bytes with ZIVM=off').to.be.above(o.bytes);
  });
});
