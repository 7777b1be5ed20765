import { expect } from 'chai';
import { once } from 'node:events';
import { forEachImpl, delay, pair, readBytes, pattern, until } from './impl';

const MiB = 1024 * 1024;

forEachImpl((impl) => {
  describe('backpressure', function () {
    it("a 16 MiB write into a peer that does not read is not all accepted; 'drain' comes after the peer resumes", async function () {
      const { client, peer } = await pair(impl);
      peer.pause();
      const size = 16 * MiB;
      const data = pattern(size, 7);
      const events: string[] = [];
      client.on('drain', () => events.push('drain'));
      const ret = client.write(data);
      expect(ret).to.equal(false);
      // Give the transport every chance to take it all: it must not.
      await delay(300);
      expect(client.writableLength, 'writableLength').to.be.greaterThan(0);
      expect(client.bufferSize, 'bufferSize').to.be.greaterThan(0);
      expect(client.writableNeedDrain).to.equal(true);
      expect(events).to.deep.equal([]);
      const got = readBytes(peer, size);
      events.push('resume');
      peer.resume();
      const received = await got;
      await new Promise((resolve) => (events.includes('drain') ? resolve(undefined) : client.once('drain', resolve)));
      expect(events).to.deep.equal(['resume', 'drain']);
      expect(received.length).to.equal(size);
      expect(received.equals(data)).to.equal(true);
      expect(client.writableLength).to.equal(0);
    });

    it('write() returns false past the high water mark and true again after drain', async function () {
      const { client, peer } = await pair(impl, { paused: true });
      const chunk = Buffer.alloc(MiB, 3);
      let writes = 0;
      while (client.write(chunk)) {
        writes++;
        if (writes > 64) break;
      }
      expect(writes).to.be.lessThan(64);
      expect(client.writableLength).to.be.at.least(client.writableHighWaterMark);
      peer.resume();
      await once(client, 'drain');
      expect(client.write('more')).to.equal(true);
    });

    it('writableHighWaterMark and readableHighWaterMark follow the highWaterMark server option', async function () {
      const { peer } = await pair(impl, { server: { highWaterMark: 1234 } });
      expect(peer.writableHighWaterMark).to.equal(1234);
      expect(peer.readableHighWaterMark).to.equal(1234);
    });
  });

  describe('Socket#pause() / resume()', function () {
    it("a paused socket emits no 'data' until resumed, and then gets it all", async function () {
      const { client, peer } = await pair(impl);
      const got: Buffer[] = [];
      peer.on('data', (chunk: Buffer) => got.push(chunk));
      peer.pause();
      expect(peer.isPaused()).to.equal(true);
      client.write('while paused');
      await delay(50);
      expect(got).to.deep.equal([]);
      peer.resume();
      expect(peer.isPaused()).to.equal(false);
      await until(() => Buffer.concat(got).length === 12);
      expect(Buffer.concat(got).toString()).to.equal('while paused');
    });

    it('pauseOnConnect: the accepted socket reads nothing until resume() (zivm keeps the server on TCP: its connections may be handed to other processes)', async function () {
      const { client, peer } = await pair(impl, { server: { pauseOnConnect: true } });
      let gotData = false;
      peer.on('data', () => (gotData = true));
      client.write('hello');
      await delay(50);
      expect(gotData).to.equal(false);
      const got = readBytes(peer, 5);
      peer.resume();
      expect((await got).toString()).to.equal('hello');
    });

    it("a paused socket does not emit 'end' until its data has been read", async function () {
      const { client, peer } = await pair(impl);
      client.pause();
      let ended = false;
      client.on('end', () => (ended = true));
      peer.end('unread');
      await delay(50);
      expect(ended).to.equal(false);
      const got = readBytes(client, 6);
      client.resume();
      expect((await got).toString()).to.equal('unread');
      await until(() => ended, "'end'");
    });

    it('keeps what arrives before anyone listens for data', async function () {
      const { client, peer } = await pair(impl);
      peer.write('sent before the client listens');
      await delay(30);
      expect((await readBytes(client, 30)).toString()).to.equal('sent before the client listens');
    });

    it('readableFlowing is null, then true on data listener, false on pause', async function () {
      const { client } = await pair(impl);
      expect(client.readableFlowing).to.equal(null);
      client.on('data', () => undefined);
      expect(client.readableFlowing).to.equal(true);
      client.pause();
      expect(client.readableFlowing).to.equal(false);
    });
  });
});
