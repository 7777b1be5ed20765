/**
 * Node's native stream consumers (HTTP/2 sessions, the HTTP parser) on
 * shared-memory sockets, and connections handed to other processes: in
 * separate processes with the preload hook, against plain node.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import crypto from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import * as zivm from '../src';
import { countingViews } from './helpers/views';
import { Http2Frames } from '../src/net/reader';
import { jsStreamClass, streamAdapter } from '../src/net/streambase';

const FIXTURES = path.join(__dirname, '..', '..', 'test', 'fixtures');
/** The package's preload hook as users get it (zivm/register: the bundled zivm). */
const REGISTER = path.join(__dirname, '..', 'src', 'bundle', 'register.js');

function run(script: string, args: string[], hook: boolean): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(process.execPath, [...(hook ? ['--require', REGISTER] : []), path.join(FIXTURES, script), ...args], {
    encoding: 'utf8',
    timeout: 20000,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

function lines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('native stream consumers', function () {
  this.timeout(60000);

  for (const mode of ['direct', 'tick']) {
    it(`an exception thrown by an HTTP/2 'stream' handler (${mode}) reaches the process, as over TCP`, function () {
      const plain = run('h2-throw.js', [mode], false);
      const hooked = run('h2-throw.js', [mode], true);
      expect(plain.status, plain.stderr).to.equal(1);
      expect(plain.stderr).to.include('thrown by the stream handler');
      expect(hooked.status, hooked.stderr).to.equal(1);
      expect(hooked.stderr).to.include('thrown by the stream handler');
      expect(lines(hooked.stdout)[0]?.transport, 'the session is over shared memory').to.equal('shm');
    });
  }
});

describe('node:http where its parser reads the socket', function () {
  this.timeout(60000);

  const both = (which: string): { plain: Record<string, unknown>; hooked: Record<string, unknown> } => {
    const plain = run('http-edges.js', [which], false);
    const hooked = run('http-edges.js', [which], true);
    expect(plain.status, plain.stderr).to.equal(0);
    expect(hooked.status, hooked.stderr).to.equal(0);
    return { plain: lines(plain.stdout)[0], hooked: lines(hooked.stdout)[0] };
  };

  it("a request the server cannot parse: the client reads the server's 431 and then its FIN, as over TCP", function () {
    const { plain, hooked } = both('overflow');
    expect(plain.received).to.match(/^HTTP\/1\.1 431 /);
    expect(plain.how).to.equal('end');
    expect(hooked.transport, 'over shared memory').to.equal('shm');
    expect({ ...hooked, transport: null }).to.deep.equal({ ...plain, transport: null });
  });

  it('a flood of pipelined requests whose answers wait: every one is answered, no parse error (the server pauses its parser)', function () {
    const { plain, hooked } = both('pipeline');
    expect(plain).to.include({ answered: 3000, gotAll: true, clientError: null });
    expect(plain.clientErrors).to.deep.equal([]);
    expect(hooked.transport, 'over shared memory').to.equal('shm');
    expect({ ...hooked, transport: null }).to.deep.equal({ ...plain, transport: null });
  });
});

describe('Http2Frames', function () {
  const frame = (type: number, payload: number): Buffer => {
    const buf = Buffer.alloc(9 + payload, 0x61);
    buf.writeUIntBE(payload, 0, 3);
    buf[3] = type;
    return buf;
  };
  const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

  it("cuts after the server's preface and after frames that make events, not between data frames", function () {
    const settings = frame(0x4, 0);
    const headers = frame(0x1, 14);
    const data = frame(0x0, 18);
    const buf = Buffer.concat([preface, settings, headers, data, data, data, frame(0x8, 4)]);
    const pieces = new Http2Frames(true).split(buf);
    expect(pieces.map((part) => part.length)).to.deep.equal([24, 9, 23, 27 * 3 + 13]);
    expect(Buffer.concat(pieces).equals(buf)).to.equal(true);
  });

  it('finds frame boundaries across reads of any size (the client side has no preface)', function () {
    const stream = Buffer.concat([frame(0x1, 5), frame(0x0, 100), frame(0x1, 0), frame(0x7, 8), frame(0x0, 3)]);
    for (const size of [1, 2, 7, 9, 10, 33, 1000]) {
      const field = new Http2Frames(false);
      const cuts: number[] = [];
      let at = 0;
      for (let i = 0; i < stream.length; i += size) {
        for (const part of field.split(stream.subarray(i, i + size))) {
          at += part.length;
          cuts.push(at);
        }
      }
      expect(at, `read size ${size}`).to.equal(stream.length);
      // Every cut after a HEADERS or GOAWAY frame is there, whatever the read size.
      for (const end of [14, 14 + 109 + 9, 14 + 109 + 9 + 17]) expect(cuts, `read size ${size}`).to.include(end);
    }
  });
});

describe('connections handed to another process', function () {
  this.timeout(60000);

  it('a pauseOnConnect server hands its connections over, as with plain node (zivm keeps it on TCP)', function () {
    const plain = lines(run('handoff.js', ['paused'], false).stdout);
    const hooked = lines(run('handoff.js', ['paused'], true).stdout);
    expect(plain.find((list) => list.event === 'done')?.got).to.equal('from the child over tcp');
    const done = hooked.find((list) => list.event === 'done');
    expect(done?.got).to.equal('from the child over tcp');
    expect(done?.transport).to.equal('tcp');
  });

  it('sending a shared-memory connection fails at once with ERR_INVALID_HANDLE_TYPE, saying how to keep it on TCP', function () {
    const hooked = lines(run('handoff.js', [], true).stdout);
    const failed = hooked.find((list) => list.event === 'send-failed');
    expect(failed, JSON.stringify(hooked)).to.not.equal(undefined);
    expect(failed?.code).to.equal('ERR_INVALID_HANDLE_TYPE');
    expect(failed?.transport).to.equal('shm');
    expect(String(failed?.message)).to.include('pauseOnConnect');
  });
});

describe("Node's JSStream under shared-memory handles", function () {
  this.timeout(60000);
  const INDEX = path.join(__dirname, '..', 'src', 'index.js');
  // An echo over shared memory; prints the transport and the class a handle is built on.
  const script = `
    const net = require(${JSON.stringify(INDEX)});
    const srv = net.createServer((s) => s.pipe(s));
    srv.listen(0, '127.0.0.1', () => {
      const c = net.connect(srv.address().port, '127.0.0.1');
      let base = '', got = '';
      c.on('connect', () => { base = Object.getPrototypeOf(Object.getPrototypeOf(c._handle)).constructor.name; c.end('hi'); });
      c.on('data', (d) => { got += d; });
      c.on('close', () => { console.log(JSON.stringify({ transport: c.transport, base, got })); srv.close(); });
    });`;

  it("is the class of the handle under Node's own JS stream adapter", function () {
    const adapter = new (streamAdapter())(new PassThrough());
    const handleClass = (adapter._handle as { constructor: unknown }).constructor;
    adapter.destroy();
    expect(jsStreamClass()).to.equal(handleClass);
  });

  it('the HTTP parser reads request bodies in place (views of the ring), every byte intact, as over TCP', function () {
    // node:http under the preload hook, in a process of its own: bodies of several sizes, random bytes, hashed on both ends.
    const script = `
      const http = require('node:http');
      const crypto = require('node:crypto');
      const { Channel } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'shm', 'channel.js'))});
      const view = Channel.prototype.view;
      let viewed = 0;
      Channel.prototype.view = function (max) { const got = view.call(this, max); if (got) viewed += got.length; return got; };
      const sizes = [1, 4095, 4096, 100000, 3 * 1024 * 1024 + 17, 9 * 1024 * 1024];
      const srv = http.createServer((req, res) => {
        const hash = crypto.createHash('sha256');
        let n = 0;
        req.on('data', (chunk) => { hash.update(chunk); n += chunk.length; });
        req.on('end', () => res.end(JSON.stringify({ n, digest: hash.digest('hex'), transport: req.socket.transport })));
      });
      srv.listen(0, '127.0.0.1', async () => {
        const agent = new http.Agent({ keepAlive: true });
        const out = [];
        for (const size of sizes) {
          const body = crypto.randomBytes(size);
          const got = await new Promise((resolve, reject) => {
            const req = http.request({ port: srv.address().port, host: '127.0.0.1', method: 'POST', agent }, (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (d) => (text += d));
              res.on('end', () => resolve(JSON.parse(text)));
            });
            req.on('error', reject);
            // In pieces of odd sizes, so that reads cross the end of the ring anywhere.
            for (let at = 0; at < size; at += 65521) req.write(body.subarray(at, at + 65521));
            req.end();
          });
          out.push({ size, ok: got.n === size && got.digest === crypto.createHash('sha256').update(body).digest('hex'), transport: got.transport });
        }
        agent.destroy();
        srv.close();
        // Most of the bytes of the large bodies (reads of 4 KiB and more are read in place).
        console.log(JSON.stringify({ out, inPlace: viewed > 12 * 1024 * 1024 }));
      });`;
    // The hook of dist/src's separate modules: the script counts the views of their Channel.
    const res = spawnSync(process.execPath, ['--require', path.join(__dirname, '..', 'src', 'register.js'), '-e', script], {
      encoding: 'utf8',
      timeout: 30000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    expect(res.status, res.stderr).to.equal(0);
    const sizes = [1, 4095, 4096, 100000, 3 * 1024 * 1024 + 17, 9 * 1024 * 1024];
    expect(JSON.parse(res.stdout.trim())).to.deep.equal({ out: sizes.map((size) => ({ size, ok: true, transport: 'shm' })), inPlace: true });
  });

  for (const flags of [[], ['--pending-deprecation']]) {
    it(`handles are native streams, and no deprecation warning is printed${flags.length ? ' under --pending-deprecation' : ''}`, function () {
      const res = spawnSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8', timeout: 20000, env: { ...process.env, NODE_OPTIONS: '' } });
      expect(res.status, res.stderr).to.equal(0);
      expect(res.stderr).to.not.include('DeprecationWarning');
      expect(JSON.parse(res.stdout.trim())).to.deep.equal({ transport: 'shm', base: 'JSStream', got: 'hi' });
    });
  }
});

describe('HTTP/2 sessions over shared memory', function () {
  this.timeout(60000);

  it('read data frames in place (a view of the ring, one copy fewer), cut after the frames that make events: 3 responses of 6 MiB in parallel arrive intact', async () => {
    const size = 6 * 1024 * 1024;
    const bodies = [0, 1, 2].map(() => crypto.randomBytes(size));
    const h2 = http2.createServer();
    h2.on('stream', (stream, headers) => {
      const body = bodies[Number(String(headers[':path']).slice(1))];
      stream.respond({ ':status': 200, 'x-sha256': crypto.createHash('sha256').update(body).digest('hex') });
      // Written in odd pieces, so that frames and reads cross the end of the ring anywhere.
      for (let at = 0; at < size;) {
        const len = Math.min(size - at, 1 + ((at * 7919) % 100000));
        stream.write(body.subarray(at, at + len));
        at += len;
      }
      stream.end();
    });
    const server = zivm.createServer((sock) => h2.emit('connection', sock));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    let transport: unknown;
    const { views, bytes: viewBytes } = await countingViews(async () => {
      const session = http2.connect(`http://127.0.0.1:${port}`, {
        createConnection: () => {
          const sock = zivm.connect(port, '127.0.0.1');
          sock.once('connect', () => (transport = sock.transport));
          return sock;
        },
      });
      const got = await Promise.all(
        [0, 1, 2].map(
          (i) =>
            new Promise<{ sha: unknown; digest: string; length: number }>((resolve, reject) => {
              const req = session.request({ ':path': `/${i}` });
              const hash = crypto.createHash('sha256');
              let length = 0;
              let sha: unknown;
              req.on('response', (headers) => (sha = headers['x-sha256']));
              req.on('data', (chunk: Buffer) => {
                hash.update(chunk);
                length += chunk.length;
              });
              req.on('end', () => resolve({ sha, digest: hash.digest('hex'), length }));
              req.on('error', reject);
            }),
        ),
      );
      await new Promise<void>((resolve) => session.close(resolve));
      for (const one of got) expect(one).to.deep.equal({ sha: one.digest, digest: one.digest, length: size });
    });
    expect(transport).to.equal('shm');
    expect(views).to.be.greaterThan(50);
    expect(viewBytes).to.be.greaterThan(3 * size);
    await new Promise((resolve) => server.close(resolve));
  });
  for (const [name, mod] of [
    ['node:net', net],
    ['zivm', zivm],
  ] as const) {
    it(`(${name}) a client session closed once its last stream closed lets go of its socket within the turn, as over TCP`, async () => {
      const h2 = http2.createServer();
      h2.on('stream', (stream) => {
        stream.respond();
        stream.end('ok');
      });
      const server = mod.createServer((sock) => h2.emit('connection', sock));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as net.AddressInfo).port;
      let transport: unknown;
      const session = http2.connect(`http://127.0.0.1:${port}`, {
        createConnection: () => {
          const sock = mod.connect(port, '127.0.0.1');
          sock.once('connect', () => (transport = (sock as { transport?: string }).transport ?? 'tcp'));
          return sock;
        },
      });
      const proxy = session.socket;
      const seen = await new Promise<string>((resolve) => {
        const req = session.request();
        req.resume();
        req.on('close', () => {
          session.close();
          setImmediate(() => {
            try {
              void (proxy as unknown as Record<string, unknown>).example;
              resolve('still bound');
            } catch (err) {
              resolve(String((err as NodeJS.ErrnoException).code));
            }
          });
        });
      });
      expect(seen).to.equal('ERR_HTTP2_SOCKET_UNBOUND');
      expect(transport).to.equal(name === 'zivm' ? 'shm' : 'tcp');
      await new Promise((resolve) => server.close(resolve));
    });
  }
});
