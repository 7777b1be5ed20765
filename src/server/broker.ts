/**
 * The broker: shared memory between processes of different users.
 *
 * Processes of one user meet in their daemon's domain. A process of another
 * user may reach any of their listeners over loopback TCP anyway; over shared
 * memory it gets exactly that and nothing more: a pair domain, a region of its
 * own shared with the one process that listens, made by the listener's
 * daemon. Neither maps anything else of the other's.
 *
 * The daemon of a domain of host processes listens on a socket in the
 * abstract namespace (config.brokerName), which only processes in its network
 * namespace can reach. A dialler says where it dials (notes.dialNotes); the
 * daemon, which knows who it is from the socket (SO_PEERCRED), looks the
 * address and port up in its own directory, which only its own user's
 * processes write, as the kernel would pick among them. If one of its members
 * listens there, it makes a pair domain for that member and the dialler (or
 * takes the one they have), writes the listener's entry into it, and hands
 * each its end of the pair domain's socket: the listener through its own
 * socket to the daemon (SERVE), the dialler in the answer (PAIR). The
 * listener's process vets every request in the pair domain as the network
 * would within one network namespace (ticket.ts).
 */
import { brokerName } from '../config';
import { debug } from '../log';
import { type Addr, isOwnAddress, netNodeId } from '../shm/addrs';
import { find, type DirectoryView } from '../shm/directory';
import * as Lay from '../shm/layout';
import { closeQuiet, native, type NativePoller } from '../shm/native';
import { DialDesk, PairBook, type DialAnswer, type PairDomain } from './dialdesk';
import { NOTE_NO_PAIR, NOTE_PAIR, NOTE_SERVE, note } from '../shm/notes';
import * as Peers from '../shm/peers';
import { myUid } from '../sys';

/** A pair domain's region: a sparse memfd, so its size sets how many connections fit (1,023 with 1 MiB rings), not memory. */
const PAIR_SIZE = 2 * 1024 * 1024 * 1024;
/**
 * Pair domains a listening process takes part in, and pair domains the
 * processes of one other user hold with ours, at most: each costs the
 * listening process a socket and two eventfds. Past that, TCP.
 */
const MAX_PAIRS_PER_LISTENER = 128;
const MAX_PAIRS_PER_USER = 256;

/** What the broker needs of its daemon. */
export interface BrokerHost {
  readonly view: Int32Array | null;
  readonly geometry: Lay.Geometry;
  hostMember(id: number): { id: number; gen: number; pid: number } | undefined;
  sendOwned(id: number, value: number, fd: number): boolean;
  makePair(size: number): PairDomain | undefined;
  log(line: string, loud?: boolean): void;
}

/** What the broker keeps of a pair beyond the pair itself: the dialler's user, the listening member of our domain. */
interface Paired {
  uid: number;
  owner: number;
}

/** Listens on the daemon's broker name; null (said under NODE_DEBUG=zivm) if it cannot. */
export function startBroker(host: BrokerHost): Broker | null {
  const addon = native();
  const name = brokerName(myUid());
  let fd: number;
  try {
    fd = addon.unixListen(name, 64);
  } catch (err) {
    // Another daemon of ours holds it (one per user and network namespace), or another user took the name first.
    debug('no broker for other users: cannot listen on %s: %s', name, (err as Error).message);
    return null;
  }
  return new Broker(host, fd, name);
}

export class Broker {
  private readonly poller: NativePoller;
  private readonly desk: DialDesk;
  private readonly pairs: PairBook<Paired>;
  private closed = false;
  private readonly nodeId = netNodeId();

  constructor(
    private readonly host: BrokerHost,
    private readonly fd: number,
    readonly name: string,
  ) {
    this.pairs = new PairBook<Paired>(
      () => host.makePair(PAIR_SIZE),
      (line) => host.log(line),
    );
    this.desk = new DialDesk(
      (dialFd, addr, port) => this.pairFor(dialFd, addr, port),
      (line) => host.log(line),
    );
    this.poller = new (native().Poller)(fd, () => this.onAcceptable(), false);
    this.poller.unref();
    host.log(`brokering for other users at ${name}`, false);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    closeQuiet(this.fd);
    this.desk.close();
    this.pairs.close();
  }

  private onAcceptable(): void {
    const addon = native();
    for (;;) {
      let fd: number;
      try {
        fd = addon.unixAccept(this.fd);
      } catch (err) {
        debug('broker accept failed: %s', (err as Error).message);
        return;
      }
      if (fd < 0) return;
      this.desk.take(fd);
    }
  }

  /** Pairs the dialler on `fd` with the listener at (addr, port): the answer to send it. */
  private pairFor(fd: number, addr: Addr, port: number): DialAnswer {
    const addon = native();
    const refuse = (why: number): DialAnswer => ({ values: [note(NOTE_NO_PAIR, why)], fd: -1 });
    const cred = addon.peerCred(fd);
    if (cred.uid === myUid()) return refuse(2);
    const i32 = this.host.view;
    if (!i32) return refuse(3);
    // The dialler is in our network namespace (it reached our name): it dials an address of this node, or no listener of ours.
    if (!isOwnAddress(addr)) return refuse(1);
    const view: DirectoryView = {
      i32,
      geo: this.host.geometry,
      nodeId: this.nodeId,
      guest: undefined,
      admitsGuests: false,
      pair: false,
      declares: () => false,
      isHostProcess: (id) => this.host.hostMember(id) !== undefined,
      peerAlive: (id, gen) => Peers.alive(i32, this.host.geometry, id, gen),
    };
    const found = find(view, addr, port);
    if (!found) return refuse(1);
    const owner = this.host.hostMember(found.owner);
    if (!owner || owner.gen !== found.ownerGen) return refuse(4);
    const key = `${cred.pid}/${owner.id}/${owner.gen}`;
    const opened = this.pairs.open(key, { uid: cred.uid, owner: owner.id }, () => {
      let ofListener = 0;
      let ofUser = 0;
      for (const other of this.pairs.values()) {
        if (other.owner === owner.id) ofListener++;
        if (other.uid === cred.uid) ofUser++;
      }
      return ofListener < MAX_PAIRS_PER_LISTENER && ofUser < MAX_PAIRS_PER_USER;
    });
    if (opened === 'full') return refuse(5);
    if (!opened) return refuse(3);
    const { pair, dialEnd, listenEnd } = opened;
    const pairIndex = this.pairs.listenerIn(opened, found.word, this.nodeId, { i32, geo: this.host.geometry, index: found.index }, port);
    if (pairIndex === undefined) return refuse(3);
    // The listener's process first: it may be asked to accept as soon as the dialler has its end.
    const serve = note(NOTE_SERVE, pair.serial * 2 ** 32 + found.index * 0x10000 + pairIndex);
    if (!this.host.sendOwned(owner.id, serve, listenEnd)) {
      closeQuiet(dialEnd);
      return refuse(4);
    }
    this.host.log(`paired pid ${cred.pid} (uid ${cred.uid}) with peer ${owner.id} (pid ${owner.pid}) for port ${port}: pair ${pair.serial}`, false);
    return { values: [note(NOTE_PAIR, pair.serial * 0x10000 + pairIndex)], fd: dialEnd };
  }
}
