/**
 * Memory follows traffic: a connection's rings are memory only where it wrote
 * (the region is a memfd), and a ring that carried bulk data gives its pages
 * back once it has stood empty for about a second, and when the connection
 * ends. Measured as the pages of the slot that are memory now (mincore), not
 * the mapped size.
 */
import { expect } from 'chai';
import crypto from 'node:crypto';
import type net from 'node:net';
import * as zivm from '../src';
import { currentDomain } from '../src/shm/join';
import * as Lay from '../src/shm/layout';
import type { ShmHandle } from '../src/net/handle';
import { spawnPeer } from './helpers/proc';

const BULK = 8 * 1024 * 1024;
/** What a slot may hold once its rings gave their pages back: its header page and a page or two. */
const SMALL = 16 * 1024;

function slotOf(sock: net.Socket): number {
  return (sock as unknown as { _handle: ShmHandle })._handle.ch.slot;
}

/** Bytes of the slot's two ring data areas that are memory now. */
function ringsResident(slot: number): number {
  const domain = currentDomain()!;
  const rings = Lay.ringOffsets(domain.geo, slot);
  return domain.region.resident(rings.c2sData, 2 * domain.geo.ringSize);
}

/** Sends `bytes` and resolves with what came back once as many bytes arrived. */
function echo(sock: net.Socket, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let count = 0;
    const onData = (chunk: Buffer): void => {
      got.push(chunk);
      count += chunk.length;
      if (count < bytes.length) return;
      sock.off('data', onData);
      sock.off('error', reject);
      resolve(Buffer.concat(got));
    };
    sock.on('data', onData);
    sock.once('error', reject);
    sock.write(bytes);
  });
}

async function until(what: string, check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('memory follows traffic', function () {
  this.timeout(30000);
  let server: net.Server;
  let port = 0;
  const open: net.Socket[] = [];

  beforeEach(async () => {
    server = zivm.createServer((sock) => {
      open.push(sock);
      sock.pipe(sock);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });

  afterEach(async () => {
    for (const sock of open.splice(0)) sock.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  async function bulkConnection(): Promise<{ client: zivm.Socket; slot: number }> {
    const client = zivm.connect(port, '127.0.0.1');
    open.push(client);
    await new Promise((resolve) => client.once('connect', resolve));
    expect(client.transport).to.equal('shm');
    const payload = crypto.randomBytes(BULK);
    expect((await echo(client, payload)).equals(payload), 'echo intact').to.equal(true);
    const slot = slotOf(client);
    const ringSize = currentDomain()!.geo.ringSize;
    // Both rings went round many times: every page of both is memory now.
    expect(ringsResident(slot), 'ring memory after the transfer').to.be.at.least(2 * ringSize - 2 * 4096);
    return { client, slot };
  }

  it("a bulk connection's rings give their pages back when it ends", async () => {
    const { client, slot } = await bulkConnection();
    const closed = new Promise((resolve) => client.once('close', resolve));
    client.end();
    await closed;
    await until(
      'the server end lets go',
      () => Lay.stateOf(Atomics.load(currentDomain()!.i32, (Lay.slotOffset(currentDomain()!.geo, slot) >>> 2) + Lay.SLOT.STATE)) === Lay.SLOT_FREE,
      5000,
    );
    expect(ringsResident(slot), 'ring memory once both ends let go').to.be.at.most(SMALL);
  });

  it('an idle bulk connection gives its ring pages back within about two seconds, and carries on as before', async () => {
    const { client, slot } = await bulkConnection();
    await until('the rings give their pages back', () => ringsResident(slot) <= SMALL, 5000);
    // The connection is as it was: more bytes, both ways, intact.
    const again = crypto.randomBytes(1024 * 1024 + 7);
    expect((await echo(client, again)).equals(again), 'echo after the rings were given back').to.equal(true);
  });

  it("a slot's next connection takes up its ring objects again: connections one after another, each moving another amount, arrive intact", async () => {
    const ringSize = currentDomain()!.geo.ringSize;
    const seen = new Set<unknown>();
    let reused = 0;
    for (let k = 0; k < 60; k++) {
      const client = zivm.connect(port, '127.0.0.1');
      open.push(client);
      await new Promise((resolve) => client.once('connect', resolve));
      expect(client.transport).to.equal('shm');
      const ch = (client as unknown as { _handle: ShmHandle })._handle.ch;
      if (seen.has(ch.tx)) reused++;
      seen.add(ch.tx);
      // From a byte to one and a half rings: the positions the kept objects take up are anywhere in the ring.
      const size = k % 3 === 0 ? 1 + k : Math.floor((ringSize * 1.5 * ((k * 7919) % 97)) / 97) + 1;
      const payload = crypto.randomBytes(size);
      expect((await echo(client, payload)).equals(payload), `connection ${k}: ${size} B echoed intact`).to.equal(true);
      const closed = new Promise((resolve) => client.once('close', resolve));
      client.end();
      await closed;
    }
    expect(reused, 'connections that took up kept ring objects').to.be.at.least(30);
  });

  it('a process that opens one connection after another keeps to a few slots, whose pages are memory already', async () => {
    // The server is busy for a moment after each connection ends: the client's
    // 'close' comes, and its next connection starts, while the server still holds
    // the last slot; by the connection after that, it is free again.
    const busy = spawnPeer('peer', ['busy-echo-server', 'zivm', '127.0.0.1', '3']);
    try {
      const list = await busy.event('listening');
      const slots = new Set<number>();
      for (let k = 0; k < 300; k++) {
        const client = zivm.connect(list.port as number, '127.0.0.1');
        open.push(client);
        await new Promise((resolve) => client.once('connect', resolve));
        expect(client.transport).to.equal('shm');
        slots.add(slotOf(client));
        const byte = Buffer.from([k & 0xff]);
        expect((await echo(client, byte)).equals(byte)).to.equal(true);
        const closed = new Promise((resolve) => client.once('close', resolve));
        client.end();
        await closed;
      }
      expect(slots.size, `slots used: ${[...slots].slice(0, 12).join(', ')}...`).to.be.at.most(4);
    } finally {
      busy.kill();
      await busy.exit(5000);
    }
  });
});
