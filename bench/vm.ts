/**
 * Guest <-> guest benchmark: `npm run bench:vm` (node dist/bench/vm.js).
 *
 * Boots two QEMU guests (TCG, one vCPU each; tools/vm/qemu.ts) that share a
 * zivm domain (ivshmem-doorbell on one daemon) and a private Ethernet link
 * (virtio-net on a QEMU socket netdev over host loopback), and measures
 * between the same two guests in the same run, trials interleaved:
 *   - zivm over shared memory (transport 'shm' on both ends);
 *   - plain node:net TCP over the virtio-net link (zivm not involved).
 * Per trial and transport: round trips of a small message on a fresh
 * connection (median, p99, min, max), connection set-up (the median of 5
 * connects), and one bulk transfer one way on
 * another (MB/s). Guest A (bench/vm-peer.js `bench`) is the client, guest
 * B (`server`) the server; both report on their consoles. A trial whose
 * sockets are not what they should be (transport on both ends, bytes on eth0
 * or not) is an error and left out.
 *
 * Needs a checkout (it uses tools/vm) and `npx tsc -p .` first. Prints the
 * table on stdout, progress on stderr, and writes JSON (--json PATH; default
 * bench/results/bench-vm-<date>.json in a checkout).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from '../tools/kit/daemon';
import { consoleEvents } from '../tools/vm/harness';
import { PAIR_ADDRS, PREFIX } from '../tools/vm/pair';
import { ensureGuestImage, pairDone, startLinkedPair } from '../tools/vm/qemu';
import { Json, Summary, summarize } from './common';
import { UsageError, fmt, readOptions, sizeLabel, stringOption, summaryCell, textTable, wholeNumber, parseSize } from './format';

/** Repository root (this file runs as dist/bench/vm.js). */
const ROOT = path.resolve(__dirname, '..', '..');
/** The guests' script: bench/vm-peer.ts. */
const PEER = path.join(__dirname, 'vm-peer.js');
const [A_ADDR, B_ADDR] = PAIR_ADDRS;
const target2 = ['shm', 'tcp'] as const;
type Tr = (typeof target2)[number];
const LABEL: Record<Tr, string> = { shm: 'zivm shm', tcp: 'node:net TCP (virtio-net)' };

const USAGE = `usage: npm run bench:vm -- [options]     (or: node dist/bench/vm.js [options])

Two QEMU guests (TCG) in one zivm domain and on one private virtio-net link:
round trips and bulk throughput guest <-> guest, zivm over shared memory
against plain node:net TCP over the link, trials interleaved.

options:
  --trials N     trials per transport (default 5)
  --warmup N     trials before those, not counted (default 3)
  --rounds N     round trips timed per trial (default 2000)
  --msg BYTES    round-trip message size (default 1)
  --bytes SIZE   bulk transfer per trial, e.g. 16M (default 16M)
  --json PATH    where to write the results (default bench/results/bench-vm-<date>.json)
  --no-write     print the table only
  --echo         copy the guests' consoles to stderr
  --help         this text
`;

interface Options {
  trials: number;
  warmup: number;
  rounds: number;
  msg: number;
  bytes: number;
  json?: string;
  echo: boolean;
}

function parseArgs(argv: string[]): Options | 'help' {
  const value = readOptions(argv, {
    trials: { type: 'string' },
    warmup: { type: 'string' },
    rounds: { type: 'string' },
    msg: { type: 'string' },
    bytes: { type: 'string' },
    json: { type: 'string' },
    'no-write': { type: 'boolean' },
    echo: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (value.help) return 'help';
  const int = (name: string, dflt: number, max: number, min = 1): number => {
    const elem = stringOption(value[name]);
    return elem === undefined ? dflt : wholeNumber(elem, name, min, max);
  };
  const bytes = stringOption(value.bytes);
  const json = stringOption(value.json);
  return {
    trials: int('trials', 5, 100),
    warmup: int('warmup', 3, 100, 0),
    rounds: int('rounds', 2000, 100000),
    msg: int('msg', 1, 65536),
    bytes: bytes === undefined ? 16 << 20 : parseSize(bytes, 'bytes', 256 << 20),
    json: value['no-write']
      ? undefined
      : path.resolve(json ?? path.join(ROOT, 'bench', 'results', `bench-vm-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)),
    echo: value.echo === true,
  };
}

interface Metric {
  key: string;
  label: string;
  unit: string;
  better: 'lower' | 'higher' | '';
  results: Partial<Record<Tr, Summary>>;
  ratio?: number;
}

function table(metrics: Metric[]): string {
  const head = ['metric', 'unit', ...target2.map((target) => LABEL[target]), 'shm/tcp'];
  const rows = metrics.map((msg) => [
    msg.label,
    `${msg.unit}${msg.better ? (msg.better === 'higher' ? ' ↑' : ' ↓') : ''}`,
    ...target2.map((target) => summaryCell(msg.results[target], msg.key.endsWith('range'))),
    msg.ratio === undefined || !Number.isFinite(msg.ratio) ? '-' : `${msg.ratio.toFixed(2)}x`,
  ]);
  return textTable(head, rows, 2);
}

async function main(argv: string[]): Promise<number> {
  let out2: Options | 'help';
  try {
    out2 = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench:vm: ${err.message}\n${USAGE}`);
    return 2;
  }
  if (out2 === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const opts = out2;
  /** Collects the `ZIVM-PAIR {json}` lines of a console; `on` sees each. */
  const collector = (events: Json[], on: (e: Json) => void) =>
    consoleEvents(PREFIX, (entry) => {
      events.push(entry);
      on(entry);
    });
  const t0 = Date.now();
  const img = ensureGuestImage({ quiet: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-benchvm-'));
  const sock = path.join(dir, 'zivm.sock');
  const daemon = await startServer(sock, ['--size', '64M', '--vectors', '4', '--guests']);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(130)); // qemu.ts's exit hook kills QEMU
  const aEv: Json[] = [];
  const bEv: Json[] = [];
  const progress = (entry: Json) => {
    if (entry.what === 'joined') process.stderr.write(`bench:vm: guest ${entry.addr} joined (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    if (entry.what === 'error') process.stderr.write(`bench:vm: guest error: ${entry.message}\n`);
    if (entry.what === 'bench') {
      process.stderr.write(
        `bench:vm: ${entry.trial <= 0 ? 'warm-up' : `trial ${entry.trial}`} ${entry.transport}: round trip median ${fmt(entry.rttUs.median)} µs (p99 ${fmt(entry.rttUs.p99)}), ` +
          `${sizeLabel(entry.bulk.bytes)} one way ${fmt(entry.bulk.MBps)} MB/s\n`,
      );
    }
  };
  const args = [
    '--rounds',
    String(opts.rounds),
    '--bytes',
    String(opts.bytes),
    '--msg',
    String(opts.msg),
    '--trials',
    String(opts.trials),
    '--warmup',
    String(opts.warmup),
  ];
  const timeoutMs = 120000 + (opts.trials + opts.warmup) * (opts.rounds * 40 + opts.bytes / 1000);
  let results;
  try {
    const [gb, ga] = await startLinkedPair(
      {
        args: [PEER, 'server', '--addr', B_ADDR, ...args],
        ivshmem: { socket: sock, vectors: 4 },
        timeoutMs,
        echo: opts.echo,
        onConsole: collector(bEv, progress),
      },
      {
        args: [PEER, 'bench', '--addr', A_ADDR, '--peer', B_ADDR, ...args],
        ivshmem: { socket: sock, vectors: 4 },
        timeoutMs,
        echo: opts.echo,
        onConsole: collector(aEv, progress),
      },
      { img },
    );
    results = await pairDone([gb, ga]);
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const [rb, ra] = results;
  if (ra.exitCode !== 0 || aEv.some((entry) => entry.what === 'error') || bEv.some((entry) => entry.what === 'error')) {
    process.stderr.write(
      `bench:vm: the guests did not finish (A exit ${ra.exitCode}${ra.timedOut ? ', watchdog' : ''}; B exit ${rb.exitCode})\n--- A ---\n${ra.console}\n--- B ---\n${rb.console}\n`,
    );
    return 1;
  }

  // Check every trial's sockets, on both ends.
  const errors: string[] = [];
  const accepted = new Map(bEv.filter((entry) => entry.what === 'accepted').map((entry) => [String(entry.tag), entry]));
  const good = (res: Json): boolean => {
    const target = res.transport as Tr;
    const bad: string[] = [];
    for (const [which, tag, client] of [
      ['round trips', `lat-${target}-${res.trial}`, res.client],
      ['bulk', `bulk-${target}-${res.trial}`, res.bulkClient],
    ] as const) {
      const srv = accepted.get(tag);
      if (target === 'shm') {
        if (client.transport !== 'shm') bad.push(`${which}: client transport ${client.transport}`);
        if (srv?.kind !== 'zivm' || srv.transport !== 'shm') bad.push(`${which}: server ${srv?.kind} transport ${srv?.transport}`);
      } else {
        if (!client.plainNet) bad.push(`${which}: client is not a node:net socket`);
        if (srv?.kind !== 'plain' || !srv.plainNet) bad.push(`${which}: server ${srv?.kind}, not a node:net socket`);
      }
      if (client.remoteAddress !== B_ADDR || srv?.remoteAddress !== A_ADDR) bad.push(`${which}: addresses ${client.remoteAddress} / ${srv?.remoteAddress}`);
    }
    if (target === 'shm' && res.bulkEth0.tx + res.latEth0.tx > 1 << 20) bad.push(`${res.bulkEth0.tx + res.latEth0.tx} bytes went out on eth0`);
    if (target === 'tcp' && res.bulkEth0.tx < res.bulk.bytes) bad.push(`only ${res.bulkEth0.tx} bytes went out on eth0`);
    if (bad.length) errors.push(`trial ${res.trial} ${target}: ${bad.join('; ')}`);
    return bad.length === 0;
  };
  const records = aEv.filter((entry) => entry.what === 'bench');
  const counted = records.filter((res) => res.trial > 0 && good(res));
  const by = (target: Tr) => counted.filter((res) => res.transport === target);
  const metric = (key: string, label: string, unit: string, better: Metric['better'], value: (r: Json) => number): Metric => {
    const results: Partial<Record<Tr, Summary>> = {};
    for (const target of target2) if (by(target).length) results[target] = summarize(by(target).map(value));
    const msg: Metric = { key, label, unit, better, results };
    if (results.shm && results.tcp && results.tcp.median > 0) msg.ratio = results.shm.median / results.tcp.median;
    return msg;
  };
  const msgLabel = sizeLabel(opts.msg);
  const range: Metric = { key: 'rtt-range', label: `round trip ${msgLabel}, min–max of all`, unit: 'µs', better: '', results: {} };
  for (const target of target2) {
    const rs = by(target);
    if (!rs.length) continue;
    const mins = rs.map((res) => res.rttUs.min as number);
    const maxs = rs.map((res) => res.rttUs.max as number);
    range.results[target] = { n: rs.length, median: NaN, min: Math.min(...mins), max: Math.max(...maxs), q1: NaN, q3: NaN, samples: [] };
  }
  const metrics: Metric[] = [
    metric('rtt-median', `round trip ${msgLabel}, median`, 'µs', 'lower', (res) => res.rttUs.median),
    metric('rtt-p99', `round trip ${msgLabel}, p99`, 'µs', 'lower', (res) => res.rttUs.p99),
    range,
    metric('bulk', `bulk ${sizeLabel(opts.bytes)} one way`, 'MB/s', 'higher', (res) => res.bulk.MBps),
    metric('connect', 'connect, median of 5', 'ms', 'lower', (res) => res.connectMs),
    metric('connect-first', "connect, the trial's first", 'ms', 'lower', (res) => res.connectsMs[0]),
  ];

  const qemuVersion = execFileSync(img.qemu, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const out = {
    tool: 'zivm bench:vm',
    version: 1,
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model ?? '?',
      cores: os.cpus().length,
      node: process.version,
      kernel: os.release(),
      qemu: qemuVersion,
      guestKernel: img.kver,
    },
    settings: {
      trials: opts.trials,
      warmup: opts.warmup,
      rounds: opts.rounds,
      msg: opts.msg,
      bytes: opts.bytes,
      guests: 'QEMU TCG, q35, 1 vCPU, 512 MiB each',
      daemon: '--size 64M --vectors 4',
    },
    method: [
      'two guests booted together, each with ivshmem-doorbell on one zivm daemon and virtio-net on a private QEMU socket netdev (127.0.0.1)',
      `guest A (${A_ADDR}) is the client, guest B (${B_ADDR}) the server; A dials B by B's eth0 address`,
      'shm: zivm on both ends, transport shm on both ends, nothing on eth0; tcp: node:net on both ends (zivm not involved), the bytes on eth0',
      `per trial and transport: 5 connections one after another, each timed from connect() to 'connect' (the trial's figures: their median, and the first, which follows the last trial's bulk transfer), the last of them kept for 50 warm-up round trips and ${opts.rounds} timed; then another connection sending ${sizeLabel(opts.bytes)} one way, timed until the server acknowledges the last byte`,
      `${opts.warmup} warm-up trials first, not counted (TCG translates the guests' code as it first runs); the transports alternate which goes first`,
      'figures: median over trials of the per-trial figure (min–max over trials); ratios: shm median / tcp median',
    ],
    results: Object.fromEntries(
      metrics.map((msg) => [
        msg.key,
        {
          label: msg.label,
          unit: msg.unit,
          better: msg.better,
          ratio: msg.ratio,
          ...Object.fromEntries(target2.map((target) => [target, msg.results[target] ?? null])),
        },
      ]),
    ),
    trials: records,
    errors,
    seconds: (Date.now() - t0) / 1000,
  };

  process.stdout.write(
    `\nguest <-> guest: ${opts.trials} trials (after ${opts.warmup} warm-up), two QEMU TCG guests with 1 vCPU each on ${out.machine.cores} host cores\n` +
      `figures: median over trials (min–max over trials)\n\n` +
      table(metrics),
  );
  if (errors.length) process.stdout.write(`\nerrors (left out):\n${errors.map((entry) => `  ${entry}`).join('\n')}\n`);
  process.stdout.write(`\n${out.seconds.toFixed(0)} s in all\n`);
  if (opts.json) {
    fs.mkdirSync(path.dirname(opts.json), { recursive: true });
    fs.writeFileSync(opts.json, `${JSON.stringify(out, null, 2)}\n`);
    process.stdout.write(`wrote ${opts.json}\n`);
  }
  return errors.length && !counted.length ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (count) => process.exit(count),
    (err) => {
      process.stderr.write(`${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
}
