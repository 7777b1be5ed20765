/** `zivm guest`: inside a VM guest, hand the ivshmem device to zivm (VFIO binding, the agent). */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors';
import { GuestAgent } from '../guest/agent';
import { bindVfio, ivshmemDevices, pciDriver } from '../guest/device';
import { agentSocketPath } from '../guest/link';
import { Command, intOption, parse } from './command';

const GUEST_USAGE = `usage: zivm guest setup [PCI-ADDRESS] [--mode OCTAL] [--per-uid N]
       zivm guest agent PCI-ADDRESS [--mode OCTAL] [--per-uid N]
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
                 666: every user of the guest, each of whom then maps the
                 memory of every connection of the guest's processes)
  --per-uid N    how many processes of one uid other than root may be members
                 at once (default: half of the device's vectors, at least 1)
`;

function agentPid(pci: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(`${agentSocketPath(pci)}.pid`, 'utf8').trim());
    if (pid > 0) {
      process.kill(pid, 0);
      return pid;
    }
  } catch {
    // No pid file, or its process is gone: no agent.
  }
  return undefined;
}

function modeOption(value: string | boolean | undefined): number {
  if (value === undefined) return 0o600;
  if (typeof value !== 'string' || !/^0?[0-7]{3}$/.test(value)) throw new UsageError('--mode must be an octal mode such as 600 or 666');
  return parseInt(value, 8);
}

export const guestCommand: Command = {
  summary: 'inside a VM guest: hand the ivshmem device to zivm (binding, agent)',
  usage: GUEST_USAGE,
  async run(args) {
    const { values: opts, positionals: rest } = parse(args, { mode: { type: 'string' }, 'per-uid': { type: 'string' } });
    if (opts.help) {
      process.stdout.write(GUEST_USAGE);
      return 0;
    }
    const [action, address, ...extra] = rest;
    if (extra.length) throw new UsageError(`unexpected argument ${extra[0]}`);
    const mode = modeOption(opts.mode);
    const perUid = opts['per-uid'] === undefined ? undefined : intOption(opts['per-uid'], 'per-uid', 1, 0xffff, 1);
    const devices = ivshmemDevices();
    if (action === 'list') {
      if (address) throw new UsageError(`unexpected argument ${address}`);
      for (const device of devices) {
        const pid = agentPid(device);
        process.stdout.write(`${device} ${pciDriver(device) ?? '(no driver)'}${pid ? ` agent pid ${pid} at ${agentSocketPath(device)}` : ''}\n`);
      }
      return 0;
    }
    if (action !== 'setup' && action !== 'agent' && action !== 'stop')
      throw new UsageError(action ? `unknown guest command ${action}` : 'guest needs a command');
    const pci = address ?? (devices.length === 1 ? devices[0] : undefined);
    if (!pci) {
      process.stderr.write(
        `zivm guest: ${devices.length ? `${devices.length} ivshmem devices (${devices.join(', ')}): name one` : 'no ivshmem device (1af4:1110) here'}\n`,
      );
      return 1;
    }
    if (action === 'stop') {
      const pid = agentPid(pci);
      if (!pid) {
        process.stderr.write(`zivm guest: no agent runs for ${pci}\n`);
        return 1;
      }
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && agentPid(pci); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      process.stdout.write(`agent of ${pci} stopped\n`);
      return 0;
    }
    if (action === 'agent') {
      const log = (line: string) => process.stderr.write(`zivm guest agent: ${line}\n`);
      let agent: GuestAgent;
      try {
        agent = GuestAgent.start(pci, { mode, perUid, log });
      } catch (err) {
        log((err as Error).message);
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
        execFileSync('modprobe', ['vfio-pci'], { stdio: 'inherit' });
      } catch {
        process.stderr.write('zivm guest: cannot load vfio-pci (modprobe vfio-pci failed)\n');
        return 1;
      }
    }
    let node: string;
    try {
      node = bindVfio(pci);
    } catch (err) {
      process.stderr.write(`zivm guest: ${(err as Error).message}\n`);
      return 1;
    }
    process.stdout.write(`${pci} bound to vfio-pci (${node})\n`);
    const running = agentPid(pci);
    if (running) {
      process.stdout.write(`agent already running (pid ${running})\nexport ZIVM_GUEST_PCI=${pci}\n`);
      return 0;
    }
    const passOn = [...(opts.mode === undefined ? [] : ['--mode', String(opts.mode)]), ...(perUid === undefined ? [] : ['--per-uid', String(perUid)])];
    return startAgent(pci, passOn);
  },
};

/** Starts `zivm guest agent` detached (its log next to its socket) and waits until it is ready. */
async function startAgent(pci: string, options: string[]): Promise<number> {
  const sock = agentSocketPath(pci);
  fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o755 });
  const logFile = `${sock}.log`;
  const logFd = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [path.join(__dirname, 'main.js'), 'guest', 'agent', pci, ...options], {
    detached: true,
    stdio: ['ignore', 'pipe', logFd],
    env: { ...process.env, ZIVM_GUEST_PCI: 'off' },
  });
  fs.closeSync(logFd);
  const ok = await new Promise<boolean>((resolve) => {
    let output = '';
    const timer = setTimeout(() => resolve(false), 20000);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      if (output.includes('ready ')) {
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
      // No log was written: say only that it did not start.
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
