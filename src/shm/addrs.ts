/**
 * IP addresses as the region holds them (16 bytes, IPv4 in the first 4, and a
 * family), parsed and printed as Node does; this node's own addresses, and
 * the ones a peer publishes in its entry for peers on other nodes.
 */
import os from 'node:os';
import net from 'node:net';
import * as Lay from './layout';

/** An address as 16 bytes (IPv4 in the first 4) plus its family. */
export interface Addr {
  family: 4 | 6;
  bytes: Uint8Array;
}

export function parseAddr(address: string): Addr | undefined {
  const v = net.isIP(address);
  if (v === 4) {
    const b = new Uint8Array(16);
    const parts = address.split('.');
    for (let i = 0; i < 4; i++) b[i] = Number(parts[i]);
    return { family: 4, bytes: b };
  }
  if (v !== 6) return undefined;
  let s = address;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const b = new Uint8Array(16);
  // An embedded IPv4 tail becomes two groups.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const p = tail.split('.').map(Number);
    s = s.slice(0, lastColon + 1) + ((p[0] << 8) | p[1]).toString(16) + ':' + ((p[2] << 8) | p[3]).toString(16);
  }
  const [head, rest] = s.split('::');
  const hs = head ? head.split(':') : [];
  const ts = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups: number[] = [...hs.map((x) => parseInt(x, 16))];
  if (rest !== undefined) for (let i = hs.length + ts.length; i < 8; i++) groups.push(0);
  groups.push(...ts.map((x) => parseInt(x, 16)));
  for (let i = 0; i < 8; i++) {
    b[i * 2] = (groups[i] >> 8) & 0xff;
    b[i * 2 + 1] = groups[i] & 0xff;
  }
  // IPv4-mapped (::ffff:a.b.c.d) is the IPv4 address.
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    const m = new Uint8Array(16);
    m.set(b.subarray(12, 16), 0);
    return { family: 4, bytes: m };
  }
  return { family: 6, bytes: b };
}

/** An IPv4 address as the IPv4-mapped IPv6 address a dual-stack socket sees. */
export function mapV4(a: Addr): Addr {
  if (a.family === 6) return a;
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(a.bytes.subarray(0, 4), 12);
  return { family: 6, bytes };
}

export function formatAddr(a: Addr): string {
  if (a.family === 4) return `${a.bytes[0]}.${a.bytes[1]}.${a.bytes[2]}.${a.bytes[3]}`;
  if (a.bytes.subarray(0, 10).every((x) => x === 0) && a.bytes[10] === 0xff && a.bytes[11] === 0xff) {
    return `::ffff:${a.bytes[12]}.${a.bytes[13]}.${a.bytes[14]}.${a.bytes[15]}`;
  }
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((a.bytes[i * 2] << 8) | a.bytes[i * 2 + 1]).toString(16));
  // Compress the longest run of zero groups, as the kernel and Node print it.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return groups.slice(0, best).join(':') + '::' + groups.slice(best + bestLen).join(':');
}

export function isUnspecified(a: Addr): boolean {
  return a.bytes.every((x) => x === 0);
}

export function isLoopback(a: Addr): boolean {
  if (a.family === 4) return a.bytes[0] === 127;
  for (let i = 0; i < 15; i++) if (a.bytes[i] !== 0) return false;
  return a.bytes[15] === 1;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

let ifCache: { at: number; addrs: Addr[] } | undefined;

/** This node's own interface addresses (cached for a second). */
function ownAddrs(): Addr[] {
  const now = Date.now();
  if (ifCache && now - ifCache.at < 1000) return ifCache.addrs;
  const addrs: Addr[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) {
      const a = parseAddr(i.address);
      if (a) addrs.push(a);
    }
  }
  ifCache = { at: now, addrs };
  return addrs;
}

/**
 * Does a connection to `a` stay on this node? Loopback, the unspecified
 * address (Linux connects it to the local host) and the node's own
 * interface addresses do.
 */
export function isOwnAddress(a: Addr): boolean {
  if (isLoopback(a) || isUnspecified(a)) return true;
  return ownAddrs().some((o) => o.family === a.family && sameBytes(o.bytes, a.bytes));
}

/** IPv6 link-local (fe80::/10): scoped to one link, never published. */
function isLinkLocal6(a: Addr): boolean {
  return a.family === 6 && a.bytes[0] === 0xfe && (a.bytes[1] & 0xc0) === 0x80;
}

/**
 * The addresses this node publishes in the region for peers on other nodes:
 * its interface addresses without loopback, unspecified and IPv6 link-local
 * ones, at most ADDR_MAX_V4 IPv4 and ADDR_MAX_V6 IPv6 (in interface order).
 */
export function publishableAddrs(): Addr[] {
  const v4: Addr[] = [];
  const v6: Addr[] = [];
  for (const a of ownAddrs()) {
    if (isLoopback(a) || isUnspecified(a) || isLinkLocal6(a)) continue;
    const list = a.family === 4 ? v4 : v6;
    if (!list.some((o) => sameBytes(o.bytes, a.bytes))) list.push(a);
  }
  return [...v4.slice(0, Lay.ADDR_MAX_V4), ...v6.slice(0, Lay.ADDR_MAX_V6)];
}

/** Writes `addrs` into peer `id`'s entry (the peer itself, before it goes PEER_ALIVE). */
export function publishAddrs(i32: Int32Array, g: Lay.Geometry, id: number, addrs: Addr[]): void {
  const p = Lay.peerOffset(g, id) >> 2;
  Atomics.store(i32, p + Lay.PEER_ADDRS.ADDR_COUNTS, 0);
  let n4 = 0;
  let n6 = 0;
  for (const a of addrs) {
    if (a.family === 4 && n4 < Lay.ADDR_MAX_V4) {
      const dv = new DataView(a.bytes.buffer, a.bytes.byteOffset, 4);
      Atomics.store(i32, p + Lay.PEER_ADDRS.ADDR_V4 + n4++, dv.getInt32(0, true));
    } else if (a.family === 6 && n6 < Lay.ADDR_MAX_V6) {
      writeAddr(i32, p + Lay.PEER_ADDRS.ADDR_V6 + 4 * n6++, a.bytes);
    }
  }
  Atomics.store(i32, p + Lay.PEER_ADDRS.ADDR_COUNTS, n4 | (n6 << 8));
}

/** The addresses peer `id` published (read it only while it is alive). */
export function publishedAddrs(i32: Int32Array, g: Lay.Geometry, id: number): Addr[] {
  const p = Lay.peerOffset(g, id) >> 2;
  const c = Atomics.load(i32, p + Lay.PEER_ADDRS.ADDR_COUNTS);
  const n4 = Math.min(c & 0xff, Lay.ADDR_MAX_V4);
  const n6 = Math.min((c >> 8) & 0xff, Lay.ADDR_MAX_V6);
  const out: Addr[] = [];
  for (let i = 0; i < n4; i++) {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setInt32(0, Atomics.load(i32, p + Lay.PEER_ADDRS.ADDR_V4 + i), true);
    out.push({ family: 4, bytes });
  }
  for (let i = 0; i < n6; i++) out.push(readAddr(i32, p + Lay.PEER_ADDRS.ADDR_V6 + 4 * i, 6));
  return out;
}

export function writeAddr(i32: Int32Array, wordIdx: number, bytes: Uint8Array): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, 16);
  for (let i = 0; i < 4; i++) Atomics.store(i32, wordIdx + i, dv.getInt32(i * 4, true));
}

export function readAddr(i32: Int32Array, wordIdx: number, family: number): Addr {
  const bytes = new Uint8Array(16);
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i < 4; i++) dv.setInt32(i * 4, Atomics.load(i32, wordIdx + i), true);
  return { family: family === 6 ? 6 : 4, bytes };
}

