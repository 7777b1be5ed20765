import { expect } from 'chai';
import { once } from 'node:events';
import * as nodeNet from 'node:net';
import type * as net from 'node:net';
import { forEachImpl, listen, closed, nextError, pair, readAll, trackSocket, until } from './impl';

forEachImpl((impl) => {
  describe('Server#listen()', function () {
    it("listen(0, '127.0.0.1') calls back, emits 'listening', and address() is an IPv4 AddressInfo", async function () {
      const server = impl.createServer();
      const order: string[] = [];
      server.on('listening', () => order.push('listening'));
      expect(server.address()).to.equal(null);
      const ret = server.listen(0, '127.0.0.1', () => order.push('callback'));
      expect(ret).to.equal(server);
      await once(server, 'listening');
      await new Promise((resolve) => setImmediate(resolve));
      expect(order).to.deep.equal(['listening', 'callback']);
      expect(server.listening).to.equal(true);
      const addr = server.address() as net.AddressInfo;
      expect(addr).to.have.all.keys('address', 'family', 'port');
      expect(addr.address).to.equal('127.0.0.1');
      expect(addr.family).to.equal('IPv4');
      expect(addr.port).to.be.a('number').greaterThan(0);
    });

    it("listen(0, '::1'): address() is an IPv6 AddressInfo", async function () {
      const server = impl.createServer();
      const port = await listen(server, '::1');
      expect(server.address()).to.deep.equal({ address: '::1', family: 'IPv6', port });
    });

    it('listen({ port: 0, host }) (options form)', async function () {
      const server = impl.createServer();
      await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
      expect((server.address() as net.AddressInfo).address).to.equal('127.0.0.1');
    });

    it('listen(0) with no host listens on every address', async function () {
      const server = impl.createServer((sock) => sock.end('any'));
      const port = await listen(server, null);
      const addr = server.address() as net.AddressInfo;
      expect(['::', '0.0.0.0']).to.include(addr.address);
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      impl.expectShm(client);
      expect((await readAll(client)).toString()).to.equal('any');
    });

    it("a server on '::' takes connections to 127.0.0.1 (as ::ffff:127.0.0.1) and to ::1", async function () {
      const accepted: net.Socket[] = [];
      const server = impl.createServer((sock) => accepted.push(sock));
      const port = await listen(server, '::');
      expect(server.address()).to.deep.equal({ address: '::', family: 'IPv6', port });

      const c4 = impl.connect(port, '127.0.0.1');
      await once(c4, 'connect');
      await until(() => accepted.length === 1);
      impl.expectShm(c4, accepted[0]);
      expect(c4.remoteAddress).to.equal('127.0.0.1');
      expect(c4.remoteFamily).to.equal('IPv4');
      expect(accepted[0].remoteAddress).to.equal('::ffff:127.0.0.1');
      expect(accepted[0].remoteFamily).to.equal('IPv6');
      expect(accepted[0].localAddress).to.equal('::ffff:127.0.0.1');
      expect(accepted[0].remotePort).to.equal(c4.localPort);

      const c6 = impl.connect(port, '::1');
      await once(c6, 'connect');
      await until(() => accepted.length === 2);
      impl.expectShm(c6, accepted[1]);
      expect(c6.remoteAddress).to.equal('::1');
      expect(c6.remoteFamily).to.equal('IPv6');
      expect(accepted[1].remoteAddress).to.equal('::1');
      expect(accepted[1].remotePort).to.equal(c6.localPort);
    });

    it("a server on '0.0.0.0' sees the dialled address as its socket's localAddress", async function () {
      const server = impl.createServer();
      const accepted = once(server, 'connection');
      const port = await listen(server, '0.0.0.0');
      expect(server.address()).to.deep.equal({ address: '0.0.0.0', family: 'IPv4', port });
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      const [peer] = (await accepted) as [net.Socket];
      impl.expectShm(client, peer);
      expect(peer.localAddress).to.equal('127.0.0.1');
      expect(peer.localPort).to.equal(port);
      expect(peer.remoteAddress).to.equal('127.0.0.1');
    });

    it('servers on 127.0.0.1 and ::1 with the same port each get their own connections', async function () {
      const v4 = impl.createServer((sock) => sock.end('v4'));
      const port = await listen(v4, '127.0.0.1');
      const v6 = impl.createServer((sock) => sock.end('v6'));
      try {
        await listen(v6, '::1', port);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') this.skip(); // the port is taken on ::1 by someone else
        throw err;
      }
      const c4 = impl.connect(port, '127.0.0.1');
      const c6 = impl.connect(port, '::1');
      await Promise.all([once(c4, 'connect'), once(c6, 'connect')]);
      impl.expectShm(c4, c6);
      const [r4, r6] = await Promise.all([readAll(c4), readAll(c6)]);
      expect(r4.toString()).to.equal('v4');
      expect(r6.toString()).to.equal('v6');
    });

    it("ipv6Only on '::' refuses connections to 127.0.0.1", async function () {
      const server = impl.createServer();
      await new Promise<void>((resolve) => server.listen({ port: 0, host: '::', ipv6Only: true }, resolve));
      const port = (server.address() as net.AddressInfo).port;
      const client = impl.connect(port, '127.0.0.1');
      const err = await nextError(client);
      expect(err.code).to.equal('ECONNREFUSED');
    });

    it('emits EADDRINUSE for a second server on the same port', async function () {
      const first = impl.createServer();
      const port = await listen(first);
      const second = impl.createServer();
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        second.on('error', resolve);
        second.listen(port, '127.0.0.1');
      });
      expect(err.code).to.equal('EADDRINUSE');
      expect(err.syscall).to.equal('listen');
      expect((err as { address?: string }).address).to.equal('127.0.0.1');
      expect((err as { port?: number }).port).to.equal(port);
      expect(second.listening).to.equal(false);
      // The first one is unharmed.
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      impl.expectShm(client);
    });

    it('listen() on a listening server throws ERR_SERVER_ALREADY_LISTEN', async function () {
      const server = impl.createServer();
      await listen(server);
      let err: (Error & { code?: string }) | undefined;
      try {
        server.listen(0, '127.0.0.1');
      } catch (err2) {
        err = err2 as Error & { code?: string };
      }
      expect(err?.code).to.equal('ERR_SERVER_ALREADY_LISTEN');
      expect(server.listening).to.equal(true);
    });

    it('can listen again after close()', async function () {
      const server = impl.createServer((sock) => sock.end('again'));
      await listen(server);
      await new Promise((resolve) => server.close(resolve));
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      impl.expectShm(client);
      expect((await readAll(client)).toString()).to.equal('again');
      await new Promise((resolve) => server.close(resolve));
      expect(server.address()).to.equal(null);
    });

    it('a new server on the port of a closed one gets the connections', async function () {
      const old = impl.createServer((sock) => sock.end('old'));
      const port = await listen(old);
      // A connection the old server still holds while it closes.
      const held = impl.connect(port, '127.0.0.1');
      held.resume();
      await once(held, 'connect');
      old.close();
      const fresh = impl.createServer((sock) => sock.end('new'));
      try {
        await listen(fresh, '127.0.0.1', port);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') this.skip(); // someone else took the port meanwhile
        throw err;
      }
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      impl.expectShm(client);
      expect((await readAll(client)).toString()).to.equal('new');
    });

    it('listens on a unix socket path and address() returns the path', async function () {
      const os = await import('node:os');
      const fs = await import('node:fs');
      const path = await import('node:path');
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-compat-unix-'));
      try {
        const file = path.join(dir, 'srv.sock');
        const server = impl.createServer((sock) => sock.end('unix'));
        await new Promise<void>((resolve) => server.listen(file, resolve));
        expect(server.address()).to.equal(file);
        // A node:net client reaches it too.
        const client = trackSocket(nodeNet.connect(file));
        expect((await readAll(client)).toString()).to.equal('unix');
        await new Promise((resolve) => server.close(resolve));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('Server connections', function () {
    it('getConnections() counts live connections', async function () {
      const { server, client } = await pair(impl);
      const second = impl.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      await once(second, 'connect');
      await until(() => (server as net.Server & { _connections: number })._connections === 2);
      const count = (): Promise<number> => new Promise((resolve, reject) => server.getConnections((err, count2) => (err ? reject(err) : resolve(count2))));
      expect(await count()).to.equal(2);
      client.destroy();
      await until(() => (server as net.Server & { _connections: number })._connections === 1);
      expect(await count()).to.equal(1);
    });

    it("maxConnections: a connection past the limit is dropped with a 'drop' event", async function () {
      const server = impl.createServer();
      server.maxConnections = 1;
      const accepted: net.Socket[] = [];
      server.on('connection', (sock: net.Socket) => accepted.push(sock));
      const port = await listen(server);
      const first = impl.connect(port, '127.0.0.1');
      await once(first, 'connect');
      await until(() => accepted.length === 1);
      impl.expectShm(first, accepted[0]);
      const dropped = once(server, 'drop');
      const second = impl.connect(port, '127.0.0.1');
      second.on('error', () => undefined);
      second.resume();
      const [info] = (await dropped) as [Record<string, unknown>];
      expect(info.localAddress).to.equal('127.0.0.1');
      expect(info.localPort).to.equal(port);
      expect(info.remoteAddress).to.equal('127.0.0.1');
      expect(info.remoteFamily).to.equal('IPv4');
      expect(info.remotePort).to.be.a('number');
      await closed(second);
      if (second.localPort !== undefined) expect(info.remotePort).to.equal(second.localPort);
      expect(accepted).to.have.length(1);
      // The first connection is unharmed.
      const got = readAll(first);
      accepted[0].end('still here');
      expect((await got).toString()).to.equal('still here');
    });

    it('maxConnections = 0: every connection is dropped from Node 21 on, none before (as net)', async function () {
      const dropsAll = Number(process.versions.node.split('.')[0]) >= 21;
      const server = impl.createServer();
      server.maxConnections = 0;
      const accepted: net.Socket[] = [];
      let drops = 0;
      server.on('connection', (sock: net.Socket) => accepted.push(sock));
      server.on('drop', () => drops++);
      const port = await listen(server);
      const clients = [impl.connect(port, '127.0.0.1'), impl.connect(port, '127.0.0.1')];
      for (const client of clients) {
        client.on('error', () => undefined);
        client.resume();
      }
      if (dropsAll) {
        await Promise.all(clients.map((client) => closed(client)));
        expect(drops).to.equal(2);
        expect(accepted).to.have.length(0);
      } else {
        await until(() => accepted.length === 2, 'both connections');
        expect(drops).to.equal(0);
        for (const client of clients) client.destroy();
      }
    });

    it("blockList: a blocked peer is closed without 'connection' or 'drop' (Node 22 on; ignored before, as net)", async function () {
      const blockList = new nodeNet.BlockList();
      blockList.addAddress('127.0.0.1');
      const server = impl.createServer({ blockList } as net.ServerOpts);
      const honoured = (server as net.Server & { blockList?: unknown }).blockList !== undefined;
      let connections = 0;
      let drops = 0;
      server.on('connection', (sock: net.Socket) => {
        connections++;
        sock.end('in');
      });
      server.on('drop', () => drops++);
      const port = await listen(server, '0.0.0.0');
      const blocked = impl.connect(port, '127.0.0.1');
      blocked.on('error', () => undefined);
      const got = readAll(blocked).catch(() => Buffer.alloc(0));
      await closed(blocked);
      expect(drops).to.equal(0);
      if (honoured) {
        expect(connections, 'a blocked peer gets no connection').to.equal(0);
        expect((await got).length).to.equal(0);
      } else {
        expect(connections).to.equal(1);
        expect((await got).toString()).to.equal('in');
      }
    });

    it("maxConnections on a '::' server: 'drop' reports the IPv4-mapped peer", async function () {
      const server = impl.createServer();
      server.maxConnections = 1;
      const accepted: net.Socket[] = [];
      server.on('connection', (sock: net.Socket) => accepted.push(sock));
      const port = await listen(server, '::');
      const first = impl.connect(port, '127.0.0.1');
      await once(first, 'connect');
      await until(() => accepted.length === 1);
      const dropped = once(server, 'drop');
      const second = impl.connect(port, '127.0.0.1');
      second.on('error', () => undefined);
      second.resume();
      const [info] = (await dropped) as [Record<string, unknown>];
      expect(info.localAddress).to.equal('::ffff:127.0.0.1');
      expect(info.remoteAddress).to.equal('::ffff:127.0.0.1');
      expect(info.remoteFamily).to.equal('IPv6');
      expect(info.localPort).to.equal(port);
    });

    it('serves 300 connections one after another (more than fit at once in shared memory)', async function () {
      this.timeout(30000);
      const server = impl.createServer((sock) => sock.end('ok'));
      const port = await listen(server);
      for (let i = 0; i < 300; i++) {
        const conn = impl.connect(port, '127.0.0.1');
        await once(conn, 'connect');
        impl.expectShm(conn);
        expect((await readAll(conn)).toString()).to.equal('ok');
        await closed(conn);
      }
    });

    it('accepts 50 concurrent connections and serves each its own reply', async function () {
      const server = impl.createServer((sock) => {
        let buf = '';
        sock.setEncoding('utf8');
        sock.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.endsWith('\n')) sock.end(`re:${buf}`);
        });
      });
      const port = await listen(server);
      const addon = 50;
      const replies = await Promise.all(
        Array.from({ length: addon }, async (_, i) => {
          const conn = impl.connect(port, '127.0.0.1');
          await once(conn, 'connect');
          impl.expectShm(conn);
          conn.write(`client ${i}\n`);
          return (await readAll(conn)).toString();
        }),
      );
      for (let i = 0; i < addon; i++) expect(replies[i]).to.equal(`re:client ${i}\n`);
    });

    it('takes connections from a node:net client as sockets of its own class', async function () {
      const server = impl.createServer();
      const accepted = once(server, 'connection');
      const port = await listen(server);
      const client = trackSocket(nodeNet.connect(port, '127.0.0.1'));
      const [peer] = (await accepted) as [net.Socket];
      expect(peer).to.be.instanceOf(impl.net.Socket);
      if (impl.isZivm) expect((peer as net.Socket & { transport?: string }).transport).to.equal('tcp');
      const got = readAll(client);
      peer.end('plain tcp');
      expect((await got).toString()).to.equal('plain tcp');
    });

    it('its client reaches a plain node:net server (over TCP)', async function () {
      const plain = nodeNet.createServer((sock) => sock.end('plain server'));
      try {
        const port = await listen(plain);
        const client = impl.connect(port, '127.0.0.1');
        expect((await readAll(client)).toString()).to.equal('plain server');
        if (impl.isZivm) expect((client as net.Socket & { transport?: string }).transport).to.equal('tcp');
      } finally {
        plain.close();
      }
    });

    it('ref() and unref() return the server', async function () {
      const server = impl.createServer();
      await listen(server);
      expect(server.unref()).to.equal(server);
      expect(server.ref()).to.equal(server);
    });
  });
});
