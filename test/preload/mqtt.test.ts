/**
 * MQTT: an aedes broker on net.createServer, an mqtt.js subscriber and an
 * mqtt.js publisher, three programs under the preload hook: 1000 QoS 0 and
 * 100 QoS 1 messages arrive in order with their payloads; loopback counters
 * small with the hook, large with ZIVM=off.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, report, quietest, Mode, MiB } from './harness';

const N0 = 1000;
const N1 = 100;

async function scenario(mode: Mode): Promise<{ lo: number; bytes: number }> {
  const broker = startApp('mqtt-broker.mjs', [], mode);
  const { port } = await broker.event('listening', 15000);
  const sub = startApp('mqtt-subscriber.js', [port, N0, N1], mode);
  const sc = await sub.event('connect', 15000);
  const granted = await sub.event('subscribed', 15000);
  expect(granted.granted).to.deep.equal([
    ['zivm/q0', 0],
    ['zivm/q1', 1],
  ]);

  const lo0 = loBytes();
  const pub = startApp('mqtt-publisher.js', [port, N0, N1], mode);
  const pc = await pub.event('connect', 15000);
  const part = await pub.event('done', 30000);
  const subject = await sub.event('done', 30000);
  const lo = loBytes() - lo0;

  const want = mode === 'off' ? null : 'shm';
  expect(sc.transport, 'subscriber transport').to.equal(want);
  expect(pc.transport, 'publisher transport').to.equal(want);
  const conns = broker.lines.filter((list) => list.event === 'connection');
  expect(conns.map((item) => item.transport)).to.deep.equal([want, want]);
  expect(broker.lines.filter((list) => list.event === 'clientError')).to.deep.equal([]);

  expect(subject.got).to.deep.equal({ 0: N0, 1: N1 });
  expect(subject.disorder, 'out-of-order or wrong-QoS messages').to.deep.equal([]);
  expect(subject.sha256, 'payload hashes, per QoS, in order').to.deep.equal(part.sha256);

  await settle(pub);
  await settle(sub);
  broker.proc.kill('SIGTERM');
  return { lo, bytes: part.bytes };
}

describe('preload: aedes broker with mqtt.js publisher and subscriber', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`${N0} QoS 0 and ${N1} QoS 1 messages arrive in order with their payloads`, async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('mqtt', hooked.lo, off.lo);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    // Each payload crosses loopback twice (publisher -> broker -> subscriber), counted as rx and tx.
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(2 * off.bytes);
  });
});
