/**
 * The transport end to end, with server and client in separate processes:
 * bytes over shared memory (proved by the loopback counters, not by zivm's
 * word), fallback to TCP both ways, refused and busy ports, killed peers,
 * and nothing left behind.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import nodeNet from 'node:net';
import { execFile } from 'node:child_process';
import * as zivm from '../src';
import { currentDomain } from '../src/shm/join';
import * as Lay from '../src/shm/layout';
import { Proc, killAll } from '../tools/kit/proc';
import { loBytes } from '../tools/kit/lo';
import { waitFor } from '../tools/kit/wait';
import { spawnPeer } from './helpers/proc';

const LONG = !!process.env.ZIVM_LONG;
const MiB = 1 << 20;

type Any = Record<string, any>;

function transportOf(sock: nodeNet.Socket): string | undefined {
  return (sock as unknown as { transport?: string }).transport;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = nodeNet.createServer().listen(0, '127.0.0.1', () => {
      const entry = (srv.address() as nodeNet.AddressInfo).port;
      srv.close(() => resolve(entry));
    });
  });
}

function usedSlots(): number {
  const domain = currentDomain();
  if (!domain) return 0;
  let count = 0;
  for (let i = 0; i < domain.geo.nslots; i++) {
    const word = Atomics.load(domain.i32, (Lay.slotOffset(domain.geo, i) >>> 2) + Lay.SLOT.STATE);
    if (Lay.stateOf(word) !== Lay.SLOT_FREE) count++;
  }
  return count;
}

describe('transport between two processes', function () {
  this.timeout(120000);
  afterEach(killAll);

  describe('a 256 MiB echo of random bytes', () => {
    const results: Any = {};
    for (const impl of ['zivm', 'net'] as const) {
      it(`arrives intact over ${impl === 'zivm' ? 'shared memory' : 'plain net TCP'}${impl === 'zivm' ? ', with the loopback counters still' : ''}`, async () => {
        const server = spawnPeer('peer', ['echo-server', impl, '127.0.0.1']);
        const list = await server.next();
        expect(list.event).to.equal('listening');
        const lo0 = loBytes();
        const total = (LONG ? 1024 : 256) * MiB;
        const client = spawnPeer('peer', ['transfer', impl, String(list.port), '127.0.0.1', String(total), '42']);
        const item = await client.next();
        expect(item).to.deep.include({ event: 'connect' });
        const conn = await server.next();
        expect(conn.event).to.equal('connection');
        const done = await client.next();
        const lo = loBytes() - lo0;
        expect(done.event, JSON.stringify(done)).to.equal('done');
        expect(done.bytes).to.equal(total);
        expect(done.received).to.equal(done.sent);
        results[impl] = { ms: done.ms, lo };
        if (impl === 'zivm') {
          expect(item.transport).to.equal('shm');
          expect(conn.transport).to.equal('shm');
          expect(lo, 'loopback bytes during the transfer').to.be.below(MiB);
        } else {
          expect(item.transport).to.equal('tcp');
          expect(lo).to.be.above(total);
        }
        console.log(`      ${impl}: ${total / MiB} MiB each way in ${done.ms.toFixed(0)} ms, loopback counters +${lo} bytes`);
      });
    }
  });

  describe('fallback', () => {
    it('a zivm client reaches a plain net server over TCP', async () => {
      const server = spawnPeer('peer', ['echo-server', 'net', '127.0.0.1']);
      const list = await server.next();
      const client = spawnPeer('peer', ['transfer', 'zivm', String(list.port), '127.0.0.1', String(4 * MiB), '3']);
      const item = await client.next();
      expect(item.transport).to.equal('tcp');
      const done = await client.next();
      expect(done.received).to.equal(done.sent);
      expect(done.bytes).to.equal(4 * MiB);
    });

    it('a plain net client reaches a zivm server over TCP, with no extra bytes on the stream', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const list = await server.next();
      const payload = Buffer.from('exactly these bytes and no others');
      const got = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const sock = nodeNet.connect(list.port, '127.0.0.1', () => sock.end(payload));
        sock.on('data', (chunk) => chunks.push(chunk));
        sock.on('end', () => resolve(Buffer.concat(chunks)));
        sock.on('error', reject);
      });
      expect(got.equals(payload)).to.equal(true);
      const conn = await server.next();
      expect(conn.transport).to.equal('tcp');
    });

    it('a zivm client in this process reaches a zivm server in another over shared memory', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const list = await server.next();
      const sock = zivm.connect(list.port, '127.0.0.1');
      await new Promise<void>((resolve) => sock.on('connect', resolve));
      expect(transportOf(sock)).to.equal('shm');
      const got = await new Promise<string>((resolve) => {
        let text = '';
        sock.setEncoding('utf8');
        sock.on('data', (chunk: string) => (text += chunk));
        sock.on('end', () => resolve(text));
        sock.end('ping');
      });
      expect(got).to.equal('ping');
      await new Promise((resolve) => sock.on('close', resolve));
    });

    for (const impl of ['net', 'zivm'] as const) {
      it(`${impl}: the server accepts while the client's 'connect' listener still runs (a TLS client builds its hello meanwhile)`, async () => {
        const server = spawnPeer('peer', ['echo-server', impl, '127.0.0.1']);
        const list = await server.next();
        const lib = (impl === 'net' ? nodeNet : zivm) as typeof nodeNet;
        const sock = lib.connect(list.port, '127.0.0.1');
        const busy = await new Promise<{ from: number; to: number }>((resolve, reject) => {
          sock.on('error', reject);
          sock.on('connect', () => {
            // The listener keeps this process busy for a while, as building a TLS context does.
            const from = Date.now();
            while (Date.now() - from < 1000);
            sock.write('after');
            resolve({ from, to: Date.now() });
          });
        });
        const conn = await server.next();
        expect(conn.event).to.equal('connection');
        expect(conn.transport).to.equal(impl === 'net' ? 'tcp' : 'shm');
        expect(conn.at, 'the server accepted before the listener returned').to.be.below(busy.to - 200);
        const echoed = await new Promise<string>((resolve) => sock.once('data', (chunk: Buffer) => resolve(chunk.toString())));
        expect(echoed).to.equal('after');
        sock.destroy();
      });
    }

    it('a server listening on :: is reached through 127.0.0.1, ::1 and localhost', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '-']);
      const list = await server.next();
      for (const host of ['127.0.0.1', '::1', 'localhost']) {
        const sock = zivm.connect(list.port, host);
        await new Promise<void>((resolve, j) => {
          sock.on('connect', resolve);
          sock.on('error', j);
        });
        expect(transportOf(sock), host).to.equal('shm');
        sock.destroy();
        await new Promise((resolve) => sock.on('close', resolve));
      }
    });
  });

  describe('errors', () => {
    it('fails with ECONNREFUSED where nobody listens, as net does', async () => {
      const port = await freePort();
      for (const net of [nodeNet, zivm as unknown as typeof nodeNet]) {
        const err = await new Promise<Any>((resolve) => net.connect(port, '127.0.0.1').on('error', resolve));
        expect(err.code).to.equal('ECONNREFUSED');
        expect(err.syscall).to.equal('connect');
        expect(err.address).to.equal('127.0.0.1');
        expect(err.port).to.equal(port);
      }
    });

    it('fails with ECONNREFUSED after the zivm server closed its listener', async () => {
      const server = zivm.createServer();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as nodeNet.AddressInfo).port;
      await new Promise((resolve) => server.close(resolve));
      const client = spawnPeer('peer', ['transfer', 'zivm', String(port), '127.0.0.1', '10', '1']);
      const entry = await client.next();
      expect(entry).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
    });

    it('emits EADDRINUSE when another process holds the port', async () => {
      const other = spawnPeer('peer', ['echo-server', 'net', '127.0.0.1']);
      const list = await other.next();
      const server = zivm.createServer();
      const err = await new Promise<Any>((resolve) => {
        server.on('error', resolve);
        server.listen(list.port, '127.0.0.1');
      });
      expect(err.code).to.equal('EADDRINUSE');
      expect(err.syscall).to.equal('listen');
    });
  });

  describe('a peer killed with SIGKILL mid-transfer', () => {
    it('the client sees an error or close, and the slot is reclaimed', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const list = await server.next();
      const sock = zivm.connect(list.port, '127.0.0.1');
      await new Promise<void>((resolve) => sock.on('connect', resolve));
      expect(transportOf(sock)).to.equal('shm');
      // Write without reading, so bytes are in flight both ways when the peer dies.
      const chunk = Buffer.alloc(256 * 1024, 1);
      let writing = true;
      const go = (): void => {
        while (writing && sock.write(chunk));
        if (writing) sock.once('drain', go);
      };
      go();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const events: string[] = [];
      sock.on('error', (entry: Any) => events.push(`error ${entry.code}`));
      const closed = new Promise((resolve) => sock.on('close', resolve));
      const t0 = Date.now();
      server.proc.kill('SIGKILL');
      await closed;
      writing = false;
      const ms = Date.now() - t0;
      console.log(`      client saw [${events.join(', ')}] and close ${ms} ms after the kill`);
      expect(events.length).to.be.at.most(1);
      if (events.length) expect(events[0]).to.match(/^error (ECONNRESET|EPIPE)$/);
      expect(await waitFor(() => usedSlots() === 0, 5000)).to.equal(true);
    });

    it('the server sees an error or close, and the slot is reclaimed', async () => {
      const server = zivm.createServer();
      const accepted = new Promise<nodeNet.Socket>((resolve) => server.on('connection', resolve));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as nodeNet.AddressInfo).port;
      const client = spawnPeer('peer', ['flood', 'zivm', String(port), '127.0.0.1']);
      expect((await client.next()).transport).to.equal('shm');
      const sock = await accepted;
      expect(transportOf(sock)).to.equal('shm');
      const events: string[] = [];
      sock.on('error', (entry: Any) => events.push(`error ${entry.code}`));
      sock.on('end', () => events.push('end'));
      // Read slowly so the ring holds unread bytes when the client dies.
      sock.pause();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const closed = new Promise((resolve) => sock.on('close', resolve));
      const t0 = Date.now();
      client.proc.kill('SIGKILL');
      sock.resume();
      sock.on('data', () => {});
      await closed;
      const ms = Date.now() - t0;
      console.log(`      server saw [${events.join(', ')}] and close ${ms} ms after the kill`);
      expect(events.filter((entry) => entry.startsWith('error')).length).to.be.at.most(1);
      await new Promise((resolve) => server.close(resolve));
      expect(await waitFor(() => usedSlots() === 0, 5000)).to.equal(true);
    });
  });

  describe('short-lived clients one after another', () => {
    it('each is answered, though each takes the id its predecessor just left', async () => {
      // A server that keeps busy-polling sees each request before the daemon's news of the new client.
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], { ZIVM_SPIN_US: '10000000' });
      const list = await server.next();
      for (let i = 0; i < 25; i++) {
        const client = spawnPeer('peer', ['transfer', 'zivm', String(list.port), '127.0.0.1', '1000', String(i + 1)]);
        const item = await Promise.race([
          client.next(),
          new Promise<never>((_, j) =>
            setTimeout(() => j(new Error(`client ${i} never connected:\n${client.stderr()}\nserver:\n${server.stderr().slice(-4000)}`)), 15000),
          ),
        ]);
        expect(item.transport, `client ${i}`).to.equal('shm');
        const done = await client.next();
        expect(done.received, `client ${i}`).to.equal(done.sent);
        client.proc.stdin!.end();
        await client.exited;
      }
    });
  });

  describe('a server whose event loop is busy', () => {
    for (const [name, mod] of [
      ['node:net', nodeNet],
      ['zivm', zivm],
    ] as const) {
      it(`${name}: connect completes before the server's code runs (as from a kernel backlog); bytes written meanwhile arrive, even from a client already gone`, async () => {
        const src = path.join(__dirname, '..', 'src');
        // The server blocks its loop for 1.5 s right after saying where it listens.
        const script = `const m = ${name === 'zivm' ? `require(${JSON.stringify(src)})` : "require('node:net')"};
          let ended = 0;
          const srv = m.createServer((s) => { let got = ''; s.on('error', () => {}); s.on('data', (d) => (got += d)); s.on('end', () => { console.log(JSON.stringify({ got, transport: s.transport ?? 'tcp' })); s.end(); if (++ended === 2) srv.close(); }); });
          srv.listen(0, '127.0.0.1', () => { console.log(JSON.stringify({ port: srv.address().port })); setTimeout(() => { const t = Date.now(); while (Date.now() - t < 1500); console.log(JSON.stringify({ unblocked: true })); }, 50); });`;
        const child = new Proc(process.execPath, ['-e', script], { name: `${name} server`, stdin: false, stderr: 'inherit' });
        const { port } = await child.next(undefined, 10000);
        await new Promise((resolve) => setTimeout(resolve, 300)); // the server is blocked now
        const order: string[] = [];
        const conn = (mod as typeof nodeNet).connect(port as number, '127.0.0.1');
        conn.on('connect', () => {
          order.push(child.lines.some((list) => list.unblocked) ? 'connect after the server unblocked' : 'connect while the server is blocked');
          conn.end('sent while the server was busy');
        });
        conn.resume();
        // Another one writes, ends and is gone before the server ever ran: its bytes still arrive.
        const c2 = (mod as typeof nodeNet).connect(port as number, '127.0.0.1');
        c2.on('connect', () => c2.end('from a client already gone'));
        c2.on('finish', () => c2.destroy());
        c2.on('error', () => undefined);
        await new Promise((resolve) => c2.once('close', resolve));
        await new Promise((resolve) => conn.once('close', resolve));
        await child.exited;
        expect(order).to.deep.equal(['connect while the server is blocked']);
        const done = child.lines.filter((list) => list.got !== undefined);
        expect(done.map((list) => list.got).sort()).to.deep.equal(['from a client already gone', 'sent while the server was busy']);
        if (name === 'zivm') expect(done.map((list) => list.transport)).to.deep.equal(['shm', 'shm']);
      });
    }
  });

  describe('the busy-poll window', () => {
    it('grows while a peer answers about a millisecond after it stopped spinning, and shrinks back once traffic is sparse', async () => {
      const src = path.join(__dirname, '..', 'src');
      // 'x': answered after 1 ms of work; 'y': at once.
      const server = `const m = require(${JSON.stringify(src)});
        const srv = m.createServer((s) => { s.on('error', () => {}); s.on('data', (d) => { if (d[0] === 0x78) { const t = process.hrtime.bigint(); while (process.hrtime.bigint() - t < 1000000n); } s.write(d); }); });
        srv.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: srv.address().port })));`;
      const child = new Proc(process.execPath, ['-e', server], { name: 'slow echo server', stderr: 'inherit' });
      const { port } = await child.next(undefined, 10000);
      // The client in a process of its own: its window is its process's, whatever ran before.
      const client = `const m = require(${JSON.stringify(src)});
        const sock = m.connect(${port as number}, '127.0.0.1', async () => {
          const state = sock._handle.ch.domain.spinState;
          const exchange = (byte) => new Promise((resolve) => { sock.once('data', resolve); sock.write(byte); });
          const configured = state[3];
          let grown = 0;
          // A hundred requests: a core another process needed (the rest of a test run on two cores) starts
          // the window over, and the largest it reached in between is what counts.
          for (let i = 0; i < 100; i++) { await exchange('x'); grown = Math.max(grown, state[3]); }
          // Now an answer at once, 30 ms apart: each request comes long after spinning stopped.
          for (let i = 0; i < 8; i++) { await new Promise((resolve) => setTimeout(resolve, 30)); await exchange('y'); }
          console.log(JSON.stringify({ transport: sock.transport, configured, grown, sparse: state[3] }));
          sock.destroy();
        });`;
      const res = await new Promise<{ transport: string; configured: number; grown: number; sparse: number }>((resolve, reject) =>
        execFile(process.execPath, ['-e', client], { timeout: 20000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!)),
        ),
      );
      child.proc.kill();
      await child.exited;
      expect(res.transport).to.equal('shm');
      expect(res.configured, 'the window as configured (ZIVM_SPIN_US, 200 µs by default)').to.equal(200);
      expect(res.grown, 'the largest window while answers came 1 ms after each request').to.be.at.least(4 * res.configured);
      expect(res.grown, 'at most ten times the configured window').to.be.at.most(10 * res.configured);
      expect(res.sparse, `after sparse traffic (grown to ${res.grown} µs)`).to.be.at.most(2 * res.configured);
    });
  });

  describe('a full region', () => {
    it('sends the connections that find no free slot over TCP, losing nothing', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-full-'));
      // 2 MiB with 512 KiB rings: room for one connection only.
      const env = { ZIVM_DIR: dir, ZIVM_SIZE: '2M', ZIVM_RING: '512K', ZIVM_IDLE_MS: '300' };
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], env);
      const list = await server.next();
      const src = path.join(__dirname, '..', 'src');
      const script = `const z = require(${JSON.stringify(src)}); const out = [];
        const socks = [0, 1, 2].map(() => z.connect(${list.port}, '127.0.0.1'));
        let left = socks.length;
        for (const s of socks) s.on('connect', () => { s.write('hello'); s.once('data', (d) => { out.push([s.transport, String(d)]); if (--left === 0) { console.log(JSON.stringify({ out, reasons: z.stats().connections.tcpReasons })); process.exit(0); } }); });`;
      const res = await new Promise<{ out: [string, string][]; reasons: Record<string, number> }>((resolve, reject) => {
        execFile(process.execPath, ['-e', script], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
          err ? reject(new Error(stderr)) : resolve(JSON.parse(stdout)),
        );
      });
      expect(res.out.map((elem) => elem[1])).to.deep.equal(['hello', 'hello', 'hello']);
      expect(res.out.filter((elem) => elem[0] === 'shm').length).to.equal(1);
      expect(res.out.filter((elem) => elem[0] === 'tcp').length).to.equal(2);
      expect(Object.keys(res.reasons).join()).to.match(/every connection slot of the region is taken/);
      await killAll();
      fs.rmSync(dir, { recursive: true, force: true });
    });
  });

  describe('a peer id handed out again', () => {
    it('is rung by its doorbell even though the peer before it died while busy-polling', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-reuse-'));
      const env = { ZIVM_DIR: dir, ZIVM_IDLE_MS: '2000' };
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], env);
      const list = await server.next();
      // A long busy-poll window makes sure it is polling when it dies.
      const flood = spawnPeer('peer', ['flood', 'zivm', String(list.port), '127.0.0.1'], { ...env, ZIVM_SPIN_US: '10000000' });
      expect((await flood.next()).transport).to.equal('shm');
      await new Promise((resolve) => setTimeout(resolve, 100));
      flood.proc.kill('SIGKILL'); // killed mid-traffic: it was busy-polling
      await flood.exited;
      await server.next(); // its connection went away
      const second = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], env); // takes the freed id
      const l2 = await second.next();
      await new Promise((resolve) => setTimeout(resolve, 500)); // long enough to be idle, sleeping on its doorbell
      const client = spawnPeer('peer', ['transfer', 'zivm', String(l2.port), '127.0.0.1', String(MiB), '5'], env);
      expect((await client.next()).transport).to.equal('shm');
      const done = await client.next();
      expect(done.received).to.equal(done.sent);
      await killAll();
      fs.rmSync(dir, { recursive: true, force: true });
    });
  });

  describe('clean-up', () => {
    it('leaves no file in the socket folder or /dev/shm once every process is gone', async function () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-cleanup-'));
      const shmBefore = fs.readdirSync('/dev/shm').sort();
      const env = { ZIVM_DIR: dir, ZIVM_IDLE_MS: '200' };
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], env);
      const list = await server.next();
      expect(fs.readdirSync(dir).length).to.be.above(0);
      const client = spawnPeer('peer', ['flood', 'zivm', String(list.port), '127.0.0.1'], env);
      expect((await client.next()).transport).to.equal('shm');
      client.proc.kill('SIGKILL');
      server.proc.kill('SIGKILL');
      await Promise.all([client.exited, server.exited]);
      const empty = await waitFor(() => !fs.existsSync(dir) || fs.readdirSync(dir).length === 0, 10000, 50);
      expect(empty, `left in ${dir}: ${fs.existsSync(dir) ? fs.readdirSync(dir).join(', ') : ''}`).to.equal(true);
      expect(fs.readdirSync('/dev/shm').sort()).to.deep.equal(shmBefore);
      fs.rmSync(dir, { recursive: true, force: true });
    });
  });
});
