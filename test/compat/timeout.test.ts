import { expect } from 'chai';
import { once } from 'node:events';
import { forEachImpl, delay, pair } from './impl';

forEachImpl((impl) => {
  describe('Socket#setTimeout()', function () {
    it("emits 'timeout' on an idle socket and leaves it open", async function () {
      const { client } = await pair(impl);
      expect(client.setTimeout(30)).to.equal(client);
      expect(client.timeout).to.equal(30);
      await once(client, 'timeout');
      expect(client.destroyed).to.equal(false);
      expect(client.readyState).to.equal('open');
    });

    it("adds the callback as a one-time 'timeout' listener", async function () {
      const { client } = await pair(impl);
      let calls = 0;
      await new Promise<void>((resolve) =>
        client.setTimeout(20, () => {
          calls++;
          resolve();
        }),
      );
      expect(calls).to.equal(1);
      expect(client.listenerCount('timeout')).to.equal(0);
    });

    it('incoming data postpones the timeout', async function () {
      const { client, peer } = await pair(impl);
      client.resume();
      const readAtTimeout: number[] = [];
      client.on('timeout', () => readAtTimeout.push(client.bytesRead));
      client.setTimeout(400);
      // Activity every 40 ms for 10 rounds (well within the timeout each time).
      for (let i = 0; i < 10; i++) {
        await delay(40);
        peer.write('tick');
      }
      await once(client, 'timeout');
      // The first timeout came only once the ticks had stopped arriving.
      expect(readAtTimeout).to.deep.equal([40]);
    });

    it('outgoing writes postpone the timeout', async function () {
      const { client, peer } = await pair(impl);
      peer.resume();
      let timeouts = 0;
      let writes = 0;
      client.on('timeout', () => timeouts++);
      client.setTimeout(400);
      for (let i = 0; i < 10; i++) {
        await delay(40);
        client.write('tock');
        writes++;
      }
      expect(timeouts).to.equal(0);
      await once(client, 'timeout');
      expect(writes).to.equal(10);
    });

    it('setTimeout(0) cancels a pending timeout', async function () {
      const { client } = await pair(impl);
      let fired = false;
      client.on('timeout', () => (fired = true));
      client.setTimeout(30);
      client.setTimeout(0);
      expect(client.timeout).to.equal(0);
      await delay(150);
      expect(fired).to.equal(false);
    });

    it('a timeout set before connect applies once connected and idle', async function () {
      const { listen } = await import('./impl');
      const server = impl.createServer();
      const port = await listen(server);
      const sock = impl.socket();
      sock.setTimeout(30);
      const events: string[] = [];
      sock.on('connect', () => events.push('connect'));
      sock.on('timeout', () => events.push('timeout'));
      sock.connect(port, '127.0.0.1');
      await once(sock, 'timeout');
      expect(events).to.deep.equal(['connect', 'timeout']);
      impl.expectShm(sock);
    });

    it('works on the accepted (server) side', async function () {
      const { peer } = await pair(impl);
      peer.setTimeout(20);
      await once(peer, 'timeout');
      expect(peer.destroyed).to.equal(false);
    });
  });
});
