/**
 * IP addresses as the region holds them (16 bytes, IPv4 in the first 4, and a
 * family), parsed and printed as Node does; this node's own addresses, and
 * the ones a peer publishes in its entry for peers on other nodes.
 */
import fs from 'node:fs';
import os from 'node:os';
import * as Lay from './layout';

/** An address as 16 bytes (IPv4 in the first 4) plus its family. */
export interface Addr {
  family: 4 | 6;
  bytes: Uint8Array;
}

/**
 * Parses an IP address written as Node writes and accepts them (net.isIP):
 * a dotted quad without leading zeros, or IPv6 with at most one `::`, an
 * optional dotted-quad tail and an optional zone (`%eth0`, dropped). Anything
 * else is undefined. By hand, not with net.isIP: its expressions cost a
 * process ~20 ms to compile the first time, on the way to its first
 * connection.
 */
export function parseAddr(address: string): Addr | undefined {
  if (typeof address !== 'string') return undefined;
  const bytes = new Uint8Array(16);
  if (address.indexOf(':') < 0) return quad(address, 0, address.length, bytes, 0) ? { family: 4, bytes } : undefined;
  let end = address.indexOf('%');
  if (end < 0) end = address.length;
  else if (!validZone(address, end + 1)) return undefined;
  if (!parseV6(address, end, bytes)) return undefined;
  // IPv4-mapped (::ffff:a.b.c.d) is the IPv4 address.
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return { family: 6, bytes };
  if (bytes[10] !== 0xff || bytes[11] !== 0xff) return { family: 6, bytes };
  const v4 = new Uint8Array(16);
  v4.set(bytes.subarray(12, 16), 0);
  return { family: 4, bytes: v4 };
}

/** A dotted quad in text[start, end) into out[at, at + 4): decimal 0-255 each, no leading zeros. */
function quad(text: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let part = 0;
  let value = -1;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const code = i < end ? text.charCodeAt(i) : 46; // a '.' after the end closes the last part
    if (code >= 48 && code <= 57) {
      if (digits > 0 && value === 0) return false; // a leading zero
      value = (value < 0 ? 0 : value * 10) + (code - 48);
      if (++digits > 3 || value > 255) return false;
    } else if (code === 46) {
      if (digits === 0 || part > 3) return false;
      out[at + part++] = value;
      value = -1;
      digits = 0;
    } else return false;
  }
  return part === 4;
}

/** A zone after '%': one or more of [0-9a-zA-Z-.:], as net.isIPv6 takes it. */
function validZone(text: string, start: number): boolean {
  if (start >= text.length) return false;
  for (let i = start; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const ok = (code >= 48 && code <= 58) || (code >= 65 && code <= 90) || (code >= 97 && code <= 122) || code === 45 || code === 46;
    if (!ok) return false;
  }
  return true;
}

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 102) return code - 87;
  if (code >= 65 && code <= 70) return code - 55;
  return -1;
}

/** IPv6 text[0, end) into out (16 bytes). */
function parseV6(text: string, end: number, out: Uint8Array): boolean {
  const groups: number[] = [];
  let gap = -1; // where '::' stands, in groups
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
    if (i === end) return fill(groups, gap, out);
  }
  for (;;) {
    // One group: 1-4 hex digits, or a dotted-quad tail.
    let value = 0;
    let digits = 0;
    const groupStart = i;
    while (i < end) {
      const nibble = hexValue(text.charCodeAt(i));
      if (nibble < 0) break;
      value = (value << 4) | nibble;
      digits++;
      i++;
    }
    if (i < end && text.charCodeAt(i) === 46) {
      // The tail: a dotted quad, last, counting for two groups.
      const tail = new Uint8Array(4);
      if (!quad(text, groupStart, end, tail, 0)) return false;
      groups.push((tail[0] << 8) | tail[1], (tail[2] << 8) | tail[3]);
      break;
    }
    if (digits === 0 || digits > 4) return false;
    groups.push(value);
    if (i === end) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = groups.length;
      i++;
      if (i === end) break;
    } else if (i === end) return false; // a trailing single ':'
  }
  return fill(groups, gap, out);
}

/** 8 groups, or fewer with a gap ('::' standing for one or more zero groups) at `gap`. */
function fill(groups: number[], gap: number, out: Uint8Array): boolean {
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return false;
  const zeros = 8 - groups.length;
  let next = 0;
  for (let k = 0; k < 8; k++) {
    const value = gap >= 0 && k >= gap && k < gap + zeros ? 0 : groups[next++];
    out[k * 2] = (value >> 8) & 0xff;
    out[k * 2 + 1] = value & 0xff;
  }
  return true;
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
let refreshQueued = false;
/** How long a list of this node's addresses is taken as it is. */
const OWN_FRESH_MS = 1000;
/**
 * How old a list a client's choice of transport may use while a fresh one is
 * made on a later turn: as old as the addresses a peer publishes for others
 * may be (see Domain.refreshAddrs).
 */
const OWN_LENIENT_MS = 10000;

/** This node's own interface addresses, made again when older than a second (or, `lenient`, on a later turn: see isOwnAddress). */
function ownAddrs(lenient: boolean): Addr[] {
  const now = Date.now();
  if (ifCache) {
    // (A clock set back makes a list of the future: made again.)
    const age = now - ifCache.at;
    if (age >= 0 && age < OWN_FRESH_MS) return ifCache.addrs;
    if (lenient && age >= 0 && age < OWN_LENIENT_MS) {
      if (!refreshQueued) {
        refreshQueued = true;
        setImmediate(() => {
          refreshQueued = false;
          listOwnAddrs(Date.now());
        });
      }
      return ifCache.addrs;
    }
  }
  return listOwnAddrs(now);
}

function listOwnAddrs(now: number): Addr[] {
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
 * interface addresses do. `lenient`, for a client choosing its transport (the
 * server's side vets the choice with a fresh list): a list up to ten seconds
 * old will do, made again after this turn. The list is a netlink dump, about
 * 20 µs here but milliseconds in an emulated guest, which connects seldom and
 * would otherwise pay it on every connect.
 */
export function isOwnAddress(addr: Addr, lenient = false): boolean {
  if (isLoopback(addr) || isUnspecified(addr)) return true;
  return ownAddrs(lenient).some((own) => own.family === addr.family && sameBytes(own.bytes, addr.bytes));
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
  for (const addr of ownAddrs(false)) {
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
