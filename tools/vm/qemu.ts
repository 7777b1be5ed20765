/**
 * Starts a throw-away QEMU guest that runs one command with the host's own node.
 *
 * The guest is Debian's kernel plus a busybox initramfs made by build-guest.sh
 * (cached; the first call builds it). Its /init mounts the host's root
 * read-only over 9p, chroots into it and runs `node ARGS...`, so a test script
 * and the project's dist/ and native addon are at the same paths as on the
 * host (read-only; /run is the guest's own tmpfs, TMPDIR is /dev/shm). Its console (ttyS0)
 * is QEMU's stdout; the guest powers off when the command ends and QEMU exits
 * (-no-reboot).
 *
 * With `ivshmem`, the guest gets `-device ivshmem-doorbell` joined to a zivm
 * daemon's socket: the daemon must be listening before QEMU starts, and
 * `vectors` must match the daemon's --vectors.
 *
 * With `link`, the guest gets a virtio-net NIC (eth0) on a QEMU socket netdev:
 * two guests, one listening and one connecting on the same 127.0.0.1 port,
 * share a private Ethernet link carried over host loopback, with nothing else
 * on it (startLinkedPair boots such a pair). Without it the guest has no
 * network device at all.
 *
 * As a script: node dist/tools/vm/qemu.js [--socket PATH --vectors N] [--link listen:PORT|connect:PORT [--mac MAC]] [--shell] [--] SCRIPT [ARGS...]
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** Repository root (this file runs as dist/tools/vm/qemu.js). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BUILD_SCRIPT = path.join(ROOT, 'tools', 'vm', 'build-guest.sh');

export interface GuestImage {
  kver: string;
  kernel: string;
  initrd: string;
  qemu: string;
  /** Milliseconds build-guest.sh took (a cached image: only its checks). */
  buildMs: number;
}

let image: GuestImage | undefined;

/** Builds the guest image if needed (installing packages with apt-get) and says where it is. */
export function ensureGuestImage(opts: { force?: boolean; quiet?: boolean } = {}): GuestImage {
  if (image && !opts.force) return image;
  const t0 = Date.now();
  const out = execFileSync('bash', [BUILD_SCRIPT, ...(opts.force ? ['--force'] : [])], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', opts.quiet ? 'pipe' : 'inherit'],
    maxBuffer: 16 << 20,
  });
  const kv: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const match = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (match) kv[match[1]] = match[2];
  }
  for (const k of ['KVER', 'KERNEL', 'INITRD', 'QEMU']) if (!kv[k]) throw new Error(`build-guest.sh did not say ${k}:\n${out}`);
  image = { kver: kv.KVER, kernel: kv.KERNEL, initrd: kv.INITRD, qemu: kv.QEMU, buildMs: Date.now() - t0 };
  return image;
}

export interface GuestOptions {
  /** What the guest runs: `node ...args` (paths as on the host). Empty: boot and power off. */
  args: string[];
  /** Working directory for the command (a host path). Default: the repository root. */
  cwd?: string;
  /** Environment for the command: simple values only (no spaces). PATH, HOME, TMPDIR and ZIVM_GUEST=1 are set. */
  env?: Record<string, string>;
  /** Node binary (a host path). Default: this process's. */
  node?: string;
  /** Attach an ivshmem-doorbell device to a zivm daemon. */
  ivshmem?: { socket: string; vectors: number; msi?: boolean };
  /**
   * A virtio-net NIC (eth0 in the guest) on `-netdev socket`, listening on or
   * connecting to 127.0.0.1:port: the other end is another guest's NIC. The
   * listening guest must be started first (its QEMU listens before the guest
   * boots; waitTcpListening tells when).
   */
  link?: { mode: 'listen' | 'connect'; port: number; mac: string };
  /**
   * A virtio-net NIC (eth0 in the guest) on a tap device that already exists
   * in the network namespace of process `netnsPid`: QEMU runs in that
   * namespace (nsenter), so the guest's network is that namespace and nothing else.
   */
  tap?: { ifname: string; netnsPid: number; mac: string };
  /** Guest memory, MiB (default 512). */
  memoryMiB?: number;
  /** Watchdog: QEMU is killed after this many ms (default 240000). */
  timeoutMs?: number;
  /** Kernel messages on the console (default: only errors). */
  verbose?: boolean;
  /** Copy the console to this process's stderr as it comes (default: ZIVM_VM_ECHO set). */
  echo?: boolean;
  /** After the command, a shell on the console instead of powering off (interactive use). */
  shell?: boolean;
  /** Called with every console chunk. */
  onConsole?: (chunk: string) => void;
  /** Extra QEMU arguments. */
  qemuArgs?: string[];
  /** Extra kernel command line arguments (e.g. iomem=relaxed). */
  kernelArgs?: string[];
}

export interface GuestResult {
  /** QEMU's exit code (0 after the guest powered off) and signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything the console printed, \r removed. */
  console: string;
  /** What the command printed: the lines between ZIVM-GUEST-START and ZIVM-GUEST-EXIT. */
  output: string;
  /** The command's exit code as /init reported it; null if it never got there. */
  exitCode: number | null;
  /** The watchdog killed QEMU. */
  timedOut: boolean;
  /** Wall-clock ms from spawn to exit. */
  ms: number;
}

export interface Guest {
  proc: ChildProcess;
  /** Settles when QEMU has exited (never rejects). */
  done: Promise<GuestResult>;
  /** The console so far. */
  console(): string;
  /** Kills QEMU (SIGKILL) if it is still running. */
  kill(): void;
}

const running = new Set<ChildProcess>();
let exitHook = false;

/** The QEMU command line for a guest (exported for inspection and for users who want to run it by hand). */
export function qemuCommand(img: GuestImage, out: GuestOptions): { file: string; args: string[] } {
  const append = ['console=ttyS0', 'intel_iommu=on', 'panic=-1', out.verbose ? 'loglevel=7' : 'quiet', ...(out.kernelArgs ?? [])];
  append.push(`zivm.node=${out.node ?? process.execPath}`);
  append.push(`zivm.cwd=${out.cwd ?? ROOT}`);
  for (const [k, value] of Object.entries(out.env ?? {})) {
    if (/[\s"'\\]/.test(k + value)) throw new Error(`guest environment ${k}=${value}: no spaces or quotes allowed`);
    append.push(`zivm.env=${k}=${value}`);
  }
  if (out.shell) append.push('zivm.shell=1');
  for (const arg of out.args)
    if (/\s/.test(arg) || arg === '') throw new Error(`guest argument ${JSON.stringify(arg)}: no spaces allowed (kernel command line)`);
  if (out.args.length) append.push('--', ...out.args);
  const cmdline = append.join(' ');
  if (cmdline.length > 2000) throw new Error('kernel command line too long: pass the data in a file instead');
  const args = [
    '-accel',
    'tcg', // /dev/kvm hangs the stock kernel here: always TCG
    '-M',
    'q35',
    '-m',
    String(out.memoryMiB ?? 512),
    '-smp',
    '1',
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-vga',
    'none',
    '-device',
    'intel-iommu,intremap=on', // before the other devices
    '-kernel',
    img.kernel,
    '-initrd',
    img.initrd,
    '-append',
    cmdline,
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
  ];
  if (out.ivshmem) {
    args.push('-chardev', `socket,path=${out.ivshmem.socket},id=iv`);
    args.push('-device', `ivshmem-doorbell,chardev=iv,vectors=${out.ivshmem.vectors}${out.ivshmem.msi === false ? ',msi=off' : ''}`);
  }
  if (out.link) {
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(out.link.mac)) throw new Error(`link MAC address ${out.link.mac}?`);
    // Loopback only: the frames travel between the two QEMU processes and nowhere else.
    args.push('-netdev', `socket,id=n0,${out.link.mode}=127.0.0.1:${out.link.port}`);
    args.push('-device', `virtio-net-pci,netdev=n0,mac=${out.link.mac},romfile=`); // no PXE ROM: -kernel boots
  }
  if (out.tap) {
    args.push('-netdev', `tap,id=n1,ifname=${out.tap.ifname},script=no,downscript=no`);
    args.push('-device', `virtio-net-pci,netdev=n1,mac=${out.tap.mac},romfile=`);
  }
  args.push(...(out.qemuArgs ?? []));
  // nsenter execs QEMU: same pid, so killing it kills QEMU.
  if (out.tap) return { file: 'nsenter', args: ['-t', String(out.tap.netnsPid), '-n', img.qemu, ...args] };
  return { file: img.qemu, args };
}

/** Boots a guest running `node ...o.args`. */
export function startGuest(out: GuestOptions, img: GuestImage = ensureGuestImage()): Guest {
  const { file, args } = qemuCommand(img, out);
  const t0 = Date.now();
  const proc = spawn(file, args, { stdio: [out.shell ? 'inherit' : 'ignore', 'pipe', 'pipe'] });
  running.add(proc);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const proc2 of running) if (proc2.exitCode === null && proc2.signalCode === null) proc2.kill('SIGKILL');
    });
  }
  const echo = out.echo ?? !!process.env.ZIVM_VM_ECHO;
  let text = '';
  const onData = (chunk: string) => {
    text += chunk;
    if (echo) process.stderr.write(chunk);
    out.onConsole?.(chunk);
  };
  proc.stdout.setEncoding('utf8').on('data', onData);
  proc.stderr.setEncoding('utf8').on('data', onData);
  let timedOut = false;
  const kill = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  const watchdog = setTimeout(() => {
    timedOut = true;
    kill();
  }, out.timeoutMs ?? 240000);
  const done = new Promise<GuestResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(watchdog);
      running.delete(proc);
      const con = text.replace(/\r/g, '');
      const start = con.indexOf('ZIVM-GUEST-START\n');
      const match = /^ZIVM-GUEST-EXIT (\d+)$/m.exec(con);
      const output = start >= 0 ? con.slice(start + 'ZIVM-GUEST-START\n'.length, match ? match.index : undefined) : '';
      resolve({ code, signal, console: con, output, exitCode: match ? Number(match[1]) : null, timedOut, ms: Date.now() - t0 });
    };
    proc.on('error', (err) => {
      text += `\n[spawn ${file}: ${err.message}]\n`;
      finish(null, null);
    });
    proc.on('close', finish);
  });
  return { proc, done, console: () => text.replace(/\r/g, ''), kill };
}

// ---- two guests on one link -----------------------------------------------------

/** A TCP port on 127.0.0.1 that nobody uses right now. */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Is something listening on 127.0.0.1:port? Read from /proc/net/tcp, without connecting (QEMU's socket netdev takes the first connection as its peer). */
export function tcpListening(port: number): boolean {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let text = '';
  try {
    text = fs.readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return false;
  }
  return text.split('\n').some((line) => {
    const field = line.trim().split(/\s+/);
    return field[1] === want && field[3] === '0A'; // 0A: TCP_LISTEN
  });
}

/** Waits until QEMU of `g` listens on 127.0.0.1:port; throws if it exits or `timeoutMs` passes first. */
export async function waitTcpListening(geo: Guest, port: number, timeoutMs = 10000): Promise<void> {
  const t0 = Date.now();
  while (!tcpListening(port)) {
    if (geo.proc.exitCode !== null || geo.proc.signalCode !== null) throw new Error(`QEMU exited before it listened on 127.0.0.1:${port}:\n${geo.console()}`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`QEMU did not listen on 127.0.0.1:${port} within ${timeoutMs} ms:\n${geo.console()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** MAC addresses of the first and second guest of a pair (locally administered). */
export const PAIR_MACS = ['52:54:00:77:03:01', '52:54:00:77:03:02'] as const;

/**
 * Boots two guests that share a private Ethernet link (eth0 in both): `first`
 * listens for the link, `second` is started once first's QEMU listens. Both
 * then boot concurrently (each takes a core under TCG).
 */
export async function startLinkedPair(first: GuestOptions, second: GuestOptions, opts: { port?: number; img?: GuestImage } = {}): Promise<[Guest, Guest]> {
  const img = opts.img ?? ensureGuestImage();
  const port = opts.port ?? (await freeTcpPort());
  const first2 = startGuest({ ...first, link: { mode: 'listen', port, mac: PAIR_MACS[0] } }, img);
  try {
    await waitTcpListening(first2, port);
  } catch (err) {
    first2.kill();
    throw err;
  }
  const second2 = startGuest({ ...second, link: { mode: 'connect', port, mac: PAIR_MACS[1] } }, img);
  return [first2, second2];
}

/** Waits for both guests of a pair; once one has exited, the other gets `graceMs` to follow before it is killed. */
export async function pairDone(guests: [Guest, Guest], graceMs = 15000): Promise<[GuestResult, GuestResult]> {
  let timer: NodeJS.Timeout | undefined;
  const first = Promise.race(guests.map((guest) => guest.done.then(() => guest)));
  void first.then((done) => {
    const other = guests[0] === done ? guests[1] : guests[0];
    timer = setTimeout(() => other.kill(), graceMs);
  });
  const res = (await Promise.all(guests.map((geo) => geo.done))) as [GuestResult, GuestResult];
  clearTimeout(timer);
  return res;
}

// ---- as a script ----------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  let socket: string | undefined;
  let vectors = 1;
  let shell = false;
  let verbose = false;
  let link: GuestOptions['link'];
  let mac: string | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--socket') socket = argv[++i];
    else if (arg === '--vectors') vectors = Number(argv[++i]);
    else if (arg === '--shell') shell = true;
    else if (arg === '--verbose') verbose = true;
    else if (arg === '--link') {
      const match = /^(listen|connect):(\d+)$/.exec(argv[++i] ?? '');
      if (!match) throw new Error('--link listen:PORT or connect:PORT');
      link = { mode: match[1] as 'listen' | 'connect', port: Number(match[2]), mac: '' };
    } else if (arg === '--mac') mac = argv[++i];
    else if (arg === '--build') {
      ensureGuestImage({ force: true });
      return 0;
    } else if (arg === '--') {
      i++;
      break;
    } else if (arg.startsWith('--')) {
      process.stderr.write(
        'usage: node dist/tools/vm/qemu.js [--socket PATH --vectors N] [--link listen:PORT|connect:PORT [--mac MAC]] [--shell] [--verbose] [--build] [--] SCRIPT [ARGS...]\n',
      );
      return 2;
    } else break;
  }
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(130)); // the exit hook kills QEMU
  const args = argv.slice(i).map((arg, k) => (k === 0 && fs.existsSync(arg) ? path.resolve(arg) : arg));
  if (link) link.mac = mac ?? PAIR_MACS[link.mode === 'listen' ? 0 : 1];
  const geo = startGuest({
    args,
    ivshmem: socket ? { socket: path.resolve(socket), vectors } : undefined,
    link,
    shell,
    verbose,
    echo: true,
    timeoutMs: shell ? 24 * 3600e3 : undefined,
  });
  const res = await geo.done;
  process.stderr.write(
    `\n[qemu exited code=${res.code} signal=${res.signal} after ${res.ms} ms; command exit ${res.exitCode}${res.timedOut ? '; watchdog fired' : ''}]\n`,
  );
  return res.exitCode ?? 1;
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
