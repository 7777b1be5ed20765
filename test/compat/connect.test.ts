import { expect } from 'chai';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as net from 'node:net';
import { forEachImpl, listen, closed, nextError, readAll, trackSocket } from './impl';

forEachImpl((impl) => {
  describe('net.connect()', function () {
    it('connect(port, host, listener) calls the listener, then emits connect and ready', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const events: string[] = [];
      const accepted = once(server, 'connection');
      const client = impl.connect(port, '127.0.0.1', () => events.push('listener'));
      client.on('connect', () => events.push('connect'));
      client.on('ready', () => events.push('ready'));
      await once(client, 'ready');
      expect(events).to.deep.equal(['listener', 'connect', 'ready']);
      const [peer] = await accepted;
      impl.expectShm(client, peer);
    });

    it('accepts an options object { port, host }', async function () {
      const server = impl.createServer((sock) => sock.end('options'));
      const port = await listen(server);
      const client = impl.connect({ port, host: '127.0.0.1' });
      await once(client, 'connect');
      expect(client.remotePort).to.equal(port);
      impl.expectShm(client);
      const data = await readAll(client);
      expect(data.toString()).to.equal('options');
    });

    it('connect(port) defaults to localhost', async function () {
      const server = impl.createServer();
      const port = await listen(server, '127.0.0.1');
      const accepted = once(server, 'connection');
      const client = impl.connect(port);
      await once(client, 'connect');
      const [peer] = await accepted;
      expect(client.remoteAddress).to.equal('127.0.0.1');
      impl.expectShm(client, peer);
    });

    it('accepts the port as a numeric string', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const accepted = once(server, 'connection');
      const client = (impl.connect as (...args: unknown[]) => net.Socket)(String(port), '127.0.0.1');
      await once(client, 'connect');
      expect(client.remotePort).to.equal(port);
      const [peer] = await accepted;
      impl.expectShm(client, peer);
    });

    it("connects to 'localhost' and emits lookup before connect", async function () {
      const server = impl.createServer();
      const port = await listen(server, '127.0.0.1');
      const events: string[] = [];
      let lookupArgs: unknown[] = [];
      const accepted = once(server, 'connection');
      const client = impl.connect(port, 'localhost');
      client.on('lookup', (...args: unknown[]) => {
        events.push('lookup');
        lookupArgs = args;
      });
      client.on('connect', () => events.push('connect'));
      client.on('ready', () => events.push('ready'));
      await once(client, 'ready');
      expect(events).to.deep.equal(['lookup', 'connect', 'ready']);
      expect(lookupArgs).to.deep.equal([null, '127.0.0.1', 4, 'localhost']);
      const [peer] = await accepted;
      impl.expectShm(client, peer);
    });

    it('looks a host name up through node:dns as it is then (a dns.lookup replaced by the application is used)', async function () {
      const server = impl.createServer((sock) => sock.end('replaced'));
      const port = await listen(server);
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- the module object itself: its lookup is replaced for this test
      const dns = require('node:dns') as { lookup: (...args: unknown[]) => void };
      const original = dns.lookup;
      const asked: string[] = [];
      dns.lookup = (host: unknown, opts: unknown, cb: unknown): void => {
        asked.push(String(host));
        const all = typeof opts === 'object' && opts !== null && (opts as { all?: boolean }).all;
        const done = cb as (...args: unknown[]) => void;
        if (all) done(null, [{ address: '127.0.0.1', family: 4 }]);
        else done(null, '127.0.0.1', 4);
      };
      try {
        const accepted = once(server, 'connection');
        const client = impl.connect(port, 'replaced-lookup.invalid');
        await once(client, 'connect');
        const [peer] = await accepted;
        expect(asked).to.deep.equal(['replaced-lookup.invalid']);
        impl.expectShm(client, peer);
        expect((await readAll(client)).toString()).to.equal('replaced');
      } finally {
        dns.lookup = original;
      }
    });

    it('uses a custom lookup function for a host name', async function () {
      const server = impl.createServer((sock) => sock.end('looked up'));
      const port = await listen(server);
      const asked: string[] = [];
      const lookup = (host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void): void => {
        asked.push(host);
        if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
        else cb(null, '127.0.0.1', 4);
      };
      const accepted = once(server, 'connection');
      const client = impl.connect({ port, host: 'compat.invalid', lookup } as net.TcpNetConnectOpts);
      await once(client, 'connect');
      const [peer] = await accepted;
      impl.expectShm(client, peer);
      expect(asked).to.deep.equal(['compat.invalid']);
      expect((await readAll(client)).toString()).to.equal('looked up');
    });

    it("connects to 'localhost' with family: 4 (one address, no happy eyeballs)", async function () {
      const server = impl.createServer((sock) => sock.end('v4 only'));
      const port = await listen(server);
      const accepted = once(server, 'connection');
      let lookupArgs: unknown[] = [];
      const client = impl.connect({ port, host: 'localhost', family: 4 });
      client.on('lookup', (...args: unknown[]) => (lookupArgs = args));
      await once(client, 'connect');
      const [peer] = await accepted;
      impl.expectShm(client, peer);
      expect(lookupArgs).to.deep.equal([null, '127.0.0.1', 4, 'localhost']);
      expect((await readAll(client)).toString()).to.equal('v4 only');
    });

    it('accepts autoSelectFamily: false, noDelay and keepAlive options', async function () {
      const server = impl.createServer((sock) => sock.end('options ok'));
      const port = await listen(server);
      const accepted = once(server, 'connection');
      const client = impl.connect({
        port,
        host: 'localhost',
        autoSelectFamily: false,
        noDelay: true,
        keepAlive: true,
        keepAliveInitialDelay: 1000,
      } as net.TcpNetConnectOpts);
      await once(client, 'connect');
      const [peer] = await accepted;
      impl.expectShm(client, peer);
      expect((await readAll(client)).toString()).to.equal('options ok');
    });

    it('binds to localAddress when asked', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const accepted = once(server, 'connection');
      const client = impl.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' });
      await once(client, 'connect');
      const [peer] = (await accepted) as [net.Socket];
      impl.expectShm(client, peer);
      expect(client.localAddress).to.equal('127.0.0.1');
      expect(peer.remotePort).to.equal(client.localPort);
    });

    it('passes the timeout option on to setTimeout', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const client = impl.connect({ port, host: '127.0.0.1', timeout: 50 });
      expect(client.timeout).to.equal(50);
      await once(client, 'timeout');
      expect(client.destroyed).to.equal(false);
    });
  });

  describe('Socket#connect()', function () {
    it('returns the socket, and is pending and connecting until connected', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const sock = impl.socket();
      expect(sock.pending).to.equal(true);
      const accepted = once(server, 'connection');
      expect(sock.connect(port, '127.0.0.1')).to.equal(sock);
      expect(sock.connecting).to.equal(true);
      expect(sock.readyState).to.equal('opening');
      await once(sock, 'connect');
      expect(sock.connecting).to.equal(false);
      expect(sock.pending).to.equal(false);
      expect(sock.readyState).to.equal('open');
      const [peer] = await accepted;
      impl.expectShm(sock, peer);
    });

    it('takes an array as its arguments only if net._normalizeArgs made it: a plain one is options without a port (ERR_MISSING_ARGS)', async function () {
      const server = impl.createServer((sock) => sock.end());
      const port = await listen(server);
      const plain = impl.socket();
      expect(() => plain.connect([{ port, host: '127.0.0.1' }, () => undefined] as unknown as net.SocketConnectOpts))
        .to.throw()
        .with.property('code', 'ERR_MISSING_ARGS');
      plain.destroy();
      const made = impl.socket();
      const normalized = (impl.net as unknown as { _normalizeArgs(args: unknown[]): unknown })._normalizeArgs([{ port, host: '127.0.0.1' }]);
      made.connect(normalized as net.SocketConnectOpts);
      await once(made, 'connect');
      impl.expectShm(made);
      made.destroy();
    });

    it('sends what was written before the connection was made', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const got = new Promise<Buffer>((resolve) => server.once('connection', (sock: net.Socket) => resolve(readAll(sock))));
      const client = impl.connect(port, '127.0.0.1');
      expect(client.connecting).to.equal(true);
      client.write('early ');
      client.write('bird');
      client.end();
      expect((await got).toString()).to.equal('early bird');
      impl.expectShm(client);
    });

    it('can connect again after the socket closed', async function () {
      const server = impl.createServer((sock2) => sock2.end('hi'));
      const port = await listen(server);
      const sock = impl.socket();
      sock.connect(port, '127.0.0.1');
      expect((await readAll(sock)).toString()).to.equal('hi');
      await closed(sock);
      trackSocket(sock);
      sock.connect(port, '127.0.0.1');
      const again = readAll(sock);
      await once(sock, 'connect');
      impl.expectShm(sock);
      expect((await again).toString()).to.equal('hi');
    });

    it('connects to a unix socket when given a path', async function () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-compat-pipe-'));
      try {
        const file = path.join(dir, 's.sock');
        const server = impl.createServer((sock) => sock.end('over a pipe'));
        await new Promise<void>((resolve) => server.listen(file, resolve));
        expect(server.address()).to.equal(file);
        const client = impl.connect(file);
        expect((await readAll(client)).toString()).to.equal('over a pipe');
        if (impl.isZivm) expect((client as net.Socket & { transport?: string }).transport).to.equal('pipe');
        await closed(client);
        await new Promise<void>((resolve) => server.close(() => resolve()));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('connect errors', function () {
    it('emits ECONNREFUSED with code, errno, syscall, address and port for a closed port', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      const events: string[] = [];
      const client = impl.connect(port, '127.0.0.1');
      client.on('connect', () => events.push('connect'));
      const hadErrorP = closed(client);
      const err = await nextError(client);
      events.push('error');
      const hadError = await hadErrorP;
      events.push('close');
      expect(events).to.deep.equal(['error', 'close']);
      expect(hadError).to.equal(true);
      expect(err.code).to.equal('ECONNREFUSED');
      expect(err.errno).to.equal(-os.constants.errno.ECONNREFUSED);
      expect(err.syscall).to.equal('connect');
      expect((err as { address?: string }).address).to.equal('127.0.0.1');
      expect((err as { port?: number }).port).to.equal(port);
      expect(err.message).to.equal(`connect ECONNREFUSED 127.0.0.1:${port}`);
    });

    it('destroy() while connecting emits close without error and never connect', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const events: string[] = [];
      const client = impl.connect(port, '127.0.0.1');
      client.on('connect', () => events.push('connect'));
      client.on('error', () => events.push('error'));
      client.destroy();
      const hadError = await closed(client);
      events.push('close');
      expect(hadError).to.equal(false);
      expect(events).to.deep.equal(['close']);
      expect(client.destroyed).to.equal(true);
    });

    it('destroy(err) while connecting emits that error, then close(true)', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const events: string[] = [];
      const client = impl.connect(port, '127.0.0.1');
      const boom = new Error('boom');
      client.on('connect', () => events.push('connect'));
      client.on('error', (err) => events.push(`error:${err.message}`));
      client.on('close', (hadError) => events.push(`close:${hadError}`));
      client.destroy(boom);
      await closed(client);
      expect(events).to.deep.equal(['error:boom', 'close:true']);
    });
  });
});
