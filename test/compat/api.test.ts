import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import * as nodeNet from 'node:net';
import type * as net from 'node:net';
import stream from 'node:stream';
import { forEachImpl, pair, trackSocket } from './impl';

type Callable<T> = (...args: unknown[]) => T;

forEachImpl((impl) => {
  describe('exports', function () {
    it('exports everything node:net does', function () {
      for (const key of Object.keys(nodeNet)) {
        if (key === 'default') continue; // the ES module interop view of node:net
        expect(impl.net, key).to.have.property(key);
        expect(typeof (impl.net as unknown as Record<string, unknown>)[key], key).to.equal(typeof (nodeNet as unknown as Record<string, unknown>)[key]);
      }
      expect(impl.net.isIP('::1')).to.equal(6);
      expect(impl.net.isIPv4('127.0.0.1')).to.equal(true);
      expect((impl.net as unknown as { Stream: unknown }).Stream).to.equal(impl.net.Socket);
      expect(impl.net.createConnection).to.equal(impl.net.connect);
    });
  });

  describe('new Socket(options)', function () {
    it("leaves the caller's options as they were and sets the socket up as node:net's would", function () {
      const settings = (sock: net.Socket) => {
        const inner = sock as unknown as {
          allowHalfOpen: boolean;
          _readableState: { emitClose: boolean; autoDestroy: boolean };
          _writableState: { emitClose: boolean; autoDestroy: boolean; decodeStrings: boolean };
        };
        return {
          allowHalfOpen: inner.allowHalfOpen,
          readable: [inner._readableState.emitClose, inner._readableState.autoDestroy],
          writable: [inner._writableState.emitClose, inner._writableState.autoDestroy, inner._writableState.decodeStrings],
        };
      };
      const variants: Record<string, unknown>[] = [
        {},
        { port: 1, host: '127.0.0.1' },
        { allowHalfOpen: 1, emitClose: true, autoDestroy: false, decodeStrings: true },
        { allowHalfOpen: true, emitClose: false, autoDestroy: true, decodeStrings: false },
      ];
      for (const options of variants) {
        const before = JSON.stringify(options);
        const ours = new impl.net.Socket(options);
        const theirs = new nodeNet.Socket({ ...options });
        expect(JSON.stringify(options), before).to.equal(before);
        expect(settings(ours), before).to.deep.equal(settings(theirs));
        ours.destroy();
        theirs.destroy();
      }
    });
  });

  describe('instanceof', function () {
    it('sockets are node:net Sockets and stream.Duplex', async function () {
      const { client, peer } = await pair(impl);
      for (const sock of [client, peer]) {
        expect(sock).to.be.instanceOf(nodeNet.Socket);
        expect(sock).to.be.instanceOf(impl.net.Socket);
        expect(sock).to.be.instanceOf(stream.Duplex);
        expect(sock).to.be.instanceOf(EventEmitter);
      }
    });

    it('servers are node:net Servers and EventEmitters', function () {
      const server = impl.createServer();
      expect(server).to.be.instanceOf(nodeNet.Server);
      expect(server).to.be.instanceOf(impl.net.Server);
      expect(server).to.be.instanceOf(EventEmitter);
    });

    it('Socket can be called without new', function () {
      const sock = trackSocket((impl.net.Socket as unknown as Callable<net.Socket>)());
      expect(sock).to.be.instanceOf(impl.net.Socket);
      expect(sock).to.be.instanceOf(nodeNet.Socket);
    });

    it('Server can be called without new, and takes a connection listener', function () {
      const listener = (): void => undefined;
      const server = (impl.net.Server as unknown as Callable<net.Server>)(listener);
      expect(server).to.be.instanceOf(impl.net.Server);
      expect(server.listeners('connection')).to.deep.equal([listener]);
    });

    it('subclasses of Socket and Server work', function () {
      class MySocket extends impl.net.Socket {
        mine = true;
      }
      const sock = trackSocket(new MySocket());
      expect(sock.mine).to.equal(true);
      expect(sock).to.be.instanceOf(impl.net.Socket);
      class MyServer extends impl.net.Server {
        mine = true;
      }
      const srv = new MyServer();
      expect(srv.mine).to.equal(true);
      expect(srv).to.be.instanceOf(nodeNet.Server);
    });
  });

  describe('argument validation (thrown synchronously)', function () {
    const connect = (...args: unknown[]): unknown => (impl.net.connect as unknown as Callable<net.Socket>)(...args);
    const throws = (fn: () => unknown, code: string, name: string): void => {
      let thrown: (Error & { code?: string }) | undefined;
      try {
        const res = fn();
        if (res instanceof nodeNet.Socket) res.destroy();
      } catch (err) {
        thrown = err as Error & { code?: string };
      }
      expect(thrown, `expected ${code}`).to.be.an('error');
      expect(thrown!.code).to.equal(code);
      expect(thrown!.name).to.equal(name);
    };

    it('connect() with no port or path: ERR_MISSING_ARGS', function () {
      throws(() => connect(), 'ERR_MISSING_ARGS', 'TypeError');
      throws(() => connect({}), 'ERR_MISSING_ARGS', 'TypeError');
    });

    it('connect() with a port of the wrong type: ERR_INVALID_ARG_TYPE', function () {
      throws(() => connect(true), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => connect({ port: true }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => connect({ port: {} }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
    });

    it('connect() with a port out of range: ERR_SOCKET_BAD_PORT', function () {
      for (const port of [-1, 65536, NaN, Infinity, '', ' ']) {
        throws(() => connect({ port, host: '127.0.0.1' }), 'ERR_SOCKET_BAD_PORT', 'RangeError');
      }
      throws(() => connect(-1, '127.0.0.1'), 'ERR_SOCKET_BAD_PORT', 'RangeError');
    });

    it('connect() with bad hints or family: ERR_INVALID_ARG_VALUE', function () {
      throws(() => connect({ port: 1, host: 'localhost', hints: 9999 }), 'ERR_INVALID_ARG_VALUE', 'TypeError');
      throws(() => connect({ port: 1, host: 'localhost', family: 5 }), 'ERR_INVALID_ARG_VALUE', 'TypeError');
    });

    it('connect() with a bad localAddress, lookup, localPort or path', function () {
      throws(() => connect({ port: 1, localAddress: 'x' }), 'ERR_INVALID_IP_ADDRESS', 'TypeError');
      throws(() => connect({ port: 1, host: 'localhost', lookup: 1 }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => connect({ port: 1, localPort: 'x' }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => connect({ path: 1 }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
    });

    it('Socket#setTimeout() with bad arguments', function () {
      const sock = impl.socket();
      throws(() => sock.setTimeout('x' as unknown as number), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => sock.setTimeout(-1), 'ERR_OUT_OF_RANGE', 'RangeError');
      throws(() => sock.setTimeout(1, 'x' as unknown as () => void), 'ERR_INVALID_ARG_TYPE', 'TypeError');
    });

    it('Socket#write() with a chunk that is not a string or buffer', async function () {
      const { client } = await pair(impl);
      throws(() => client.write(1 as unknown as string), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => client.write({} as unknown as string), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      expect(client.destroyed).to.equal(false);
    });

    it('createServer() and listen() with bad arguments', function () {
      throws(() => (impl.net.createServer as unknown as Callable<net.Server>)('x'), 'ERR_INVALID_ARG_TYPE', 'TypeError');
      throws(() => impl.createServer().listen(-1), 'ERR_SOCKET_BAD_PORT', 'RangeError');
      throws(() => impl.createServer().listen(65536), 'ERR_SOCKET_BAD_PORT', 'RangeError');
      throws(() => impl.createServer().listen({}), 'ERR_INVALID_ARG_VALUE', 'TypeError');
      throws(() => impl.createServer().listen({ port: 'x' }), 'ERR_SOCKET_BAD_PORT', 'RangeError');
    });

    it('new Socket({ fd }) with a bad fd', function () {
      throws(() => new impl.net.Socket({ fd: 'x' as unknown as number }), 'ERR_INVALID_ARG_TYPE', 'TypeError');
    });
  });
});
