/**
 * ws: a WebSocketServer and a client as separate programs under the preload
 * hook: thousands of text and binary messages of random sizes echoed in
 * order, ping/pong both ways, and a close with code 4001 and a reason seen by
 * both ends; loopback counters small with the hook, large with ZIVM=off.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, report, quietest, Mode, MiB } from './harness';

const COUNT = 3000;

async function scenario(mode: Mode): Promise<{ lo: number; bytes: number }> {
  const server = startApp('ws-server.js', [], mode);
  const { port } = await server.event('listening', 15000);
  const lo0 = loBytes();
  const client = startApp('ws-client.js', [port, COUNT], mode);
  const open = await client.event('open', 15000);
  const conn = await server.event('connection', 15000);
  const c = await client.event('close', 60000);
  const s = await server.event('close', 15000);
  const lo = loBytes() - lo0;

  const want = mode === 'off' ? null : 'shm';
  expect(open.transport, 'client transport').to.equal(want);
  expect(conn.transport, 'server transport').to.equal(want);

  expect(c.mismatch, 'first echo that differs').to.equal(null);
  expect(c.received).to.equal(COUNT);
  expect(c.echoSha256, 'hash of the echoes').to.equal(c.sha256);
  expect(s.count).to.equal(COUNT);
  expect(s.text).to.be.above(COUNT / 4);
  expect(s.binary).to.be.above(COUNT / 4);
  expect(s.bytes).to.equal(c.sentBytes);
  expect(s.sha256, 'hash of what the server received').to.equal(c.sha256);

  // ping/pong both ways
  const clientPong = client.lines.find((l) => l.event === 'pong');
  expect(clientPong?.data).to.equal('from-client');
  expect(c.serverPing).to.equal('from-server');
  expect(s.pongs).to.equal(1);
  expect(server.lines.find((l) => l.event === 'ping')?.data).to.equal('from-client');

  // close code and reason on both ends
  expect([c.code, c.reason]).to.deep.equal([4001, 'client says bye']);
  expect([s.code, s.reason]).to.deep.equal([4001, 'client says bye']);

  await settle(client);
  await settle(server);
  return { lo, bytes: c.sentBytes };
}

describe('preload: ws WebSocketServer and client', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`${COUNT} text and binary messages of 1 B..64 KiB echo in order, ping/pong, close 4001 with a reason`, async () => {
    const w = await quietest(() => scenario('require'), () => MiB);
    const o = await scenario('off');
    report('ws', w.lo, o.lo);
    expect(w.lo, `loopback bytes with the hook (runs: ${w.runs})`).to.be.below(MiB);
    expect(o.lo, 'loopback bytes with ZIVM=off').to.be.above(2 * o.bytes);
  });
});
