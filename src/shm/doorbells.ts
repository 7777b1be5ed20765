/**
 * Whom to ring, and how. A host process holds an eventfd per vector of the
 * peers it rings (in a domain of host processes the daemon hands them out when
 * asked; in one with guests, those of every peer, as QEMU's protocol has it),
 * and hears of peers joining and leaving on its socket to the daemon; a guest process rings anyone through BAR0
 * of the guest's device. A peer rung for a slot gets the slot's bit in its
 * pending bitmap; a doorbell is rung only on that bit's 0 -> 1 edge, and not
 * at all while the peer busy-polls.
 */
import EventEmitter from 'eventemitter3';
import { debug } from '../log';
import type { GuestLink } from '../guest/link';
import * as Lay from './layout';
import { closeQuiet, native, NativePoller } from './native';
import { DialReader, fdRequest, NOTE_DIAL4, NOTE_DIAL6, NOTE_DIAL_PORT, NOTE_MEMBER, NOTE_SERVE, readNote } from './notes';
import type { Addr } from './addrs';

/** How long ringing a peer waits for its doorbells from the daemon before it goes on without (see askFor). */
const ASK_WAIT_MS = 20;
import * as Peers from './peers';

export interface DoorbellEvents {
  /** A peer joined (its doorbells arrived). */
  'peer-joined': (id: number) => void;
  /** A peer left the domain. */
  'peer-left': (id: number) => void;
  /**
   * The daemon paired one of our listeners with a process of another user
   * (notes.NOTE_SERVE): `fd` is our end of the pair domain's socket, or -1
   * when we have that pair domain already. Whoever handles it owns the fd.
   */
  /** The daemon paired one of our listeners; `peer`: the dialler's address as the daemon saw it (another network namespace's process). */
  serve: (payload: number, fd: number, peer: Addr | undefined) => void;
  /** The daemon went away: no news any more, no new connections. */
  orphaned: () => void;
}

export class Doorbells extends EventEmitter<DoorbellEvents> {
  /** The dialler's address that comes before a SERVE, being read. */
  private readonly serveFrom = new DialReader();
  private servePeer: Addr | undefined;
  private readonly peerFds = new Map<number, number[]>();
  /** The generation of the peer each entry of peerFds belongs to: an id handed out again has new fds. */
  private readonly peerGens = new Map<number, number>();
  private readonly ctl: NativePoller | undefined;
  /** Peers whose doorbells we asked the daemon for, and the generation we asked for. */
  private readonly asked = new Map<number, number>();
  private orphaned = false;

  constructor(
    private readonly i32: Int32Array,
    private readonly geo: Lay.Geometry,
    private readonly id: number,
    private readonly ctlFd: number,
    private readonly ownFds: number[],
    peerFds: Map<number, number[]>,
    private readonly guest: GuestLink | undefined,
    /** Members that are host processes, as the daemon says (notes.ts); kept up to date here. */
    readonly hostMembers: Set<number>,
    /** The daemon hands out a peer's doorbells when asked (notes.fdRequest): we hold those of the peers we ring. */
    private readonly onRequest = false,
  ) {
    super();
    for (const [peer, fds] of peerFds) {
      this.peerFds.set(peer, fds);
      this.peerGens.set(peer, Peers.genOf(i32, geo, peer));
    }
    if (ctlFd >= 0) {
      this.ctl = new (native().Poller)(ctlFd, () => this.readControl(true), false);
      this.ctl.unref();
    }
  }

  /** The eventfd that rings us: our own vector 0, or the guest's MSI-X vector the agent gave us. */
  get ownFd(): number {
    return this.guest ? this.guest.irqFd : this.ownFds[0];
  }

  /** Rings ourselves (work queued for a later turn). */
  ringSelf(): void {
    native().notify(this.ownFd);
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
    if (peer < 0 || peer >= this.geo.maxPeers) return;
    if (peerGen !== undefined && Peers.genOf(this.i32, this.geo, peer) !== peerGen) return;
    if (!Lay.markPending(this.i32, this.geo, peer, slot) && !force) return;
    // A peer that busy-polls sees the bit by itself.
    if (Peers.isPolling(this.i32, this.geo, peer)) return;
    // A process in a guest is rung as one of the guest's vectors (PEER.ROUTE).
    const [via, vector] = Peers.routeOf(this.i32, this.geo, peer);
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
    const gen = Peers.genOf(this.i32, this.geo, peer);
    if (this.peerGens.get(peer) !== gen) this.readControl(false);
    if (this.peerGens.get(peer) !== gen && this.onRequest && !this.orphaned) this.askFor(peer, gen);
    const fd = this.peerGens.get(peer) === gen ? this.peerFds.get(peer)?.[vector] : undefined;
    if (fd !== undefined) {
      native().notify(fd);
      return;
    }
    // Not announced to us yet (the daemon is behind): try again shortly, for a while.
    if (attempt < 200 && !this.orphaned) setTimeout(() => this.ringPeer(peer, vector, attempt + 1), 5).unref();
  }

  /**
   * Asks the daemon for `peer`'s doorbells (once per generation of the peer)
   * and waits for the answer a little: a live daemon answers in microseconds.
   * Without an answer in time the caller's retries and the periodic re-check
   * carry on.
   */
  private askFor(peer: number, gen: number): void {
    const addon = native();
    if (this.asked.get(peer) !== gen) {
      this.asked.set(peer, gen);
      try {
        addon.sendMsg(this.ctlFd, fdRequest(peer), -1);
      } catch {
        return; // a broken socket: the poller sees the daemon gone
      }
    }
    const deadline = Date.now() + ASK_WAIT_MS;
    while (this.peerGens.get(peer) !== gen && !this.orphaned) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      addon.waitReadable(this.ctlFd, left);
      this.readControl(false);
    }
  }

  /**
   * Reads the daemon's messages. News of peers that left is acted on now when
   * `dispatch` (the socket's own callback), else on the next tick (we were
   * called from the middle of something else).
   */
  private readControl(dispatch: boolean): void {
    const addon = native();
    for (;;) {
      let msg: [number, number] | null | false;
      try {
        msg = addon.recvMsg(this.ctlFd);
      } catch {
        // A broken socket to the daemon: it is gone, as at the end of the stream.
        msg = false;
      }
      if (msg === null) return;
      if (msg === false) {
        this.orphan();
        return;
      }
      const [id, fd] = msg;
      const serve = readNote(id);
      if (serve && fd < 0 && (serve.type === NOTE_DIAL4 || serve.type === NOTE_DIAL6 || serve.type === NOTE_DIAL_PORT)) {
        // The address of the dialler the next SERVE is for (server/pods.ts).
        const peer = this.serveFrom.take(serve.type, serve.payload);
        if (peer) this.servePeer = { family: peer.family, bytes: peer.bytes };
        continue;
      }
      if (serve && serve.type === NOTE_SERVE) {
        const peer = this.servePeer;
        this.servePeer = undefined;
        const handOut = (): void => {
          if (this.listenerCount('serve') > 0) this.emit('serve', serve.payload, fd, peer);
          else if (fd >= 0) closeQuiet(fd);
        };
        if (dispatch) handOut();
        else process.nextTick(handOut);
        continue;
      }
      if (fd >= 0 && serve) {
        addon.close(fd); // a note with an fd it does not carry
        continue;
      }
      const seen = fd < 0 ? serve : undefined;
      if (seen) {
        if (seen.type === NOTE_MEMBER && seen.payload < this.geo.maxPeers) this.hostMembers.add(seen.payload);
        continue;
      }
      if (fd >= 0) {
        if (id === this.id) {
          addon.close(fd); // more vectors than the header said; we only poll the first
          continue;
        }
        let list = this.peerFds.get(id);
        if (!list) {
          this.peerFds.set(id, (list = []));
          this.peerGens.set(id, Peers.genOf(this.i32, this.geo, id));
        }
        list.push(fd);
        if (list.length === 1) this.emit('peer-joined', id);
      } else {
        const list = this.peerFds.get(id);
        if (list) for (const peerFd of list) addon.close(peerFd);
        this.peerFds.delete(id);
        this.peerGens.delete(id);
        this.asked.delete(id);
        this.hostMembers.delete(id);
        debug('peer %d left the domain', id);
        const left = (): void => {
          this.emit('peer-left', id);
        };
        if (dispatch) left();
        else process.nextTick(left);
      }
    }
  }

  /** Lets go of every fd: the daemon's socket (it sees us leave), our doorbells and the peers'. */
  close(): void {
    this.orphaned = true;
    this.ctl?.close();
    closeQuiet(this.ctlFd);
    for (const fds of this.peerFds.values()) for (const fd of fds) closeQuiet(fd);
    this.peerFds.clear();
    this.peerGens.clear();
    for (const fd of this.ownFds) closeQuiet(fd);
  }

  private orphan(): void {
    if (this.orphaned) return;
    this.orphaned = true;
    debug('the zivm daemon went away: no new shared-memory connections in this domain');
    this.ctl?.close();
    closeQuiet(this.ctlFd);
    this.emit('orphaned');
  }
}
