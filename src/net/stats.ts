/**
 * stats(): what zivm is doing in this process: the domain it joined, its
 * live sockets with their transport and byte counts, its listeners, and how
 * many connections took each path (with the reasons for TCP).
 */
import type net from 'node:net';
import { currentDomain } from '../shm/domain';
import { snapshot, DomainSnapshot } from '../shm/inspect';

const liveSockets = new Set<net.Socket>();
const liveServers = new Set<net.Server>();
const counts = { shm: 0, tcp: 0, reasons: new Map<string, number>() };

export function track(s: net.Socket): void {
  if (liveSockets.has(s)) return;
  liveSockets.add(s);
  s.once('close', () => liveSockets.delete(s));
}

export function trackServer(s: net.Server): void {
  if (liveServers.has(s)) return;
  liveServers.add(s);
  s.once('close', () => liveServers.delete(s));
}

/** Counts one routing decision; TCP reasons are grouped by their first words. */
export function record(transport: 'shm' | 'tcp', reason: string): void {
  counts[transport]++;
  if (transport === 'tcp') {
    const key = reason.replace(/ for \S+$/, '').replace(/\(.*\)$/, '').trim();
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
  const d = currentDomain();
  const sockets: SocketStats[] = [];
  for (const s of liveSockets) {
    sockets.push({
      transport: (s as unknown as { transport?: string }).transport,
      localAddress: s.localAddress,
      localPort: s.localPort,
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
      bytesRead: s.bytesRead,
      bytesWritten: s.bytesWritten ?? 0,
      state: s.readyState,
    });
  }
  const servers = [...liveServers].map((srv) => ({
    address: srv.address(),
    connections: (srv as unknown as { _connections: number })._connections,
    shm: Boolean((srv as unknown as Record<symbol, unknown>)[Symbol.for('zivm.listener')]),
  }));
  return {
    pid: process.pid,
    peer: d ? { id: d.id, gen: d.gen, node: d.nodeId } : undefined,
    connections: { shm: counts.shm, tcp: counts.tcp, tcpReasons: Object.fromEntries(counts.reasons) },
    sockets,
    servers,
    domain: d ? snapshot(d.i32, d.g) : undefined,
  };
}
