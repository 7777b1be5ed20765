/**
 * A raw node:net pair under the preload hook: 64 MiB client -> server with
 * sha256 checked, the client's half-close while the server still writes and
 * then ends, and pause/resume on both sides; loopback counters small with the
 * hook, large with ZIVM=off.
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { report, quietest, MiB } from './harness';
import { rawScenario } from './rawnet';

const TOTAL = 64 * MiB;
const BACK = 8 * MiB;

describe('preload: raw node:net with half-close and pause/resume', function () {
  this.timeout(90000);
  afterEach(killAll);

  it('moves 64 MiB intact, then the server writes after the client ended and ends too', async () => {
    const hooked = await quietest(
      () => rawScenario('require', 'require', TOTAL, BACK),
      () => MiB,
    );
    expect(hooked.clientTransport).to.equal('shm');
    expect(hooked.serverTransport).to.equal('shm');
    const off = await rawScenario('off', 'off', TOTAL, BACK);
    expect(off.clientTransport).to.equal(null);
    expect(off.serverTransport).to.equal(null);
    report('raw net 64 MiB', hooked.lo, off.lo);
    expect(hooked.lo, `loopback bytes with the hook (runs: ${hooked.runs.join(',')})`).to.be.below(MiB);
    expect(off.lo, 'loopback bytes with ZIVM=off').to.be.above(TOTAL + BACK);
  });
});
