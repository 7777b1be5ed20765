/**
 * Many processes on one host, each with its own connections, all over shared
 * memory with the defaults (one auto-started daemon): a ring of processes, each
 * listening and connecting to the next. Each holds doorbells only for the
 * peers it talks to, not for every process of the host.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Json, Proc, killAll } from '../tools/kit/proc';
import { spawnPeer } from './helpers/proc';
import * as zivm from '../src';
import { currentDomain } from '../src/shm/join';

/** `npm run test:long`: 10,000 connections and 1,000 processes (as many as memory allows: the figure is printed). */
const LONG = !!process.env.ZIVM_LONG;
const RING = Number(process.env.ZIVM_TEST_RING ?? (LONG ? 1000 : 200));
const MANY = Number(process.env.ZIVM_TEST_CONNECTIONS ?? (LONG ? 10000 : 2000));
/** Memory left for everything else when a long run decides how many processes fit. */
const RESERVE = 3 * 1024 ** 3;

/** MemAvailable of /proc/meminfo, in bytes. */
function memAvailable(): number {
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match ? Number(match[1]) * 1024 : os.freemem();
}

/** Resident memory of process `pid`, in bytes. */
function rssOf(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}
/** Memory an idle connection that echoed 1 KiB may hold: its slot header page and a page or two of each ring. */
const IDLE_BYTES = 24 * 1024;

describe(`${MANY} connections between two processes at once`, function () {
  this.timeout(300000);
  afterEach(() => killAll());

  it('every one over shared memory both ends, echoes intact, memory held by what was touched, not by the size of the region', async () => {
    const accepted: Record<string, number> = {};
    const server = zivm.createServer((sock) => {
      const transport = String(sock.transport);
      accepted[transport] = (accepted[transport] ?? 0) + 1;
      sock.on('error', () => undefined); // the client's end of the run ends them; nothing to report
      sock.pipe(sock);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const domain = currentDomain()!;
      expect(domain.geo.nslots, 'slots of the default region').to.be.at.least(MANY);
      const before = domain.region.resident();
      const client = spawnPeer('many-client', []);
      client.send({ cmd: 'open', port: (server.address() as { port: number }).port, count: MANY });
      const opened = await client.event('opened', 240000);
      expect(opened.errors, 'errors').to.deep.equal([]);
      expect(opened.transports, 'client ends').to.deep.equal({ shm: MANY });
      expect(opened.intact, 'echoes intact').to.equal(MANY);
      expect(accepted, 'server ends').to.deep.equal({ shm: MANY });
      const held = domain.region.resident() - before;
      expect(held, `memory the ${MANY} connections hold`).to.be.at.most(MANY * IDLE_BYTES);
      process.stderr.write(
        `      ${MANY} connections in ${String(opened.ms)} ms; ${(held / 1048576).toFixed(1)} MiB more resident (${Math.round(held / MANY)} B each), ` +
          `${(domain.region.resident() / 1048576).toFixed(1)} MiB of the ${(domain.geo.size / 1073741824).toFixed(0)} GiB region in all\n`,
      );
      client.send({ cmd: 'close' });
      await client.event('closed', 120000);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe(`${RING} processes in a ring`, function () {
  this.timeout(LONG ? 3600000 : 300000);

  let dir = '';
  afterEach(async () => {
    await killAll();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every process listens and connects to the next: every connection over shared memory, content intact, few fds each', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-ring-'));
    fs.chmodSync(dir, 0o700);
    const env = { ZIVM_DIR: dir };
    const members: Proc[] = [];
    const ports: number[] = [];
    // Started a few at a time: a 2-core machine starts Node processes at a few dozen a second.
    // A long run stops where the next batch would leave less than RESERVE of memory.
    let rss = 0;
    for (let first = 0; first < RING; first += 20) {
      const count = Math.min(RING, first + 20) - first;
      if (LONG && rss > 0 && memAvailable() - count * rss < RESERVE) break;
      const batch = [];
      for (let k = 0; k < count; k++) batch.push(spawnPeer('ring-member', [], env));
      members.push(...batch);
      for (const member of batch) ports.push((await member.event('listening', Math.max(60000, members.length * 300))).port as number);
      rss = Math.max(rss, ...batch.map((member) => rssOf(member.pid)));
    }
    const ring = members.length;
    if (ring < RING)
      process.stderr.write(
        `      memory allows ${ring} of the ${RING} processes asked for (${(rss / 1048576).toFixed(0)} MiB resident each, ` +
          `${(memAvailable() / 1073741824).toFixed(1)} GiB left)\n`,
      );
    // Every process gets to run on a 2-core machine: the waits grow with their number.
    const wait = Math.max(60000, ring * 300);
    const t0 = Date.now();
    members.forEach((member, k) => member.send({ cmd: 'connect', port: ports[(k + 1) % ring], wait: wait / 2 }));
    const results: Json[] = [];
    for (const member of members) results.push(await member.next((line) => line.event === 'done' || line.event === 'error', wait));
    const ms = Date.now() - t0;
    const errors = results.filter((res) => res.event !== 'done');
    expect(errors, 'errors').to.deep.equal([]);
    const why = results.filter((res) => res.why).map((res) => JSON.stringify(res.why));
    expect(results.filter((res) => res.transport !== 'shm').length, `client ends not over shared memory (${[...new Set(why)].join('; ')})`).to.equal(0);
    expect(results.filter((res) => res.accepted !== 'shm').length, 'server ends not over shared memory').to.equal(0);
    expect(results.filter((res) => !res.ok).length, 'echoes that differ').to.equal(0);
    const fds = results.map((res) => res.fds as number).sort((first, second) => first - second);
    // Node's own fds, the daemon socket, our doorbell, the two peers' doorbells: the same whatever the ring's size.
    expect(fds[fds.length - 1], `fds per process (median ${fds[fds.length >> 1]})`).to.be.below(64);
    process.stderr.write(`      ${ring} processes: ${ring} connections over shared memory in ${ms} ms; fds per process ${fds[0]}..${fds[fds.length - 1]}\n`);
  });
});
