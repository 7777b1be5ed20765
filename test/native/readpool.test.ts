/** native/readpool.cc: large reads come from a pool of chunks that stay mapped, and go back to it when collected. */
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect } from 'chai';
import { addon, streamBytes, expectStream, Fixture, noFdLeft } from './fixture';

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

  it('gives reads of 32 KiB or more a pooled chunk, and takes it back when the Buffer is collected', async () => {
    fx = new Fixture(256 * 1024);
    const part = fx.producer();
    const item = fx.consumer();
    await collectUntil(0);
    const before = addon.readPool();
    expect(before.chunk).to.equal(65536);
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
    part.write(streamBytes(0, 65536));
    const readOne = (): Buffer => item.read(65536)!;
    let first: Buffer | null = readOne();
    expectStream(first, 0);
    first = null;
    await collectUntil(0);
    part.write(streamBytes(1_000_000, 40 * 1024));
    const again = item.read(65536)!;
    expect(again.length).to.equal(40 * 1024);
    expect(again.buffer.byteLength, 'the ArrayBuffer shows no byte of the earlier read').to.equal(40 * 1024);
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
});
