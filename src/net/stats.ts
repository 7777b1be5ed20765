/**
 * stats(): what zivm is doing in this process: the domain it joined, its
 * live sockets with their transport and byte counts, its listeners, and how
 * many connections took each path (with the reasons for TCP).
 */
import type net from 'node:net';
import { currentDomain } from '../shm/join';
import { kListener } from '../symbols';
import { snapshot, DomainSnapshot } from '../shm/inspect';

/*
 * Live sockets and servers, held weakly and without listeners of our own on
 * them (code that counts an object's listeners sees what net would give it):
 * the ones closed meanwhile are dropped whenever the sets have doubled, and
 * when stats() looks.
 */
const tracked = new WeakSet<object>();
const socketRefs = new Set<WeakRef<net.Socket>>();
const serverRefs = new Set<WeakRef<net.Server>>();
let pruneSocketsAt = 1024;
let pruneServersAt = 64;
const counts = { shm: 0, tcp: 0, reasons: new Map<string, number>() };

function prune<T extends object>(refs: Set<WeakRef<T>>, gone: (target: T) => boolean): void {
  for (const ref of refs) {
    const target = ref.deref();
    if (target === undefined || gone(target)) refs.delete(ref);
  }
}

const socketGone = (sock: net.Socket): boolean => sock.destroyed;
const serverGone = (server: net.Server): boolean => !server.listening;

export function track(sock: net.Socket): void {
  if (tracked.has(sock)) return;
  tracked.add(sock);
  socketRefs.add(new WeakRef(sock));
  if (socketRefs.size >= pruneSocketsAt) {
    prune(socketRefs, socketGone);
    pruneSocketsAt = Math.max(1024, socketRefs.size * 2);
  }
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
}

export function stats(): Stats {
  const domain = currentDomain();
  prune(socketRefs, socketGone);
  prune(serverRefs, serverGone);
  const sockets: SocketStats[] = [];
  for (const ref of socketRefs) {
    const sock = ref.deref();
    if (!sock) continue;
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
  };
}
