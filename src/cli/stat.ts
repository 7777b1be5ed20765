/**
 * `zivm stat`: the domain as its region shows it, as `ss` shows sockets:
 * peers, listeners, and connections with endpoints, bytes each way and state.
 */
import { socketPath } from '../config';
import { Domain } from '../shm/domain';
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
  if (opts.json) process.stdout.write(JSON.stringify({ socket: sock, ...snap }, null, 2) + '\n');
  else process.stdout.write(formatSnapshot(sock, snap, domain.id));
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
