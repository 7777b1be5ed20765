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
import { isOwnAddress, netNodeId, readAddr } from '../shm/addrs';
import { find, register, type DirectoryView } from '../shm/directory';
import * as Lay from '../shm/layout';
import { closeQuiet, native, recvOrEnd, type NativePoller } from '../shm/native';
import { DialReader, NOTE_NO_PAIR, NOTE_PAIR, NOTE_SERVE, note, readNote } from '../shm/notes';
import * as Peers from '../shm/peers';
import { myUid } from '../sys';

/** A pair domain's region: a sparse memfd, so its size sets how many connections fit (1,023 with 512 KiB rings), not memory. */
const PAIR_SIZE = 1024 * 1024 * 1024;
/** A dialler that has not finished saying where it dials by then is dropped. */
const DIAL_WAIT_MS = 1000;
/** Diallers being read at once, at most. */
const MAX_DIALLERS = 64;
/**
 * Pair domains a listening process takes part in, and pair domains the
 * processes of one other user hold with ours, at most: each costs the
 * listening process a socket and two eventfds. Past that, TCP.
 */
const MAX_PAIRS_PER_LISTENER = 128;
const MAX_PAIRS_PER_USER = 256;

/** A pair domain as the broker uses it (a Daemon made with `pair`). */
export interface PairDomain {
  readonly view: Int32Array | null;
  readonly geometry: Lay.Geometry;
  adopt(fd: number): { id: number; gen: number } | undefined;
  hostMember(id: number): { id: number; gen: number } | undefined;
  memberAlive(id: number, gen: number): boolean;
  close(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** What the broker needs of its daemon. */
export interface BrokerHost {
  readonly view: Int32Array | null;
  readonly geometry: Lay.Geometry;
  hostMember(id: number): { id: number; gen: number; pid: number } | undefined;
  sendOwned(id: number, value: number, fd: number): boolean;
  makePair(size: number): PairDomain | undefined;
  log(line: string, loud?: boolean): void;
}

interface Pair {
  serial: number;
  key: string;
  /** The dialler's user, and the listening member of our domain. */
  uid: number;
  owner: number;
  domain: PairDomain;
  dialler: { id: number; gen: number };
  listener: { id: number; gen: number };
  /** Pair listener index by host listener index and state word. */
  listeners: Map<string, number>;
}

interface Dialler {
  poller: NativePoller;
  timer: NodeJS.Timeout;
  reader: DialReader;
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
  private readonly diallers = new Map<number, Dialler>();
  private readonly pairs = new Map<string, Pair>();
  private nextSerial = 1;
  private closed = false;
  private readonly nodeId = netNodeId();

  constructor(
    private readonly host: BrokerHost,
    private readonly fd: number,
    readonly name: string,
  ) {
    this.poller = new (native().Poller)(fd, () => this.onAcceptable(), false);
    this.poller.unref();
    host.log(`brokering for other users at ${name}`, false);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    closeQuiet(this.fd);
    for (const fd of [...this.diallers.keys()]) this.drop(fd);
    for (const pair of [...this.pairs.values()]) pair.domain.close();
    this.pairs.clear();
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
      if (this.diallers.size >= MAX_DIALLERS) {
        closeQuiet(fd);
        continue;
      }
      try {
        const poller = new addon.Poller(fd, () => this.onReadable(fd), false);
        poller.unref();
        const timer = setTimeout(() => this.drop(fd), DIAL_WAIT_MS);
        timer.unref();
        this.diallers.set(fd, { poller, timer, reader: new DialReader() });
      } catch (err) {
        debug('cannot watch a dialler: %s', (err as Error).message);
        closeQuiet(fd);
      }
    }
  }

  private drop(fd: number): void {
    const dialler = this.diallers.get(fd);
    if (!dialler) return;
    this.diallers.delete(fd);
    dialler.poller.close();
    clearTimeout(dialler.timer);
    closeQuiet(fd);
  }

  private onReadable(fd: number): void {
    const dialler = this.diallers.get(fd);
    if (!dialler) return;
    for (let k = 0; k < 8; k++) {
      const msg = recvOrEnd(fd);
      if (msg === null) return;
      if (msg === false) return this.drop(fd);
      if (msg[1] >= 0) closeQuiet(msg[1]);
      const seen = readNote(msg[0]);
      const dial = seen && msg[1] < 0 ? dialler.reader.take(seen.type, seen.payload) : undefined;
      if (!seen) {
        this.answer(fd, note(NOTE_NO_PAIR, 0), -1);
        return this.drop(fd);
      }
      if (dial) {
        let answer: { value: number; fd: number };
        try {
          answer = this.pairFor(fd, dial);
        } catch (err) {
          this.host.log(`pairing failed: ${(err as Error).message}`);
          answer = { value: note(NOTE_NO_PAIR, 3), fd: -1 };
        }
        this.answer(fd, answer.value, answer.fd);
        closeQuiet(answer.fd);
        return this.drop(fd);
      }
    }
  }

  private answer(fd: number, value: number, passFd: number): void {
    try {
      native().sendMsg(fd, value, passFd);
    } catch (err) {
      debug('cannot answer a dialler: %s', (err as Error).message);
    }
  }

  /** Pairs the dialler on `fd` with the listener at (addr, port): the answer to send it. */
  private pairFor(fd: number, dial: { family: 4 | 6; bytes: Uint8Array; port: number }): { value: number; fd: number } {
    const addon = native();
    const refuse = (why: number): { value: number; fd: number } => ({ value: note(NOTE_NO_PAIR, why), fd: -1 });
    const cred = addon.peerCred(fd);
    if (cred.uid === myUid()) return refuse(2);
    const i32 = this.host.view;
    if (!i32) return refuse(3);
    const addr = { family: dial.family, bytes: dial.bytes };
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
    const found = find(view, addr, dial.port);
    if (!found) return refuse(1);
    const owner = this.host.hostMember(found.owner);
    if (!owner || owner.gen !== found.ownerGen) return refuse(4);
    const key = `${cred.pid}/${owner.id}/${owner.gen}`;
    let pair = this.pairs.get(key);
    let dialEnd = -1;
    let listenEnd = -1;
    if (pair && !(pair.domain.memberAlive(pair.dialler.id, pair.dialler.gen) && pair.domain.memberAlive(pair.listener.id, pair.listener.gen))) {
      // One of them left it: a new pair domain (the old one goes once the other leaves too).
      this.pairs.delete(key);
      pair = undefined;
    }
    if (!pair) {
      let ofListener = 0;
      let ofUser = 0;
      for (const other of this.pairs.values()) {
        if (other.owner === owner.id) ofListener++;
        if (other.uid === cred.uid) ofUser++;
      }
      if (ofListener >= MAX_PAIRS_PER_LISTENER || ofUser >= MAX_PAIRS_PER_USER) return refuse(5);
      const made = this.makePair(key, cred.uid, owner.id, owner.pid);
      if (!made) return refuse(3);
      ({ pair, dialEnd, listenEnd } = made);
    }
    const listenerKey = `${found.index}/${found.word}`;
    let pairIndex = pair.listeners.get(listenerKey);
    if (pairIndex === undefined) {
      const entry = Lay.listenerOffset(this.host.geometry, found.index) >>> 2;
      const flags = Atomics.load(i32, entry + Lay.LISTENER.FLAGS);
      const pairView = pair.domain.view;
      const registered = pairView
        ? register(
            { i32: pairView, geo: pair.domain.geometry, id: pair.listener.id, gen: pair.listener.gen, nodeId: this.nodeId },
            {
              addr: readAddr(i32, entry + Lay.LISTENER.ADDR, Atomics.load(i32, entry + Lay.LISTENER.FAMILY)),
              port: dial.port,
              ipv6Only: (flags & Lay.LFLAG_IPV6ONLY) !== 0,
              backlog: Atomics.load(i32, entry + Lay.LISTENER.BACKLOG),
            },
          )
        : undefined;
      if (!registered) {
        closeQuiet(dialEnd);
        closeQuiet(listenEnd);
        return refuse(3);
      }
      pairIndex = registered.index;
      pair.listeners.set(listenerKey, pairIndex);
    }
    // The listener's process first: it may be asked to accept as soon as the dialler has its end.
    const serve = note(NOTE_SERVE, pair.serial * 2 ** 32 + found.index * 0x10000 + pairIndex);
    if (!this.host.sendOwned(owner.id, serve, listenEnd)) {
      closeQuiet(dialEnd);
      return refuse(4);
    }
    this.host.log(`paired pid ${cred.pid} (uid ${cred.uid}) with peer ${owner.id} (pid ${owner.pid}) for port ${dial.port}: pair ${pair.serial}`, false);
    return { value: note(NOTE_PAIR, pair.serial * 0x10000 + pairIndex), fd: dialEnd };
  }

  private makePair(key: string, uid: number, owner: number, listenerPid: number): { pair: Pair; dialEnd: number; listenEnd: number } | undefined {
    const addon = native();
    const domain = this.host.makePair(PAIR_SIZE);
    if (!domain) return undefined;
    const ends: number[] = [];
    try {
      const [ourDial, dialEnd] = addon.socketPair();
      ends.push(ourDial, dialEnd);
      const [ourListen, listenEnd] = addon.socketPair();
      ends.push(ourListen, listenEnd);
      const dialler = domain.adopt(ourDial);
      ends.splice(ends.indexOf(ourDial), 1);
      const listener = domain.adopt(ourListen);
      ends.splice(ends.indexOf(ourListen), 1);
      if (!dialler || !listener) throw new Error('the pair domain turned a member away');
      const serial = this.nextSerial;
      this.nextSerial = this.nextSerial >= 0xffff ? 1 : this.nextSerial + 1;
      const pair: Pair = { serial, key, uid, owner, domain, dialler, listener, listeners: new Map() };
      this.pairs.set(key, pair);
      domain.once('close', () => {
        if (this.pairs.get(key) === pair) this.pairs.delete(key);
      });
      debug('pair domain %d for %s (listener pid %d)', serial, key, listenerPid);
      return { pair, dialEnd, listenEnd };
    } catch (err) {
      for (const end of ends) closeQuiet(end);
      domain.close();
      this.host.log(`cannot make a pair domain: ${(err as Error).message}`);
      return undefined;
    }
  }
}
