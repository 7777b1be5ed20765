import { expect } from 'chai';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { forEachImpl, closed, delay, listen, netImpl, pair, readAll, readBytes, until, type Impl } from './impl';

interface CutShort {
  /** The callbacks' arguments, as 'null' or 'message code errno syscall'. */
  first: string;
  second: string;
  /** Codes of the 'error' events. */
  errors: string[];
  hadError: boolean;
  /** The order of the two callbacks and 'close'. */
  order: string[];
  peerPaused: boolean;
}

function describeErr(err: unknown): string {
  if (!err) return String((err as null | undefined) ?? null);
  const elem = err as NodeJS.ErrnoException;
  return [elem.message, elem.code, elem.errno, elem.syscall].filter((value) => value !== undefined).join(' ');
}

/** A write in progress (16 MiB to a paused peer) and one queued behind it, then `how` ends the socket. */
async function writeCutShort(impl: Impl, how: 'destroy()' | 'destroy(err)' | 'resetAndDestroy()'): Promise<CutShort> {
  const { client, peer } = await pair(impl, { paused: true });
  peer.on('error', () => {});
  const errors: string[] = [];
  const order: string[] = [];
  client.on('error', (err: NodeJS.ErrnoException) => errors.push(String(err.code)));
  client.on('close', () => order.push('close'));
  let called = false;
  const first = new Promise<string>((resolve) =>
    client.write(Buffer.alloc(16 * 1024 * 1024, 1), (err) => {
      called = true;
      order.push('first');
      resolve(describeErr(err));
    }),
  );
  const second = new Promise<string>((resolve) =>
    client.write('queued', (err) => {
      order.push('second');
      resolve(describeErr(err));
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(called, 'the write is still in progress').to.equal(false);
  if (how === 'destroy()') client.destroy();
  else if (how === 'destroy(err)') client.destroy(Object.assign(new Error('mine'), { code: 'MINE' }));
  else client.resetAndDestroy();
  const hadError = await closed(client);
  const calledBack = (promise: Promise<string>, which: string): Promise<string> =>
    Promise.race([
      promise,
      new Promise<string>((_, reject) => setTimeout(() => reject(new Error(`${impl.name}: the ${which} write was never called back`)), 2000)),
    ]);
  const result = { first: await calledBack(first, 'first'), second: await calledBack(second, 'second'), errors, hadError, order, peerPaused: peer.isPaused() };
  await new Promise((resolve) => setImmediate(resolve));
  return result;
}

forEachImpl((impl) => {
  describe('Socket#write()', function () {
    it("calls the write callbacks in order, then end()'s callback, then 'finish'", async function () {
      const { client, peer } = await pair(impl);
      peer.resume();
      const order: string[] = [];
      client.write('1', () => order.push('cb1'));
      client.write('2', () => order.push('cb2'));
      client.write(Buffer.from('3'), () => order.push('cb3'));
      client.on('finish', () => order.push('finish'));
      client.end(() => order.push('end cb'));
      await once(client, 'finish');
      await new Promise((resolve) => setImmediate(resolve));
      expect(order).to.deep.equal(['cb1', 'cb2', 'cb3', 'end cb', 'finish']);
    });

    it('returns true for a small write on a connected socket', async function () {
      const { client, peer } = await pair(impl);
      peer.resume();
      expect(client.write('small')).to.equal(true);
    });

    it('honours the encoding argument (hex, base64, latin1)', async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      client.write('68656c6c6f20', 'hex');
      client.write('d29ybGQ=', 'base64');
      client.end('\u00e9', 'latin1');
      expect(await got).to.deep.equal(Buffer.concat([Buffer.from('hello world'), Buffer.from([0xe9])]));
    });

    it('accepts Uint8Array and DataView chunks', async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      client.write(new Uint8Array([1, 2, 3]));
      const ab = new ArrayBuffer(4);
      new Uint8Array(ab).set([4, 5, 6, 7]);
      client.write(new DataView(ab, 1, 2) as unknown as Uint8Array);
      client.end();
      expect([...(await got)]).to.deep.equal([1, 2, 3, 5, 6]);
    });

    it('sends corked writes (writev) in order once uncorked', async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      const cbs: number[] = [];
      client.cork();
      for (let i = 0; i < 10; i++) client.write(`<${i}>`, () => cbs.push(i));
      client.write(Buffer.from('[buf]'), () => cbs.push(10));
      expect(client.writableLength).to.be.greaterThan(0);
      client.uncork();
      client.end();
      expect((await got).toString()).to.equal('<0><1><2><3><4><5><6><7><8><9>[buf]');
      expect(cbs).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    });

    it('sends a corked batch of mixed encodings and views byte for byte, small and large', async function () {
      const { client, peer } = await pair(impl);
      const batch = (round: number): [string | Uint8Array, BufferEncoding | undefined][] => [
        [`HTTP/1.1 200 OK\r\nx-round: ${round}\r\n\r\n`, 'latin1'],
        ['é€😀 \ud800 utf8', 'utf8'],
        ['68697a', 'hex'],
        // Stray characters: Buffer.byteLength over-estimates what base64 gives.
        ['aGVs*bG8=!!', 'base64'],
        [new Uint8Array([0, 1, 2, 255]), undefined],
        [Buffer.alloc(round === 2 ? 20 * 1024 : 3, round), undefined],
        ['ÿþ', 'latin1'],
      ];
      const expected: Buffer[] = [];
      for (let round = 0; round < 3; round++) {
        for (const [chunk, enc] of batch(round)) expected.push(typeof chunk === 'string' ? Buffer.from(chunk, enc) : Buffer.from(chunk));
      }
      const want = Buffer.concat(expected);
      const got = readBytes(peer, want.length);
      const cbs: number[] = [];
      for (let round = 0; round < 3; round++) {
        client.cork();
        batch(round).forEach(([chunk, enc], i) => {
          if (typeof chunk === 'string') client.write(chunk, enc, () => cbs.push(round * 10 + i));
          else client.write(chunk, () => cbs.push(round * 10 + i));
        });
        client.uncork();
      }
      const bytes = await got;
      expect(bytes.length).to.equal(want.length);
      expect(bytes.equals(want)).to.equal(true);
      await until(() => cbs.length === 21, 'every write called back');
      expect(cbs).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 26]);
      expect(client.bytesWritten).to.equal(want.length);
    });

    it("end(data, cb) writes the data and calls cb just before 'finish'", async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      const order: string[] = [];
      client.on('finish', () => order.push('finish'));
      client.end('last words', () => order.push('cb'));
      expect((await got).toString()).to.equal('last words');
      await until(() => order.length === 2, 'end callback');
      expect(order).to.deep.equal(['cb', 'finish']);
    });

    it('emits ERR_STREAM_WRITE_AFTER_END, asynchronously, for a write after end()', async function () {
      const { client, peer } = await pair(impl);
      peer.resume();
      client.end();
      let emitted = false;
      const errP = new Promise<NodeJS.ErrnoException>((resolve) =>
        client.once('error', (err2: NodeJS.ErrnoException) => {
          emitted = true;
          resolve(err2);
        }),
      );
      const cbErrP = new Promise<NodeJS.ErrnoException>((resolve) => {
        const ret = client.write('after end', (err2) => resolve(err2 as NodeJS.ErrnoException));
        expect(ret).to.equal(false);
      });
      expect(emitted, 'error emitted synchronously').to.equal(false);
      const [err, cbErr] = await Promise.all([errP, cbErrP]);
      expect(err.code).to.equal('ERR_STREAM_WRITE_AFTER_END');
      expect(cbErr).to.equal(err);
      expect(await closed(client)).to.equal(true);
    });

    it('calls the callback with ERR_STREAM_DESTROYED after destroy, without an error event', async function () {
      const { client } = await pair(impl);
      const errors: Error[] = [];
      client.on('error', (err2) => errors.push(err2));
      client.destroy();
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        const ret = client.write('x', (err2) => resolve(err2 as NodeJS.ErrnoException));
        expect(ret).to.equal(false);
      });
      expect(err.code).to.equal('ERR_STREAM_DESTROYED');
      await closed(client);
      expect(errors).to.deep.equal([]);
    });

    // What a write still in progress is called back with when the socket goes
    // changed between Node lines (write ECANCELED from 22.9 on, nothing before):
    // zivm must do what the running Node's own net does, so net is the reference.
    for (const how of ['destroy()', 'destroy(err)', 'resetAndDestroy()'] as const) {
      it(`calls back a write still in progress at ${how} as the running Node's net does`, async function () {
        const seen = await writeCutShort(impl, how);
        // Whatever the line: the write is called back once, with nothing or a cancellation;
        // the write queued behind it fails; the peer got nothing more.
        expect(seen.first).to.be.oneOf(['null', 'write ECANCELED ECANCELED -125 write']);
        expect(seen.second).to.not.equal('null');
        expect(seen.peerPaused).to.equal(true);
        if (how === 'destroy(err)') expect(seen.errors).to.deep.equal(['MINE']);
        else expect(seen.errors).to.deep.equal([]);
        expect(seen.hadError).to.equal(how === 'destroy(err)');
        if (impl.isZivm) expect(seen, `node:net on ${process.version} did otherwise`).to.deep.equal(await writeCutShort(netImpl, how));
      });
    }

    it('eventually fails with EPIPE or ECONNRESET when writing to a peer that closed', async function () {
      const { client, peer } = await pair(impl, { client: { allowHalfOpen: true } });
      peer.destroy();
      await once(client, 'end');
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        client.on('error', resolve);
        const tick = (): void => {
          if (client.destroyed) return;
          client.write('into the void', (err2) => {
            if (!err2) setTimeout(tick, 5);
          });
        };
        tick();
      });
      expect(['EPIPE', 'ECONNRESET']).to.include(err.code);
      expect(await closed(client)).to.equal(true);
    });

    it('keeps multi-byte characters whole across writes when the reader sets an encoding', async function () {
      const { client, peer } = await pair(impl);
      peer.setEncoding('utf8');
      const parts: string[] = [];
      peer.on('data', (chunk: string) => parts.push(chunk));
      const euro = Buffer.from('\u20ac');
      client.write(euro.subarray(0, 1));
      await new Promise((resolve) => setTimeout(resolve, 10));
      client.write(euro.subarray(1));
      client.end('!');
      await once(peer, 'end');
      expect(parts.join('')).to.equal('\u20ac!');
      for (const file of parts) expect(file).to.not.include('\ufffd');
    });
  });

  describe('Socket#setEncoding()', function () {
    it("delivers strings in the chosen encoding ('hex')", async function () {
      const { client, peer } = await pair(impl);
      client.setEncoding('hex');
      const got: string[] = [];
      client.on('data', (data: unknown) => {
        expect(data).to.be.a('string');
        got.push(data as string);
      });
      peer.end(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
      await once(client, 'end');
      expect(got.join('')).to.equal('deadbeef');
    });
  });

  describe('Socket#read() and async iteration', function () {
    it("can be read with 'readable' and read()", async function () {
      const { client, peer } = await pair(impl);
      const chunks: Buffer[] = [];
      client.on('readable', () => {
        let item: Buffer | null;
        while ((item = client.read() as Buffer | null) !== null) chunks.push(item);
      });
      peer.write('one ');
      peer.end('two');
      await once(client, 'end');
      expect(Buffer.concat(chunks).toString()).to.equal('one two');
    });

    it('can be consumed with for await', async function () {
      const { client, peer } = await pair(impl);
      peer.write('async ');
      peer.end('iteration');
      const chunks: Buffer[] = [];
      for await (const item of client) chunks.push(item as Buffer);
      expect(Buffer.concat(chunks).toString()).to.equal('async iteration');
    });

    it('pipes a socket into itself (echo)', async function () {
      const { client, peer } = await pair(impl);
      peer.pipe(peer);
      const msg = 'echo '.repeat(1000);
      const got = readBytes(client, msg.length);
      client.write(msg);
      expect((await got).toString()).to.equal(msg);
    });
  });

  describe('Socket#write() of Buffers', function () {
    it("calls back each write with null, in order, then end()'s callback, then 'finish'", async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      const order: string[] = [];
      const args: unknown[] = [];
      const note =
        (name: string) =>
        (...rest: unknown[]) => {
          order.push(name);
          args.push(...rest);
        };
      client.write(Buffer.from('a'), note('a'));
      client.write(Buffer.from('b'), null as unknown as BufferEncoding, note('b'));
      client.write(Buffer.alloc(100 * 1024, 0x63), note('big'));
      client.write('d', note('d'));
      client.write(Buffer.from('e'), note('e'));
      client.on('finish', () => order.push('finish'));
      client.end(note('end'));
      const data = await got;
      await until(() => order.includes('finish'), "'finish'");
      expect(order).to.deep.equal(['a', 'b', 'big', 'd', 'e', 'end', 'finish']);
      expect(args.slice(0, 5)).to.deep.equal([null, null, null, null, null]);
      expect(data.length).to.equal(4 + 100 * 1024);
      expect(data.subarray(0, 2).toString() + data.subarray(-2).toString()).to.equal('abde');
    });

    it("returns false once the peer stops reading, then emits 'drain' and delivers every byte", async function () {
      const { client, peer } = await pair(impl, { paused: true });
      const chunk = Buffer.alloc(1024, 0x61);
      let writes = 0;
      while (client.write(chunk)) {
        writes++;
        if (writes > 256 * 1024) throw new Error('write() never returned false');
      }
      writes++;
      expect(client.writableLength).to.be.greaterThan(0);
      const got = readBytes(peer, writes * 1024);
      peer.resume();
      await once(client, 'drain');
      expect((await got).every((byte) => byte === 0x61)).to.equal(true);
    });

    it('counts them in bytesWritten at once, and sends every byte in order', async function () {
      const { client, peer } = await pair(impl);
      const got = readBytes(peer, 1000 * 100);
      const parts: Buffer[] = [];
      for (let i = 0; i < 1000; i++) {
        const part = Buffer.alloc(100, i & 0xff);
        parts.push(part);
        client.write(part);
        if (i === 0) expect(client.bytesWritten).to.equal(100);
      }
      expect(client.bytesWritten).to.equal(100 * 1000);
      expect((await got).equals(Buffer.concat(parts))).to.equal(true);
    });

    it('throws ERR_UNKNOWN_ENCODING for an encoding that does not exist', async function () {
      const { client } = await pair(impl);
      expect(() => client.write(Buffer.from('x'), 'no-such-encoding' as BufferEncoding))
        .to.throw()
        .with.property('code', 'ERR_UNKNOWN_ENCODING');
    });

    it('fails with EPIPE once the peer ended a socket that is not half-open', async function () {
      const { client, peer } = await pair(impl);
      client.resume();
      peer.end();
      await once(client, 'end');
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        client.once('error', resolve);
        client.write(Buffer.from('too late'));
      });
      expect(err.code).to.equal('EPIPE');
    });

    it('postpone the idle timeout', async function () {
      const { client, peer } = await pair(impl);
      peer.resume();
      let timeouts = 0;
      client.on('timeout', () => timeouts++);
      client.setTimeout(300);
      for (let i = 0; i < 10; i++) {
        await delay(40);
        client.write(Buffer.from('tock'));
      }
      expect(timeouts).to.equal(0);
      await once(client, 'timeout');
    });

    it('after destroy() call back ERR_STREAM_DESTROYED', async function () {
      const { client } = await pair(impl);
      client.destroy();
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        expect(client.write(Buffer.from('x'), (err2) => resolve(err2 as NodeJS.ErrnoException))).to.equal(false);
      });
      expect(err.code).to.equal('ERR_STREAM_DESTROYED');
    });

    if (impl.name === 'zivm') {
      it('skip the Writable machinery on shared memory, also after connect()', async function () {
        const { client, peer } = await pair(impl);
        // net's connect() puts its own write() on the socket: zivm's must be there again.
        const writeOf = (subject: object): unknown => (subject as Record<string, unknown>).write;
        expect(writeOf(client)).to.not.equal(writeOf(Writable.prototype));
        expect(writeOf(peer)).to.not.equal(writeOf(Writable.prototype));
        const state = (client as unknown as { _writableState: { pendingcb: number } })._writableState;
        const before = state.pendingcb;
        client.write(Buffer.from('x'), () => undefined);
        expect(state.pendingcb).to.equal(before);
      });
    }
  });

  describe('Socket#write() of strings', function () {
    it('sends each encoding as net does (utf8 by default, utf-8, latin1, binary, ascii, setDefaultEncoding), one per turn and many in one turn', async function () {
      const { client, peer } = await pair(impl);
      impl.expectShm(client, peer);
      const got = readAll(peer);
      const writes: [string, BufferEncoding | undefined][] = [
        ['h\u00e9llo \u20ac \u{1f600}', undefined],
        ['\u00e9\u20ac', 'utf-8'],
        ['caf\u00e9 \u00ff', 'latin1'],
        ['\u00e9\u0101', 'binary'],
        ['plain ascii \u00e9', 'ascii'],
        ['x'.repeat(5461) + '\u20ac', 'utf8'],
        ['y'.repeat(16 * 1024), 'latin1'],
        ['z'.repeat(16 * 1024 + 1), 'latin1'],
      ];
      const expected: Buffer[] = [];
      const returned: boolean[] = [];
      // One per turn: each is the first write of its turn (straight into the ring).
      for (const [text, enc] of writes) {
        returned.push(enc === undefined ? client.write(text) : client.write(text, enc));
        expected.push(Buffer.from(text, enc ?? 'utf8'));
        await new Promise((resolve) => setImmediate(resolve));
      }
      // Many in one turn: the later ones are staged, each encoded where the one before was.
      for (let i = 0; i < 200; i++) {
        const text = `${i} \u00e9\u20ac ${'w'.repeat(i % 37)}\n`;
        const enc: BufferEncoding = i % 2 === 0 ? 'utf8' : 'latin1';
        client.write(text, enc);
        expected.push(Buffer.from(text, enc));
      }
      client.setDefaultEncoding('latin1');
      client.write('\u00e9 default latin1');
      expected.push(Buffer.from('\u00e9 default latin1', 'latin1'));
      client.end();
      expect(returned.slice(0, 5)).to.deep.equal([true, true, true, true, true]);
      expect((await got).equals(Buffer.concat(expected))).to.equal(true);
    });

    it('counts them in bytesWritten at once and calls back in order with null', async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      const order: unknown[] = [];
      client.write('\u20ac', () => order.push('a'));
      expect(client.bytesWritten).to.equal(3);
      client.write('bb', 'latin1', (err?: Error | null) => order.push(err ?? 'b'));
      client.write(Buffer.from('c'), () => order.push('c'));
      client.end('d', () => order.push('end'));
      expect((await got).toString()).to.equal('\u20acbbcd');
      await until(() => order.length === 4, 'the callbacks');
      expect(order).to.deep.equal(['a', 'b', 'c', 'end']);
    });

    it('leaves an unknown or empty encoding, and an empty string, to net (errors as net makes them)', async function () {
      const { client, peer } = await pair(impl);
      const got = readAll(peer);
      expect(() => client.write('x', 'no-such-encoding' as BufferEncoding))
        .to.throw()
        .with.property('code', 'ERR_UNKNOWN_ENCODING');
      expect(client.write('')).to.equal(true);
      client.write('UTF8 upper', 'UTF8' as BufferEncoding);
      client.end('686578', 'hex');
      expect((await got).toString()).to.equal('UTF8 upperhex');
    });
  });

  describe('small writes', function () {
    it('many small writes of one turn arrive whole and in order, mixed with large ones', async function () {
      const { client, peer } = await pair(impl);
      impl.expectShm(client, peer);
      const parts: Buffer[] = [];
      for (let i = 0; i < 2000; i++) {
        const size = i % 250 === 0 ? 100 * 1024 : (i % 13) + 1;
        parts.push(Buffer.alloc(size, i & 0xff));
      }
      const expected = Buffer.concat(parts);
      const got = readBytes(peer, expected.length);
      for (const part of parts) client.write(part);
      expect((await got).equals(expected)).to.equal(true);
    });

    it('what was written before destroy() arrives, then the end', async function () {
      const { client, peer } = await pair(impl);
      impl.expectShm(client, peer);
      const all = readAll(peer);
      for (let i = 0; i < 100; i++) client.write(`line ${i}\n`);
      client.destroy();
      const text = (await all).toString();
      expect(text.split('\n').length).to.equal(101);
      expect(text.endsWith('line 99\n')).to.equal(true);
    });

    it('what was written before process.exit() arrives', async function () {
      const server = impl.createServer();
      const port = await listen(server);
      const received = new Promise<string>((resolve) =>
        server.once('connection', (sock) => {
          impl.expectShm(sock);
          readAll(sock).then(
            (buf) => resolve(buf.toString()),
            () => resolve('(read failed)'),
          );
        }),
      );
      const src =
        `const net = require(${JSON.stringify(impl.requireId)});\n` +
        `const sock = net.connect(${port}, '127.0.0.1', () => { sock.write('written '); sock.write('then exit'); process.exit(0); });`;
      const child = spawn(process.execPath, ['-e', src], { env: process.env, stdio: 'ignore' });
      const [code] = (await once(child, 'exit')) as [number | null];
      expect(code).to.equal(0);
      expect(await received).to.equal('written then exit');
    });
  });
});
