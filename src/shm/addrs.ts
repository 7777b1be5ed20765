/**
 * IP addresses as the region holds them (16 bytes, IPv4 in the first 4, and a
 * family), parsed and printed as Node does; this node's own addresses, and
 * the ones a peer publishes in its entry for peers on other nodes.
 */
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import * as Lay from './layout';

/** An address as 16 bytes (IPv4 in the first 4) plus its family. */
export interface Addr {
  family: 4 | 6;
  bytes: Uint8Array;
}

export function parseAddr(address: string): Addr | undefined {
  const version = net.isIP(address);
  if (version === 4) {
    const bytes = new Uint8Array(16);
    const parts = address.split('.');
    for (let i = 0; i < 4; i++) bytes[i] = Number(parts[i]);
    return { family: 4, bytes };
  }
  if (version !== 6) return undefined;
  let text = address;
  const scope = text.indexOf('%');
  if (scope >= 0) text = text.slice(0, scope);
  const buf = new Uint8Array(16);
  // An embedded IPv4 tail becomes two groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const parts = tail.split('.').map(Number);
    text = text.slice(0, lastColon + 1) + ((parts[0] << 8) | parts[1]).toString(16) + ':' + ((parts[2] << 8) | parts[3]).toString(16);
  }
  const [head, rest] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups: number[] = [...headGroups.map((group) => parseInt(group, 16))];
  if (rest !== undefined) for (let i = headGroups.length + restGroups.length; i < 8; i++) groups.push(0);
  groups.push(...restGroups.map((group) => parseInt(group, 16)));
  for (let i = 0; i < 8; i++) {
    buf[i * 2] = (groups[i] >> 8) & 0xff;
    buf[i * 2 + 1] = groups[i] & 0xff;
  }
  // IPv4-mapped (::ffff:a.b.c.d) is the IPv4 address.
  if (buf.subarray(0, 10).every((byte) => byte === 0) && buf[10] === 0xff && buf[11] === 0xff) {
    const v4 = new Uint8Array(16);
    v4.set(buf.subarray(12, 16), 0);
    return { family: 4, bytes: v4 };
  }
  return { family: 6, bytes: buf };
}

/** An IPv4 address as the IPv4-mapped IPv6 address a dual-stack socket sees. */
export function mapV4(addr: Addr): Addr {
  if (addr.family === 6) return addr;
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(addr.bytes.subarray(0, 4), 12);
  return { family: 6, bytes };
}

export function formatAddr(addr: Addr): string {
  if (addr.family === 4) return `${addr.bytes[0]}.${addr.bytes[1]}.${addr.bytes[2]}.${addr.bytes[3]}`;
  if (addr.bytes.subarray(0, 10).every((byte) => byte === 0) && addr.bytes[10] === 0xff && addr.bytes[11] === 0xff) {
    return `::ffff:${addr.bytes[12]}.${addr.bytes[13]}.${addr.bytes[14]}.${addr.bytes[15]}`;
  }
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(((addr.bytes[i * 2] << 8) | addr.bytes[i * 2 + 1]).toString(16));
  // Compress the longest run of zero groups, as the kernel and Node print it.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
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

export function isUnspecified(addr: Addr): boolean {
  return addr.bytes.every((byte) => byte === 0);
}

export function isLoopback(addr: Addr): boolean {
  if (addr.family === 4) return addr.bytes[0] === 127;
  for (let i = 0; i < 15; i++) if (addr.bytes[i] !== 0) return false;
  return addr.bytes[15] === 1;
}

export function sameBytes(bytes: Uint8Array, other: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (bytes[i] !== other[i]) return false;
  return true;
}

let ifCache: { at: number; addrs: Addr[] } | undefined;

/** This node's own interface addresses (cached for a second). */
function ownAddrs(): Addr[] {
  const now = Date.now();
  if (ifCache && now - ifCache.at < 1000) return ifCache.addrs;
  const addrs: Addr[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const iface of list ?? []) {
      const addr = parseAddr(iface.address);
      if (addr) addrs.push(addr);
    }
  }
  ifCache = { at: now, addrs };
  return addrs;
}

/**
 * Does a connection to `addr` stay on this node? Loopback, the unspecified
 * address (Linux connects it to the local host) and the node's own
 * interface addresses do.
 */
export function isOwnAddress(addr: Addr): boolean {
  if (isLoopback(addr) || isUnspecified(addr)) return true;
  return ownAddrs().some((own) => own.family === addr.family && sameBytes(own.bytes, addr.bytes));
}

/** IPv6 link-local (fe80::/10): scoped to one link, never published. */
function isLinkLocal6(addr: Addr): boolean {
  return addr.family === 6 && addr.bytes[0] === 0xfe && (addr.bytes[1] & 0xc0) === 0x80;
}

/**
 * The addresses this node publishes in the region for peers on other nodes:
 * its interface addresses without loopback, unspecified and IPv6 link-local
 * ones, at most ADDR_MAX_V4 IPv4 and ADDR_MAX_V6 IPv6 (in interface order).
 */
export function publishableAddrs(): Addr[] {
  const v4: Addr[] = [];
  const v6: Addr[] = [];
  for (const addr of ownAddrs()) {
    if (isLoopback(addr) || isUnspecified(addr) || isLinkLocal6(addr)) continue;
    const list = addr.family === 4 ? v4 : v6;
    if (!list.some((listed) => sameBytes(listed.bytes, addr.bytes))) list.push(addr);
  }
  return [...v4.slice(0, Lay.ADDR_MAX_V4), ...v6.slice(0, Lay.ADDR_MAX_V6)];
}

/** Writes `addrs` into peer `id`'s entry (the peer itself, before it goes PEER_ALIVE). */
export function publishAddrs(i32: Int32Array, geo: Lay.Geometry, id: number, addrs: Addr[]): void {
  const entry = Lay.peerOffset(geo, id) >>> 2;
  Atomics.store(i32, entry + Lay.PEER_ADDRS.ADDR_COUNTS, 0);
  let v4Count = 0;
  let v6Count = 0;
  for (const addr of addrs) {
    if (addr.family === 4 && v4Count < Lay.ADDR_MAX_V4) {
      const view = new DataView(addr.bytes.buffer, addr.bytes.byteOffset, 4);
      Atomics.store(i32, entry + Lay.PEER_ADDRS.ADDR_V4 + v4Count++, view.getInt32(0, true));
    } else if (addr.family === 6 && v6Count < Lay.ADDR_MAX_V6) {
      writeAddr(i32, entry + Lay.PEER_ADDRS.ADDR_V6 + 4 * v6Count++, addr.bytes);
    }
  }
  Atomics.store(i32, entry + Lay.PEER_ADDRS.ADDR_COUNTS, v4Count | (v6Count << 8));
}

/** The addresses peer `id` published (read it only while it is alive). */
export function publishedAddrs(i32: Int32Array, geo: Lay.Geometry, id: number): Addr[] {
  const entry = Lay.peerOffset(geo, id) >>> 2;
  const count = Atomics.load(i32, entry + Lay.PEER_ADDRS.ADDR_COUNTS);
  const v4Count = Math.min(count & 0xff, Lay.ADDR_MAX_V4);
  const v6Count = Math.min((count >> 8) & 0xff, Lay.ADDR_MAX_V6);
  const addrs: Addr[] = [];
  for (let i = 0; i < v4Count; i++) {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setInt32(0, Atomics.load(i32, entry + Lay.PEER_ADDRS.ADDR_V4 + i), true);
    addrs.push({ family: 4, bytes });
  }
  for (let i = 0; i < v6Count; i++) addrs.push(readAddr(i32, entry + Lay.PEER_ADDRS.ADDR_V6 + 4 * i, 6));
  return addrs;
}

/** Word `index` (0..3) of a 16-byte address as the region holds it (little-endian). */
export function addrWord(bytes: Uint8Array, index: number): number {
  const at = 4 * index;
  return bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24);
}

export function writeAddr(i32: Int32Array, wordIdx: number, bytes: Uint8Array): void {
  for (let i = 0; i < 4; i++) Atomics.store(i32, wordIdx + i, addrWord(bytes, i));
}

/** Whether the four words at `wordIdx` hold the address `bytes` (nothing allocated). */
export function holdsAddr(i32: Int32Array, wordIdx: number, bytes: Uint8Array): boolean {
  for (let i = 0; i < 4; i++) if (Atomics.load(i32, wordIdx + i) !== addrWord(bytes, i)) return false;
  return true;
}

export function readAddr(i32: Int32Array, wordIdx: number, family: number): Addr {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 4; i++) view.setInt32(i * 4, Atomics.load(i32, wordIdx + i), true);
  return { family: family === 6 ? 6 : 4, bytes };
}

/** This process's node: its network namespace (the inode of /proc/self/ns/net). */
export function netNodeId(): number {
  try {
    return fs.statSync('/proc/self/ns/net').ino;
  } catch {
    // No /proc here: every process counts as being in one network namespace.
    return 1;
  }
}
