/** native/doorbell.cc: eventfd doorbells and the Poller that waits on them in the event loop. */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addon, Fixture, NATIVE_JS, codeOf, noFdLeft } from './fixture';
import { sleep } from '../../tools/kit/wait';

describe('native addon', () => {
  noFdLeft();

  describe('eventfd doorbell', () => {
    it('notify adds 1 and drain returns the sum, then 0', () => {
      const fd = addon.eventfd();
      try {
        expect(addon.drain(fd)).to.equal(0);
        addon.notify(fd);
        addon.notify(fd);
        addon.notify(fd);
        expect(addon.drain(fd)).to.equal(3);
        expect(addon.drain(fd)).to.equal(0);
      } finally {
        addon.close(fd);
      }
    });

    it('notify on a bad fd throws a Node-style error', () => {
      const err = codeOf(() => addon.notify(1_000_000));
      expect(err.code).to.equal('EBADF');
      expect(err.err.syscall).to.equal('write');
      expect(err.err.errno).to.equal(-9);
    });
  });

  describe('Spinner.wake', () => {
    /** A spinner over a fixture's region (bitmap and polling word in its first page), counting its calls. */
    const spinner = (fx: Fixture, hotUs: number) => {
      const calls: number[] = [];
      const sp = new addon.Spinner(fx.region, 0, 4, 64, () => {
        calls.push(sp.state[1]);
        return false;
      });
      sp.setTimes(50, hotUs);
      return { sp, calls };
    };
    let fx: Fixture;
    beforeEach(() => (fx = new Fixture()));
    afterEach(() => fx.dispose());

    it('calls back on a later turn of the loop, once, with no doorbell and nothing pending', async () => {
      const { sp, calls } = spinner(fx, 0);
      try {
        const turn = sp.state[1];
        expect(sp.wake()).to.equal(true);
        expect(calls, 'not from inside wake()').to.deep.equal([]);
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(calls).to.have.length(1);
        expect(calls[0]).to.be.greaterThan(turn);
        expect(sp.state[2], 'the request is taken').to.equal(0);
      } finally {
        sp.close();
      }
    });

    it('lets the loop block again once the work is done (not spinning: no CPU while idle)', async () => {
      const { sp, calls } = spinner(fx, 0);
      try {
        for (let i = 0; i < 3; i++) {
          sp.wake();
          await new Promise((resolve) => setImmediate(resolve));
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(calls).to.have.length(3);
        const turns = sp.state[1];
        const cpu = process.cpuUsage();
        await new Promise((resolve) => setTimeout(resolve, 300));
        const used = process.cpuUsage(cpu);
        // A loop that kept polling without blocking would turn hundreds of thousands of times.
        expect(sp.state[1] - turns, 'turns of the loop in 300 ms').to.be.below(50);
        expect((used.user + used.system) / 1000, 'CPU ms in 300 ms').to.be.below(100);
      } finally {
        sp.close();
      }
    });

    it('returns false once closed, and nothing is called', async () => {
      const { sp, calls } = spinner(fx, 200);
      sp.close();
      expect(sp.wake()).to.equal(false);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(calls).to.deep.equal([]);
    });
  });

  describe('Poller', () => {
    it('calls back on notify, having drained the eventfd first', async () => {
      const fd = addon.eventfd();
      const seen: number[] = [];
      let left = -1;
      const poller = new addon.Poller(
        fd,
        (status) => {
          seen.push(status);
          left = addon.drain(fd);
        },
        true,
      );
      try {
        expect(poller.hasRef()).to.equal(true);
        addon.notify(fd);
        addon.notify(fd);
        for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(5);
        await sleep(30);
        expect(seen).to.deep.equal([0]);
        expect(left).to.equal(0);
      } finally {
        poller.close();
        addon.close(fd);
      }
    });

    it('without drainEventfd leaves the count to the callback', async () => {
      const fd = addon.eventfd();
      const sums: number[] = [];
      const poller = new addon.Poller(fd, () => sums.push(addon.drain(fd)), false);
      try {
        addon.notify(fd);
        addon.notify(fd);
        for (let i = 0; i < 100 && sums.length === 0; i++) await sleep(5);
        expect(sums).to.deep.equal([2]);
      } finally {
        poller.close();
        addon.close(fd);
      }
    });

    it('runs process.nextTick and promise jobs right after the callback', async () => {
      const fd = addon.eventfd();
      const order: string[] = [];
      let done!: () => void;
      const finished = new Promise<void>((resolve) => (done = resolve));
      const poller = new addon.Poller(
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
        addon.notify(fd);
        await finished;
        expect(order).to.deep.equal(['cb', 'tick', 'micro', 'immediate']);
      } finally {
        poller.close();
        addon.close(fd);
      }
    });

    it('stop() pauses callbacks and start() resumes them', async () => {
      const fd = addon.eventfd();
      let calls = 0;
      const poller = new addon.Poller(fd, () => calls++, true);
      try {
        poller.stop();
        poller.stop();
        addon.notify(fd);
        await sleep(50);
        expect(calls).to.equal(0);
        poller.start();
        for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
        expect(calls).to.equal(1);
      } finally {
        poller.close();
        addon.close(fd);
      }
    });

    it('close() is idempotent; afterwards start() throws ERR_ZIVM_CLOSED and nothing fires', async () => {
      const fd = addon.eventfd();
      let calls = 0;
      const poller = new addon.Poller(fd, () => calls++, true);
      poller.close();
      poller.close();
      expect(poller.hasRef()).to.equal(false);
      expect(codeOf(() => poller.start()).code).to.equal('ERR_ZIVM_CLOSED');
      poller.stop();
      poller.ref();
      poller.unref();
      addon.notify(fd);
      await sleep(30);
      expect(calls).to.equal(0);
      addon.close(fd);
    });

    it('may be closed from inside its own callback', async () => {
      const fd = addon.eventfd();
      let calls = 0;
      const poller: { close(): void } = new addon.Poller(
        fd,
        () => {
          calls++;
          poller.close();
        },
        false, // not drained: a still-open handle would fire again
      );
      addon.notify(fd);
      for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
      await sleep(30);
      expect(calls).to.equal(1);
      addon.close(fd);
    });

    it('ref()/unref()/hasRef() follow the libuv handle', () => {
      const fd = addon.eventfd();
      const poller = new addon.Poller(fd, () => {}, true);
      try {
        expect(poller.hasRef()).to.equal(true);
        poller.unref();
        expect(poller.hasRef()).to.equal(false);
        poller.ref();
        expect(poller.hasRef()).to.equal(true);
      } finally {
        poller.close();
        addon.close(fd);
      }
    });

    it('refuses an fd libuv cannot poll (a regular file)', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const fd = fs.openSync(path.join(dir, 'f'), 'w');
      try {
        const err = codeOf(() => new addon.Poller(fd, () => {}, false));
        expect(err.code).to.equal('EPERM');
        expect(err.err.syscall).to.equal('uv_poll_init');
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
        child.stdout.on('data', (data) => (stdout += data));
        child.stderr.on('data', (data) => (stderr += data));
        let exited = false;
        const timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, waitMs);
        child.on('error', reject);
        // 'close', not 'exit': the output pipes are read to the end and closed by then.
        child.on('close', (status, signal) => {
          exited = signal === null;
          clearTimeout(timer);
          resolve({ exited, status, stdout, stderr });
        });
      });
    }

    const prelude = `const n = require(process.env.NATIVE_JS).native(); const fd = n.eventfd();`;

    it('an unref()ed poller does not keep the process alive', async () => {
      const res = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.unref(); console.log('armed');`, 10000);
      expect(res.stderr).to.equal('');
      expect(res.stdout).to.equal('armed\n');
      expect(res.exited).to.equal(true);
      expect(res.status).to.equal(0);
    });

    it('a ref()ed poller keeps the process alive', async () => {
      const started = Date.now();
      const res = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); console.log('armed');`, 1000);
      expect(res.stdout).to.equal('armed\n');
      expect(res.exited).to.equal(false); // killed by us
      expect(Date.now() - started).to.be.at.least(900);
    });

    it('a closed poller lets the process exit', async () => {
      const res = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.close();`, 10000);
      expect(res.exited).to.equal(true);
      expect(res.status).to.equal(0);
    });

    it('an exception thrown by the callback becomes an uncaughtException', async () => {
      const res = await runChild(
        `${prelude} process.on('uncaughtException', (e) => { console.log('caught ' + e.message); p.close(); });
         const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`,
        10000,
      );
      expect(res.stdout).to.equal('caught boom\n');
      expect(res.exited).to.equal(true);
      expect(res.status).to.equal(0);
    });

    it('an unhandled exception from the callback ends the process like any callback error', async () => {
      const res = await runChild(`${prelude} const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`, 10000);
      expect(res.exited).to.equal(true);
      expect(res.status).to.equal(1);
      expect(res.stderr).to.contain('boom');
    });
  });
});
