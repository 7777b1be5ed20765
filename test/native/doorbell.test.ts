/** native/doorbell.cc: eventfd doorbells and the Poller that waits on them in the event loop. */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { n, NATIVE_JS, codeOf, noFdLeft } from './fixture';
import { sleep } from '../../tools/kit/wait';

describe('native addon', () => {
  noFdLeft();

  describe('eventfd doorbell', () => {
    it('notify adds 1 and drain returns the sum, then 0', () => {
      const fd = n.eventfd();
      try {
        expect(n.drain(fd)).to.equal(0);
        n.notify(fd);
        n.notify(fd);
        n.notify(fd);
        expect(n.drain(fd)).to.equal(3);
        expect(n.drain(fd)).to.equal(0);
      } finally {
        n.close(fd);
      }
    });

    it('notify on a bad fd throws a Node-style error', () => {
      const e = codeOf(() => n.notify(1_000_000));
      expect(e.code).to.equal('EBADF');
      expect(e.err.syscall).to.equal('write');
      expect(e.err.errno).to.equal(-9);
    });
  });

  describe('Poller', () => {
    it('calls back on notify, having drained the eventfd first', async () => {
      const fd = n.eventfd();
      const seen: number[] = [];
      let left = -1;
      const poller = new n.Poller(
        fd,
        (status) => {
          seen.push(status);
          left = n.drain(fd);
        },
        true,
      );
      try {
        expect(poller.hasRef()).to.equal(true);
        n.notify(fd);
        n.notify(fd);
        for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(5);
        await sleep(30);
        expect(seen).to.deep.equal([0]);
        expect(left).to.equal(0);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('without drainEventfd leaves the count to the callback', async () => {
      const fd = n.eventfd();
      const sums: number[] = [];
      const poller = new n.Poller(fd, () => sums.push(n.drain(fd)), false);
      try {
        n.notify(fd);
        n.notify(fd);
        for (let i = 0; i < 100 && sums.length === 0; i++) await sleep(5);
        expect(sums).to.deep.equal([2]);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('runs process.nextTick and promise jobs right after the callback', async () => {
      const fd = n.eventfd();
      const order: string[] = [];
      let done!: () => void;
      const finished = new Promise<void>((r) => (done = r));
      const poller = new n.Poller(
        fd,
        () => {
          order.push('cb');
          setImmediate(() => {
            order.push('immediate');
            done();
          });
          process.nextTick(() => order.push('tick'));
          void Promise.resolve().then(() => order.push('micro'));
        },
        true,
      );
      try {
        n.notify(fd);
        await finished;
        expect(order).to.deep.equal(['cb', 'tick', 'micro', 'immediate']);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('stop() pauses callbacks and start() resumes them', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller = new n.Poller(fd, () => calls++, true);
      try {
        poller.stop();
        poller.stop();
        n.notify(fd);
        await sleep(50);
        expect(calls).to.equal(0);
        poller.start();
        for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
        expect(calls).to.equal(1);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('close() is idempotent; afterwards start() throws ERR_ZIVM_CLOSED and nothing fires', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller = new n.Poller(fd, () => calls++, true);
      poller.close();
      poller.close();
      expect(poller.hasRef()).to.equal(false);
      expect(codeOf(() => poller.start()).code).to.equal('ERR_ZIVM_CLOSED');
      poller.stop();
      poller.ref();
      poller.unref();
      n.notify(fd);
      await sleep(30);
      expect(calls).to.equal(0);
      n.close(fd);
    });

    it('may be closed from inside its own callback', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller: { close(): void } = new n.Poller(
        fd,
        () => {
          calls++;
          poller.close();
        },
        false, // not drained: a still-open handle would fire again
      );
      n.notify(fd);
      for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
      await sleep(30);
      expect(calls).to.equal(1);
      n.close(fd);
    });

    it('ref()/unref()/hasRef() follow the libuv handle', () => {
      const fd = n.eventfd();
      const poller = new n.Poller(fd, () => {}, true);
      try {
        expect(poller.hasRef()).to.equal(true);
        poller.unref();
        expect(poller.hasRef()).to.equal(false);
        poller.ref();
        expect(poller.hasRef()).to.equal(true);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('refuses an fd libuv cannot poll (a regular file)', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const fd = fs.openSync(path.join(dir, 'f'), 'w');
      try {
        const e = codeOf(() => new n.Poller(fd, () => {}, false));
        expect(e.code).to.equal('EPERM');
        expect(e.err.syscall).to.equal('uv_poll_init');
      } finally {
        fs.closeSync(fd);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    function runChild(code: string, waitMs: number): Promise<{ exited: boolean; status: number | null; stdout: string; stderr: string }> {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, NATIVE_JS }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        let exited = false;
        const timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, waitMs);
        child.on('error', reject);
        child.on('exit', (status, signal) => {
          exited = signal === null;
          clearTimeout(timer);
          resolve({ exited, status, stdout, stderr });
        });
      });
    }

    const prelude = `const n = require(process.env.NATIVE_JS).native(); const fd = n.eventfd();`;

    it('an unref()ed poller does not keep the process alive', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.unref(); console.log('armed');`, 10000);
      expect(r.stderr).to.equal('');
      expect(r.stdout).to.equal('armed\n');
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('a ref()ed poller keeps the process alive', async () => {
      const started = Date.now();
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); console.log('armed');`, 1000);
      expect(r.stdout).to.equal('armed\n');
      expect(r.exited).to.equal(false); // killed by us
      expect(Date.now() - started).to.be.at.least(900);
    });

    it('a closed poller lets the process exit', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.close();`, 10000);
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('an exception thrown by the callback becomes an uncaughtException', async () => {
      const r = await runChild(
        `${prelude} process.on('uncaughtException', (e) => { console.log('caught ' + e.message); p.close(); });
         const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`,
        10000,
      );
      expect(r.stdout).to.equal('caught boom\n');
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('an unhandled exception from the callback ends the process like any callback error', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`, 10000);
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(1);
      expect(r.stderr).to.contain('boom');
    });
  });
});
