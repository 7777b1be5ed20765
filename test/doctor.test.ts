/**
 * zivm doctor, and what happens when the addon cannot be loaded at all.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import nodeNet from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as zivm from '../src';
import { addonSource, native } from '../src/shm/native';
import { killAll } from '../tools/kit/proc';
import { spawnPeer } from './helpers/proc';

const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
type Any = Record<string, any>;

function run(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, ...env }, cwd }, (err, stdout, stderr) => {
      resolve({ code: err ? (((err as Any).code as number) ?? 1) : 0, stdout, stderr });
    });
  });
}

async function doctor(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; report: Any; stderr: string }> {
  const res = await run([CLI, 'doctor', '--json', ...args], env);
  let report: Any;
  try {
    report = JSON.parse(res.stdout);
  } catch {
    throw new Error(`zivm doctor printed no JSON (exit ${res.code}): ${res.stdout}${res.stderr}`);
  }
  return { code: res.code, report, stderr: res.stderr };
}

const check = (report: Any, name: string): Any => report.checks.find((item: Any) => item.name === name);

function connectedTransport(sock: nodeNet.Socket): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    sock.once('connect', () => resolve((sock as zivm.Socket).transport));
    sock.once('error', reject);
  });
}

describe('zivm doctor', function () {
  this.timeout(30000);
  afterEach(killAll);

  describe('on a working machine', function () {
    it('names the addon file this process loads and finds nothing wrong with no daemon running', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-doctor-'));
      try {
        const { code, report } = await doctor([], { ZIVM_DIR: dir });
        expect(code).to.equal(0);
        expect(report.usable).to.equal(true);
        expect(report.addon.loaded).to.equal(true);
        expect(report.addon.file).to.equal(addonSource().file);
        native();
        expect(require.cache[report.addon.file], 'the file this process loaded').to.not.equal(undefined);
        expect(report.addon.kind).to.equal(report.addon.file.includes(`${path.sep}prebuilds${path.sep}`) ? 'prebuild' : 'build');
        expect(check(report, 'daemon')).to.include({ status: 'info' });
        expect(check(report, 'daemon').detail).to.contain('the first zivm server on this host starts one');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('says which way a connection would go, as it then goes', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const list = await server.next();
      const plain = nodeNet.createServer((sock) => sock.destroy());
      await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
      const plainPort = (plain.address() as nodeNet.AddressInfo).port;
      try {
        const lhs = await doctor([`127.0.0.1:${list.port}`]);
        expect(lhs.code).to.equal(0);
        expect(check(lhs.report, 'daemon')).to.include({ status: 'ok' });
        expect(lhs.report.routes).to.have.length(1);
        expect(lhs.report.routes[0]).to.include({ address: '127.0.0.1', port: list.port, transport: 'shm' });
        expect(lhs.report.routes[0].reason).to.contain(`pid ${list.pid}`);
        const rhs = await doctor([`127.0.0.1:${plainPort}`]);
        expect(rhs.report.routes[0]).to.include({ transport: 'tcp' });
        expect(rhs.report.routes[0].reason).to.contain('no co-resident listener for');

        const s1 = zivm.connect(list.port, '127.0.0.1');
        const s2 = zivm.connect(plainPort, '127.0.0.1');
        s2.on('error', () => {});
        try {
          expect(await connectedTransport(s1)).to.equal('shm');
          expect(await connectedTransport(s2)).to.equal('tcp');
        } finally {
          s1.destroy();
          s2.destroy();
        }
      } finally {
        plain.close();
      }
    });

    it('exits 1 and says so when ZIVM=off', async () => {
      const { code, report } = await doctor(['127.0.0.1:9'], { ZIVM: 'off' });
      expect(code).to.equal(1);
      expect(report.usable).to.equal(false);
      expect(check(report, 'ZIVM')).to.include({ status: 'off' });
      expect(report.routes[0]).to.include({ transport: 'tcp' });
    });

    it('rejects a target that is not HOST:PORT', async () => {
      const res = await run([CLI, 'doctor', 'localhost:http']);
      expect(res.code).to.equal(2);
      expect(res.stderr).to.contain('is not HOST:PORT');
    });
  });

  describe('without a loadable addon', function () {
    // node-gyp-build looks in ZIVM_PREBUILD instead of the package when it is set: an empty folder has nothing.
    let empty: string;
    before(() => {
      empty = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-noaddon-'));
    });
    after(() => fs.rmSync(empty, { recursive: true, force: true }));

    it('zivm doctor tells why and how to build it', async () => {
      const { code, report } = await doctor([], { ZIVM_PREBUILD: empty });
      expect(code).to.equal(1);
      expect(report.addon.loaded).to.equal(false);
      const item = check(report, 'addon');
      expect(item.status).to.equal('fail');
      expect(item.detail)
        .to.contain('zivm native addon could not be loaded')
        .and.contain('npm rebuild zivm')
        .and.contain(`${process.platform}-${process.arch}`);
    });

    it('connections go over TCP, saying why', async () => {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const list = await server.next();
      const script = `
        const net = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'index.js'))});
        const s = net.connect(${list.port}, '127.0.0.1', () => { s.end('x'); });
        s.on('data', (d) => { console.log(JSON.stringify({ transport: s.transport, echoed: String(d) })); });
      `;
      const res = await run(['-e', script], { ZIVM_PREBUILD: empty, NODE_DEBUG: 'zivm' });
      expect(res.code, res.stderr).to.equal(0);
      expect(JSON.parse(res.stdout)).to.deep.equal({ transport: 'tcp', echoed: 'x' });
      expect(res.stderr).to.match(/tcp to 127\.0\.0\.1:\d+: no zivm domain here \(zivm native addon could not be loaded/);
    });
  });
});
