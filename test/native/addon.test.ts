/** native/addon.cc: the addon in a worker environment that goes away with regions, rings and pollers open. */
import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { addon, NATIVE_JS, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('environment teardown', () => {
    it('a worker that exits with an open region, ring and poller unmaps and closes them without crashing', async () => {
      const code = `
        const n = require(${JSON.stringify(NATIVE_JS)}).native();
        const fd = n.memfdCreate('w', 65536);
        const r = new n.Region(fd, 65536);
        const ring = new n.Ring(r, 0, 4096, 4096, true);
        ring.write(Buffer.from('x'));
        const e = n.eventfd();
        const p = new n.Poller(e, () => {}, true);
        n.notify(e);
        setTimeout(() => { n.close(fd); n.close(e); process.exit(0); }, 20);`;
      const status = await new Promise<number>((resolve, reject) => {
        const write = new Worker(code, { eval: true });
        write.on('error', reject);
        write.on('exit', resolve);
      });
      expect(status).to.equal(0);
    });

    it('terminating a worker with a ref()ed poller works', async () => {
      const code = `
        const n = require(${JSON.stringify(NATIVE_JS)}).native();
        const e = n.eventfd();
        const p = new n.Poller(e, () => {}, true);
        require('node:worker_threads').parentPort.postMessage(e);`;
      const write = new Worker(code, { eval: true });
      const efd = await new Promise<number>((resolve) => write.once('message', resolve));
      expect(await write.terminate()).to.equal(1);
      addon.close(efd);
    });
  });
});
