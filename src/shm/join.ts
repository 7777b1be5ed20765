/**
 * Joining the domain: as a host process, through the daemon's socket
 * (QEMU's ivshmem-server protocol: version, our id, the region, the others'
 * doorbells, ours); as a guest process, through the guest's agent. Both are
 * synchronous and happen once, lazily, the first time a listener registers
 * or a connection may be co-resident (getDomain).
 */
import fs from 'node:fs';
import { ZivmNoDaemonError, ZivmNotGuestsError, ZivmProtocolError } from '../errors';
import { debug } from '../log';
import { guestAgentFromEnv, joinAgent } from '../guest/link';
import { connectDaemon } from './autostart';
import { Domain } from './domain';
import * as Lay from './layout';
import { closeQuiet, native, NativeRegion } from './native';
import type { Addr } from './addrs';
import * as Notes from './notes';
import * as Peers from './peers';

/**
 * How long joining may hold the event loop once the daemon's socket took the
 * connection: a live daemon answers within milliseconds; a hung one costs
 * this much, then again only after a growing pause (see getDomain).
 */
const JOIN_TIMEOUT_MS = 1000;
/** How long a daemon may take to answer HELLO (one that never does is older than these notes). */
const HELLO_TIMEOUT_MS = 1000;

/** The geometry the daemon named its memfd with (see Lay.geometryName), if it did. */
function namedGeometry(fd: number): Lay.Geometry | undefined {
  let link: string;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // No /proc: the header is all there is.
    return undefined;
  }
  return Lay.geometryFromName(link);
}

/**
 * Joins the domain as a process of a VM guest, through the guest's agent
 * (agent.ts), which owns the ivshmem device: it hands us a peer entry of our
 * own, the device fd (the region is BAR2, doorbells go through BAR0) and the
 * eventfd of an MSI-X vector of the guest's that rings us. The agent socket
 * stays open while we are a member: when it closes (we exit or die), the
 * agent reaps our connections. Join and leave notices of other peers do not
 * reach a guest; a dead peer's connections are flagged F_DEAD by whoever
 * reaps it, and that wakes us.
 */
export function joinGuest(socket: string, pci: string): Domain {
  const { id, gen, link, fd } = joinAgent(socket, pci);
  try {
    const geo = Lay.readHeader(new Int32Array(link.region.buffer), link.region.size);
    if (id >= geo.maxPeers) throw new ZivmProtocolError(`peer id ${id} is outside the region's peer table`);
    const i32 = new Int32Array(link.region.buffer);
    if (Peers.genOf(i32, geo, id) !== gen || !Peers.inUse(i32, geo, id) || Peers.alive(i32, geo, id, gen)) {
      throw new ZivmProtocolError(`peer entry ${id} is not the one the agent handed out`);
    }
    const domain = new Domain(fd, id, link.region, geo, [], new Map(), link);
    debug(
      'joined domain as peer %d (gen %d) of guest peer %d, vector %d, through %s: %d slots of %d-byte rings',
      id,
      domain.gen,
      link.ivPosition,
      link.vector,
      socket,
      geo.nslots,
      geo.ringSize,
    );
    return domain;
  } catch (err) {
    link.close();
    native().close(fd);
    throw err;
  }
}

/**
 * Joins the domain served at the daemon socket (started if `autostart`).
 * Throws on any failure; the caller decides to fall back.
 */
export function joinHost(opts: { autostart: boolean; socketPath?: string; guestsOnly?: boolean; pairFd?: number }): Domain {
  const addon = native();
  // A pair domain (pairs.ts) comes as a socket already connected to the daemon that made it.
  const fd = opts.pairFd ?? connectDaemon({ autostart: opts.autostart, socketPath: opts.socketPath });
  const opened: number[] = [];
  let region: NativeRegion | undefined;
  try {
    // A host process running zivm says so first: a daemon of host processes only waits for it.
    addon.sendMsg(fd, Notes.HELLO2, -1);
    const deadline = Date.now() + JOIN_TIMEOUT_MS;
    const next = (): [number, number] => {
      for (;;) {
        const msg = addon.recvMsg(fd);
        if (msg === false) throw new ZivmProtocolError('the zivm daemon closed the connection while we joined');
        if (msg !== null) {
          if (msg[1] >= 0) opened.push(msg[1]);
          return msg;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new ZivmProtocolError('the zivm daemon did not answer in time');
        addon.waitReadable(fd, left);
      }
    };
    const [version, versionFd] = next();
    if (version !== 0 || versionFd >= 0) throw new ZivmProtocolError(`the zivm daemon speaks protocol version ${version}, expected 0`);
    const [id, idFd] = next();
    if (id < 0 || idFd >= 0) throw new ZivmProtocolError(`bad peer id ${id} from the zivm daemon`);
    const [shmMark, shmFd] = next();
    if (shmMark !== -1 || shmFd < 0) throw new ZivmProtocolError('the zivm daemon did not send the shared memory');
    const size = addon.fdSize(shmFd);
    const named = namedGeometry(shmFd);
    if (named && named.size !== size) throw new ZivmProtocolError(`the region is ${size} bytes, its daemon made ${named.size}`);
    try {
      region = new addon.Region(shmFd, size, 0, Lay.viewSize(size, named));
    } catch (err) {
      // Address space, not memory: the whole region is mapped, and only what connections touch becomes memory.
      if ((err as NodeJS.ErrnoException).code === 'ENOMEM') {
        (err as Error).message +=
          ` (the domain's region is ${size} bytes of address space, more than this process may map: ` +
          'an address-space limit (ulimit -v) or an emulator; a daemon started with a smaller --size or ZIVM_SIZE fits)';
      }
      throw err;
    }
    addon.close(shmFd);
    opened.splice(opened.indexOf(shmFd), 1);
    // The daemon's geometry, from the memfd's name; the header (which any member can write) only as a check.
    const geo = named ?? Lay.readHeader(new Int32Array(region.buffer), size);
    const damage = Lay.headerDamage(new Int32Array(region.buffer), geo);
    if (damage.length > 0) debug('the region header is damaged (%s): going by the geometry the daemon gave the memory', damage.join(', '));
    if (id >= geo.maxPeers) throw new ZivmProtocolError(`peer id ${id} is outside the region's peer table`);
    const own: number[] = [];
    const peers = new Map<number, number[]>();
    while (own.length < geo.vectors) {
      const [peer, peerFd] = next();
      if (peerFd < 0) {
        const gone = peers.get(peer);
        if (gone) for (const goneFd of gone) addon.close(goneFd);
        peers.delete(peer);
      } else if (peer === id) {
        own.push(peerFd);
      } else {
        let list = peers.get(peer);
        if (!list) peers.set(peer, (list = []));
        list.push(peerFd);
      }
    }
    // We said HELLO on connecting (see below): the daemon's notes come after the interrupt set-up (notes.ts).
    const host = {
      members: new Set<number>([id]),
      guestAddrs: [] as Addr[],
      admitsGuests: false,
      onRequest: false,
      pair: opts.pairFd !== undefined,
      pod: false,
    };
    const guestAddrs = new Notes.GuestAddrReader();
    try {
      const helloDeadline = Math.min(deadline, Date.now() + HELLO_TIMEOUT_MS);
      for (;;) {
        const msg = addon.recvMsg(fd);
        if (msg === false) throw new ZivmProtocolError('the zivm daemon closed the connection while we joined');
        if (msg === null) {
          const left = helloDeadline - Date.now();
          if (left <= 0) throw new ZivmProtocolError('the zivm daemon did not answer HELLO (an older daemon?)');
          addon.waitReadable(fd, left);
          continue;
        }
        const [value, peerFd] = msg;
        const seen = Notes.readNote(value);
        if (seen && peerFd < 0) {
          if (seen.type === Notes.NOTE_END) break;
          if (seen.type === Notes.NOTE_MEMBER && seen.payload < geo.maxPeers) host.members.add(seen.payload);
          if (seen.type === Notes.NOTE_GUESTS) host.admitsGuests = true;
          if (seen.type === Notes.NOTE_ON_REQUEST) host.onRequest = true;
          if (seen.type === Notes.NOTE_POD) host.pod = true;
          const guestAddr = guestAddrs.take(seen.type, seen.payload);
          if (guestAddr) host.guestAddrs.push(guestAddr);
          continue;
        }
        if (peerFd < 0) {
          const gone = peers.get(value);
          if (gone) for (const goneFd of gone) addon.close(goneFd);
          peers.delete(value);
          host.members.delete(value);
        } else if (value === id) {
          addon.close(peerFd); // more vectors than we poll
        } else {
          opened.push(peerFd);
          let list = peers.get(value);
          if (!list) peers.set(value, (list = []));
          list.push(peerFd);
        }
      }
    } catch (err) {
      if (err instanceof ZivmProtocolError && /HELLO/.test(err.message)) {
        debug('%s: shared memory only with guests', err.message);
        host.admitsGuests = true;
      } else throw err;
    }
    if (opts.guestsOnly && !host.admitsGuests) throw new ZivmNotGuestsError(`${opts.socketPath ?? 'the daemon'} serves host processes only`);
    if (host.pair && (host.admitsGuests || geo.maxPeers !== 2)) throw new ZivmProtocolError('a pair domain has two members and no guests');
    const domain = new Domain(fd, id, region, geo, own, peers, undefined, host);
    debug('joined domain as peer %d (gen %d): %d slots of %d-byte rings', id, domain.gen, geo.nslots, geo.ringSize);
    return domain;
  } catch (err) {
    for (const openedFd of opened) closeQuiet(openedFd);
    region?.close();
    addon.close(fd);
    throw err;
  }
}

let current: Domain | undefined;
let lastFailure = 0;
let lastFailureAutostart = false;
/** After a failed join, the next try waits this long, doubling with each failure in a row up to RETRY_MAX_MS. */
const RETRY_AFTER_MS = 1000;
const RETRY_MAX_MS = 30000;
let retryAfter = RETRY_AFTER_MS;

/** Why the last join failed (for debug lines). */
export let lastJoinError: Error | undefined;

/**
 * The process's domain, joining it on first use. Servers pass autostart=true
 * (the first zivm server on a host starts the daemon); clients never start a
 * daemon: no daemon means no zivm listener on this host.
 * Returns undefined when shared memory cannot be used; the reason is in lastJoinError.
 */
export function getDomain(autostart: boolean): Domain | undefined {
  if (current?.alive) return current;
  const now = Date.now();
  if (lastFailure && now - lastFailure < retryAfter && (lastFailureAutostart || !autostart)) return undefined;
  try {
    const agent = guestAgentFromEnv();
    current = agent ? joinGuest(agent.socket, agent.pci) : joinHost({ autostart });
    lastJoinError = undefined;
    lastFailure = 0;
    retryAfter = RETRY_AFTER_MS;
    return current;
  } catch (err) {
    lastJoinError = err as Error;
    // A missing daemon is normal for a client; anything else is worth a pause.
    if (!(err instanceof ZivmNoDaemonError && !autostart)) {
      if (lastFailure) retryAfter = Math.min(retryAfter * 2, RETRY_MAX_MS);
      lastFailure = now;
      lastFailureAutostart = autostart;
    }
    debug('cannot use shared memory: %s', (err as Error).message);
    return undefined;
  }
}

/** The domain if joined, without joining. */
export function currentDomain(): Domain | undefined {
  return current?.alive ? current : undefined;
}
