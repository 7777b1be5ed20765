/**
 * What the broker (other users) and pods.ts (other network namespaces) share:
 * reading a dialler's DIAL notes off its socket, answering it once, and a
 * pair domain's two members made from socket pairs.
 */
import { debug } from '../log';
import { closeQuiet, native, recvOrEnd, type NativePoller } from '../shm/native';
import { DialReader, NOTE_NO_PAIR, note, readNote } from '../shm/notes';
import { type Addr, readAddr } from '../shm/addrs';
import { register } from '../shm/directory';
import * as Lay from '../shm/layout';

/** A dialler that has not finished saying where it dials by then is dropped. */
const DIAL_WAIT_MS = 1000;
/** Diallers being read at once, at most. */
const MAX_DIALLERS = 64;

/** The notes (the last one with `fd`, if not -1) a dialler is answered with. */
export interface DialAnswer {
  values: number[];
  fd: number;
}

interface Dialler {
  poller: NativePoller;
  timer: NodeJS.Timeout;
  reader: DialReader;
}

/**
 * Reads each dialler's notes until its dial is complete, then answers it with
 * what `onDial` decides (an exception: NO_PAIR 3) and closes its socket.
 */
export class DialDesk {
  private readonly diallers = new Map<number, Dialler>();

  constructor(
    private readonly onDial: (fd: number, addr: Addr, port: number) => DialAnswer,
    private readonly log: (line: string) => void,
  ) {}

  /** A dialler's socket (ours from now on); `first`: a note already read off it. */
  take(fd: number, first?: number): void {
    if (this.diallers.size >= MAX_DIALLERS) {
      closeQuiet(fd);
      return;
    }
    let poller: NativePoller;
    try {
      poller = new (native().Poller)(fd, () => this.onReadable(fd), false);
    } catch (err) {
      debug('cannot watch a dialler: %s', (err as Error).message);
      closeQuiet(fd);
      return;
    }
    poller.unref();
    const timer = setTimeout(() => this.drop(fd), DIAL_WAIT_MS);
    timer.unref();
    const dialler: Dialler = { poller, timer, reader: new DialReader() };
    this.diallers.set(fd, dialler);
    if (first !== undefined) this.onNote(fd, dialler, first);
  }

  close(): void {
    for (const fd of [...this.diallers.keys()]) this.drop(fd);
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
    for (let k = 0; k < 8; k++) {
      const dialler = this.diallers.get(fd);
      if (!dialler) return;
      const msg = recvOrEnd(fd);
      if (msg === null) return;
      if (msg === false) return this.drop(fd);
      if (msg[1] >= 0) closeQuiet(msg[1]);
      this.onNote(fd, dialler, msg[1] < 0 ? msg[0] : NaN);
    }
  }

  private onNote(fd: number, dialler: Dialler, value: number): void {
    const seen = readNote(value);
    if (!seen) {
      this.answer(fd, { values: [note(NOTE_NO_PAIR, 0)], fd: -1 });
      this.drop(fd);
      return;
    }
    const dial = dialler.reader.take(seen.type, seen.payload);
    if (!dial) return;
    let answer: DialAnswer;
    try {
      answer = this.onDial(fd, { family: dial.family, bytes: dial.bytes }, dial.port);
    } catch (err) {
      this.log(`pairing failed: ${(err as Error).message}`);
      answer = { values: [note(NOTE_NO_PAIR, 3)], fd: -1 };
    }
    this.answer(fd, answer);
    closeQuiet(answer.fd);
    this.drop(fd);
  }

  private answer(fd: number, answer: DialAnswer): void {
    const addon = native();
    try {
      answer.values.forEach((value, k) => addon.sendMsg(fd, value, k === answer.values.length - 1 ? answer.fd : -1));
    } catch (err) {
      debug('cannot answer a dialler: %s', (err as Error).message);
    }
  }
}

/** A pair domain as the broker and pods.ts use it (a Daemon made with `pair`). */
export interface PairDomain {
  readonly view: Int32Array | null;
  readonly geometry: Lay.Geometry;
  adopt(fd: number): { id: number; gen: number } | undefined;
  hostMember(id: number): { id: number; gen: number } | undefined;
  memberAlive(id: number, gen: number): boolean;
  close(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** A pair domain made for one dialling process and one listening process. */
export interface Pair {
  serial: number;
  domain: PairDomain;
  dialler: { id: number; gen: number };
  listener: { id: number; gen: number };
  /** The listener's index in the pair domain, by the original entry's index and state word. */
  listeners: Map<string, number>;
}

/**
 * The pair domains a daemon made, by key (the dialling process and the
 * listening one): one is made when there is none, or when one of its two
 * processes left the last (which goes once the other leaves too).
 */
export class PairBook<Extra extends object> {
  private readonly pairs = new Map<string, Pair & Extra>();
  private nextSerial = 1;

  constructor(
    private readonly make: () => PairDomain | undefined,
    private readonly log: (line: string) => void,
  ) {}

  values(): IterableIterator<Pair & Extra> {
    return this.pairs.values();
  }

  close(): void {
    for (const pair of [...this.pairs.values()]) pair.domain.close();
    this.pairs.clear();
  }

  /**
   * The live pair for `key`, or a new one if `room()` says another may be
   * made: with the two processes' socket ends to hand out when new (else -1).
   * 'full' when no more may be made, undefined when it could not be made.
   */
  open(key: string, extra: Extra, room: () => boolean): { pair: Pair & Extra; dialEnd: number; listenEnd: number } | 'full' | undefined {
    const known = this.pairs.get(key);
    if (known && known.domain.memberAlive(known.dialler.id, known.dialler.gen) && known.domain.memberAlive(known.listener.id, known.listener.gen))
      return { pair: known, dialEnd: -1, listenEnd: -1 };
    if (known) this.pairs.delete(key);
    if (!room()) return 'full';
    const domain = this.make();
    if (!domain) return undefined;
    let made: ReturnType<typeof pairUp>;
    try {
      made = pairUp(domain);
    } catch (err) {
      this.log(`cannot make a pair domain: ${(err as Error).message}`);
      return undefined;
    }
    const serial = this.nextSerial;
    this.nextSerial = this.nextSerial >= 0xffff ? 1 : this.nextSerial + 1;
    const pair = { ...extra, serial, domain, dialler: made.dialler, listener: made.listener, listeners: new Map<string, number>() } as Pair & Extra;
    this.pairs.set(key, pair);
    domain.once('close', () => {
      if (this.pairs.get(key) === pair) this.pairs.delete(key);
    });
    debug('pair domain %d for %s', serial, key);
    return { pair, dialEnd: made.dialEnd, listenEnd: made.listenEnd };
  }

  /**
   * The index in `pair` of the listener at `from.index` (state word `word`),
   * its entry written there on first use (see pairListener); undefined if it
   * cannot be, and then the new pair's ends are closed.
   */
  listenerIn(
    opened: { pair: Pair; dialEnd: number; listenEnd: number },
    word: number,
    nodeId: number,
    from: { i32: Int32Array; geo: Lay.Geometry; index: number },
    port: number,
    addr?: Addr,
  ): number | undefined {
    const { pair } = opened;
    const listenerKey = `${from.index}/${word}`;
    let index = pair.listeners.get(listenerKey);
    if (index !== undefined) return index;
    index = pairListener(pair.domain, pair.listener, nodeId, from, port, addr);
    if (index === undefined) {
      closeQuiet(opened.dialEnd);
      closeQuiet(opened.listenEnd);
      return undefined;
    }
    pair.listeners.set(listenerKey, index);
    return index;
  }
}

/**
 * The two members of a new pair domain, from two socket pairs: the domain
 * keeps one end of each, the dialler's and the listener's processes get the
 * others. On failure everything made is closed, the domain too, and the
 * reason thrown.
 */
export function pairUp(domain: PairDomain): {
  dialler: { id: number; gen: number };
  listener: { id: number; gen: number };
  dialEnd: number;
  listenEnd: number;
} {
  const addon = native();
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
    return { dialler, listener, dialEnd, listenEnd };
  } catch (err) {
    for (const end of ends) closeQuiet(end);
    domain.close();
    throw err;
  }
}

/**
 * Writes into a pair domain the entry of a listener of another domain (its
 * index in `from`), owned by the pair's listening member and on node
 * `nodeId` as the dialler finds it; at `addr` if given, else at the address it
 * is bound to. Its index in the pair domain, or undefined if it cannot be made.
 */
export function pairListener(
  pair: { view: Int32Array | null; geometry: Lay.Geometry },
  member: { id: number; gen: number },
  nodeId: number,
  from: { i32: Int32Array; geo: Lay.Geometry; index: number },
  port: number,
  addr?: Addr,
): number | undefined {
  if (!pair.view) return undefined;
  const entry = Lay.listenerOffset(from.geo, from.index) >>> 2;
  const flags = Atomics.load(from.i32, entry + Lay.LISTENER.FLAGS);
  const registered = register(
    { i32: pair.view, geo: pair.geometry, id: member.id, gen: member.gen, nodeId },
    {
      addr: addr ?? readAddr(from.i32, entry + Lay.LISTENER.ADDR, Atomics.load(from.i32, entry + Lay.LISTENER.FAMILY)),
      port,
      ipv6Only: (flags & Lay.LFLAG_IPV6ONLY) !== 0,
      backlog: Atomics.load(from.i32, entry + Lay.LISTENER.BACKLOG),
    },
  );
  return registered?.index;
}
