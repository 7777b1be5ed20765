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
  const res = await client.event('done', (SECONDS + 20) * 1000);
  const lo = loBytes() - lo0;
  expect(res.requests, 'requests').to.be.above(0);
  expect(res.errors, 'errors').to.equal(0);
  expect(res.timeouts, 'timeouts').to.equal(0);
  expect(res.mismatches, 'body mismatches').to.equal(0);
  expect(res.non2xx, 'non-2xx').to.equal(0);
  expect(res.ok2xx).to.be.at.least(res.requests);
  const conns = server.lines.filter((list) => list.event === 'connection');
  expect(conns.length).to.be.at.least(1);
  for (const item of conns) expect(item.transport).to.equal(mode === 'off' ? null : 'shm');
  await settle(client);
  server.proc.kill('SIGTERM');
  return { lo, bytes: res.bytes, requests: res.requests };
}

describe('preload: express under autocannon', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`serves ${SECONDS} s of load with no errors, over shared memory with the hook and TCP without`, async () => {
    const limit = (res: { bytes: number }): number => Math.min(MiB, res.bytes / 10);
    const hooked = await quietest(() => scenario('require'), limit);
    const off = await scenario('off');
    report('express+autocannon', hooked.lo, off.lo);
    console.log(`        (${hooked.requests} requests, ${hooked.bytes} response bytes with the hook; ${off.requests}, ${off.bytes} without)`);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(limit(hooked));
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(off.bytes);
  });
});
