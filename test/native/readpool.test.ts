/** native/readpool.cc: large reads come from a pool of chunks that stay mapped, and go back to it when collected. */
import v8 from 'node:v8';
import vm from 'node:vm';
import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { addon, streamBytes, expectStream, Fixture, noFdLeft, NATIVE_JS, DATA, HDR } from './fixture';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Collects garbage until the pool has at most `out` chunks handed out (finalizers run on a later turn). */
async function collectUntil(out: number): Promise<void> {
  for (let i = 0; i < 50 && addon.readPool().out > out; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  expect(addon.readPool().out).to.be.at.most(out);
}

describe('native read pool', () => {
  noFdLeft();
  let fx: Fixture | undefined;
  afterEach(() => {
    fx?.dispose();
    fx = undefined;
  });

  it('gives reads of 64 KiB or more a pooled chunk, and takes it back when the Buffer is collected', async () => {
    fx = new Fixture(256 * 1024);
    const part = fx.producer();
    const item = fx.consumer();
    await collectUntil(0);
    const before = addon.readPool();
    expect(before.chunk).to.equal(131072);
    part.write(streamBytes(0, 65536 + 1000));
    const readOne = (): Buffer => item.read(65536)!;
    let big: Buffer | null = readOne();
    expect(big.length).to.equal(65536);
    expectStream(big, 0);
    expect(addon.readPool().out).to.equal(before.out + 1);
    const small = item.read(65536)!;
    expect(small.length).to.equal(1000);
    expectStream(small, 65536);
    expect(addon.readPool().out, 'a small read has a Buffer of its own').to.equal(before.out + 1);
    big = null;
    await collectUntil(before.out);
    expect(addon.readPool().free).to.be.at.least(before.free + (before.free === 0 ? 1 : 0));
  });

  it('hands a reused chunk out with only the new bytes visible', async () => {
    fx = new Fixture(256 * 1024);
    const part = fx.producer();
    const item = fx.consumer();
    part.write(streamBytes(0, 131072));
    const readOne = (): Buffer => item.read(131072)!;
    let first: Buffer | null = readOne();
    expectStream(first, 0);
    first = null;
    await collectUntil(0);
    part.write(streamBytes(1_000_000, 100 * 1024));
    const again = item.read(131072)!;
    expect(again.length).to.equal(100 * 1024);
    expect(again.buffer.byteLength, 'the ArrayBuffer shows no byte of the earlier read').to.equal(100 * 1024);
    expect(again.byteOffset).to.equal(0);
    expectStream(again, 1_000_000);
  });

  it('gives the pages of free chunks back once no read has taken one for a second', async function () {
    this.timeout(10000);
    fx = new Fixture(256 * 1024);
    const part = fx.producer();
    const item = fx.consumer();
    let held: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      part.write(streamBytes(i * 65536, 65536));
      held.push(item.read(65536)!);
    }
    expectStream(held[39], 39 * 65536);
    held = [];
    await collectUntil(0);
    const pool = addon.readPool();
    expect(pool.free).to.be.at.least(40);
    expect(addon.readPoolTrim(), 'not while reads are recent').to.equal(0);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const trimmed = addon.readPoolTrim();
    expect(trimmed).to.be.at.least(40 - 16);
    expect(addon.readPool().resident).to.equal(pool.resident - trimmed);
    expect(addon.readPoolTrim(), 'trimmed chunks are not trimmed again').to.equal(0);
    // A trimmed chunk is fresh memory again: zero-filled, then the new bytes.
    for (let i = 0; i < 40; i++) {
      part.write(streamBytes(i * 7, 65536));
      const buf = item.read(65536)!;
      expectStream(buf, i * 7);
    }
  });

  it('has chunks whose Buffers are dropped come back through young-generation collections, not whole-heap ones', function () {
    this.timeout(30000);
    // In a process of its own: V8's collection heuristics depend on everything else the heap holds.
    const script = `
      const { PerformanceObserver, constants } = require('node:perf_hooks');
      const addon = require(${JSON.stringify(NATIVE_JS)}).native();
      const cap = 256 * 1024;
      const fd = addon.memfdCreate('zivm-test', ${DATA} + cap);
      const region = new addon.Region(fd, ${DATA} + cap);
      const part = new addon.Ring(region, ${HDR}, ${DATA}, cap, true);
      const item = new addon.Ring(region, ${HDR}, ${DATA}, cap, false);
      const src = Buffer.alloc(65536, 0x5a);
      const kinds = [];
      const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) kinds.push(e.detail.kind); });
      obs.observe({ entryTypes: ['gc'] });
      (async () => {
        let most = 0, sum = 0;
        // 256 MiB through the ring, each chunk dropped as soon as it is read (as a stream's reader does).
        for (let i = 0; i < 4096; i++) {
          part.write(src);
          sum += item.read(65536)[i & 0xffff];
          most = Math.max(most, addon.readPool().out);
          // Finalizers run on the loop: give it a turn now and then, as a socket's reads do.
          if ((i & 63) === 63) await new Promise((resolve) => setImmediate(resolve));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
        obs.disconnect();
        region.close();
        addon.close(fd);
        const count = (kind) => kinds.filter((k) => k === kind).length;
        console.log(JSON.stringify({ sum, most, major: count(constants.NODE_PERFORMANCE_GC_MAJOR), minor: count(constants.NODE_PERFORMANCE_GC_MINOR) }));
      })();`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 25000 });
    const res = JSON.parse(out.trim().split('\n').pop()!) as { sum: number; most: number; major: number; minor: number };
    expect(res.sum).to.equal(4096 * 0x5a);
    const gcs = `${res.minor} young, ${res.major} whole-heap collections`;
    // V8 collects Buffers on memory of their own in young-generation collections, but starts a
    // whole-heap one for every 64 MiB of them (4 here) unless its young generation is collected first.
    // Before 13 (Node 20 and 22) it is, once made to look (32 MiB, 512 chunks, are out); later lines
    // look only at 128 MiB, so past that point each read also fills the young generation. Then about
    // 512 chunks are out at most, plus those whose finalizers wait for the loop (without either, the
    // whole pool).
    expect(res.major, gcs).to.be.at.most(1);
    expect(res.most, `chunks out at most (${gcs})`).to.be.at.most(896);
  });

  it('releaseCopies detaches only Uint8Arrays that span their whole ArrayBuffer, and frees their memory at once', () => {
    const own = new Uint8Array(1 << 20).fill(7);
    const copy = Buffer.from(new Uint8Array(256 * 1024).fill(1)); // a Buffer this size has an ArrayBuffer of its own
    const slice = new Uint8Array(new ArrayBuffer(4096)).subarray(0, 100);
    const pooled = Buffer.from('from the Buffer pool');
    const shared = new Uint8Array(new SharedArrayBuffer(64));
    const empty = new Uint8Array(0);
    const before = process.memoryUsage().arrayBuffers;
    const list: unknown[] = [own, copy, slice, pooled, shared, empty, 'not a view', new Uint16Array(8), null];
    expect(addon.releaseCopies(list as Uint8Array[])).to.equal(2);
    expect(own.byteLength).to.equal(0);
    expect(own.buffer.byteLength).to.equal(0);
    expect(copy.byteLength).to.equal(0);
    // Gone now, not at the next collection.
    expect(before - process.memoryUsage().arrayBuffers).to.be.at.least((1 << 20) + 256 * 1024 - 4096);
    expect(slice.byteLength).to.equal(100);
    expect(pooled.toString()).to.equal('from the Buffer pool');
    expect(shared.byteLength).to.equal(64);
    // Released already: a second time is nothing.
    expect(addon.releaseCopies([own, copy])).to.equal(0);
    expect(addon.releaseCopies([] as Uint8Array[])).to.equal(0);
  });
});
