/**
 * ref()/unref() decide whether a process stays alive: checked in child
 * processes that run the compiled implementation (`node -e`).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { forEachImpl, Impl } from './impl';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const live = new Set<ReturnType<typeof spawn>>();

afterEach(function () {
  for (const proc of live) proc.kill('SIGKILL');
  live.clear();
});

/** Runs `body` in `node -e` with `net` bound to the implementation; kills it after `killAfterMs`. */
function run(impl: Impl, body: string, killAfterMs = 8000): Promise<Run> {
  const src = `'use strict';\nconst net = require(${JSON.stringify(impl.requireId)});\n${body}`;
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['-e', src], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (data) => (stdout += data));
    proc.stderr.on('data', (data) => (stderr += data));
    const killer = setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(killer);
      live.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Child: a server and a connected client; `then` runs once both ends are connected. */
const connected = (then: string): string => `
const server = net.createServer((peer) => {
  globalThis.peer = peer;
  if (globalThis.client && globalThis.client.readyState === 'open') ready();
});
let done = false;
function ready() {
  if (done) return;
  done = true;
  const client = globalThis.client, peer = globalThis.peer;
  if ('transport' in client) console.log('transport', client.transport, peer.transport);
  ${then}
}
server.listen(0, '127.0.0.1', () => {
  console.log('listening');
  globalThis.client = net.connect(server.address().port, '127.0.0.1', () => {
    console.log('connected');
    if (globalThis.peer) ready();
  });
});
`;

forEachImpl((impl) => {
  describe('Socket#ref() / #unref()', function () {
    this.timeout(15000);

    it('a process whose connected sockets and server are unref()d exits by itself', async function () {
      const res = await run(
        impl,
        connected(`
  client.unref(); peer.unref(); server.unref();
  console.log('unrefd');
  process.on('exit', () => console.log('exiting'));
`),
      );
      expect(res.signal, `stdout: ${res.stdout}\nstderr: ${res.stderr}`).to.equal(null);
      expect(res.code, res.stderr).to.equal(0);
      expect(res.stdout).to.include('unrefd\nexiting');
      if (impl.isZivm) expect(res.stdout).to.include('transport shm shm');
    });

    it('ref() after unref() keeps the process alive again', async function () {
      const res = await run(
        impl,
        connected(`
  client.unref(); peer.unref(); server.unref();
  client.ref();
  // Only a referenced handle lets this unref()d timer fire.
  setTimeout(() => {
    console.log('still alive');
    client.destroy(); peer.destroy(); server.close();
  }, 200).unref();
`),
      );
      expect(res.signal, `stdout: ${res.stdout}\nstderr: ${res.stderr}`).to.equal(null);
      expect(res.code, res.stderr).to.equal(0);
      expect(res.stdout).to.include('still alive');
      if (impl.isZivm) expect(res.stdout).to.include('transport shm shm');
    });

    it('a process that stops in the middle of traffic and exits does not keep the next one from connecting', async function () {
      const busy = await run(
        impl,
        connected(`
  let n = 0;
  peer.on('data', (d) => peer.write(d));
  client.on('data', () => {
    if (++n === 200) {
      // Stop right in the traffic: nothing keeps the process alive any more.
      client.unref(); peer.unref(); server.unref();
      return;
    }
    client.write('ping');
  });
  client.write('ping');
`),
      );
      expect(busy.code, busy.stderr).to.equal(0);
      const next = await run(
        impl,
        connected(`
  const got = [];
  client.on('data', (d) => got.push(String(d)));
  client.on('end', () => {
    console.log('got', got.join(''));
    server.close();
  });
  peer.end('hello');
`),
      );
      expect(next.signal, `stdout: ${next.stdout}\nstderr: ${next.stderr}`).to.equal(null);
      expect(next.code, next.stderr).to.equal(0);
      expect(next.stdout).to.include('got hello');
      if (impl.isZivm) expect(next.stdout).to.include('transport shm shm');
    });

    it('an unref()d listening server alone lets the process exit', async function () {
      const res = await run(
        impl,
        `
const server = net.createServer();
server.listen(0, '127.0.0.1', () => {
  server.unref();
  console.log('listening');
});
`,
      );
      expect(res.signal, `stdout: ${res.stdout}\nstderr: ${res.stderr}`).to.equal(null);
      expect(res.code, res.stderr).to.equal(0);
      expect(res.stdout).to.equal('listening\n');
    });
  });
});
