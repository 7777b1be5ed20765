/**
 * Only one side preloaded: a preloaded server with a plain client, and a plain
 * server with a preloaded client. Both work, content checked, and the bytes
 * go over TCP (the loopback counters grow by at least the volume).
 */
import { expect } from 'chai';
import { killAll } from '../../tools/kit/proc';
import { MiB } from './harness';
import { rawScenario } from './rawnet';

const TOTAL = 16 * MiB;
const BACK = 4 * MiB;

describe('preload: one side preloaded, the other plain', function () {
  this.timeout(90000);
  afterEach(killAll);

  it('preloaded server + plain client, and plain server + preloaded client, both over TCP', async () => {
    const first = await rawScenario('require', 'plain', TOTAL, BACK);
    const second = await rawScenario('plain', 'require', TOTAL, BACK);
    console.log(`      mixed: lo +${first.lo} bytes with the hook on the server only, +${second.lo} with the hook on the client only`);
    expect(first.lo, 'loopback bytes, hooked server + plain client').to.be.above(TOTAL + BACK);
    expect(second.lo, 'loopback bytes, plain server + hooked client').to.be.above(TOTAL + BACK);
    // The plain side has no zivm (no transport property); the hooked side says 'tcp'.
    expect(first.clientTransport, 'plain client').to.equal(null);
    expect(second.serverTransport, 'plain server').to.equal(null);
    expect(second.clientTransport, 'hooked client').to.equal('tcp');
    expect(first.serverTransport, 'hooked server, connection accepted over TCP').to.equal('tcp');
  });
});
