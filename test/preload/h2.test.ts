/**
 * node:http2 over cleartext (h2c): a server and a client as separate programs
 * under the preload hook. Sessions made with http2.connect(url), with a
 * createConnection returning a socket still connecting, and with one
 * returning a socket already connected: bodies of 1 B..8 MiB both ways
 * checked by sha256, a graceful session.close() with a response in flight; a
 * stream reset by the client mid-body (RST_STREAM CANCEL), one closed by the
 * server mid-body, a stream timeout, and a GOAWAY from the server. Every
 * connection over shared memory on both ends with the hook (loopback counters
 * still), over TCP with ZIVM=off.
 */
import { expect } from 'chai';
import { startApp, event, settle, killAll, loBytes, report, quietest, linesOf, Mode, MiB } from './harness';

const SIZES = [1, 1024, 65537, MiB, 8 * MiB];
/** Sessions the client makes: three with transfers, one for the resets, one for the GOAWAY. */
const SESSIONS = 5;

async function scenario(mode: Mode): Promise<{ lo: number; volume: number; ms: number; proxy: unknown[] }> {
  const server = startApp('h2-server.js', [], mode);
  const { port } = await event(server, 'listening', 15000);
  const t0 = Date.now();
  const lo0 = loBytes();
  const client = startApp('h2-client.js', [port, SIZES.join(',')], mode);
  const done = await event(client, 'done', 60000);
  await linesOf(server, 'session-closed', SESSIONS);
  const lo = loBytes() - lo0;
  const ms = Date.now() - t0;

  for (const res of done.results) expect(res.ok, JSON.stringify(res)).to.equal(true);
  const names = done.results.map((res: { name: string }) => res.name);
  for (const how of ['url', 'connecting socket', 'connected socket']) {
    for (const count of SIZES) expect(names).to.include.members([`${how}: GET ${count} B`, `${how}: POST ${count} B`]);
    expect(names).to.include(`${how}: graceful close`);
  }
  expect(names).to.include.members([
    'client resets a stream mid-body',
    'server closes a stream mid-body',
    'stream timeout',
    'session usable after resets',
    'GOAWAY from the server',
  ]);

  // Every connection, on both ends (the server's sessions too).
  const want = mode === 'off' ? null : 'shm';
  expect(
    done.sockets.map((subject: { transport: unknown }) => subject.transport),
    'client connections',
  ).to.deep.equal(Array(SESSIONS).fill(want));
  const conns = server.lines.filter((list) => list.event === 'connection');
  expect(
    conns.map((item) => item.transport),
    'server connections',
  ).to.deep.equal(Array(SESSIONS).fill(want));
  const sessions = server.lines.filter((list) => list.event === 'session');
  expect(
    sessions.map((item) => item.transport),
    'server sessions (session.socket)',
  ).to.deep.equal(Array(SESSIONS).fill(want));
  expect(
    server.lines.filter((list) => list.event === 'stream-error'),
    'server stream errors',
  ).to.deep.equal([]);

  // How the server saw the streams that did not finish normally.
  const closed = Object.fromEntries(server.lines.filter((list) => list.event === 'stream-closed').map((list) => [list.path, list]));
  expect(closed['/forever']?.rstCode, 'client reset: RST_STREAM CANCEL').to.equal(8);
  expect(closed['/forever']?.sent, 'bytes sent before the reset').to.be.at.least(256 * 1024);
  expect(closed['/cut/1048576']?.rstCode, "server's own close").to.equal(0);
  expect(closed['/hold']?.rstCode, 'timed-out stream cancelled by the client').to.equal(8);

  await settle(client);
  server.proc.kill('SIGTERM');
  return { lo, volume: done.volume, ms, proxy: done.sessions };
}

describe('preload: node:http2 (h2c) server and client', function () {
  this.timeout(90000);
  afterEach(killAll);

  it('bodies of 1 B..8 MiB arrive intact on sessions made three ways; resets, a timeout, GOAWAY and close behave as over TCP; shared memory on both ends', async () => {
    const hooked = await quietest(
      () => scenario('require'),
      () => MiB,
    );
    const off = await scenario('off');
    report('http2', hooked.lo, off.lo);
    console.log(
      `        (${hooked.volume} body bytes; ${hooked.ms} ms with the hook, ${off.ms} ms without; session.socket.transport with the hook: ${JSON.stringify(hooked.proxy)})`,
    );
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(off.volume);
  });

  it('a request made as the session closes is refused and the session closes, whichever way the session was made', async () => {
    for (const mode of ['off', 'require'] as const) {
      const server = startApp('h2-server.js', [], mode);
      const { port } = await event(server, 'listening', 15000);
      const client = startApp('h2-client.js', [port, '1', 'refused'], mode);
      const done = await event(client, 'done', 20000);
      for (const res of done.results) expect(res.ok, `${mode}: ${JSON.stringify(res)}`).to.equal(true);
      expect(done.results).to.have.length(3);
      expect(done.sockets.map((elem: { transport: unknown }) => elem.transport)).to.deep.equal(Array(3).fill(mode === 'off' ? null : 'shm'));
      await settle(client);
      server.proc.kill('SIGTERM');
    }
  });
});
