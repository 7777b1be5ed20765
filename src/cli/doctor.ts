/**
 * `zivm doctor`: whether this machine and this process can use shared memory,
 * and if not, why connections go over TCP. It looks at the things a
 * connection needs, in order: zivm switched on, the native addon (and which
 * file it came from), node:net's internals, the daemon socket and its folder,
 * the domain itself; given HOST:PORT, it says which way a connection there
 * would go.
 */
import dns from 'node:dns/promises';
import fs from 'node:fs';
import path from 'node:path';
import { autostartAllowed, socketPath, zivmOff } from '../config';
import { UsageError, ZivmNoDaemonError } from '../errors';
import { guestAgentFromEnv } from '../guest/link';
import { netInternals } from '../net/internals';
import { parseAddr } from '../shm/addrs';
import { snapshot } from '../shm/inspect';
import { getDomain, lastJoinError } from '../shm/join';
import { addonSource, native, PACKAGE_ROOT } from '../shm/native';
import { route as routeTo } from '../shm/route';
import { checkDir } from '../shm/sockdir';
import { Command, parse } from './command';

export const DOCTOR_USAGE = `usage: zivm doctor [HOST:PORT] [--json]

Checks what zivm needs, as this process would see it: zivm switched on, the
native addon (the prebuilt binary or the local build it loads), node:net's
internals, the daemon socket and its domain. With HOST:PORT (e.g.
localhost:8000), also says whether a connection there would go over shared
memory, and if not, why it would use TCP.

Exit status: 0 when shared memory can be used, 1 when something stops it.

options:
  --json   one JSON document instead of text
`;

type Status = 'ok' | 'off' | 'fail' | 'info';

export interface Check {
  name: string;
  status: Status;
  detail: string;
}

export interface Route {
  address: string;
  port: number;
  transport: 'shm' | 'tcp';
  reason: string;
}

export interface DoctorReport {
  version: string;
  node: string;
  platform: string;
  checks: Check[];
  /** The addon file (a prebuilt binary or one built here) and whether it loaded. */
  addon: { file?: string; kind?: 'prebuild' | 'build'; loaded: boolean };
  /** Whether a connection from here can go over shared memory at all. */
  usable: boolean;
  routes?: Route[];
}

function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    // No readable package.json at the package's root: the version is not known.
    return 'unknown';
  }
}

function libc(): string {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? `glibc ${header.glibcVersionRuntime}` : 'not glibc (musl?)';
}

/** Splits HOST:PORT ([v6]:PORT too). */
export function parseTarget(text: string): { host: string; port: number } | undefined {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text) ?? /^()(\d+)$/.exec(text);
  if (!match) return undefined;
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host: match[1] || 'localhost', port };
}

export async function diagnose(target?: { host: string; port: number }): Promise<DoctorReport> {
  const checks: Check[] = [];
  let usable = true;
  const add = (name: string, status: Status, detail: string): void => {
    checks.push({ name, status, detail });
    if (status === 'fail' || status === 'off') usable = false;
  };

  if (zivmOff()) add('ZIVM', 'off', `ZIVM=${process.env.ZIVM}: zivm is switched off, every connection uses plain node:net`);
  else add('ZIVM', 'ok', 'on');

  const source = addonSource();
  const where = source.file
    ? `${source.kind === 'prebuild' ? 'prebuilt binary' : 'built here'}: ${path.relative(PACKAGE_ROOT, source.file)} in ${PACKAGE_ROOT}`
    : '';
  const addon = { file: source.file, kind: source.kind, loaded: false };
  try {
    native();
    addon.loaded = true;
    add('addon', 'ok', where);
  } catch (err) {
    add('addon', 'fail', `${(err as Error).message}`);
  }

  if (netInternals().available) add('node:net', 'ok', `internals of Node ${process.version} as zivm expects`);
  else add('node:net', 'fail', `this Node's net internals are not the ones zivm knows: shared memory is disabled (NODE_DEBUG=zivm says more)`);

  const sock = socketPath();
  let agent: { socket: string; pci: string } | null = null;
  try {
    agent = guestAgentFromEnv();
  } catch (err) {
    add('guest', 'fail', (err as Error).message);
  }
  if (agent) {
    add('guest', 'info', `a VM guest process: joins through the guest agent at ${agent.socket} (device ${agent.pci})`);
  } else {
    try {
      checkDir(path.dirname(sock));
      add('folder', 'ok', `${path.dirname(sock)}: private to this user`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') add('folder', 'info', `${path.dirname(sock)} does not exist yet (the first zivm server makes it)`);
      else add('folder', 'fail', (err as Error).message);
    }
  }

  let domain: ReturnType<typeof getDomain>;
  if (usable) {
    domain = getDomain(false);
    if (domain) {
      const snap = snapshot(domain.i32, domain.geo);
      const others = snap.peers.filter((peer) => peer.id !== domain!.id);
      add(
        'daemon',
        'ok',
        `${agent ? agent.socket : sock}: daemon pid ${snap.daemonPid}, region ${Math.round(snap.size / 2 ** 20)} MiB, ${snap.slots} connection slots, ` +
          `${others.length} other peer(s), ${snap.listeners.length} listener(s), ${snap.connections.length} connection(s)`,
      );
    } else {
      if (lastJoinError instanceof ZivmNoDaemonError && !agent) {
        const autostart = autostartAllowed();
        add(
          'daemon',
          autostart ? 'info' : 'fail',
          `none at ${sock}: ` +
            (autostart
              ? 'the first zivm server on this host starts one; until then clients use TCP (no zivm server can be listening)'
              : 'ZIVM_AUTOSTART=0 and no daemon runs: start one with `zivm server`'),
        );
      } else {
        add('daemon', 'fail', `cannot join the domain: ${lastJoinError?.message ?? 'unknown reason'}`);
      }
    }
  }

  let routes: Route[] | undefined;
  if (target) {
    routes = [];
    let addrs: { address: string; family: number }[];
    try {
      addrs = await dns.lookup(target.host, { all: true });
    } catch (err) {
      addrs = [];
      routes.push({ address: target.host, port: target.port, transport: 'tcp', reason: `cannot resolve ${target.host}: ${(err as Error).message}` });
    }
    for (const { address } of addrs) {
      const route = (transport: 'shm' | 'tcp', reason: string): void => {
        routes!.push({ address, port: target.port, transport, reason });
      };
      if (!usable) {
        route('tcp', 'shared memory cannot be used here (see above)');
        continue;
      }
      const addr = parseAddr(address);
      const way = addr ? routeTo(addr, target.port, address) : { reason: `cannot read address ${address}` };
      if ('reason' in way) {
        route('tcp', way.reason);
        continue;
      }
      const owner = snapshot(way.domain.i32, way.domain.geo).peers.find((peer) => peer.id === way.listener.owner);
      const where = way.domain.admitsGuests ? ' in the memory of a domain of guests' : '';
      route('shm', `zivm listener of peer ${way.listener.owner}${owner ? ` (pid ${owner.pid})` : ''}${where}`);
    }
  }

  return { version: packageVersion(), node: process.version, platform: `${process.platform}-${process.arch}, ${libc()}`, checks, addon, usable, routes };
}

export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((check) => check.name.length));
  let text = `zivm ${report.version} on Node ${report.node}, ${report.platform}\n\n`;
  for (const check of report.checks) text += `  ${check.name.padEnd(width)}  ${check.status.padEnd(4)}  ${check.detail}\n`;
  text += report.usable
    ? '\nShared memory can be used: connections from here to a zivm server on this host go over shared memory.\n'
    : '\nShared memory cannot be used here: every connection goes over TCP (see above).\n';
  if (report.routes) {
    text += '\n';
    for (const route of report.routes)
      text += `  ${route.address.includes(':') ? `[${route.address}]` : route.address}:${route.port}  ${route.transport}  ${route.reason}\n`;
  }
  text +=
    '\nAlways over TCP: TLS sockets, servers that are not zivm servers (or started before the hook), other hosts;\n' +
    'Unix socket paths stay on plain net. NODE_DEBUG=zivm prints every decision with its reason.\n';
  return text;
}

export async function runDoctor(opts: { target?: { host: string; port: number }; json?: boolean }): Promise<number> {
  const report = await diagnose(opts.target);
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  return report.usable ? 0 : 1;
}

export const doctorCommand: Command = {
  summary: 'check the addon, the daemon, and why a connection would use TCP',
  usage: DOCTOR_USAGE,
  run(args) {
    const { values: opts, positionals: rest } = parse(args, { json: { type: 'boolean' } });
    if (opts.help) {
      process.stdout.write(DOCTOR_USAGE);
      return 0;
    }
    if (rest.length > 1) throw new UsageError(`unexpected argument ${rest[1]}`);
    const target = rest.length ? parseTarget(rest[0]) : undefined;
    if (rest.length && !target) throw new UsageError(`${rest[0]} is not HOST:PORT`);
    return runDoctor({ target, json: opts.json === true });
  },
};
