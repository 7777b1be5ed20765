/**
 * The domain daemon: owns the shared region and hands it out to its members
 * (host processes, and QEMU guests with -device ivshmem-doorbell) over the
 * ivshmem-server protocol (protocol.ts) on a unix socket. When a member
 * leaves, it cleans up after it in the region (Peers.reap): its listeners
 * are freed, its connections flagged dead, and the other ends woken.
 */
import crypto from 'node:crypto';
import { viewSize } from '../shm/layout';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import {
  brokerOff,
  DEFAULT_GUEST_RING,
  DEFAULT_GUEST_SIZE,
  DEFAULT_MAX_LISTENERS,
  DEFAULT_MAX_PEERS,
  DEFAULT_RING,
  DEFAULT_SIZE,
  DEFAULT_VECTORS,
  lockPath,
} from '../config';
import { debug } from '../log';
import { Geometry, HEADER, REGION_STATE_READY, computeGeometry, geometryName, writeHeader } from '../shm/layout';
import { Native, NativePoller, NativeRegion, closeQuiet, native, recvOrEnd } from '../shm/native';
import * as Peers from '../shm/peers';
import { myUid, unlinkQuiet } from '../sys';
import { DaemonLock, acceptEach, listenOn, turnAway } from './lock';
import { Broker, startBroker } from './broker';
import { Outbox } from './outbox';
import { Member as Client, answerFdRequest, farewell, readInput, welcome } from './protocol';
import { helloVersion, NOTE_END, NOTE_GUESTS, NOTE_MEMBER, NOTE_ON_REQUEST, NOTE_POD, guestAddrNotes, note } from '../shm/notes';
import { Pods } from './pods';
import type { Addr } from '../shm/addrs';

/** How often a daemon whose broker name is taken tries again. */
const BROKER_RETRY_MS = 1000;

/** Listener entries of a pair domain: the listeners of one process that one other process dialled. */
const PAIR_LISTENERS = 16;

/** How long a newcomer has to say HELLO in a domain of host processes only. */
const HELLO_WAIT_MS = 2000;

/** An auto-started daemon waits at least this long for its first peer. */
const AUTO_START_GRACE_MS = 1000;

export interface DaemonOptions {
  /** Where it listens (not for a pair domain). */
  socketPath?: string;
  /** Region size in bytes (default 256 MiB). */
  size?: number;
  /** Bytes per ring direction, a power of two (default 1 MiB; 512 KiB for a daemon of guests). */
  ringSize?: number;
  /** Interrupt vectors (eventfds) per peer (default 1). */
  vectors?: number;
  /** Peer IDs 0..maxPeers-1 (default 64). */
  maxPeers?: number;
  /** Listener table entries (default 256). */
  maxListeners?: number;
  /** Exit this long after the last peer left (auto: also after start-up if nobody comes). Infinity/undefined: never. */
  idleMs?: number;
  /** Started on demand by a client: a running daemon means quietly doing nothing. */
  auto?: boolean;
  /** One line per join/leave on stderr. */
  verbose?: boolean;
  /** Uids admitted besides the daemon's own (root is not admitted unless it is the daemon's uid or listed). */
  allowUids?: number[];
  /** The addresses of this domain's guests, as the operator declared them: the only ones host processes reach guests at. */
  guestAddrs?: Addr[];
  /**
   * Admit QEMU guests (members that never say HELLO). Without it the domain is
   * host processes only: a newcomer gets nothing until it has said HELLO, and
   * is turned away if it does not within a moment.
   */
  guests?: boolean;
  /**
   * A pair domain (see broker.ts): the memory of the connections between two
   * processes of different users, made by the daemon of one of them. No
   * socket, no lock: its two members are handed in with adopt(), and it
   * closes when both have left.
   */
  pair?: boolean;
  /** A domain of host processes only: also broker connections for processes of other users (broker.ts). Default true. */
  broker?: boolean;
  /**
   * The domain of one network namespace other than the daemon's, and one uid
   * (pods.ts): no socket, no lock; its members come in through the daemon's
   * socket and are handed over (adoptHello); it closes when the last one has left.
   */
  pod?: boolean;
  /**
   * Containers and pods of every uid may reach the socket: it is made mode
   * 0666 (and a folder the daemon made 0711). Processes in the daemon's own
   * network namespace are still admitted only as before (its uid, --allow-uid);
   * those of other namespaces get domains of their own namespace and uid (pods.ts).
   */
  pods?: boolean;
}

export interface DaemonEvents {
  join: (id: number, pid: number) => void;
  leave: (id: number) => void;
  close: () => void;
}

/**
 * One domain. `start()` takes the lock, makes the region and listens;
 * `close()` undoes all of it. Emits 'join' (id, pid), 'leave' (id), 'close'.
 */
export class Daemon extends EventEmitter {
  readonly socketPath: string;
  readonly lockPath: string;
  readonly geometry: Geometry;
  readonly vectors: number;
  readonly idleMs: number;
  readonly auto: boolean;
  readonly verbose: boolean;
  readonly allowUids: ReadonlySet<number>;
  readonly guestAddrs: readonly Addr[];
  readonly guests: boolean;
  readonly pair: boolean;
  readonly pod: boolean;
  readonly podsOpen: boolean;

  private addon: Native | null = null;
  private pods: Pods | null = null;
  private readonly hold: DaemonLock | null;
  private broker: Broker | null = null;
  private brokerTimer: NodeJS.Timeout | null = null;
  private readonly brokerOn: boolean;
  private memfd = -1;
  private region: NativeRegion | null = null;
  private i32: Int32Array | null = null;
  private listenFd = -1;
  private listenPoller: NativePoller | null = null;
  /** Known to host processes only (see shm/notes.ts): what their connection requests are signed with. */
  private clients = new Map<number, Client>();
  private doomed = new Set<Client>();
  /** Newcomers that have yet to say HELLO (a domain of host processes only), and how to turn each away. */
  private waiting = new Map<number, () => void>();
  private idleTimer: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private started = false;
  private closed = false;

  constructor(opts: DaemonOptions) {
    super();
    this.pair = !!opts.pair;
    this.pod = !!opts.pod && !this.pair;
    const socketless = this.pair || this.pod;
    if (!opts.socketPath && !socketless) throw new TypeError('socketPath is required');
    this.socketPath = opts.socketPath && !socketless ? path.resolve(opts.socketPath) : '';
    this.lockPath = this.socketPath ? lockPath(this.socketPath) : '';
    this.hold = socketless ? null : new DaemonLock(this.socketPath);
    this.vectors = opts.vectors ?? DEFAULT_VECTORS;
    const guestDaemon = !!opts.guests || (opts.guestAddrs?.length ?? 0) > 0;
    this.geometry = computeGeometry({
      size: opts.size ?? (guestDaemon ? DEFAULT_GUEST_SIZE : DEFAULT_SIZE),
      ringSize: opts.ringSize ?? (guestDaemon ? DEFAULT_GUEST_RING : DEFAULT_RING),
      vectors: this.vectors,
      maxPeers: opts.maxPeers ?? DEFAULT_MAX_PEERS,
      maxListeners: opts.maxListeners ?? DEFAULT_MAX_LISTENERS,
    });
    const idle = opts.idleMs ?? Infinity;
    if (!(idle >= 0)) throw new RangeError(`idle time must be >= 0, got ${opts.idleMs}`);
    this.idleMs = idle;
    this.auto = !!opts.auto;
    this.verbose = !!opts.verbose;
    this.allowUids = new Set(opts.allowUids ?? []);
    this.guestAddrs = opts.guestAddrs ?? [];
    this.guests = !!opts.guests || this.guestAddrs.length > 0;
    this.brokerOn = !socketless && !this.guests && opts.broker !== false;
    this.podsOpen = !socketless && !this.guests && !!opts.pods;
  }

  /** Peers connected now. */
  get peerCount(): number {
    return this.clients.size;
  }

  /** The region's daemon-side view (after start()). */
  get view(): Int32Array | null {
    return this.i32;
  }

  /**
   * Takes the lock, creates the region, listens. Returns false, having
   * changed nothing, when another daemon holds the lock. Throws on other
   * failures (ERR_ZIVM_UNSAFE_DIR for a bad socket folder), cleaning up first.
   */
  start(): boolean {
    if (this.started) throw new Error('daemon already started');
    this.started = true;
    const addon = (this.addon = native());
    if (this.hold && !this.hold.take(addon, this.auto)) {
      this.closed = true;
      return false;
    }
    try {
      const geo = this.geometry;
      this.memfd = addon.memfdCreate(geometryName(geo), geo.size);
      this.region = new addon.Region(this.memfd, geo.size, 0, viewSize(geo.size, geo));
      this.i32 = new Int32Array(this.region.buffer);
      writeHeader(this.i32, geo, process.pid, crypto.randomBytes(4).readInt32LE(0));
      Atomics.store(this.i32, HEADER.STATE, REGION_STATE_READY);
      if (this.pair || this.pod) return true;

      this.listen();
      if (!this.guests) this.pods = new Pods(this);
    } catch (err) {
      this.close();
      throw err;
    }
    if (this.brokerOn) this.takeBroker();
    // Started for a client that may never come; give the one that started us time to connect, though.
    if (this.auto) this.armIdle(Math.max(this.idleMs, AUTO_START_GRACE_MS));
    this.log(`serving ${this.socketPath} (pid ${process.pid})`, false);
    return true;
  }

  /**
   * Brokers for other users (broker.ts), under the one name per user and
   * network namespace: held by another daemon of ours that is on its way
   * out, it is tried again each second until it is ours.
   */
  private takeBroker(): void {
    if (brokerOff()) return;
    this.broker = startBroker(this);
    if (this.broker || this.brokerTimer) return;
    this.brokerTimer = setInterval(() => {
      if (this.closed || this.broker) return;
      this.broker = startBroker(this);
      if (this.broker && this.brokerTimer) {
        clearInterval(this.brokerTimer);
        this.brokerTimer = null;
      }
    }, BROKER_RETRY_MS);
    this.brokerTimer.unref();
  }

  /** Stops serving and removes every trace (socket, lock, region). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const addon = this.addon;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.idleTimer = this.flushTimer = null;
    if (this.listenPoller) this.listenPoller.close();
    this.listenPoller = null;
    if (this.listenFd >= 0 && addon) {
      // Unlink first so nobody new can reach us, then turn away whoever got in meanwhile.
      unlinkQuiet(this.socketPath);
      const late = turnAway(addon, this.listenFd);
      if (late) debug('turned away %d connection(s) that came in while closing', late);
      this.listenFd = -1;
    }
    if (this.brokerTimer) clearInterval(this.brokerTimer);
    this.brokerTimer = null;
    this.broker?.close();
    this.broker = null;
    this.pods?.close();
    this.pods = null;
    this.hold?.release();
    for (const turnAwayNow of [...this.waiting.values()]) turnAwayNow();
    for (const member of this.clients.values()) this.release(member);
    this.clients.clear();
    this.doomed.clear();
    if (this.region) this.region.close();
    this.region = null;
    this.i32 = null;
    if (this.memfd >= 0) closeQuiet(this.memfd);
    this.memfd = -1;
    this.hold?.removeDir();
    this.emit('close');
  }

  /** Listens on the socket path (owner-only from the start), watched by a poller. */
  private listen(): void {
    const addon = this.addon!;
    this.listenFd = listenOn(addon, this.socketPath);
    if (this.podsOpen) {
      // Reachable by the containers' processes, whatever their uid (admission is still ours to decide).
      fs.chmodSync(this.socketPath, 0o666);
      if (this.hold?.createdDir) fs.chmodSync(path.dirname(this.socketPath), 0o711);
    }
    this.listenPoller = new addon.Poller(this.listenFd, (status) => this.onAcceptable(status), false);
  }

  // ---- peers ------------------------------------------------------------

  private onAcceptable(status: number): void {
    if (this.closed) return;
    if (status < 0) debug('listen poll error %d', status);
    acceptEach(this.addon!, this.listenFd, 256, (fd) => (this.guests ? this.admit(fd) : this.awaitHello(fd)));
    this.settle();
  }

  /**
   * A domain of host processes only: the newcomer gets nothing (not even the
   * region) until it says HELLO, which QEMU never does.
   */
  private awaitHello(fd: number): void {
    const addon = this.addon!;
    let settled = false;
    const give = (why: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.waiting.delete(fd);
      poller?.close();
      if (why === undefined && !this.closed) {
        // A process of another network namespace (a container, a pod) gets a domain of its namespace's (pods.ts).
        if (this.pods?.take(fd, version)) {
          this.settle();
          return;
        }
        // A domain without guests: a host process that asks for doorbells gets those of the peers it talks to.
        const member = this.admit(fd, version >= 2);
        if (member) this.hello(member);
        this.settle();
        return;
      }
      let pid = 0;
      try {
        pid = addon.peerCred(fd).pid;
      } catch {
        // Gone already: it is turned away all the same.
      }
      closeQuiet(fd);
      if (why) {
        this.log(`refused pid ${pid}: ${why}`);
        if (!this.verbose && !this.auto) process.stderr.write(`zivm: refused pid ${pid}: ${why}\n`);
      }
    };
    let version = 0;
    const timer = setTimeout(() => give('it did not say HELLO (a QEMU guest? this daemon admits guests with --guests or --guest-addr)'), HELLO_WAIT_MS);
    let poller: NativePoller | undefined;
    try {
      poller = new addon.Poller(
        fd,
        () => {
          const msg = recvOrEnd(fd);
          if (msg === null) return;
          if (msg === false) return give('');
          if (msg[1] >= 0) closeQuiet(msg[1]);
          version = msg[1] < 0 ? helloVersion(msg[0]) : 0;
          // A process asking where another network namespace's address leads (pods.ts).
          if (version === 0 && msg[1] < 0 && this.pods?.isDial(msg[0])) {
            settled = true;
            clearTimeout(timer);
            this.waiting.delete(fd);
            poller?.close();
            this.pods.dial(fd, msg[0]);
            return;
          }
          give(version > 0 ? undefined : 'it sent something other than HELLO');
        },
        false,
      );
    } catch (err) {
      give(`cannot watch it: ${(err as Error).message}`);
      return;
    }
    this.waiting.set(fd, () => give(''));
  }

  /**
   * A pair domain takes one of its two members: `fd` is the daemon's end of a
   * socket pair whose other end goes to the process (broker.ts decided who).
   * It gets every other member's doorbells up front, as in QEMU's protocol.
   */
  adopt(fd: number): { id: number; gen: number } | undefined {
    if (!this.pair || this.closed) throw new Error('adopt() is for an open pair domain');
    const member = this.admit(fd);
    if (!member) return undefined;
    if (this.i32) {
      // Alive from now on: the dialler may put its request in before the listener's process has joined.
      Peers.announce(this.i32, this.geometry, member.id, { kind: 'process', node: 0, pid: member.pid });
      Peers.goAlive(this.i32, this.geometry, member.id);
    }
    return { id: member.id, gen: member.gen };
  }

  /**
   * A pod domain takes a process that said HELLO on the daemon's socket (pods.ts
   * decided which domain): it is admitted and answered as in the daemon's own domain.
   */
  adoptHello(fd: number, version: number): boolean {
    if (!this.pod || this.closed) throw new Error('adoptHello() is for an open pod domain');
    const member = this.admit(fd, version >= 2);
    if (!member) return false;
    this.hello(member);
    this.settle();
    return true;
  }

  /** The members that said HELLO (host processes), as pods.ts reads their network namespace. */
  hostMembers(): { id: number; gen: number; pid: number }[] {
    return [...this.clients.values()].filter((member) => member.host && !member.gone && !this.doomed.has(member));
  }

  /** Sends member `id` notes (no fds). */
  sendNotes(id: number, values: number[]): boolean {
    const member = this.clients.get(id);
    if (!member || member.gone || this.doomed.has(member)) return false;
    for (const value of values) this.send(member, value, -1, -1);
    this.settle();
    return !this.doomed.has(member);
  }

  /** Pod domains have members (the daemon of a host with pods is not idle). */
  podsChanged(): void {
    if (this.closed || this.pair || this.pod) return;
    if (this.clients.size === 0 && !(this.pods?.active ?? false)) this.armIdle();
    else if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  /** A member of this domain that said HELLO (a host process), if `id` is one now. */
  hostMember(id: number): { id: number; gen: number; pid: number } | undefined {
    const member = this.clients.get(id);
    return member && member.host && !member.gone && !this.doomed.has(member) ? member : undefined;
  }

  /** Is member `id` of generation `gen` still here? */
  memberAlive(id: number, gen: number): boolean {
    const member = this.clients.get(id);
    return !!member && member.gen === gen && !member.gone && !this.doomed.has(member);
  }

  /** Sends member `id` a note with an fd of ours, which is closed once sent (or at once, if the member is gone). */
  sendOwned(id: number, value: number, fd: number): boolean {
    const member = this.clients.get(id);
    if (!member || member.gone || this.doomed.has(member)) {
      closeQuiet(fd);
      return false;
    }
    const outcome = member.outbox.send(value, fd, -2, true);
    if (outcome === 'broken') this.doomed.add(member);
    else if (outcome === 'queued') this.armFlush();
    this.settle();
    return outcome !== 'broken';
  }

  /** A new pair domain with this domain's ring size (broker.ts); undefined if it cannot be made. */
  makePair(size: number): Daemon | undefined {
    const pair = new Daemon({
      pair: true,
      size,
      ringSize: this.geometry.ringSize,
      vectors: 1,
      maxPeers: 2,
      maxListeners: PAIR_LISTENERS,
      verbose: this.verbose,
    });
    try {
      pair.start();
    } catch (err) {
      this.log(`cannot make a pair domain: ${(err as Error).message}`);
      return undefined;
    }
    return pair;
  }

  /** A new pod domain with this domain's geometry (pods.ts); undefined if it cannot be made. */
  makePod(): Daemon | undefined {
    const pod = new Daemon({
      pod: true,
      size: this.geometry.size,
      ringSize: this.geometry.ringSize,
      vectors: this.vectors,
      maxPeers: this.geometry.maxPeers,
      maxListeners: this.geometry.maxListeners,
      verbose: this.verbose,
    });
    try {
      pod.start();
    } catch (err) {
      this.log(`cannot make a pod domain: ${(err as Error).message}`);
      return undefined;
    }
    return pod;
  }

  /** Admits the member on `fd`; returns it, or undefined if it was turned away. */
  private admit(fd: number, onRequest = false): Client | undefined {
    const addon = this.addon!;
    const geo = this.geometry;
    const i32 = this.i32!;
    let cred: { pid: number; uid: number; gid: number };
    try {
      cred = addon.peerCred(fd);
    } catch (err) {
      debug('peer credentials unavailable: %s', (err as Error).message);
      closeQuiet(fd);
      return;
    }
    const uid = myUid();
    // A pair domain's members were chosen by the broker; a pod domain's by pods.ts (one uid each).
    if (!this.pair && !this.pod && cred.uid !== uid && !this.allowUids.has(cred.uid)) {
      this.log(`refused pid ${cred.pid}: uid ${cred.uid} is not ${uid} (see --allow-uid)`);
      if (!this.verbose && !this.auto) process.stderr.write(`zivm: refused pid ${cred.pid}: uid ${cred.uid} is not ${uid} (see --allow-uid)\n`);
      closeQuiet(fd);
      return;
    }
    // Claimed with a CAS: a guest's agent claims entries for its processes from the top of the table.
    const id = Peers.claim(i32, geo, 'bottom', (taken) => this.clients.has(taken));
    if (id < 0) {
      this.log(`refused pid ${cred.pid}: all ${geo.maxPeers} peer ids are taken`);
      closeQuiet(fd);
      return;
    }
    const efds: number[] = [];
    try {
      for (let vector = 0; vector < this.vectors; vector++) efds.push(addon.eventfd());
    } catch (err) {
      Peers.unclaim(i32, geo, id);
      this.log(`refused pid ${cred.pid}: ${(err as Error).message}`);
      for (const efd of efds) closeQuiet(efd);
      closeQuiet(fd);
      return;
    }
    const gen = Peers.admit(i32, geo, id, { pid: cred.pid });

    const member: Client = { id, gen, pid: cred.pid, sock: fd, efds, poller: null, outbox: new Outbox(addon, fd), gone: false, host: false, onRequest };
    const others = [...this.clients.values()].sort((first, second) => first.id - second.id);
    this.clients.set(id, member);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    try {
      member.poller = new addon.Poller(fd, (status) => this.onClientReadable(member, status), false);
    } catch (err) {
      this.log(`cannot watch peer ${id}: ${(err as Error).message}`);
      this.doomed.add(member);
      return;
    }

    welcome(member, others, this.memfd, this.vectors, (to, value, fd, ref) => this.send(to, value, fd, ref));
    this.log(`peer ${id} joined (pid ${cred.pid}, gen ${gen})`);
    this.emit('join', id, cred.pid);
    return member;
  }

  private onClientReadable(member: Client, status: number): void {
    if (member.gone || this.closed) return;
    const onFdRequest = (peer: number): void =>
      answerFdRequest(member, member.host ? this.clients.get(peer) : undefined, peer, this.vectors, (to, value, fd, ref) => this.send(to, value, fd, ref));
    if (status < 0 || readInput(this.addon!, member.sock, member.id, () => this.hello(member), onFdRequest) === 'closed') this.doomed.add(member);
    this.settle();
  }

  /**
   * A member said HELLO: it is a host process running zivm (QEMU never sends
   * a thing). In a domain that admits guests, it learns the host processes
   * among the members, and the other host processes learn that it is one; such
   * a domain says so:
   * host processes connect to each other in a domain no guest maps
   * (route.ts), never here.
   */
  private hello(member: Client): void {
    if (member.host) return;
    member.host = true;
    if (this.guests) this.send(member, note(NOTE_GUESTS, 1), -1, -1);
    if (member.onRequest) this.send(member, note(NOTE_ON_REQUEST, 1), -1, -1);
    if (this.pod) this.send(member, note(NOTE_POD, 1), -1, -1);
    // Where guests are admitted, every host process learns which members are
    // host processes. Elsewhere every member is one (it said HELLO before it
    // was admitted) and nobody is told: each join costs the daemon one
    // member's messages, not one to every member (1,000 processes joining one
    // after another would make a million).
    if (this.guests) {
      const hosts = [...this.clients.values()].filter((other) => other.host && !other.gone);
      for (const other of hosts) {
        this.send(member, note(NOTE_MEMBER, other.id), -1, -1);
        if (other !== member) this.send(other, note(NOTE_MEMBER, member.id), -1, -1);
      }
    }
    for (const addr of this.guestAddrs) for (const value of guestAddrNotes(addr.family, addr.bytes)) this.send(member, value, -1, -1);
    this.send(member, note(NOTE_END, 0), -1, -1);
    this.log(`peer ${member.id} is a host process`, false);
  }

  /** Sends or queues one protocol message; a broken socket dooms the member. */
  private send(member: Client, value: number, fd: number, ref: number): void {
    if (member.gone || this.doomed.has(member)) return;
    const outcome = member.outbox.send(value, fd, ref);
    if (outcome === 'broken') {
      debug('send to peer %d failed', member.id);
      this.doomed.add(member);
    } else if (outcome === 'queued') this.armFlush();
  }

  private armFlush(): void {
    if (this.flushTimer || this.closed) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, 2);
  }

  private flush(): void {
    if (this.closed) return;
    let pending = false;
    const now = Date.now();
    for (const member of this.clients.values()) {
      if (member.gone || this.doomed.has(member) || member.outbox.empty) continue;
      const outcome = member.outbox.flush(now);
      if (outcome === 'pending') pending = true;
      else if (outcome === 'broken') this.doomed.add(member);
      else if (outcome === 'stalled') {
        this.log(`peer ${member.id} does not read its socket: dropping it`);
        this.doomed.add(member);
      }
    }
    if (pending) this.armFlush();
    this.settle();
  }

  /** Disconnects every doomed client (which may doom others whose sockets broke). */
  private settle(): void {
    while (this.doomed.size && !this.closed) {
      const member: Client = this.doomed.values().next().value!;
      this.doomed.delete(member);
      if (!member.gone) this.disconnect(member);
    }
  }

  private disconnect(member: Client): void {
    const addon = this.addon!;
    member.gone = true;
    this.clients.delete(member.id);
    if (member.poller) member.poller.close();
    member.poller = null;
    closeQuiet(member.sock);
    member.outbox.clear();
    farewell(
      member,
      [...this.clients.values()].sort((first, second) => first.id - second.id),
      this.vectors,
      (to, value, fd, ref) => this.send(to, value, fd, ref),
    );
    for (const efd of member.efds) closeQuiet(efd);
    member.efds = [];
    if (this.i32) {
      const i32 = this.i32;
      const geo = this.geometry;
      // Rung through the eventfds of the member the peer's route names.
      const wake = (peer: number): void => {
        const [via, vector] = Peers.routeOf(i32, geo, peer);
        const carrier = this.clients.get(via);
        if (!carrier || vector >= carrier.efds.length) return;
        try {
          addon.notify(carrier.efds[vector]);
        } catch (err) {
          debug('wake of peer %d failed: %s', peer, (err as Error).message);
        }
      };
      // The processes of a guest that left went with it.
      for (const id of Peers.reapGuest(i32, geo, member.id, member.gen, wake, (peer) => this.clients.has(peer)))
        this.log(`peer ${id} left (a process of guest peer ${member.id})`);
    }
    this.log(`peer ${member.id} left (pid ${member.pid})`);
    this.emit('leave', member.id);
    if (this.clients.size === 0) {
      if (this.pair || this.pod) this.close();
      else if (!(this.pods?.active ?? false)) this.armIdle();
    }
  }

  /** Closes a client's fds without telling anyone (shutdown). */
  private release(member: Client): void {
    member.gone = true;
    if (member.poller) member.poller.close();
    member.poller = null;
    closeQuiet(member.sock);
    for (const efd of member.efds) closeQuiet(efd);
    member.efds = [];
    member.outbox.clear();
  }

  // ---- idle exit ----------------------------------------------------------

  private armIdle(ms = this.idleMs): void {
    if (this.closed || !Number.isFinite(ms)) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.idleExit(ms);
    }, ms);
  }

  /**
   * Leaves for lack of peers, unless one is knocking: a client that connected before the socket
   * file went away is served (the socket is put back for it), never turned away.
   */
  private idleExit(ms: number): void {
    if (this.closed) return;
    this.onAcceptable(0); // someone may be waiting in the backlog: they win
    if (this.clients.size || this.closed || (this.pods?.active ?? false)) return;
    unlinkQuiet(this.socketPath); // from now on nobody new reaches this listening socket...
    const late = acceptEach(this.addon!, this.listenFd, Infinity, (fd) => this.admit(fd)); // ...so once this backlog is empty, it stays empty
    if (late === 0) {
      this.log(`idle for ${ms} ms: exiting`, false);
      this.close();
      return;
    }
    debug('%d client(s) came in while leaving: staying', late);
    try {
      this.relisten();
    } catch (err) {
      this.log(`cannot listen on ${this.socketPath} again: ${(err as Error).message}`);
      this.close();
      return;
    }
    this.settle();
  }

  /** Replaces the listening socket with a new one at the path (ours was unlinked). */
  private relisten(): void {
    if (this.listenPoller) this.listenPoller.close();
    this.listenPoller = null;
    closeQuiet(this.listenFd);
    this.listenFd = -1;
    this.listen();
  }

  log(line: string, loud = true): void {
    debug('%s', line);
    if (loud && this.verbose) process.stderr.write(`zivm: ${line}\n`);
  }
}
