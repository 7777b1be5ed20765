/**
 * A corrupt or hostile peer can break its own connections, never crash or
 * hang the process: a ring position in shared memory that makes no sense
 * fails the socket with ERR_ZIVM_CORRUPT.
 */
import { expect } from 'chai';
import type net from 'node:net';
import * as zivm from '../src';
import { currentDomain } from '../src/shm/join';
import { ShmHandle } from '../src/net/handle';
import * as Lay from '../src/shm/layout';

type Any = Record<string, any>;

async function pair(): Promise<{ server: net.Server; client: zivm.Socket; peer: net.Socket }> {
  const server = zivm.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = zivm.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => client.once('connect', resolve));
  const peer = await accepted;
  expect(client.transport).to.equal('shm');
  return { server, client, peer };
}

function ringHeader(sock: net.Socket, which: 'c2s' | 's2c'): number {
  const handle = (sock as unknown as Any)._handle as ShmHandle;
  const domain = currentDomain()!;
  const res = Lay.ringOffsets(domain.geo, handle.ch.slot);
  return which === 'c2s' ? res.c2sHdr : res.s2cHdr;
}

describe('corrupted shared memory', function () {
  this.timeout(10000);

  it('a reader whose ring head jumps ahead fails with ERR_ZIVM_CORRUPT, and the process carries on', async () => {
    const { server, client, peer } = await pair();
    const domain = currentDomain()!;
    const hdr = ringHeader(client, 's2c');
    Atomics.store(domain.i32, (hdr + Lay.RING_HEAD + 4) >> 2, 0x7fffffff); // head's high half: 2^62 bytes ahead
    const err = new Promise<Any>((resolve) => client.once('error', resolve));
    const closed = new Promise((resolve) => client.once('close', resolve));
    peer.on('error', () => undefined);
    // Ring the reader's doorbell as a producer would (a real producer's next
    // publish would overwrite the bad head: the point is what the reader does).
    domain.notify(domain.id, ((client as unknown as Any)._handle as ShmHandle).ch.slot);
    expect((await err).code).to.equal('ERR_ZIVM_CORRUPT');
    await closed;
    peer.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('a writer whose ring tail runs away fails with ERR_ZIVM_CORRUPT once it looks at it (a write that needs more room than it last saw)', async () => {
    const { server, client, peer } = await pair();
    const domain = currentDomain()!;
    const hdr = ringHeader(client, 'c2s');
    Atomics.store(domain.i32, (hdr + Lay.RING_TAIL + 4) >> 2, 0x12345678);
    const err = new Promise<Any>((resolve) => client.once('error', resolve));
    client.write(Buffer.alloc(domain.geo.ringSize + 1, 0x79));
    expect((await err).code).to.equal('ERR_ZIVM_CORRUPT');
    peer.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('a slot whose state word is overwritten is not trusted: new connections still work', async () => {
    const { server, client, peer } = await pair();
    const domain = currentDomain()!;
    const slot = ((client as unknown as Any)._handle as ShmHandle).ch.slot;
    Atomics.store(domain.i32, Lay.slotOffset(domain.geo, slot) >> 2, -1);
    client.destroy();
    peer.destroy();
    const again = await pair();
    const got = new Promise<string>((resolve) => again.client.once('data', (buf) => resolve(buf.toString())));
    again.peer.write('still fine');
    expect(await got).to.equal('still fine');
    again.client.destroy();
    again.peer.destroy();
    await new Promise((resolve) => again.server.close(resolve));
    await new Promise((resolve) => server.close(resolve));
    // Nobody frees a slot whose state is garbage: give it back for the tests after this one.
    Atomics.store(domain.i32, Lay.slotOffset(domain.geo, slot) >> 2, Lay.makeState(1, Lay.SLOT_FREE));
  });
});
