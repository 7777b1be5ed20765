/** native/region.cc: a shared mapping of an fd as an ArrayBuffer, whole or at an offset. */
import { expect } from 'chai';
import fs from 'node:fs';
import { n, codeOf, Fixture, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

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
});
