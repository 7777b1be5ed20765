/** native/ring.cc: the single-producer single-consumer byte ring over a region (and its header, as layout.ts has it). */
import { expect } from 'chai';
import { RING_HEAD, RING_HEADER_SIZE, RING_TAIL } from '../../src/shm/layout';
import { xorshift, streamBytes, expectStream, codeOf, Fixture, HDR, DATA, noFdLeft, addon } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('Ring', () => {
    let fx: Fixture | undefined;
    afterEach(() => {
      fx?.dispose();
      fx = undefined;
    });

    it('resync() takes up the positions a new connection of the slot left in the header, and refuses a corrupt one', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 1000));
      expectStream(item.read(600)!, 0);
      // The slot's next connection: its header says 5000 bytes went through, 4000 of them read.
      const dv = new DataView(fx.region.buffer);
      dv.setBigUint64(HDR + RING_HEAD, 5000n, true);
      dv.setBigUint64(HDR + RING_TAIL, 4000n, true);
      part.resync();
      item.resync();
      expect([part.head(), part.tail(), part.free()]).to.deep.equal([5000, 4000, 4096 - 1000]);
      expect([item.head(), item.tail(), item.available()]).to.deep.equal([5000, 4000, 1000]);
      // What the header says is unread is read (whatever it is), then the stream goes on from there, across the end of the data area.
      expect(item.read(4096)!.length).to.equal(1000);
      expect(part.write(streamBytes(5000, 3000))).to.equal(3000);
      expectStream(item.read(4096)!, 5000);
      expect([part.head(), item.tail()]).to.deep.equal([8000, 8000]);
      dv.setBigUint64(HDR + RING_HEAD, 9000n, true);
      dv.setBigUint64(HDR + RING_TAIL, 100n, true);
      for (const end of [part, item]) {
        const err = codeOf(() => end.resync());
        expect(err.code).to.equal('ERR_ZIVM_CORRUPT');
        expect(err.err.message).to.equal('ring is corrupt: head 9000 and tail 100 are more than 4096 apart');
      }
    });

    it('reads null from an empty ring', () => {
      fx = new Fixture();
      const item = fx.consumer();
      expect(item.read(100)).to.equal(null);
      expect(item.available()).to.equal(0);
      expect(fx.producer().free()).to.equal(4096);
    });

    it('writes 0 bytes into a full ring', () => {
      fx = new Fixture();
      const part = fx.producer();
      expect(part.write(streamBytes(0, 5000))).to.equal(4096);
      expect(part.free()).to.equal(0);
      expect(part.write(streamBytes(4096, 10))).to.equal(0);
      expect(part.writev([streamBytes(4096, 10)])).to.equal(0);
      expect(part.head()).to.equal(4096);
      expect(part.tail()).to.equal(0);
    });

    it('returns at most `max` bytes, in order, and releases them', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 300));
      const first = item.read(100)!;
      expect(Buffer.isBuffer(first)).to.equal(true);
      expect(first.length).to.equal(100);
      expectStream(first, 0);
      expect(part.free()).to.equal(4096 - 200);
      const buf = item.read(1000)!;
      expect(buf.length).to.equal(200);
      expectStream(buf, 100);
      expect(item.read(1)).to.equal(null);
      expect(item.head()).to.equal(300);
      expect(item.tail()).to.equal(300);
    });

    it('fills exactly up to the wrap point, then continues at the start of the data area', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      expect(part.write(streamBytes(0, 4096))).to.equal(4096);
      expectStream(item.read(4096)!, 0);
      // position is now exactly at the wrap point (offset 0 of the next lap)
      expect(part.write(streamBytes(4096, 4096))).to.equal(4096);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      expectStream(raw, 4096);
      expectStream(item.read(10000)!, 4096);
      expect(item.tail()).to.equal(8192);
    });

    it('writes that end exactly at the end of the data area do not spill', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 4000));
      item.read(4000);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      raw[0] = 0xab;
      expect(part.write(streamBytes(4000, 96))).to.equal(96);
      expect(raw[0]).to.equal(0xab);
      expectStream(item.read(96)!, 4000);
    });

    it('splits a write that crosses the wrap between the end and the start of the data area', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 4086));
      item.read(4086);
      expect(part.write(streamBytes(4086, 30, 7))).to.equal(30);
      const raw = new Uint8Array(fx.region.buffer, DATA, 4096);
      expectStream(raw.subarray(4086, 4096), 4086);
      expectStream(raw.subarray(0, 20), 4096);
      // a read across the wrap joins both parts
      expectStream(item.read(30)!, 4086);
    });

    it('handles positions far beyond 2^32 (64-bit counters)', () => {
      const start = 2 ** 40 - 10;
      fx = new Fixture(4096, start);
      const part = fx.producer();
      const item = fx.consumer();
      expect(part.head()).to.equal(start);
      expect(part.write(streamBytes(0, 100))).to.equal(100);
      expectStream(item.read(100)!, 0);
      expect(item.tail()).to.equal(start + 100);
    });

    it('respects byteOffset and byteLength of the chunk', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      const big = Buffer.from('xxxxhello worldyyyy');
      expect(part.write(big.subarray(4, 15))).to.equal(11);
      expect(item.read(100)!.toString()).to.equal('hello world');
    });

    it('writev copies whole chunks in order and the first one that does not fit partly, in one publish', () => {
      fx = new Fixture(64);
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 14));
      // free: 50. chunks 20 + 20 + 20 + 5: the third fits 10 bytes, the fourth none
      const n2 = part.writev([streamBytes(14, 20), streamBytes(34, 20, 3), streamBytes(54, 20), streamBytes(74, 5)]);
      expect(n2).to.equal(50);
      expect(part.free()).to.equal(0);
      expect(item.available()).to.equal(64);
      expectStream(item.read(64)!, 0);
      expect(part.writev([])).to.equal(0);
    });

    it('property: random interleavings of writes and reads keep every byte in order', function () {
      this.timeout(60000);
      for (const [seed, start] of [
        [0x2545f491, 0],
        [0x9e3779b9, 2 ** 33 - 1000],
      ]) {
        const rnd = xorshift(seed);
        const cap = 4096;
        const field = new Fixture(cap, start);
        try {
          const part = field.producer();
          const item = field.consumer();
          let written = 0;
          let read = 0;
          for (let op = 0; op < 4000; op++) {
            const choice = rnd() % 6;
            const size = 1 + (rnd() % (cap * 2));
            if (choice === 0) {
              const expectN = Math.min(size, cap - (written - read));
              expect(part.write(streamBytes(written, size, rnd() % 5))).to.equal(expectN);
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
              expect(part.writev(parts)).to.equal(expectN);
              written += expectN;
            } else if (choice === 2) {
              const got = item.read(size);
              const expectN = Math.min(size, written - read);
              if (expectN === 0) {
                expect(got).to.equal(null);
              } else {
                expect(got!.length).to.equal(expectN);
                expectStream(got!, read);
                read += expectN;
              }
            } else if (choice === 5) {
              // peek, then release part of it: what waits up to the end of the data area, in place; only what was released is gone.
              const waiting = written - read;
              const view = item.peek(size);
              const expectN = Math.min(size, waiting, cap - ((start + read) % cap));
              if (expectN === 0) {
                expect(view).to.equal(null);
              } else {
                expect(view!.length).to.equal(expectN);
                expectStream(view!, read);
                expect(item.available()).to.equal(waiting);
                const take = rnd() % (expectN + 1);
                item.release(take);
                read += take;
              }
            } else if (choice === 4) {
              // readSmall, at an offset of a pool: all of what waits if it fits under the cap, else nothing.
              const pool = Buffer.alloc(size + 32, 0xee);
              const offset = rnd() % 32;
              const capOf = 1 + (rnd() % size);
              const waiting = written - read;
              const got = item.readSmall(pool, offset, capOf);
              if (waiting > capOf) {
                expect(got).to.equal(-waiting);
                expect(pool.every((byte) => byte === 0xee)).to.equal(true);
              } else {
                expect(got).to.equal(waiting);
                expectStream(pool.subarray(offset, offset + waiting), read);
                expect(pool.subarray(0, offset).every((byte) => byte === 0xee)).to.equal(true);
                expect(pool.subarray(offset + waiting).every((byte) => byte === 0xee)).to.equal(true);
                read += waiting;
              }
            } else {
              // readInto, into a view somewhere inside a larger buffer: nothing outside it is touched.
              const outer = Buffer.alloc(size + 32, 0xee);
              const expectN = Math.min(size, written - read);
              expect(item.readInto(outer.subarray(16, 16 + size))).to.equal(expectN);
              expectStream(outer.subarray(16, 16 + expectN), read);
              expect(outer.subarray(0, 16).every((byte) => byte === 0xee)).to.equal(true);
              expect(outer.subarray(16 + expectN).every((byte) => byte === 0xee)).to.equal(true);
              read += expectN;
            }
            const used = part.head() - part.tail();
            expect(used).to.be.at.least(0);
            expect(used).to.be.at.most(cap);
            expect(item.available()).to.equal(written - read);
            expect(part.free()).to.equal(cap - (written - read));
            expect(part.head()).to.equal(start + written);
            expect(item.tail()).to.equal(start + read);
          }
          expect(written).to.be.greaterThan(cap * 100);
        } finally {
          field.dispose();
        }
      }
    });

    it('peek hands over what waits in place, up to `max` and the end of the data area, and releases nothing; release lets go of at most that', () => {
      fx = new Fixture(4096, 4000);
      const part = fx.producer();
      const item = fx.consumer();
      expect(item.peek(100)).to.equal(null);
      expect(part.write(streamBytes(0, 300))).to.equal(300);
      // 96 bytes to the end of the data area, the rest at its start.
      const first = item.peek(1000)!;
      expect(Buffer.isBuffer(first)).to.equal(true);
      expect(first.length).to.equal(96);
      expectStream(first, 0);
      expect(first.buffer.byteLength).to.equal(96); // a view of its own bytes, no more of the region
      expect(item.peek(10)!.length).to.equal(10);
      expect(item.available()).to.equal(300);
      expect(part.free()).to.equal(4096 - 300);
      // A view is the ring: what the producer writes there shows through (a hostile peer can do that at any time).
      const view = item.peek(96)!;
      new Uint8Array(fx.region.buffer)[DATA + (4000 % 4096)] = 0xab;
      expect(view[0]).to.equal(0xab);
      expect(codeOf(() => item.release(97)).err).to.be.instanceOf(RangeError);
      item.release(50);
      expect(item.tail()).to.equal(4050);
      expect(part.free()).to.equal(4096 - 250);
      // Released once: a second release of the same peek lets go of nothing more.
      expect(codeOf(() => item.release(1)).err).to.be.instanceOf(RangeError);
      item.release(0);
      const rest = item.peek(4096)!;
      expect(rest.length).to.equal(46);
      expectStream(rest, 50);
      // A read in between: the peek's count is void.
      expect(item.read(46)!.length).to.equal(46);
      expect(codeOf(() => item.release(46)).err).to.be.instanceOf(RangeError);
      const wrapped = item.peek(4096)!;
      expect(wrapped.length).to.equal(204);
      expectStream(wrapped, 96);
      item.release(204);
      expect(item.peek(1)).to.equal(null);
      expect([item.tail(), part.free()]).to.deep.equal([4300, 4096]);
    });

    it('peek refuses the producer end, a `max` below 1 and a corrupt head; release without a peek lets go of nothing', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      expect(codeOf(() => part.peek(10)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => part.release(0)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => item.peek(0)).err).to.be.instanceOf(RangeError);
      part.write(streamBytes(0, 10));
      expect(codeOf(() => item.release(1)).err).to.be.instanceOf(RangeError);
      expect(item.peek(10)!.length).to.equal(10);
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 0xffff_ffff_0000n, true);
      expect(codeOf(() => item.peek(10)).code).to.equal('ERR_ZIVM_CORRUPT');
      // The failed peek voided the last one.
      expect(codeOf(() => item.release(10)).err).to.be.instanceOf(RangeError);
      expect(item.tail()).to.equal(0);
    });

    it('consumer read throws ERR_ZIVM_CORRUPT when the shared head is more than capacity ahead', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 10));
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 0xffff_ffff_0000n, true);
      expect(codeOf(() => item.read(10)).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => item.available()).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('readInto copies at most the length of its target, in order, releases it, and returns 0 when empty', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      expect(item.readInto(Buffer.alloc(10))).to.equal(0);
      part.write(streamBytes(0, 300));
      const first = Buffer.alloc(100);
      expect(item.readInto(first)).to.equal(100);
      expectStream(first, 0);
      expect(part.free()).to.equal(4096 - 200);
      const rest = Buffer.alloc(1000);
      expect(item.readInto(rest)).to.equal(200);
      expectStream(rest.subarray(0, 200), 100);
      expect(item.readInto(Buffer.alloc(0))).to.equal(0);
      expect(item.tail()).to.equal(300);
    });

    it('readInto refuses a target that is not a Uint8Array, the producer end, and a corrupt head', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 10));
      expect(codeOf(() => item.readInto(new Uint16Array(4) as unknown as Uint8Array)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => item.readInto('x' as unknown as Uint8Array)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => part.readInto(Buffer.alloc(4))).code).to.equal('ERR_ZIVM_BAD_ARG');
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 0xffff_ffff_0000n, true);
      expect(codeOf(() => item.readInto(Buffer.alloc(4))).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('refuses a receiver that is not a ring it made: another class of the addon, a look-alike, a ring whose constructor failed', () => {
      fx = new Fixture();
      const part = fx.producer();
      const proto = Object.getPrototypeOf(part) as Record<string, (...args: unknown[]) => unknown>;
      const failed = Object.create(proto) as object;
      let half: object | undefined;
      try {
        half = new addon.Ring(fx.region, HDR, DATA, 3000, true); // not a power of two
      } catch {
        // expected; the object made before the check is not reachable this way
      }
      expect(half).to.equal(undefined);
      const lookAlike = Object.setPrototypeOf({ capacity: 4096 }, proto) as object;
      for (const [what, receiver] of [
        ['a Region', fx.region],
        ['a look-alike', lookAlike],
        ['an object of its prototype', failed],
        ['an object', {}],
        ['a number', 5],
        ['undefined', undefined],
      ] as const) {
        for (const [name, args] of [
          ['write', [Buffer.alloc(4)]],
          ['writev', [[Buffer.alloc(4)]]],
          ['free', []],
          ['available', []],
          ['read', [4]],
          ['readInto', [Buffer.alloc(4)]],
          ['readSmall', [Buffer.alloc(8), 0, 4]],
          ['head', []],
          ['tail', []],
          ['resync', []],
        ] as const) {
          const err = codeOf(() => proto[name].apply(receiver, args as unknown as unknown[]));
          expect(err.err, `${name} on ${what}`).to.be.instanceOf(TypeError);
        }
      }
      expect(part.write(Buffer.alloc(4)), 'the real one still works').to.equal(4);
    });

    it('readSmall reads all that waits when it fits under the cap, else nothing (minus the count waiting); 0 when empty', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      const pool = Buffer.alloc(1024, 0xee);
      expect(item.readSmall(pool, 0, 100)).to.equal(0);
      part.write(streamBytes(0, 300));
      expect(item.readSmall(pool, 8, 100)).to.equal(-300);
      expect(item.tail()).to.equal(0);
      expect(item.readSmall(pool, 8, 300)).to.equal(300);
      expectStream(pool.subarray(8, 308), 0);
      expect(pool[7]).to.equal(0xee);
      expect(pool[308]).to.equal(0xee);
      expect(part.free()).to.equal(4096);
      expect(item.tail()).to.equal(300);
    });

    it('readSmall refuses a pool that is not a Uint8Array, an offset or cap outside it, the producer end, and a corrupt head', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 10));
      const pool = Buffer.alloc(64);
      expect(codeOf(() => item.readSmall(new Uint16Array(4) as unknown as Uint8Array, 0, 4)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => item.readSmall(pool, 65, 1)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => item.readSmall(pool, 60, 5)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => item.readSmall(pool, 0, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => item.readSmall(pool, -1, 4)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => part.readSmall(pool, 0, 4)).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(item.tail(), 'nothing read by a refused call').to.equal(0);
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 0xffff_ffff_0000n, true);
      expect(codeOf(() => item.readSmall(pool, 0, 64)).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('consumer read throws ERR_ZIVM_CORRUPT when the shared head went backwards', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      part.write(streamBytes(0, 100));
      item.read(100);
      new DataView(fx.region.buffer).setBigUint64(HDR + RING_HEAD, 50n, true);
      expect(codeOf(() => item.read(10)).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('producer throws ERR_ZIVM_CORRUPT when the shared tail is corrupt, wherever it looks at it: free(), a write that needs more room than last seen', () => {
      fx = new Fixture();
      const part = fx.producer();
      part.write(streamBytes(0, 10));
      const dv = new DataView(fx.region.buffer);
      dv.setBigUint64(HDR + RING_TAIL, 0xdead_beef_dead_beefn, true);
      // The room last seen (4086 bytes) takes this write without a look at the tail.
      expect(part.write(streamBytes(10, 1))).to.equal(1);
      expect(codeOf(() => part.write(streamBytes(11, 4090))).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => part.writev([streamBytes(11, 2000), streamBytes(2011, 2090)])).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => part.free()).code).to.equal('ERR_ZIVM_CORRUPT');
      // a tail ahead of the head is corrupt as well
      dv.setBigUint64(HDR + RING_TAIL, 12n, true);
      expect(codeOf(() => part.free()).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => part.write(streamBytes(11, 4090))).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(part.head(), 'nothing written by a refused call').to.equal(11);
    });

    it('producer: a write that fits the room as last seen does not look at the tail; one that does not looks again and gets all the room there is', () => {
      fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      expect(part.write(streamBytes(0, 4000))).to.equal(4000);
      expect(item.read(4000)!.length).to.equal(4000);
      // The consumer released it all: 96 bytes of room as last seen, 4096 in truth.
      expect(part.write(streamBytes(4000, 50))).to.equal(50);
      expect(part.writev([streamBytes(4050, 1000), streamBytes(5050, 3000)])).to.equal(4000);
      expect(part.free()).to.equal(46);
      expect(part.write(streamBytes(8050, 100))).to.equal(46);
      expectStream(item.read(4096)!, 4000);
    });

    it('refuses to open an end on a header whose positions are inconsistent', () => {
      const field = (fx = new Fixture());
      new DataView(field.region.buffer).setBigUint64(HDR + RING_HEAD, 5000n, true);
      expect(codeOf(() => field.producer()).code).to.equal('ERR_ZIVM_CORRUPT');
      expect(codeOf(() => field.consumer()).code).to.equal('ERR_ZIVM_CORRUPT');
    });

    it('refuses calls meant for the other end with ERR_ZIVM_BAD_ARG', () => {
      const field = (fx = new Fixture());
      expect(codeOf(() => field.consumer().write(Buffer.alloc(1))).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => field.consumer().writev([Buffer.alloc(1)])).code).to.equal('ERR_ZIVM_BAD_ARG');
      expect(codeOf(() => field.producer().read(1)).code).to.equal('ERR_ZIVM_BAD_ARG');
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
      const part = fx.producer();
      const item = fx.consumer();
      part.write(Buffer.alloc(10));
      item.read(4);
      const dv = new DataView(fx.region.buffer);
      expect(dv.getBigUint64(HDR + RING_HEAD, true)).to.equal(10n);
      expect(dv.getBigUint64(HDR + RING_TAIL, true)).to.equal(4n);
    } finally {
      fx.dispose();
    }
  });
});
