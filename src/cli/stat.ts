/**
 * `zivm stat`: the domain as its region shows it, as `ss` shows sockets:
 * peers, listeners, and connections with endpoints, bytes each way and state.
 */
import { socketPath } from '../config';
import { Domain } from '../shm/domain';
import * as Lay from '../shm/layout';
import { snapshot, DomainSnapshot } from '../shm/inspect';
import { joinHost } from '../shm/join';
import { Command, noMore, parse } from './command';
import { sizeText, table } from './format';

export const STAT_USAGE = `usage: zivm stat [--socket PATH] [--json]

Lists the peers, listeners and shared-memory connections of a zivm domain.

options:
  --socket PATH   the domain's daemon socket (default as for zivm server)
  --json          one JSON document instead of tables
`;

export function formatSnapshot(sock: string, snap: DomainSnapshot, self: number): string {
  const pidOf = new Map(snap.peers.map((peer) => [peer.id, peer.pid]));
  let text = `domain ${sock}: region ${sizeText(snap.size)}, ${snap.slots} slots of ${sizeText(snap.ringSize)} rings, ${snap.vectors} vector(s), daemon pid ${snap.daemonPid}\n\n`;
  const peers = snap.peers.filter((peer) => peer.id !== self);
  text += `PEERS (${peers.length})\n`;
  text += table([
    ['ID', 'PID', 'KIND', 'NODE', 'STATE'],
    ...peers.map((peer) => [String(peer.id), String(peer.pid), peer.kind, String(peer.node), peer.state]),
  ]);
  text += `\nLISTENERS (${snap.listeners.length})\n`;
  text += table([
    ['ADDRESS', 'PORT', 'PEER', 'PID', 'NODE'],
    ...snap.listeners.map((listener) => [
      listener.address + (listener.ipv6Only ? ' (v6only)' : ''),
      String(listener.port),
      String(listener.owner),
      String(pidOf.get(listener.owner) ?? '?'),
      String(listener.node),
    ]),
  ]);
  text += `\nCONNECTIONS (${snap.connections.length})\n`;
  const endpoint = (fields: { peer: number; address: string; port: number }): string =>
    `${fields.address.includes(':') ? `[${fields.address}]` : fields.address}:${fields.port} (peer ${fields.peer}, pid ${pidOf.get(fields.peer) ?? '?'})`;
  text += table([
    ['SLOT', 'STATE', 'CLIENT', 'SERVER', 'TO-SERVER', 'TO-CLIENT', 'UNREAD'],
    ...snap.connections.map((conn) => [
      String(conn.slot),
      conn.state,
      endpoint(conn.client),
      endpoint(conn.server),
      String(conn.bytesToServer),
      String(conn.bytesToClient),
      `${conn.unreadByServer}/${conn.unreadByClient}`,
    ]),
  ]);
  return text;
}

/** What the region holds in memory: resident pages (whoever touched them), per connection too. */
export interface MemoryReport {
  /** Bytes mapped (the region's size): a table of slots, not memory. */
  mapped: number;
  /** Bytes of the region that are memory now. */
  resident: number;
  slots: { used: number; free: number };
  /** Connections per peer (either end). */
  perPeer: Record<string, number>;
  /** The connections holding the most memory (slot header and both rings). */
  largest: { slot: number; resident: number }[];
}

export function memoryReport(domain: Domain, snap: DomainSnapshot): MemoryReport {
  const { geo, region } = domain;
  const perPeer: Record<string, number> = {};
  const largest: { slot: number; resident: number }[] = [];
  for (const conn of snap.connections) {
    for (const peer of new Set([conn.client.peer, conn.server.peer])) perPeer[peer] = (perPeer[peer] ?? 0) + 1;
    largest.push({
      slot: conn.slot,
      resident: region.resident(Lay.slotOffset(geo, conn.slot), Lay.SLOT_SIZE) + region.resident(Lay.dataOffset(geo, conn.slot), 2 * geo.ringSize),
    });
  }
  largest.sort((lhs, rhs) => rhs.resident - lhs.resident);
  return {
    mapped: geo.size,
    resident: region.resident(),
    slots: { used: snap.connections.length, free: geo.nslots - snap.connections.length },
    perPeer,
    largest: largest.slice(0, 5),
  };
}

function formatMemory(mem: MemoryReport): string {
  let text = `\nMEMORY: ${sizeText(mem.resident)} resident of ${sizeText(mem.mapped)} mapped; slots ${mem.slots.used} used, ${mem.slots.free} free\n`;
  const peers = Object.entries(mem.perPeer).sort((lhs, rhs) => rhs[1] - lhs[1]);
  if (peers.length > 0) text += table([['PEER', 'CONNECTIONS'], ...peers.map(([peer, count]) => [peer, String(count)])]);
  if (mem.largest.length > 0) text += '\nLARGEST\n' + table([['SLOT', 'RESIDENT'], ...mem.largest.map((big) => [String(big.slot), sizeText(big.resident)])]);
  return text;
}

export function runStat(opts: { socket?: string; json?: boolean }): number {
  const sock = opts.socket ?? socketPath();
  let domain: Domain;
  try {
    domain = joinHost({ autostart: false, socketPath: sock });
  } catch (err) {
    process.stderr.write(`zivm stat: no domain at ${sock}: ${(err as Error).message}\n`);
    return 1;
  }
  const snap = snapshot(domain.i32, domain.geo);
  snap.peers = snap.peers.filter((peer) => peer.id !== domain.id);
  const memory = memoryReport(domain, snap);
  if (opts.json) process.stdout.write(JSON.stringify({ socket: sock, ...snap, memory }, null, 2) + '\n');
  else process.stdout.write(formatSnapshot(sock, snap, domain.id) + formatMemory(memory));
  return 0;
}

export const statCommand: Command = {
  summary: 'list the peers, listeners and connections of a domain',
  usage: STAT_USAGE,
  run(args) {
    const { values: opts, positionals } = parse(args, { socket: { type: 'string' }, json: { type: 'boolean' } });
    if (opts.help) {
      process.stdout.write(STAT_USAGE);
      return 0;
    }
    noMore(positionals);
    return runStat({ socket: typeof opts.socket === 'string' ? opts.socket : undefined, json: opts.json === true });
  },
};
