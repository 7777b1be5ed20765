/**
 * socket.io and socket.io-client with the websocket transport only, as
 * separate programs under the preload hook: an event with an ack, binary
 * payloads of up to 4 MiB both ways checked by sha256, thousands of messages
 * in order each way, and the disconnect reasons of both ends for a
 * client-side and a server-side disconnect. Both connections over shared
 * memory on both ends with the hook (loopback counters still), over TCP with
 * ZIVM=off.
 */
import { expect } from 'chai';
import { startApp, event, settle, killAll, loBytes, report, quietest, linesOf, Mode, MiB } from './harness';

const addon = 2000;

async function scenario(mode: Mode): Promise<{ lo: number; volume: number; ms: number }> {
  const server = startApp('sio-server.js', [], mode);
  const { port } = await event(server, 'listening', 15000);
  const t0 = Date.now();
  const lo0 = loBytes();
  const client = startApp('sio-client.js', [port, addon], mode);
  const done = await event(client, 'done', 60000);
  const gone = await linesOf(server, 'disconnect', 2, 10000);
  const lo = loBytes() - lo0;
  const ms = Date.now() - t0;

  for (const res of done.results) expect(res.ok, JSON.stringify(res)).to.equal(true);
  expect(done.results.map((res: { name: string }) => res.name)).to.include.members([
    'websocket transport',
    'event with an ack',
    `binary ${4 * MiB} B to the server`,
    `binary ${4 * MiB} B from the server`,
    `${addon} messages to the server in order`,
    `${addon} messages from the server in order`,
    'client-side disconnect reason',
    'server-side disconnect reason',
  ]);

  // The server's side of the two disconnects.
  expect(Object.fromEntries(gone.map((list) => [list.name, list.reason]))).to.deep.equal({
    a: 'client namespace disconnect',
    b: 'server namespace disconnect',
  });
  expect(server.lines.filter((list) => list.event === 'socket').map((list) => list.transport)).to.deep.equal(['websocket', 'websocket']);

  // Two connections (no polling), the same transport on both ends.
  const want = mode === 'off' ? null : 'shm';
  expect(done.sockets, 'client connections').to.deep.equal([{ transport: want }, { transport: want }]);
  const conns = server.lines.filter((list) => list.event === 'connection');
  expect(
    conns.map((item) => item.transport),
    'server connections',
  ).to.deep.equal([want, want]);

  await settle(client);
  server.proc.kill('SIGTERM');
  await settle(server);
  return { lo, volume: done.volume, ms };
}

describe('preload: socket.io server and client over websocket', function () {
  this.timeout(90000);
  afterEach(killAll);

  it(`acks, binary payloads, ${addon} messages in order each way and disconnect reasons, over shared memory on both ends`, async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('socket.io', hooked.lo, off.lo);
    console.log(`        (${hooked.volume} payload bytes; ${hooked.ms} ms with the hook, ${off.ms} ms without)`);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(off.volume);
  });
});
