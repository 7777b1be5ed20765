/** The zivm regions a process maps, from /proc/<pid>/maps. */
import fs from 'node:fs';

/** The zivm regions a process maps: the memfd's name (its geometry) by inode. */
export function zivmMaps(pid: number): Map<string, string> {
  const found = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 6 && fields[5].startsWith('/memfd:zivm:')) found.set(fields[4], fields[5]);
  }
  return found;
}

/** maxPeers in a region's memfd name (/memfd:zivm:g<version>:<size>:<ring>:<vectors>:<maxPeers>:...). */
export function maxPeersOf(name: string): number {
  return Number(name.split(':')[6]);
}
