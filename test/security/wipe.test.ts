/**
 * A connection's bytes do not outlive it in the region: rings that carried
 * bulk data are given back or wiped once both sides let go, and the next
 * connection to take a slot wipes whatever its rings still held before anyone
 * can read it.
 */
import { expect } from 'chai';
import type net from 'node:net';
import * as zivm from '../../src';
import { currentDomain } from '../../src/shm/join';
import * as Lay from '../../src/shm/layout';
import { ShmHandle } from '../../src/net/handle';

const clients: net.Socket[] = [];

async function pair(server: net.Server, port: number): Promise<{ client: zivm.Socket; peer: net.Socket }> {
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = zivm.connect(port, '127.0.0.1');
  clients.push(client);
  await new Promise((resolve) => client.once('connect', resolve));
  const peer = await accepted;
  expect(client.transport).to.equal('shm');
  return { client, peer };
}

function slotOf(sock: net.Socket): number {
  return (sock as unknown as { _handle: ShmHandle })._handle.ch.slot;
}

/** Whether `marker` is anywhere in the data areas of `slot`. */
function inRings(slot: number, marker: Buffer): boolean {
  const domain = currentDomain()!;
  const rings = Lay.ringOffsets(domain.geo, slot);
  const data = domain.region.copy(rings.c2sData, 2 * domain.geo.ringSize);
  return data.includes(marker);
}

describe('ring data of a finished connection', function () {
  this.timeout(10000);

  it('is wiped when its slot is taken again, both directions', async () => {
    const server = zivm.createServer();
    const sockets: net.Socket[] = [];
    server.on('connection', (sock) => sockets.push(sock));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const up = Buffer.from('marker-client-to-server-4f1c');
      const down = Buffer.from('marker-server-to-client-9a2e');
      const first = await pair(server, port);
      const slot = slotOf(first.client);
      const got = new Promise((resolve) => first.client.once('data', resolve));
      first.peer.once('data', () => first.peer.write(down));
      first.client.write(up);
      await got;
      expect(inRings(slot, up) && inRings(slot, down), 'the bytes are in the rings while the connection lives').to.equal(true);
      first.client.destroy();
      first.peer.destroy();
      // Wait for both sides to release the slot, then connect until a connection
      // takes it (others may free lower slots meanwhile; those stay held).
      const stateWord = (Lay.slotOffset(currentDomain()!.geo, slot) >> 2) + Lay.SLOT.STATE;
      for (let i = 0; i < 200 && Lay.stateOf(Atomics.load(currentDomain()!.i32, stateWord)) !== Lay.SLOT_FREE; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      let second = await pair(server, port);
      for (let i = 0; i < 64 && slotOf(second.client) !== slot; i++) second = await pair(server, port);
      expect(slotOf(second.client), 'the same slot').to.equal(slot);
      expect(inRings(slot, up), 'client -> server bytes of the last connection').to.equal(false);
      expect(inRings(slot, down), 'server -> client bytes of the last connection').to.equal(false);
      second.client.destroy();
      second.peer.destroy();
    } finally {
      for (const sock of [...sockets, ...clients.splice(0)]) sock.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("that carried bulk data is gone once both sides let go, where pages cannot be given back too (a guest's BAR)", async () => {
    const server = zivm.createServer();
    const sockets: net.Socket[] = [];
    server.on('connection', (sock) => sockets.push(sock));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const domain = currentDomain()!;
    const region = domain.region as unknown as { discard(offset: number, length: number): boolean };
    try {
      // As in a guest, whose BAR cannot give pages back (the method is read-only on the prototype: an own one hides it).
      Object.defineProperty(region, 'discard', { value: () => false, configurable: true });
      const port = (server.address() as net.AddressInfo).port;
      const up = Buffer.alloc(64 * 1024, 'bulk-client-to-server-77d1/');
      const down = Buffer.alloc(64 * 1024, 'bulk-server-to-client-c40b/');
      const first = await pair(server, port);
      const slot = slotOf(first.client);
      let upGot = 0;
      let downGot = 0;
      const both = new Promise<void>((resolve) => {
        first.peer.on('data', (chunk: Buffer) => {
          upGot += chunk.length;
          if (upGot === up.length) first.peer.write(down);
        });
        first.client.on('data', (chunk: Buffer) => {
          downGot += chunk.length;
          if (downGot === down.length) resolve();
        });
      });
      first.client.write(up);
      await both;
      const marker = (buf: Buffer): Buffer => buf.subarray(0, 27);
      expect(inRings(slot, marker(up)) && inRings(slot, marker(down)), 'the bytes are in the rings while the connection lives').to.equal(true);
      first.client.destroy();
      first.peer.destroy();
      const stateWord = (Lay.slotOffset(domain.geo, slot) >> 2) + Lay.SLOT.STATE;
      for (let i = 0; i < 200 && Lay.stateOf(Atomics.load(domain.i32, stateWord)) !== Lay.SLOT_FREE; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(Lay.stateOf(Atomics.load(domain.i32, stateWord))).to.equal(Lay.SLOT_FREE);
      // No connection took the slot since: whoever let go last wiped the rings.
      expect(inRings(slot, marker(up)), 'client -> server bytes').to.equal(false);
      expect(inRings(slot, marker(down)), 'server -> client bytes').to.equal(false);
      const rings = Lay.ringOffsets(domain.geo, slot);
      for (const hdr of [rings.c2sHdr, rings.s2cHdr]) {
        expect(Atomics.load(domain.i32, (hdr + Lay.RING_HEAD) >>> 2), 'the ring starts over: the next client wipes nothing').to.equal(0);
      }
    } finally {
      delete (region as { discard?: unknown }).discard;
      for (const sock of [...sockets, ...clients.splice(0)]) sock.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
