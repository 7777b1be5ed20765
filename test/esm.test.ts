/**
 * The package's entry points as users import them: the ES module entry, and
 * the exported name and message type of the diagnostics channel.
 */
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import dc from 'node:diagnostics_channel';
import fs from 'node:fs';
import nodeNet from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as zivm from '../src';
import { killAll } from '../tools/kit/proc';
import { spawnPeer } from './helpers/proc';

const ROOT = path.join(__dirname, '..', '..');
type Any = Record<string, any>;

function run(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd }, (err, stdout, stderr) => {
      resolve({ code: err ? (((err as Any).code as number) ?? 1) : 0, stdout, stderr });
    });
  });
}

function connectedTransport(sock: nodeNet.Socket): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    sock.once('connect', () => resolve((sock as zivm.Socket).transport));
    sock.once('error', reject);
  });
}

/** A fresh application folder with this package installed in its node_modules (a link), removed after `fn`. */
async function inApp(prefix: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'zivm'));
    await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('entry points', function () {
  this.timeout(30000);
  afterEach(killAll);

  describe('as an ES module', function () {
    it("import net from 'zivm' and named imports give zivm's objects and node:net's other exports", async () => {
      await inApp('zivm-esm-', async (dir) => {
        fs.writeFileSync(
          path.join(dir, 'main.mjs'),
          `
          import net from 'zivm';
          import * as ns from 'zivm';
          import { createServer, connect, Socket, Server, stats, isIP, TRANSPORT_CHANNEL } from 'zivm';
          import * as nodeNet from 'node:net';
          import { createRequire } from 'node:module';
          const cjs = createRequire(import.meta.url)('zivm');
          const server = createServer((s) => s.pipe(s));
          server.listen(0, '127.0.0.1', () => {
            const c = connect(server.address().port, '127.0.0.1', () => {
              console.log(JSON.stringify({
                defaultIsCjs: net === cjs,
                same: createServer === cjs.createServer && connect === cjs.connect && Socket === cjs.Socket && Server === cjs.Server && stats === cjs.stats,
                notNet: createServer !== nodeNet.createServer && Socket !== nodeNet.Socket,
                isIP: isIP('::1'),
                channel: TRANSPORT_CHANNEL,
                missing: Object.keys(nodeNet).filter((k) => k !== 'default' && !(k in ns)),
                instance: c instanceof nodeNet.Socket && c instanceof Socket,
                transport: c.transport,
                shm: stats().connections.shm,
              }));
              c.destroy();
              server.close();
            });
          });
          `,
        );
        const res = await run(['main.mjs'], dir);
        expect(res.code, res.stderr).to.equal(0);
        expect(JSON.parse(res.stdout)).to.deep.equal({
          defaultIsCjs: true,
          same: true,
          notNet: true,
          isIP: 6,
          channel: 'zivm:transport',
          missing: [],
          instance: true,
          transport: 'shm',
          shm: 1,
        });
      });
    });
  });

  it('NODE_OPTIONS=--require zivm/register from an application folder: the first server starts the daemon, clients connect over shared memory', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-hook-'));
    const zdir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-hook-dir-'));
    const env = { ...process.env, NODE_OPTIONS: '--require zivm/register', ZIVM_DIR: zdir, ZIVM_IDLE_MS: '300' };
    let server: ReturnType<typeof spawn> | undefined;
    try {
      fs.mkdirSync(path.join(dir, 'node_modules'));
      fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'zivm'));
      // Plain node:net programs: the hook, named by package, makes them zivm.
      fs.writeFileSync(
        path.join(dir, 'server.js'),
        `require('node:net').createServer((s) => s.end(String(s.transport))).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
      );
      fs.writeFileSync(
        path.join(dir, 'client.js'),
        `const s = require('node:net').connect(Number(process.argv[2]), '127.0.0.1'); let got = ''; s.on('data', (d) => (got += d)); s.on('end', () => console.log(s.transport + ' ' + got));`,
      );
      server = spawn(process.execPath, ['server.js'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'inherit'] });
      const port = await new Promise<number>((resolve, reject) => {
        server!.stdout!.once('data', (data) => resolve(Number(String(data).trim())));
        server!.once('exit', (code) => reject(new Error(`the server exited (${code})`)));
      });
      const res = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, ['client.js', String(port)], { cwd: dir, env }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr })),
      );
      expect(res.code, res.stderr).to.equal(0);
      expect(res.stdout.trim()).to.equal('shm shm');
    } finally {
      if (server && server.exitCode === null) {
        const exited = new Promise((resolve) => server!.once('exit', resolve));
        server.kill();
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(zdir, { recursive: true, force: true });
    }
  });

  it('the preload hook loads only the net layer: no data plane, no node:tls, until the first listen() or connect(); node:tls is never loaded for TLS, which knows shared-memory handles once the application loads it', async () => {
    const script = `
      const path = require('path');
      const dist = path.join(${JSON.stringify(ROOT)}, 'dist', 'src') + path.sep;
      const loaded = () => Object.keys(require.cache).filter((f) => f.startsWith(dist)).map((f) => f.slice(dist.length)).sort();
      const tlsLoaded = () => process.moduleLoadList.includes('NativeModule tls');
      const before = loaded();
      const tlsBefore = tlsLoaded();
      const net = require('net');
      const server = net.createServer((s) => s.pipe(s));
      server.listen(0, '127.0.0.1', () => {
        const afterListen = loaded();
        const c = net.connect(server.address().port, '127.0.0.1', () => {
          const tlsAfterConnect = tlsLoaded();
          const proto = require('tls').TLSSocket.prototype;
          const c2 = net.connect(server.address().port, '127.0.0.1', () => {
            console.log(JSON.stringify({ before, tlsBefore, afterListen, tlsAfterConnect, transport: c.transport, tlsPatched: proto[Symbol.for('zivm.tls')] === true }));
            c.destroy();
            c2.destroy();
            server.close();
          });
        });
      });
    `;
    const res = await run(['--require', path.join(ROOT, 'dist', 'src', 'register.js'), '-e', script], ROOT);
    expect(res.code, res.stderr).to.equal(0);
    const out = JSON.parse(res.stdout) as {
      before: string[];
      tlsBefore: boolean;
      afterListen: string[];
      tlsAfterConnect: boolean;
      transport: string;
      tlsPatched: boolean;
    };
    expect(out.before, 'loaded with the hook').to.include.members(['register.js', 'net/socket.js', 'net/server.js']);
    const heavy = (list: string[]): string[] =>
      list.filter((file) => /^(shm|guest|server)\//.test(file) || /^net\/(handle|dial|listen|reader|writer|tls|streambase)\.js$/.test(file));
    expect(heavy(out.before), 'the data plane, loaded with the hook').to.deep.equal([]);
    expect(out.tlsBefore, 'node:tls loaded with the hook').to.equal(false);
    expect(out.afterListen, 'loaded by listen()').to.include.members(['net/listen.js', 'net/handle.js', 'net/tls.js', 'shm/domain.js']);
    expect(out.transport).to.equal('shm');
    expect(out.tlsAfterConnect, 'node:tls loaded by listen() and connect()').to.equal(false);
    expect(out.tlsPatched, 'TLSSocket knows shared-memory handles by the next connect()').to.equal(true);
  });

  describe('one bundled file', function () {
    const BUNDLE = path.join(ROOT, 'dist', 'src', 'bundle');

    it("require('zivm'), its ES module and zivm/register resolve to the bundle built from dist/src", () => {
      // The package names itself (its "exports"): resolved as an application resolves it.
      expect(require.resolve('zivm')).to.equal(path.join(BUNDLE, 'zivm.js'));
      expect(require.resolve('zivm/register')).to.equal(path.join(BUNDLE, 'register.js'));
      expect(fs.readFileSync(path.join(ROOT, 'esm', 'index.mjs'), 'utf8')).to.include("from '../dist/src/bundle/zivm.js'");
      // Every module of the client's side is in it, the data plane included; the daemon is not.
      const text = fs.readFileSync(path.join(BUNDLE, 'zivm.js'), 'utf8');
      for (const file of ['net/dial.js', 'net/listen.js', 'shm/domain.js', 'shm/channel.js', 'shm/join.js', 'guest/link.js'])
        expect(text, file).to.include(`dist/src/${file}`);
      expect(text).to.not.match(/dist\/src\/(server|cli)\//);
    });

    it("the hook and require('zivm') are one instance, loaded from that one file; the data plane starts at the first listen(); names and error codes are the modules' own", async () => {
      await inApp('zivm-bundle-', async (dir) => {
        fs.writeFileSync(
          path.join(dir, 'main.js'),
          `
          const path = require('path');
          const root = ${JSON.stringify(fs.realpathSync(ROOT))} + path.sep;
          const ours = () => Object.keys(require.cache).filter((f) => f.startsWith(root)).map((f) => f.slice(root.length)).sort();
          const before = ours();
          const net = require('net');
          const zivm = require('zivm');
          const same = zivm.Socket === net.Socket && zivm.Server === net.Server && zivm.connect === net.connect && zivm.createServer === net.createServer;
          let badPort;
          try { net.connect({ port: 70000 }); } catch (err) { badPort = err.code + ' ' + err.name; }
          const server = net.createServer((s) => s.pipe(s));
          server.listen(0, '127.0.0.1', () => {
            const c = net.connect(server.address().port, '127.0.0.1', () => c.end('x'));
            c.on('data', () => {});
            c.on('close', () => {
              console.log(JSON.stringify({ before, after: ours(), same, badPort, names: [net.Socket.name, net.Server.name], transport: c.transport, shm: zivm.stats().connections.shm }));
              server.close();
            });
          });
          `,
        );
        const res = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
          execFile(process.execPath, ['main.js'], { cwd: dir, env: { ...process.env, NODE_OPTIONS: '--require zivm/register' } }, (err, stdout, stderr) =>
            resolve({ code: err ? 1 : 0, stdout, stderr }),
          ),
        );
        expect(res.code, res.stderr).to.equal(0);
        const out = JSON.parse(res.stdout) as Any;
        // Loading the hook reads two files, and compiles nothing of the data plane's (the addon is not loaded).
        expect(out.before).to.deep.equal(['dist/src/bundle/register.js', 'dist/src/bundle/zivm.js']);
        // Then the addon (and the package.json node-gyp-build names it by), and nothing of dist/src's separate modules.
        const rest = (out.after as string[]).filter((file) => !file.startsWith('dist/src/bundle/'));
        expect(
          rest.filter((file) => file.endsWith('.node')),
          'the addon',
        ).to.have.length(1);
        expect(rest.filter((file) => !file.endsWith('.node'))).to.deep.equal(['package.json']);
        expect(out.same).to.equal(true);
        expect(out.badPort).to.equal('ERR_SOCKET_BAD_PORT RangeError');
        expect(out.names).to.deep.equal(['Socket', 'Server']);
        expect(out.transport).to.equal('shm');
        expect(out.shm).to.equal(1);
      });
    });
  });

  it('publishes each routing decision on TRANSPORT_CHANNEL', async () => {
    const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
    const list = await server.next();
    const seen: zivm.TransportMessage[] = [];
    const fn = (msg: unknown): void => {
      seen.push(msg as zivm.TransportMessage);
    };
    dc.subscribe(zivm.TRANSPORT_CHANNEL, fn);
    try {
      const sock = zivm.connect(list.port, '127.0.0.1');
      expect(await connectedTransport(sock)).to.equal('shm');
      sock.destroy();
      const msg = seen.find((elem) => elem.socket === sock);
      expect(msg, 'a message for the socket').to.not.equal(undefined);
      expect(msg).to.include({ transport: 'shm', address: '127.0.0.1', port: list.port });
      expect(msg!.reason).to.be.a('string').and.not.equal('');
    } finally {
      dc.unsubscribe(zivm.TRANSPORT_CHANNEL, fn);
    }
  });
});
