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
import * as elem from './exchange';

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
    const buf = Buffer.alloc(len);
    if (fs.readSync(this.fd, buf, 0, len, off) !== len) throw new Error(`short config read at ${off}`);
    return len === 1 ? buf[0] : len === 2 ? buf.readUInt16LE(0) : buf.readUInt32LE(0);
  }
  write(off: number, len: 2 | 4, value: number): void {
    const buf = Buffer.alloc(len);
    if (len === 2) buf.writeUInt16LE(value, 0);
    else buf.writeUInt32LE(value >>> 0, 0);
    if (fs.writeSync(this.fd, buf, 0, len, off) !== len) throw new Error(`short config write at ${off}`);
  }
  /** Offset of capability `id`, or -1. */
  findCap(id: number): number {
    if (!(this.read(6, 2) & 0x10)) return -1; // status: capabilities list
    let entry = this.read(0x34, 1) & 0xfc;
    for (let count = 0; entry && count < 48; count++) {
      if (this.read(entry, 1) === id) return entry;
      entry = this.read(entry + 1, 1) & 0xfc;
    }
    return -1;
  }
  close(): void {
    fs.closeSync(this.fd);
  }
}

function mapBar(dev: string, bar: number): { region: NativeRegion; fd: number } {
  const addon = native();
  const fd = fs.openSync(path.join(PCI, dev, `resource${bar}`), 'r+');
  const size = addon.fdSize(fd);
  return { region: new addon.Region(fd, size), fd };
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
    .filter((chunk) => readHex(path.join(PCI, chunk, 'vendor')) === 0x1af4 && readHex(path.join(PCI, chunk, 'device')) === 0x1110)
    .sort();
  report('devices', { ivshmem: devs, all: fs.readdirSync(PCI).length });
  if (devs.length === 0) throw new Error('no ivshmem device (1af4:1110) in the guest');
  const dev = devs[0];
  const resLines = fs
    .readFileSync(path.join(PCI, dev, 'resource'), 'utf8')
    .trim()
    .split('\n');
  const bars = resLines.slice(0, 3).map((line) => {
    const [subject, entry] = line
      .trim()
      .split(/\s+/)
      .map((str) => BigInt(str));
    return { start: `0x${subject.toString(16)}`, size: Number(entry - subject + 1n) };
  });
  try {
    fs.writeFileSync(path.join(PCI, dev, 'enable'), '1');
  } catch {
    // Refused when the firmware enabled the device already: it is enabled either way.
  }
  const cfg = new Config(dev);
  report('pci', { dev, bars, command: cfg.read(4, 2), iommuGroup: path.basename(fs.readlinkSync(path.join(PCI, dev, 'iommu_group'))) });

  // ---- BAR2: the region ------------------------------------------------------
  const bar2 = mapBar(dev, 2);
  const i32 = new Int32Array(bar2.region.buffer);
  const u8 = new Uint8Array(bar2.region.buffer);
  const geo = readHeader(i32, bar2.region.size);
  report('header', {
    magic: [(i32[HEADER.MAGIC0] >>> 0).toString(16), (i32[HEADER.MAGIC1] >>> 0).toString(16)],
    version: i32[HEADER.VERSION],
    nonce: i32[HEADER.NONCE] >>> 0,
    daemonPid: i32[HEADER.DAEMON_PID],
    size: geo.size,
    vectors: geo.vectors,
    nslots: geo.nslots,
    ringSize: geo.ringSize,
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
  const base = elem.scratchOffset(geo);
  const write = new Int32Array(bar2.region.buffer, base, 2);
  const s8 = u8.subarray(base, base + elem.SCRATCH_SIZE);
  const waitedHost = waitUntil(() => Atomics.load(write, elem.W_HOST) >= elem.HOST_WROTE, timeoutMs, "the host's message");
  const hostMsg = elem.readMsg(s8, elem.HOST_MSG);
  const hostBlock = elem.sha256(s8.subarray(elem.HOST_BLOCK, elem.HOST_BLOCK + elem.BLOCK));
  report('from-host', { scratch: base, waited: waitedHost, message: hostMsg, blockSha256: hostBlock });

  const mine = elem.pattern(seed);
  s8.set(mine, elem.GUEST_BLOCK);
  elem.writeMsg(s8, elem.GUEST_MSG, `guest->host ivposition=${ivPosition} nonce=${i32[HEADER.NONCE] >>> 0} seed=${seed}`);
  Atomics.store(write, elem.W_GUEST, elem.GUEST_WROTE);
  // Ring the host peer: vector v, v+1 times.
  const rung: number[] = [];
  for (let value = 0; value < geo.vectors; value++) {
    for (let k = 0; k <= value; k++) Atomics.store(regs, 3, ((hostId & 0xffff) << 16) | value);
    rung.push(value + 1);
  }
  report('to-host', { blockSha256: elem.sha256(mine), rung });

  const waitedReply = waitUntil(() => Atomics.load(write, elem.W_HOST) >= elem.HOST_REPLIED, timeoutMs, "the host's reply");
  const reply = elem.readMsg(s8, elem.HOST_MSG);
  let pending = -1;
  let waitedPending = -1;
  if (pba) {
    const all = geo.vectors >= 32 ? 0xffffffff : (1 << geo.vectors) - 1;
    const part = pba;
    try {
      waitedPending = waitUntil(() => ((Atomics.load(part, 0) >>> 0) & all) === all >>> 0, 10000, 'pending MSI-X vectors');
    } catch {
      // Not all pending in time: the pending bits read below say which ones were.
    }
    pending = Atomics.load(part, 0) >>> 0;
  }
  report('reply', { waited: waitedReply, message: reply, pending, waitedPending });
  Atomics.store(write, elem.W_GUEST, elem.GUEST_SAW_REPLY);

  // ---- VFIO: bind, then interrupts through the addon -----------------------------
  if (!vfio) {
    Atomics.store(write, elem.W_GUEST, elem.GUEST_DONE);
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
  } catch (err) {
    out.error = (err as Error).message;
  }
  report('vfio', out);
  cfg.close();
  if (out.error) return 1;

  const irq = await vfioInterrupts(dev, geo.vectors, hostId, base2, rounds, timeoutMs);
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
  const addon = native();
  const res: Record<string, unknown> = {};
  let data: VfioDevice | undefined;
  let region: NativeRegion | undefined;
  let msixOn = false;
  const fds: number[] = [];
  const pollers: NativePoller[] = [];
  try {
    const t0 = process.hrtime.bigint();
    data = addon.vfioOpen(dev);
    res.openMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const dv = data;
    const reg = (index: number) => {
      const res2 = dv.regions.find((elem) => elem.index === index);
      if (!res2) throw new Error(`the device has no VFIO region ${index}`);
      return res2;
    };
    const bar0 = reg(VFIO.BAR0);
    const bar2 = reg(VFIO.BAR2);
    const cfg = reg(VFIO.CONFIG);
    const msix = data.irqs.find((irq) => irq.index === VFIO.MSIX);
    res.group = data.group;
    res.iommu = data.iommu;
    res.regions = data.regions
      .filter((res2) => res2.size > 0)
      .map((res2) => ({ index: res2.index, size: res2.size, offset: `0x${res2.offset.toString(16)}`, flags: res2.flags }));
    res.msixCount = msix?.count ?? 0;
    res.bar2Size = bar2.size;
    res.bar2Mmap = (bar2.flags & VFIO.REGION_MMAP) !== 0;
    res.command = addon.vfioEnableBusMaster(data.deviceFd, cfg.offset);
    res.ivPosition = addon.bar0Read32(data.deviceFd, bar0.offset, IVSHMEM.IV_POSITION);

    // BAR2, the region, mapped through the device fd.
    region = new addon.Region(data.deviceFd, bar2.size, bar2.offset);
    const i32 = new Int32Array(region.buffer);
    res.magic = [(i32[HEADER.MAGIC0] >>> 0).toString(16), (i32[HEADER.MAGIC1] >>> 0).toString(16)];
    res.nonce = i32[HEADER.NONCE] >>> 0;
    const geo = readHeader(i32, region.size);
    res.vectors = geo.vectors;
    const write = new Int32Array(region.buffer, scratch, 2);
    res.hostStateViaVfio = Atomics.load(write, elem.W_HOST);

    // MSI-X: one eventfd per vector. Unmasking delivers what was pending.
    if (res.msixCount !== vectors) throw new Error(`the device has ${String(res.msixCount)} MSI-X vectors, the domain ${vectors}`);
    for (let value = 0; value < vectors; value++) fds.push(addon.eventfd());
    addon.vfioSetMsix(data.deviceFd, fds);
    msixOn = true;
    const stale = new Array<number>(vectors).fill(0);
    for (let quiet = 0, k = 0; quiet < 2 && k < 50; k++) {
      await sleep(10);
      const got = fds.map((fd) => addon.drain(fd));
      got.forEach((count, value) => (stale[value] += count));
      quiet = got.some((count) => count > 0) ? 0 : quiet + 1;
    }
    res.stale = stale;

    const counts = new Array<number>(vectors).fill(0);
    const calls = new Array<number>(vectors).fill(0);
    let wake: (() => void) | null = null;
    fds.forEach((fd, value) => {
      pollers.push(
        new addon.Poller(
          fd,
          () => {
            calls[value]++;
            counts[value] += addon.drain(fd);
            const fn = wake;
            wake = null;
            fn?.();
          },
          false,
        ),
      );
    });
    const until = (cond: () => boolean, ms: number, what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        const check = () => {
          if (cond()) {
            clearTimeout(timer);
            resolve();
          } else wake = check;
        };
        check();
      });

    // 2. The host rings each vector once.
    Atomics.store(write, elem.W_GUEST, elem.GUEST_IRQ_READY);
    const t1 = process.hrtime.bigint();
    await until(() => counts.every((count) => count > 0), timeoutMs, 'an interrupt on every vector');
    res.firstMs = Number(process.hrtime.bigint() - t1) / 1e6;
    res.counts = [...counts];

    // 3. Ping-pong on vector 0.
    Atomics.store(write, elem.W_GUEST, elem.GUEST_PINGPONG);
    const rtt: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const before = calls[0];
      const target = process.hrtime.bigint();
      addon.bar0Notify(data.deviceFd, bar0.offset, hostId, 0);
      await until(() => calls[0] > before, 10000, `ping-pong round ${i}`);
      rtt.push(Number(process.hrtime.bigint() - target) / 1e3);
    }
    rtt.sort((lhs, rhs) => lhs - rhs);
    res.rounds = rounds;
    res.rttUs = rounds ? { min: Math.round(rtt[0]), median: Math.round(rtt[rtt.length >> 1]), max: Math.round(rtt[rtt.length - 1]) } : null;
    res.countsAfter = [...counts];
    Atomics.store(write, elem.W_GUEST, elem.GUEST_DONE);
  } catch (err) {
    res.error = (err as Error).message;
  } finally {
    for (const part of pollers) part.close();
    try {
      if (data && msixOn) addon.vfioSetMsix(data.deviceFd, []);
      region?.close();
      for (const fd of fds) addon.close(fd);
      if (data) addon.vfioClose(data);
      res.closed = data !== undefined && data.deviceFd === -1 && data.groupFd === -1 && data.containerFd === -1;
    } catch (err) {
      res.error ??= `cleanup: ${(err as Error).message}`;
    }
  }
  return res;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      report('error', { message: (err as Error).message, stack: (err as Error).stack });
      process.exitCode = 1;
    },
  );
}
