/**
 * The in-guest agent: the one process of a VM guest that owns the ivshmem
 * device (opened through VFIO), so that any number of Node processes in the
 * guest can be peers of the domain at once, each a peer of its own.
 *
 * The device is the guest's single membership of the domain (QEMU's peer id,
 * BAR0 IVPosition) with `vectors` MSI-X vectors. The agent routes every vector
 * to an eventfd and hands each joining process:
 *   - a peer entry of its own, claimed in the region's peer table (from the top;
 *     the daemon hands out ids from the bottom, both by CAS), whose P.ROUTE says
 *     "ring me as vector v of the guest's peer id";
 *   - vector v's eventfd (its interrupts) and the device fd (to map BAR2, the
 *     region, and to write BAR0's Doorbell).
 * A process that goes away (its socket to the agent closes: exit, crash,
 * SIGKILL) is reaped like the daemon reaps a host process: its listeners freed,
 * its connections flagged dead, the other ends woken. When the guest itself
 * leaves (QEMU exits), the daemon reaps the guest's processes with it.
 *
 * Protocol (unix socket, 8-byte little-endian values as in ivshmem-server's,
 * fds in SCM_RIGHTS): the agent sends, in order,
 *   AGENT_PROTOCOL | peer id | gen | vector + its eventfd | IVPosition + the
 *   device fd | BAR0 offset | BAR2 offset | BAR2 size
 * or a single negative errno (ENOSPC: every vector is taken) and closes. The
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
import { AGENT_PROTOCOL, ENOSPC, agentSocketPath, guestNodeId } from './link';

interface Member {
  fd: number;
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
  log?: (line: string) => void;
}

export class GuestAgent {
  readonly dev: GuestDevice;
  readonly socket: string;
  readonly g: Lay.Geometry;
  private readonly i32: Int32Array;
  private readonly listenFd: number;
  private readonly acceptPoller: NativePoller;
  private readonly members = new Map<number, Member>();
  private readonly log: (line: string) => void;
  private closed = false;
  /** Entries of this guest's processes that no socket of ours stands for (an agent before us was killed): their pids are watched. */
  private readonly adopted = new Map<number, { gen: number; pid: number }>();
  private readonly adoptTimer: NodeJS.Timeout;

  private constructor(dev: GuestDevice, socket: string, listenFd: number, g: Lay.Geometry, log: (line: string) => void) {
    this.dev = dev;
    this.socket = socket;
    this.listenFd = listenFd;
    this.g = g;
    this.i32 = new Int32Array(dev.region.buffer);
    this.log = log;
    this.acceptPoller = new (native().Poller)(listenFd, () => this.onAccept(), false);
    // Processes that joined through an agent before us: reaped once their pid is gone.
    for (let id = 0; id < Math.min(g.maxPeers, 0x10000); id++) {
      if (Peers.kindOf(this.i32, g, id) !== 'guest-process' || Peers.isFree(this.i32, g, id)) continue;
      if (Peers.routeOf(this.i32, g, id)[0] !== dev.ivPosition) continue;
      const pid = Peers.pidOf(this.i32, g, id);
      this.adopted.set(id, { gen: Peers.genOf(this.i32, g, id), pid });
      log(`peer ${id} (pid ${pid}) joined through an earlier agent: watching it`);
    }
    this.adoptTimer = setInterval(() => this.checkAdopted(), 500);
    this.checkAdopted();
  }

  /** Reaps adopted entries whose process has gone (or whose pid was never known). */
  private checkAdopted(): void {
    for (const [id, a] of this.adopted) {
      if (Peers.genOf(this.i32, this.g, id) !== a.gen || Peers.isFree(this.i32, this.g, id)) {
        this.adopted.delete(id);
        continue;
      }
      let alive = a.pid > 0;
      if (alive) {
        try {
          process.kill(a.pid, 0);
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) continue;
      this.adopted.delete(id);
      Peers.reap(this.i32, this.g, id, a.gen, (peer) => this.wake(peer));
      this.log(`peer ${id} left (pid ${a.pid}, joined through an earlier agent)`);
    }
  }

  /** Opens the device, announces the guest in its peer entry and listens. Throws ERR_ZIVM_GUEST. */
  static start(pci: string, opts: AgentOptions = {}): GuestAgent {
    const N = native();
    const socket = opts.socket ?? agentSocketPath(pci);
    const log = opts.log ?? (() => undefined);
    const dev = GuestDevice.open(pci);
    let listenFd = -1;
    try {
      const i32 = new Int32Array(dev.region.buffer);
      const g = Lay.readHeader(i32, dev.region.size);
      const id = dev.ivPosition;
      if (id >= g.maxPeers) throw new ZivmGuestError(`peer id ${id} (IVPosition) is outside the region's peer table`);
      if (!Peers.inUse(i32, g, id)) throw new ZivmGuestError(`peer entry ${id} is not handed out by the daemon`);
      // The guest's own entry (QEMU's pid stays: the one the host can act on) says which node it is.
      Peers.announce(i32, g, id, { kind: 'guest', node: guestNodeId(id, i32), route: 0 });
      publishAddrs(i32, g, id, publishableAddrs());
      Peers.goAlive(i32, g, id);

      fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
      if (fs.existsSync(socket)) {
        // A live agent answers; a stale socket file does not.
        let live = false;
        try {
          N.close(N.unixConnect(socket));
          live = true;
        } catch {
          fs.rmSync(socket, { force: true });
        }
        if (live) throw new ZivmGuestError(`an agent already serves ${pci} at ${socket}`);
      }
      listenFd = N.unixListen(socket, 64);
      fs.chmodSync(socket, opts.mode ?? 0o600);
      const a = new GuestAgent(dev, socket, listenFd, g, log);
      log(`agent for ${pci}: guest peer ${id}, ${dev.irqFds.length} vectors, ${g.nslots} slots, socket ${socket}`);
      return a;
    } catch (e) {
      if (listenFd >= 0) {
        N.close(listenFd);
        fs.rmSync(socket, { force: true });
      }
      dev.close();
      throw e;
    }
  }

  /** The processes that are members now. */
  list(): { id: number; gen: number; vector: number; pid: number }[] {
    return [...this.members.values()].map(({ id, gen, vector, pid }) => ({ id, gen, vector, pid }));
  }

  private onAccept(): void {
    const N = native();
    for (;;) {
      let fd: number;
      try {
        fd = N.unixAccept(this.listenFd);
      } catch (e) {
        this.log(`accept: ${(e as Error).message}`);
        return;
      }
      if (fd < 0) return;
      try {
        this.admit(fd);
      } catch (e) {
        this.log(`cannot admit a process: ${(e as Error).message}`);
        try {
          N.close(fd);
        } catch {
          /* closed */
        }
      }
    }
  }

  private admit(fd: number): void {
    const N = native();
    const { i32, g, dev } = this;
    let pid = 0;
    try {
      pid = N.peerCred(fd).pid;
    } catch {
      /* unknown */
    }
    const used = new Set([...this.members.values()].map((m) => m.vector));
    for (const id of this.adopted.keys()) used.add(Peers.routeOf(i32, g, id)[1]);
    let vector = -1;
    for (let v = 0; v < dev.irqFds.length; v++) {
      if (!used.has(v)) {
        vector = v;
        break;
      }
    }
    const id = vector >= 0 ? Peers.claim(i32, g, 'top') : -1;
    if (id < 0) {
      this.log(`refused pid ${pid}: ${vector < 0 ? `all ${dev.irqFds.length} vectors are taken` : 'the peer table is full'}`);
      N.sendMsg(fd, -ENOSPC, -1);
      N.close(fd);
      return;
    }
    const gen = Peers.admit(i32, g, id, {
      pid,
      kind: 'guest-process',
      node: Peers.nodeOf(i32, g, dev.ivPosition),
      route: Lay.makeRoute(dev.ivPosition, vector),
    });
    N.drain(dev.irqFds[vector]);
    try {
      N.sendMsg(fd, AGENT_PROTOCOL, -1);
      N.sendMsg(fd, id, -1);
      N.sendMsg(fd, gen, -1);
      N.sendMsg(fd, vector, dev.irqFds[vector]);
      N.sendMsg(fd, dev.ivPosition, dev.deviceFd);
      N.sendMsg(fd, dev.bar0Offset, -1);
      N.sendMsg(fd, dev.bar2Offset, -1);
      N.sendMsg(fd, dev.region.size, -1);
    } catch (e) {
      Peers.reap(i32, g, id, gen, (peer) => this.wake(peer));
      throw e;
    }
    const m: Member = { fd, id, gen, vector, pid, poller: undefined as unknown as NativePoller };
    m.poller = new (N.Poller)(fd, () => this.onMember(m), false);
    this.members.set(id, m);
    this.log(`peer ${id} joined (pid ${pid}, vector ${vector})`);
  }

  /** A member's socket is readable: it closed (nothing else is expected from it). */
  private onMember(m: Member): void {
    const N = native();
    for (;;) {
      let r: [number, number] | null | false;
      try {
        r = N.recvMsg(m.fd);
      } catch {
        r = false;
      }
      if (r === null) return;
      if (r === false) break;
      if (r[1] >= 0) N.close(r[1]);
    }
    this.leave(m);
  }

  private leave(m: Member): void {
    const N = native();
    if (!this.members.delete(m.id)) return;
    m.poller.close();
    try {
      N.close(m.fd);
    } catch {
      /* closed */
    }
    if (Peers.genOf(this.i32, this.g, m.id) === m.gen && !Peers.isFree(this.i32, this.g, m.id)) {
      Peers.reap(this.i32, this.g, m.id, m.gen, (peer) => this.wake(peer));
    }
    N.drain(this.dev.irqFds[m.vector]);
    this.log(`peer ${m.id} left (pid ${m.pid})`);
  }

  private wake(peer: number): void {
    const [via, vector] = Peers.routeOf(this.i32, this.g, peer);
    try {
      this.dev.ring(via, vector);
    } catch (e) {
      this.log(`wake of peer ${peer} failed: ${(e as Error).message}`);
    }
  }

  /** Reaps every member, stops listening, releases the device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.adoptTimer);
    for (const m of [...this.members.values()]) this.leave(m);
    this.acceptPoller.close();
    const N = native();
    N.close(this.listenFd);
    fs.rmSync(this.socket, { force: true });
    this.dev.close();
  }
}

