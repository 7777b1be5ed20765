/**
 * node:http server and client (keep-alive Agent, and the global fetch) as
 * separate programs under the preload hook: content checked by sha256, and the
 * bytes kept off the loopback interface; the same run with ZIVM=off puts them
 * back on it.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, report, quietest, Mode, MiB } from './harness';

const SIZES = [0, 1024, MiB, 8 * MiB];
const VOLUME = SIZES.reduce((lhs, rhs) => lhs + rhs, 0) * 2 /* via */ * 4; /* GET + echo both ways + hash */

async function scenario(mode: Mode): Promise<{ lo: number }> {
  const server = startApp('http-server.js', [], mode);
  const { port } = await server.event('listening', 15000);
  const lo0 = loBytes();
  const client = startApp('http-client.js', [port, SIZES.join(',')], mode);
  const done = await client.event('done', 40000);
  const lo = loBytes() - lo0;

  expect(done.results).to.have.length(SIZES.length * 3 * 2);
  for (const res of done.results) expect(res.ok, JSON.stringify(res)).to.equal(true);
  // The keep-alive agent (maxSockets 1) reused one connection throughout.
  expect(done.agentSockets).to.equal(1);
  const conns = server.lines.filter((list) => list.event === 'connection');
  // One for the agent; fetch's pool may open a few (it opens one when a body is still draining).
  expect(conns.length, 'server connections (agent + fetch)').to.be.within(2, 1 + SIZES.length * 3);
  const want = mode === 'off' ? 'tcp' : 'shm';
  if (mode === 'off') {
    // Plain net: no transport property at all.
    expect(done.transports).to.deep.equal([null]);
    for (const item of conns) expect(item.transport).to.equal(null);
  } else {
    expect(done.transports).to.deep.equal([want]);
    for (const item of conns) expect(item.transport, 'server-side transport').to.equal(want);
  }
  await settle(client);
  server.proc.kill('SIGTERM');
  return { lo };
}

describe('preload: node:http with a keep-alive Agent and fetch', function () {
  this.timeout(90000);
  afterEach(killAll);

  it('GET and POST of 0 B, 1 KiB, 1 MiB and 8 MiB arrive intact, over shared memory with the hook and TCP without', async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('http+fetch', hooked.lo, off.lo);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(VOLUME);
  });
});
