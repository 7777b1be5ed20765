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

const RING = Number(process.env.ZIVM_TEST_RING ?? 200);

describe(`${RING} processes in a ring`, function () {
  this.timeout(300000);

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
    for (let first = 0; first < RING; first += 20) {
      const batch = [];
      for (let k = first; k < Math.min(RING, first + 20); k++) batch.push(spawnPeer('ring-member', [], env));
      members.push(...batch);
      for (const member of batch) ports.push((await member.event('listening', 60000)).port as number);
    }
    const t0 = Date.now();
    members.forEach((member, k) => member.send({ cmd: 'connect', port: ports[(k + 1) % RING] }));
    const results: Json[] = [];
    for (const member of members) results.push(await member.next((line) => line.event === 'done' || line.event === 'error', 60000));
    const ms = Date.now() - t0;
    const errors = results.filter((res) => res.event !== 'done');
    expect(errors, 'errors').to.deep.equal([]);
    expect(results.filter((res) => res.transport !== 'shm').length, 'client ends not over shared memory').to.equal(0);
    expect(results.filter((res) => res.accepted !== 'shm').length, 'server ends not over shared memory').to.equal(0);
    expect(results.filter((res) => !res.ok).length, 'echoes that differ').to.equal(0);
    const fds = results.map((res) => res.fds as number).sort((first, second) => first - second);
    // Node's own fds, the daemon socket, our doorbell, the two peers' doorbells: the same whatever the ring's size.
    expect(fds[fds.length - 1], `fds per process (median ${fds[fds.length >> 1]})`).to.be.below(64);
    process.stderr.write(`      ${RING} processes: ${RING} connections over shared memory in ${ms} ms; fds per process ${fds[0]}..${fds[fds.length - 1]}\n`);
  });
});
