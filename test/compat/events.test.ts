import { expect } from 'chai';
import { once } from 'node:events';
import type * as net from 'node:net';
import { forEachImpl, listen, closed, pair } from './impl';

/** Records the lifecycle events of `sock` into `events`. */
function record(sock: net.Socket, events: string[], names = ['connect', 'ready', 'data', 'end', 'finish', 'close']): void {
  for (const name of names) {
    sock.on(name, (arg: unknown) => {
      if (name === 'data') {
        if (events[events.length - 1] !== 'data') events.push('data');
      } else if (name === 'close') events.push(`close:${String(arg)}`);
      else events.push(name);
    });
  }
}

forEachImpl((impl) => {
  describe('Socket events', function () {
    it('client: connect, ready, data, end, finish, close when the server writes and ends', async function () {
      const server = impl.createServer((sock) => sock.end('bye'));
      const port = await listen(server);
      const events: string[] = [];
      const client = impl.connect(port, '127.0.0.1');
      record(client, events);
      client.once('connect', () => impl.expectShm(client));
      await closed(client);
      expect(events).to.deep.equal(['connect', 'ready', 'data', 'end', 'finish', 'close:false']);
    });

    it('server side: end, finish, close when the client ends', async function () {
      const events: string[] = [];
      const { client, peer } = await pair(impl, { onConnection: (sock) => record(sock, events) });
      client.end();
      await closed(peer);
      await closed(client);
      expect(events).to.deep.equal(['end', 'finish', 'close:false']);
    });

    it('client that ends first: connect, ready, finish, end, close', async function () {
      const server = impl.createServer((sock) => sock.resume());
      const port = await listen(server);
      const events: string[] = [];
      const client = impl.connect(port, '127.0.0.1', () => {
        impl.expectShm(client);
        client.end();
      });
      record(client, events);
      client.resume();
      await closed(client);
      expect(events).to.deep.equal(['connect', 'ready', 'finish', 'end', 'close:false']);
    });

    it('emits close exactly once, last', async function () {
      const { client, peer } = await pair(impl);
      const events: string[] = [];
      record(client, events, ['end', 'finish', 'close']);
      client.resume();
      peer.end();
      await closed(client);
      await new Promise((resolve) => setImmediate(resolve));
      expect(events.filter((entry) => entry.startsWith('close'))).to.have.length(1);
      expect(events[events.length - 1]).to.equal('close:false');
    });

    it("delivers the bytes written in one write() before 'end' in one piece or several, in order", async function () {
      const { client, peer } = await pair(impl);
      const chunks: string[] = [];
      client.setEncoding('utf8');
      client.on('data', (chunk: string) => chunks.push(chunk));
      peer.write('a');
      peer.write('b');
      peer.end('c');
      await once(client, 'end');
      expect(chunks.join('')).to.equal('abc');
    });

    it('sees events on two connections of one process in the order they happened, whichever was made first', async function () {
      const server = impl.createServer();
      const ends: net.Socket[] = [];
      server.on('connection', (sock: net.Socket) => ends.push(sock));
      const port = await listen(server);
      const clients: net.Socket[] = [];
      for (let i = 0; i < 4; i++) {
        const sock = impl.connect(port, '127.0.0.1');
        await once(sock, 'connect');
        clients.push(sock);
      }
      while (ends.length < 4) await new Promise((resolve) => setImmediate(resolve));
      impl.expectShm(clients[0], ends[0]);
      const seen: string[] = [];
      ends.forEach((end, i) => {
        end.on('data', () => seen.push(`${i}:data`));
        end.on('end', () => seen.push(`${i}:end`));
      });
      // The earlier connection first, then the later one; then the other way round; then a close and bytes.
      clients[0].write('a');
      clients[1].write('b');
      await new Promise((resolve) => setTimeout(resolve, 50));
      clients[3].write('c');
      clients[2].write('d');
      await new Promise((resolve) => setTimeout(resolve, 50));
      clients[1].destroy();
      clients[0].write('e');
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(seen).to.deep.equal(['0:data', '1:data', '3:data', '2:data', '1:end', '0:data']);
      for (const sock of clients) sock.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
  });

  describe('Server events', function () {
    it('emits listening, connection and close in that order, and calls the listen callback', async function () {
      const events: string[] = [];
      const server = impl.createServer();
      server.on('listening', () => events.push('listening'));
      server.on('connection', (sock: net.Socket) => {
        events.push('connection');
        sock.destroy();
      });
      server.on('close', () => events.push('close'));
      await new Promise<void>((resolve) =>
        server.listen(0, '127.0.0.1', () => {
          events.push('listen callback');
          resolve();
        }),
      );
      const client = impl.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      client.on('error', () => undefined);
      await closed(client);
      await new Promise((resolve) => server.close(resolve));
      expect(events).to.deep.equal(['listening', 'listen callback', 'connection', 'close']);
    });

    it("gives the 'connection' listener a connected socket of the implementation's class", async function () {
      const { server, peer } = await pair(impl);
      expect(peer).to.be.instanceOf(impl.net.Socket);
      expect(peer.connecting).to.equal(false);
      expect(peer.readyState).to.equal('open');
      expect((peer as net.Socket & { server?: unknown }).server).to.equal(server);
    });
  });
});
