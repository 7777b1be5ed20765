/**
 * @grpc/grpc-js: a server and a client as separate programs under the
 * preload hook, on one channel: unary, server, client and bidi streaming
 * calls with payloads of up to 3 MiB checked by sha256, a deadline that
 * expires, and a download the client cancels mid-stream (RST_STREAM, which
 * the server sees as a cancellation). The one connection is over shared
 * memory on both ends with the hook (loopback counters still), and over TCP
 * with ZIVM=off.
 */
import { expect } from 'chai';
import { startApp, event, settle, killAll, loBytes, report, quietest, linesOf, Mode, MiB } from './harness';

async function scenario(mode: Mode): Promise<{ lo: number; volume: number; ms: number }> {
  const server = startApp('grpc-server.js', [], mode);
  const { port } = await event(server, 'listening', 15000);
  const t0 = Date.now();
  const lo0 = loBytes();
  const client = startApp('grpc-client.js', [port], mode);
  const done = await event(client, 'done', 60000);
  const lo = loBytes() - lo0;
  const ms = Date.now() - t0;

  for (const res of done.results) expect(res.ok, JSON.stringify(res)).to.equal(true);
  expect(done.results.map((res: { name: string }) => res.name)).to.include.members([
    'unary 3145728 B',
    'server streaming 8 x 1310720 B',
    'client streaming',
    'bidi streaming 300 messages',
    'deadline expires',
    'client cancels mid-stream',
    'unary after the deadline and the cancellation',
  ]);

  // One connection, the same on both ends.
  const want = mode === 'off' ? null : 'shm';
  expect(done.sockets, 'client connections').to.deep.equal([{ transport: want }]);
  const conns = server.lines.filter((list) => list.event === 'connection');
  expect(
    conns.map((item) => item.transport),
    'server connections',
  ).to.deep.equal([want]);
  if (mode === 'off') expect(done.decisions, 'zivm decisions with ZIVM=off').to.deep.equal([]);
  else expect(done.decisions.map((chunk: { transport: string }) => chunk.transport)).to.deep.equal(['shm']);

  // The server saw each call from the client's address and port.
  const calls = server.lines.filter((list) => list.event === 'call');
  expect(calls.length).to.be.at.least(10);
  const peer = `${conns[0].remoteAddress}:${conns[0].remotePort}`;
  expect(peer).to.match(/^127\.0\.0\.1:\d+$/);
  for (const item of calls) expect(item.peer, `peer of ${item.method}`).to.equal(peer);

  // Cancelled before the server finished: the expired call and the cancelled download, nothing
  // else. The server may learn of the reset after the client has made its last call.
  await linesOf(server, 'stopped', 1);
  const cancelled = (await linesOf(server, 'cancelled', 2)).map((list) => list.method);
  expect(cancelled).to.deep.equal(['Stall', 'Download']);
  const stopped = server.lines.filter((list) => list.event === 'stopped');
  expect(stopped).to.have.length(1);
  expect(stopped[0].sent, 'chunks the server sent before the cancellation reached it').to.be.at.least(5);

  await settle(client);
  server.proc.kill('SIGTERM');
  await settle(server);
  return { lo, volume: done.volume, ms };
}

describe('preload: @grpc/grpc-js server and client', function () {
  this.timeout(90000);
  afterEach(killAll);

  it('unary and streaming calls arrive intact, a deadline expires, a cancelled stream reaches the server, one shared-memory connection', async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('grpc', hooked.lo, off.lo);
    console.log(`        (${hooked.volume} payload bytes; ${hooked.ms} ms with the hook, ${off.ms} ms without)`);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(off.volume);
  });
});
