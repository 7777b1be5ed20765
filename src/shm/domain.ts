/**
 * A domain: this process's membership of one ivshmem bus (the daemon's socket,
 * the mapped region, our doorbells and everyone else's). Joining is synchronous
 * and happens once, lazily, the first time a listener registers or a connection
 * may be co-resident. The domain then routes doorbell wakeups to channels.
 */
import { spinTimes } from '../config';
import { debug } from '../log';
import { GuestLink, guestNodeId } from '../guest/link';
import { type Addr, formatAddr, netNodeId, publishableAddrs, publishAddrs, sameBytes } from './addrs';
import * as Lay from './layout';
import { native, NativePoller, NativeRegion, NativeRing, NativeSpinner } from './native';
import * as Peers from './peers';
import { Doorbells } from './doorbells';
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
  /** About once a second: memory that stood unused may be given back. */
  idle?(): void;
  /**
   * Nothing of this end waits for an event (no bytes, no news of the other
   * end, no writes waiting for room): one now would find nothing to do. The
   * re-check passes over quiet ends.
   */
  quiet?(): boolean;
}

/** A read waiting for a native stream: `feed()` hands it over. */
export interface Feedable {
  readonly feed: () => void;
  /**
   * Hand it over outside any callback scope, as libuv hands a read to a
   * native consumer: each JavaScript callback the consumer makes is then a
   * callback of its own. Else in a callback scope of its own, as a read
   * callback.
   */
  readonly bare: boolean;
}

/** What a registered listener offers the domain: a new connection arrived in `slot`. */
export interface ListenerHandler {
  onIncoming(slot: number, stateWord: number): void;
}

/** Units of work done in one turn of the event loop before the rest waits for the next. */
const MAX_ROUNDS = 64;
/**
 * The call of onDoorbell() that defers its work to the next turn on purpose,
 * once. V8 compiles code that has never run as a deoptimisation: a process
 * whose turns first exceed MAX_ROUNDS after onDoorbell() was optimised (a busy
 * server, a few hundred milliseconds after it started) threw away the
 * optimised code of the function every connection's work goes through, and
 * ran at a fraction of its rate for a tenth of a second. Deferring is always
 * allowed (the work waits one turn), and by this call the function collects
 * type feedback, well before it is optimised.
 */
const DEFER_TRAINING_CALL = 100;
/**
 * How often a peer looks whether its node's addresses changed: every second
 * for the first ADDR_FAST_COUNT looks after joining (a guest's tap gets its
 * carrier, a namespace its addresses, while its processes start), then every
 * ADDR_SLOW_MS. Each look is a netlink dump of the node's addresses: about a
 * millisecond of CPU here, which a thousand idle processes would pay every
 * second.
 */
const ADDR_REFRESH_MS = 1000;
const ADDR_FAST_COUNT = 10;
const ADDR_SLOW_MS = 10000;
/**
 * How long a wake-up lost, or suppressed by a word someone wrote into the
 * region (a peer marked as busy-polling, a pending bit left set), costs an end
 * of a connection at most: the re-check looks at the ends twice as often (see
 * recheck()). Connection requests for us are looked at, and memory given
 * back, every RECHECK_MS.
 */
const RECHECK_MS = 1000;
/** Ring objects kept for the next connection of their slot (Domain.keepRings). */
const KEPT_RINGS = 128;
/** Slots looked at for requests per re-check (see recheck()). */
const RECHECK_SLOTS = 64;

/** What the event loop's caller makes of a read to hand over (see native/callback.h): [fn] outside any scope, fn in one. */
function handOver(fed: Feedable): (() => void) | [() => void] {
  return fed.bare ? [fed.feed] : fed.feed;
}

/** What the daemon told us as a host process (see notes.ts). */
export interface HostNotes {
  /** Members that are host processes (ourselves included). */
  members: Set<number>;
  /** The addresses the operator declared for the domain's guests. */
  guestAddrs: Addr[];
  /** The daemon admits QEMU guests: connections between host processes stay out of this memory. */
  admitsGuests: boolean;
  /** Other members' doorbells come when asked for (notes.fdRequest), not all up front. */
  onRequest: boolean;
  /**
   * A pair domain (pairs.ts): this process and one process of another user,
   * which may write anything in it. Requests are vetted as the network would
   * take them within one network namespace (ticket.ts).
   */
  pair?: boolean;
  /** A domain of a network namespace other than the daemon's: a container's, a pod's (server/pods.ts). */
  pod?: boolean;
}

export class Domain {
  readonly id: number;
  readonly gen: number;
  readonly geo: Lay.Geometry;
  readonly i32: Int32Array;
  readonly region: NativeRegion;
  readonly nodeId: number;
  /** Inside a VM guest: our share of the ivshmem device (doorbells through BAR0, ours on an MSI-X vector). */
  readonly guest: GuestLink | undefined;
  /** Host process: the addresses of the domain's guests, as the operator declared them to the daemon. */
  readonly guestAddrs: readonly Addr[];
  /**
   * Host process: guests map this memory (the daemon said so). Only
   * connections with the domain's guests live here; host processes connect
   * to each other in a domain of host processes (route.ts).
   */
  readonly admitsGuests: boolean;
  /** A pair domain: shared with one process of another user (see HostNotes.pair), or of another network namespace. */
  readonly pair: boolean;
  /** The domain of a network namespace other than the daemon's (see HostNotes.pod): other namespaces' addresses are asked of the daemon. */
  readonly inPod: boolean;
  /**
   * A pair domain with a process of another network namespace: the addresses
   * its daemon found that namespace holds, for the dials it answered (its
   * listeners are reached at those, as at an address of this node).
   */
  readonly podAddrs: Addr[] = [];
  /**
   * Such a pair domain: our address as the daemon saw it in the kernel (the
   * dialler's), which the other side vets requests against and sees as
   * remoteAddress.
   */
  podSource: Addr | undefined;
  /**
   * A pair domain the daemon made for a process of another network namespace
   * dialling one of our listeners: that process's address as the daemon saw it
   * in the kernel. Every request here is vetted against it (ticket.ts).
   */
  podPeer: Addr | undefined;
  /** False once the daemon is gone or close() ran: no new connections. */
  alive = true;
  /** A pair domain to leave once idle, and left. */
  private leaving = false;
  private leaveQueued = false;
  private left = false;

  /** Whom to ring, and how (eventfds from the daemon, or the guest's BAR0). */
  readonly bells: Doorbells;
  private readonly handlers: (SlotHandler | undefined)[];
  readonly acceptors = new Map<number, ListenerHandler>();
  private readonly bell: NativePoller;
  private readonly spinner: NativeSpinner | undefined;
  private readonly spinState: Int32Array;
  private refs = 0;
  private published: string | undefined;
  private addrTimer: NodeJS.Timeout | undefined;
  private recheckTimer: NodeJS.Timeout | undefined;
  private readonly summaryBase: number;
  private readonly summaryWords: number;
  private readonly bitmapBase: number;
  private readonly bitmapWords: number;
  /** Ends of connections (slot * 2 + 1 for the server's) with work to do, in order. */
  private readonly runq: RunQueue;
  private readonly feeds: Feedable[] = [];
  /**
   * Slots one of our own ends rang for (a connection between two sockets of
   * this process), in the order it did: looked at from the next call of the
   * event loop on (see notify()).
   */
  private readonly rungHere: RunQueue;
  private selfRung = false;
  /** The turn of the loop (the busy-poll counts them) the last call came in, and the calls of that turn. */
  private turnSeen = -1;
  private callsThisTurn = 0;
  /** Calls of onDoorbell() so far, counted up to DEFER_TRAINING_CALL. */
  private doorbellCalls = 0;
  /** Where this process's next connection looks for a free slot first (Slot.request). */
  slotHint = 0;
  /**
   * Slots this process let go of lately, the latest last: a new connection
   * tries them before the hint. The other end may still hold one for a
   * moment (it lets go when it has read our close), so the slot is free again
   * by the next connection but one; taking it again keeps a process that
   * opens connection after connection on a few slots whose pages are mapped
   * already, rather than on a new slot (and new pages) each time.
   */
  readonly recentSlots: number[] = [];
  /**
   * The ring objects of connections that ended, by slot and side (slot * 2,
   * plus 1 for the server's end): a new connection in the same slot, on the
   * same side, takes them again rather than making two native objects (see
   * Channel). At most KEPT_RINGS, the oldest dropped first.
   */
  private readonly keptRings = new Map<number, { tx: NativeRing; rx: NativeRing }>();
  /** The next harvest reads every bitmap word, not only those the summary points at. */
  private fullHarvest = false;
  /** Where the next re-check looks for requests. */
  private recheckFrom = 0;
  /** Re-checks so far, and for each end the count at its last event (see recheck()). */
  private rechecks = 0;
  private readonly lastEvent: Int32Array;
  private inDispatch = false;

  /** Made by join.ts once the daemon (or a guest's agent) has handed us our share. */
  constructor(
    ctlFd: number,
    id: number,
    region: NativeRegion,
    geo: Lay.Geometry,
    ownFds: number[],
    peerFds: Map<number, number[]>,
    guest?: GuestLink,
    host?: HostNotes,
  ) {
    this.guest = guest;
    this.guestAddrs = host?.guestAddrs ?? [];
    this.admitsGuests = !guest && (host?.admitsGuests ?? true);
    this.pair = !guest && !!host?.pair;
    this.inPod = !guest && !!host?.pod;
    const addon = native();
    this.id = id;
    this.region = region;
    this.geo = geo;
    this.i32 = new Int32Array(region.buffer);
    this.bells = new Doorbells(this.i32, geo, id, ctlFd, ownFds, peerFds, guest, host?.members ?? new Set(), host?.onRequest ?? false);
    this.bells.on('peer-left', (peer) => this.onPeerLeft(peer));
    this.bells.on('orphaned', () => this.orphan());
    this.handlers = new Array<SlotHandler | undefined>(geo.nslots * 2);
    this.lastEvent = new Int32Array(geo.nslots * 2);
    this.nodeId = guest ? guestNodeId(guest.ivPosition, this.i32) : netNodeId();
    this.summaryBase = Lay.pendingOffset(geo, id) >>> 2;
    this.summaryWords = Lay.summaryWords(geo);
    this.bitmapBase = Lay.bitmapOffset(geo, id) >>> 2;
    this.bitmapWords = Lay.bitmapWords(geo);

    this.gen = Peers.genOf(this.i32, geo, id);
    // A guest process's entry was filled in by the guest's agent (its pid in the guest, its route).
    Peers.announce(this.i32, geo, id, { kind: guest ? 'guest-process' : 'process', node: this.nodeId, pid: guest ? undefined : process.pid });
    // No other node reaches us through a pair domain: its peer is in our network namespace.
    this.refreshAddrs();
    Peers.goAlive(this.i32, geo, id);
    // Interfaces come up (a tap gets its carrier) and addresses change after we joined.
    let looks = 0;
    if (!this.pair) {
      this.addrTimer = setInterval(() => {
        this.refreshAddrs();
        if (++looks !== ADDR_FAST_COUNT) return;
        clearInterval(this.addrTimer);
        this.addrTimer = setInterval(() => this.refreshAddrs(), ADDR_SLOW_MS);
        this.addrTimer.unref();
      }, ADDR_REFRESH_MS);
      this.addrTimer.unref();
    }
    this.recheckTimer = setInterval(() => this.recheck(), RECHECK_MS / 2);
    this.recheckTimer.unref();

    const { slice, hot } = spinTimes(!!guest);
    if (hot > 0) {
      this.spinner = new addon.Spinner(
        region,
        Lay.pendingOffset(geo, id),
        this.summaryWords,
        Peers.pollingWordOf(geo, id) << 2,
        (status: number, round: number) => this.onDoorbell(status, round),
      );
      this.spinner.setTimes(slice, hot);
      this.spinState = this.spinner.state;
    } else {
      this.spinState = new Int32Array(1);
    }
    this.runq = new RunQueue(geo.nslots * 2);
    this.rungHere = new RunQueue(geo.nslots);
    this.bell = new addon.Poller(this.bells.ownFd, (status, round) => this.onDoorbell(status, round), true);
    this.bell.unref();
    // Bits someone set for this id's previous holder would hide our first
    // doorbells (a set bit is not rung again): look at all of them once.
    this.fullHarvest = true;
    this.ringSelf();
  }

  /**
   * Publishes this node's addresses in our peer entry (how peers on other
   * nodes find our listeners), again whenever they changed since last time.
   */
  refreshAddrs(): void {
    if (this.pair) return; // its peer is in our network namespace: nobody looks for our addresses there
    const addrs = publishableAddrs();
    const key = addrs.map(formatAddr).join(',');
    if (key === this.published) return;
    this.published = key;
    publishAddrs(this.i32, this.geo, this.id, addrs);
  }

  /**
   * Every RECHECK_MS / 2: queues, as if each had been rung, every slot whose
   * bit is set in our pending bitmap (a peer that thought we busy-polled, or a
   * doorbell lost, set it without ringing), and every end we hold that is not
   * quiet and had no event since the re-check before this one. Every
   * RECHECK_MS: the requests for us in a share of the slots, and read buffers
   * and ring pages not used for a second give their memory back.
   *
   * An end that had an event lately comes back by itself while its traffic
   * goes on; stuck, it is queued by the re-check after next, within
   * RECHECK_MS. Queueing it anyway would give a busy connection an event that
   * finds nothing to do, a path its traffic never takes: V8 compiled that
   * path as a deoptimisation, and the first re-check of a busy process threw
   * away the optimised code of every connection's work (for 100 ms, a fifth
   * of the requests of an HTTP server, a second after it started).
   *
   * Looking at every slot header each time would cost every idle process a
   * walk over the whole slot table (16,374 entries by default); a request
   * whose bit someone cleared is found within nslots / RECHECK_SLOTS seconds.
   */
  private recheck(): void {
    if (!this.alive) return;
    const count = ++this.rechecks;
    const full = (count & 1) === 0;
    if (full) native().readPoolTrim();
    this.harvestAll();
    this.recheckEnds(count, full);
    if (full && this.acceptors.size > 0) {
      const nslots = this.geo.nslots;
      for (let k = Math.min(nslots, RECHECK_SLOTS); k > 0; k--) {
        const slot = this.recheckFrom;
        this.recheckFrom = slot + 1 < nslots ? slot + 1 : 0;
        if (!this.handlers[slot * 2 + 1] && this.requestFor(slot)) this.runq.push(slot * 2 + 1);
      }
    }
    if (this.runq.length > 0 && !this.inDispatch) this.ringSelf();
  }

  /**
   * The walk over every end, a function of its own: V8 compiles it while it
   * runs (it is long), and code after it that had not run yet would be a
   * deoptimisation; what it does with an end is one too.
   */
  private recheckEnds(count: number, full: boolean): void {
    for (let end = 0; end < this.handlers.length; end++) {
      const handler = this.handlers[end];
      if (handler) this.recheckEnd(end, handler, count, full);
    }
  }

  private recheckEnd(end: number, handler: SlotHandler, count: number, full: boolean): void {
    if (this.lastEvent[end] < count - 1 && !handler.quiet?.()) this.runq.push(end);
    if (!full) return;
    try {
      handler.idle?.();
    } catch (err) {
      debug('slot %d: giving memory back failed: %s', end >> 1, (err as Error).message);
    }
  }

  /** Traffic happened: keep busy-polling a little before sleeping. */
  kick(): void {
    this.spinState[0] = 1;
  }

  /** Did the operator declare `addr` an address of this domain's guests? */
  declares(addr: Addr): boolean {
    return this.guestAddrs.some((declared) => declared.family === addr.family && sameBytes(declared.bytes, addr.bytes));
  }

  /**
   * Is peer `id` a host process, as the daemon told us (never as the region
   * says)? In a domain that admits no guests, every member is: the daemon
   * admitted each one after it said HELLO (a pair domain's two members were
   * chosen by a daemon, each a host process).
   */
  isHostProcess(id: number): boolean {
    return (!this.guest && !this.admitsGuests) || this.bells.hostMembers.has(id);
  }

  /** Is peer `id` of generation `gen` a member right now? */
  peerAlive(id: number, gen: number): boolean {
    return Peers.alive(this.i32, this.geo, id, gen);
  }

  /** Keeps the ring objects of an end that let go of its slot, for the slot's next connection on that side. */
  keepRings(slot: number, server: boolean, tx: NativeRing, rx: NativeRing): void {
    const key = slot * 2 + (server ? 1 : 0);
    this.keptRings.delete(key);
    this.keptRings.set(key, { tx, rx });
    if (this.keptRings.size > KEPT_RINGS) {
      for (const oldest of this.keptRings.keys()) {
        this.keptRings.delete(oldest);
        break;
      }
    }
  }

  /** The ring objects kept for `slot` on this side, if any; they are no longer kept. */
  takeRings(slot: number, server: boolean): { tx: NativeRing; rx: NativeRing } | undefined {
    const key = slot * 2 + (server ? 1 : 0);
    const kept = this.keptRings.get(key);
    if (kept) this.keptRings.delete(key);
    return kept;
  }

  /** Routes events of `slot` to `handle`; a slot has a client end and a server end (both may be in this process). */
  attach(slot: number, server: boolean, handle: SlotHandler): void {
    this.handlers[slot * 2 + (server ? 1 : 0)] = handle;
  }

  detach(slot: number, server: boolean, handle: SlotHandler): void {
    const index = slot * 2 + (server ? 1 : 0);
    if (this.handlers[index] === handle) this.handlers[index] = undefined;
    if (this.leaving) this.scheduleLeave();
  }

  /** On a later turn: whoever let go of a slot may still look at the region on this one. */
  private scheduleLeave(): void {
    if (this.leaveQueued || this.left) return;
    this.leaveQueued = true;
    setImmediate(() => {
      this.leaveQueued = false;
      this.leaveIfIdle();
    });
  }

  /**
   * A pair domain is left once its other process has gone (or its daemon)
   * and the last of our connections in it has let go of its slot: its
   * memory, its doorbells and its socket go (the daemon then ends it).
   */
  private leaveIfIdle(): void {
    if (this.left || this.handlers.some((handler) => handler !== undefined)) return;
    this.left = true;
    this.alive = false;
    clearInterval(this.addrTimer);
    clearInterval(this.recheckTimer);
    this.acceptors.clear();
    this.bell.close();
    this.spinner?.close();
    this.bells.close();
    this.region.close();
    debug('left pair domain (peer %d): its other process is gone', this.id);
    this.onLeft?.();
  }

  /** Called once a pair domain has been left (pairs.ts forgets it). */
  onLeft: (() => void) | undefined;

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
   * kernel sockets. `round` counts the calls of this batch: past MAX_ROUNDS
   * the rest waits for the next turn (we ring ourselves). With the busy-poll
   * both it (before the loop polls) and the doorbell's poller (as it polls)
   * call in one turn: their calls share the MAX_ROUNDS of the turn, and what is
   * left past them is called for by the busy-poll's next turn.
   */
  private onDoorbell(_status?: number, round = 0): boolean | (() => void) | [() => void] {
    this.selfRung = false;
    // Every way to defer the rest to the next turn leaves this block for the one call below (see DEFER_TRAINING_CALL).
    let ring = true;
    work: {
      if (this.doorbellCalls < DEFER_TRAINING_CALL && ++this.doorbellCalls === DEFER_TRAINING_CALL) break work;
      if (this.spinner) {
        const turn = this.spinState[1];
        if (turn !== this.turnSeen) {
          this.turnSeen = turn;
          this.callsThisTurn = 0;
        }
        if (this.callsThisTurn >= MAX_ROUNDS) {
          ring = false;
          break work;
        }
        this.callsThisTurn++;
      }
      // A read for a native stream: the caller hands it over from outside JavaScript.
      const fed = this.feeds.shift();
      if (fed) return handOver(fed);
      // Our own ends' rings of an earlier call, in their order, then what is queued; the bitmap is read again once that is done (or each new call).
      if (round === 0 && this.rungHere.length > 0) this.takeRungHere();
      if (round === 0 || this.runq.length === 0) {
        if (this.fullHarvest) this.harvestAll();
        else this.harvest();
        this.fullHarvest = false;
      }
      const end = this.runq.shift();
      if (end < 0) return false;
      try {
        this.dispatch(end);
      } catch (err) {
        // An application listener threw (it reaches the process as in net): the
        // entries still queued are looked at on the next turn.
        if (this.runq.length > 0 || this.feeds.length > 0) this.ringSelf();
        throw err;
      }
      if (this.feeds.length > 0) return handOver(this.feeds.shift()!);
      if (this.runq.length === 0) return false;
      if (round + 1 < MAX_ROUNDS && !(this.spinner && this.callsThisTurn >= MAX_ROUNDS)) return true;
    }
    return this.deferRest(ring);
  }

  /**
   * The rest of the work on the next turn: the busy-poll calls for it (state
   * [2]); with `ring`, the ring keeps the loop from sleeping before that (the
   * doorbell's poller called, or the busy-poll may stop); without, the
   * busy-poll alone (its share of this turn is used up).
   */
  private deferRest(ring: boolean): false {
    if (this.spinner) this.spinState[2] = 1;
    if (ring) this.ringSelf();
    return false;
  }

  /**
   * Queues a read for a native stream (see ShmHandle): it is handed over by
   * the event loop's own call, outside any JavaScript, so that the native
   * consumer's callbacks into JavaScript run as they do for a kernel socket.
   */
  feed(fed: Feedable): void {
    this.feeds.push(fed);
    if (!this.inDispatch) this.ringSelf();
  }

  /**
   * Moves the slots whose bits are set in our pending bitmap to the run queue:
   * the bitmap words the summary points at. Called for every unit of work:
   * the rare full look (harvestAll) is a function of its own, so that taking
   * it does not throw away this one's optimised code (V8 compiles a branch
   * that never ran as a deoptimisation).
   */
  private harvest(): void {
    const i32 = this.i32;
    for (let high = 0; high < this.summaryWords; high++) {
      if (Atomics.load(i32, this.summaryBase + high) === 0) continue;
      let words = Atomics.exchange(i32, this.summaryBase + high, 0);
      while (words !== 0) {
        const bit = 31 - Math.clz32(words);
        words &= ~(1 << bit);
        const word = (high << 5) + bit;
        if (word < this.bitmapWords) this.harvestWord(word);
      }
    }
  }

  /** harvest() of every bitmap word (the re-check, which also catches a bit set without its summary bit). */
  private harvestAll(): void {
    const i32 = this.i32;
    for (let word = 0; word < this.summaryWords; word++) Atomics.store(i32, this.summaryBase + word, 0);
    for (let word = 0; word < this.bitmapWords; word++) this.harvestWord(word);
  }

  private harvestWord(word: number): void {
    const at = this.bitmapBase + word;
    if (Atomics.load(this.i32, at) === 0) return;
    let bits = Atomics.exchange(this.i32, at, 0);
    while (bits !== 0) {
      const bit = 31 - Math.clz32(bits);
      bits &= ~(1 << bit);
      this.queueSlot((word << 5) + bit);
    }
  }

  /** Queues the ends of `slot` we hold, or the connection request in it for us. */
  private queueSlot(slot: number): void {
    if (slot < 0 || slot >= this.geo.nslots) return;
    if (this.handlers[slot * 2]) this.runq.push(slot * 2);
    // A connection request goes first, as a listening socket is looked at
    // before its client's connect completes (in this process, that is).
    if (this.handlers[slot * 2 + 1]) this.runq.push(slot * 2 + 1);
    else if (this.requestFor(slot)) this.runq.unshift(slot * 2 + 1);
  }

  /** The connection requests waiting for listener `index` of ours: [slot, state word] each. */
  requestsFor(index: number): [number, number][] {
    const requests: [number, number][] = [];
    for (let slot = 0; slot < this.geo.nslots; slot++) {
      if (this.handlers[slot * 2 + 1]) continue;
      const req = Slot.pendingRequest(this.i32, this.geo, slot, this.id, this.gen);
      if (req && req.listener === index) requests.push([slot, req.word]);
    }
    return requests;
  }

  /** Is there a connection request for us in `slot` (no server end here yet)? */
  private requestFor(slot: number): boolean {
    return Slot.pendingRequest(this.i32, this.geo, slot, this.id) !== undefined;
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

  /**
   * Work waits for a later call of onDoorbell(): the busy-poll's next turn
   * calls for it (the loop does not block before), or else our own doorbell.
   */
  private ringSelf(): void {
    if (this.selfRung) return;
    this.selfRung = true;
    if (!this.spinner?.wake()) this.bells.ringSelf();
  }

  /**
   * Rings `peer` for `slot` (see Doorbells.notify). An end of our own (a
   * connection between two sockets of this process) is queued at once, in
   * the order its events happen, as the kernel reports a loopback socket's:
   * a reset on one connection followed by bytes on another are seen in that
   * order, whatever their slots.
   */
  notify(peer: number, slot: number, peerGen?: number, force = false): void {
    if (peer === this.id && (peerGen === undefined || peerGen === this.gen)) {
      this.rungHere.push(slot);
      this.ringSelf();
      return;
    }
    this.bells.notify(peer, slot, peerGen, force);
  }

  private takeRungHere(): void {
    for (let slot = this.rungHere.shift(); slot >= 0; slot = this.rungHere.shift()) this.queueSlot(slot);
  }

  private dispatch(end: number): void {
    this.inDispatch = true;
    try {
      const slot = end >> 1;
      const handle = this.handlers[end];
      if (handle) {
        this.lastEvent[end] = this.rechecks;
        handle.onEvent();
        // A server end that let go of its slot now may leave a new request behind it: on a later call.
        if ((end & 1) === 1 && !this.handlers[end] && this.requestFor(slot)) this.runq.push(end);
        return;
      }
      if ((end & 1) === 0) return;
      const req = Slot.pendingRequest(this.i32, this.geo, slot, this.id, this.gen);
      if (!req) return;
      const listener = this.acceptors.get(req.listener);
      if (listener) {
        listener.onIncoming(slot, req.word);
        return;
      }
      // Nobody listens there any more: refuse (a client not yet told it is connected falls back to TCP; one that was, sees a reset).
      Slot.refuse(this.i32, this.geo, slot, req.word, (client, gen) => this.notify(client, slot, gen, true));
    } finally {
      this.inDispatch = false;
    }
  }

  /**
   * In a guest whose agent went away, nobody would reap us when we exit and
   * a new agent cannot route our interrupts: leave now. Our connections end
   * (ECONNRESET, or end), their other sides see us dead, our entry is freed.
   */
  private leaveGuest(): void {
    debug('the zivm guest agent went away: leaving the domain, ending our shared-memory connections');
    for (const handle of this.handlers) handle?.onLeaving();
    const link = this.guest!;
    Peers.reap(this.i32, this.geo, this.id, this.gen, (peer) => {
      const [via, vector] = Peers.routeOf(this.i32, this.geo, peer);
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
      const handle = this.handlers[i];
      if (!handle) continue;
      if (Slot.involves(i32, this.geo, i >> 1, id)) handle.onPeerLeft();
    }
    if (this.pair) {
      this.alive = false;
      this.leaving = true;
      this.scheduleLeave();
    }
  }

  private orphan(): void {
    if (this.pair && !this.left) {
      this.alive = false;
      this.leaving = true;
      this.scheduleLeave();
      return;
    }
    if (!this.alive) return;
    this.alive = false;
    clearInterval(this.addrTimer);
    clearInterval(this.recheckTimer);
    if (this.guest) this.leaveGuest();
  }
}
