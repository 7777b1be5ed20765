/**
 * Runs INSIDE the test guest (host's node over 9p, see tools/vm/qemu.ts): finds the
 * ivshmem-doorbell device (1af4:1110), maps its BAR2 (the zivm region) and
 * BAR0 (registers) through sysfs with the project's native addon, and talks to
 * the host side of guest.test.ts through the scratch area (exchange.ts):
 *
 *   1. prints the region header (nonce, daemon pid, geometry) and its own peer
 *      id (IVPosition);
 *   2. reads the host's message and block, writes its own, and rings the host
 *      peer's doorbells through BAR0 (vector v rung v+1 times);
 *   3. waits for the host's reply; the host then rings this guest's vectors.
 *      Without a driver no interrupt is delivered, but with MSI-X enabled and
 *      every vector masked QEMU records each one as pending in the PBA (BAR1),
 *      which this probe polls: the doorbell reached this device, per vector;
 *   4. binds the device to vfio-pci (driver_override + drivers_probe) and
 *      reports the IOMMU group and /dev/vfio node; then opens it with the
 *      addon's VFIO calls, maps BAR2 through the device fd, takes real MSI-X
 *      interrupts as eventfds watched with the project's Poller and plays
 *      doorbell ping-pong with the host (see vfioInterrupts).
 *
 * Every finding is a line `ZIVM-PROBE <json>` on stdout (the serial console).
 *
 *   node guest-probe.js --host-id N --seed S [--timeout MS] [--no-vfio] [--rounds N]
 */
import fs from 'node:fs';
import path from 'node:path';
import { HEADER, readHeader } from '../../src/shm/layout';
import { IVSHMEM, NativePoller, NativeRegion, VFIO, VfioDevice, native } from '../../src/shm/native';
import { sleep } from '../../tools/kit/wait';
import { arg, reporter } from '../../tools/vm/peer';
import * as X from './exchange';

const PCI = '/sys/bus/pci/devices';

const report = reporter('ZIVM-PROBE ');

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

function waitUntil(cond: () => boolean, timeoutMs: number, what: string): number {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    sleepMs(1);
  }
  return Date.now() - t0;
}

function readHex(file: string): number {
  return parseInt(fs.readFileSync(file, 'utf8').trim(), 16);
}

/** Config space access through sysfs (root may read all 4 KiB and write). */
class Config {
  readonly fd: number;
  constructor(dev: string) {
    this.fd = fs.openSync(path.join(PCI, dev, 'config'), 'r+');
  }
  read(off: number, len: 1 | 2 | 4): number {
    const b = Buffer.alloc(len);
    if (fs.readSync(this.fd, b, 0, len, off) !== len) throw new Error(`short config read at ${off}`);
    return len === 1 ? b[0] : len === 2 ? b.readUInt16LE(0) : b.readUInt32LE(0);
  }
  write(off: number, len: 2 | 4, v: number): void {
    const b = Buffer.alloc(len);
    if (len === 2) b.writeUInt16LE(v, 0);
    else b.writeUInt32LE(v >>> 0, 0);
    if (fs.writeSync(this.fd, b, 0, len, off) !== len) throw new Error(`short config write at ${off}`);
  }
  /** Offset of capability `id`, or -1. */
  findCap(id: number): number {
    if (!(this.read(6, 2) & 0x10)) return -1; // status: capabilities list
    let p = this.read(0x34, 1) & 0xfc;
    for (let n = 0; p && n < 48; n++) {
      if (this.read(p, 1) === id) return p;
      p = this.read(p + 1, 1) & 0xfc;
    }
    return -1;
  }
  close(): void {
    fs.closeSync(this.fd);
  }
}

function mapBar(dev: string, bar: number): { region: NativeRegion; fd: number } {
  const n = native();
  const fd = fs.openSync(path.join(PCI, dev, `resource${bar}`), 'r+');
  const size = n.fdSize(fd);
  return { region: new n.Region(fd, size), fd };
}

async function main(argv: string[]): Promise<number> {
  const hostId = Number(arg(argv, '--host-id'));
  const seed = Number(arg(argv, '--seed')) >>> 0;
  const timeoutMs = Number(arg(argv, '--timeout', '60000'));
  const vfio = !argv.includes('--no-vfio');
  const rounds = Number(arg(argv, '--rounds', '20'));

  // ---- the device ----------------------------------------------------------
  const devs = fs
    .readdirSync(PCI)
    .filter((d) => readHex(path.join(PCI, d, 'vendor')) === 0x1af4 && readHex(path.join(PCI, d, 'device')) === 0x1110)
    .sort();
  report('devices', { ivshmem: devs, all: fs.readdirSync(PCI).length });
  if (devs.length === 0) throw new Error('no ivshmem device (1af4:1110) in the guest');
  const dev = devs[0];
  const resLines = fs.readFileSync(path.join(PCI, dev, 'resource'), 'utf8').trim().split('\n');
  const bars = resLines.slice(0, 3).map((l) => {
    const [s, e] = l.trim().split(/\s+/).map((x) => BigInt(x));
    return { start: `0x${s.toString(16)}`, size: Number(e - s + 1n) };
  });
  try {
    fs.writeFileSync(path.join(PCI, dev, 'enable'), '1');
  } catch {
    /* already enabled by firmware */
  }
  const cfg = new Config(dev);
  report('pci', { dev, bars, command: cfg.read(4, 2), iommuGroup: path.basename(fs.readlinkSync(path.join(PCI, dev, 'iommu_group'))) });

  // ---- BAR2: the region ------------------------------------------------------
  const bar2 = mapBar(dev, 2);
  const i32 = new Int32Array(bar2.region.buffer);
  const u8 = new Uint8Array(bar2.region.buffer);
  const g = readHeader(i32, bar2.region.size);
  report('header', {
    magic: [(i32[HEADER.MAGIC0] >>> 0).toString(16), (i32[HEADER.MAGIC1] >>> 0).toString(16)],
    version: i32[HEADER.VERSION],
    nonce: i32[HEADER.NONCE] >>> 0,
    daemonPid: i32[HEADER.DAEMON_PID],
    size: g.size,
    vectors: g.vectors,
    nslots: g.nslots,
    ringSize: g.ringSize,
    mapped: bar2.region.size,
  });

  // ---- BAR0: registers (IntrMask 0, IntrStatus 4, IVPosition 8, Doorbell 12) ---
  const bar0 = mapBar(dev, 0);
  const regs = new Int32Array(bar0.region.buffer, 0, 4);
  const ivPosition = Atomics.load(regs, 2);
  report('registers', { ivPosition, intrMask: Atomics.load(regs, 0) });

  // MSI-X on, all vectors masked: a doorbell for us becomes a pending bit in the PBA.
  const msix = cfg.findCap(0x11);
  let pba: Int32Array | null = null;
  if (msix >= 0) {
    const ctl = cfg.read(msix + 2, 2);
    const tableSize = (ctl & 0x7ff) + 1;
    const pbaWord = cfg.read(msix + 8, 4);
    const pbaBar = pbaWord & 7;
    const pbaOff = pbaWord & ~7;
    cfg.write(msix + 2, 2, ctl | 0x8000 | 0x4000); // MSI-X enable + function mask
    const bar = mapBar(dev, pbaBar);
    pba = new Int32Array(bar.region.buffer, pbaOff, 1);
    report('msix', { cap: msix, tableSize, pbaBar, pbaOff, control: cfg.read(msix + 2, 2), pendingBefore: Atomics.load(pba, 0) >>> 0 });
  } else report('msix', { cap: -1 });

  // ---- exchange with the host --------------------------------------------------
  const base = X.scratchOffset(g);
  const w = new Int32Array(bar2.region.buffer, base, 2);
  const s8 = u8.subarray(base, base + X.SCRATCH_SIZE);
  const waitedHost = waitUntil(() => Atomics.load(w, X.W_HOST) >= X.HOST_WROTE, timeoutMs, "the host's message");
  const hostMsg = X.readMsg(s8, X.HOST_MSG);
  const hostBlock = X.sha256(s8.subarray(X.HOST_BLOCK, X.HOST_BLOCK + X.BLOCK));
  report('from-host', { scratch: base, waited: waitedHost, message: hostMsg, blockSha256: hostBlock });

  const mine = X.pattern(seed);
  s8.set(mine, X.GUEST_BLOCK);
  X.writeMsg(s8, X.GUEST_MSG, `guest->host ivposition=${ivPosition} nonce=${i32[HEADER.NONCE] >>> 0} seed=${seed}`);
  Atomics.store(w, X.W_GUEST, X.GUEST_WROTE);
  // Ring the host peer: vector v, v+1 times.
  const rung: number[] = [];
  for (let v = 0; v < g.vectors; v++) {
    for (let k = 0; k <= v; k++) Atomics.store(regs, 3, ((hostId & 0xffff) << 16) | v);
    rung.push(v + 1);
  }
  report('to-host', { blockSha256: X.sha256(mine), rung });

  const waitedReply = waitUntil(() => Atomics.load(w, X.W_HOST) >= X.HOST_REPLIED, timeoutMs, "the host's reply");
  const reply = X.readMsg(s8, X.HOST_MSG);
  let pending = -1;
  let waitedPending = -1;
  if (pba) {
    const all = g.vectors >= 32 ? 0xffffffff : (1 << g.vectors) - 1;
    const p = pba;
    try {
      waitedPending = waitUntil(() => ((Atomics.load(p, 0) >>> 0) & all) === all >>> 0, 10000, 'pending MSI-X vectors');
    } catch {
      /* reported below */
    }
    pending = Atomics.load(p, 0) >>> 0;
  }
  report('reply', { waited: waitedReply, message: reply, pending, waitedPending });
  Atomics.store(w, X.W_GUEST, X.GUEST_SAW_REPLY);

  // ---- VFIO: bind, then interrupts through the addon -----------------------------
  if (!vfio) {
    Atomics.store(w, X.W_GUEST, X.GUEST_DONE);
    cfg.close();
    return 0;
  }
  // vfio-pci claims the BARs: the sysfs mappings are revoked (SIGBUS on the next access).
  const base2 = base;
  bar0.region.close();
  bar2.region.close();
  const out: Record<string, unknown> = {};
  try {
    if (msix >= 0) cfg.write(msix + 2, 2, cfg.read(msix + 2, 2) & ~0xc000); // vfio-pci sets MSI-X up itself
    const drv = path.join(PCI, dev, 'driver');
    out.driverBefore = fs.existsSync(drv) ? path.basename(fs.readlinkSync(drv)) : null;
    fs.writeFileSync(path.join(PCI, dev, 'driver_override'), 'vfio-pci');
    fs.writeFileSync('/sys/bus/pci/drivers_probe', dev);
    out.driver = fs.existsSync(drv) ? path.basename(fs.readlinkSync(drv)) : null;
    const group = path.basename(fs.readlinkSync(path.join(PCI, dev, 'iommu_group')));
    out.group = group;
    out.groupDevices = fs.readdirSync(`/sys/kernel/iommu_groups/${group}/devices`);
    out.dev = fs.existsSync(`/dev/vfio/${group}`) ? `/dev/vfio/${group}` : null;
    out.container = fs.existsSync('/dev/vfio/vfio');
  } catch (e) {
    out.error = (e as Error).message;
  }
  report('vfio', out);
  cfg.close();
  if (out.error) return 1;

  const irq = await vfioInterrupts(dev, g.vectors, hostId, base2, rounds, timeoutMs);
  report('irq', irq);
  return irq.error ? 1 : 0;
}

/**
 * The guest side of a zivm peer, natively: the device bound to vfio-pci is
 * opened with the addon (vfioOpen: container, group, device fd, region and IRQ
 * info), bus mastering goes on (MSI-X messages are bus-master writes), BAR2 is
 * mapped through the device fd (Region at the region's offset) and MSI-X vector
 * v triggers eventfd v, watched with the project's Poller: the same machinery a
 * zivm peer uses on the host. BAR0's registers are read and the host's doorbell
 * rung with pread/pwrite on the device fd (bar0Read32, bar0Notify).
 *   1. stale: interrupts QEMU still had pending from the PBA phase fire as soon
 *      as the vectors are unmasked (vfioSetMsix); they are drained and counted
 *      before anything is measured;
 *   2. the host rings every vector once (GUEST_IRQ_READY -> HOST_RANG);
 *   3. ping-pong: ring the host's vector 0, wait for our vector 0, `rounds` times.
 */
async function vfioInterrupts(
  dev: string,
  vectors: number,
  hostId: number,
  scratch: number,
  rounds: number,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  const n = native();
  const res: Record<string, unknown> = {};
  let d: VfioDevice | undefined;
  let region: NativeRegion | undefined;
  let msixOn = false;
  const fds: number[] = [];
  const pollers: NativePoller[] = [];
  try {
    const t0 = process.hrtime.bigint();
    d = n.vfioOpen(dev);
    res.openMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const dv = d;
    const reg = (index: number) => {
      const r = dv.regions.find((x) => x.index === index);
      if (!r) throw new Error(`the device has no VFIO region ${index}`);
      return r;
    };
    const bar0 = reg(VFIO.BAR0);
    const bar2 = reg(VFIO.BAR2);
    const cfg = reg(VFIO.CONFIG);
    const msix = d.irqs.find((q) => q.index === VFIO.MSIX);
    res.group = d.group;
    res.iommu = d.iommu;
    res.regions = d.regions.filter((r) => r.size > 0).map((r) => ({ index: r.index, size: r.size, offset: `0x${r.offset.toString(16)}`, flags: r.flags }));
    res.msixCount = msix?.count ?? 0;
    res.bar2Size = bar2.size;
    res.bar2Mmap = (bar2.flags & VFIO.REGION_MMAP) !== 0;
    res.command = n.vfioEnableBusMaster(d.deviceFd, cfg.offset);
    res.ivPosition = n.bar0Read32(d.deviceFd, bar0.offset, IVSHMEM.IV_POSITION);

    // BAR2, the region, mapped through the device fd.
    region = new n.Region(d.deviceFd, bar2.size, bar2.offset);
    const i32 = new Int32Array(region.buffer);
    res.magic = [(i32[HEADER.MAGIC0] >>> 0).toString(16), (i32[HEADER.MAGIC1] >>> 0).toString(16)];
    res.nonce = i32[HEADER.NONCE] >>> 0;
    const g = readHeader(i32, region.size);
    res.vectors = g.vectors;
    const w = new Int32Array(region.buffer, scratch, 2);
    res.hostStateViaVfio = Atomics.load(w, X.W_HOST);

    // MSI-X: one eventfd per vector. Unmasking delivers what was pending.
    if (res.msixCount !== vectors) throw new Error(`the device has ${String(res.msixCount)} MSI-X vectors, the domain ${vectors}`);
    for (let v = 0; v < vectors; v++) fds.push(n.eventfd());
    n.vfioSetMsix(d.deviceFd, fds);
    msixOn = true;
    const stale = new Array<number>(vectors).fill(0);
    for (let quiet = 0, k = 0; quiet < 2 && k < 50; k++) {
      await sleep(10);
      const got = fds.map((fd) => n.drain(fd));
      got.forEach((c, v) => (stale[v] += c));
      quiet = got.some((c) => c > 0) ? 0 : quiet + 1;
    }
    res.stale = stale;

    const counts = new Array<number>(vectors).fill(0);
    const calls = new Array<number>(vectors).fill(0);
    let wake: (() => void) | null = null;
    fds.forEach((fd, v) => {
      pollers.push(
        new n.Poller(
          fd,
          () => {
            calls[v]++;
            counts[v] += n.drain(fd);
            const f = wake;
            wake = null;
            f?.();
          },
          false,
        ),
      );
    });
    const until = (cond: () => boolean, ms: number, what: string) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        const check = () => {
          if (cond()) {
            clearTimeout(t);
            resolve();
          } else wake = check;
        };
        check();
      });

    // 2. The host rings each vector once.
    Atomics.store(w, X.W_GUEST, X.GUEST_IRQ_READY);
    const t1 = process.hrtime.bigint();
    await until(() => counts.every((c) => c > 0), timeoutMs, 'an interrupt on every vector');
    res.firstMs = Number(process.hrtime.bigint() - t1) / 1e6;
    res.counts = [...counts];

    // 3. Ping-pong on vector 0.
    Atomics.store(w, X.W_GUEST, X.GUEST_PINGPONG);
    const rtt: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const before = calls[0];
      const t = process.hrtime.bigint();
      n.bar0Notify(d.deviceFd, bar0.offset, hostId, 0);
      await until(() => calls[0] > before, 10000, `ping-pong round ${i}`);
      rtt.push(Number(process.hrtime.bigint() - t) / 1e3);
    }
    rtt.sort((a, b) => a - b);
    res.rounds = rounds;
    res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(rtt[rtt.length >> 1]), max: Math.round(rtt[rtt.length - 1]) } : null;
    res.countsAfter = [...counts];
    Atomics.store(w, X.W_GUEST, X.GUEST_DONE);
  } catch (e) {
    res.error = (e as Error).message;
  } finally {
    for (const p of pollers) p.close();
    try {
      if (d && msixOn) n.vfioSetMsix(d.deviceFd, []);
      region?.close();
      for (const fd of fds) n.close(fd);
      if (d) n.vfioClose(d);
      res.closed = d !== undefined && d.deviceFd === -1 && d.groupFd === -1 && d.containerFd === -1;
    } catch (e) {
      res.error ??= `cleanup: ${(e as Error).message}`;
    }
  }
  return res;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      report('error', { message: (e as Error).message, stack: (e as Error).stack });
      process.exitCode = 1;
    },
  );
}
