#!/usr/bin/env node
/**
 * The `zivm` command. Subcommands live in COMMANDS below; each parses its own
 * arguments and returns an exit code (2 for bad usage).
 */
import { runStat, STAT_USAGE } from './stat';
import { DOCTOR_USAGE, parseTarget, runDoctor } from './doctor';
import fs from 'node:fs';
import path from 'node:path';
import { parseSize } from './shm/autostart';
import { DEFAULT_MAX_LISTENERS, DEFAULT_MAX_PEERS, DEFAULT_RING, DEFAULT_SIZE, DEFAULT_VECTORS, autoIdleMs, runDaemon } from './shm/daemon';
import { computeGeometry } from './shm/layout';
import { socketPath } from './shm/paths';

export class UsageError extends Error {}

export interface Command {
  /** One line for `zivm --help`. */
  summary: string;
  /** Full usage text for `zivm <name> --help` and usage errors. */
  usage: string;
  run(args: string[]): number | Promise<number>;
}

/** Option parsing shared by subcommands: --name value, --name=value, and boolean flags. */
export function parseOptions(args: string[], spec: Record<string, 'string' | 'boolean'>): { opts: Record<string, string | boolean>; rest: string[] } {
  const opts: Record<string, string | boolean> = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      rest.push(...args.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      if (a.startsWith('-') && a !== '-') throw new UsageError(`unknown option ${a}`);
      rest.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    const kind = spec[name];
    if (!kind) throw new UsageError(`unknown option --${name}`);
    if (kind === 'boolean') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      opts[name] = true;
    } else if (eq >= 0) {
      opts[name] = a.slice(eq + 1);
    } else {
      if (i + 1 >= args.length) throw new UsageError(`--${name} needs a value`);
      opts[name] = args[++i];
    }
  }
  return { opts, rest };
}

function intOption(v: string | boolean | undefined, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim()) || n < min || n > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max}`);
  return n;
}

function sizeOption(v: string | boolean | undefined, name: string, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  try {
    return parseSize(String(v));
  } catch (e) {
    throw new UsageError(`--${name}: ${(e as Error).message}`);
  }
}

function human(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = bytes;
  while (v >= 1024 && v % 1024 === 0 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v} ${units[u]}`;
}

const SERVER_USAGE = `usage: zivm server [options]

Runs the domain daemon: owns the shared region and hands it to peers (processes,
or QEMU guests with -device ivshmem-doorbell) over an ivshmem-server socket.

options:
  --socket PATH        socket to serve (default: ZIVM_SOCKET, else zivm.sock in
                       ZIVM_DIR, $XDG_RUNTIME_DIR/zivm or <tmpdir>/zivm-<uid>)
  --size SIZE          region size, e.g. 256M, 1G (default ZIVM_SIZE or 256M)
  --ring SIZE          bytes per direction of each connection, a power of two
                       (default ZIVM_RING or 512K)
  --vectors N          interrupt vectors per peer (default 1)
  --max-peers N        peer ids 0..N-1 (default 64)
  --max-listeners N    listening sockets in the whole domain (default 256)
  --idle-exit SECONDS  exit this long after the last peer left (default: never;
                       with --auto: ZIVM_IDLE_MS milliseconds, or 1 s, counted
                       from start-up too)
  --auto               started on demand: exit quietly if a daemon already serves
  --verbose            one line per peer join/leave on stderr
`;

const serverCommand: Command = {
  summary: 'run the domain daemon',
  usage: SERVER_USAGE,
  async run(args) {
    const { opts, rest } = parseOptions(args, {
      socket: 'string',
      size: 'string',
      ring: 'string',
      vectors: 'string',
      'max-peers': 'string',
      'max-listeners': 'string',
      'idle-exit': 'string',
      auto: 'boolean',
      verbose: 'boolean',
      help: 'boolean',
    });
    if (opts.help) {
      process.stdout.write(SERVER_USAGE);
      return 0;
    }
    if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
    const env = process.env;
    const auto = !!opts.auto;
    const sock = typeof opts.socket === 'string' ? opts.socket : socketPath(env);
    if (!sock) throw new UsageError('--socket needs a path');
    const size = sizeOption(opts.size, 'size', env.ZIVM_SIZE ? sizeOption(env.ZIVM_SIZE, 'size (ZIVM_SIZE)', DEFAULT_SIZE) : DEFAULT_SIZE);
    const ringSize = sizeOption(opts.ring, 'ring', env.ZIVM_RING ? sizeOption(env.ZIVM_RING, 'ring (ZIVM_RING)', DEFAULT_RING) : DEFAULT_RING);
    const vectors = intOption(opts.vectors, 'vectors', 1, 1024, DEFAULT_VECTORS);
    const maxPeers = intOption(opts['max-peers'], 'max-peers', 2, 4096, DEFAULT_MAX_PEERS);
    const maxListeners = intOption(opts['max-listeners'], 'max-listeners', 1, 65536, DEFAULT_MAX_LISTENERS);
    let idleMs = auto ? autoIdleMs(env) : Infinity;
    if (opts['idle-exit'] !== undefined) {
      const s = Number(opts['idle-exit']);
      if (typeof opts['idle-exit'] !== 'string' || opts['idle-exit'].trim() === '' || !Number.isFinite(s) || s < 0)
        throw new UsageError('--idle-exit must be a number of seconds >= 0');
      idleMs = s * 1000;
    }
    let g;
    try {
      g = computeGeometry({ size, ringSize, vectors, maxPeers, maxListeners });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const verbose = !!opts.verbose && !auto;
    return runDaemon({ socketPath: sock, size, ringSize, vectors, maxPeers, maxListeners, idleMs, auto, verbose }, (d) => {
      if (!auto) {
        process.stdout.write(
          `zivm server listening on ${d.socketPath} (size ${human(g.size)}, ${g.nslots} slots, ring ${human(g.ringSize)}, ` +
            `${g.vectors} vector${g.vectors === 1 ? '' : 's'})\n`,
        );
      }
    });
  },
};

/**
 * The subcommand table. `zivm stat` and `zivm bench` go here.
 */
const statCommand: Command = {
  summary: 'list the peers, listeners and connections of a domain',
  usage: STAT_USAGE,
  run(args) {
    const { opts, rest } = parseOptions(args, { socket: 'string', json: 'boolean', help: 'boolean' });
    if (opts.help) {
      process.stdout.write(STAT_USAGE);
      return 0;
    }
    if (rest.length) throw new UsageError(`unexpected argument ${rest[0]}`);
    return runStat({ socket: opts.socket as string | undefined, json: opts.json === true });
  },
};

const doctorCommand: Command = {
  summary: 'check the addon, the daemon, and why a connection would use TCP',
  usage: DOCTOR_USAGE,
  run(args) {
    const { opts, rest } = parseOptions(args, { json: 'boolean', help: 'boolean' });
    if (opts.help) {
      process.stdout.write(DOCTOR_USAGE);
      return 0;
    }
    if (rest.length > 1) throw new UsageError(`unexpected argument ${rest[1]}`);
    const target = rest.length ? parseTarget(rest[0]) : undefined;
    if (rest.length && !target) throw new UsageError(`${rest[0]} is not HOST:PORT`);
    return runDoctor({ target, json: opts.json === true });
  },
};

const benchCommand: Command = {
  summary: 'compare zivm with node:net over TCP and Unix sockets',
  usage: 'usage: zivm bench [options]   (zivm bench --help lists them)\n',
  run(args) {
    // Loaded on demand: the other commands do not need the benchmark code.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const bench = require('../bench/run') as { main(argv: string[]): Promise<number> };
    return bench.main(args);
  },
};

const GUEST_USAGE = `usage: zivm guest setup [PCI-ADDRESS] [--mode OCTAL]
       zivm guest agent PCI-ADDRESS [--mode OCTAL]
       zivm guest stop [PCI-ADDRESS]
       zivm guest list

Inside a QEMU guest with -device ivshmem-doorbell joined to a zivm daemon on the host
(as root):
  setup   binds the ivshmem device (1af4:1110; the only one if no address is given)
          to vfio-pci, loading the module if needed, and starts the guest agent in
          the background. Node processes of the guest then join the domain through
          the agent by themselves, one MSI-X vector each (QEMU's vectors= sets how
          many at once); ZIVM_GUEST_PCI=off keeps a process out.
  agent   runs the agent in the foreground (what setup starts): it owns the device,
          hands each process its share and cleans up after processes that exit
  stop    stops the agent (its processes' connections are closed)
  list    lists the ivshmem devices, their drivers and agents

  --mode OCTAL   who may join: the agent socket's mode (default 600: root only;
                 666: every user of the guest)
`;

function agentPid(pci: string): number | undefined {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const G = require('./shm/guest') as typeof import('./shm/guest');
  try {
    const pid = Number(fs.readFileSync(`${G.agentSocketPath(pci)}.pid`, 'utf8').trim());
    if (pid > 0) {
      process.kill(pid, 0);
      return pid;
    }
  } catch {
    /* no agent */
  }
  return undefined;
}

function modeOption(v: string | boolean | undefined): number {
  if (v === undefined) return 0o600;
  if (typeof v !== 'string' || !/^0?[0-7]{3}$/.test(v)) throw new UsageError('--mode must be an octal mode such as 600 or 666');
  return parseInt(v, 8);
}

const guestCommand: Command = {
  summary: 'inside a VM guest: hand the ivshmem device to zivm (binding, agent)',
  usage: GUEST_USAGE,
  async run(args) {
    const { opts, rest } = parseOptions(args, { help: 'boolean', mode: 'string' });
    if (opts.help) {
      process.stdout.write(GUEST_USAGE);
      return 0;
    }
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const G = require('./shm/guest') as typeof import('./shm/guest');
    const [sub, dev, ...extra] = rest;
    if (extra.length) throw new UsageError(`unexpected argument ${extra[0]}`);
    const mode = modeOption(opts.mode);
    const devs = G.ivshmemDevices();
    if (sub === 'list') {
      if (dev) throw new UsageError(`unexpected argument ${dev}`);
      for (const d of devs) {
        const pid = agentPid(d);
        process.stdout.write(`${d} ${G.pciDriver(d) ?? '(no driver)'}${pid ? ` agent pid ${pid} at ${G.agentSocketPath(d)}` : ''}\n`);
      }
      return 0;
    }
    if (sub !== 'setup' && sub !== 'agent' && sub !== 'stop') throw new UsageError(sub ? `unknown guest command ${sub}` : 'guest needs a command');
    const pci = dev ?? (devs.length === 1 ? devs[0] : undefined);
    if (!pci) {
      process.stderr.write(`zivm guest: ${devs.length ? `${devs.length} ivshmem devices (${devs.join(', ')}): name one` : 'no ivshmem device (1af4:1110) here'}\n`);
      return 1;
    }
    if (sub === 'stop') {
      const pid = agentPid(pci);
      if (!pid) {
        process.stderr.write(`zivm guest: no agent runs for ${pci}\n`);
        return 1;
      }
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && agentPid(pci); i++) await new Promise((r) => setTimeout(r, 50));
      process.stdout.write(`agent of ${pci} stopped\n`);
      return 0;
    }
    if (sub === 'agent') {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const { GuestAgent } = require('./shm/agent') as typeof import('./shm/agent');
      const log = (line: string) => process.stderr.write(`zivm guest agent: ${line}\n`);
      let agent: import('./shm/agent').GuestAgent;
      try {
        agent = GuestAgent.start(pci, { mode, log });
      } catch (e) {
        log((e as Error).message);
        return 1;
      }
      const pidFile = `${agent.socket}.pid`;
      fs.writeFileSync(pidFile, `${process.pid}\n`);
      process.stdout.write(`ready ${agent.socket}\n`);
      return new Promise<number>((resolve) => {
        const stop = (sig: string) => {
          log(`${sig}: stopping`);
          agent.close();
          fs.rmSync(pidFile, { force: true });
          resolve(0);
        };
        for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => stop(sig));
      });
    }
    // setup
    if (!fs.existsSync('/sys/bus/pci/drivers/vfio-pci')) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-var-requires
        (require('node:child_process') as typeof import('node:child_process')).execFileSync('modprobe', ['vfio-pci'], { stdio: 'inherit' });
      } catch {
        process.stderr.write('zivm guest: cannot load vfio-pci (modprobe vfio-pci failed)\n');
        return 1;
      }
    }
    let node: string;
    try {
      node = G.bindVfio(pci);
    } catch (e) {
      process.stderr.write(`zivm guest: ${(e as Error).message}\n`);
      return 1;
    }
    process.stdout.write(`${pci} bound to vfio-pci (${node})\n`);
    const running = agentPid(pci);
    if (running) {
      process.stdout.write(`agent already running (pid ${running})\nexport ZIVM_GUEST_PCI=${pci}\n`);
      return 0;
    }
    return startAgent(pci, opts.mode === undefined ? undefined : String(opts.mode));
  },
};

/** Starts `zivm guest agent` detached (its log next to its socket) and waits until it is ready. */
async function startAgent(pci: string, mode: string | undefined): Promise<number> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const G = require('./shm/guest') as typeof import('./shm/guest');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const cp = require('node:child_process') as typeof import('node:child_process');
  const sock = G.agentSocketPath(pci);
  fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o755 });
  const logFile = `${sock}.log`;
  const out = fs.openSync(logFile, 'a');
  const child = cp.spawn(process.execPath, [__filename, 'guest', 'agent', pci, ...(mode ? ['--mode', mode] : [])], {
    detached: true,
    stdio: ['ignore', 'pipe', out],
    env: { ...process.env, ZIVM_GUEST_PCI: 'off' },
  });
  fs.closeSync(out);
  const ok = await new Promise<boolean>((resolve) => {
    let buf = '';
    const timer = setTimeout(() => resolve(false), 20000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      if (buf.includes('ready ')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ok) {
    let why = '';
    try {
      why = fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join('\n');
    } catch {
      /* no log */
    }
    process.stderr.write(`zivm guest: the agent did not start${why ? `:\n${why}` : ''}\n`);
    if (child.exitCode === null) child.kill('SIGKILL');
    return 1;
  }
  child.stdout!.destroy();
  child.unref();
  process.stdout.write(`agent pid ${child.pid} at ${sock}\nexport ZIVM_GUEST_PCI=${pci}\n`);
  return 0;
}

export const COMMANDS: Record<string, Command> = {
  server: serverCommand,
  stat: statCommand,
  doctor: doctorCommand,
  bench: benchCommand,
  guest: guestCommand,
};

function version(): string {
  for (const p of [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'zivm' && pkg.version) return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return 'unknown';
}

function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: zivm <command> [options]

commands:
${lines.join('\n')}

  zivm <command> --help   options of a command
  zivm --version          print the version
`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) {
    process.stderr.write(mainUsage());
    return 2;
  }
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(mainUsage());
    return 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = Object.prototype.hasOwnProperty.call(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!command) {
    process.stderr.write(`zivm: unknown command ${cmd}\n\n${mainUsage()}`);
    return 2;
  }
  try {
    return await command.run(args);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zivm ${cmd}: ${e.message}\n\n${command.usage}`);
      return 2;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`zivm: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
