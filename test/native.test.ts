import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native, NativeRegion, NativeRing } from '../src/shm/native';
import { RING_HEAD, RING_HEADER_SIZE, RING_TAIL } from '../src/shm/layout';

const n = native();
const NATIVE_JS = path.resolve(__dirname, '..', 'src', 'shm', 'native.js');

/** Small deterministic PRNG (xorshift32). */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** The byte at stream position `i` in the ring tests. */
function streamByte(i: number): number {
  return (i * 31 + Math.floor(i / 251)) & 0xff;
}

function streamBytes(from: number, len: number, lead = 0): Uint8Array {
  // `lead` junk bytes in front so the view has a non-zero byteOffset.
  const backing = new Uint8Array(lead + len + 3).fill(0xee);
  for (let i = 0; i < len; i++) backing[lead + i] = streamByte(from + i);
  return backing.subarray(lead, lead + len);
}

function expectStream(buf: Uint8Array, from: number): void {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== streamByte(from + i)) {
      throw new Error(`byte ${from + i}: got ${buf[i]}, expected ${streamByte(from + i)}`);
    }
  }
}

function codeOf(fn: () => unknown): { name: string; code: unknown; err: Error & Record<string, unknown> } {
  try {
    fn();
  } catch (e) {
    const err = e as Error & Record<string, unknown>;
    return { name: err.name, code: err.code, err };
  }
  throw new Error('expected a throw');
}

const HDR = 0;
const DATA = 4096;

/** A memfd-backed region with one ring (header at 0, data at 4096). */
class Fixture {
  fd: number;
  region: NativeRegion;
  constructor(readonly capacity = 4096, initialPos = 0) {
    this.fd = n.memfdCreate('zivm-test', DATA + capacity);
    this.region = new n.Region(this.fd, DATA + capacity);
    if (initialPos) {
      const dv = new DataView(this.region.buffer);
      dv.setBigUint64(HDR + RING_HEAD, BigInt(initialPos), true);
      dv.setBigUint64(HDR + RING_TAIL, BigInt(initialPos), true);
    }
  }
  producer(): NativeRing {
    return new n.Ring(this.region, HDR, DATA, this.capacity, true);
  }
  consumer(): NativeRing {
    return new n.Ring(this.region, HDR, DATA, this.capacity, false);
  }
  dispose(): void {
    this.region.close();
    n.close(this.fd);
  }
}

const openFds = () => fs.readdirSync('/proc/self/fd').length;

describe('native addon', () => {
  let fdsAtStart = 0;
  before(() => (fdsAtStart = openFds()));
  after(() => expect(openFds(), 'fds left open by these tests').to.equal(fdsAtStart));

  describe('Ring', () => {
    let fx: Fixture | undefined;
    afterEach(() => {
      fx?.dispose();
      fx = undefined;
    });

    it('reads null from an empty ring', () => {
      fx = new Fixture();
      const c = fx.consumer();
      expect(c.read(100)).to.equal(null);
      expect(c.available()).to.equal(0);
      expect(fx.producer().free()).to.equal(4096);
    });

    it('writes 0 bytes into a full ring', () => {
      fx = new Fixture();
      const p = fx.producer();
      expect(p.write(streamBytes(0, 5000))).to.equal(4096);
      expect(p.free()).to.equal(0);
      expect(p.write(streamBytes(4096, 10))).to.equal(0);
      expect(p.writev([streamBytes(4096, 10)])).to.equal(0);
      expect(p.head()).to.equal(4096);
      expect(p.tail()).to.equal(0);
    });

    it('returns at most `max` bytes, in order, and releases them', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 300));
      const a = c.read(100)!;
      expect(Buffer.isBuffer(a)).to.equal(true);
      expect(a.length).to.equal(100);
      expectStream(a, 0);
      expect(p.free()).to.equal(4096 - 200);
      const b = c.read(1000)!;
      expect(b.length).to.equal(200);
      expectStream(b, 100);
      expect(c.read(1)).to.equal(null);
      expect(c.head()).to.equal(300);
      expect(c.tail()).to.equal(300);
    });

    it('fills exactly up to the wrap point, then continues at the start of the data area', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      expect(p.write(streamBytes(0, 4096))).to.equal(4096);
      expectStream(c.read(4096)!, 0);
      // position is now exactly at the wrap point (offset 0 of the next lap)
      expect(p.write(streamBytes(4096, 4096))).to.equal(4096);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      expectStream(raw, 4096);
      expectStream(c.read(10000)!, 4096);
      expect(c.tail()).to.equal(8192);
    });

    it('writes that end exactly at the end of the data area do not spill', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 4000));
      c.read(4000);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      raw[0] = 0xab;
      expect(p.write(streamBytes(4000, 96))).to.equal(96);
      expect(raw[0]).to.equal(0xab);
      expectStream(c.read(96)!, 4000);
    });

    it('splits a write that crosses the wrap between the end and the start of the data area', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 4086));
      c.read(4086);
      expect(p.write(streamBytes(4086, 30, 7))).to.equal(30);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      expectStream(raw.subarray(4086, 4096), 4086);
      expectStream(raw.subarray(0, 20), 4096);
      // a read across the wrap joins both parts
      expectStream(c.read(30)!, 4086);
    });

    it('handles positions far beyond 2^32 (64-bit counters)', () => {
      const start = 2 ** 40 - 10;
      fx = new Fixture(4096, start);
      const p = fx.producer();
      const c = fx.consumer();
      expect(p.head()).to.equal(start);
      expect(p.write(streamBytes(0, 100))).to.equal(100);
      expectStream(c.read(100)!, 0);
      expect(c.tail()).to.equal(start + 100);
    });

    it('respects byteOffset and byteLength of the chunk', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      const big = Buffer.from('xxxxhello worldyyyy');
      expect(p.write(big.subarray(4, 15))).to.equal(11);
      expect(c.read(100)!.toString()).to.equal('hello world');
    });

    it('writev copies whole chunks in order and the first one that does not fit partly, in one publish', () => {
      fx = new Fixture(64);
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 14));
      // free: 50. chunks 20 + 20 + 20 + 5: the third fits 10 bytes, the fourth none
      const n2 = p.writev([streamBytes(14, 20), streamBytes(34, 20, 3), streamBytes(54, 20), streamBytes(74, 5)]);
      expect(n2).to.equal(50);
      expect(p.free()).to.equal(0);
      expect(c.available()).to.equal(64);
      expectStream(c.read(64)!, 0);
      expect(p.writev([])).to.equal(0);
    });

    it('property: random interleavings of writes and reads keep every byte in order', function () {
      this.timeout(60000);
      for (const [seed, start] of [
        [0x2545f491, 0],
        [0x9e3779b9, 2 ** 33 - 1000],
      ]) {
        const rnd = xorshift(seed);
        const cap = 4096;
        const f = new Fixture(cap, start);
        try {
          const p = f.producer();
          const c = f.consumer();
          let written = 0;
          let read = 0;
          for (let op = 0; op < 4000; op++) {
            const choice = rnd() % 3;
            const size = 1 + (rnd() % (cap * 2));
            if (choice === 0) {
              const expectN = Math.min(size, cap - (written - read));
              expect(p.write(streamBytes(written, size, rnd() % 5))).to.equal(expectN);
              written += expectN;
            } else if (choice === 1) {
              const parts: Uint8Array[] = [];
              let at = written;
              const k = 1 + (rnd() % 4);
              for (let i = 0; i < k; i++) {
                const len = 1 + (rnd() % Math.max(1, Math.floor(size / k)));
                parts.push(streamBytes(at, len, rnd() % 3));
                at += len;
              }
              const total = at - written;
              const expectN = Math.min(total, cap - (written - read));
              expect(p.writev(parts)).to.equal(expectN);
              written += expectN;
            } else {
              const got = c.read(size);
              const expectN = Math.min(size, written - read);
              if (expectN === 0) {
                expect(got).to.equal(null);
              } else {
                expect(got!.length).to.equal(expectN);
                expectStream(got!, read);
                read += expectN;
              }
            }
            const used = p.head() - p.tail();
            expect(used).to.be.at.least(0);
            expect(used).to.be.at.most(cap);
            expect(c.available()).to.equal(written - read);
            expect(p.free()).to.equal(cap - (written - read));
            expect(p.head()).to.equal(start + written);
            expect(c.tail()).to.equal(start + read);
          }
          expect(written).to.be.greaterThan(cap * 100);
        } finally {
          f.dispose();
        }
      }
    });

    it('consumer read throws ERR_ZIVM_CORRUPT when the shared head is more than capacity ahead', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 10));
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 0xffff_ffff_0000n, true);
      expect(codeOf(() => c.read(10)).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => c.available()).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('consumer read throws ERR_ZIVM_CORRUPT when the shared head went backwards', () => {
      fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      p.write(streamBytes(0, 100));
      c.read(100);
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 50n, true);
      expect(codeOf(() => c.read(10)).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('producer write throws ERR_ZIVM_CORRUPT when the shared tail is corrupt', () => {
      fx = new Fixture();
      const p = fx.producer();
      p.write(streamBytes(0, 10));
      const dv = new DataView(fx.region.buffer);
      dv.setBigUint64(HDR + RING_TAIL, 0xdead_beef_dead_beefn, true);
      expect(codeOf(() => p.write(streamBytes(10, 1))).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => p.writev([streamBytes(10, 1)])).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => p.free()).code).to.equal('ERR_ZIVM_CORRUPT');
      // a tail ahead of the head is corrupt as well
      dv.setBigUint64(HDR + RING_TAIL, 11n, true);
      expect(codeOf(() => p.write(streamBytes(10, 1))).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('refuses to open an end on a header whose positions are inconsistent', () => {
      const f = (fx = new Fixture());
      new DataView(f.region.buffer).setBigUint64(HDR + RING_HEAD, 5000n, true);
      expect(codeOf(() => f.producer()).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => f.consumer()).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('refuses calls meant for the other end with ERR_ZIVM_BAD_ARG', () => {
      const f = (fx = new Fixture());
      expect(codeOf(() => f.consumer().write(Buffer.alloc(1))).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => f.consumer().writev([Buffer.alloc(1)])).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => f.producer().read(1)).code).to.equal('ERR_ZIVM_BAD_ARG');
    });

    it('exposes its capacity', () => {
      fx = new Fixture(1024);
      expect(fx.producer().capacity).to.equal(1024);
    });
  });

  describe('Region', () => {
    it('maps the whole size as an ArrayBuffer', () => {
      const fd = n.memfdCreate('r', 8192);
      const r = new n.Region(fd, 8192);
      expect(r.size).to.equal(8192);
      expect(r.buffer).to.be.instanceOf(ArrayBuffer);
      expect(r.buffer.byteLength).to.equal(8192);
      r.close();
      n.close(fd);
    });

    it('two mappings of the same memfd see each other’s bytes', () => {
      const fd = n.memfdCreate('r', 8192);
      const a = new n.Region(fd, 8192);
      const b = new n.Region(fd, 4096); // a prefix is fine
      new Uint8Array(a.buffer)[100] = 42;
      expect(new Uint8Array(b.buffer)[100]).to.equal(42);
      new Uint8Array(b.buffer)[4095] = 7;
      expect(new Uint8Array(a.buffer)[4095]).to.equal(7);
      a.close();
      expect(new Uint8Array(b.buffer)[100]).to.equal(42);
      b.close();
      n.close(fd);
    });

    it('supports Atomics.compareExchange and Atomics.add on an Int32Array view, seen by another mapping', () => {
      const fd = n.memfdCreate('r', 4096);
      const a = new n.Region(fd, 4096);
      const b = new n.Region(fd, 4096);
      const ia = new Int32Array(a.buffer);
      const ib = new Int32Array(b.buffer);
      expect(Atomics.compareExchange(ia, 3, 0, 17)).to.equal(0);
      expect(Atomics.compareExchange(ia, 3, 0, 99)).to.equal(17);
      expect(Atomics.load(ib, 3)).to.equal(17);
      expect(Atomics.add(ib, 3, 5)).to.equal(17);
      expect(Atomics.load(ia, 3)).to.equal(22);
      a.close();
      b.close();
      n.close(fd);
    });

    it('close() detaches the buffer, is idempotent, and rings on it throw ERR_ZIVM_CLOSED', () => {
      const fx = new Fixture();
      const p = fx.producer();
      const c = fx.consumer();
      const view = new Uint8Array(fx.region.buffer);
      fx.region.close();
      fx.region.close();
      expect(fx.region.buffer.byteLength).to.equal(0);
      expect(view.length).to.equal(0);
      expect(view[0]).to.equal(undefined);
      for (const f of [() => p.write(Buffer.alloc(1)), () => p.writev([Buffer.alloc(1)]), () => p.free(), () => p.head(), () => c.read(1), () => c.available(), () => c.tail()]) {
        expect(codeOf(f).code).to.equal('ERR_ZIVM_CLOSED');
      }
      expect(codeOf(() => fx.producer()).code).to.equal('ERR_ZIVM_CLOSED');
      n.close(fx.fd);
    });

    it('refuses sizes beyond the fd or not positive', () => {
      const fd = n.memfdCreate('r', 4096);
      try {
        let e = codeOf(() => new n.Region(fd, 8192));
        expect(e.name).to.equal('RangeError');
        expect(e.code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => new n.Region(fd, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        e = codeOf(() => new n.Region(1_000_000, 4096));
        expect(e.code).to.equal('EBADF');
        expect(e.err.errno).to.equal(-9);
        expect(e.err.syscall).to.equal('fstat');
        expect(e.err.message).to.equal('fstat EBADF');
      } finally {
        n.close(fd);
      }
    });
  });

  describe('Region at an offset', () => {
    const PG = 4096;
    /** A memfd of `pages` pages, page i filled with (i * 37 + byte) & 0xff. */
    function pagedMemfd(pages: number): number {
      const fd = n.memfdCreate('off', pages * PG);
      const b = Buffer.alloc(pages * PG);
      for (let i = 0; i < b.length; i++) b[i] = ((i >> 12) * 37 + i) & 0xff;
      expect(fs.writeSync(fd, b, 0, b.length, 0)).to.equal(b.length);
      return fd;
    }

    it('a memfd mapped at a page offset sees the bytes from there, and shares them', () => {
      const fd = pagedMemfd(4);
      try {
        const whole = new n.Region(fd, 4 * PG);
        const at2 = new n.Region(fd, PG, 2 * PG);
        const tail = new n.Region(fd, 2 * PG, 2 * PG); // up to the end exactly
        expect(at2.size).to.equal(PG);
        expect(at2.buffer.byteLength).to.equal(PG);
        const w = new Uint8Array(whole.buffer);
        const a = new Uint8Array(at2.buffer);
        expect(Buffer.from(a).equals(Buffer.from(w.subarray(2 * PG, 3 * PG)))).to.equal(true);
        expect(a[0]).to.equal((2 * 37 + 2 * PG) & 0xff);
        expect(new Uint8Array(tail.buffer)[PG + 5]).to.equal((3 * 37 + 3 * PG + 5) & 0xff);
        // writes go both ways, Atomics included
        a[10] = 0xab;
        expect(w[2 * PG + 10]).to.equal(0xab);
        Atomics.store(new Int32Array(whole.buffer), (2 * PG + 64) >> 2, 0x12345678);
        expect(Atomics.load(new Int32Array(at2.buffer), 16)).to.equal(0x12345678);
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, 2 * PG + 10);
        expect(b[0]).to.equal(0xab);
        whole.close();
        at2.close();
        tail.close();
      } finally {
        n.close(fd);
      }
    });

    it('offset 0 and an undefined offset are the old form', () => {
      const fd = pagedMemfd(2);
      try {
        const a = new n.Region(fd, 2 * PG, 0);
        const b = new n.Region(fd, 2 * PG, undefined);
        expect(new Uint8Array(a.buffer)[PG + 1]).to.equal((37 + PG + 1) & 0xff);
        expect(new Uint8Array(b.buffer)[PG + 1]).to.equal((37 + PG + 1) & 0xff);
        a.close();
        b.close();
      } finally {
        n.close(fd);
      }
    });

    it('refuses offsets that are not page aligned, negative, or that run past the fd', () => {
      const fd = pagedMemfd(2);
      try {
        for (const [size, off] of [
          [PG, 1],
          [PG, PG / 2],
          [PG, -PG],
          [PG, 1.5 * PG],
          [PG, 2 * PG], // starts at the end
          [2 * PG, PG], // ends past it
          [PG, 2 ** 53], // beyond safe integers
        ]) {
          const e = codeOf(() => new n.Region(fd, size, off));
          expect(e.name, `size ${size} offset ${off}: ${e.err.message}`).to.equal('RangeError');
          expect(e.code).to.equal('ERR_ZIVM_BAD_ARG');
        }
        expect(codeOf(() => new n.Region(fd, PG, '4096' as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => new n.Region(fd, PG, null as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => new n.Region(fd, PG, NaN)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        n.close(fd);
      }
    });

    it('an empty memfd is still empty (only fds that report no size at all are trusted)', () => {
      const fd = n.memfdCreate('empty', 0);
      try {
        const e = codeOf(() => new n.Region(fd, PG));
        expect(e.code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => new n.Region(fd, PG, PG)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        n.close(fd);
      }
    });

    it('an fd with no size that cannot be mapped fails in mmap, not with a bad mapping', () => {
      const efd = n.eventfd();
      try {
        const e = codeOf(() => new n.Region(efd, PG, PG));
        expect(e.err.syscall).to.equal('mmap');
        expect(e.code).to.equal('ENODEV');
      } finally {
        n.close(efd);
      }
    });
  });

  describe('VFIO calls (without a device: argument checks and the register encoding on a memfd)', () => {
    it('vfioOpen validates the PCI address and says which call failed', () => {
      expect(codeOf(() => n.vfioOpen(3 as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      for (const bad of ['', '00:03.0', '0000:00:03', '0000:00:03.8', '0000:0g:03.0', '../../../0000:00:03.0', '0000:00:03.0/x', '0000:00:03.0\0']) {
        const e = codeOf(() => n.vfioOpen(bad));
        expect(e.code, bad).to.be.oneOf(['ERR_ZIVM_BAD_ARG']);
      }
      const e = codeOf(() => n.vfioOpen('ffff:ff:1f.7'));
      expect(e.code).to.equal('ENOENT');
      expect(e.err.syscall).to.equal('readlink');
      expect(e.err.path).to.equal('/sys/bus/pci/devices/ffff:ff:1f.7/iommu_group');
    });

    it('bar0Notify writes (peer << 16) | vector at +12, bar0Read32 reads a register (on a memfd standing in for the device fd)', () => {
      const fd = n.memfdCreate('bar0', 8192);
      try {
        const base = 4096;
        n.bar0Notify(fd, base, 3, 1);
        const b = Buffer.alloc(16);
        fs.readSync(fd, b, 0, 16, base);
        expect(b.readUInt32LE(12)).to.equal((3 << 16) | 1);
        n.bar0Notify(fd, base, 0xffff, 0xffff);
        expect(n.bar0Read32(fd, base, 12)).to.equal(-1);
        fs.writeSync(fd, Buffer.from([7, 0, 0, 0]), 0, 4, base + 8);
        expect(n.bar0Read32(fd, base, 8)).to.equal(7);
        expect(codeOf(() => n.bar0Notify(fd, base, 0x10000, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.bar0Notify(fd, base, 0, -1)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.bar0Notify(fd, -4, 0, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.bar0Notify(fd, base, '1' as any, 0)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => n.bar0Read32(fd, base, 6)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.bar0Read32(fd, base, 256)).code).to.equal('ERR_ZIVM_BAD_ARG');
        // past the end of a (sealed) memfd: a short read is EIO
        const e = codeOf(() => n.bar0Read32(fd, 8192 - 8, 8));
        expect(e.code).to.equal('EIO');
        expect(e.err.syscall).to.equal('pread');
      } finally {
        n.close(fd);
      }
    });

    it('vfioEnableBusMaster sets Bus Master and Memory in PCI_COMMAND, keeping the other bits', () => {
      const fd = n.memfdCreate('cfg', 4096);
      try {
        fs.writeSync(fd, Buffer.from([0x01, 0x04]), 0, 2, 256 + 4); // I/O space + INTx disable
        expect(n.vfioEnableBusMaster(fd, 256)).to.equal(0x0407);
        const b = Buffer.alloc(2);
        fs.readSync(fd, b, 0, 2, 256 + 4);
        expect(b.readUInt16LE(0)).to.equal(0x0407);
        expect(codeOf(() => n.vfioEnableBusMaster(fd, -1)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.vfioEnableBusMaster(-1, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        n.close(fd);
      }
    });

    it('vfioSetMsix validates the eventfds and reports the ioctl on a non-VFIO fd', () => {
      const fd = n.memfdCreate('notvfio', 4096);
      const efd = n.eventfd();
      try {
        expect(codeOf(() => n.vfioSetMsix(fd, efd as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => n.vfioSetMsix(fd, ['3' as any])).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => n.vfioSetMsix(fd, [-2])).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.vfioSetMsix(fd, [1.5])).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => n.vfioSetMsix(fd, new Array(2049).fill(efd))).code).to.equal('ERR_ZIVM_BAD_ARG');
        const e = codeOf(() => n.vfioSetMsix(fd, [efd, -1]));
        expect(e.code).to.equal('ENOTTY');
        expect(e.err.syscall).to.equal('ioctl');
        expect(e.err.request).to.equal('VFIO_DEVICE_SET_IRQS');
        expect(e.err.errno).to.equal(-25);
      } finally {
        n.close(efd);
        n.close(fd);
      }
    });

    it('vfioClose closes the three fds once and marks them -1', () => {
      const dev = { deviceFd: n.eventfd(), groupFd: n.eventfd(), containerFd: n.eventfd() };
      const fds = [dev.deviceFd, dev.groupFd, dev.containerFd];
      n.vfioClose(dev);
      expect(dev).to.deep.equal({ deviceFd: -1, groupFd: -1, containerFd: -1 });
      for (const fd of fds) expect(codeOf(() => n.fdSize(fd)).code).to.equal('EBADF');
      n.vfioClose(dev); // idempotent
      expect(codeOf(() => n.vfioClose(null as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => n.vfioClose({ deviceFd: '3', groupFd: -1, containerFd: -1 } as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => n.vfioClose({ deviceFd: -2, groupFd: -1, containerFd: -1 })).code).to.equal('ERR_ZIVM_BAD_ARG');
    });
  });

  describe('memfdCreate / fdSize', () => {
    it('creates a memfd of the given size, sealed against shrinking and growing', () => {
      const fd = n.memfdCreate('sealed', 3 * 4096 + 5);
      try {
        expect(n.fdSize(fd)).to.equal(3 * 4096 + 5);
        expect(codeOf(() => fs.ftruncateSync(fd, 0)).code).to.equal('EPERM');
        expect(codeOf(() => fs.ftruncateSync(fd, 1 << 20)).code).to.equal('EPERM');
        expect(n.fdSize(fd)).to.equal(3 * 4096 + 5);
      } finally {
        n.close(fd);
      }
    });

    it('takes sizes above 4 GiB (sparse)', () => {
      const size = 5 * 2 ** 30;
      const fd = n.memfdCreate('big', size);
      try {
        expect(n.fdSize(fd)).to.equal(size);
      } finally {
        n.close(fd);
      }
    });
  });

  describe('argument validation', () => {
    const bad = (fn: () => unknown, name: 'TypeError' | 'RangeError') => {
      const e = codeOf(fn);
      expect(e.name, e.err.message).to.equal(name);
      expect(e.code, e.err.message).to.equal(name === 'TypeError' ? 'ERR_INVALID_ARG_TYPE' : 'ERR_ZIVM_BAD_ARG');
    };
    let fx: Fixture;
    beforeEach(() => (fx = new Fixture()));
    afterEach(() => fx.dispose());

    it('Region: type and range of fd and size', () => {
      bad(() => new n.Region('3' as any, 4096), 'TypeError');
      bad(() => new n.Region(fx.fd, '4096' as any), 'TypeError');
      bad(() => new n.Region(fx.fd, undefined as any), 'TypeError');
      bad(() => new n.Region(-1, 4096), 'RangeError');
      bad(() => new n.Region(fx.fd, 1.5), 'RangeError');
      bad(() => new n.Region(fx.fd, NaN), 'RangeError');
      expect(() => (n.Region as any)(fx.fd, 4096)).to.throw(TypeError);
    });

    it('Ring: region, offsets, capacity, producer', () => {
      const R = n.Ring;
      bad(() => new R({} as any, 0, 4096, 4096, true), 'TypeError');
      bad(() => new R(Buffer.alloc(8) as any, 0, 4096, 4096, true), 'TypeError');
      bad(() => new R(fx.region, '0' as any, 4096, 4096, true), 'TypeError');
      bad(() => new R(fx.region, 0, 4096, 4096, 1 as any), 'TypeError');
      bad(() => new R(fx.region, 0, 4096, 100, true), 'RangeError'); // not a power of two
      bad(() => new R(fx.region, 0, 4096, 32, true), 'RangeError'); // below 64
      bad(() => new R(fx.region, 8, 4096, 64, true), 'RangeError'); // header not 64-aligned
      bad(() => new R(fx.region, 0, 4100, 64, true), 'RangeError'); // data not 8-aligned
      bad(() => new R(fx.region, 0, 4096, 8192, true), 'RangeError'); // data past the end
      bad(() => new R(fx.region, 8192, 4096, 64, true), 'RangeError'); // header past the end
      bad(() => new R(fx.region, 8192 - 128, 4096, 64, true), 'RangeError'); // header straddles the end
      bad(() => new R(fx.region, 0, 128, 64, true), 'RangeError'); // data inside the header
      bad(() => new R(fx.region, 0, 2 ** 60, 64, true), 'RangeError');
    });

    it('Ring methods: chunk types, read size, borrowed methods', () => {
      const p = fx.producer();
      const c = fx.consumer();
      bad(() => p.write('abc' as any), 'TypeError');
      bad(() => p.write(new Uint16Array(4) as any), 'TypeError');
      bad(() => p.write(new ArrayBuffer(4) as any), 'TypeError');
      bad(() => p.writev('abc' as any), 'TypeError');
      bad(() => p.writev([Buffer.from('a'), 1 as any]), 'TypeError');
      expect(p.head()).to.equal(0); // nothing was written by the failed writev
      bad(() => c.read('1' as any), 'TypeError');
      bad(() => c.read(0), 'RangeError');
      bad(() => c.read(-5), 'RangeError');
      const e = codeOf(() => (p.write as any).call(fx.region, Buffer.alloc(1)));
      expect(e.name).to.equal('TypeError');
      expect(() => (p.write as any).call({}, Buffer.alloc(1))).to.throw();
      expect(() => (fx.region.close as any).call(p)).to.throw(TypeError);
    });

    it('functions: fds, numbers, strings, callbacks', () => {
      bad(() => n.notify('1' as any), 'TypeError');
      bad(() => n.drain(-1), 'RangeError');
      bad(() => n.fdSize(2 ** 31), 'RangeError');
      bad(() => n.memfdCreate(5 as any, 10), 'TypeError');
      bad(() => n.memfdCreate('a\0b', 10), 'RangeError');
      bad(() => n.memfdCreate('a', -1), 'RangeError');
      bad(() => n.sendMsg(0, 1.5, -1), 'RangeError');
      bad(() => n.sendMsg(0, 1, -2), 'RangeError');
      bad(() => n.sendMsg(0, 2 ** 53, -1), 'RangeError');
      bad(() => n.waitReadable(0, 'x' as any), 'TypeError');
      bad(() => n.unixListen(123 as any, 1), 'TypeError');
      bad(() => n.unixListen('/tmp/' + 'x'.repeat(200), 1), 'RangeError');
      bad(() => n.unixConnect(''), 'RangeError');
      bad(() => n.close(null as any), 'TypeError');
      bad(() => n.tryLock(1.25), 'RangeError');
      bad(() => n.peerCred({} as any), 'TypeError');
      const efd = n.eventfd();
      try {
        bad(() => new n.Poller(efd, 'cb' as any, true), 'TypeError');
        bad(() => new n.Poller(efd, () => {}, 1 as any), 'TypeError');
        bad(() => new n.Poller('x' as any, () => {}, true), 'TypeError');
      } finally {
        n.close(efd);
      }
    });
  });

  describe('eventfd doorbell', () => {
    it('notify adds 1 and drain returns the sum, then 0', () => {
      const fd = n.eventfd();
      try {
        expect(n.drain(fd)).to.equal(0);
        n.notify(fd);
        n.notify(fd);
        n.notify(fd);
        expect(n.drain(fd)).to.equal(3);
        expect(n.drain(fd)).to.equal(0);
      } finally {
        n.close(fd);
      }
    });

    it('notify on a bad fd throws a Node-style error', () => {
      const e = codeOf(() => n.notify(1_000_000));
      expect(e.code).to.equal('EBADF');
      expect(e.err.syscall).to.equal('write');
      expect(e.err.errno).to.equal(-9);
    });
  });

  describe('Poller', () => {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

    it('calls back on notify, having drained the eventfd first', async () => {
      const fd = n.eventfd();
      const seen: number[] = [];
      let left = -1;
      const poller = new n.Poller(
        fd,
        (status) => {
          seen.push(status);
          left = n.drain(fd);
        },
        true,
      );
      try {
        expect(poller.hasRef()).to.equal(true);
        n.notify(fd);
        n.notify(fd);
        for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(5);
        await sleep(30);
        expect(seen).to.deep.equal([0]);
        expect(left).to.equal(0);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('without drainEventfd leaves the count to the callback', async () => {
      const fd = n.eventfd();
      const sums: number[] = [];
      const poller = new n.Poller(fd, () => sums.push(n.drain(fd)), false);
      try {
        n.notify(fd);
        n.notify(fd);
        for (let i = 0; i < 100 && sums.length === 0; i++) await sleep(5);
        expect(sums).to.deep.equal([2]);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('runs process.nextTick and promise jobs right after the callback', async () => {
      const fd = n.eventfd();
      const order: string[] = [];
      let done!: () => void;
      const finished = new Promise<void>((r) => (done = r));
      const poller = new n.Poller(
        fd,
        () => {
          order.push('cb');
          setImmediate(() => {
            order.push('immediate');
            done();
          });
          process.nextTick(() => order.push('tick'));
          void Promise.resolve().then(() => order.push('micro'));
        },
        true,
      );
      try {
        n.notify(fd);
        await finished;
        expect(order).to.deep.equal(['cb', 'tick', 'micro', 'immediate']);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('stop() pauses callbacks and start() resumes them', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller = new n.Poller(fd, () => calls++, true);
      try {
        poller.stop();
        poller.stop();
        n.notify(fd);
        await sleep(50);
        expect(calls).to.equal(0);
        poller.start();
        for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
        expect(calls).to.equal(1);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('close() is idempotent; afterwards start() throws ERR_ZIVM_CLOSED and nothing fires', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller = new n.Poller(fd, () => calls++, true);
      poller.close();
      poller.close();
      expect(poller.hasRef()).to.equal(false);
      expect(codeOf(() => poller.start()).code).to.equal('ERR_ZIVM_CLOSED');
      poller.stop();
      poller.ref();
      poller.unref();
      n.notify(fd);
      await sleep(30);
      expect(calls).to.equal(0);
      n.close(fd);
    });

    it('may be closed from inside its own callback', async () => {
      const fd = n.eventfd();
      let calls = 0;
      const poller: { close(): void } = new n.Poller(
        fd,
        () => {
          calls++;
          poller.close();
        },
        false, // not drained: a still-open handle would fire again
      );
      n.notify(fd);
      for (let i = 0; i < 100 && calls === 0; i++) await sleep(5);
      await sleep(30);
      expect(calls).to.equal(1);
      n.close(fd);
    });

    it('ref()/unref()/hasRef() follow the libuv handle', () => {
      const fd = n.eventfd();
      const poller = new n.Poller(fd, () => {}, true);
      try {
        expect(poller.hasRef()).to.equal(true);
        poller.unref();
        expect(poller.hasRef()).to.equal(false);
        poller.ref();
        expect(poller.hasRef()).to.equal(true);
      } finally {
        poller.close();
        n.close(fd);
      }
    });

    it('refuses an fd libuv cannot poll (a regular file)', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const fd = fs.openSync(path.join(dir, 'f'), 'w');
      try {
        const e = codeOf(() => new n.Poller(fd, () => {}, false));
        expect(e.code).to.equal('EPERM');
        expect(e.err.syscall).to.equal('uv_poll_init');
      } finally {
        fs.closeSync(fd);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    function runChild(code: string, waitMs: number): Promise<{ exited: boolean; status: number | null; stdout: string; stderr: string }> {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, NATIVE_JS }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        let exited = false;
        const timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, waitMs);
        child.on('error', reject);
        child.on('exit', (status, signal) => {
          exited = signal === null;
          clearTimeout(timer);
          resolve({ exited, status, stdout, stderr });
        });
      });
    }

    const prelude = `const n = require(process.env.NATIVE_JS).native(); const fd = n.eventfd();`;

    it('an unref()ed poller does not keep the process alive', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.unref(); console.log('armed');`, 10000);
      expect(r.stderr).to.equal('');
      expect(r.stdout).to.equal('armed\n');
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('a ref()ed poller keeps the process alive', async () => {
      const started = Date.now();
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); console.log('armed');`, 1000);
      expect(r.stdout).to.equal('armed\n');
      expect(r.exited).to.equal(false); // killed by us
      expect(Date.now() - started).to.be.at.least(900);
    });

    it('a closed poller lets the process exit', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => {}, true); p.close();`, 10000);
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('an exception thrown by the callback becomes an uncaughtException', async () => {
      const r = await runChild(
        `${prelude} process.on('uncaughtException', (e) => { console.log('caught ' + e.message); p.close(); });
         const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`,
        10000,
      );
      expect(r.stdout).to.equal('caught boom\n');
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(0);
    });

    it('an unhandled exception from the callback ends the process like any callback error', async () => {
      const r = await runChild(`${prelude} const p = new n.Poller(fd, () => { throw new Error('boom'); }, true); n.notify(fd);`, 10000);
      expect(r.exited).to.equal(true);
      expect(r.status).to.equal(1);
      expect(r.stderr).to.contain('boom');
    });
  });

  describe('unix sockets and fd passing', () => {
    let dir: string;
    let sockPath: string;
    const open: number[] = [];
    const track = (fd: number) => {
      open.push(fd);
      return fd;
    };
    const closeFd = (fd: number) => {
      const i = open.indexOf(fd);
      if (i >= 0) open.splice(i, 1);
      n.close(fd);
    };
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      sockPath = path.join(dir, 'ctl.sock');
    });
    afterEach(() => {
      while (open.length) n.close(open.pop()!);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    function pair(): { lfd: number; cfd: number; sfd: number } {
      const lfd = track(n.unixListen(sockPath, 16));
      expect(n.unixAccept(lfd)).to.equal(-1);
      const cfd = track(n.unixConnect(sockPath));
      const sfd = track(n.unixAccept(lfd));
      expect(sfd).to.be.at.least(0);
      return { lfd, cfd, sfd };
    }

    it('listens, connects and accepts; the accepted socket is non-blocking', () => {
      const { sfd, cfd } = pair();
      expect(n.recvMsg(sfd)).to.equal(null);
      expect(n.recvMsg(cfd)).to.equal(null);
    });

    it('peerCred reports this process', () => {
      const { sfd, cfd } = pair();
      const cred = n.peerCred(sfd);
      expect(cred.pid).to.equal(process.pid);
      expect(cred.uid).to.equal(process.getuid!());
      expect(cred.gid).to.equal(process.getgid!());
      expect(n.peerCred(cfd).pid).to.equal(process.pid);
    });

    it('sendMsg/recvMsg carry 64-bit little-endian values without an fd', () => {
      const { sfd, cfd } = pair();
      n.sendMsg(cfd, 42, -1);
      n.sendMsg(cfd, -1, -1);
      n.sendMsg(cfd, 2 ** 40 + 5, -1);
      expect(n.recvMsg(sfd)).to.deep.equal([42, -1]);
      expect(n.recvMsg(sfd)).to.deep.equal([-1, -1]);
      expect(n.recvMsg(sfd)).to.deep.equal([2 ** 40 + 5, -1]);
      expect(n.recvMsg(sfd)).to.equal(null);
      // the wire format: 8 bytes little-endian
      n.sendMsg(cfd, 0x0102, -1);
      const raw = Buffer.alloc(16);
      expect(fs.readSync(sfd, raw, 0, 16, null)).to.equal(8);
      expect([...raw.subarray(0, 8)]).to.deep.equal([2, 1, 0, 0, 0, 0, 0, 0]);
    });

    it('passes a memfd with SCM_RIGHTS: a new fd number for the same memory', () => {
      const { sfd, cfd } = pair();
      const mfd = track(n.memfdCreate('passed', 12345));
      n.sendMsg(cfd, 7, mfd);
      const got = n.recvMsg(sfd);
      expect(got).to.be.an('array');
      const [value, rfd] = got as [number, number];
      track(rfd);
      expect(value).to.equal(7);
      expect(rfd).to.be.at.least(0);
      expect(rfd).to.not.equal(mfd);
      expect(n.fdSize(rfd)).to.equal(12345);
      const a = new n.Region(mfd, 4096);
      const b = new n.Region(rfd, 4096);
      new Uint8Array(a.buffer)[9] = 99;
      expect(new Uint8Array(b.buffer)[9]).to.equal(99);
      a.close();
      b.close();
      // message without fd afterwards comes alone
      n.sendMsg(cfd, 8, -1);
      expect(n.recvMsg(sfd)).to.deep.equal([8, -1]);
    });

    it('completes a message the sender wrote in two pieces', () => {
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      fs.writeSync(cfd, Buffer.from([0, 0, 0, 0, 0]));
      expect(n.recvMsg(sfd)).to.deep.equal([5, -1]);
    });

    it('gives up on a message cut short after 1 s', function () {
      this.timeout(10000);
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      const started = Date.now();
      const e = codeOf(() => n.recvMsg(sfd));
      expect(e.code).to.equal('ETIMEDOUT');
      expect(Date.now() - started).to.be.within(900, 3000);
    });

    it('recvMsg returns false once the peer closed', () => {
      const { sfd, cfd } = pair();
      n.sendMsg(cfd, 1, -1);
      closeFd(cfd);
      expect(n.recvMsg(sfd)).to.deep.equal([1, -1]);
      expect(n.recvMsg(sfd)).to.equal(false);
      expect(n.recvMsg(sfd)).to.equal(false);
    });

    it('sendMsg to a closed peer throws EPIPE (no SIGPIPE)', () => {
      const { sfd, cfd } = pair();
      closeFd(sfd);
      const e = codeOf(() => n.sendMsg(cfd, 1, -1));
      expect(e.code).to.equal('EPIPE');
      expect(e.err.syscall).to.equal('sendmsg');
    });

    it('waitReadable times out when nothing is waiting and returns true when a message is', () => {
      const { sfd, cfd } = pair();
      expect(n.waitReadable(sfd, 0)).to.equal(false);
      const started = Date.now();
      expect(n.waitReadable(sfd, 50)).to.equal(false);
      expect(Date.now() - started).to.be.at.least(40);
      n.sendMsg(cfd, 3, -1);
      expect(n.waitReadable(sfd, 1000)).to.equal(true);
      expect(n.recvMsg(sfd)).to.deep.equal([3, -1]);
    });

    it('connect to a missing path and a second listen on the same path fail with Node-style errors', () => {
      let e = codeOf(() => n.unixConnect(sockPath));
      expect(e.code).to.equal('ENOENT');
      expect(e.err.errno).to.equal(-2);
      expect(e.err.syscall).to.equal('connect');
      expect(e.err.path).to.equal(sockPath);
      track(n.unixListen(sockPath, 4));
      e = codeOf(() => n.unixListen(sockPath, 4));
      expect(e.code).to.equal('EADDRINUSE');
      expect(e.err.syscall).to.equal('bind');
    });

    it('connect to a socket nobody listens on fails with ECONNREFUSED', () => {
      const lfd = n.unixListen(sockPath, 4);
      n.close(lfd); // the socket file stays
      expect(codeOf(() => n.unixConnect(sockPath)).code).to.equal('ECONNREFUSED');
    });
  });

  describe('environment teardown', () => {
    it('a worker that exits with an open region, ring and poller unmaps and closes them without crashing', async () => {
      const code = `
        const n = require(${JSON.stringify(NATIVE_JS)}).native();
        const fd = n.memfdCreate('w', 65536);
        const r = new n.Region(fd, 65536);
        const ring = new n.Ring(r, 0, 4096, 4096, true);
        ring.write(Buffer.from('x'));
        const e = n.eventfd();
        const p = new n.Poller(e, () => {}, true);
        n.notify(e);
        setTimeout(() => { n.close(fd); n.close(e); process.exit(0); }, 20);`;
      const status = await new Promise<number>((resolve, reject) => {
        const w = new Worker(code, { eval: true });
        w.on('error', reject);
        w.on('exit', resolve);
      });
      expect(status).to.equal(0);
    });

    it('terminating a worker with a ref()ed poller works', async () => {
      const code = `
        const n = require(${JSON.stringify(NATIVE_JS)}).native();
        const e = n.eventfd();
        const p = new n.Poller(e, () => {}, true);
        require('node:worker_threads').parentPort.postMessage(e);`;
      const w = new Worker(code, { eval: true });
      const efd = await new Promise<number>((resolve) => w.once('message', resolve));
      expect(await w.terminate()).to.equal(1);
      n.close(efd);
    });
  });

  describe('tryLock / close', () => {
    it('tryLock is per open file description: true, false on a second open, true after the first closes', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const file = path.join(dir, 'lock');
      const fd1 = fs.openSync(file, 'w');
      const fd2 = fs.openSync(file, 'r');
      try {
        expect(n.tryLock(fd1)).to.equal(true);
        expect(n.tryLock(fd1)).to.equal(true); // already ours
        expect(n.tryLock(fd2)).to.equal(false);
        n.close(fd1);
        expect(n.tryLock(fd2)).to.equal(true);
      } finally {
        n.close(fd2);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('close of a bad fd throws EBADF', () => {
      const e = codeOf(() => n.close(1_000_000));
      expect(e.code).to.equal('EBADF');
      expect(e.err.errno).to.equal(-9);
      expect(e.err.syscall).to.equal('close');
      expect(e.err.message).to.equal('close EBADF');
    });
  });
});

// The ring header is what layout.ts says it is.
describe('native ring layout', () => {
  it('uses a 256-byte header with head at 0 and tail at 128', () => {
    expect(RING_HEADER_SIZE).to.equal(256);
    const fx = new Fixture();
    try {
      const p = fx.producer();
      const c = fx.consumer();
      p.write(Buffer.alloc(10));
      c.read(4);
      const dv = new DataView(fx.region.buffer);
      expect(dv.getBigUint64(HDR + RING_HEAD, true)).to.equal(10n);
      expect(dv.getBigUint64(HDR + RING_TAIL, true)).to.equal(4n);
    } finally {
      fx.dispose();
    }
  });
});
