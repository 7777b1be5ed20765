import { expect } from 'chai';
import { once } from 'node:events';
import { forEachImpl, closed, pair, readAll } from './impl';

forEachImpl((impl) => {
  describe('allowHalfOpen', function () {
    it('false (default): a socket that receives FIN ends its side too', async function () {
      const { client, peer } = await pair(impl);
      expect(peer.allowHalfOpen).to.equal(false);
      const peerEnd = once(peer, 'end');
      client.end();
      await peerEnd;
      const got = await readAll(client);
      expect(got.length).to.equal(0);
      await closed(peer);
      expect(peer.writableEnded).to.equal(true);
    });

    it('false: write() once the FIN has ended our side fails with EPIPE and destroys the socket', async function () {
      const { client, peer } = await pair(impl);
      const errors: string[] = [];
      peer.on('error', (err: NodeJS.ErrnoException) => errors.push(`error:${err.code}`));
      const cbErr = await new Promise<NodeJS.ErrnoException>((resolve) => {
        peer.on('end', () => {
          // net ends our side in a tick after 'end'; a microtask comes after it.
          queueMicrotask(() => {
            expect(peer.writableEnded).to.equal(true);
            const ret = peer.write('too late', (err) => resolve(err as NodeJS.ErrnoException));
            expect(ret).to.equal(false);
          });
        });
        client.end();
      });
      expect(cbErr.code).to.equal('EPIPE');
      expect(cbErr.message).to.equal('This socket has been ended by the other party');
      expect(await closed(peer)).to.equal(true);
      expect(errors).to.deep.equal(['error:EPIPE']);
    });

    it('true on the server: it receives FIN, then still writes, and the client reads it all', async function () {
      const { client, peer } = await pair(impl, { server: { allowHalfOpen: true } });
      expect(peer.allowHalfOpen).to.equal(true);
      const reply = readAll(client);
      client.end('question');
      const question = await readAll(peer);
      expect(question.toString()).to.equal('question');
      expect(peer.writable).to.equal(true);
      expect(peer.readyState).to.equal('writeOnly');
      peer.write('answer, ');
      await new Promise((resolve) => setImmediate(resolve));
      peer.end('later');
      expect((await reply).toString()).to.equal('answer, later');
      await closed(client);
      await closed(peer);
    });

    it('true on the client: it receives FIN, keeps writing, and the server reads it before its end', async function () {
      const { client, peer } = await pair(impl, { client: { allowHalfOpen: true } });
      expect(client.allowHalfOpen).to.equal(true);
      const fromClient = readAll(peer);
      peer.end('server is done');
      const fromServer = await readAll(client);
      expect(fromServer.toString()).to.equal('server is done');
      expect(client.writable).to.equal(true);
      expect(client.readable).to.equal(false);
      client.write('client ');
      client.end('is done too');
      expect((await fromClient).toString()).to.equal('client is done too');
      expect(await closed(client)).to.equal(false);
      expect(await closed(peer)).to.equal(false);
    });

    it('readyState goes open -> readOnly after end() -> closed', async function () {
      const { client, peer } = await pair(impl, { server: { allowHalfOpen: true } });
      expect(client.readyState).to.equal('open');
      const peerEnded = once(peer, 'end');
      peer.resume();
      client.end();
      await once(client, 'finish');
      expect(client.readyState).to.equal('readOnly');
      await peerEnded;
      client.resume();
      peer.end();
      await closed(client);
      expect(client.readyState).to.equal('closed');
    });

    it('with allowHalfOpen both sides close only after both ended', async function () {
      const { client, peer } = await pair(impl, { server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
      const events: string[] = [];
      client.on('close', () => events.push('client close'));
      peer.on('close', () => events.push('peer close'));
      peer.resume();
      client.resume();
      client.end();
      await once(peer, 'end');
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(events).to.deep.equal([]);
      expect(peer.destroyed).to.equal(false);
      peer.end();
      await closed(client);
      await closed(peer);
      expect(events).to.have.members(['client close', 'peer close']);
    });
  });
});
