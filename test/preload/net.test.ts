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
    const word = await quietest(() => rawScenario('require', 'require', TOTAL, BACK), () => MiB);
    expect(word.clientTransport).to.equal('shm');
    expect(word.serverTransport).to.equal('shm');
    const out = await rawScenario('off', 'off', TOTAL, BACK);
    expect(out.clientTransport).to.equal(null);
    expect(out.serverTransport).to.equal(null);
    report('raw net 64 MiB', word.lo, out.lo);
    expect(word.lo, `loopback bytes with the hook (runs: ${word.runs})`).to.be.below(MiB);
    expect(out.lo, 'loopback bytes with ZIVM=off').to.be.above(TOTAL + BACK);
  });
});
