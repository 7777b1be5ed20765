/**
 * The domain daemon: owns the shared region and hands it out, speaking the
 * ivshmem-server protocol (QEMU docs/specs/ivshmem-spec.rst) on a unix socket,
 * so stock `-device ivshmem-doorbell` guests can join the same domain.
 *
 * On connect a client gets, each message a little-endian int64 with at most one
 * fd in SCM_RIGHTS:
 *   1. 0 (protocol version)
 *   2. its ID
 *   3. -1 with the shared-memory fd
 *      (meanwhile every other client gets the new ID once per vector, each with
 *      one of the new client's eventfds)
 *   4. for every other client, its ID once per vector, each with that client's eventfd
 *   5. its own ID once per vector, each with its own eventfd (its interrupt setup)
 * Later: another client's ID with an fd (connect) or without (disconnect).
 * Clients send nothing; what they send is read and dropped; EOF means they left.
 *
 * When a client leaves, the daemon also cleans up after it in the region
 * (reapPeer): its listeners are freed, its connections flagged dead, and the
 * other ends woken.
 */
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import util from 'node:util';
import {
  F_CLOSED,
  F_DEAD,
  Geometry,
  H,
  L,
  LST_FREE,
  P,
  PEER_ALIVE,
  PEER_DEAD,
  PEER_FREE,
  PEER_JOINING,
  PEER_ADDRS,
  PEER_KIND_GUEST_PROCESS,
  REGION_STATE_READY,
  S,
  SLOT_CLAIMED,
  SLOT_CONNECTING,
  SLOT_FREE,
  SLOT_REFUSED,
  computeGeometry,
  genOf,
  listenerOffset,
  makeState,
  peerOffset,
  pendingOffset,
  routeOf,
  slotOffset,
  stateOf,
  writeHeader,
} from './layout';
import { Native, NativePoller, NativeRegion, native } from './native';
import { ensureDir, lockPath } from './paths';

const debug = util.debuglog('zivm');

/** ivshmem-server protocol version sent first on every connection. */
export const PROTOCOL_VERSION = 0;

export const DEFAULT_SIZE = 256 * 1024 * 1024;
export const DEFAULT_RING = 512 * 1024;
export const DEFAULT_VECTORS = 1;
export const DEFAULT_MAX_PEERS = 64;
export const DEFAULT_MAX_LISTENERS = 256;
/** Idle time before an auto-started daemon exits, unless ZIVM_IDLE_MS says otherwise. */
export const DEFAULT_AUTO_IDLE_MS = 1000;

/** A client whose socket stays full this long is dropped. */
const SEND_STALL_MS = 5000;
/** How long an auto-started daemon waits for a lock held by a daemon that is starting or stopping. */
const AUTO_LOCK_WAIT_MS = 3000;
/** An auto-started daemon waits at least this long for its first peer. */
const AUTO_START_GRACE_MS = 1000;

export interface DaemonOptions {
  socketPath: string;
  /** Region size in bytes (default 256 MiB). */
  size?: number;
  /** Bytes per ring direction, a power of two (default 512 KiB). */
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
}

/** The auto-started daemon's idle time: ZIVM_IDLE_MS, else 1000. */
export function autoIdleMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.ZIVM_IDLE_MS;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (Number.isFinite(n) && n >= 0) return n;
  }
  return DEFAULT_AUTO_IDLE_MS;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function myUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/**
 * Cleans the region after peer `id` of generation `gen` left:
 * - the peer entry goes PEER_DEAD for the duration;
 * - its listeners are freed (state CAS to (gen+1, LST_FREE));
 * - in each slot where it is the client or the server (with that generation),
 *   its side's flags get F_DEAD|F_CLOSED; then a CLAIMED/CONNECTING slot it
 *   was the client of is freed, a CONNECTING slot it was the server of is
 *   refused, and any other slot whose other side has closed too is freed;
 * - the surviving side of each such slot gets that slot's bit in its pending
 *   bitmap, and `wake(survivor)` when the bit was clear;
 * - its pending bitmap is zeroed and its entry goes PEER_FREE (GEN kept).
 */
export function reapPeer(i32: Int32Array, g: Geometry, id: number, gen: number, wake: (peer: number) => void): void {
  const pw = peerOffset(g, id) >> 2;
  Atomics.store(i32, pw + P.STATE, PEER_DEAD);

  for (let i = 0; i < g.maxListeners; i++) {
    const w = listenerOffset(g, i) >> 2;
    for (let tries = 0; tries < 1000; tries++) {
      const st = Atomics.load(i32, w + L.STATE);
      if (stateOf(st) === LST_FREE) break;
      if (Atomics.load(i32, w + L.OWNER) !== id || Atomics.load(i32, w + L.OWNER_GEN) !== gen) break;
      if (Atomics.compareExchange(i32, w + L.STATE, st, makeState(genOf(st) + 1, LST_FREE)) === st) break;
    }
  }

  for (let i = 0; i < g.nslots; i++) {
    // A slot that changes while we read its owners is read again (bounded: a dead peer's slots settle fast).
    let attempts = 0;
    while (!reapSlot(i32, g, i, id, gen, wake) && ++attempts < 1000) {
      /* examine it again */
    }
  }

  const pend = pendingOffset(g, id) >> 2;
  for (let k = 0; k < g.pendingStride >> 2; k++) Atomics.store(i32, pend + k, 0);
  // A peer killed while busy-polling leaves POLLING set: its successor must be rung.
  Atomics.store(i32, pw + P.POLLING, 0);
  Atomics.store(i32, pw + P.STATE, PEER_FREE);
}

/** reapPeer for one slot; false when the slot changed while being examined (examine it again). */
function reapSlot(i32: Int32Array, g: Geometry, i: number, id: number, gen: number, wake: (peer: number) => void): boolean {
  const w = slotOffset(g, i) >> 2;
  let st = Atomics.load(i32, w + S.STATE);
  if (stateOf(st) === SLOT_FREE) return true;
  const client = Atomics.load(i32, w + S.CLIENT);
  const clientGen = Atomics.load(i32, w + S.CLIENT_GEN);
  const server = Atomics.load(i32, w + S.SERVER);
  const serverGen = Atomics.load(i32, w + S.SERVER_GEN);
  const isClient = client === id && clientGen === gen;
  const isServer = server === id && serverGen === gen;
  if (!isClient && !isServer) return true;
  // Act only on the state the owners were read against (the slot may have been recycled meanwhile).
  if (Atomics.load(i32, w + S.STATE) !== st) return false;
  if (isClient) Atomics.or(i32, w + S.CLIENT_FLAGS, F_DEAD | F_CLOSED);
  if (isServer) Atomics.or(i32, w + S.SERVER_FLAGS, F_DEAD | F_CLOSED);
  const gen0 = genOf(st);
  for (let tries = 0; tries < 1000; tries++) {
    const s = stateOf(st);
    if (s === SLOT_FREE || genOf(st) !== gen0) break; // freed, or freed and reused: not ours any more
    let next: number | undefined;
    if ((s === SLOT_CLAIMED || s === SLOT_CONNECTING) && isClient) next = makeState(gen0 + 1, SLOT_FREE);
    else if (s === SLOT_CONNECTING && isServer) {
      // Refused; a client already gone (closed after being told it was connected) leaves the slot to be freed.
      next = Atomics.load(i32, w + S.CLIENT_FLAGS) & F_CLOSED ? makeState(gen0 + 1, SLOT_FREE) : makeState(gen0, SLOT_REFUSED);
    }
    else if (Atomics.load(i32, w + (isClient ? S.SERVER_FLAGS : S.CLIENT_FLAGS)) & F_CLOSED) next = makeState(gen0 + 1, SLOT_FREE);
    if (next === undefined) break;
    const seen = Atomics.compareExchange(i32, w + S.STATE, st, next);
    if (seen === st) break;
    st = seen;
  }
  // Wake the other side, if it is a live peer of the recorded generation.
  if (isClient && isServer) return true;
  const other = isClient ? server : client;
  const otherGen = isClient ? serverGen : clientGen;
  if (other < 0 || other >= g.maxPeers || other === id) return true;
  const ow = peerOffset(g, other) >> 2;
  const ostate = Atomics.load(i32, ow + P.STATE);
  if ((ostate !== PEER_ALIVE && ostate !== PEER_JOINING) || Atomics.load(i32, ow + P.GEN) !== otherGen) return true;
  const bit = 1 << (i & 31);
  const old = Atomics.or(i32, (pendingOffset(g, other) >> 2) + (i >> 5), bit);
  if ((old & bit) === 0) wake(other);
  return true;
}

interface Msg {
  value: number;
  fd: number;
  /** The peer whose eventfd `fd` is (-1 for the region fd / none). */
  ref: number;
}

interface Client {
  id: number;
  gen: number;
  pid: number;
  sock: number;
  efds: number[];
  poller: NativePoller | null;
  /** Messages the socket had no room for yet, in order. */
  queue: Msg[];
  blockedSince: number;
  gone: boolean;
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

  private n: Native | null = null;
  private lockFd = -1;
  private createdDir = false;
  private memfd = -1;
  private region: NativeRegion | null = null;
  private i32: Int32Array | null = null;
  private listenFd = -1;
  private listenPoller: NativePoller | null = null;
  private clients = new Map<number, Client>();
  private doomed = new Set<Client>();
  private idleTimer: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private started = false;
  private closed = false;

  constructor(opts: DaemonOptions) {
    super();
    if (!opts.socketPath) throw new TypeError('socketPath is required');
    this.socketPath = path.resolve(opts.socketPath);
    this.lockPath = lockPath(this.socketPath);
    this.vectors = opts.vectors ?? DEFAULT_VECTORS;
    this.geometry = computeGeometry({
      size: opts.size ?? DEFAULT_SIZE,
      ringSize: opts.ringSize ?? DEFAULT_RING,
      vectors: this.vectors,
      maxPeers: opts.maxPeers ?? DEFAULT_MAX_PEERS,
      maxListeners: opts.maxListeners ?? DEFAULT_MAX_LISTENERS,
    });
    const idle = opts.idleMs ?? Infinity;
    if (!(idle >= 0)) throw new RangeError(`idle time must be >= 0, got ${opts.idleMs}`);
    this.idleMs = idle;
    this.auto = !!opts.auto;
    this.verbose = !!opts.verbose;
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
    const n = (this.n = native());
    if (!this.lock()) {
      this.closed = true;
      return false;
    }
    try {
      const g = this.geometry;
      this.memfd = n.memfdCreate('zivm', g.size);
      this.region = new n.Region(this.memfd, g.size);
      this.i32 = new Int32Array(this.region.buffer);
      writeHeader(this.i32, g, process.pid, crypto.randomBytes(4).readInt32LE(0));
      Atomics.store(this.i32, H.STATE, REGION_STATE_READY);

      this.removeStaleSocket();
      this.listenFd = n.unixListen(this.socketPath, 128);
      fs.chmodSync(this.socketPath, 0o600);
      this.listenPoller = new n.Poller(this.listenFd, (status) => this.onAcceptable(status), false);
    } catch (e) {
      this.close();
      throw e;
    }
    // Started for a client that may never come; give the one that started us time to connect, though.
    if (this.auto) this.armIdle(Math.max(this.idleMs, AUTO_START_GRACE_MS));
    this.log(`serving ${this.socketPath} (pid ${process.pid})`, false);
    return true;
  }

  /** Stops serving and removes every trace (socket, lock, region). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const n = this.n;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.idleTimer = this.flushTimer = null;
    if (this.listenPoller) this.listenPoller.close();
    this.listenPoller = null;
    if (this.listenFd >= 0 && n) {
      // Unlink first so nobody new can reach us, then turn away whoever got in meanwhile.
      unlinkQuiet(this.socketPath);
      for (;;) {
        let fd = -1;
        try {
          fd = n.unixAccept(this.listenFd);
        } catch {
          break;
        }
        if (fd < 0) break;
        debug('turned away a connection that came in while closing');
        closeQuiet(n, fd);
      }
      closeQuiet(n, this.listenFd);
      this.listenFd = -1;
    }
    if (this.lockFd >= 0) {
      unlinkQuiet(this.lockPath); // still holding the lock: nobody can be using this inode
      try {
        fs.closeSync(this.lockFd);
      } catch {
        /* ignore */
      }
      this.lockFd = -1;
    }
    for (const c of this.clients.values()) this.release(c);
    this.clients.clear();
    this.doomed.clear();
    if (this.region) this.region.close();
    this.region = null;
    this.i32 = null;
    if (this.memfd >= 0 && n) closeQuiet(n, this.memfd);
    this.memfd = -1;
    if (this.createdDir) rmdirQuiet(path.dirname(this.socketPath));
    this.emit('close');
  }

  // ---- start-up -------------------------------------------------------

  /** Takes `<socket>.lock`. False when a live daemon holds it. */
  private lock(): boolean {
    const dir = path.dirname(this.socketPath);
    const deadline = Date.now() + AUTO_LOCK_WAIT_MS;
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
    for (;;) {
      if (ensureDir(dir)) this.createdDir = true;
      let fd: number;
      try {
        fd = fs.openSync(this.lockPath, flags, 0o600);
      } catch (e) {
        if (errCode(e) === 'ENOENT') continue; // the folder went away under us (a daemon leaving): again
        throw e;
      }
      let ok = false;
      try {
        if (this.n!.tryLock(fd)) {
          // A daemon that is leaving unlinks the lock while holding it: ours must still be the one at the path.
          const a = fs.fstatSync(fd);
          let b: fs.Stats | undefined;
          try {
            b = fs.statSync(this.lockPath);
          } catch {
            b = undefined;
          }
          if (b && a.ino === b.ino && a.dev === b.dev) {
            this.lockFd = fd;
            ok = true;
            return true;
          }
          continue;
        }
        // Held. An explicit server stops here. An auto-started one was started because its client could not
        // connect: the holder may be starting (no socket yet) or leaving (socket already gone); wait for it
        // to serve or to go.
        if (!this.auto || this.socketServed() || Date.now() >= deadline) {
          if (this.createdDir) rmdirQuiet(dir); // the holder's lock file is in it unless it is leaving
          return false;
        }
        sleepSync(10);
      } finally {
        if (!ok) fs.closeSync(fd);
      }
    }
  }

  /** Whether a socket sits at our path (its daemon holds the lock: it serves or is about to). */
  private socketServed(): boolean {
    try {
      return fs.lstatSync(this.socketPath).isSocket();
    } catch {
      return false;
    }
  }

  private removeStaleSocket(): void {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.socketPath);
    } catch (e) {
      if (errCode(e) === 'ENOENT') return;
      throw e;
    }
    if (!st.isSocket()) {
      const err = new Error(`zivm: ${this.socketPath} exists and is not a socket`) as Error & { code: string };
      err.code = 'EEXIST';
      throw err;
    }
    fs.unlinkSync(this.socketPath); // we hold the lock: it is a leftover of a daemon that died
  }

  // ---- peers ------------------------------------------------------------

  private onAcceptable(status: number): void {
    if (this.closed) return;
    if (status < 0) debug('listen poll error %d', status);
    const n = this.n!;
    for (let k = 0; k < 256; k++) {
      let fd: number;
      try {
        fd = n.unixAccept(this.listenFd);
      } catch (e) {
        debug('accept failed: %s', (e as Error).message);
        break;
      }
      if (fd < 0) break;
      this.admit(fd);
    }
    this.settle();
  }

  private lowestFreeId(): number {
    const g = this.geometry;
    const i32 = this.i32!;
    // Claimed with a CAS: a guest's agent claims entries for its processes from the top of the table.
    for (let id = 0; id < g.maxPeers; id++) {
      if (this.clients.has(id)) continue;
      if (Atomics.compareExchange(i32, (peerOffset(g, id) >> 2) + P.STATE, PEER_FREE, PEER_JOINING) === PEER_FREE) return id;
    }
    return -1;
  }

  private admit(fd: number): void {
    const n = this.n!;
    const g = this.geometry;
    const i32 = this.i32!;
    let cred: { pid: number; uid: number; gid: number };
    try {
      cred = n.peerCred(fd);
    } catch (e) {
      debug('peer credentials unavailable: %s', (e as Error).message);
      closeQuiet(n, fd);
      return;
    }
    const uid = myUid();
    if (uid !== 0 && cred.uid !== uid) {
      this.log(`refused pid ${cred.pid}: uid ${cred.uid} is not ${uid}`);
      closeQuiet(n, fd);
      return;
    }
    const id = this.lowestFreeId();
    if (id < 0) {
      this.log(`refused pid ${cred.pid}: all ${g.maxPeers} peer ids are taken`);
      closeQuiet(n, fd);
      return;
    }
    const efds: number[] = [];
    try {
      for (let v = 0; v < this.vectors; v++) efds.push(n.eventfd());
    } catch (e) {
      Atomics.store(i32, (peerOffset(g, id) >> 2) + P.STATE, PEER_FREE);
      this.log(`refused pid ${cred.pid}: ${(e as Error).message}`);
      for (const e2 of efds) closeQuiet(n, e2);
      closeQuiet(n, fd);
      return;
    }

    const pw = peerOffset(g, id) >> 2;
    let gen = (Atomics.load(i32, pw + P.GEN) + 1) | 0;
    if (gen === 0) gen = 1;
    Atomics.store(i32, pw + P.KIND, 0);
    Atomics.store(i32, pw + P.NODE_LO, 0);
    Atomics.store(i32, pw + P.NODE_HI, 0);
    Atomics.store(i32, pw + P.ROUTE, 0);
    Atomics.store(i32, pw + P.POLLING, 0);
    Atomics.store(i32, pw + P.PID, cred.pid);
    Atomics.store(i32, pw + PEER_ADDRS.ADDR_COUNTS, 0); // the previous holder's addresses are not the newcomer's
    // Nothing pending for a newcomer (a late doorbell for the previous holder could have left a bit).
    const pend = pendingOffset(g, id) >> 2;
    for (let k = 0; k < g.pendingStride >> 2; k++) Atomics.store(i32, pend + k, 0);
    Atomics.store(i32, pw + P.GEN, gen);
    Atomics.store(i32, pw + P.STATE, PEER_JOINING);

    const c: Client = { id, gen, pid: cred.pid, sock: fd, efds, poller: null, queue: [], blockedSince: 0, gone: false };
    const others = [...this.clients.values()].sort((a, b) => a.id - b.id);
    this.clients.set(id, c);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    try {
      c.poller = new n.Poller(fd, (status) => this.onClientReadable(c, status), false);
    } catch (e) {
      this.log(`cannot watch peer ${id}: ${(e as Error).message}`);
      this.doomed.add(c);
      return;
    }

    this.send(c, PROTOCOL_VERSION, -1, -1);
    this.send(c, id, -1, -1);
    this.send(c, -1, this.memfd, -1);
    // Announce the newcomer first, so that by the time it has its own interrupt setup every other peer
    // has its doorbells queued.
    for (const o of others) for (let v = 0; v < this.vectors; v++) this.send(o, id, efds[v], id);
    for (const o of others) for (let v = 0; v < this.vectors; v++) this.send(c, o.id, o.efds[v], o.id);
    for (let v = 0; v < this.vectors; v++) this.send(c, id, efds[v], id);
    this.log(`peer ${id} joined (pid ${cred.pid}, gen ${gen})`);
    this.emit('join', id, cred.pid);
  }

  private onClientReadable(c: Client, status: number): void {
    if (c.gone || this.closed) return;
    if (status < 0) this.doomed.add(c);
    else {
      // Clients send nothing. Whatever comes is read and dropped (plain reads: a stray partial message must not
      // make us wait for the rest, and fds passed along with it are released by the kernel); EOF means it left.
      for (let k = 0; k < 16; k++) {
        let got: number;
        try {
          got = fs.readSync(c.sock, scratch, 0, scratch.length, null);
        } catch (e) {
          const code = errCode(e);
          if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') this.doomed.add(c);
          break;
        }
        if (got === 0) {
          this.doomed.add(c);
          break;
        }
        debug('peer %d sent %d bytes (ignored)', c.id, got);
      }
    }
    this.settle();
  }

  /** Queues or sends one protocol message; a broken socket dooms the client. */
  private send(c: Client, value: number, fd: number, ref: number): void {
    if (c.gone || this.doomed.has(c)) return;
    if (c.queue.length === 0) {
      const r = this.trySend(c, value, fd);
      if (r === 'sent') return;
      if (r === 'broken') return;
      debug('socket of peer %d is full: queueing', c.id);
      c.blockedSince = Date.now();
    }
    c.queue.push({ value, fd, ref });
    this.armFlush();
  }

  private trySend(c: Client, value: number, fd: number): 'sent' | 'full' | 'broken' {
    try {
      this.n!.sendMsg(c.sock, value, fd);
      return 'sent';
    } catch (e) {
      const code = errCode(e);
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'ENOBUFS') return 'full';
      debug('send to peer %d failed: %s', c.id, (e as Error).message);
      this.doomed.add(c);
      return 'broken';
    }
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
    for (const c of this.clients.values()) {
      while (c.queue.length && !c.gone && !this.doomed.has(c)) {
        const m = c.queue[0];
        const r = this.trySend(c, m.value, m.fd);
        if (r === 'sent') {
          c.queue.shift();
          c.blockedSince = now;
        } else if (r === 'full') {
          if (now - c.blockedSince > SEND_STALL_MS) {
            this.log(`peer ${c.id} does not read its socket: dropping it`);
            this.doomed.add(c);
          } else pending = true;
          break;
        } else break;
      }
    }
    if (pending) this.armFlush();
    this.settle();
  }

  /** Disconnects every doomed client (which may doom others whose sockets broke). */
  private settle(): void {
    while (this.doomed.size && !this.closed) {
      const c: Client = this.doomed.values().next().value!;
      this.doomed.delete(c);
      if (!c.gone) this.disconnect(c);
    }
  }

  private disconnect(c: Client): void {
    const n = this.n!;
    c.gone = true;
    this.clients.delete(c.id);
    if (c.poller) c.poller.close();
    c.poller = null;
    closeQuiet(n, c.sock);
    c.queue = [];
    for (const o of [...this.clients.values()].sort((a, b) => a.id - b.id)) {
      // Doorbells of the leaver still waiting in another peer's queue are dropped (its fds close below);
      // a peer that never heard of the leaver is not told it left.
      let dropped = 0;
      if (o.queue.length) {
        const before = o.queue.length;
        o.queue = o.queue.filter((m) => !(m.ref === c.id && m.fd >= 0));
        dropped = before - o.queue.length;
      }
      if (dropped < this.vectors) this.send(o, c.id, -1, -1);
    }
    for (const e of c.efds) closeQuiet(n, e);
    c.efds = [];
    if (this.i32) {
      const i32 = this.i32;
      const g = this.geometry;
      const wake = (peer: number): void => {
        const [via, vector] = routeOf(i32, g, peer);
        const s = this.clients.get(via);
        if (s && vector < s.efds.length) {
          try {
            n.notify(s.efds[vector]);
          } catch (e) {
            debug('wake of peer %d failed: %s', peer, (e as Error).message);
          }
        }
      };
      // The processes of a guest that left went with it.
      for (let id = 0; id < g.maxPeers; id++) {
        const pw = peerOffset(g, id) >> 2;
        if (id === c.id || Atomics.load(i32, pw + P.KIND) !== PEER_KIND_GUEST_PROCESS) continue;
        const st = Atomics.load(i32, pw + P.STATE);
        if (st === PEER_FREE || routeOf(i32, g, id)[0] !== c.id) continue;
        reapPeer(i32, g, id, Atomics.load(i32, pw + P.GEN), wake);
        this.log(`peer ${id} left (a process of guest peer ${c.id})`);
      }
      reapPeer(i32, g, c.id, c.gen, wake);
    }
    this.log(`peer ${c.id} left (pid ${c.pid})`);
    this.emit('leave', c.id);
    if (this.clients.size === 0) this.armIdle();
  }

  /** Closes a client's fds without telling anyone (shutdown). */
  private release(c: Client): void {
    const n = this.n!;
    c.gone = true;
    if (c.poller) c.poller.close();
    c.poller = null;
    closeQuiet(n, c.sock);
    for (const e of c.efds) closeQuiet(n, e);
    c.efds = [];
    c.queue = [];
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
    if (this.clients.size || this.closed) return;
    const n = this.n!;
    unlinkQuiet(this.socketPath); // from now on nobody new reaches this listening socket...
    let late = 0;
    for (;;) {
      let fd = -1;
      try {
        fd = n.unixAccept(this.listenFd);
      } catch {
        break;
      }
      if (fd < 0) break;
      late++;
      this.admit(fd); // ...so once this backlog is empty, it stays empty
    }
    if (late === 0) {
      this.log(`idle for ${ms} ms: exiting`, false);
      this.close();
      return;
    }
    debug('%d client(s) came in while leaving: staying', late);
    try {
      this.relisten();
    } catch (e) {
      this.log(`cannot listen on ${this.socketPath} again: ${(e as Error).message}`);
      this.close();
      return;
    }
    this.settle();
  }

  /** Replaces the listening socket with a new one at the path (ours was unlinked). */
  private relisten(): void {
    const n = this.n!;
    if (this.listenPoller) this.listenPoller.close();
    this.listenPoller = null;
    closeQuiet(n, this.listenFd);
    this.listenFd = -1;
    this.removeStaleSocket();
    this.listenFd = n.unixListen(this.socketPath, 128);
    fs.chmodSync(this.socketPath, 0o600);
    this.listenPoller = new n.Poller(this.listenFd, (status) => this.onAcceptable(status), false);
  }

  private log(line: string, loud = true): void {
    debug('%s', line);
    if (loud && this.verbose) process.stderr.write(`zivm: ${line}\n`);
  }
}

const scratch = Buffer.alloc(4096);

function closeQuiet(n: Native, fd: number): void {
  try {
    n.close(fd);
  } catch {
    /* ignore */
  }
}

/** Removes a folder if it is empty. */
function rmdirQuiet(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not empty, or gone: leave it */
  }
}

function unlinkQuiet(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* ignore */
  }
}

/**
 * Runs a daemon until it stops: resolves with the process exit code.
 * 0 after a clean stop (idle exit or SIGTERM/SIGINT/SIGHUP), or when `auto`
 * and another daemon already serves; 1 (message on stderr) when an explicit
 * daemon finds another one serving, or start-up fails.
 * `onReady` runs once the socket accepts connections.
 */
export function runDaemon(opts: DaemonOptions, onReady?: (d: Daemon) => void): Promise<number> {
  let d: Daemon;
  try {
    d = new Daemon(opts);
    if (!d.start()) {
      if (!opts.auto) process.stderr.write(`zivm: a daemon already serves ${path.resolve(opts.socketPath)}\n`);
      return Promise.resolve(opts.auto ? 0 : 1);
    }
  } catch (e) {
    process.stderr.write(`${prefixed((e as Error).message)}\n`);
    return Promise.resolve(1);
  }
  return new Promise<number>((resolve) => {
    let code = 0;
    const stop = (): void => d.close();
    const crash = (e: unknown): void => {
      process.stderr.write(`${prefixed(`daemon failed: ${(e as Error)?.stack ?? String(e)}`)}\n`);
      code = 1;
      d.close();
    };
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const s of signals) process.on(s, stop);
    process.on('uncaughtException', crash);
    d.once('close', () => {
      for (const s of signals) process.off(s, stop);
      process.off('uncaughtException', crash);
      resolve(code);
    });
    if (onReady) onReady(d);
  });
}

function prefixed(msg: string): string {
  return msg.startsWith('zivm:') ? msg : `zivm: ${msg}`;
}
