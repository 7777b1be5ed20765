/** native/errors.cc: how every native entry point refuses a bad argument (TypeError / RangeError with Node-style codes). */
import { expect } from 'chai';
import { addon, codeOf, Fixture, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('argument validation', () => {
    const bad = (fn: () => unknown, name: 'TypeError' | 'RangeError') => {
      const err = codeOf(fn);
      expect(err.name, err.err.message).to.equal(name);
      expect(err.code, err.err.message).to.equal(name === 'TypeError' ? 'ERR_INVALID_ARG_TYPE' : 'ERR_ZIVM_BAD_ARG');
    };
    let fx: Fixture;
    beforeEach(() => (fx = new Fixture()));
    afterEach(() => fx.dispose());

    it('Region: type and range of fd and size', () => {
      bad(() => new addon.Region('3' as any, 4096), 'TypeError');
      bad(() => new addon.Region(fx.fd, '4096' as any), 'TypeError');
      bad(() => new addon.Region(fx.fd, undefined as any), 'TypeError');
      bad(() => new addon.Region(-1, 4096), 'RangeError');
      bad(() => new addon.Region(fx.fd, 1.5), 'RangeError');
      bad(() => new addon.Region(fx.fd, NaN), 'RangeError');
      expect(() => (addon.Region as any)(fx.fd, 4096)).to.throw(TypeError);
    });

    it('Ring: region, offsets, capacity, producer', () => {
      const resolve = addon.Ring;
      bad(() => new resolve({} as any, 0, 4096, 4096, true), 'TypeError');
      bad(() => new resolve(Buffer.alloc(8) as any, 0, 4096, 4096, true), 'TypeError');
      bad(() => new resolve(fx.region, '0' as any, 4096, 4096, true), 'TypeError');
      bad(() => new resolve(fx.region, 0, 4096, 4096, 1 as any), 'TypeError');
      bad(() => new resolve(fx.region, 0, 4096, 100, true), 'RangeError'); // not a power of two
      bad(() => new resolve(fx.region, 0, 4096, 32, true), 'RangeError'); // below 64
      bad(() => new resolve(fx.region, 8, 4096, 64, true), 'RangeError'); // header not 64-aligned
      bad(() => new resolve(fx.region, 0, 4100, 64, true), 'RangeError'); // data not 8-aligned
      bad(() => new resolve(fx.region, 0, 4096, 8192, true), 'RangeError'); // data past the end
      bad(() => new resolve(fx.region, 8192, 4096, 64, true), 'RangeError'); // header past the end
      bad(() => new resolve(fx.region, 8192 - 128, 4096, 64, true), 'RangeError'); // header straddles the end
      bad(() => new resolve(fx.region, 0, 128, 64, true), 'RangeError'); // data inside the header
      bad(() => new resolve(fx.region, 0, 2 ** 60, 64, true), 'RangeError');
    });

    it('Ring methods: chunk types, read size, borrowed methods', () => {
      const part = fx.producer();
      const item = fx.consumer();
      bad(() => part.write('abc' as any), 'TypeError');
      bad(() => part.write(new Uint16Array(4) as any), 'TypeError');
      bad(() => part.write(new ArrayBuffer(4) as any), 'TypeError');
      bad(() => part.writev('abc' as any), 'TypeError');
      bad(() => part.writev([Buffer.from('a'), 1 as any]), 'TypeError');
      expect(part.head()).to.equal(0); // nothing was written by the failed writev
      bad(() => item.read('1' as any), 'TypeError');
      bad(() => item.read(0), 'RangeError');
      bad(() => item.read(-5), 'RangeError');
      const err = codeOf(() => (part.write as any).call(fx.region, Buffer.alloc(1)));
      expect(err.name).to.equal('TypeError');
      expect(() => (part.write as any).call({}, Buffer.alloc(1))).to.throw();
      expect(() => (fx.region.close as any).call(part)).to.throw(TypeError);
    });

    it('functions: fds, numbers, strings, callbacks', () => {
      bad(() => addon.notify('1' as any), 'TypeError');
      bad(() => addon.drain(-1), 'RangeError');
      bad(() => addon.fdSize(2 ** 31), 'RangeError');
      bad(() => addon.memfdCreate(5 as any, 10), 'TypeError');
      bad(() => addon.memfdCreate('a\0b', 10), 'RangeError');
      bad(() => addon.memfdCreate('a', -1), 'RangeError');
      bad(() => addon.sendMsg(0, 1.5, -1), 'RangeError');
      bad(() => addon.sendMsg(0, 1, -2), 'RangeError');
      bad(() => addon.sendMsg(0, 2 ** 53, -1), 'RangeError');
      bad(() => addon.waitReadable(0, 'x' as any), 'TypeError');
      bad(() => addon.unixListen(123 as any, 1), 'TypeError');
      bad(() => addon.unixListen('/tmp/' + 'x'.repeat(200), 1), 'RangeError');
      bad(() => addon.unixConnect(''), 'RangeError');
      bad(() => addon.close(null as any), 'TypeError');
      bad(() => addon.tryLock(1.25), 'RangeError');
      bad(() => addon.peerCred({} as any), 'TypeError');
      const efd = addon.eventfd();
      try {
        bad(() => new addon.Poller(efd, 'cb' as any, true), 'TypeError');
        bad(() => new addon.Poller(efd, () => {}, 1 as any), 'TypeError');
        bad(() => new addon.Poller('x' as any, () => {}, true), 'TypeError');
      } finally {
        addon.close(efd);
      }
    });
  });
});
