/**
 * Pods: processes of other network namespaces (containers, Kubernetes pods)
 * that reach the daemon's socket, as a folder bind-mounted into them lets
 * them.
 *
 * A network namespace is a node of its own: its loopback and its listeners
 * are its own, and its processes are no more trusted by others than the
 * network trusts them. So a process whose network namespace (the kernel's,
 * /proc/<pid>/ns/net, never what it says) is not the daemon's joins a domain
 * of its namespace and uid, which only that namespace's processes of that
 * uid map, not the daemon's own domain.
 *
 * A connection to an address of another namespace of this host is asked of
 * the daemon (DIAL notes on a new connection to its socket). The daemon
 * finds which namespace holds the address from the kernel (its LOCAL routes
 * and IPv6 addresses, read through one of its processes), the listener in
 * that namespace's domain as its kernel would pick it, and that the kernel
 * has a socket listening there; then it makes a pair domain for the two
 * processes (as the broker does between users), writes the listener's entry
 * into it, and hands each its end: the listening process with SERVE, after
 * the dialler's address (the source its kernel would show, from the
 * dialler's own namespace), the dialler with PAIR, after the same address.
 * The listening process vets every request of the pair domain against that
 * address (ticket.ts).
 */
import os from 'node:os';
import { type Addr, formatAddr, isLoopback, isUnspecified, parseAddr, sameBytes } from '../shm/addrs';
import { find, type DirectoryView } from '../shm/directory';
import * as Lay from '../shm/layout';
import { closeQuiet, native } from '../shm/native';
import { DialDesk, PairBook, type DialAnswer, type PairDomain } from './dialdesk';
import { dialNotes, NOTE_DIAL4, NOTE_DIAL6, NOTE_NO_PAIR, NOTE_PAIR, NOTE_SERVE, note, readNote } from '../shm/notes';
import * as Peers from '../shm/peers';
import { myUid } from '../sys';
import { dnatTarget } from './dnat';
import { listensIn, nsAddrs, nsOf } from './netns';

/** A pair domain's region: sparse, as the broker's. */
const PAIR_SIZE = 2 * 1024 * 1024 * 1024;
/** A namespace's addresses are read again after this long. */
const ADDRS_MS = 1000;
/** Pair domains one listening process takes part in, at most. */
const MAX_PAIRS_PER_LISTENER = 256;

/** A pod domain as pods.ts uses it (a Daemon made with `pod`). */
export interface PodDomain {
  readonly view: Int32Array | null;
  readonly geometry: Lay.Geometry;
  readonly peerCount: number;
  adoptHello(fd: number, version: number): boolean;
  hostMember(id: number): { id: number; gen: number; pid: number } | undefined;
  hostMembers(): { id: number; gen: number; pid: number }[];
  sendNotes(id: number, values: number[]): boolean;
  sendOwned(id: number, value: number, fd: number): boolean;
  close(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** What pods.ts needs of the daemon whose socket they came in on. */
export interface PodHost extends PodDomain {
  /** Containers of every uid are let in (zivm server --pods). */
  readonly podsOpen: boolean;
  makePod(): PodDomain | undefined;
  makePair(size: number): PairDomain | undefined;
  podsChanged(): void;
  log(line: string, loud?: boolean): void;
}

interface Pod {
  key: string;
  ns: number;
  uid: number;
  domain: PodDomain;
}

/** What pods.ts keeps of a pair beyond the pair itself: the listening member and its pod. */
interface Paired {
  owner: { pod: Pod; id: number };
}

export class Pods {
  private readonly pods = new Map<string, Pod>();
  private readonly pairs: PairBook<Paired>;
  private readonly desk: DialDesk;
  private readonly addrs = new Map<number, { addrs: Addr[]; until: number }>();
  private readonly ownNs = nsOf(process.pid);
  private closed = false;

  constructor(private readonly host: PodHost) {
    this.pairs = new PairBook<Paired>(
      () => host.makePair(PAIR_SIZE),
      (line) => host.log(line),
    );
    this.desk = new DialDesk(
      (fd, addr, port) => this.pairFor(fd, addr, port),
      (line) => host.log(line),
    );
  }

  /** Pod domains have members now. */
  get active(): boolean {
    for (const pod of this.pods.values()) if (pod.domain.peerCount > 0) return true;
    return false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.desk.close();
    this.pairs.close();
    for (const pod of [...this.pods.values()]) pod.domain.close();
    this.pods.clear();
  }

  /**
   * A process said HELLO on the daemon's socket: if its network namespace is
   * not the daemon's, it joins the domain of its namespace and uid (made
   * now if there is none) and true is returned; `fd` is then taken care of.
   */
  take(fd: number, version: number): boolean {
    if (this.closed || this.ownNs === undefined) return false;
    const addon = native();
    let cred: { pid: number; uid: number };
    try {
      cred = addon.peerCred(fd);
    } catch {
      return false; // gone: the daemon's own admission turns it away
    }
    const ns = nsOf(cred.pid);
    if (ns === this.ownNs) return false;
    if (ns === undefined) {
      // Not visible to us (another pid namespace, and the kernel could not name it for us): we cannot tell where it is.
      this.host.log(`refused pid ${cred.pid}: cannot tell its network namespace (the daemon sees no /proc/${cred.pid}: run it in the host's pid namespace)`);
      closeQuiet(fd);
      return true;
    }
    if (cred.uid !== myUid() && !(this.host.podsOpen && myUid() === 0)) {
      this.host.log(`refused pid ${cred.pid}: uid ${cred.uid} in another network namespace (a daemon run as root with --pods takes other users' containers)`);
      closeQuiet(fd);
      return true;
    }
    const key = `${cred.uid}/${ns}`;
    let pod = this.pods.get(key);
    if (!pod) {
      const domain = this.host.makePod();
      if (!domain) {
        closeQuiet(fd);
        return true;
      }
      const made: Pod = { key, ns, uid: cred.uid, domain };
      pod = made;
      this.pods.set(key, made);
      domain.once('close', () => {
        if (this.pods.get(key) === made) this.pods.delete(key);
        this.host.podsChanged();
      });
      this.host.log(`pod domain for network namespace ${ns}, uid ${cred.uid}`, false);
    }
    // Turned away (its ids all taken, say): a domain it would have been the first of goes at once.
    if (!pod.domain.adoptHello(fd, version) && pod.domain.peerCount === 0) pod.domain.close();
    this.host.podsChanged();
    return true;
  }

  /** Is this first message a dial (pods.ts), not a HELLO? */
  isDial(value: number): boolean {
    const seen = readNote(value);
    return !!seen && (seen.type === NOTE_DIAL4 || seen.type === NOTE_DIAL6);
  }

  /** A process asks where an address of another network namespace leads; `first` is its first note. */
  dial(fd: number, first: number): void {
    if (this.closed) closeQuiet(fd);
    else this.desk.take(fd, first);
  }

  /** The addresses of network namespace `ns`, read through one of its processes (cached a second). */
  private addrsOf(ns: number, pid: number): Addr[] {
    const now = Date.now();
    const cached = this.addrs.get(ns);
    if (cached && cached.until > now) return cached.addrs;
    const addrs = nsAddrs(pid);
    // Read through a process that was still in that namespace once read.
    if (nsOf(pid) !== ns) return [];
    if (this.addrs.size > 4096) this.addrs.clear();
    this.addrs.set(ns, { addrs, until: now + ADDRS_MS });
    return addrs;
  }

  /** The domains by network namespace: the pods', and the daemon's own (its namespace's host processes) as the node's. */
  private domains(): Pod[] {
    const all = [...this.pods.values()];
    if (this.ownNs !== undefined) all.push({ key: 'node', ns: this.ownNs, uid: myUid(), domain: this.host });
    return all;
  }

  /** The network namespaces (other than `from`) that hold `addr`, as their kernels say. */
  private holdersOf(addr: Addr, from: number): Map<number, { pods: Pod[]; pid: number; addrs: Addr[] }> {
    const same = (held: Addr): boolean => held.family === addr.family && sameBytes(held.bytes, addr.bytes);
    const holders = new Map<number, { pods: Pod[]; pid: number; addrs: Addr[] }>();
    for (const pod of this.domains()) {
      if (pod.ns === from) continue;
      // The node's addresses are read through the daemon itself; a pod's through one of its processes.
      const member = pod.key === 'node' ? { pid: process.pid } : pod.domain.hostMembers()[0];
      if (!member) continue;
      const known = holders.get(pod.ns);
      if (known) {
        known.pods.push(pod);
        continue;
      }
      const addrs = this.addrsOf(pod.ns, member.pid);
      if (addrs.some(same)) holders.set(pod.ns, { pods: [pod], pid: member.pid, addrs });
    }
    return holders;
  }

  /**
   * Pairs the dialler on `fd` with the listener at (dialled, dialledPort) in
   * another network namespace, or where the node's DNAT rules send it (a
   * Service's address): the answer to send it.
   */
  private pairFor(fd: number, dialled: Addr, dialledPort: number): DialAnswer {
    const addon = native();
    const refuse = (why: number): DialAnswer => ({ values: [note(NOTE_NO_PAIR, why)], fd: -1 });
    const cred = addon.peerCred(fd);
    const from = nsOf(cred.pid);
    if (from === undefined) return refuse(10);
    // Loopback and the unspecified address stay in the dialler's own namespace.
    if (isLoopback(dialled) || isUnspecified(dialled)) return refuse(6);
    // The dialler's address, as its kernel would pick the source: one of its namespace's own addresses of that family.
    const source =
      from === this.ownNs ? (nodeSourceFor(dialled) ?? sourceFor(this.addrsOf(from, process.pid), dialled)) : sourceFor(this.addrsOf(from, cred.pid), dialled);
    if (!source) return refuse(9);
    let addr = dialled;
    let port = dialledPort;
    let holders = this.holdersOf(addr, from);
    let translated = false;
    if (holders.size === 0) {
      // No namespace holds it: a Service's address, if the node's DNAT rules send it to one that does.
      const verdict = dnatTarget(source, dialled, dialledPort);
      if ('unknown' in verdict) {
        this.host.log(`${formatAddr(dialled)}:${dialledPort}: ${verdict.unknown}`, false);
        return refuse(11);
      }
      if ('none' in verdict) return refuse(6);
      addr = verdict.to;
      port = verdict.port;
      translated = true;
      holders = this.holdersOf(addr, from);
      if (holders.size === 0) return refuse(12);
    }
    if (holders.size > 1) return refuse(7);
    const [ns, holder] = [...holders][0];
    // The listener, as the kernel of that namespace would pick it, among the domains of its users.
    let found: { pod: Pod; at: ReturnType<typeof find> & object } | undefined;
    for (const pod of holder.pods) {
      const i32 = pod.domain.view;
      if (!i32) continue;
      const view: DirectoryView = {
        i32,
        geo: pod.domain.geometry,
        nodeId: ns,
        guest: undefined,
        admitsGuests: false,
        pair: false,
        declares: () => false,
        isHostProcess: (id) => pod.domain.hostMember(id) !== undefined,
        peerAlive: (id, gen) => Peers.alive(i32, pod.domain.geometry, id, gen),
        podAddrs: holder.addrs,
      };
      const at = find(view, addr, port);
      if (at) {
        found = { pod, at };
        break;
      }
    }
    if (!found) return refuse(1);
    // Proof of holding the port: the kernel of that namespace has a socket listening there.
    if (!listensIn(holder.pid, addr, port)) return refuse(8);
    const owner = found.pod.domain.hostMember(found.at.owner);
    if (!owner || owner.gen !== found.at.ownerGen) return refuse(4);
    const key = `${cred.pid}/${found.pod.key}/${owner.id}/${owner.gen}`;
    const opened = this.pairs.open(key, { owner: { pod: found.pod, id: owner.id } }, () => {
      let ofListener = 0;
      for (const other of this.pairs.values()) if (other.owner.pod === found.pod && other.owner.id === owner.id) ofListener++;
      return ofListener < MAX_PAIRS_PER_LISTENER;
    });
    if (opened === 'full') return refuse(5);
    if (!opened) return refuse(3);
    const { pair, dialEnd, listenEnd } = opened;
    const podView = found.pod.domain.view!;
    const entry = Lay.listenerOffset(found.pod.domain.geometry, found.at.index) >>> 2;
    const wildcard = (Atomics.load(podView, entry + Lay.LISTENER.FLAGS) & Lay.LFLAG_WILDCARD) !== 0;
    // The entry as the dialler finds it: on its node (its namespace), at the address it dialled, or the wildcard.
    const pairIndex = this.pairs.listenerIn(
      opened,
      found.at.word,
      from,
      { i32: podView, geo: found.pod.domain.geometry, index: found.at.index },
      port,
      wildcard ? undefined : addr,
    );
    if (pairIndex === undefined) return refuse(3);
    const sourceNotes = dialNotes(source.family, source.bytes, 0);
    // The listening process first, with the address it is to see the dialler at.
    if (
      !found.pod.domain.sendNotes(owner.id, sourceNotes) ||
      !found.pod.domain.sendOwned(owner.id, note(NOTE_SERVE, pair.serial * 2 ** 32 + found.at.index * 0x10000 + pairIndex), listenEnd)
    ) {
      closeQuiet(dialEnd);
      return refuse(4);
    }
    this.host.log(
      `paired pid ${cred.pid} (namespace ${from}, ${formatAddr(source)}) with pid ${owner.pid} (namespace ${ns}) for ${formatAddr(addr)}:${port}: pair ${pair.serial}`,
      false,
    );
    // Where a Service's address led: the dialler connects there, and shows the address it dialled.
    const toNotes = translated ? dialNotes(addr.family, addr.bytes, port) : [];
    return { values: [...sourceNotes, ...toNotes, note(NOTE_PAIR, pair.serial * 0x10000 + pairIndex)], fd: dialEnd };
  }
}

/** Bits two addresses of one family have in common from the start. */
function commonPrefix(first: Uint8Array, second: Uint8Array, bytes: number): number {
  let bits = 0;
  for (let i = 0; i < bytes; i++) {
    const diff = first[i] ^ second[i];
    if (diff === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(diff) - 24;
  }
  return bits;
}

/**
 * The dialler's address, as its kernel would pick the source: one of its
 * namespace's own addresses of the destination's family (IPv6 link-local
 * ones aside), the one closest to the destination (the subnet it shares with
 * it, on a bridge), the first of them otherwise.
 */
function sourceFor(held: Addr[], to: Addr): Addr | undefined {
  let best: Addr | undefined;
  let bestBits = -1;
  for (const addr of held) {
    if (addr.family !== to.family || (addr.family === 6 && addr.bytes[0] === 0xfe && (addr.bytes[1] & 0xc0) === 0x80)) continue;
    const bits = commonPrefix(addr.bytes, to.bytes, addr.family === 4 ? 4 : 16);
    if (bits > bestBits) {
      best = addr;
      bestBits = bits;
    }
  }
  return best;
}

/**
 * From the node's own namespace (the daemon's): the address of the interface
 * whose subnet holds the destination, the first one the kernel lists for it
 * (its primary, the one it picks as the source).
 */
function nodeSourceFor(to: Addr): Addr | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const iface of list ?? []) {
      if (iface.internal || !iface.cidr) continue;
      const addr = parseAddr(iface.address);
      const bits = Number(iface.cidr.split('/')[1]);
      if (!addr || addr.family !== to.family || !Number.isInteger(bits)) continue;
      if (commonPrefix(addr.bytes, to.bytes, addr.family === 4 ? 4 : 16) >= bits) return addr;
    }
  }
  return undefined;
}
