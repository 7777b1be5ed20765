/** native/errors.cc: how every native entry point refuses a bad argument (TypeError / RangeError with Node-style codes). */
import { expect } from 'chai';
import { n, codeOf, Fixture, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

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
});
