/**
 * TLS with zivm: TLS servers stay on TCP, and a TLS session started on an
 * existing shared-memory connection (STARTTLS) works through Node's stream adapter.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type net from 'node:net';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import * as zivm from '../src';
import { Channel } from '../src/shm/channel';
import { countingViews } from './helpers/views';
import { F_CLOSED } from '../src/shm/layout';

const FIX = path.join(__dirname, '..', '..', 'test', 'fixtures');
/** The package's preload hook as users get it (zivm/register: the bundled zivm). */
const REGISTER = path.join(__dirname, '..', 'src', 'bundle', 'register.js');
const key = fs.readFileSync(path.join(FIX, 'tls-key.pem'));
const cert = fs.readFileSync(path.join(FIX, 'tls-cert.pem'));

describe('TLS', function () {
  this.timeout(20000);

  it('STARTTLS on a shared-memory connection: both ends upgrade and talk', async () => {
    const server = zivm.createServer((raw) => {
      raw.once('data', () => {
        const target2 = new tls.TLSSocket(raw, { isServer: true, key, cert });
        target2.on('data', (msg) => target2.end(`secure echo: ${msg}`));
        raw.write('OK\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const raw = zivm.connect(port, '127.0.0.1');
    await new Promise((resolve) => raw.once('connect', resolve));
    expect(raw.transport).to.equal('shm');
    raw.write('STARTTLS\n');
    await new Promise((resolve) => raw.once('data', resolve));
    const target = tls.connect({ socket: raw, ca: cert, servername: 'localhost' });
    await new Promise((resolve) => target.once('secureConnect', resolve));
    expect(target.authorized).to.equal(true);
    target.write('hello');
    let got = '';
    target.setEncoding('utf8');
    target.on('data', (data) => (got += data));
    await new Promise((resolve) => target.once('end', resolve));
    expect(got).to.equal('secure echo: hello');
    target.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('TLS over a zivm socket still connecting to a zivm server: stays on TCP, no read EINVAL', async () => {
    // The server end upgrades the raw connection itself (STARTTLS-like, right away).
    const server = zivm.createServer((raw) => {
      const target2 = new tls.TLSSocket(raw, { isServer: true, key, cert });
      target2.on('error', () => undefined);
      target2.on('data', (msg) => target2.end(`secure echo: ${msg}`));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const raw = zivm.connect(port, '127.0.0.1');
    const target = tls.connect({ socket: raw, ca: cert, servername: 'localhost' });
    const errors: string[] = [];
    target.on('error', (err) => errors.push(err.message));
    await new Promise((resolve) => target.once('secureConnect', resolve));
    target.write('hi');
    let got = '';
    target.setEncoding('utf8');
    target.on('data', (data) => (got += data));
    await new Promise((resolve) => target.once('end', resolve));
    expect(errors).to.deep.equal([]);
    expect(got).to.equal('secure echo: hi');
    expect(raw.transport).to.equal('tcp');
    target.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('under the preload hook an https server stays on TCP and still serves', async () => {
    const script = `
      const https = require('https'), fs = require('fs');
      const key = fs.readFileSync(${JSON.stringify(path.join(FIX, 'tls-key.pem'))}), cert = fs.readFileSync(${JSON.stringify(path.join(FIX, 'tls-cert.pem'))});
      const s = https.createServer({ key, cert }, (q, r) => r.end('ok ' + q.socket.constructor.name + ' ' + (q.socket._parent ? q.socket._parent.transport : '-')));
      s.listen(0, '127.0.0.1', () => https.get({ host: '127.0.0.1', port: s.address().port, ca: cert, servername: 'localhost' }, (res) => {
        let b = ''; res.on('data', (d) => b += d); res.on('end', () => { console.log(b); s.close(); });
      }));`;
    const register = path.join(__dirname, '..', 'src', 'register.js');
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['-e', script],
        { env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${register}` } },
        (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout.trim())),
      );
    });
    expect(out).to.match(/^ok TLSSocket/);
  });

  it('bulk TLS over shared memory: 24 MiB of random bytes each way arrive intact, read in place by TLS', async () => {
    const size = 24 * 1024 * 1024;
    const data = crypto.randomBytes(size);
    const digest = crypto.createHash('sha256').update(data).digest('hex');
    const server = zivm.createServer((raw) => {
      const secure = new tls.TLSSocket(raw, { isServer: true, key, cert });
      secure.on('error', () => undefined);
      secure.pipe(secure); // echo
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const { result, views, bytes } = await countingViews(async () => {
      const raw = zivm.connect(port, '127.0.0.1');
      await new Promise((resolve) => raw.once('connect', resolve));
      const target = tls.connect({ socket: raw, ca: cert, servername: 'localhost' });
      await new Promise((resolve) => target.once('secureConnect', resolve));
      const hash = crypto.createHash('sha256');
      let got = 0;
      target.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        got += chunk.length;
      });
      // Writes of odd sizes, so that records and reads cross the end of the ring anywhere.
      for (let at = 0; at < size;) {
        const len = Math.min(size - at, 1 + ((at * 7919) % 200000));
        if (!target.write(data.subarray(at, at + len))) await new Promise((resolve) => target.once('drain', resolve));
        at += len;
      }
      target.end();
      await new Promise((resolve) => target.once('end', resolve));
      target.destroy();
      return { transport: raw.transport, got, digest: hash.digest('hex') };
    });
    expect(result).to.deep.equal({ transport: 'shm', got: size, digest });
    // Both ends' TLS read in place; the bytes include the records' overhead.
    expect(views).to.be.greaterThan(100);
    expect(bytes).to.be.greaterThan(2 * size);
    await new Promise((resolve) => server.close(resolve));
  });

  it("a TLS sender's writes give their copies back at once: after 256 MiB its ArrayBuffer memory has not risen by 16 MiB (it did by tens)", async () => {
    // TLS writes reach a shared-memory handle as copies made by Node's JSStream. Left to the garbage collector they
    // piled up by tens of megabytes between collections, on pages the allocator had given back: a page fault every
    // 4 KiB. The sender runs alone in its process (under the preload hook), so that only its own memory counts.
    let received = 0;
    const server = zivm.createServer((raw) => {
      const secure = new tls.TLSSocket(raw, { isServer: true, key, cert });
      secure.on('error', () => undefined);
      secure.on('data', (chunk: Buffer) => (received += chunk.length));
      secure.on('end', () => secure.end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--require', REGISTER, path.join(FIX, 'tls-sender.js'), String(port), '256'],
        { timeout: 60000, env: { ...process.env, NODE_OPTIONS: '' } },
        (err, out, errOut) => (err ? reject(new Error(`${err.message}: ${errOut}`)) : resolve(out)),
      );
    });
    const report = JSON.parse(stdout.trim()) as { transport: string; peak: number };
    expect(report.transport).to.equal('shm');
    expect(received).to.equal(256 * 1024 * 1024);
    expect(report.peak).to.be.below(16 * 1024 * 1024);
    await new Promise((resolve) => server.close(resolve));
  });

  it('a TLS server that destroys its connection while reading in place keeps the slot until the read is done, and goes on serving', async () => {
    const held: boolean[] = [];
    let looked: () => void = () => undefined;
    const lookedLater = new Promise<void>((resolve) => (looked = resolve));
    const server = zivm.createServer((raw) => {
      const ch = (raw as unknown as { _handle: { ch: Channel } })._handle.ch;
      const secure = new tls.TLSSocket(raw, { isServer: true, key, cert });
      secure.on('error', () => undefined);
      let seen = 0;
      secure.on('data', (chunk: Buffer) => {
        seen += chunk.length;
        if (seen < 256 * 1024 || held.length > 0) return;
        // Inside the read of a view of the ring: the connection is let go of, the slot not yet.
        raw.destroy();
        held.push(ch.isReleased && (ch.myFlagsNow() & F_CLOSED) === 0);
        setImmediate(() => {
          held.push((ch.myFlagsNow() & F_CLOSED) !== 0);
          looked();
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const { result } = await countingViews(async () => {
      const raw = zivm.connect(port, '127.0.0.1');
      await new Promise((resolve) => raw.once('connect', resolve));
      const target = tls.connect({ socket: raw, ca: cert, servername: 'localhost' });
      const closed = new Promise((resolve) => target.once('close', resolve));
      target.on('error', () => undefined);
      await new Promise((resolve) => target.once('secureConnect', resolve));
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let i = 0; i < 64 && !target.destroyed; i++) {
        if (!target.write(chunk)) await Promise.race([new Promise((resolve) => target.once('drain', resolve)), closed]);
      }
      await closed;
      return raw.transport;
    });
    expect(result).to.equal('shm');
    await lookedLater;
    expect(held).to.deep.equal([true, true]);
    // The next connection, on whatever slot, is served.
    const next = zivm.connect(port, '127.0.0.1');
    await new Promise((resolve) => next.once('connect', resolve));
    const secure = tls.connect({ socket: next, ca: cert, servername: 'localhost' });
    secure.on('error', () => undefined);
    await new Promise((resolve) => secure.once('secureConnect', resolve));
    expect([next.transport, secure.encrypted]).to.deep.equal(['shm', true]);
    secure.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  for (const host of ['127.0.0.1', 'localhost']) {
    it(`node:tls loaded only after connect(${host}) began, then wrapping that socket: it stays on TCP and TLS works`, async () => {
      // A process of its own: node:tls must not be loaded before the connect (mocha's process has it).
      const script = `
        const fs = require('fs');
        const zivm = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'index.js'))});
        const key = fs.readFileSync(${JSON.stringify(path.join(FIX, 'tls-key.pem'))}), cert = fs.readFileSync(${JSON.stringify(path.join(FIX, 'tls-cert.pem'))});
        const tlsLoaded = () => process.moduleLoadList.includes('NativeModule tls');
        const server = zivm.createServer((raw) => {
          const t = new (require('tls').TLSSocket)(raw, { isServer: true, key, cert });
          t.on('error', () => {});
          t.on('data', (m) => t.end('secure echo: ' + m));
        });
        server.listen(0, '127.0.0.1', () => {
          const before = tlsLoaded();
          const raw = zivm.connect(server.address().port, ${JSON.stringify(host)});
          const tls = require('tls');
          const target = tls.connect({ socket: raw, ca: cert, servername: 'localhost' });
          target.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
          target.on('secureConnect', () => target.write('hi'));
          let got = '';
          target.setEncoding('utf8');
          target.on('data', (d) => (got += d));
          target.on('end', () => {
            // A later connection is over shared memory, and TLS knows its handle.
            const next = zivm.connect(server.address().port, '127.0.0.1', () => {
              console.log(JSON.stringify({ before, got, transport: raw.transport, next: next.transport, patched: tls.TLSSocket.prototype[Symbol.for('zivm.tls')] === true }));
              next.destroy();
              target.destroy();
              server.close();
            });
          });
        });`;
      const out = await new Promise<string>((resolve, reject) => {
        execFile(process.execPath, ['-e', script], { timeout: 20000, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}\n${stdout}`)) : resolve(stdout.trim()),
        );
      });
      expect(JSON.parse(out)).to.deep.equal({ before: false, got: 'secure echo: hi', transport: 'tcp', next: 'shm', patched: true });
    });
  }
});
