/**
 * Processes of different users on one host: a process of another user may
 * reach any listener over loopback TCP, and over shared memory it gets just
 * that, in a pair domain the listener's daemon makes for the two of them
 * (server/broker.ts, shm/pairs.ts). Neither maps the other's domain. Each
 * user starts its own daemon, as with no configuration at all. Needs root
 * (the peers run as two other users).
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readableCopy, type ReadableCopy } from '../helpers/readable';
import { Proc } from '../../tools/kit/proc';
import { native } from '../../src/shm/native';
import { Hostile } from '../helpers/hostile';
import { maxPeersOf, zivmMaps } from '../helpers/maps';

const USER_A = 64101;
const USER_B = 64102;

/** Is user `uid`'s broker name held (a listening socket in /proc/net/unix)? */
function brokerHeld(uid: number): boolean {
  return fs.readFileSync('/proc/net/unix', 'utf8').includes(`@zivm-broker.${uid}\n`);
}

async function until(what: string, test: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('processes of different users', function () {
  this.timeout(60000);
  const procs: Proc[] = [];
  const dirs: string[] = [];

  /** A copy of the package the other users may read (the checkout may be private to us): its fixtures. */
  let fixtures = '';
  let nodeBin = '';
  let copy: ReadableCopy | undefined;
  before(function () {
    if (process.getuid?.() !== 0) throw new Error('these tests run peers as other users: run them as root');
    copy = readableCopy();
    ({ fixtures, nodeBin } = copy);
  });

  after(() => copy?.remove());

  afterEach(async () => {
    for (const proc of procs.splice(0)) await proc.stop();
    // Each test's daemons are gone (they leave a second after their last process) before the next starts its own.
    await until('the daemons of the test have exited', () => !brokerHeld(USER_A) && !brokerHeld(USER_B));
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A folder for `uid`'s daemon socket, its own (mode 0700). */
  function dirFor(uid: number): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `zivm-users-${uid}-`));
    fs.chownSync(dir, uid, uid);
    fs.chmodSync(dir, 0o700);
    dirs.push(dir);
    return path.join(dir, 'zivm');
  }

  function run(uid: number, script: string, args: (string | number)[], env: NodeJS.ProcessEnv = {}): Proc {
    const proc = new Proc(nodeBin, [path.join(fixtures, script), ...args.map(String)], {
      name: `${script} ${args[0] ?? ''}`.trim(),
      uid,
      gid: uid,
      cwd: '/',
      env: { ...process.env, HOME: '/', XDG_RUNTIME_DIR: '', ...env },
      timeoutMs: 20000,
    });
    procs.push(proc);
    return proc;
  }

  async function server(impl: 'zivm' | 'net' = 'zivm'): Promise<{ proc: Proc; port: number }> {
    const proc = run(USER_A, 'peer.js', ['echo-server', impl, '127.0.0.1'], { ZIVM_DIR: dirFor(USER_A) });
    const listening = await proc.expect('listening');
    return { proc, port: Number(listening.port) };
  }

  it('a client of another user reaches a zivm server over shared memory, bytes intact both ways, remoteAddress as over loopback', async () => {
    const srv = await server();
    const client = run(USER_B, 'peer.js', ['transfer', 'zivm', srv.port, '127.0.0.1', 8 << 20, 7], { ZIVM_DIR: dirFor(USER_B) });
    const connect = await client.expect('connect');
    expect(connect.transport).to.equal('shm');
    const conn = await srv.proc.expect('connection');
    expect(conn.transport).to.equal('shm');
    expect(conn.remoteAddress).to.equal('127.0.0.1');
    const done = await client.expect('done');
    expect(done.bytes).to.equal(8 << 20);
    expect(done.received).to.equal(done.sent);
  });

  it('each maps only its own memory: the client the pair domain, never the server user’s domain', async () => {
    const srv = await server();
    const victim = run(USER_B, 'victim.js', [srv.port, '127.0.0.1'], { ZIVM_DIR: dirFor(USER_B) });
    expect((await victim.expect('connect')).transport).to.equal('shm');
    victim.send({ cmd: 'echo', text: 'marker-1' });
    await victim.expect('echo');
    const theirs = zivmMaps(srv.proc.pid);
    const mine = zivmMaps(victim.pid);
    expect(mine.size, 'regions the client maps').to.equal(1);
    const [pairInode, pairName] = [...mine.entries()][0];
    expect(maxPeersOf(pairName), 'a pair domain has two members').to.equal(2);
    expect(theirs.has(pairInode), 'the server maps the same pair domain').to.equal(true);
    const hostRegions = [...theirs.entries()].filter(([inode]) => inode !== pairInode);
    expect(hostRegions.length, 'the server maps its own domain too').to.equal(1);
    expect(maxPeersOf(hostRegions[0][1])).to.be.greaterThan(2);
  });

  it('many connections from one process share one pair domain, set up once', async () => {
    const srv = await server();
    const client = run(USER_B, 'many-client.js', [], { ZIVM_DIR: dirFor(USER_B), NODE_DEBUG: 'zivm' });
    client.send({ cmd: 'open', port: srv.port, count: 50 });
    const opened = await client.event('opened');
    expect(opened.transports).to.deep.equal({ shm: 50 });
    expect(opened.intact).to.equal(50);
    expect(zivmMaps(client.pid).size, 'regions the client maps').to.equal(1);
    expect(client.stderr().match(/joined a pair domain/g)?.length, 'pair domains joined').to.equal(1);
  });

  it('a hostile dialler of another user (none of our code) gets nothing a loopback client would not, and cannot take the server down', async () => {
    const srv = await server();
    const hostile = new Hostile(`broker:${USER_A}:127.0.0.1:${srv.port}`, { uid: USER_B });
    procs.push(hostile.proc);
    const joined = await hostile.joined();
    expect(joined.size, 'a pair domain').to.equal(2 * 1024 * 1024 * 1024);
    // Requests that loopback TCP could not bring: from an address not of this node, to one, to another port.
    await hostile.do({ op: 'request', port: srv.port, src: [192, 0, 2, 7] });
    await hostile.do({ op: 'request', port: srv.port, dst: [192, 0, 2, 8] });
    await hostile.do({ op: 'request', port: srv.port, data: 'forged', src: [10, 11, 12, 13] });
    // A request whose ring is corrupt: that connection fails, nothing else.
    await hostile.do({ op: 'request', port: srv.port, corrupt: true });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const taken = srv.proc.lines.filter((line) => line.event === 'connection');
    expect(taken.length, 'requests taken').to.be.at.most(1);
    // Then words at random all over its pair domain.
    await hostile.do({ op: 'random', seed: 5, count: 20000, from: 0, to: joined.size as number });
    await hostile.do({ op: 'ring', peer: 1 - (joined.id as number) });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    expect(srv.proc.running, 'the server').to.equal(true);
    // An honest process of the same user is served, in memory the attacker does not map.
    const victim = run(USER_B, 'victim.js', [srv.port, '127.0.0.1'], { ZIVM_DIR: dirFor(USER_B) });
    expect((await victim.expect('connect')).transport).to.equal('shm');
    victim.send({ cmd: 'echo', text: 'marker-7f3a9c' });
    expect((await victim.expect('echo')).text).to.equal('marker-7f3a9c');
    const seen = await hostile.do({ op: 'find', hex: Buffer.from('marker-7f3a9c').toString('hex') });
    expect(seen.count, 'marker bytes in the attacker’s memory').to.equal(0);
  });

  it('the server process dying ends the other user’s connection within a second, as a reset', async () => {
    const srv = await server();
    const victim = run(USER_B, 'victim.js', [srv.port, '127.0.0.1'], { ZIVM_DIR: dirFor(USER_B) });
    expect((await victim.expect('connect')).transport).to.equal('shm');
    victim.send({ cmd: 'echo', text: 'before' });
    await victim.expect('echo');
    const killedAt = Date.now();
    srv.proc.kill('SIGKILL');
    const ended = await victim.next((line) => line.event === 'error' || line.event === 'close', 5000);
    expect(Date.now() - killedAt).to.be.below(1000);
    if (ended.event === 'error') expect(ended.code).to.equal('ECONNRESET');
  });

  it('a port of another user that no zivm process serves stays on TCP, as it was', async () => {
    const srv = await server('net');
    const client = run(USER_B, 'peer.js', ['transfer', 'zivm', srv.port, '127.0.0.1', 1 << 20, 3], { ZIVM_DIR: dirFor(USER_B) });
    expect((await client.expect('connect')).transport).to.equal('tcp');
    const done = await client.expect('done');
    expect(done.received).to.equal(done.sent);
  });

  it('a broker name taken by someone else is not trusted: TCP, and the server still works', async () => {
    // Taken before the server user's daemon starts (abstract names are first come, first served).
    const squat = native().unixListen(`@zivm-broker.${USER_A}`, 4);
    try {
      const srv = await server();
      const client = run(USER_B, 'peer.js', ['transfer', 'zivm', srv.port, '127.0.0.1', 1 << 20, 5], { ZIVM_DIR: dirFor(USER_B), NODE_DEBUG: 'zivm' });
      expect((await client.expect('connect')).transport).to.equal('tcp');
      const done = await client.expect('done');
      expect(done.received).to.equal(done.sent);
      expect(client.stderr()).to.match(/broker socket of user 64101 is held by user 0/);
    } finally {
      native().close(squat);
    }
  });
});
