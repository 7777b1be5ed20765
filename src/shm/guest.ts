/**
 * The guest side of a domain: inside a QEMU guest, the domain's region is BAR2
 * of an ivshmem-doorbell PCI device (1af4:1110) that QEMU joined to the zivm
 * daemon on the host. The device is driven from user space through VFIO (it
 * must be bound to vfio-pci first: bindVfio, as root, or `zivm guest setup`):
 *   - BAR2, mapped through the VFIO device fd, is the region;
 *   - BAR0's IVPosition register is our peer id (the daemon handed it to QEMU);
 *   - writing BAR0's Doorbell register (peer << 16 | vector) rings a peer: QEMU
 *     writes that peer's vector eventfd, which the daemon gave it;
 *   - MSI-X vector 0 is routed to an eventfd of ours: QEMU raises it when a peer
 *     (or the daemon's reap) writes the eventfd the daemon made for our vector 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IVSHMEM, VFIO, native, NativeRegion, VfioDevice } from './native';

const PCI = '/sys/bus/pci/devices';
export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;

/** PCI addresses of the ivshmem devices of this machine (sorted). */
export function ivshmemDevices(): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(PCI);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const dev of names) {
    try {
      const vendor = parseInt(fs.readFileSync(path.join(PCI, dev, 'vendor'), 'utf8'), 16);
      const device = parseInt(fs.readFileSync(path.join(PCI, dev, 'device'), 'utf8'), 16);
      if (vendor === IVSHMEM_VENDOR && device === IVSHMEM_DEVICE) out.push(dev);
    } catch {
      /* not readable: not ours */
    }
  }
  return out.sort();
}

/** The driver a PCI device is bound to, or null. */
export function pciDriver(dev: string): string | null {
  const drv = path.join(PCI, dev, 'driver');
  return fs.existsSync(drv) ? path.basename(fs.readlinkSync(drv)) : null;
}

/**
 * Binds `dev` to vfio-pci (root only): driver_override, then a probe. The
 * vfio-pci module must be loaded. Returns the VFIO group node (/dev/vfio/N).
 */
export function bindVfio(dev: string): string {
  const cur = pciDriver(dev);
  if (cur !== 'vfio-pci') {
    if (cur) fs.writeFileSync(path.join(PCI, dev, 'driver', 'unbind'), dev);
    fs.writeFileSync(path.join(PCI, dev, 'driver_override'), 'vfio-pci');
    fs.writeFileSync('/sys/bus/pci/drivers_probe', dev);
  }
  if (pciDriver(dev) !== 'vfio-pci') throw new Error(`${dev} did not bind to vfio-pci (is the vfio-pci module loaded?)`);
  const group = path.basename(fs.readlinkSync(path.join(PCI, dev, 'iommu_group')));
  return `/dev/vfio/${group}`;
}

/** An ivshmem device opened through VFIO, with vector 0 on an eventfd. */
export class GuestDevice {
  readonly pci: string;
  readonly region: NativeRegion;
  /** Our peer id: BAR0 IVPosition. */
  readonly ivPosition: number;
  /** The eventfd MSI-X vector 0 triggers. */
  readonly irqFd: number;
  private readonly dev: VfioDevice;
  private readonly bar0: number;
  private closed = false;

  private constructor(pci: string, dev: VfioDevice, bar0: number, region: NativeRegion, ivPosition: number, irqFd: number) {
    this.pci = pci;
    this.dev = dev;
    this.bar0 = bar0;
    this.region = region;
    this.ivPosition = ivPosition;
    this.irqFd = irqFd;
  }

  /** Opens `pci` (bound to vfio-pci). Throws with code ERR_ZIVM_GUEST on any failure. */
  static open(pci: string): GuestDevice {
    const N = native();
    let dev: VfioDevice;
    try {
      dev = N.vfioOpen(pci);
    } catch (e) {
      throw guestError(`cannot open ivshmem device ${pci} through VFIO (bound to ${pciDriver(pci) ?? 'no driver'}): ${(e as Error).message}`);
    }
    let region: NativeRegion | undefined;
    let irqFd = -1;
    try {
      const reg = (index: number) => {
        const r = dev.regions.find((x) => x.index === index);
        if (!r || r.size === 0) throw guestError(`ivshmem device ${pci} has no VFIO region ${index}`);
        return r;
      };
      const bar0 = reg(VFIO.BAR0);
      const bar2 = reg(VFIO.BAR2);
      const cfg = reg(VFIO.CONFIG);
      const msix = dev.irqs.find((q) => q.index === VFIO.MSIX);
      if (!msix || msix.count < 1) throw guestError(`ivshmem device ${pci} has no MSI-X vectors (QEMU's ivshmem-doorbell with msi=on is needed)`);
      N.vfioEnableBusMaster(dev.deviceFd, cfg.offset);
      const ivPosition = N.bar0Read32(dev.deviceFd, bar0.offset, IVSHMEM.IV_POSITION);
      if (ivPosition < 0 || ivPosition > 0xffff) throw guestError(`ivshmem device ${pci} has no peer id yet (IVPosition ${ivPosition})`);
      region = new (N.Region)(dev.deviceFd, bar2.size, bar2.offset);
      irqFd = N.eventfd();
      N.vfioSetMsix(dev.deviceFd, [irqFd]);
      N.drain(irqFd); // what QEMU had pending fires on unmask; later stale ones are harmless
      return new GuestDevice(pci, dev, bar0.offset, region, ivPosition, irqFd);
    } catch (e) {
      region?.close();
      if (irqFd >= 0) N.close(irqFd);
      N.vfioClose(dev);
      throw e;
    }
  }

  /** Rings `peer`'s vector 0 (our own: our eventfd directly). */
  ring(peer: number): void {
    if (this.closed) return;
    if (peer === this.ivPosition) native().notify(this.irqFd);
    else native().bar0Notify(this.dev.deviceFd, this.bar0, peer, 0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const N = native();
    try {
      N.vfioSetMsix(this.dev.deviceFd, []);
    } catch {
      /* closing anyway */
    }
    this.region.close();
    N.close(this.irqFd);
    N.vfioClose(this.dev);
  }
}

/**
 * Which device ZIVM_GUEST_PCI names: a PCI address, or `auto` for the only
 * ivshmem device bound to vfio-pci. Undefined when unset or nothing fits.
 */
export function guestPciFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.ZIVM_GUEST_PCI;
  if (!v) return undefined;
  if (v !== 'auto') return v;
  const usable = ivshmemDevices().filter((d) => pciDriver(d) === 'vfio-pci');
  return usable.length === 1 ? usable[0] : undefined;
}

function guestError(message: string): Error {
  const e = new Error(message) as Error & { code: string };
  e.code = 'ERR_ZIVM_GUEST';
  return e;
}
