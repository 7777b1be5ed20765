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
  const item = await client.event('close', 60000);
  const subject = await server.event('close', 15000);
  const lo = loBytes() - lo0;

  const want = mode === 'off' ? null : 'shm';
  expect(open.transport, 'client transport').to.equal(want);
  expect(conn.transport, 'server transport').to.equal(want);

  expect(item.mismatch, 'first echo that differs').to.equal(null);
  expect(item.received).to.equal(COUNT);
  expect(item.echoSha256, 'hash of the echoes').to.equal(item.sha256);
  expect(subject.count).to.equal(COUNT);
  expect(subject.text).to.be.above(COUNT / 4);
  expect(subject.binary).to.be.above(COUNT / 4);
  expect(subject.bytes).to.equal(item.sentBytes);
  expect(subject.sha256, 'hash of what the server received').to.equal(item.sha256);

  // ping/pong both ways
  const clientPong = client.lines.find((list) => list.event === 'pong');
  expect(clientPong?.data).to.equal('from-client');
  expect(item.serverPing).to.equal('from-server');
  expect(subject.pongs).to.equal(1);
  expect(server.lines.find((list) => list.event === 'ping')?.data).to.equal('from-client');

  // close code and reason on both ends
  expect([item.code, item.reason]).to.deep.equal([4001, 'client says bye']);
  expect([subject.code, subject.reason]).to.deep.equal([4001, 'client says bye']);

  await settle(client);
  await settle(server);
  return { lo, bytes: item.sentBytes };
}

describe('preload: ws WebSocketServer and client', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`${COUNT} text and binary messages of 1 B..64 KiB echo in order, ping/pong, close 4001 with a reason`, async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('ws', hooked.lo, off.lo);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(2 * off.bytes);
  });
});
