import { expect } from 'chai';
import { forEachImpl, closed, pair } from './impl';

forEachImpl((impl) => {
  describe('Socket addresses', function () {
    it('IPv4: both ends agree (client local = server remote and the reverse)', async function () {
      const { port, client, peer } = await pair(impl);
      expect(client.remoteAddress).to.equal('127.0.0.1');
      expect(client.remotePort).to.equal(port);
      expect(client.remoteFamily).to.equal('IPv4');
      expect(client.localAddress).to.equal('127.0.0.1');
      expect(client.localPort).to.be.a('number').greaterThan(0);
      expect(client.localFamily).to.equal('IPv4');
      expect(peer.remoteAddress).to.equal(client.localAddress);
      expect(peer.remotePort).to.equal(client.localPort);
      expect(peer.remoteFamily).to.equal('IPv4');
      expect(peer.localAddress).to.equal(client.remoteAddress);
      expect(peer.localPort).to.equal(client.remotePort);
    });

    it('IPv6 (::1): both ends agree, family IPv6', async function () {
      const { port, client, peer } = await pair(impl, { host: '::1' });
      expect(client.remoteAddress).to.equal('::1');
      expect(client.remoteFamily).to.equal('IPv6');
      expect(client.remotePort).to.equal(port);
      expect(client.localAddress).to.equal('::1');
      expect(peer.remoteAddress).to.equal('::1');
      expect(peer.remoteFamily).to.equal('IPv6');
      expect(peer.remotePort).to.equal(client.localPort);
      expect(peer.localPort).to.equal(port);
    });

    it('address() returns { address, family, port } of the local end', async function () {
      const { port, client, peer } = await pair(impl);
      expect(client.address()).to.deep.equal({ address: '127.0.0.1', family: 'IPv4', port: client.localPort });
      expect(peer.address()).to.deep.equal({ address: '127.0.0.1', family: 'IPv4', port });
    });

    it('distinct connections from one process get distinct local ports', async function () {
      const first = await pair(impl);
      const second = await pair(impl);
      const conn = impl.connect(first.port, '127.0.0.1');
      await new Promise((resolve) => conn.once('connect', resolve));
      const ports = new Set([first.client.localPort, second.client.localPort, conn.localPort]);
      expect(ports.size).to.equal(3);
    });

    it('are undefined before connect; remote ones stay readable after close once read', async function () {
      const sock = impl.socket();
      expect(sock.remoteAddress).to.equal(undefined);
      expect(sock.remotePort).to.equal(undefined);
      expect(sock.localAddress).to.equal(undefined);
      expect(sock.address()).to.deep.equal({});
      const { client, peer } = await pair(impl);
      const remote = [client.remoteAddress, client.remotePort, client.remoteFamily];
      const peerRemote = [peer.remoteAddress, peer.remotePort];
      client.destroy();
      await closed(client);
      await closed(peer);
      expect([client.remoteAddress, client.remotePort, client.remoteFamily]).to.deep.equal(remote);
      expect([peer.remoteAddress, peer.remotePort]).to.deep.equal(peerRemote);
    });
  });

  describe('Socket#setNoDelay() / #setKeepAlive()', function () {
    it('return the socket, before and after connect', async function () {
      const sock = impl.socket();
      expect(sock.setNoDelay(true)).to.equal(sock);
      expect(sock.setKeepAlive(true, 1000)).to.equal(sock);
      const { client } = await pair(impl);
      expect(client.setNoDelay(true)).to.equal(client);
      expect(client.setNoDelay(false)).to.equal(client);
      expect(client.setKeepAlive(true, 500)).to.equal(client);
      expect(client.setKeepAlive(false)).to.equal(client);
      expect(client.readyState).to.equal('open');
    });
  });
});
