/**
 * A domain: this process's membership of one ivshmem bus (the daemon's socket,
 * the mapped region, our doorbells and everyone else's). Joining is synchronous
 * and happens once, lazily, the first time a listener registers or a connection
 * may be co-resident. The domain then routes doorbell wakeups to channels.
 */
import fs from 'node:fs';
import EventEmitter from 'eventemitter3';
import { spinTimes } from '../config';
import { debug } from '../log';
import { GuestLink, guestNodeId } from '../guest/link';
import { formatAddr, publishableAddrs, publishAddrs } from './addrs';
import * as Lay from './layout';
import { native, NativePoller, NativeRegion, NativeSpinner } from './native';
import * as Peers from './peers';
import { RunQueue } from './runqueue';
import * as Slot from './slot';

/** What a channel (one end of one connection) offers the domain. */
export interface SlotHandler {
  /** Something changed in the slot (data, space, flags, state). Spurious calls are allowed. */
  onEvent(): void;
  /** The remote peer left the domain. */
  onPeerLeft(): void;
  /** We are leaving the domain (in a guest, the agent went away): the connection is over. */
  onLeaving(): void;
}

/** A read waiting for a native stream: `feed()` hands it over. */
export interface Feedable {
  readonly feed: () => void;
}

/** What a registered listener offers the domain: a new connection arrived in `slot`. */
export interface ListenerHandler {
  onIncoming(slot: number, stateWord: number): void;
}

export interface DomainEvents {
  'peer-joined': (id: number) => void;
  'peer-left': (id: number) => void;
  /** The daemon went away: no new connections through this domain. */
  orphaned: () => void;
}

/** Units of work done in one turn of the event loop before the rest waits for the next. */
const MAX_ROUNDS = 64;
/** How often a peer looks whether its node's addresses changed. */
const ADDR_REFRESH_MS = 1000;

function netNodeId(): number {
  try {
    return fs.statSync('/proc/self/ns/net').ino;
  } catch {
    return 1;
  }
}

export class Domain extends EventEmitter<DomainEvents> {
  readonly id: number;
  readonly gen: number;
  readonly g: Lay.Geometry;
  readonly i32: Int32Array;
  readonly region: NativeRegion;
  readonly nodeId: number;
  /** Inside a VM guest: our share of the ivshmem device (doorbells through BAR0, ours on an MSI-X vector). */
  readonly guest: GuestLink | undefined;
  /** False once the daemon is gone or close() ran: no new connections. */
  alive = true;

  private readonly ctlFd: number;
  private readonly ownFds: number[];
  private readonly peerFds = new Map<number, number[]>();
  /** The generation of the peer each entry of peerFds belongs to: an id handed out again has new fds. */
  private readonly peerGens = new Map<number, number>();
  private readonly handlers: (SlotHandler | undefined)[];
  readonly acceptors = new Map<number, ListenerHandler>();
  private readonly bell: NativePoller;
  private readonly ctl: NativePoller | undefined;
  private readonly spinner: NativeSpinner | undefined;
  private readonly spinState: Int32Array;
  private refs = 0;
  private published: string | undefined;
  private addrTimer: NodeJS.Timeout | undefined;
  private readonly pendingBase: number;
  private readonly pendingWords: number;
  /** Ends of connections (slot * 2 + 1 for the server's) with work to do, in order. */
  private readonly runq: RunQueue;
  private readonly feeds: Feedable[] = [];
  private selfRung = false;
  private inDispatch = false;

  /** Made by join.ts once the daemon (or a guest's agent) has handed us our share. */
  constructor(
    ctlFd: number,
    id: number,
    region: NativeRegion,
    g: Lay.Geometry,
    ownFds: number[],
    peerFds: Map<number, number[]>,
    guest?: GuestLink,
  ) {
    super();
    this.guest = guest;
    const N = native();
    this.ctlFd = ctlFd;
    this.id = id;
    this.region = region;
    this.g = g;
    this.i32 = new Int32Array(region.buffer);
    this.ownFds = ownFds;
    for (const [k, v] of peerFds) {
      this.peerFds.set(k, v);
      this.peerGens.set(k, Peers.genOf(this.i32, g, k));
    }
    this.handlers = new Array(g.nslots * 2);
    this.nodeId = guest ? guestNodeId(guest.ivPosition, this.i32) : netNodeId();
    this.pendingBase = Lay.pendingOffset(g, id) >> 2;
    this.pendingWords = g.pendingStride >> 2;

    this.gen = Peers.genOf(this.i32, g, id);
    // A guest process's entry was filled in by the guest's agent (its pid in the guest, its route).
    Peers.announce(this.i32, g, id, { kind: guest ? 'guest-process' : 'process', node: this.nodeId, pid: guest ? undefined : process.pid });
    this.refreshAddrs();
    Peers.goAlive(this.i32, g, id);
    // Interfaces come up (a tap gets its carrier) and addresses change after we joined.
    this.addrTimer = setInterval(() => this.refreshAddrs(), ADDR_REFRESH_MS);
    this.addrTimer.unref();

    const { slice, hot } = spinTimes(!!guest);
    if (hot > 0) {
      this.spinner = new N.Spinner(region, Lay.pendingOffset(g, id), this.pendingWords, Peers.pollingWordOf(g, id) << 2, (st: number, round: number) => this.onDoorbell(st, round));
      this.spinner.setTimes(slice, hot);
      this.spinState = this.spinner.state;
    } else {
      this.spinState = new Int32Array(1);
    }
    this.runq = new RunQueue(g.nslots * 2);
    this.bell = new N.Poller(guest ? guest.irqFd : ownFds[0], (st, round) => this.onDoorbell(st, round), true);
    this.bell.unref();
    if (ctlFd >= 0) {
      this.ctl = new N.Poller(ctlFd, () => this.onControl(), false);
      this.ctl.unref();
    }
    // Bits someone set for this id's previous holder would hide our first
    // doorbells (a set bit is not rung again): look at them once.
    this.ringSelf();
  }

  /**
   * Rings `peer`'s doorbell for `slot`, unless that bit is still pending (the
   * peer has yet to look, and will see this too). `peerGen`: the generation
   * the caller knows the peer by; a peer that is not that one any more (gone,
   * its id handed out again) is left alone: no bit is set in the bitmap of
   * whoever holds the id now. `force` rings even when the bit was set
   * (connection setup, which is rare, never waits on a bit left behind).
   */
  notify(peer: number, slot: number, peerGen?: number, force = false): void {
    if (peer < 0 || peer >= this.g.maxPeers) return;
    if (peerGen !== undefined && Peers.genOf(this.i32, this.g, peer) !== peerGen) return;
    const idx = (Lay.pendingOffset(this.g, peer) >> 2) + (slot >> 5);
    const mask = 1 << (slot & 31);
    const old = Atomics.or(this.i32, idx, mask);
    if ((old & mask) !== 0 && !force) return;
    // A peer that busy-polls sees the bit by itself.
    if (Peers.isPolling(this.i32, this.g, peer)) return;
    // A process in a guest is rung as one of the guest's vectors (P.ROUTE).
    const [via, vector] = Peers.routeOf(this.i32, this.g, peer);
    if (this.guest) {
      this.guest.ring(via, vector);
      return;
    }
    if (via === this.id) {
      native().notify(this.ownFds[0]);
      return;
    }
    this.ringPeer(via, vector, 0);
  }

  /**
   * Rings `peer`'s vector 0 if the eventfd we hold is that peer's: after an id
   * was handed out again, the old holder's fd may still be here with the
   * daemon's news of the change unread in our socket, so read it first.
   */
  private ringPeer(peer: number, vector: number, attempt: number): void {
    const gen = Peers.genOf(this.i32, this.g, peer);
    if (this.peerGens.get(peer) !== gen) this.readControl(false);
    const fd = this.peerGens.get(peer) === gen ? this.peerFds.get(peer)?.[vector] : undefined;
    if (fd !== undefined) {
      native().notify(fd);
      return;
    }
    // Not announced to us yet (the daemon is behind): try again shortly, for a while.
    if (attempt < 200 && this.alive) setTimeout(() => this.ringPeer(peer, vector, attempt + 1), 5).unref();
  }

  /**
   * Publishes this node's addresses in our peer entry (how peers on other
   * nodes find our listeners), again whenever they changed since last time.
   */
  refreshAddrs(): void {
    const addrs = publishableAddrs();
    const key = addrs.map(formatAddr).join(',');
    if (key === this.published) return;
    this.published = key;
    publishAddrs(this.i32, this.g, this.id, addrs);
  }

  /** Traffic happened: keep busy-polling a little before sleeping. */
  kick(): void {
    this.spinState[0] = 1;
  }

  /** Is peer `id` of generation `gen` a member right now? */
  peerAlive(id: number, gen: number): boolean {
    return Peers.alive(this.i32, this.g, id, gen);
  }

  /** Routes events of `slot` to `h`; a slot has a client end and a server end (both may be in this process). */
  attach(slot: number, server: boolean, h: SlotHandler): void {
    this.handlers[slot * 2 + (server ? 1 : 0)] = h;
  }

  detach(slot: number, server: boolean, h: SlotHandler): void {
    const i = slot * 2 + (server ? 1 : 0);
    if (this.handlers[i] === h) this.handlers[i] = undefined;
  }

  /** Keeps the event loop alive while at least one ref is held. */
  ref(): void {
    if (this.refs++ === 0 && this.alive) this.bell.ref();
  }

  unref(): void {
    if (--this.refs === 0) this.bell.unref();
    if (this.refs < 0) this.refs = 0;
  }

  /**
   * Called from the event loop (the doorbell's poller, or the busy-poll),
   * again and again while it returns true, each call in a callback scope of
   * its own: one call does one unit of work, one event of one end of one
   * connection (one read of up to 64 KiB, one accept), so that the nextTick
   * and microtask queues run between them, as they do between the callbacks of
   * kernel sockets. `round` counts the calls of this turn of the loop: past
   * MAX_ROUNDS the rest waits for the next turn (we ring ourselves).
   */
  private onDoorbell(_status?: number, round = 0): boolean | (() => void) {
    this.selfRung = false;
    // A read for a native stream: the caller hands it over from outside JavaScript.
    const fed = this.feeds.shift();
    if (fed) return fed.feed;
    this.harvest();
    const entry = this.runq.shift();
    if (entry < 0) return false;
    try {
      this.dispatch(entry);
    } catch (e) {
      // An application listener threw (it reaches the process as in net): the
      // entries still queued are looked at on the next turn.
      if (this.runq.length > 0 || this.feeds.length > 0) this.ringSelf();
      throw e;
    }
    if (this.feeds.length > 0) return this.feeds.shift()!.feed;
    if (this.runq.length === 0) return false;
    if (round + 1 < MAX_ROUNDS) return true;
    this.ringSelf();
    return false;
  }

  /**
   * Queues a read for a native stream (see ShmHandle): it is handed over by
   * the event loop's own call, outside any JavaScript, so that the native
   * consumer's callbacks into JavaScript run as they do for a kernel socket.
   */
  feed(f: Feedable): void {
    this.feeds.push(f);
    if (!this.inDispatch) this.ringSelf();
  }

  /** Moves the slots whose bits are set in our pending bitmap to the run queue. */
  private harvest(): void {
    const i32 = this.i32;
    const base = this.pendingBase;
    for (let w = 0; w < this.pendingWords; w++) {
      if (Atomics.load(i32, base + w) === 0) continue;
      let bits = Atomics.exchange(i32, base + w, 0);
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits);
        bits &= ~(1 << b);
        const slot = (w << 5) + b;
        if (slot >= this.g.nslots) continue;
        if (this.handlers[slot * 2]) this.runq.push(slot * 2);
        // A connection request goes first, as a listening socket is looked at
        // before its client's connect completes (in this process, that is).
        if (this.handlers[slot * 2 + 1]) this.runq.push(slot * 2 + 1);
        else if (this.requestFor(slot)) this.runq.unshift(slot * 2 + 1);
      }
    }
  }

  /** The connection requests waiting for listener `index` of ours: [slot, state word] each. */
  requestsFor(index: number): [number, number][] {
    const out: [number, number][] = [];
    for (let slot = 0; slot < this.g.nslots; slot++) {
      if (this.handlers[slot * 2 + 1]) continue;
      const req = Slot.pendingRequest(this.i32, this.g, slot, this.id, this.gen);
      if (req && req.listener === index) out.push([slot, req.word]);
    }
    return out;
  }

  /** Is there a connection request for us in `slot` (no server end here yet)? */
  private requestFor(slot: number): boolean {
    return Slot.pendingRequest(this.i32, this.g, slot, this.id) !== undefined;
  }

  /**
   * Asks for one more unit of work for `slot`'s client or server end on a
   * later call (its reads are not done, or a reader started). Rings ourselves
   * unless a call is coming anyway.
   */
  again(slot: number, server: boolean): void {
    if (!this.runq.push(slot * 2 + (server ? 1 : 0))) return;
    if (!this.inDispatch) this.ringSelf();
  }

  private ringSelf(): void {
    if (this.selfRung) return;
    this.selfRung = true;
    if (this.guest) native().notify(this.guest.irqFd);
    else native().notify(this.ownFds[0]);
  }

  private dispatch(entry: number): void {
    this.inDispatch = true;
    try {
      const slot = entry >> 1;
      const h = this.handlers[entry];
      if (h) {
        h.onEvent();
        return;
      }
      if ((entry & 1) === 0) return;
      const req = Slot.pendingRequest(this.i32, this.g, slot, this.id, this.gen);
      if (!req) return;
      const l = this.acceptors.get(req.listener);
      if (l) {
        l.onIncoming(slot, req.word);
        return;
      }
      // Nobody listens there any more: refuse (a client not yet told it is connected falls back to TCP; one that was, sees a reset).
      Slot.refuse(this.i32, this.g, slot, req.word, (client, gen) => this.notify(client, slot, gen, true));
    } finally {
      this.inDispatch = false;
    }
  }

  private onControl(): void {
    this.readControl(true);
  }

  /**
   * Reads the daemon's messages. News of peers that left is acted on now when
   * `dispatch` (the socket's own callback), else on the next tick (we were
   * called from the middle of something else).
   */
  private readControl(dispatch: boolean): void {
    const N = native();
    for (;;) {
      let m: [number, number] | null | false;
      try {
        m = N.recvMsg(this.ctlFd);
      } catch {
        m = false;
      }
      if (m === null) return;
      if (m === false) {
        this.orphan();
        return;
      }
      const [id, fd] = m;
      if (fd >= 0) {
        if (id === this.id) {
          N.close(fd); // more vectors than the header said; we only poll the first
          continue;
        }
        let list = this.peerFds.get(id);
        if (!list) {
          this.peerFds.set(id, (list = []));
          this.peerGens.set(id, Peers.genOf(this.i32, this.g, id));
        }
        list.push(fd);
        if (list.length === 1) this.emit('peer-joined', id);
      } else {
        const list = this.peerFds.get(id);
        if (list) for (const f of list) N.close(f);
        this.peerFds.delete(id);
        this.peerGens.delete(id);
        debug('peer %d left the domain', id);
        const left = (): void => {
          this.onPeerLeft(id);
          this.emit('peer-left', id);
        };
        if (dispatch) left();
        else process.nextTick(left);
      }
    }
  }

  /**
   * In a guest whose agent went away, nobody would reap us when we exit and
   * a new agent cannot route our interrupts: leave now. Our connections end
   * (ECONNRESET, or end), their other sides see us dead, our entry is freed.
   */
  private leaveGuest(): void {
    debug('the zivm guest agent went away: leaving the domain, ending our shared-memory connections');
    for (const h of this.handlers) h?.onLeaving();
    const link = this.guest!;
    Peers.reap(this.i32, this.g, this.id, this.gen, (peer) => {
      const [via, vector] = Peers.routeOf(this.i32, this.g, peer);
      try {
        link.ring(via, vector);
      } catch {
        // The device is going away with the agent: nobody left to wake.
      }
    });
  }

  private onPeerLeft(id: number): void {
    const i32 = this.i32;
    for (let i = 0; i < this.handlers.length; i++) {
      const h = this.handlers[i];
      if (!h) continue;
      if (Slot.involves(i32, this.g, i >> 1, id)) h.onPeerLeft();
    }
  }

  private orphan(): void {
    if (!this.alive) return;
    debug('the zivm daemon went away: no new shared-memory connections in this domain');
    this.alive = false;
    clearInterval(this.addrTimer);
    this.ctl?.close();
    try {
      native().close(this.ctlFd);
    } catch {
      /* gone */
    }
    if (this.guest) this.leaveGuest();
    this.emit('orphaned');
  }
}

