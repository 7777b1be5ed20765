/** native/region.cc: a shared mapping of an fd as an ArrayBuffer, whole or at an offset. */
import { expect } from 'chai';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { addon, codeOf, DATA, Fixture, HDR, NATIVE_JS, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('Region', () => {
    it('maps the whole size as an ArrayBuffer', () => {
      const fd = addon.memfdCreate('r', 8192);
      const res = new addon.Region(fd, 8192);
      expect(res.size).to.equal(8192);
      expect(res.buffer).to.be.instanceOf(ArrayBuffer);
      expect(res.buffer.byteLength).to.equal(8192);
      res.close();
      addon.close(fd);
    });

    it('two mappings of the same memfd see each other’s bytes', () => {
      const fd = addon.memfdCreate('r', 8192);
      const first = new addon.Region(fd, 8192);
      const second = new addon.Region(fd, 4096); // a prefix is fine
      new Uint8Array(first.buffer)[100] = 42;
      expect(new Uint8Array(second.buffer)[100]).to.equal(42);
      new Uint8Array(second.buffer)[4095] = 7;
      expect(new Uint8Array(first.buffer)[4095]).to.equal(7);
      first.close();
      expect(new Uint8Array(second.buffer)[100]).to.equal(42);
      second.close();
      addon.close(fd);
    });

    it('supports Atomics.compareExchange and Atomics.add on an Int32Array view, seen by another mapping', () => {
      const fd = addon.memfdCreate('r', 4096);
      const first = new addon.Region(fd, 4096);
      const second = new addon.Region(fd, 4096);
      const ia = new Int32Array(first.buffer);
      const ib = new Int32Array(second.buffer);
      expect(Atomics.compareExchange(ia, 3, 0, 17)).to.equal(0);
      expect(Atomics.compareExchange(ia, 3, 0, 99)).to.equal(17);
      expect(Atomics.load(ib, 3)).to.equal(17);
      expect(Atomics.add(ib, 3, 5)).to.equal(17);
      expect(Atomics.load(ia, 3)).to.equal(22);
      first.close();
      second.close();
      addon.close(fd);
    });

    it('close() detaches the buffer, is idempotent, and rings on it throw ERR_ZIVM_CLOSED', () => {
      const fx = new Fixture();
      const part = fx.producer();
      const item = fx.consumer();
      const view = new Uint8Array(fx.region.buffer);
      fx.region.close();
      fx.region.close();
      expect(fx.region.buffer.byteLength).to.equal(0);
      expect(view.length).to.equal(0);
      expect(view[0]).to.equal(undefined);
      for (const fd of [
        () => part.write(Buffer.alloc(1)),
        () => part.writev([Buffer.alloc(1)]),
        () => part.free(),
        () => part.head(),
        () => item.read(1),
        () => item.peek(1),
        () => item.release(0),
        () => item.available(),
        () => item.tail(),
      ]) {
        expect(codeOf(fd).code).to.equal('ERR_ZIVM_CLOSED');
      }
      expect(codeOf(() => fx.producer()).code).to.equal('ERR_ZIVM_CLOSED');
      addon.close(fx.fd);
    });

    it('a view of a ring (peek) keeps the pages mapped past close() until it is collected; without one close() unmaps at once', () => {
      // In a process of its own, to look at its mappings and collect its garbage.
      const script = `
        const fs = require('node:fs');
        const addon = require(${JSON.stringify(NATIVE_JS)}).native();
        const mapped = (name) => fs.readFileSync('/proc/self/maps', 'utf8').includes('/memfd:' + name + ' ');
        const open = (name) => {
          const fd = addon.memfdCreate(name, ${DATA} + 65536);
          const region = new addon.Region(fd, ${DATA} + 65536);
          const part = new addon.Ring(region, ${HDR}, ${DATA}, 65536, true);
          const item = new addon.Ring(region, ${HDR}, ${DATA}, 65536, false);
          part.write(Buffer.alloc(1000, 7));
          return { fd, region, item };
        };
        const plain = open('zivm-plain');
        plain.region.close();
        addon.close(plain.fd);
        const out = { plainAfterClose: mapped('zivm-plain') };
        const viewed = open('zivm-viewed');
        let view = viewed.item.peek(1000);
        viewed.region.close();
        addon.close(viewed.fd);
        out.viewedAfterClose = mapped('zivm-viewed');
        out.sum = view.reduce((a, b) => a + b, 0);
        try { viewed.item.peek(1); } catch (err) { out.peekAfterClose = err.code; }
        view = null;
        (async () => {
          for (let i = 0; i < 50 && mapped('zivm-viewed'); i++) {
            gc();
            await new Promise((resolve) => setImmediate(resolve));
          }
          out.viewedAfterCollect = mapped('zivm-viewed');
          console.log(JSON.stringify(out));
        })();`;
      const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 25000 });
      expect(JSON.parse(out.trim().split('\n').pop()!)).to.deep.equal({
        plainAfterClose: false,
        viewedAfterClose: true,
        sum: 7000,
        peekAfterClose: 'ERR_ZIVM_CLOSED',
        viewedAfterCollect: false,
      });
    });

    it('refuses sizes beyond the fd or not positive', () => {
      const fd = addon.memfdCreate('r', 4096);
      try {
        let err = codeOf(() => new addon.Region(fd, 8192));
        expect(err.name).to.equal('RangeError');
        expect(err.code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => new addon.Region(fd, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        err = codeOf(() => new addon.Region(1_000_000, 4096));
        expect(err.code).to.equal('EBADF');
        expect(err.err.errno).to.equal(-9);
        expect(err.err.syscall).to.equal('fstat');
        expect(err.err.message).to.equal('fstat EBADF');
      } finally {
        addon.close(fd);
      }
    });
  });

  describe('Region at an offset', () => {
    const PG = 4096;
    /** A memfd of `pages` pages, page i filled with (i * 37 + byte) & 0xff. */
    function pagedMemfd(pages: number): number {
      const fd = addon.memfdCreate('off', pages * PG);
      const buf = Buffer.alloc(pages * PG);
      for (let i = 0; i < buf.length; i++) buf[i] = ((i >> 12) * 37 + i) & 0xff;
      expect(fs.writeSync(fd, buf, 0, buf.length, 0)).to.equal(buf.length);
      return fd;
    }

    it('a memfd mapped at a page offset sees the bytes from there, and shares them', () => {
      const fd = pagedMemfd(4);
      try {
        const whole = new addon.Region(fd, 4 * PG);
        const at2 = new addon.Region(fd, PG, 2 * PG);
        const tail = new addon.Region(fd, 2 * PG, 2 * PG); // up to the end exactly
        expect(at2.size).to.equal(PG);
        expect(at2.buffer.byteLength).to.equal(PG);
        const write = new Uint8Array(whole.buffer);
        const first = new Uint8Array(at2.buffer);
        expect(Buffer.from(first).equals(Buffer.from(write.subarray(2 * PG, 3 * PG)))).to.equal(true);
        expect(first[0]).to.equal((2 * 37 + 2 * PG) & 0xff);
        expect(new Uint8Array(tail.buffer)[PG + 5]).to.equal((3 * 37 + 3 * PG + 5) & 0xff);
        // writes go both ways, Atomics included
        first[10] = 0xab;
        expect(write[2 * PG + 10]).to.equal(0xab);
        Atomics.store(new Int32Array(whole.buffer), (2 * PG + 64) >> 2, 0x12345678);
        expect(Atomics.load(new Int32Array(at2.buffer), 16)).to.equal(0x12345678);
        const buf = Buffer.alloc(1);
        fs.readSync(fd, buf, 0, 1, 2 * PG + 10);
        expect(buf[0]).to.equal(0xab);
        whole.close();
        at2.close();
        tail.close();
      } finally {
        addon.close(fd);
      }
    });

    it('offset 0 and an undefined offset are the old form', () => {
      const fd = pagedMemfd(2);
      try {
        const first = new addon.Region(fd, 2 * PG, 0);
        const second = new addon.Region(fd, 2 * PG, undefined);
        expect(new Uint8Array(first.buffer)[PG + 1]).to.equal((37 + PG + 1) & 0xff);
        expect(new Uint8Array(second.buffer)[PG + 1]).to.equal((37 + PG + 1) & 0xff);
        first.close();
        second.close();
      } finally {
        addon.close(fd);
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
          const err = codeOf(() => new addon.Region(fd, size, off));
          expect(err.name, `size ${size} offset ${off}: ${err.err.message}`).to.equal('RangeError');
          expect(err.code).to.equal('ERR_ZIVM_BAD_ARG');
        }
        expect(codeOf(() => new addon.Region(fd, PG, '4096' as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => new addon.Region(fd, PG, null as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => new addon.Region(fd, PG, NaN)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        addon.close(fd);
      }
    });

    it('an empty memfd is still empty (only fds that report no size at all are trusted)', () => {
      const fd = addon.memfdCreate('empty', 0);
      try {
        const err = codeOf(() => new addon.Region(fd, PG));
        expect(err.code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => new addon.Region(fd, PG, PG)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        addon.close(fd);
      }
    });

    it('an fd with no size that cannot be mapped fails in mmap, not with a bad mapping', () => {
      const efd = addon.eventfd();
      try {
        const err = codeOf(() => new addon.Region(efd, PG, PG));
        expect(err.err.syscall).to.equal('mmap');
        expect(err.code).to.equal('ENODEV');
      } finally {
        addon.close(efd);
      }
    });
  });
  describe('Region with a view', () => {
    const BIG = 6 * 1024 ** 3; // past any TypedArray limit of Node 20 (4 GiB): sparse, no memory

    it('maps all of a region larger than an ArrayBuffer may be and views only its start; zero(), copy() and rings reach the rest', () => {
      const fd = addon.memfdCreate('big', BIG);
      const res = new addon.Region(fd, BIG, 0, 65536);
      const other = new addon.Region(fd, 65536, BIG - 65536);
      try {
        expect(res.size).to.equal(BIG);
        expect(res.buffer.byteLength).to.equal(65536);
        // A ring whose header sits in the view and whose data lies past 4 GiB.
        const data = BIG - 32768;
        const producer = new addon.Ring(res, 0, data, 4096, true);
        const consumer = new addon.Ring(res, 0, data, 4096, false);
        expect(producer.write(Buffer.from('far away'))).to.equal(8);
        expect(consumer.read(100)!.toString()).to.equal('far away');
        expect(new Uint8Array(other.buffer)[32768]).to.equal('f'.charCodeAt(0));
        expect(res.copy(data, 8).toString()).to.equal('far away');
        res.zero(data + 1, 3);
        expect(res.copy(data, 8).toString()).to.equal('f\0\0\0away');
        expect(res.resident(BIG - 65536, 65536)).to.equal(4096);
      } finally {
        res.close();
        other.close();
        addon.close(fd);
      }
    });

    it('refuses a view larger than the mapping or not positive, and zero()/copy() outside it', () => {
      const fd = addon.memfdCreate('r', 8192);
      const res = new addon.Region(fd, 8192, 0, 4096);
      try {
        expect(codeOf(() => new addon.Region(fd, 4096, 0, 8192)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => new addon.Region(fd, 4096, 0, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => res.zero(8000, 200)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => res.copy(-1, 2)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => res.copy(8192, 1)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(res.copy(8192, 0).length).to.equal(0);
      } finally {
        res.close();
        addon.close(fd);
      }
      expect(codeOf(() => res.copy(0, 1)).code).to.equal('ERR_ZIVM_CLOSED');
      expect(codeOf(() => res.zero(0, 1)).code).to.equal('ERR_ZIVM_CLOSED');
    });
  });
});
