/**
 * The --import form of the hook with ES-module programs that take
 * createServer and connect as named imports from node:net: the named bindings
 * see the patch, so the connection is over shared memory.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, report, quietest, MiB } from './harness';

const TOTAL = 16 * MiB;

async function scenario(off: boolean): Promise<{ lo: number; server: string | null; client: string | null }> {
  const env = off ? { ZIVM: 'off' } : {};
  const server = startApp('import-server.mjs', [], 'import', env);
  const { port } = await server.event('listening', 15000);
  const lo0 = loBytes();
  const client = startApp('import-client.mjs', [port, TOTAL], 'import', env);
  const item = await client.event('connect', 15000);
  const conn = await server.event('connection', 15000);
  const done = await client.event('done', 30000);
  const lo = loBytes() - lo0;
  expect(done.received).to.equal(TOTAL);
  expect(done.echoSha256).to.equal(done.sha256);
  await settle(client);
  await settle(server);
  return { lo, server: conn.transport, client: item.transport };
}

describe('preload: --import with ES modules and named imports from node:net', function () {
  this.timeout(60000);
  afterEach(killAll);

  it('import { createServer } / { connect } from node:net see the patch: the connection is over shared memory', async () => {
    const hooked = await quietest(
      () => scenario(false),
      () => MiB,
    );
    expect(hooked.server, 'server side (named createServer)').to.equal('shm');
    expect(hooked.client, 'client side (named connect)').to.equal('shm');
    const off = await scenario(true);
    expect(off.server).to.equal(null);
    expect(off.client).to.equal(null);
    report('--import esm echo 16 MiB', hooked.lo, off.lo);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(2 * TOTAL);
  });
});
