/**
 * Attacks from a hostile member of the domain: a separate process that shares
 * no code with zivm (hostile.py: QEMU's ivshmem-server protocol and the
 * documented region layout), attached to the daemon's socket as a guest's
 * QEMU is. Each test attacks honest zivm processes (an echo server, clients)
 * and asserts what a user sees: the victim neither dies nor stalls for more
 * than about a second, what the attack touched fails alone, and later
 * connections work.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Json, Proc, killAll } from '../../tools/kit/proc';
import { ServerProc, startServer } from '../../tools/kit/daemon';
import { spawnPeer } from '../helpers/proc';
import { Hostile } from '../helpers/hostile';

/** The attacker's program, from the source tree (this file runs as dist/test/security/). */

/** Word indexes of the region layout, as the attacker knows them. */
const HEADER_VECTORS = 5;
const PEER_KIND = 3;
const PEER_ROUTE = 6;
const KIND_GUEST_PROCESS = 3;
const PEER_POLLING = 7;
const ROUTE_VIA = 0x40000000;

interface Scene {
  dir: string;
  /** The host daemon's socket: host processes only. */
  socket: string;
  /** The socket of a daemon that admits guests, beside it (host processes find it there). */
  guests: string;
  daemon: ServerProc;
  guestDaemon: ServerProc;
  env: NodeJS.ProcessEnv;
  server: Proc;
  port: number;
}

const scenes: Scene[] = [];

/**
 * A host domain and, beside it, a domain that admits guests (where the
 * attacker attaches as one, unless a test makes it a host process gone
 * wrong); an echo server bound to `echoAddr`, and the environment to join.
 */
async function scene(daemonArgs: string[] = [], opts: { dirMode?: number; echoAddr?: string } = {}): Promise<Scene> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-attack-'));
  fs.chmodSync(dir, opts.dirMode ?? 0o700);
  const socket = path.join(dir, 'zivm.sock');
  const guests = path.join(dir, 'guests.sock');
  const daemon = await startServer(socket, daemonArgs);
  const guestDaemon = await startServer(guests, ['--guests', ...daemonArgs]);
  const env = { ZIVM_SOCKET: socket, NODE_DEBUG: 'zivm' };
  const server = spawnPeer('peer', ['echo-server', 'zivm', opts.echoAddr ?? '127.0.0.1'], env);
  const port = (await server.event('listening')).port as number;
  const made = { dir, socket, guests, daemon, guestDaemon, env, server, port };
  scenes.push(made);
  return made;
}

/** A client process that connects and echoes, reporting its transport. */
async function victim(sc: Scene, env: NodeJS.ProcessEnv = {}): Promise<{ proc: Proc; connect: Json }> {
  const proc = spawnPeer('victim', [String(sc.port), '127.0.0.1'], { ...sc.env, ...env });
  return { proc, connect: await proc.event('connect') };
}

async function echo(proc: Proc, text: string, ms = 5000): Promise<Json> {
  proc.send({ cmd: 'echo', text });
  return proc.next((line) => line.event === 'echo' || line.event === 'error' || line.event === 'close', ms);
}

/** The server is alive and serves a new client over shared memory. */
async function stillServes(sc: Scene): Promise<void> {
  expect(sc.server.proc.exitCode, `echo server exit code; stderr:\n${sc.server.stderr().slice(-2000)}`).to.equal(null);
  const { proc, connect } = await victim(sc);
  expect(connect.transport, 'a later client').to.equal('shm');
  const answer = await echo(proc, 'later');
  expect(answer.event, JSON.stringify(answer)).to.equal('echo');
  await proc.stop();
}

describe('attacks by a hostile member of the domain', function () {
  this.timeout(30000);

  afterEach(async () => {
    await killAll();
    for (const sc of scenes.splice(0)) {
      await sc.daemon.stop();
      await sc.guestDaemon.stop();
      fs.rmSync(sc.dir, { recursive: true, force: true });
    }
  });

  it('a connection request whose rings make no sense is refused alone: the server lives on and serves the next client', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    const req = await bad.do({ op: 'request', port: sc.port, corrupt: true });
    expect(req.rung, 'the attacker rang the server').to.equal(true);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const slots = (await bad.do({ op: 'slots', server: req.owner })).slots as Json[];
    const forged = slots.find((entry) => entry.slot === req.slot);
    // Refused (state 4), not taken as a connection.
    expect(forged && forged.state & 0xff, 'the forged request').to.equal(4);
    await stillServes(sc);
  });

  it('a doorbell route that points outside the peer table is not followed: the server lives on (small region)', async () => {
    const sc = await scene(['--size', '4M', '--ring', '64K']);
    const bad = new Hostile(sc.socket, { hello: true });
    const me = await bad.joined();
    // Its own entry says "ring me as vector 0 of peer 65535", then it asks to connect: accepting rings it.
    await bad.do({ op: 'peerword', peer: me.id, word: PEER_ROUTE, val: ROUTE_VIA | 0xffff });
    await bad.do({ op: 'request', port: sc.port, data: 'GET' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    await stillServes(sc);
  });

  it('a forged VECTORS word in the header does not hold up processes that join later: they join at once, over shared memory', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    await bad.do({ op: 'w32', off: 4 * HEADER_VECTORS, val: 2 });
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    expect(connect.syncMs, 'connect() held the event loop (ms)').to.be.below(500);
    expect((await echo(proc, 'hello')).event).to.equal('echo');
    expect(proc.stderr(), 'the damage is said under NODE_DEBUG=zivm').to.match(/region header is damaged \(VECTORS\)/);
  });

  it('random words written over the header: later processes still connect over shared memory, and say the header is damaged', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    await bad.do({ op: 'random', seed: 7, count: 200, from: 0, to: 128 });
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    expect((await echo(proc, 'hello')).event).to.equal('echo');
    expect(proc.stderr()).to.match(/region header is damaged/);
    await stillServes(sc);
  });

  it('a server marked as busy-polling (so that nobody rings it) still answers, within about a second', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    expect((await echo(proc, 'warm')).event).to.equal('echo');
    const owner = ((await bad.do({ op: 'listeners' })).listeners as Json[]).find((entry) => entry.port === sc.port)!.owner as number;
    // Keep the word set, as a busy-polling peer would: its doorbell is never rung.
    const timer = setInterval(() => bad.proc.send({ op: 'peerword', peer: owner, word: PEER_POLLING, val: 1 }), 20);
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const answer = await echo(proc, 'through', 5000);
      expect(answer.event, JSON.stringify(answer)).to.equal('echo');
      expect(answer.ms, 'echo time (ms)').to.be.below(2500);
    } finally {
      clearInterval(timer);
    }
  });

  it('a slot taken from under a live connection fails that connection alone (ERR_ZIVM_CORRUPT); the server accepts the next one', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    expect((await echo(proc, 'before')).event).to.equal('echo');
    const owner = ((await bad.do({ op: 'listeners' })).listeners as Json[]).find((entry) => entry.port === sc.port)!.owner as number;
    const slots = (await bad.do({ op: 'slots', server: owner })).slots as Json[];
    expect(slots.length, 'the live connection').to.equal(1);
    await bad.do({ op: 'steal', slot: slots[0].slot });
    const answer = await echo(proc, 'after', 5000);
    expect(answer.event).to.equal('error');
    expect(answer.code).to.equal('ERR_ZIVM_CORRUPT');
    await stillServes(sc);
  });

  it('an HTTP server reading a body in place: a ring head pushed past the ring by the client fails that connection alone (ERR_ZIVM_CORRUPT); it serves the next one', async () => {
    const sc = await scene();
    const register = path.join(__dirname, '..', '..', 'src', 'register.js');
    const hookEnv = { ...sc.env, NODE_OPTIONS: `--require ${register}` };
    const httpd = spawnPeer('peer', ['http-server', 'zivm', '127.0.0.1'], hookEnv);
    const port = (await httpd.event('listening')).port as number;
    const bad = new Hostile(sc.socket, { hello: true });
    await bad.joined();
    // A request whose first bytes (headers and 6,000 bytes of a body of 1,000,000) are in the ring already: read in place.
    const data = `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n${'a'.repeat(6000)}`;
    const req = await bad.do({ op: 'request', port, data });
    expect((await httpd.event('connection')).transport).to.equal('shm');
    await new Promise((resolve) => setTimeout(resolve, 300));
    // 5,000 more bytes by the low half of the head (enough to be read in place), 2^62 by the high half.
    const rung = await bad.do({ op: 'head', slot: req.slot, low: data.length + 5000, high: 0x7fffffff, peer: req.owner });
    expect(rung.rung).to.equal(true);
    const failed = await httpd.next((line) => line.event === 'client-error', 5000);
    expect(failed.code).to.equal('ERR_ZIVM_CORRUPT');
    expect(httpd.proc.exitCode, 'the HTTP server lives on').to.equal(null);
    const script = `
      const http = require('node:http');
      const req = http.request({ port: ${port}, host: '127.0.0.1', method: 'POST' }, (res) => {
        let text = ''; res.on('data', (d) => (text += d)); res.on('end', () => console.log(text));
      });
      req.end(Buffer.alloc(100000, 1));`;
    const next = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000, env: { ...process.env, ...hookEnv } });
    expect(next.status, next.stderr).to.equal(0);
    const answer = JSON.parse(next.stdout.trim()) as Json;
    expect([answer.bytes, answer.transport]).to.deep.equal([100000, 'shm']);
  });

  it("an honest process whose entry is rewritten as one of the attacker's guest processes is not reaped when the attacker leaves", async () => {
    const sc = await scene();
    const bad = new Hostile(sc.socket, { hello: true });
    const me = await bad.joined();
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    expect((await echo(proc, 'before')).event).to.equal('echo');
    const owner = ((await bad.do({ op: 'listeners' })).listeners as Json[]).find((entry) => entry.port === sc.port)!.owner as number;
    await bad.do({ op: 'peerword', peer: owner, word: PEER_KIND, val: KIND_GUEST_PROCESS });
    await bad.do({ op: 'peerword', peer: owner, word: PEER_ROUTE, val: ROUTE_VIA | me.id });
    await bad.do({ op: 'quit' });
    await bad.proc.exited;
    await new Promise((resolve) => setTimeout(resolve, 300));
    const answer = await echo(proc, 'after');
    expect(answer.event, JSON.stringify(answer)).to.equal('echo');
    await stillServes(sc);
  });

  it("a listener entry written by the attacker for a plain TCP server's port on 127.0.0.1 captures nothing: the client goes over TCP to the real server", async () => {
    const sc = await scene();
    const plain = spawnPeer('peer', ['echo-server', 'net', '127.0.0.1'], sc.env);
    const port = (await plain.event('listening')).port as number;
    const bad = new Hostile(sc.guests);
    await bad.joined();
    await bad.do({ op: 'listen', port, node: fs.statSync('/proc/self/ns/net').ino, addr: [127, 0, 0, 1] });
    const proc = spawnPeer('victim', [String(port), '127.0.0.1'], sc.env);
    const connect = await proc.event('connect');
    expect(connect.transport).to.equal('tcp');
    const answer = await echo(proc, 'to the real one');
    expect(answer.event, JSON.stringify(answer)).to.equal('echo');
  });

  it("a zivm server's listener entry in the guests' memory rewritten to name the attacker as its owner: host clients still reach the real server", async () => {
    const sc = await scene([], { echoAddr: '0.0.0.0' });
    const bad = new Hostile(sc.guests);
    const me = await bad.joined();
    // A server on the wildcard is registered for guests too: the attacker sees its entry, and takes it.
    await bad.do({ op: 'owner', port: sc.port, owner: me.id });
    const { proc, connect } = await victim(sc);
    // Host clients look for host listeners in memory no guest maps.
    expect(connect.transport).to.equal('shm');
    expect((await echo(proc, 'hello')).event).to.equal('echo');
    expect(sc.server.lines.filter((line) => line.event === 'connection').length, 'connections the real server saw').to.equal(1);
  });

  it('a server bound to 127.0.0.1 is not even listed in memory a guest maps; requests forged to a wildcard server at a loopback address are refused', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.guests);
    await bad.joined();
    const listed = ((await bad.do({ op: 'listeners' })).listeners as Json[]).filter((entry) => entry.port === sc.port);
    expect(listed, "the loopback server in the guests' listener table").to.deep.equal([]);
    // A server on the wildcard is listed there; the attacker dials it at 127.0.0.1, as itself and in the name of the server.
    const wild = spawnPeer('peer', ['echo-server', 'zivm', '0.0.0.0'], sc.env);
    const port = (await wild.event('listening')).port as number;
    for (const as of ['itself', 'the server']) {
      const req = await bad.do({ op: 'request', port, data: 'GET / HTTP/1.0\r\n\r\n', ...(as === 'the server' ? { as: 'owner' } : {}) });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const slots = (await bad.do({ op: 'slots', server: req.owner })).slots as Json[];
      expect(slots.find((entry) => entry.slot === req.slot)?.state & 0xff, `a request in the name of ${as}`).to.equal(4);
    }
    expect(
      wild.lines.filter((line) => line.event === 'connection'),
      'connections the server saw',
    ).to.deep.equal([]);
    expect(wild.stderr()).to.match(/refused the connection request in slot \d+: dialled at an address that is not for guests/);
    await stillServes(sc);
  });

  it('connections between host processes never pass through memory a guest maps (and do through the host domain, which a process of our own user can read)', async () => {
    // A small host region: the attacker's process searches all of it, and all of the guests' memory.
    const sc = await scene(['--size', '64M'], { echoAddr: '0.0.0.0' });
    const guest = new Hostile(sc.guests);
    await guest.joined();
    const own = new Hostile(sc.socket, { hello: true });
    await own.joined();
    const { proc, connect } = await victim(sc);
    expect(connect.transport).to.equal('shm');
    const marker = `marker-${process.pid}-${Date.now()}`;
    expect((await echo(proc, marker)).event).to.equal('echo');
    const hex = Buffer.from(marker).toString('hex');
    expect((await guest.do({ op: 'find', hex })).count, "the marker in the guests' memory").to.equal(0);
    // The check can fail: the same search in the host domain finds the bytes (both directions of the echo).
    expect((await own.do({ op: 'find', hex })).count, 'the marker in the host domain').to.be.at.least(1);
  });

  it('an address the attacker publishes as its own (not one the operator declared for guests) captures nothing: the client uses TCP', async () => {
    const sc = await scene();
    const bad = new Hostile(sc.guests);
    await bad.joined();
    const target = [10, 99, 0, 1];
    await bad.do({ op: 'publish', addr: target });
    await bad.do({ op: 'listen', port: 4444, node: 12345, addr: target });
    // The client runs in a network namespace of its own (no route anywhere): TCP fails there at once.
    const proc = new Proc('unshare', ['-n', process.execPath, path.join(__dirname, '..', 'fixtures', 'victim.js'), '4444', target.join('.')], {
      name: 'victim (own netns)',
      env: { ...process.env, ...sc.env },
      timeoutMs: 10000,
    });
    const first = await proc.next((line) => line.event === 'connect' || line.event === 'error');
    expect(first, 'not over shared memory to the attacker').to.deep.include({ event: 'error' });
    expect(first.code).to.match(/ENETUNREACH|EHOSTUNREACH|ECONNREFUSED/);
  });

  it('a socket in the folder that is not a zivm daemon (no lock file beside it) is never connected to when looking for daemons of guests', async () => {
    const sc = await scene();
    let touched = 0;
    const other = net.createServer((sock) => {
      touched++;
      sock.destroy();
    });
    await new Promise<void>((resolve) => other.listen(path.join(sc.dir, 'other.sock'), resolve));
    try {
      // A host client dialling an address that is not this host's looks for daemons of guests beside its own.
      const proc = new Proc('unshare', ['-n', process.execPath, path.join(__dirname, '..', 'fixtures', 'victim.js'), '4444', '10.99.0.1'], {
        name: 'victim (own netns)',
        env: { ...process.env, ...sc.env },
        timeoutMs: 10000,
      });
      expect((await proc.next((line) => line.event === 'connect' || line.event === 'error')).event).to.equal('error');
      expect(proc.stderr(), 'the daemon of guests beside it was joined').to.match(/joined the domain of guests at .*guests\.sock/);
      expect(touched, 'connections to the other socket').to.equal(0);
    } finally {
      other.close();
    }
  });

  it('a daemon that does not admit guests (the default) gives an attacker that attaches as QEMU nothing, not even the region', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-attack-'));
    const socket = path.join(dir, 'zivm.sock');
    const daemon = await startServer(socket, []);
    try {
      expect(daemon.out.stdout).to.contain('host processes only');
      const bad = new Hostile(socket);
      const exit = await bad.proc.exit(10000);
      expect(exit.code, 'the attacker gave up').to.not.equal(0);
      expect(bad.proc.lines, 'what the attacker got').to.deep.equal([]);
      expect(daemon.out.stderr).to.match(/refused pid \d+: it did not say HELLO/);
      // Host processes still join it and talk over shared memory.
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], { ZIVM_SOCKET: socket });
      const port = (await server.event('listening')).port as number;
      const proc = spawnPeer('victim', [String(port), '127.0.0.1'], { ZIVM_SOCKET: socket });
      expect((await proc.event('connect')).transport).to.equal('shm');
      expect((await echo(proc, 'hi')).event).to.equal('echo');
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a member of another uid is refused by the daemon (root included); --allow-uid admits it', async () => {
    const nobody = 65534;
    for (const allow of [false, true]) {
      const sc = await scene(allow ? ['--allow-uid', String(nobody)] : [], { dirMode: 0o755 });
      fs.chmodSync(sc.guests, 0o666);
      const other = new Hostile(sc.guests, { uid: nobody });
      if (allow) {
        expect((await other.joined()).id, 'admitted').to.be.a('number');
      } else {
        await other.proc.exited;
        expect(other.proc.lines, 'what the refused member got').to.deep.equal([]);
        expect(sc.guestDaemon.out.stderr).to.match(/refused pid \d+: uid 65534/);
      }
      await other.proc.stop();
      await sc.daemon.stop();
      await sc.guestDaemon.stop();
    }
  });
});
