/**
 * A peer that floods: the reading side does a bounded amount of work per turn
 * of its event loop, and the rest waits for the next turn, so that timers,
 * immediates and other sockets get their turn however fast the peer writes.
 */
import { expect } from 'chai';
import type net from 'node:net';
import * as zivm from '../../src';
import { killAll } from '../../tools/kit/proc';
import { spawnPeer } from '../helpers/proc';

describe('a flooding peer', function () {
  this.timeout(30000);
  afterEach(killAll);

  it("gets at most 64 reads of the reader's per turn of its event loop; timers still run", async () => {
    const server = zivm.createServer();
    let sock: net.Socket | undefined;
    // Closed whatever the outcome: a server left listening would keep mocha's process alive.
    try {
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const flood = spawnPeer('peer', ['flood', 'zivm', String((server.address() as net.AddressInfo).port), '127.0.0.1']);
      expect((await flood.event('connect')).transport).to.equal('shm');
      const peer = await accepted;
      sock = peer;
      expect((peer as zivm.Socket).transport).to.equal('shm');

      // Reads between two turns of the loop (a check phase each), and the longest gap of a 5 ms timer.
      let reads = 0;
      let bytes = 0;
      let most = 0;
      let turns = 0;
      peer.on('data', (chunk: Buffer) => {
        reads++;
        bytes += chunk.length;
      });
      let stop = false;
      const turn = (): void => {
        most = Math.max(most, reads);
        reads = 0;
        turns++;
        if (!stop) setImmediate(turn);
      };
      setImmediate(turn);
      let last = Date.now();
      let gap = 0;
      const timer = setInterval(() => {
        const now = Date.now();
        gap = Math.max(gap, now - last);
        last = now;
      }, 5);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      stop = true;
      clearInterval(timer);
      console.log(`        ${(bytes / 1048576).toFixed(0)} MiB in 1.5 s over ${turns} turns; most reads in one turn: ${most}; longest timer gap: ${gap} ms`);
      expect(bytes, 'bytes read').to.be.above(64 * 1048576);
      expect(most, 'reads in one turn of the loop').to.be.at.most(64);
    } finally {
      sock?.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
