import { expect } from 'chai';
import { once } from 'node:events';
import { forEachImpl, listen, closed, pair, readAll } from './impl';

forEachImpl((impl) => {
  describe('Socket#bytesRead / #bytesWritten', function () {
    it('are 0 on a new socket', function () {
      const sock = impl.socket();
      expect(sock.bytesRead).to.equal(0);
      expect(sock.bytesWritten).to.equal(0);
    });

    it('count bytes on both ends, and keep their values after close', async function () {
      const { client, peer } = await pair(impl);
      const toPeer = readAll(peer);
      const toClient = readAll(client);
      client.write('12345');
      client.end('\u20ac'); // 3 bytes in UTF-8
      peer.end('abcdefghij');
      await Promise.all([toPeer, toClient]);
      await Promise.all([closed(client), closed(peer)]);
      expect(client.bytesWritten).to.equal(8);
      expect(peer.bytesRead).to.equal(8);
      expect(peer.bytesWritten).to.equal(10);
      expect(client.bytesRead).to.equal(10);
    });

    it('bytesWritten counts what was written while still connecting', async function () {
      const server = impl.createServer((sock) => sock.resume());
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1');
      client.write('pending');
      client.write(Buffer.alloc(3));
      expect(client.connecting).to.equal(true);
      expect(client.bytesWritten).to.equal(10);
      await once(client, 'connect');
      impl.expectShm(client);
      client.end();
      await closed(client);
      expect(client.bytesWritten).to.equal(10);
    });

    it('bufferSize equals writableLength', async function () {
      const { client } = await pair(impl, { paused: true });
      client.write(Buffer.alloc(8 * 1024 * 1024));
      expect(client.bufferSize).to.equal(client.writableLength);
      expect(client.bufferSize).to.be.greaterThan(0);
    });
  });
});
