/**
 * A read-only picture of a domain, taken from the region: its peers, its
 * listeners and its connections with their bytes each way. `zivm stat` prints
 * it; stats() shows this process's part of it.
 */
import * as Lay from './layout';
import { formatAddr, readAddr } from './addrs';

export interface PeerInfo {
  id: number;
  gen: number;
  pid: number;
  kind: 'process' | 'guest' | 'guest-process' | 'unknown';
  node: number;
  state: 'joining' | 'alive' | 'dead';
}

export interface ListenerInfo {
  index: number;
  owner: number;
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
  node: number;
  ipv6Only: boolean;
}

export interface ConnectionInfo {
  slot: number;
  state: 'connecting' | 'established' | 'refused' | 'closing';
  client: { peer: number; address: string; port: number; finished: boolean; closed: boolean; dead: boolean };
  server: { peer: number; address: string; port: number; finished: boolean; closed: boolean; dead: boolean };
  family: 'IPv4' | 'IPv6';
  /** Bytes written client→server and server→client, and what is still unread each way. */
  bytesToServer: number;
  bytesToClient: number;
  unreadByServer: number;
  unreadByClient: number;
}

export interface DomainSnapshot {
  size: number;
  slots: number;
  ringSize: number;
  vectors: number;
  daemonPid: number;
  peers: PeerInfo[];
  listeners: ListenerInfo[];
  connections: ConnectionInfo[];
}

function u64(i32: Int32Array, byteOffset: number): number {
  const lo = Atomics.load(i32, byteOffset >>> 2) >>> 0;
  const hi = Atomics.load(i32, (byteOffset >>> 2) + 1) >>> 0;
  return hi * 0x100000000 + lo;
}

function node(i32: Int32Array, loWord: number): number {
  return (Atomics.load(i32, loWord + 1) >>> 0) * 0x100000000 + (Atomics.load(i32, loWord) >>> 0);
}

const PEER_STATES: Record<number, PeerInfo['state']> = { [Lay.PEER_JOINING]: 'joining', [Lay.PEER_ALIVE]: 'alive', [Lay.PEER_DEAD]: 'dead' };
const SLOT_STATES: Record<number, ConnectionInfo['state']> = {
  [Lay.SLOT_CLAIMED]: 'connecting',
  [Lay.SLOT_CONNECTING]: 'connecting',
  [Lay.SLOT_ESTABLISHED]: 'established',
  [Lay.SLOT_REFUSED]: 'refused',
};

function end(flags: number, peer: number, addr: string, port: number): ConnectionInfo['client'] {
  return { peer, address: addr, port, finished: (flags & Lay.F_FIN) !== 0, closed: (flags & Lay.F_CLOSED) !== 0, dead: (flags & Lay.F_DEAD) !== 0 };
}

export function snapshot(i32: Int32Array, geo: Lay.Geometry): DomainSnapshot {
  const peers: PeerInfo[] = [];
  for (let id = 0; id < geo.maxPeers; id++) {
    const entry = Lay.peerOffset(geo, id) >>> 2;
    const peerState = Atomics.load(i32, entry + Lay.PEER.STATE);
    if (peerState === Lay.PEER_FREE) continue;
    const kind = Atomics.load(i32, entry + Lay.PEER.KIND);
    peers.push({
      id,
      gen: Atomics.load(i32, entry + Lay.PEER.GEN),
      pid: Atomics.load(i32, entry + Lay.PEER.PID),
      kind:
        kind === Lay.PEER_KIND_PROCESS
          ? 'process'
          : kind === Lay.PEER_KIND_GUEST
            ? 'guest'
            : kind === Lay.PEER_KIND_GUEST_PROCESS
              ? 'guest-process'
              : 'unknown',
      node: node(i32, entry + Lay.PEER.NODE_LO),
      state: PEER_STATES[peerState] ?? 'dead',
    });
  }
  const listeners: ListenerInfo[] = [];
  for (let i = 0; i < geo.maxListeners; i++) {
    const entry = Lay.listenerOffset(geo, i) >>> 2;
    if (Lay.stateOf(Atomics.load(i32, entry + Lay.LISTENER.STATE)) !== Lay.LST_ACTIVE) continue;
    const family = Atomics.load(i32, entry + Lay.LISTENER.FAMILY);
    const flags = Atomics.load(i32, entry + Lay.LISTENER.FLAGS);
    listeners.push({
      index: i,
      owner: Atomics.load(i32, entry + Lay.LISTENER.OWNER),
      address: formatAddr(readAddr(i32, entry + Lay.LISTENER.ADDR, family)),
      family: family === 6 ? 'IPv6' : 'IPv4',
      port: Atomics.load(i32, entry + Lay.LISTENER.PORT),
      node: node(i32, entry + Lay.LISTENER.NODE_LO),
      ipv6Only: (flags & Lay.LFLAG_IPV6ONLY) !== 0,
    });
  }
  const connections: ConnectionInfo[] = [];
  for (let slot = 0; slot < geo.nslots; slot++) {
    const header = Lay.slotOffset(geo, slot) >>> 2;
    const slotState = Lay.stateOf(Atomics.load(i32, header + Lay.SLOT.STATE));
    if (slotState === Lay.SLOT_FREE) continue;
    const family = Atomics.load(i32, header + Lay.SLOT.FAMILY) === 6 ? 6 : 4;
    const clientFlags = Atomics.load(i32, header + Lay.SLOT.CLIENT_FLAGS);
    const serverFlags = Atomics.load(i32, header + Lay.SLOT.SERVER_FLAGS);
    const rings = Lay.ringOffsets(geo, slot);
    const c2sHead = u64(i32, rings.c2sHdr + Lay.RING_HEAD);
    const c2sTail = u64(i32, rings.c2sHdr + Lay.RING_TAIL);
    const s2cHead = u64(i32, rings.s2cHdr + Lay.RING_HEAD);
    const s2cTail = u64(i32, rings.s2cHdr + Lay.RING_TAIL);
    let state = SLOT_STATES[slotState] ?? 'connecting';
    if (state === 'established' && (clientFlags & Lay.F_CLOSED || serverFlags & Lay.F_CLOSED)) state = 'closing';
    connections.push({
      slot,
      state,
      family: family === 6 ? 'IPv6' : 'IPv4',
      client: end(
        clientFlags,
        Atomics.load(i32, header + Lay.SLOT.CLIENT),
        formatAddr(readAddr(i32, header + Lay.SLOT.CLIENT_ADDR, family)),
        Atomics.load(i32, header + Lay.SLOT.CLIENT_PORT),
      ),
      server: end(
        serverFlags,
        Atomics.load(i32, header + Lay.SLOT.SERVER),
        formatAddr(readAddr(i32, header + Lay.SLOT.SERVER_ADDR, family)),
        Atomics.load(i32, header + Lay.SLOT.SERVER_PORT),
      ),
      bytesToServer: c2sHead,
      bytesToClient: s2cHead,
      unreadByServer: Math.max(0, c2sHead - c2sTail),
      unreadByClient: Math.max(0, s2cHead - s2cTail),
    });
  }
  return {
    size: geo.size,
    slots: geo.nslots,
    ringSize: geo.ringSize,
    vectors: geo.vectors,
    daemonPid: Atomics.load(i32, Lay.HEADER.DAEMON_PID),
    peers,
    listeners,
    connections,
  };
}
