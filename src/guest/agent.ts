/**
 * The in-guest agent: the one process of a VM guest that owns the ivshmem
 * device (opened through VFIO), so that any number of Node processes in the
 * guest can be peers of the domain at once, each a peer of its own.
 *
 * The device is the guest's single membership of the domain (QEMU's peer id,
 * BAR0 IVPosition) with `vectors` MSI-X vectors. The agent routes every vector
 * to an eventfd and hands each joining process:
 *   - a peer entry of its own, claimed in the region's peer table (from the top;
 *     the daemon hands out ids from the bottom, both by CAS), whose PEER.ROUTE says
 *     "ring me as vector v of the guest's peer id";
 *   - vector v's eventfd (its interrupts), and BAR2 (the region) and BAR0 (to
 *     write the Doorbell register) as fds of the device's sysfs resource files,
 *     which map those BARs and nothing else: not the VFIO device fd, with
 *     which a process could re-route or mask the interrupts of the guest's
 *     other processes, or reset the device. A kernel that keeps the memory of
 *     a device bound to a driver from being mapped through sysfs (strict
 *     devmem, the default: boot the guest with iomem=relaxed) leaves only the
 *     device fd to hand out: then only root's processes, which could open the
 *     device themselves, may join.
 * A uid other than root holds at most `perUid` members at once (half the
 * vectors by default), so that one user of the guest cannot take them all.
 * A process that goes away (its socket to the agent closes: exit, crash,
 * SIGKILL) is reaped like the daemon reaps a host process: its listeners freed,
 * its connections flagged dead, the other ends woken. When the guest itself
 * leaves (QEMU exits), the daemon reaps the guest's processes with it.
 *
 * Protocol (unix socket, 8-byte little-endian values as in ivshmem-server's,
 * fds in SCM_RIGHTS): the agent sends, in order,
 *   AGENT_PROTOCOL | peer id | gen | vector + its eventfd | IVPosition + the
 *   BAR2 fd | BAR2 offset | BAR2 size | BAR0 offset + the BAR0 fd | how BAR0
 *   is reached (BAR0_MAP: map it, BAR0_WRITE: pwrite the device fd)
 * or a single negative errno (ENOSPC: every vector is taken; EDQUOT: the
 * process's uid holds its share; EACCES: only root may join) and closes. The
 * process then keeps the socket open for as long as it is a member.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZivmGuestError } from '../errors';
import { publishableAddrs, publishAddrs } from '../shm/addrs';
import * as Lay from '../shm/layout';
import { closeQuiet, native, NativePoller } from '../shm/native';
import * as Peers from '../shm/peers';
import { GuestDevice } from './device';
import { AGENT_PROTOCOL, BAR0_MAP, BAR0_SIZE, BAR0_WRITE, EACCES, EDQUOT, ENOSPC, agentSocketPath, guestNodeId } from './link';

const PCI_DEVICES = '/sys/bus/pci/devices';

interface SysfsBars {
  bar2Fd: number;
  bar0Fd: number;
}

/**
 * Opens BAR2 and BAR0 of `pci` as its sysfs resource files, and maps BAR2
 * once to be sure the kernel lets them be mapped. Throws if it does not.
 */
function sysfsBars(pci: string, size: number): SysfsBars {
  const addon = native();
  const bar2Fd = fs.openSync(path.join(PCI_DEVICES, pci, 'resource2'), 'r+');
  let bar0Fd = -1;
  try {
    bar0Fd = fs.openSync(path.join(PCI_DEVICES, pci, 'resource0'), 'r+');
    if (fs.fstatSync(bar2Fd).size !== size) throw new ZivmGuestError(`resource2 is not the size of the region (${size} bytes)`);
    if (fs.fstatSync(bar0Fd).size < BAR0_SIZE) throw new ZivmGuestError(`resource0 is smaller than ivshmem's ${BAR0_SIZE} bytes of registers`);
    new addon.Region(bar2Fd, size, 0).close();
    new addon.Region(bar0Fd, BAR0_SIZE, 0).close();
    return { bar2Fd, bar0Fd };
  } catch (err) {
    closeQuiet(bar2Fd);
    if (bar0Fd >= 0) closeQuiet(bar0Fd);
    throw err;
  }
}

interface Member {
  fd: number;
  uid: number;
  id: number;
  gen: number;
  vector: number;
  pid: number;
  poller: NativePoller;
}

export interface AgentOptions {
  /** Socket path (default: /run/zivm/guest-<pci>.sock). */
  socket?: string;
  /** Socket mode (default 0o600: root's processes only). */
  mode?: number;
  /** Members one uid other than root may be at once (default: half the vectors, at least 1). */
  perUid?: number;
  log?: (line: string) => void;
}

export class GuestAgent {
  readonly dev: GuestDevice;
  readonly socket: string;
  readonly geo: Lay.Geometry;
  private readonly i32: Int32Array;
  private readonly listenFd: number;
  private readonly acceptPoller: NativePoller;
  private readonly members = new Map<number, Member>();
  private readonly log: (line: string) => void;
  private readonly perUid: number;
  /** The device's BAR2 and BAR0 as sysfs resource files (what a member maps), if the kernel lets them be mapped. */
  private readonly bars: SysfsBars | undefined;
  private closed = false;
  /** Entries of this guest's processes that no socket of ours stands for (an agent before us was killed): their pids are watched. */
  private readonly adopted = new Map<number, { gen: number; pid: number }>();
  private readonly adoptTimer: NodeJS.Timeout;

  private constructor(dev: GuestDevice, socket: string, listenFd: number, geo: Lay.Geometry, bars: SysfsBars | undefined, opts: AgentOptions) {
    const log = opts.log ?? (() => undefined);
    this.dev = dev;
    this.bars = bars;
    this.perUid = opts.perUid ?? Math.max(1, Math.floor(dev.irqFds.length / 2));
    this.socket = socket;
    this.listenFd = listenFd;
    this.geo = geo;
    this.i32 = new Int32Array(dev.region.buffer);
    this.log = log;
    this.acceptPoller = new (native().Poller)(listenFd, () => this.onAccept(), false);
    // Processes that joined through an agent before us: reaped once their pid is gone.
    for (let id = 0; id < Math.min(geo.maxPeers, 0x10000); id++) {
      if (Peers.kindOf(this.i32, geo, id) !== 'guest-process' || Peers.isFree(this.i32, geo, id)) continue;
      if (Peers.routeOf(this.i32, geo, id)[0] !== dev.ivPosition) continue;
      const pid = Peers.pidOf(this.i32, geo, id);
      this.adopted.set(id, { gen: Peers.genOf(this.i32, geo, id), pid });
      log(`peer ${id} (pid ${pid}) joined through an earlier agent: watching it`);
    }
    this.adoptTimer = setInterval(() => this.checkAdopted(), 500);
    this.checkAdopted();
  }

  /** Reaps adopted entries whose process has gone (or whose pid was never known). */
  private checkAdopted(): void {
    for (const [id, entry] of this.adopted) {
      if (Peers.genOf(this.i32, this.geo, id) !== entry.gen || Peers.isFree(this.i32, this.geo, id)) {
        this.adopted.delete(id);
        continue;
      }
      let alive = entry.pid > 0;
      if (alive) {
        try {
          process.kill(entry.pid, 0);
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) continue;
      this.adopted.delete(id);
      Peers.reap(this.i32, this.geo, id, entry.gen, (peer) => this.wake(peer));
      this.log(`peer ${id} left (pid ${entry.pid}, joined through an earlier agent)`);
    }
  }

  /** Opens the device, announces the guest in its peer entry and listens. Throws ERR_ZIVM_GUEST. */
  static start(pci: string, opts: AgentOptions = {}): GuestAgent {
    const addon = native();
    const socket = opts.socket ?? agentSocketPath(pci);
    const log = opts.log ?? (() => undefined);
    const dev = GuestDevice.open(pci);
    let listenFd = -1;
    let bars: SysfsBars | undefined;
    try {
      try {
        bars = sysfsBars(pci, dev.region.size);
      } catch (err) {
        log(
          `BAR2 cannot be mapped through sysfs (${(err as Error).message}): the kernel keeps the memory of a device bound ` +
            'to a driver to that driver (boot the guest with iomem=relaxed). Only root may join: other users would need the device itself',
        );
      }
      const i32 = new Int32Array(dev.region.buffer);
      const geo = Lay.readHeader(i32, dev.region.size);
      const id = dev.ivPosition;
      if (id >= geo.maxPeers) throw new ZivmGuestError(`peer id ${id} (IVPosition) is outside the region's peer table`);
      if (!Peers.inUse(i32, geo, id)) throw new ZivmGuestError(`peer entry ${id} is not handed out by the daemon`);
      // The guest's own entry (QEMU's pid stays: the one the host can act on) says which node it is.
      Peers.announce(i32, geo, id, { kind: 'guest', node: guestNodeId(id, i32), route: 0 });
      publishAddrs(i32, geo, id, publishableAddrs());
      Peers.goAlive(i32, geo, id);

      fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
      if (fs.existsSync(socket)) {
        // A live agent answers; a stale socket file does not.
        let live = false;
        try {
          addon.close(addon.unixConnect(socket));
          live = true;
        } catch {
          // Nobody answers: the file was left by an agent that died.
          fs.rmSync(socket, { force: true });
        }
        if (live) throw new ZivmGuestError(`an agent already serves ${pci} at ${socket}`);
      }
      listenFd = addon.unixListen(socket, 64);
      fs.chmodSync(socket, opts.mode ?? 0o600);
      const agent = new GuestAgent(dev, socket, listenFd, geo, bars, { ...opts, log });
      log(`agent for ${pci}: guest peer ${id}, ${dev.irqFds.length} vectors, ${geo.nslots} slots, socket ${socket}`);
      return agent;
    } catch (err) {
      if (listenFd >= 0) {
        addon.close(listenFd);
        fs.rmSync(socket, { force: true });
      }
      if (bars) for (const fd of [bars.bar2Fd, bars.bar0Fd]) closeQuiet(fd);
      dev.close();
      throw err;
    }
  }

  /** The processes that are members now. */
  list(): { id: number; gen: number; vector: number; pid: number }[] {
    return [...this.members.values()].map(({ id, gen, vector, pid }) => ({ id, gen, vector, pid }));
  }

  private onAccept(): void {
    const addon = native();
    for (;;) {
      let fd: number;
      try {
        fd = addon.unixAccept(this.listenFd);
      } catch (err) {
        this.log(`accept: ${(err as Error).message}`);
        return;
      }
      if (fd < 0) return;
      try {
        this.admit(fd);
      } catch (err) {
        this.log(`cannot admit a process: ${(err as Error).message}`);
        closeQuiet(fd);
      }
    }
  }

  private admit(fd: number): void {
    const addon = native();
    const { i32, geo, dev } = this;
    let pid = 0;
    let uid = -1;
    try {
      ({ pid, uid } = addon.peerCred(fd));
    } catch {
      // No credentials for the socket: the process's pid stays 0 (unknown); its socket still tells when it leaves.
    }
    if (uid !== 0 && !this.bars) {
      this.log(`refused pid ${pid}: uid ${uid} is not root, and this kernel lets only the device itself be handed out (boot with iomem=relaxed)`);
      addon.sendMsg(fd, -EACCES, -1);
      addon.close(fd);
      return;
    }
    if (uid !== 0) {
      const held = [...this.members.values()].filter((other) => other.uid === uid).length;
      if (held >= this.perUid) {
        this.log(`refused pid ${pid}: uid ${uid} holds ${held} of the ${dev.irqFds.length} vectors (at most ${this.perUid} per uid; see --per-uid)`);
        addon.sendMsg(fd, -EDQUOT, -1);
        addon.close(fd);
        return;
      }
    }
    const used = new Set([...this.members.values()].map((other) => other.vector));
    for (const id of this.adopted.keys()) used.add(Peers.routeOf(i32, geo, id)[1]);
    let vector = -1;
    for (let candidate = 0; candidate < dev.irqFds.length; candidate++) {
      if (!used.has(candidate)) {
        vector = candidate;
        break;
      }
    }
    const id = vector >= 0 ? Peers.claim(i32, geo, 'top') : -1;
    if (id < 0) {
      this.log(`refused pid ${pid}: ${vector < 0 ? `all ${dev.irqFds.length} vectors are taken` : 'the peer table is full'}`);
      addon.sendMsg(fd, -ENOSPC, -1);
      addon.close(fd);
      return;
    }
    const gen = Peers.admit(i32, geo, id, {
      pid,
      kind: 'guest-process',
      node: Peers.nodeOf(i32, geo, dev.ivPosition),
      route: Lay.makeRoute(dev.ivPosition, vector),
    });
    addon.drain(dev.irqFds[vector]);
    try {
      addon.sendMsg(fd, AGENT_PROTOCOL, -1);
      addon.sendMsg(fd, id, -1);
      addon.sendMsg(fd, gen, -1);
      addon.sendMsg(fd, vector, dev.irqFds[vector]);
      const bars = this.bars;
      addon.sendMsg(fd, dev.ivPosition, bars ? bars.bar2Fd : dev.deviceFd);
      addon.sendMsg(fd, bars ? 0 : dev.bar2Offset, -1);
      addon.sendMsg(fd, dev.region.size, -1);
      addon.sendMsg(fd, bars ? 0 : dev.bar0Offset, bars ? bars.bar0Fd : dev.deviceFd);
      addon.sendMsg(fd, bars ? BAR0_MAP : BAR0_WRITE, -1);
    } catch (err) {
      Peers.reap(i32, geo, id, gen, (peer) => this.wake(peer));
      throw err;
    }
    const member: Member = { fd, uid, id, gen, vector, pid, poller: undefined as unknown as NativePoller };
    member.poller = new addon.Poller(fd, () => this.onMember(member), false);
    this.members.set(id, member);
    this.log(`peer ${id} joined (pid ${pid}, vector ${vector})`);
  }

  /** A member's socket is readable: it closed (nothing else is expected from it). */
  private onMember(member: Member): void {
    const addon = native();
    for (;;) {
      let msg: [number, number] | null | false;
      try {
        msg = addon.recvMsg(member.fd);
      } catch {
        // A broken socket: the member is gone, as at the end of its stream.
        msg = false;
      }
      if (msg === null) return;
      if (msg === false) break;
      if (msg[1] >= 0) addon.close(msg[1]);
    }
    this.leave(member);
  }

  private leave(member: Member): void {
    const addon = native();
    if (!this.members.delete(member.id)) return;
    member.poller.close();
    closeQuiet(member.fd);
    if (Peers.genOf(this.i32, this.geo, member.id) === member.gen && !Peers.isFree(this.i32, this.geo, member.id)) {
      Peers.reap(this.i32, this.geo, member.id, member.gen, (peer) => this.wake(peer));
    }
    addon.drain(this.dev.irqFds[member.vector]);
    this.log(`peer ${member.id} left (pid ${member.pid})`);
  }

  private wake(peer: number): void {
    const [via, vector] = Peers.routeOf(this.i32, this.geo, peer);
    try {
      this.dev.ring(via, vector);
    } catch (err) {
      this.log(`wake of peer ${peer} failed: ${(err as Error).message}`);
    }
  }

  /** Reaps every member, stops listening, releases the device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.adoptTimer);
    for (const member of [...this.members.values()]) this.leave(member);
    this.acceptPoller.close();
    const addon = native();
    addon.close(this.listenFd);
    fs.rmSync(this.socket, { force: true });
    if (this.bars) for (const fd of [this.bars.bar2Fd, this.bars.bar0Fd]) closeQuiet(fd);
    this.dev.close();
  }
}
