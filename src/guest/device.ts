/**
 * The guest side of a domain: inside a QEMU guest, the domain's region is BAR2
 * of an ivshmem-doorbell PCI device (1af4:1110) that QEMU joined to the zivm
 * daemon on the host. The device is driven from user space through VFIO (it
 * must be bound to vfio-pci first: bindVfio, as root, or `zivm guest setup`),
 * by the guest's agent (agent.ts), which opens it as a GuestDevice:
 *   - BAR2, mapped through the VFIO device fd, is the region;
 *   - BAR0's IVPosition register is the guest's peer id (the daemon handed it to QEMU);
 *   - writing BAR0's Doorbell register (peer << 16 | vector) rings a peer: QEMU
 *     writes that peer's vector eventfd, which the daemon gave it;
 *   - MSI-X vector v is routed to an eventfd: QEMU raises it when a peer (or a
 *     reap) writes the eventfd the daemon made for the guest's vector v.
 * Each process of the guest gets its share (a GuestLink, link.ts) from the agent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZivmGuestError } from '../errors';
import { viewSize } from '../shm/layout';
import { IVSHMEM, VFIO, native, NativeRegion, VfioDevice } from '../shm/native';

const PCI = '/sys/bus/pci/devices';
export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;

/** PCI addresses of the ivshmem devices of this machine (sorted). */
export function ivshmemDevices(): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(PCI);
  } catch {
    // No PCI devices in sysfs here: no ivshmem device either.
    return [];
  }
  const found: string[] = [];
  for (const dev of names) {
    try {
      const vendor = parseInt(fs.readFileSync(path.join(PCI, dev, 'vendor'), 'utf8'), 16);
      const device = parseInt(fs.readFileSync(path.join(PCI, dev, 'device'), 'utf8'), 16);
      if (vendor === IVSHMEM_VENDOR && device === IVSHMEM_DEVICE) found.push(dev);
    } catch {
      // A device whose ids cannot be read is not one we could open: skipped.
    }
  }
  return found.sort();
}

/** The driver a PCI device is bound to, or null. */
export function pciDriver(dev: string): string | null {
  const driverLink = path.join(PCI, dev, 'driver');
  return fs.existsSync(driverLink) ? path.basename(fs.readlinkSync(driverLink)) : null;
}

/**
 * Binds `dev` to vfio-pci (root only): driver_override, then a probe. The
 * vfio-pci module must be loaded. Returns the VFIO group node (/dev/vfio/N).
 */
export function bindVfio(dev: string): string {
  const current = pciDriver(dev);
  if (current !== 'vfio-pci') {
    if (current) fs.writeFileSync(path.join(PCI, dev, 'driver', 'unbind'), dev);
    fs.writeFileSync(path.join(PCI, dev, 'driver_override'), 'vfio-pci');
    fs.writeFileSync('/sys/bus/pci/drivers_probe', dev);
  }
  if (pciDriver(dev) !== 'vfio-pci') throw new Error(`${dev} did not bind to vfio-pci (is the vfio-pci module loaded?)`);
  const group = path.basename(fs.readlinkSync(path.join(PCI, dev, 'iommu_group')));
  return `/dev/vfio/${group}`;
}

/**
 * An ivshmem device opened through VFIO (by the guest's agent), every MSI-X
 * vector on an eventfd of its own: vector v is how peers ring the process the
 * agent handed v to.
 */
export class GuestDevice {
  readonly pci: string;
  readonly region: NativeRegion;
  /** Our peer id: BAR0 IVPosition. */
  readonly ivPosition: number;
  /** irqFds[v]: the eventfd MSI-X vector v triggers. */
  readonly irqFds: number[];
  readonly deviceFd: number;
  readonly bar0Offset: number;
  readonly bar2Offset: number;
  private readonly dev: VfioDevice;
  private closed = false;

  private constructor(pci: string, dev: VfioDevice, bar0: number, bar2: number, region: NativeRegion, ivPosition: number, irqFds: number[]) {
    this.pci = pci;
    this.dev = dev;
    this.deviceFd = dev.deviceFd;
    this.bar0Offset = bar0;
    this.bar2Offset = bar2;
    this.region = region;
    this.ivPosition = ivPosition;
    this.irqFds = irqFds;
  }

  /** Opens `pci` (bound to vfio-pci). Throws with code ERR_ZIVM_GUEST on any failure. */
  static open(pci: string): GuestDevice {
    const addon = native();
    let dev: VfioDevice;
    try {
      dev = addon.vfioOpen(pci);
    } catch (err) {
      throw new ZivmGuestError(`cannot open ivshmem device ${pci} through VFIO (bound to ${pciDriver(pci) ?? 'no driver'}): ${(err as Error).message}`);
    }
    let region: NativeRegion | undefined;
    const irqFds: number[] = [];
    try {
      const vfioRegion = (index: number) => {
        const info = dev.regions.find((candidate) => candidate.index === index);
        if (!info || info.size === 0) throw new ZivmGuestError(`ivshmem device ${pci} has no VFIO region ${index}`);
        return info;
      };
      const bar0 = vfioRegion(VFIO.BAR0);
      const bar2 = vfioRegion(VFIO.BAR2);
      const cfg = vfioRegion(VFIO.CONFIG);
      const msix = dev.irqs.find((irq) => irq.index === VFIO.MSIX);
      if (!msix || msix.count < 1) throw new ZivmGuestError(`ivshmem device ${pci} has no MSI-X vectors (QEMU's ivshmem-doorbell with msi=on is needed)`);
      addon.vfioEnableBusMaster(dev.deviceFd, cfg.offset);
      const ivPosition = addon.bar0Read32(dev.deviceFd, bar0.offset, IVSHMEM.IV_POSITION);
      if (ivPosition < 0 || ivPosition > 0xffff) throw new ZivmGuestError(`ivshmem device ${pci} has no peer id yet (IVPosition ${ivPosition})`);
      region = new addon.Region(dev.deviceFd, bar2.size, bar2.offset, viewSize(bar2.size));
      for (let vector = 0; vector < Math.min(msix.count, 0x3fff); vector++) irqFds.push(addon.eventfd());
      addon.vfioSetMsix(dev.deviceFd, irqFds);
      for (const fd of irqFds) addon.drain(fd); // what QEMU had pending fires on unmask; later stale ones are harmless
      return new GuestDevice(pci, dev, bar0.offset, bar2.offset, region, ivPosition, irqFds);
    } catch (err) {
      region?.close();
      for (const fd of irqFds) addon.close(fd);
      addon.vfioClose(dev);
      throw err;
    }
  }

  /** Rings vector `vector` of peer `peer` (ours included: QEMU holds our own eventfds too). */
  ring(peer: number, vector: number): void {
    if (this.closed) return;
    native().bar0Notify(this.dev.deviceFd, this.bar0Offset, peer, vector);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const addon = native();
    try {
      addon.vfioSetMsix(this.dev.deviceFd, []);
    } catch {
      // Closing the device below ends its MSI-X routing as well: nothing is lost if this failed.
    }
    this.region.close();
    for (const fd of this.irqFds) addon.close(fd);
    addon.vfioClose(this.dev);
  }
}
