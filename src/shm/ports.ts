/**
 * Who listens where, as the kernel's tables of TCP sockets say
 * (/proc/net/tcp, tcp6; or those of another network namespace, through a
 * process in it: /proc/<pid>/net).
 */
import fs from 'node:fs';
import os from 'node:os';
import { type Addr, isUnspecified, sameBytes } from './addrs';

/** What /proc/net/tcp{,6} says of a listening socket. */
interface Listen {
  family: 4 | 6;
  bytes: Uint8Array;
  uid: number;
}

/**
 * The user whose socket listens on (addr, port) in our network namespace (or
 * the one whose /proc/<pid>/net is `netDir`), as the kernel would pick it:
 * bound to the address exactly, else to the wildcard (an IPv6 wildcard also
 * takes IPv4); undefined if none.
 */
export function portOwner(addr: Addr, port: number, netDir = '/proc/net'): number | undefined {
  const listens = [...readListens(`${netDir}/tcp`, 4, port), ...readListens(`${netDir}/tcp6`, 6, port)];
  const mapped = addr.family === 4 ? mapV4(addr.bytes) : undefined;
  const exact = listens.find(
    (sock) =>
      (sock.family === addr.family && sameBytes(sock.bytes, addr.bytes)) || (mapped !== undefined && sock.family === 6 && sameBytes(sock.bytes, mapped)),
  );
  if (exact) return exact.uid;
  const wild =
    listens.find((sock) => sock.family === addr.family && isUnspecified(sock)) ??
    (addr.family === 4 ? listens.find((sock) => sock.family === 6 && isUnspecified(sock)) : undefined);
  return wild?.uid;
}

function mapV4(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(bytes.subarray(0, 4), 12);
  return out;
}

/** The listening sockets on `port` in one of the kernel's tables (st 0A), with their owners. */
function readListens(file: string, family: 4 | 6, port: number): Listen[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch {
    return [];
  }
  const portHex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  const out: Listen[] = [];
  let at = text.indexOf(portHex);
  while (at >= 0) {
    const lineStart = text.lastIndexOf('\n', at) + 1;
    const lineEnd = text.indexOf('\n', at);
    const fields = text
      .slice(lineStart, lineEnd < 0 ? undefined : lineEnd)
      .trim()
      .split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid ...; the port must be the local one
    if (fields.length > 7 && fields[3] === '0A' && fields[1].endsWith(portHex.trimEnd())) {
      const bytes = hexAddr(fields[1].slice(0, fields[1].indexOf(':')), family);
      const uid = Number(fields[7]);
      if (bytes && Number.isInteger(uid)) out.push({ family, bytes, uid });
    }
    at = text.indexOf(portHex, at + 1);
  }
  return out;
}

/** An address as the kernel prints it: 32-bit words in host order (little-endian here), in hex. */
function hexAddr(hex: string, family: 4 | 6): Uint8Array | undefined {
  if (hex.length !== (family === 4 ? 8 : 32)) return undefined;
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  for (let word = 0; word < hex.length / 8; word++) {
    const value = Number.parseInt(hex.slice(word * 8, word * 8 + 8), 16);
    if (!Number.isFinite(value)) return undefined;
    view.setUint32(word * 4, value, os.endianness() === 'LE');
  }
  return bytes;
}
