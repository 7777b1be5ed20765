/** native/ring.cc: the single-producer single-consumer byte ring over a region (and its header, as layout.ts has it). */
import { expect } from 'chai';
import { RING_HEAD, RING_HEADER_SIZE, RING_TAIL } from '../../src/shm/layout';
import { xorshift, streamBytes, expectStream, codeOf, Fixture, HDR, DATA, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

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
