import { expect } from 'chai';
import crypto from 'node:crypto';
import { once } from 'node:events';
import type * as net from 'node:net';
import { forEachImpl, listen, pair, readAll, readBytes, pattern } from './impl';

const MiB = 1024 * 1024;
const sha = (buf: Buffer): string => crypto.createHash('sha256').update(buf).digest('hex');

forEachImpl((impl) => {
  describe('large transfers', function () {
    it('carries 4 MiB client to server intact', async function () {
      const { client, peer } = await pair(impl);
      const data = pattern(4 * MiB, 11);
      const got = readAll(peer);
      client.end(data);
      const received = await got;
      expect(received.length).to.equal(data.length);
      expect(sha(received)).to.equal(sha(data));
    });

    it('carries 4 MiB server to client in many odd-sized writes, in order', async function () {
      const { client, peer } = await pair(impl);
      const data = pattern(4 * MiB, 12);
      const got = readAll(client);
      let off = 0;
      let i = 0;
      const writeMore = (): void => {
        while (off < data.length) {
          const count = Math.min(1 + ((i++ * 7919) % 100000), data.length - off);
          const ok = peer.write(data.subarray(off, off + count));
          off += count;
          if (!ok) {
            peer.once('drain', writeMore);
            return;
          }
        }
        peer.end();
      };
      writeMore();
      const received = await got;
      expect(received.length).to.equal(data.length);
      expect(received.equals(data)).to.equal(true);
    });

    it("end() right after an 8 MiB write delivers every byte before 'end'", async function () {
      const { client, peer } = await pair(impl);
      const data = pattern(8 * MiB, 14);
      const got = readAll(client);
      peer.write(data);
      peer.end();
      const received = await got;
      expect(received.length).to.equal(data.length);
      expect(received.equals(data)).to.equal(true);
    });

    it('echoes 2 MiB in both directions at once (full duplex)', async function () {
      const { client, peer } = await pair(impl);
      peer.pipe(peer);
      const data = pattern(2 * MiB, 13);
      const got = readBytes(client, data.length);
      client.write(data);
      const received = await got;
      expect(received.subarray(0, data.length).equals(data)).to.equal(true);
      expect(client.bytesRead).to.equal(data.length);
    });
  });

  describe('one process on both sides', function () {
    it('connects two servers to each other in both directions at once', async function () {
      const first = impl.createServer((sock) => sock.end('from A'));
      const second = impl.createServer((sock) => sock.end('from B'));
      const [pa, pb] = await Promise.all([listen(first), listen(second)]);
      const toA = impl.connect(pa, '127.0.0.1');
      const toB = impl.connect(pb, '127.0.0.1');
      await Promise.all([once(toA, 'connect'), once(toB, 'connect')]);
      impl.expectShm(toA, toB);
      const [ra, rb] = await Promise.all([readAll(toA), readAll(toB)]);
      expect(ra.toString()).to.equal('from A');
      expect(rb.toString()).to.equal('from B');
    });

    it('a server that connects back to the client that called it', async function () {
      // The client side listens too; on each connection the server dials the client's server back.
      const callbacks = impl.createServer((sock) => sock.end('called back'));
      const cbPort = await listen(callbacks);
      const server = impl.createServer((sock: net.Socket) => {
        sock.setEncoding('utf8');
        sock.once('data', (port: string) => {
          void (async () => {
            const back = impl.connect(Number(port), '127.0.0.1');
            await once(back, 'connect');
            impl.expectShm(back);
            const msg = await readAll(back);
            sock.end(`server got: ${msg.toString()}`);
          })();
        });
      });
      const port = await listen(server);
      const client = impl.connect(port, '127.0.0.1');
      await once(client, 'connect');
      impl.expectShm(client);
      const reply = readAll(client);
      client.write(String(cbPort));
      expect((await reply).toString()).to.equal('server got: called back');
    });
  });
});
