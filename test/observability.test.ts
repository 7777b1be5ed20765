/**
 * What operators see: zivm stat, stats(), the diagnostics channel,
 * NODE_DEBUG=zivm lines, and the ZIVM=off switch.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import dc from 'node:diagnostics_channel';
import nodeNet from 'node:net';
import path from 'node:path';
import * as zivm from '../src';
import { killAll } from '../tools/kit/proc';
import { spawnPeer } from './helpers/proc';

const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
type Any = Record<string, any>;

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (((err as Any).code as number) ?? 1) : 0, stdout, stderr });
    });
  });
}

function connected(sock: nodeNet.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
}

describe('observability', function () {
  this.timeout(30000);
  afterEach(killAll);

  it('zivm stat --json shows the listener and the connection with its bytes each way', async () => {
    const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
    const list = await server.next();
    const sock = zivm.connect(list.port, '127.0.0.1');
    await connected(sock);
    const echoed = new Promise<void>((resolve) => {
      let count = 0;
      sock.on('data', (chunk) => {
        count += chunk.length;
        if (count === 12345) resolve();
      });
    });
    sock.write(Buffer.alloc(12345, 9));
    await echoed;
    const res = await run([CLI, 'stat', '--json']);
    expect(res.code, res.stderr).to.equal(0);
    const snap = JSON.parse(res.stdout);
    const listener = snap.listeners.find((elem: Any) => elem.port === list.port);
    expect(listener, JSON.stringify(snap.listeners)).to.include({ address: '127.0.0.1', family: 'IPv4' });
    const conn = snap.connections.find((item: Any) => item.server.port === list.port && item.client.port === sock.localPort);
    expect(conn, JSON.stringify(snap.connections)).to.include({ state: 'established', bytesToServer: 12345, bytesToClient: 12345 });
    expect(snap.peers.map((part: Any) => part.pid)).to.include.members([process.pid, list.pid]);
    // Memory: what the pages connections touched hold, not the region's size; this connection is among those holding some.
    expect(snap.memory.mapped).to.equal(snap.size);
    expect(snap.memory.resident).to.be.above(0).and.below(snap.size);
    expect(snap.memory.slots.used + snap.memory.slots.free).to.equal(snap.slots);
    expect(snap.memory.slots.used).to.be.at.least(1);
    expect(snap.memory.perPeer[String(conn.server.peer)]).to.be.at.least(1);
    expect(snap.memory.largest.length).to.be.at.least(1);
    expect(snap.memory.largest[0].resident).to.be.above(0);
    const table = await run([CLI, 'stat']);
    expect(table.stdout)
      .to.match(/LISTENERS/)
      .and.match(new RegExp(`127\\.0\\.0\\.1\\s+${list.port}`))
      .and.match(/MEMORY: \S+ resident of \S+ mapped; slots \d+ used, \d+ free/);
    sock.destroy();
  });

  it('zivm stat fails clearly where there is no domain', async () => {
    const res = await run([CLI, 'stat', '--socket', '/nonexistent/zivm.sock']);
    expect(res.code).to.equal(1);
    expect(res.stderr).to.match(/no domain at \/nonexistent\/zivm\.sock/);
  });

  it("stats() lists this process's sockets with their transport and counts the choices", async () => {
    const before = zivm.stats().connections;
    const server = zivm.createServer((conn) => conn.pipe(conn));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as nodeNet.AddressInfo).port;
    const plain = nodeNet.createServer((conn) => conn.end());
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    const s1 = zivm.connect(port, '127.0.0.1');
    const s2 = zivm.connect((plain.address() as nodeNet.AddressInfo).port, '127.0.0.1');
    await Promise.all([connected(s1), connected(s2)]);
    const st = zivm.stats();
    expect(st.connections.shm).to.equal(before.shm + 1);
    expect(st.connections.tcp).to.equal(before.tcp + 1);
    expect(Object.keys(st.connections.tcpReasons).join()).to.match(/no co-resident listener/);
    const mine = st.sockets.find((elem) => elem.localPort === s1.localPort && elem.remotePort === port);
    expect(mine?.transport).to.equal('shm');
    expect(st.servers.some((val) => (val.address as nodeNet.AddressInfo).port === port && val.shm)).to.equal(true);
    expect(st.peer).to.be.an('object');
    s1.destroy();
    s2.destroy();
    await new Promise((resolve) => server.close(resolve));
    await new Promise((resolve) => plain.close(resolve));
  });

  it('publishes each transport decision on the zivm:transport channel', async () => {
    const seen: Any[] = [];
    const onMessage = (msg: unknown): void => {
      seen.push(msg as Any);
    };
    dc.subscribe('zivm:transport', onMessage);
    try {
      const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
      const other = spawnPeer('peer', ['echo-server', 'net', '127.0.0.1']);
      const [first, second] = [await server.next(), await other.next()];
      const s1 = zivm.connect(first.port, '127.0.0.1');
      const s2 = zivm.connect(second.port, '127.0.0.1');
      await Promise.all([connected(s1), connected(s2)]);
      const e1 = seen.find((msg) => msg.socket === s1);
      const e2 = seen.find((msg) => msg.socket === s2);
      expect(e1).to.include({ transport: 'shm', address: '127.0.0.1', port: first.port });
      expect(e2).to.include({ transport: 'tcp', address: '127.0.0.1', port: second.port });
      expect(e2?.reason).to.match(/no co-resident listener for 127\.0\.0\.1:/);
      s1.destroy();
      s2.destroy();
    } finally {
      dc.unsubscribe('zivm:transport', onMessage);
    }
  });

  it('NODE_DEBUG=zivm says which transport a connection took and why', async () => {
    const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
    const other = spawnPeer('peer', ['echo-server', 'net', '127.0.0.1']);
    const [first, second] = [await server.next(), await other.next()];
    const script = `const z=require(${JSON.stringify(path.join(__dirname, '..', 'src'))});
      let n=0; for (const p of [${first.port}, ${second.port}]) z.connect(p,'127.0.0.1',function(){ this.destroy(); if(++n===2) process.exit(0); });`;
    const res = await run(['-e', script], { NODE_DEBUG: 'zivm' });
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.match(new RegExp(`shm to 127\\.0\\.0\\.1:${first.port}: listener of peer \\d+`));
    expect(res.stderr).to.match(new RegExp(`tcp to 127\\.0\\.0\\.1:${second.port}: no co-resident listener for 127\\.0\\.0\\.1:${second.port}`));
  });

  it('ZIVM=off keeps a client on TCP even to a zivm server', async () => {
    const server = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1']);
    const list = await server.next();
    const client = spawnPeer('peer', ['transfer', 'zivm', String(list.port), '127.0.0.1', '1000', '2'], { ZIVM: 'off' });
    expect((await client.next()).transport).to.equal('tcp');
    const done = await client.next();
    expect(done.received).to.equal(done.sent);
    expect((await server.next()).transport).to.equal('tcp');
  });
});
