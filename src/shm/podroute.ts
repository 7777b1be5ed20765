/**
 * Connections to the addresses of other network namespaces of this host
 * (containers, pods), from a process of such a namespace (the daemon's side:
 * server/pods.ts).
 *
 * Our domain is our namespace's. A connection to an address that is not
 * ours is asked of the daemon, on a new connection to its socket: it answers
 * with a pair domain shared with the process that listens there (made now,
 * or one we have), after our address as it saw it in the kernel, or says why
 * not (NODE_DEBUG=zivm says it; the connection goes over TCP). Later
 * connections to that process at an address the daemon confirmed find its
 * listeners in the pair domain without asking; an address it had nothing for
 * is not asked about again for a second.
 */
import { socketPath } from '../config';
import { debug } from '../log';
import { type Addr, formatAddr, parseAddr, sameBytes } from './addrs';
import { checkDir } from './sockdir';
import { find, type Found } from './directory';
import type { Domain } from './domain';
import { joinHost } from './join';
import { closeQuiet, native } from './native';
import { DialReader, dialNotes, NOTE_DIAL4, NOTE_DIAL6, NOTE_DIAL_PORT, NOTE_NO_PAIR, NOTE_PAIR, PAIR_REFUSALS, PAIR_REFUSALS_AGAIN, readNote } from './notes';
import os from 'node:os';
import path from 'node:path';

/** How long asking the daemon may hold the event loop (it answers in well under a millisecond). */
const DIAL_WAIT_MS = 200;
/** An address and port the daemon had nothing for is not asked about again for this long. */
const NOTHING_MS = 1000;

/** The pair domains we dialled, by the daemon's serial. */
const dialled = new Map<number, Domain>();
const nothing = new Map<string, number>();

/** `via`: where a Service's address led (the node's DNAT rules): the connection goes there and shows the address dialled. */
export type PodRoute = { domain: Domain; listener: Found; via?: { addr: Addr; port: number } } | { reason: string };

let links: { at: number; nets: { net: Addr; bits: number }[] } | undefined;

/**
 * Is `addr` on a subnet this host is on (an interface's, loopback aside)?
 * Containers sit on a bridge of the host: a host process asks the daemon
 * about such addresses only, not about every address it dials.
 */
export function onLink(addr: Addr): boolean {
  const now = Date.now();
  if (!links || now - links.at > 1000) {
    const nets: { net: Addr; bits: number }[] = [];
    for (const list of Object.values(os.networkInterfaces())) {
      for (const iface of list ?? []) {
        if (iface.internal || !iface.cidr) continue;
        const net = parseAddr(iface.address);
        const bits = Number(iface.cidr.split('/')[1]);
        if (net && Number.isInteger(bits)) nets.push({ net, bits });
      }
    }
    links = { at: now, nets };
  }
  return links.nets.some(({ net, bits }) => {
    if (net.family !== addr.family) return false;
    for (let bit = 0; bit < bits; bit++) {
      const mask = 0x80 >> (bit & 7);
      if ((net.bytes[bit >> 3] & mask) !== (addr.bytes[bit >> 3] & mask)) return false;
    }
    return true;
  });
}

/** Where a connection from a pod's process (or a host process, to an address on one of its subnets) to (addr, port), not an address of its own, goes. */
export function podRoute(addr: Addr, port: number, text: string): PodRoute {
  for (const domain of dialled.values()) {
    if (!domain.alive || !domain.podAddrs.some((held) => held.family === addr.family && sameBytes(held.bytes, addr.bytes))) continue;
    const listener = find(domain, addr, port);
    if (listener) return { domain, listener };
  }
  const key = `${addr.family}/${Buffer.from(addr.bytes).toString('hex')}/${port}`;
  const now = Date.now();
  const until = nothing.get(key);
  if (until !== undefined && until > now) return { reason: `no zivm listener at ${text}:${port} in another network namespace of this host` };
  const answer = ask(addr, port, text);
  if ('reason' in answer && answer.nothing) {
    if (nothing.size > 4096) nothing.clear();
    nothing.set(key, now + NOTHING_MS);
  }
  return answer;
}

function ask(addr: Addr, port: number, text: string): PodRoute & { nothing?: boolean } {
  const addon = native();
  const sock = socketPath();
  let fd: number;
  try {
    checkDir(path.dirname(sock));
    fd = addon.unixConnect(sock);
  } catch (err) {
    return { reason: `cannot ask the zivm daemon about ${text}:${port}: ${(err as Error).message}` };
  }
  let passed = -1;
  try {
    for (const value of dialNotes(addr.family, addr.bytes, port)) addon.sendMsg(fd, value, -1);
    const deadline = Date.now() + DIAL_WAIT_MS;
    const source = new DialReader();
    let from: Addr | undefined;
    let via: { addr: Addr; port: number } | undefined;
    for (;;) {
      let msg = addon.recvMsg(fd);
      while (msg === null) {
        const left = deadline - Date.now();
        if (left <= 0) return { reason: 'the zivm daemon did not answer in time' };
        addon.waitReadable(fd, left);
        msg = addon.recvMsg(fd);
      }
      if (msg === false) return { reason: 'the zivm daemon closed the connection' };
      if (msg[1] >= 0) passed = msg[1];
      const seen = readNote(msg[0]);
      if (seen && (seen.type === NOTE_DIAL4 || seen.type === NOTE_DIAL6 || seen.type === NOTE_DIAL_PORT)) {
        // Our address (port 0), then, for a Service's address, where it led.
        const got = source.take(seen.type, seen.payload);
        if (got && got.port === 0) from = { family: got.family, bytes: got.bytes };
        else if (got) via = { addr: { family: got.family, bytes: got.bytes }, port: got.port };
        continue;
      }
      if (seen?.type === NOTE_NO_PAIR)
        return { reason: `the zivm daemon: ${PAIR_REFUSALS[seen.payload] ?? 'refused'} (${text}:${port})`, nothing: !PAIR_REFUSALS_AGAIN.has(seen.payload) };
      if (seen?.type !== NOTE_PAIR || !from) return { reason: 'the zivm daemon answered something else' };
      const serial = Math.floor(seen.payload / 0x10000);
      let domain = dialled.get(serial);
      if (passed >= 0) {
        const fresh = joinHost({ autostart: false, pairFd: passed });
        passed = -1;
        domain = fresh;
        dialled.set(serial, fresh);
        fresh.onLeft = () => {
          if (dialled.get(serial) === fresh) dialled.delete(serial);
        };
        debug('joined a pair domain with a process of another network namespace (pair %d, we are %s)', serial, formatAddr(from));
      }
      if (!domain?.alive) return { reason: 'the pair domain with that network namespace is gone' };
      domain.podSource = from;
      const to = via?.addr ?? addr;
      if (!domain.podAddrs.some((held) => held.family === to.family && sameBytes(held.bytes, to.bytes))) domain.podAddrs.push(to);
      const listener = find(domain, to, via?.port ?? port);
      if (!listener) return { reason: `no listener at ${text}:${port} in our pair domain with its network namespace` };
      return via ? { domain, listener, via } : { domain, listener };
    }
  } catch (err) {
    return { reason: `asking the zivm daemon about ${text}:${port} failed: ${(err as Error).message}` };
  } finally {
    closeQuiet(fd);
    if (passed >= 0) closeQuiet(passed);
  }
}
