/** What the tests of the native addon (one file per native/*.cc) share. */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { native, NativeRegion, NativeRing } from '../../src/shm/native';
import { RING_HEAD, RING_TAIL } from '../../src/shm/layout';

export const addon = native();
/** dist/src/shm/native.js, for code run in workers and child processes. */
export const NATIVE_JS = path.resolve(__dirname, '..', '..', 'src', 'shm', 'native.js');

/** Small deterministic PRNG (xorshift32). */
export function xorshift(seed: number): () => number {
  let val = seed >>> 0 || 1;
  return () => {
    val ^= val << 13;
    val >>>= 0;
    val ^= val >>> 17;
    val ^= val << 5;
    val >>>= 0;
    return val;
  };
}

/** The byte at stream position `i` in the ring tests. */
function streamByte(i: number): number {
  return (i * 31 + Math.floor(i / 251)) & 0xff;
}

export function streamBytes(from: number, len: number, lead = 0): Uint8Array {
  // `lead` junk bytes in front so the view has a non-zero byteOffset.
  const backing = new Uint8Array(lead + len + 3).fill(0xee);
  for (let i = 0; i < len; i++) backing[lead + i] = streamByte(from + i);
  return backing.subarray(lead, lead + len);
}

export function expectStream(buf: Uint8Array, from: number): void {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== streamByte(from + i)) {
      throw new Error(`byte ${from + i}: got ${buf[i]}, expected ${streamByte(from + i)}`);
    }
  }
}

export function codeOf(fn: () => unknown): { name: string; code: unknown; err: Error & Record<string, unknown> } {
  try {
    fn();
  } catch (err2) {
    const err = err2 as Error & Record<string, unknown>;
    return { name: err.name, code: err.code, err };
  }
  throw new Error('expected a throw');
}

export const HDR = 0;
export const DATA = 4096;

/** A memfd-backed region with one ring (header at 0, data at 4096). */
export class Fixture {
  fd: number;
  region: NativeRegion;
  constructor(
    readonly capacity = 4096,
    initialPos = 0,
  ) {
    this.fd = addon.memfdCreate('zivm-test', DATA + capacity);
    this.region = new addon.Region(this.fd, DATA + capacity);
    if (initialPos) {
      const dv = new DataView(this.region.buffer);
      dv.setBigUint64(HDR + RING_HEAD, BigInt(initialPos), true);
      dv.setBigUint64(HDR + RING_TAIL, BigInt(initialPos), true);
    }
  }
  producer(): NativeRing {
    return new addon.Ring(this.region, HDR, DATA, this.capacity, true);
  }
  consumer(): NativeRing {
    return new addon.Ring(this.region, HDR, DATA, this.capacity, false);
  }
  dispose(): void {
    this.region.close();
    addon.close(this.fd);
  }
}

/** This process's open fds and what each is (a file, a socket, a pipe ...). */
function openFds(): Map<string, string> {
  const fds = new Map<string, string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      fds.set(fd, fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed between the listing and the look (the listing's own fd among them)
    }
  }
  return fds;
}

function newFds(before: Map<string, string>): string[] {
  const left: string[] = [];
  for (const [fd, what] of openFds()) if (before.get(fd) !== what) left.push(`${fd} -> ${what}`);
  return left;
}

/**
 * Hooks of the enclosing suite: the tests in it leave no fd open. Code of
 * earlier suites still running in this process (a timer that reads a file)
 * may hold one for a moment: an fd must stay open for half a second to count.
 */
export function noFdLeft(): void {
  let atStart = new Map<string, string>();
  before(() => (atStart = openFds()));
  after(async () => {
    let left = newFds(atStart);
    for (let waited = 0; left.length && waited < 500; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      left = newFds(atStart);
    }
    expect(left, 'fds left open by these tests').to.deep.equal([]);
  });
}
