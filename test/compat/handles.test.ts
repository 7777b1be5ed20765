import { expect } from 'chai';
import { execFile } from 'node:child_process';
import type * as nodeNet from 'node:net';
import { forEachImpl, closed, delay, listen, pair, readBytes } from './impl';

type Any = any;

forEachImpl((impl) => {
  describe('Handles, source addresses and writes to a peer that is gone', function () {
    it('a write after the handle was closed fails with write EBADF and reaches nobody, not even the next connection', async function () {
      const got: string[] = [];
      const server = impl.createServer((sock) => sock.on('data', (chunk) => got.push(String(chunk))));
      const port = await listen(server);
      const first = impl.connect(port, '127.0.0.1');
      await new Promise((resolve) => first.once('connect', resolve));
      const errors: Error[] = [];
      first.on('error', (err: Error) => errors.push(err));
      (first as Any)._handle.close();
      first.write('stale bytes');
      // A second connection (over shared memory it may take the slot the first one left).
      const second = impl.connect(port, '127.0.0.1');
      await new Promise((resolve) => second.once('connect', resolve));
      impl.expectShm(second);
      second.write('fresh');
      await delay(100);
      expect(errors.map((err) => err.message)).to.deep.equal(['write EBADF']);
      expect(errors[0].constructor).to.equal(Error);
      expect(got.join('')).to.not.include('stale');
      expect(got.join('')).to.include('fresh');
    });

    it('a bound localPort is the port the server sees', async function () {
      const probe = impl.createServer();
      const free = await listen(probe);
      await new Promise((resolve) => probe.close(resolve));
      const { client, peer } = await pair(impl, { client: { localPort: free, localAddress: '127.0.0.1' } });
      expect(client.localPort).to.equal(free);
      expect(peer.remotePort).to.equal(free);
    });

    it('dialling 127.0.0.2 of a wildcard server: the source address is 127.0.0.1', async function () {
      const server = impl.createServer();
      const accepted = new Promise<nodeNet.Socket>((resolve) => server.once('connection', resolve));
      const port = await listen(server, '0.0.0.0');
      const client = impl.connect(port, '127.0.0.2');
      await new Promise((resolve) => client.once('connect', resolve));
      const peer = await accepted;
      impl.expectShm(client, peer);
      expect(client.localAddress).to.equal('127.0.0.1');
      expect(peer.remoteAddress).to.equal('127.0.0.1');
      expect(peer.localAddress).to.equal('127.0.0.2');
    });

    it('allowHalfOpen, the peer destroyed: after end the first small write is taken, the next fails with write EPIPE', async function () {
      const { client, peer } = await pair(impl, { server: { allowHalfOpen: true } });
      const events: string[] = [];
      peer.on('end', () => events.push('end'));
      peer.on('error', (err: Any) => events.push(`error ${err.syscall} ${err.code}`));
      const ended = new Promise((resolve) => peer.once('end', resolve));
      peer.resume();
      client.destroy();
      await ended;
      await new Promise<void>((resolve) => peer.write('one', (err) => (events.push(`write1 ${err ? (err as Any).code : 'ok'}`), resolve())));
      await delay(100);
      await new Promise<void>((resolve) => peer.write('two', (err) => (events.push(`write2 ${err ? (err as Any).code : 'ok'}`), resolve())));
      await closed(peer);
      expect(events).to.deep.equal(['end', 'write1 ok', 'write2 EPIPE', 'error write EPIPE']);
    });

    it("a wrapper on the listening handle's onconnection sees every accepted handle, and keepAlive/noDelay reach them", async function () {
      const server = impl.createServer({ keepAlive: true, keepAliveInitialDelay: 2000, noDelay: true });
      const port = await listen(server);
      const seen: string[] = [];
      const holder = (server as Any)._handle;
      const orig = holder.onconnection;
      holder.onconnection = function (err: number, clientHandle: Any) {
        const ka = clientHandle.setKeepAlive;
        const nd = clientHandle.setNoDelay;
        clientHandle.setKeepAlive = function (enable: boolean, delaySecs: number) {
          seen.push(`keepalive ${enable} ${delaySecs}`);
          return ka.call(this, enable, delaySecs);
        };
        clientHandle.setNoDelay = function (enable: boolean) {
          seen.push(`nodelay ${enable}`);
          return nd.call(this, enable);
        };
        return orig.call(this, err, clientHandle);
      };
      const accepted = new Promise<nodeNet.Socket>((resolve) => server.once('connection', resolve));
      const client = impl.connect(port, '127.0.0.1');
      const peer = await accepted;
      impl.expectShm(client, peer);
      expect(seen.sort()).to.deep.equal(['keepalive true 2', 'nodelay true']);
      client.write('x');
      expect(String(await readBytes(peer, 1))).to.equal('x');
    });

    it('happy eyeballs: addresses are tried in the order resolved, and the attempts are recorded', async function () {
      const server = impl.createServer();
      const accepted = new Promise<nodeNet.Socket>((resolve) => server.once('connection', resolve));
      const port = await listen(server, '127.0.0.1');
      // A name with an IPv6 address first (nobody listens there) and then the IPv4 one.
      const lookup = (_h: string, _o: unknown, cb: (e: null, a: { address: string; family: number }[]) => void) =>
        cb(null, [
          { address: '::1', family: 6 },
          { address: '127.0.0.1', family: 4 },
        ]);
      const client = impl.connect({ host: 'dual.test', port, lookup, autoSelectFamily: true });
      await new Promise((resolve) => client.once('connect', resolve));
      const peer = await accepted;
      impl.expectShm(client, peer);
      expect((client as Any).autoSelectFamilyAttemptedAddresses).to.deep.equal([`::1:${port}`, `127.0.0.1:${port}`]);
      expect(client.remoteAddress).to.equal('127.0.0.1');
    });

    for (const where of ['connect', 'data'] as const) {
      it(`an exception thrown in a '${where}' listener reaches the process (uncaughtException), not the socket`, async function () {
        const script = `
          const net = require(${JSON.stringify(impl.requireId)});
          let uncaught = null, socketError = null;
          process.on('uncaughtException', (e) => { uncaught = e.message; });
          const srv = net.createServer((s) => s.write('x')).listen(0, '127.0.0.1', () => {
            const c = net.connect(srv.address().port, '127.0.0.1');
            c.on('error', (e) => { socketError = e.message; });
            c.on('${where}', () => { throw new Error('boom'); });
            setTimeout(() => { console.log(JSON.stringify({ uncaught, socketError, transport: c.transport ?? 'tcp' })); process.exit(0); }, 300);
          });`;
        const out = await new Promise<string>((resolve, reject) =>
          execFile(process.execPath, ['-e', script], (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout))),
        );
        const res = JSON.parse(out) as { uncaught: string | null; socketError: string | null; transport: string };
        expect(res.uncaught).to.equal('boom');
        expect(res.socketError).to.equal(null);
        if (impl.isZivm) expect(res.transport).to.equal('shm');
      });
    }
  });
});
