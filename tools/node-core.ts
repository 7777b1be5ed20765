/**
 * Node's own tests of node:net, node:http, node:http2 and node:https
 * (test/parallel/test-{net,http,http2,https}-*.js of a Node.js source
 * release) run unmodified twice: with plain Node, and under the preload hook
 * (`--require zivm/register`, the package's bundled hook) with a zivm daemon
 * of their own, so that every connection two sockets of a test make between
 * themselves goes over shared memory. A test that passes plainly and fails
 * under the hook, every time of three, is a difference from node:net, and
 * fails this run.
 *
 *   npm run test:node-core -- [--node LINE|BINDIR] [--groups net,http,http2,https] [--jobs 2] [--timeout 60] [--only NAME,...]
 *
 * The tests come from Debian's source package of Node.js (`apt-get source
 * --download-only nodejs`, from a private apt state: the machine's own apt
 * setup is not touched), unpacked once into ZIVM_NODE_CORE_DIR (default
 * ${XDG_CACHE_HOME:-~/.cache}/zivm-node-core). `--node 24` runs them on the
 * newest Node 24 (tools/node-lines.sh); the default is the running node.
 * Tests of a newer or older line than the suite's may fail plainly: those
 * are counted, not judged.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const REGISTER = path.join(ROOT, 'dist', 'src', 'bundle', 'register.js');
const BUNDLE = path.join(ROOT, 'dist', 'src', 'bundle', 'zivm.js');
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

/**
 * Tests that look at what zivm changes on purpose, not at what node:net
 * does: they are run, and reported, but not judged.
 */
const INTERNALS: Record<string, string> = {
  'test-net-persistent-nodelay': "counts calls of the kernel handle class's setNoDelay (internal tcp_wrap binding); a shared-memory handle is another class",
  'test-http-parser-timeout-reset':
    "hands socket._handle to the internal http_parser binding while the socket is still connecting, before zivm's choice of transport",
};

interface Options {
  nodeBin: string;
  groups: string[];
  jobs: number;
  timeout: number;
  only: string[];
  dir: string;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    nodeBin: path.dirname(process.execPath),
    groups: ['net', 'http', 'http2', 'https'],
    jobs: 2,
    timeout: 60,
    only: [],
    dir: process.env.ZIVM_NODE_CORE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'zivm-node-core'),
  };
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${argv[i - 1]} needs a value`);
      return next;
    };
    switch (argv[i]) {
      case '--node': {
        const node = value();
        opts.nodeBin = /^\d+$/.test(node)
          ? execFileSync('bash', [path.join(ROOT, 'tools', 'node-lines.sh'), 'bin', node], { encoding: 'utf8' }).trim()
          : path.resolve(node);
        break;
      }
      case '--groups':
        opts.groups = value().split(',').filter(Boolean);
        break;
      case '--jobs':
        opts.jobs = Math.max(1, Number(value()) || 1);
        break;
      case '--timeout':
        opts.timeout = Math.max(1, Number(value()) || 60);
        break;
      case '--only':
        opts.only = value().split(',').filter(Boolean);
        break;
      default:
        throw new Error(`unknown option ${argv[i]} (see the head of tools/node-core.ts)`);
    }
  }
  return opts;
}

/** Node's test tree (test/common, test/fixtures, test/parallel), fetched and unpacked if missing. */
function suite(dir: string): string {
  const tree = path.join(dir, 'suite');
  if (fs.existsSync(path.join(tree, 'test', 'common', 'index.js'))) return tree;
  const apt = path.join(dir, 'apt');
  for (const sub of ['lists/partial', 'archives/partial', 'src']) fs.mkdirSync(path.join(apt, sub), { recursive: true });
  fs.writeFileSync(
    path.join(apt, 'sources.list'),
    ['debian bookworm', 'debian-security bookworm-security', 'debian sid', 'debian experimental']
      .map((dist) => `deb-src http://deb.debian.org/${dist} main\n`)
      .join(''),
  );
  const aptOpts = [
    `-o`,
    `Dir::Etc::SourceList=${path.join(apt, 'sources.list')}`,
    `-o`,
    `Dir::Etc::SourceParts=-`,
    `-o`,
    `Dir::State::Lists=${path.join(apt, 'lists')}`,
    `-o`,
    `Dir::Cache::Archives=${path.join(apt, 'archives')}`,
  ];
  console.log(`node-core: fetching Node.js's source package into ${apt}`);
  execFileSync('apt-get', [...aptOpts, '-qq', 'update'], { stdio: 'inherit' });
  // The newest version of Node 20 or newer whose upstream tarball the mirror has (a version may be listed
  // before its files arrive, and the tarball is all that is needed: the packaging's files may be missing).
  const versions = execFileSync('apt-cache', [...aptOpts, 'showsrc', 'nodejs'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.startsWith('Version: '))
    .map((line) => line.slice('Version: '.length).trim())
    .filter((version) => Number(version.split('.')[0]) >= 20)
    .sort((one, other) => (spawnSync('dpkg', ['--compare-versions', one, 'gt', other]).status === 0 ? -1 : 1));
  const upstream = (version: string): string | undefined => {
    const stem = `nodejs_${version.replace(/^\d+:/, '').replace(/-[^-]*$/, '')}.orig.tar.`;
    return fs.readdirSync(path.join(apt, 'src')).find((name) => name.startsWith(stem) && /\.(xz|gz)$/.test(name));
  };
  let tarball: string | undefined;
  for (const version of versions) {
    spawnSync('apt-get', [...aptOpts, '-qq', 'source', '--download-only', `nodejs=${version}`], { stdio: 'inherit', cwd: path.join(apt, 'src') });
    tarball = upstream(version);
    if (tarball) break;
    console.log(`node-core: the mirror has no tarball of nodejs ${version}, trying an older one`);
  }
  if (!tarball) throw new Error(`no source of Node.js 20 or newer could be fetched (versions listed: ${versions.join(', ') || 'none'})`);
  const staging = `${tree}.partial`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  const wanted = [
    '*/test/common/*',
    '*/test/fixtures/*',
    '*/test/parallel/test-net-*',
    '*/test/parallel/test-http-*',
    '*/test/parallel/test-http2-*',
    '*/test/parallel/test-https-*',
  ];
  execFileSync('tar', ['-xf', path.join(apt, 'src', tarball), '-C', staging, '--strip-components=1', '--wildcards', ...wanted], { stdio: 'inherit' });
  if (!fs.existsSync(path.join(staging, 'test', 'common', 'index.js'))) throw new Error(`${tarball} has no test/common/index.js`);
  fs.writeFileSync(path.join(staging, 'SOURCE'), `${tarball}\n`);
  fs.renameSync(staging, tree);
  return tree;
}

type Mode = 'plain' | 'zivm';

interface Outcome {
  name: string;
  code: number | null;
  signal: string | null;
  seconds: number;
  stderr: string;
}

/** Runs one test file as Node's test runner would: its `// Flags:` line honoured, a tmp dir of its own. */
function runOne(tree: string, file: string, env: NodeJS.ProcessEnv, opts: Options, tag: string): Promise<Outcome> {
  const name = path.basename(file).replace(/\.m?js$/, '');
  const flagsLine = /^\/\/ Flags:(.*)$/m.exec(fs.readFileSync(file, 'utf8'));
  const flags = flagsLine ? flagsLine[1].trim().split(/\s+/).filter(Boolean) : [];
  const serial = `${name}.${tag}`;
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    const child: ChildProcess = spawn(path.join(opts.nodeBin, 'node'), [...flags, file], {
      cwd: tree,
      env: { ...env, TEST_SERIAL_ID: serial },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      if (stderr.length < 16384) stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeout * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      fs.rmSync(path.join(tree, 'test', `.tmp.${serial}`), { recursive: true, force: true });
      resolve({ name, code, signal, seconds: Number(process.hrtime.bigint() - start) / 1e9, stderr });
    });
  });
}

/** Runs `files` `jobs` at a time. */
async function runAll(tree: string, files: string[], env: NodeJS.ProcessEnv, opts: Options, tag: string): Promise<Map<string, Outcome>> {
  const results = new Map<string, Outcome>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const file = files[next++];
      const res = await runOne(tree, file, env, opts, tag);
      results.set(res.name, res);
    }
  };
  await Promise.all(Array.from({ length: opts.jobs }, worker));
  return results;
}

const passed = (res: Outcome | undefined): boolean => res !== undefined && res.code === 0;

/**
 * A second preload beside the hook: at exit, each process under the hook
 * notes how many connections it made over shared memory (zivm.stats()), so
 * that a run in which nothing used shared memory cannot pass.
 */
function counterScript(work: string): { script: string; log: string } {
  const script = path.join(work, 'count-shm.js');
  const log = path.join(work, 'shm.log');
  fs.writeFileSync(
    script,
    `'use strict';
const fs = require('fs');
const zivm = require(${JSON.stringify(BUNDLE)});
process.on('exit', () => {
  try {
    const made = zivm.stats().connections.shm;
    if (made > 0) fs.appendFileSync(${JSON.stringify(log)}, \`\${process.env.TEST_SERIAL_ID} \${made}\\n\`);
  } catch {}
});
`,
  );
  return { script, log };
}

/** The environment of a mode: plain (no hook), or the hook (and the counter) with a daemon of its own (started here). */
function environment(mode: Mode, socket: string, counter?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of ['NODE_OPTIONS', 'ZIVM', 'ZIVM_DIR', 'ZIVM_SOCKET', 'ZIVM_AUTOSTART', 'NODE_DEBUG']) delete env[key];
  if (mode === 'zivm') {
    env.NODE_OPTIONS = `--require ${JSON.stringify(REGISTER)}${counter ? ` --require ${JSON.stringify(counter)}` : ''}`;
    env.ZIVM_SOCKET = socket;
    env.ZIVM_AUTOSTART = '0';
  }
  return env;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(REGISTER)) throw new Error(`${REGISTER} is missing: npm run build first`);
  const tree = suite(opts.dir);
  const parallel = path.join(tree, 'test', 'parallel');
  const pattern = new RegExp(`^test-(${opts.groups.join('|')})-.*\\.m?js$`);
  let files = fs
    .readdirSync(parallel)
    .filter((name) => pattern.test(name))
    .sort()
    .map((name) => path.join(parallel, name));
  if (opts.only.length > 0) files = files.filter((file) => opts.only.includes(path.basename(file).replace(/\.m?js$/, '')));
  const nodeVersion = spawnSync(path.join(opts.nodeBin, 'node'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  console.log(
    `node-core: ${files.length} tests (${opts.groups.join(', ')}) of ${fs.readFileSync(path.join(tree, 'SOURCE'), 'utf8').trim()}, on node ${nodeVersion}, ${opts.jobs} at a time`,
  );

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-node-core-'));
  const socket = path.join(work, 'zivm.sock');
  const daemon = spawn(path.join(opts.nodeBin, 'node'), [CLI, 'server', '--socket', socket], { stdio: 'ignore', env: environment('plain', socket) });
  try {
    for (let i = 0; i < 100 && !fs.existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    if (!fs.existsSync(socket)) throw new Error('the zivm daemon did not start');
    const plain = await runAll(tree, files, environment('plain', socket), opts, 'plain');
    const counter = counterScript(work);
    const zivm = await runAll(tree, files, environment('zivm', socket, counter.script), opts, 'zivm');
    const overShm = new Set(
      (fs.existsSync(counter.log) ? fs.readFileSync(counter.log, 'utf8') : '')
        .split('\n')
        .filter(Boolean)
        // `<name>.<tag> <count>`: test names have dots of their own (test-http-1.0), the tag has none.
        .map((line) => line.slice(0, line.lastIndexOf('.', line.indexOf(' ')))),
    );
    // A difference is looked at twice more in each mode: a test that fails only sometimes is not one.
    const suspects = files.filter((file) => {
      const name = path.basename(file).replace(/\.m?js$/, '');
      return passed(plain.get(name)) && !passed(zivm.get(name));
    });
    const differences: Outcome[] = [];
    const flaky: string[] = [];
    const internals: string[] = [];
    for (const file of suspects) {
      const name = path.basename(file).replace(/\.m?js$/, '');
      if (INTERNALS[name]) {
        internals.push(name);
        continue;
      }
      const again = [
        await runOne(tree, file, environment('plain', socket), opts, 'plain2'),
        await runOne(tree, file, environment('zivm', socket), opts, 'zivm2'),
        await runOne(tree, file, environment('plain', socket), opts, 'plain3'),
        await runOne(tree, file, environment('zivm', socket), opts, 'zivm3'),
      ];
      if (passed(again[0]) && passed(again[2]) && !passed(again[1]) && !passed(again[3])) differences.push(again[3]);
      else flaky.push(name);
    }
    const plainPasses = files.filter((file) => passed(plain.get(path.basename(file).replace(/\.m?js$/, '')))).length;
    const zivmPasses = files.filter((file) => passed(zivm.get(path.basename(file).replace(/\.m?js$/, '')))).length;
    console.log(`node-core: plain node passed ${plainPasses} of ${files.length}; under the zivm hook ${zivmPasses}`);
    const groups = opts.groups.map((group) => {
      const mine = files.map((file) => path.basename(file).replace(/\.m?js$/, '')).filter((name) => name.startsWith(`test-${group}-`));
      return `${group} ${mine.filter((name) => overShm.has(name)).length} of ${mine.length}`;
    });
    console.log(`node-core: tests with a connection over shared memory under the hook: ${groups.join(', ')}`);
    if (overShm.size === 0) {
      console.log('node-core: NO test made a connection over shared memory: the hook or the daemon is not working');
      process.exitCode = 1;
    }
    for (const name of internals) console.log(`  not judged: ${name}: ${INTERNALS[name]}`);
    for (const name of flaky) console.log(`  failed once under the hook, not again (or failed plainly too when run again): ${name}`);
    for (const res of differences) {
      console.log(`  FAILS ONLY UNDER THE HOOK: ${res.name} (exit ${res.code ?? res.signal}, ${res.seconds.toFixed(1)} s)`);
      console.log(
        res.stderr
          .split('\n')
          .slice(0, 20)
          .map((line) => `      ${line}`)
          .join('\n'),
      );
    }
    fs.writeFileSync(
      path.join(opts.dir, `results-${nodeVersion}.json`),
      JSON.stringify(
        {
          node: nodeVersion,
          files: files.length,
          plainPasses,
          zivmPasses,
          overShm: overShm.size,
          internals,
          flaky,
          differences: differences.map((res) => res.name),
        },
        null,
        1,
      ),
    );
    if (differences.length > 0) process.exitCode = 1;
    else if (overShm.size > 0) console.log('node-core: every test that passes on plain node passes under the zivm hook');
  } finally {
    daemon.kill();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`node-core: ${(err as Error).message}`);
  process.exit(2);
});
