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

export function formatSnapshot(sock: string, s: DomainSnapshot, self: number): string {
  const pidOf = new Map(s.peers.map((p) => [p.id, p.pid]));
  let out = `domain ${sock}: region ${sizeText(s.size)}, ${s.slots} slots of ${sizeText(s.ringSize)} rings, ${s.vectors} vector(s), daemon pid ${s.daemonPid}\n\n`;
  const peers = s.peers.filter((p) => p.id !== self);
  out += `PEERS (${peers.length})\n`;
  out += table([['ID', 'PID', 'KIND', 'NODE', 'STATE'], ...peers.map((p) => [String(p.id), String(p.pid), p.kind, String(p.node), p.state])]);
  out += `\nLISTENERS (${s.listeners.length})\n`;
  out += table([
    ['ADDRESS', 'PORT', 'PEER', 'PID', 'NODE'],
    ...s.listeners.map((l) => [l.address + (l.ipv6Only ? ' (v6only)' : ''), String(l.port), String(l.owner), String(pidOf.get(l.owner) ?? '?'), String(l.node)]),
  ]);
  out += `\nCONNECTIONS (${s.connections.length})\n`;
  const ep = (e: { peer: number; address: string; port: number }): string =>
    `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port} (peer ${e.peer}, pid ${pidOf.get(e.peer) ?? '?'})`;
  out += table([
    ['SLOT', 'STATE', 'CLIENT', 'SERVER', 'TO-SERVER', 'TO-CLIENT', 'UNREAD'],
    ...s.connections.map((c) => [
      String(c.slot),
      c.state,
      ep(c.client),
      ep(c.server),
      String(c.bytesToServer),
      String(c.bytesToClient),
      `${c.unreadByServer}/${c.unreadByClient}`,
    ]),
  ]);
  return out;
}

export function runStat(opts: { socket?: string; json?: boolean }): number {
  const sock = opts.socket ?? socketPath();
  let d: Domain;
  try {
    d = joinHost({ autostart: false, socketPath: sock });
  } catch (e) {
    process.stderr.write(`zivm stat: no domain at ${sock}: ${(e as Error).message}\n`);
    return 1;
  }
  const s = snapshot(d.i32, d.g);
  s.peers = s.peers.filter((p) => p.id !== d.id);
  if (opts.json) process.stdout.write(JSON.stringify({ socket: sock, ...s }, null, 2) + '\n');
  else process.stdout.write(formatSnapshot(sock, s, d.id));
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
