/**
 * Smoke test of the benchmark driver: a quick run of two cheap cases, one
 * trial each, in a child process; the JSON must have every transport, and
 * the shared-memory trials must really have used shared memory.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const RUN = path.join(__dirname, '..', 'bench', 'run.js');
const TRANSPORTS = ['zivm-shm', 'zivm-tcp', 'net-tcp', 'net-unix'];
const EXPECTED: Record<string, string> = { 'zivm-shm': 'shm', 'zivm-tcp': 'tcp', 'net-tcp': 'tcp', 'net-unix': 'pipe' };

type Any = Record<string, any>;

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; pid: number }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const proc = spawn(process.execPath, [RUN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (data) => (stdout += data));
    proc.stderr.on('data', (data) => (stderr += data));
    proc.on('exit', (code) => resolve({ code, stdout, stderr, pid: proc.pid ?? -1 }));
  });
}

describe('bench driver (smoke)', function () {
  this.timeout(60000);
  let out: string;

  before(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-bench-test-'));
  });
  after(() => {
    fs.rmSync(out, { recursive: true, force: true });
  });

  it('runs ping-pong and connect over all four transports, the zivm trial over shared memory', async () => {
    const res2 = await run(['--quick', '--trials', '1', '--cases', 'ping-pong,connect', '--out', out]);
    expect(res2.code, res2.stderr).to.equal(0);
    expect(res2.stderr).to.match(/^ping-pong: /m);
    expect(res2.stderr).to.match(/^connect: /m);

    const files = fs.readdirSync(out);
    const json = files.find((file) => file.endsWith('.json'));
    expect(json, files.join(', ')).to.be.a('string');
    expect(files).to.include(json!.replace(/\.json$/, '.svg'));
    const svg = fs.readFileSync(path.join(out, json!.replace(/\.json$/, '.svg')), 'utf8');
    expect(svg).to.match(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);

    const res = JSON.parse(fs.readFileSync(path.join(out, json!), 'utf8')) as Any;
    expect(res.errors).to.deep.equal([]);
    expect(res.machine.cores).to.be.above(0);
    expect(res.machine.cpu).to.be.a('string').and.not.equal('');
    expect(res.machine.node).to.equal(process.version);
    expect(res.cases.map((item: Any) => item.name)).to.deep.equal(['ping-pong', 'connect']);
    for (const item of res.cases) {
      for (const msg of item.metrics) {
        for (const text of TRANSPORTS) {
          expect(msg.results[text], `${item.name} ${msg.key} ${text}`).to.be.an('object');
          expect(msg.results[text].n).to.equal(1);
          expect(msg.results[text].median).to.be.above(0);
        }
        expect(msg.ratios.shmOverTcp).to.be.above(0);
        expect(msg.ratios.shmOverUnix).to.be.above(0);
      }
      expect(item.trials).to.have.length(TRANSPORTS.length);
      for (const trial of item.trials) {
        expect(trial.ok, `${item.name} ${trial.transport}: ${trial.error}`).to.equal(true);
        const want = EXPECTED[trial.transport];
        for (const side of ['client', 'server']) {
          const seen = trial.seen[side] as Record<string, number>;
          expect(Object.keys(seen), `${item.name} ${trial.transport} ${side}`).to.deep.equal([want]);
          expect(seen[want]).to.be.above(0);
        }
      }
      // zivm's own account of the shared-memory trial agrees.
      const shm = item.trials.find((elem: Any) => elem.transport === 'zivm-shm');
      expect(shm.detail.zivm.connections.shm).to.be.above(0);
      expect(shm.detail.zivm.connections.tcp).to.equal(0);
      const fb = item.trials.find((elem: Any) => elem.transport === 'zivm-tcp');
      expect(fb.detail.zivm.connections.shm).to.equal(0);
      expect(fb.detail.zivm.connections.tcp).to.be.above(0);
    }
    expect(res2.stdout).to.match(/zivm shm/);
  });

  it('runs the pods case (two network namespaces on a bridge), zivm over shared memory and node:net over the veth pairs, and removes the namespaces', async function () {
    if (process.getuid?.() !== 0) throw new Error('the pods case makes network namespaces: run the tests as root');
    const res = await run(['--quick', '--trials', '1', '--cases', 'pods', '--no-write', '--transports', 'zivm-shm,net-tcp']);
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.match(/^pods: 2 trials/m);
    const row = res.stdout.split('\n').find((line) => /64 B round trip p50, pod to pod/.test(line));
    expect(row, res.stdout).to.be.a('string');
    expect(row).to.match(/µs ↓\s+\d/);
    // The run's namespaces are named after its pid (bench/pods.ts).
    const ours = `zb${res.pid % 100000}`;
    const left = (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []).filter((name) => name.startsWith(ours));
    expect(left, 'network namespaces of the run left').to.deep.equal([]);
  });

  it('rejects an unknown case with usage status 2', async () => {
    const res = await run(['--cases', 'nope', '--no-write']);
    expect(res.code).to.equal(2);
    expect(res.stderr).to.match(/unknown case nope/);
  });
});
