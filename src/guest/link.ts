/**
 * A guest process's side of the guest's device (see device.ts and agent.ts):
 * which agent to join, joining it, and the share it hands out.
 */
import fs from 'node:fs';
import path from 'node:path';
import { guestSetting } from '../config';
import { ZivmGuestError } from '../errors';
import * as Lay from '../shm/layout';
import { native, NativeRegion } from '../shm/native';

/** Version of the agent's protocol (its first message). */
export const AGENT_PROTOCOL = 1;
export const ENOSPC = 28;

/** A guest's node id: above every host one (bit 50, the IVPosition, and the region's nonce in the low 32 bits). */
export function guestNodeId(ivPosition: number, i32: Int32Array): number {
  const nonce = i32[Lay.H.NONCE] >>> 0;
  return (0x40000 + (ivPosition & 0xffff)) * 0x100000000 + nonce;
}

/**
 * A process's share of the guest's device, handed out by the agent: the
 * region (BAR2 mapped through the device fd), BAR0 for doorbells, and the
 * eventfd of the MSI-X vector peers ring this process with.
 */
export class GuestLink {
  constructor(
    readonly pci: string,
    readonly ivPosition: number,
    readonly vector: number,
    readonly irqFd: number,
    readonly region: NativeRegion,
    private readonly deviceFd: number,
    private readonly bar0Offset: number,
  ) {}

  private closed = false;

  /** Rings vector `vector` of peer `peer`: our own vector directly, anything else through BAR0's Doorbell. */
  ring(peer: number, vector: number): void {
    if (this.closed) return;
    if (peer === this.ivPosition && vector === this.vector) native().notify(this.irqFd);
    else native().bar0Notify(this.deviceFd, this.bar0Offset, peer, vector);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const N = native();
    this.region.close();
    N.close(this.irqFd);
    N.close(this.deviceFd);
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
    return [];
  }
  return names
    .map((n) => /^guest-(.+)\.sock$/.exec(n)?.[1])
    .filter((x): x is string => !!x)
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
  const v = guestSetting(env);
  if (v === 'off') return null;
  if (typeof v === 'object' && 'agent' in v) return { socket: v.agent, pci: /guest-(.+)\.sock$/.exec(v.agent)?.[1] ?? '' };
  if (typeof v === 'object') return { socket: agentSocketPath(v.pci), pci: v.pci };
  const found = agentSockets();
  if (found.length === 1) return { socket: agentSocketPath(found[0]), pci: found[0] };
  if (v === 'unset') return null;
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
  const N = native();
  let fd: number;
  try {
    fd = N.unixConnect(socket);
  } catch (e) {
    throw new ZivmGuestError(`cannot reach the zivm guest agent at ${socket} (${(e as Error).message}): run \`zivm guest setup\` as root`);
  }
  const opened: number[] = [];
  try {
    const deadline = Date.now() + JOIN_TIMEOUT_MS;
    const next = (): [number, number] => {
      for (;;) {
        const m = N.recvMsg(fd);
        if (m === false) throw new ZivmGuestError('the zivm guest agent closed the connection while we joined');
        if (m !== null) {
          if (m[1] >= 0) opened.push(m[1]);
          return m;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new ZivmGuestError('the zivm guest agent did not answer in time');
        N.waitReadable(fd, left);
      }
    };
    const [version] = next();
    if (version === -ENOSPC) throw new ZivmGuestError(`the zivm guest agent at ${socket} has no vector left for another process (QEMU's ivshmem-doorbell vectors= sets how many)`);
    if (version !== AGENT_PROTOCOL) throw new ZivmGuestError(`the zivm guest agent speaks protocol ${version}, expected ${AGENT_PROTOCOL}`);
    const [id] = next();
    const [gen] = next();
    const [vector, irqFd] = next();
    const [ivPosition, deviceFd] = next();
    const [bar0Offset] = next();
    const [bar2Offset] = next();
    const [size] = next();
    if (irqFd < 0 || deviceFd < 0) throw new ZivmGuestError('the zivm guest agent did not pass its file descriptors');
    const region = new (N.Region)(deviceFd, size, bar2Offset);
    return { id, gen, fd, link: new GuestLink(pci, ivPosition, vector, irqFd, region, deviceFd, bar0Offset) };
  } catch (e) {
    for (const f of opened) {
      try {
        N.close(f);
      } catch {
        /* closed */
      }
    }
    N.close(fd);
    throw e;
  }
}
