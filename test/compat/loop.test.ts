/**
 * Where a socket's events fall in the event loop: each read is a callback of
 * its own (nextTick and microtask queues run between reads and before 'end'),
 * a listening socket is looked at before its client's connect completes in one
 * process, and no listener is added to objects the application owns.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import type * as net from 'node:net';
import * as nodeNet from 'node:net';
import { forEachImpl, listen, closed, pair, pattern, delay } from './impl';

forEachImpl((impl) => {
  describe('Socket reads in the event loop', function () {
    it("runs what a 'data' listener queued (nextTick, then microtasks) before 'end'", async function () {
      const server = impl.createServer((sock) => sock.end('hello'));
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1');
      const events: string[] = [];
      client.on('data', () => {
        events.push('data');
        process.nextTick(() => events.push('tick'));
        queueMicrotask(() => events.push('microtask'));
      });
      client.on('end', () => events.push('end'));
      client.once('connect', () => impl.expectShm(client));
      await closed(client);
      expect(events).to.deep.equal(['data', 'tick', 'microtask', 'end']);
    });

    it("runs the microtasks a 'data' listener queued before the next 'data'", async function () {
      const { client, peer } = await pair(impl);
      const events: string[] = [];
      let got = 0;
      peer.on('data', (chunk: Buffer) => {
        got += chunk.length;
        events.push('d');
        queueMicrotask(() => events.push('m'));
      });
      // Several reads' worth, written before the reader looks.
      client.end(pattern(1 << 20));
      await once(peer, 'end');
      expect(got).to.equal(1 << 20);
      expect(events.length).to.be.above(2);
      for (let i = 0; i < events.length; i += 2) expect(events.slice(i, i + 2), `events ${i}..`).to.deep.equal(['d', 'm']);
    });

    it("a promise chain started in 'data' completes before 'end'", async function () {
      const server = impl.createServer((sock) => sock.end('request'));
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1');
      const seen: string[] = [];
      client.on('data', () => {
        void Promise.resolve()
          .then(() => undefined)
          .then(() => seen.push('handled'));
      });
      client.on('end', () => seen.push('end'));
      await closed(client);
      expect(seen).to.deep.equal(['handled', 'end']);
    });
  });

  describe('Connections within one process', function () {
    it("emits the server's 'connection' before the client's 'connect'", async function () {
      const events: string[] = [];
      const server = impl.createServer(() => events.push('connection'));
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1', () => events.push('connect'));
      await once(client, 'connect');
      await delay(20);
      impl.expectShm(client);
      expect(events).to.deep.equal(['connection', 'connect']);
    });

    it("server.close() in the client's 'connect': the server keeps the connection, the client is not reset", async function () {
      const events: string[] = [];
      let accepted: net.Socket | undefined;
      const server = impl.createServer((sock) => {
        accepted = sock;
        events.push('connection');
        sock.on('data', (chunk) => sock.end(chunk));
      });
      const port = await listen(server);
      let serverClosed = false;
      const client = impl.connect(port, '127.0.0.1', () => {
        events.push('connect');
        server.close(() => (serverClosed = true));
      });
      client.on('error', (err: NodeJS.ErrnoException) => events.push(`error ${err.code}`));
      await once(client, 'connect');
      await delay(50);
      expect(events).to.include('connection');
      expect(events.filter((entry) => entry.startsWith('error'))).to.deep.equal([]);
      expect(serverClosed, 'server closed while a connection is open').to.equal(false);
      // The connection still works, then the server finishes closing.
      client.write('ping');
      const reply = await new Promise<string>((resolve) => {
        let text = '';
        client.on('data', (chunk) => (text += String(chunk)));
        client.on('end', () => resolve(text));
      });
      expect(reply).to.equal('ping');
      impl.expectShm(accepted!);
      await closed(client);
      for (let i = 0; i < 100 && !serverClosed; i++) await delay(10);
      expect(serverClosed).to.equal(true);
    });
  });

  describe('Listeners of their own', function () {
    it("adds no listener of its own to sockets and servers: listener counts are node:net's", async function () {
      const counts = async (msg: typeof net): Promise<Record<string, number>> => {
        const out: Record<string, number> = {};
        const events = ['close', 'end', 'error', 'data', 'connect', 'connection', 'listening', 'finish'];
        const count = (name: string, ev2: NodeJS.EventEmitter): void => {
          for (const ev of events) out[`${name} ${ev}`] = ev2.listenerCount(ev);
        };
        const server = msg.createServer();
        const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const client = msg.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
        await once(client, 'connect');
        const peer = await accepted;
        count('fresh socket', new msg.Socket());
        count('client', client);
        count('accepted', peer);
        count('server', server);
        client.destroy();
        peer.destroy();
        await new Promise((resolve) => server.close(resolve));
        return out;
      };
      const want = await counts(nodeNet);
      const got = await counts(impl.net);
      expect(got).to.deep.equal(want);
    });
  });
});
