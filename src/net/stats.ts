/**
 * stats(): what zivm is doing in this process: the domain it joined, its
 * live sockets with their transport and byte counts, its listeners, and how
 * many connections took each path (with the reasons for TCP).
 */
import type net from 'node:net';
import type { DomainSnapshot } from '../shm/inspect';
import type * as Inspect from '../shm/inspect';
import type * as Join from '../shm/join';
import { kListener } from '../symbols';

/*
 * Live sockets, held until they are destroyed (Socket#_destroy lets go of
 * them: see socket.ts), and servers, held weakly (the few closed meanwhile
 * are dropped whenever their set has doubled, and when stats() looks). No
 * listeners of our own on either: code that counts an object's listeners
 * sees what net would give it. Sockets are not held weakly: a WeakRef keeps
 * its target through every young-generation collection, which would age every
 * short-lived connection into the old generation.
 */
const liveSockets = new Set<net.Socket>();
const tracked = new WeakSet<object>();
const serverRefs = new Set<WeakRef<net.Server>>();
let pruneServersAt = 64;
const counts = { shm: 0, tcp: 0, reasons: new Map<string, number>() };

function prune<T extends object>(refs: Set<WeakRef<T>>, gone: (target: T) => boolean): void {
  for (const ref of refs) {
    const target = ref.deref();
    if (target === undefined || gone(target)) refs.delete(ref);
  }
}

const serverGone = (server: net.Server): boolean => !server.listening;

let pruneSocketsAt = 1024;

export function track(sock: net.Socket): void {
  if (sock.destroyed) return;
  liveSockets.add(sock);
  // A subclass whose _destroy bypasses ours is dropped here, once destroyed.
  if (liveSockets.size >= pruneSocketsAt) {
    for (const held of liveSockets) if (held.destroyed) liveSockets.delete(held);
    pruneSocketsAt = Math.max(1024, liveSockets.size * 2);
  }
}

/** The socket is destroyed: stats() no longer lists it. */
export function untrack(sock: net.Socket): void {
  liveSockets.delete(sock);
}

export function trackServer(server: net.Server): void {
  if (tracked.has(server)) return;
  tracked.add(server);
  serverRefs.add(new WeakRef(server));
  if (serverRefs.size >= pruneServersAt) {
    prune(serverRefs, serverGone);
    pruneServersAt = Math.max(64, serverRefs.size * 2);
  }
}

/** Counts one routing decision; TCP reasons are grouped by their first words. */
export function record(transport: 'shm' | 'tcp', reason: string): void {
  counts[transport]++;
  if (transport === 'tcp') {
    const key = reason
      .replace(/ for \S+$/, '')
      .replace(/\(.*\)$/, '')
      .trim();
    counts.reasons.set(key, (counts.reasons.get(key) ?? 0) + 1);
  }
}

export interface SocketStats {
  transport: string | undefined;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  bytesRead: number;
  bytesWritten: number;
  state: string;
}

export interface Stats {
  pid: number;
  /** This process in its domain, if it joined one. */
  peer?: { id: number; gen: number; node: number };
  connections: { shm: number; tcp: number; tcpReasons: Record<string, number> };
  sockets: SocketStats[];
  servers: { address: ReturnType<net.Server['address']>; connections: number; shm: boolean }[];
  /** The whole domain as the region shows it (every peer's listeners and connections). */
  domain?: DomainSnapshot;
  /** The domain's shared memory: bytes mapped (the region's size) and bytes that are memory now (any process touched them). */
  memory?: { mapped: number; resident: number };
}

export function stats(): Stats {
  // The data plane, loaded by the first connect() or listen(): before that there is no domain to show.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above: loading it here would load it with zivm
  const { currentDomain } = require('../shm/join') as typeof Join;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- as join
  const { snapshot } = require('../shm/inspect') as typeof Inspect;
  const domain = currentDomain();
  prune(serverRefs, serverGone);
  const sockets: SocketStats[] = [];
  for (const sock of liveSockets) {
    if (sock.destroyed) {
      liveSockets.delete(sock);
      continue;
    }
    sockets.push({
      transport: (sock as unknown as { transport?: string }).transport,
      localAddress: sock.localAddress,
      localPort: sock.localPort,
      remoteAddress: sock.remoteAddress,
      remotePort: sock.remotePort,
      bytesRead: sock.bytesRead,
      bytesWritten: sock.bytesWritten ?? 0,
      state: sock.readyState,
    });
  }
  const servers = [...serverRefs]
    .flatMap((ref) => (ref.deref() ? [ref.deref()!] : []))
    .map((server) => ({
      address: server.address(),
      connections: (server as unknown as { _connections: number })._connections,
      shm: ((server as unknown as Record<symbol, { regs: unknown[] } | undefined>)[kListener]?.regs.length ?? 0) > 0,
    }));
  return {
    pid: process.pid,
    peer: domain ? { id: domain.id, gen: domain.gen, node: domain.nodeId } : undefined,
    connections: { shm: counts.shm, tcp: counts.tcp, tcpReasons: Object.fromEntries(counts.reasons) },
    sockets,
    servers,
    domain: domain ? snapshot(domain.i32, domain.geo) : undefined,
    memory: domain ? { mapped: domain.geo.size, resident: domain.region.resident() } : undefined,
  };
}
