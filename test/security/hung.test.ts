/**
 * A daemon that takes connections and never answers (stopped, deadlocked, or
 * something else listening on its socket): a process that would join it
 * loses at most about a second of its event loop once, then uses TCP without
 * waiting again for a while; its connections work all along.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const INDEX = path.join(__dirname, '..', '..', 'src', 'index.js');

describe('a daemon that never answers', function () {
  this.timeout(30000);

  let dir = '';
  let mute: net.Server | undefined;
  let echo: net.Server | undefined;
  const held: net.Socket[] = [];

  afterEach(async () => {
    for (const sock of held.splice(0)) sock.destroy();
    await new Promise((resolve) => (mute ? mute.close(resolve) : resolve(undefined)));
    await new Promise((resolve) => (echo ? echo.close(resolve) : resolve(undefined)));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('costs a process at most about a second of its event loop, once; its connections go over TCP', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-hung-'));
    const socket = path.join(dir, 'zivm.sock');
    mute = net.createServer((sock) => held.push(sock)); // takes the connection, says nothing
    await new Promise<void>((resolve) => mute!.listen(socket, resolve));
    echo = net.createServer((sock) => sock.pipe(sock));
    await new Promise<void>((resolve) => echo!.listen(0, '127.0.0.1', resolve));
    const port = (echo.address() as net.AddressInfo).port;
    // Six connections, one after another, each connect() call timed: how long it held the event loop.
    const script = `
      const zivm = require(${JSON.stringify(INDEX)});
      const results = [];
      const one = (i) => {
        if (i === 6) return console.log(JSON.stringify(results));
        const t0 = process.hrtime.bigint();
        const s = zivm.connect(${port}, '127.0.0.1');
        const syncMs = Number(process.hrtime.bigint() - t0) / 1e6;
        s.on('connect', () => s.end('ping' + i));
        s.on('data', (d) => results.push({ syncMs, transport: s.transport, echoed: String(d) }));
        s.on('close', () => setTimeout(() => one(i + 1), 100));
      };
      one(0);
    `;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['-e', script], { env: { ...process.env, ZIVM_SOCKET: socket, ZIVM_AUTOSTART: '0' }, timeout: 20000 }, (err, stdout) =>
        err ? reject(new Error(err.message)) : resolve(stdout),
      ),
    );
    const results = JSON.parse(out) as { syncMs: number; transport: string; echoed: string }[];
    expect(results.map((res) => res.transport)).to.deep.equal(Array(6).fill('tcp'));
    expect(results.map((res) => res.echoed)).to.deep.equal([0, 1, 2, 3, 4, 5].map((i) => `ping${i}`));
    const blocked = results.map((res) => res.syncMs);
    expect(blocked[0], 'the first connect() (ms)').to.be.below(1500);
    // The next tries wait (one second, then longer): the connections within that time do not block.
    expect(blocked.slice(1).filter((ms) => ms > 100).length, `connects that blocked again: ${blocked.map((ms) => ms.toFixed(0)).join(', ')} ms`).to.be.at.most(
      1,
    );
    expect(
      blocked.reduce((sum, ms) => sum + ms, 0),
      'event loop held in all (ms)',
    ).to.be.below(2600);
  });
});
