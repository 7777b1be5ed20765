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

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const p = spawn(process.execPath, [RUN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
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
    const r = await run(['--quick', '--trials', '1', '--cases', 'ping-pong,connect', '--out', out]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/^ping-pong: /m);
    expect(r.stderr).to.match(/^connect: /m);

    const files = fs.readdirSync(out);
    const json = files.find((f) => f.endsWith('.json'));
    expect(json, files.join(', ')).to.be.a('string');
    expect(files).to.include(json!.replace(/\.json$/, '.svg'));
    const svg = fs.readFileSync(path.join(out, json!.replace(/\.json$/, '.svg')), 'utf8');
    expect(svg).to.match(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);

    const res = JSON.parse(fs.readFileSync(path.join(out, json!), 'utf8')) as Any;
    expect(res.errors).to.deep.equal([]);
    expect(res.machine.cores).to.be.above(0);
    expect(res.machine.cpu).to.be.a('string').and.not.equal('');
    expect(res.machine.node).to.equal(process.version);
    expect(res.cases.map((c: Any) => c.name)).to.deep.equal(['ping-pong', 'connect']);
    for (const c of res.cases) {
      for (const m of c.metrics) {
        for (const t of TRANSPORTS) {
          expect(m.results[t], `${c.name} ${m.key} ${t}`).to.be.an('object');
          expect(m.results[t].n).to.equal(1);
          expect(m.results[t].median).to.be.above(0);
        }
        expect(m.ratios.shmOverTcp).to.be.above(0);
        expect(m.ratios.shmOverUnix).to.be.above(0);
      }
      expect(c.trials).to.have.length(TRANSPORTS.length);
      for (const trial of c.trials) {
        expect(trial.ok, `${c.name} ${trial.transport}: ${trial.error}`).to.equal(true);
        const want = EXPECTED[trial.transport];
        for (const side of ['client', 'server']) {
          const seen = trial.seen[side] as Record<string, number>;
          expect(Object.keys(seen), `${c.name} ${trial.transport} ${side}`).to.deep.equal([want]);
          expect(seen[want]).to.be.above(0);
        }
      }
      // zivm's own account of the shared-memory trial agrees.
      const shm = c.trials.find((x: Any) => x.transport === 'zivm-shm');
      expect(shm.detail.zivm.connections.shm).to.be.above(0);
      expect(shm.detail.zivm.connections.tcp).to.equal(0);
      const fb = c.trials.find((x: Any) => x.transport === 'zivm-tcp');
      expect(fb.detail.zivm.connections.shm).to.equal(0);
      expect(fb.detail.zivm.connections.tcp).to.be.above(0);
    }
    expect(r.stdout).to.match(/zivm shm/);
  });

  it('rejects an unknown case with usage status 2', async () => {
    const r = await run(['--cases', 'nope', '--no-write']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/unknown case nope/);
  });
});
