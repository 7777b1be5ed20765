/**
 * The loopback interface's byte counters: what went over TCP (or anything
 * else) on this machine's lo. They count every process of the network
 * namespace, so a test that reads them runs alone in one (or tolerates
 * others' traffic: see test/preload/harness.ts quietest()).
 */
import fs from 'node:fs';

/** Bytes received plus sent on lo so far (/proc/net/dev); throws where there is no such line. */
export function loBytes(): number {
  const text = fs.readFileSync('/proc/net/dev', 'utf8');
  for (const line of text.split('\n')) {
    const match = /^\s*lo:\s*(.*)$/.exec(line);
    if (match) {
      const fd = match[1].trim().split(/\s+/).map(Number);
      return fd[0] + fd[8];
    }
  }
  throw new Error('no lo interface in /proc/net/dev');
}

/** loBytes(), or NaN where it cannot be read (not Linux). */
export function loBytesOrNaN(): number {
  try {
    return loBytes();
  } catch {
    return NaN; // no counters here: the figure is left out
  }
}
