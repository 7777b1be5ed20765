/**
 * Network namespaces as the daemon sees them, from the kernel (/proc), never
 * from what a process says: which namespace a process is in, which addresses
 * a namespace holds, whether something listens on an address and port there.
 */
import fs from 'node:fs';
import { type Addr, isLoopback, parseAddr } from '../shm/addrs';
import { portOwner } from '../shm/ports';

/** The network namespace of process `pid` (its inode), or undefined if it cannot be told (gone, or not visible to us). */
export function nsOf(pid: number): number | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    return fs.statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return undefined;
  }
}

/**
 * The addresses of the network namespace process `pid` is in, loopback left
 * out: IPv4 from its routing table's LOCAL host routes (/proc/<pid>/net/fib_trie),
 * IPv6 from /proc/<pid>/net/if_inet6.
 */
export function nsAddrs(pid: number): Addr[] {
  const out: Addr[] = [];
  const seen = new Set<string>();
  const add = (addr: Addr | undefined): void => {
    if (!addr || isLoopback(addr)) return;
    const key = `${addr.family}/${Buffer.from(addr.bytes).toString('hex')}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(addr);
  };
  let trie = '';
  try {
    trie = fs.readFileSync(`/proc/${pid}/net/fib_trie`, 'latin1');
  } catch {
    // No IPv4 here (or the process is gone).
  }
  const lines = trie.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const leaf = /^[\s|]*\|-- (\d+\.\d+\.\d+\.\d+)\s*$/.exec(lines[i]);
    if (!leaf) continue;
    // The leaf's routes follow, one per line, until the next leaf or node.
    for (let k = i + 1; k < lines.length && !/(\|--|\+--)/.test(lines[k]); k++) {
      if (/\/32 host LOCAL/.test(lines[k])) add(parseAddr(leaf[1]));
    }
  }
  let inet6 = '';
  try {
    inet6 = fs.readFileSync(`/proc/${pid}/net/if_inet6`, 'latin1');
  } catch {
    // No IPv6 here.
  }
  for (const line of inet6.split('\n')) {
    const hex = line.trim().split(/\s+/)[0];
    if (!hex || !/^[0-9a-f]{32}$/.test(hex)) continue;
    add(parseAddr(hex.match(/.{4}/g)!.join(':')));
  }
  return out;
}

/** Does a socket listen on (addr, port) in the network namespace of process `pid`, as the kernel would pick it? */
export function listensIn(pid: number, addr: Addr, port: number): boolean {
  return portOwner(addr, port, `/proc/${pid}/net`) !== undefined;
}
