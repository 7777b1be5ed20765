/**
 * A guest process's side of the guest's device (see device.ts and agent.ts):
 * which agent to join, joining it, and the share it hands out.
 */
import fs from 'node:fs';
import path from 'node:path';
import { guestSetting } from '../config';
import { ZivmGuestError } from '../errors';
import * as Lay from '../shm/layout';
import { closeQuiet, native, NativeRegion } from '../shm/native';

/** Version of the agent's protocol (its first message). */
export const AGENT_PROTOCOL = 2;
export const ENOSPC = 28;
export const EDQUOT = 122;
export const EACCES = 13;
/** How a process reaches BAR0's registers: maps the resource file it was given, or writes the device fd. */
export const BAR0_MAP = 1;
export const BAR0_WRITE = 2;
/** ivshmem's registers: BAR0's size. */
export const BAR0_SIZE = 256;
/** BAR0's Doorbell register, as a 32-bit word index: (peer << 16) | vector rings that peer's vector. */
const DOORBELL_WORD = 3;

/** How a process rings other peers: a mapped BAR0, or the device fd and BAR0's offset in it. */
type Bar0 = { map: NativeRegion } | { deviceFd: number; offset: number };

/** A guest's node id: above every host one (bit 50, the IVPosition, and the region's nonce in the low 32 bits). */
export function guestNodeId(ivPosition: number, i32: Int32Array): number {
  const nonce = i32[Lay.HEADER.NONCE] >>> 0;
  return (0x40000 + (ivPosition & 0xffff)) * 0x100000000 + nonce;
}

/**
 * A process's share of the guest's device, handed out by the agent: the
 * region (BAR2) and BAR0 for doorbells, each mapped from the device's sysfs
 * resource file, and the eventfd of the MSI-X vector peers ring this process
 * with. Not the device itself: its interrupts stay the agent's.
 */
export class GuestLink {
  private readonly doorbell: Int32Array | undefined;

  constructor(
    readonly pci: string,
    readonly ivPosition: number,
    readonly vector: number,
    readonly irqFd: number,
    readonly region: NativeRegion,
    private readonly bar0: Bar0,
  ) {
    if ('map' in bar0) this.doorbell = new Int32Array(bar0.map.buffer, 0, DOORBELL_WORD + 1);
  }

  private closed = false;

  /** Rings vector `vector` of peer `peer`: our own vector directly, anything else through BAR0's Doorbell. */
  ring(peer: number, vector: number): void {
    if (this.closed) return;
    if (peer === this.ivPosition && vector === this.vector) native().notify(this.irqFd);
    // One 32-bit store to the register, ordered after our writes to the region.
    else if (this.doorbell) Atomics.store(this.doorbell, DOORBELL_WORD, ((peer & 0xffff) << 16) | (vector & 0xffff));
    else if ('deviceFd' in this.bar0) native().bar0Notify(this.bar0.deviceFd, this.bar0.offset, peer, vector);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const addon = native();
    this.region.close();
    if ('map' in this.bar0) this.bar0.map.close();
    else addon.close(this.bar0.deviceFd);
    addon.close(this.irqFd);
  }
}

/** The folder of the agents' sockets (root's, inside the guest). */
export const AGENT_DIR = '/run/zivm';

/** The socket of the agent that owns the device at `pci`. */
export function agentSocketPath(pci: string): string {
  return path.join(AGENT_DIR, `guest-${pci}.sock`);
}

/** The PCI addresses that have an agent socket in AGENT_DIR. */
export function agentSockets(): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(AGENT_DIR);
  } catch {
    // No agents' folder: no agent runs in this guest.
    return [];
  }
  return names
    .map((name) => /^guest-(.+)\.sock$/.exec(name)?.[1])
    .filter((pci): pci is string => !!pci)
    .sort();
}

/**
 * Whether and through which agent this process joins as a guest process
 * (config.guestSetting): the agent named by ZIVM_GUEST_AGENT or ZIVM_GUEST_PCI;
 * for `auto` or no setting, the only agent of this machine, if there is exactly
 * one (`zivm guest setup` started it). Returns the socket path and the
 * device's address, `null` when this is not a guest (join the host's daemon),
 * or throws ZivmGuestError when the setting names nothing usable.
 */
export function guestAgentFromEnv(env: NodeJS.ProcessEnv = process.env): { socket: string; pci: string } | null {
  const value = guestSetting(env);
  if (value === 'off') return null;
  if (typeof value === 'object' && 'agent' in value) return { socket: value.agent, pci: /guest-(.+)\.sock$/.exec(value.agent)?.[1] ?? '' };
  if (typeof value === 'object') return { socket: agentSocketPath(value.pci), pci: value.pci };
  const found = agentSockets();
  if (found.length === 1) return { socket: agentSocketPath(found[0]), pci: found[0] };
  if (value === 'unset') return null;
  throw new ZivmGuestError(
    found.length
      ? `ZIVM_GUEST_PCI=auto: ${found.length} guest agents (${found.join(', ')}): name one`
      : 'ZIVM_GUEST_PCI=auto: no zivm guest agent running (run `zivm guest setup` as root)',
  );
}

const JOIN_TIMEOUT_MS = 5000;

/**
 * Joins through the agent at `socket`: returns our peer id and generation,
 * the link (region, doorbells, interrupts) and the agent socket, which stays
 * open while we are a member. Throws ERR_ZIVM_GUEST.
 */
export function joinAgent(socket: string, pci: string): { id: number; gen: number; link: GuestLink; fd: number } {
  const addon = native();
  let fd: number;
  try {
    fd = addon.unixConnect(socket);
  } catch (err) {
    throw new ZivmGuestError(`cannot reach the zivm guest agent at ${socket} (${(err as Error).message}): run \`zivm guest setup\` as root`);
  }
  const opened: number[] = [];
  try {
    const deadline = Date.now() + JOIN_TIMEOUT_MS;
    const next = (): [number, number] => {
      for (;;) {
        const msg = addon.recvMsg(fd);
        if (msg === false) throw new ZivmGuestError('the zivm guest agent closed the connection while we joined');
        if (msg !== null) {
          if (msg[1] >= 0) opened.push(msg[1]);
          return msg;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new ZivmGuestError('the zivm guest agent did not answer in time');
        addon.waitReadable(fd, left);
      }
    };
    const [version] = next();
    if (version === -ENOSPC)
      throw new ZivmGuestError(`the zivm guest agent at ${socket} has no vector left for another process (QEMU's ivshmem-doorbell vectors= sets how many)`);
    if (version === -EDQUOT)
      throw new ZivmGuestError(`the zivm guest agent at ${socket} gives this user no more vectors (zivm guest setup --per-uid sets how many)`);
    if (version === -EACCES)
      throw new ZivmGuestError(
        `the zivm guest agent at ${socket} lets only root join (this guest's kernel keeps the device's memory to its driver: boot it with iomem=relaxed)`,
      );
    if (version !== AGENT_PROTOCOL) throw new ZivmGuestError(`the zivm guest agent speaks protocol ${version}, expected ${AGENT_PROTOCOL}`);
    const [id] = next();
    const [gen] = next();
    const [vector, irqFd] = next();
    const [ivPosition, bar2Fd] = next();
    const [bar2Offset] = next();
    const [size] = next();
    const [bar0Offset, bar0Fd] = next();
    const [bar0Access] = next();
    if (irqFd < 0 || bar2Fd < 0 || bar0Fd < 0) throw new ZivmGuestError('the zivm guest agent did not pass its file descriptors');
    if (bar0Access !== BAR0_MAP && bar0Access !== BAR0_WRITE) throw new ZivmGuestError(`the zivm guest agent says BAR0 is reached by ${bar0Access}`);
    const region = new addon.Region(bar2Fd, size, bar2Offset, Lay.viewSize(size));
    let bar0: Bar0;
    try {
      bar0 = bar0Access === BAR0_MAP ? { map: new addon.Region(bar0Fd, BAR0_SIZE, bar0Offset) } : { deviceFd: bar0Fd, offset: bar0Offset };
    } catch (err) {
      region.close();
      throw err;
    }
    // The mappings stay; the fds are not needed any more (but the one BAR0 is written through).
    for (const mapped of new Set([bar2Fd, bar0Access === BAR0_MAP ? bar0Fd : -1])) {
      if (mapped < 0 || (bar0Access === BAR0_WRITE && mapped === bar0Fd)) continue;
      addon.close(mapped);
      opened.splice(opened.indexOf(mapped), 1);
    }
    return { id, gen, fd, link: new GuestLink(pci, ivPosition, vector, irqFd, region, bar0) };
  } catch (err) {
    for (const openedFd of opened) closeQuiet(openedFd);
    addon.close(fd);
    throw err;
  }
}
