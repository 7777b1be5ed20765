/**
 * The domain's re-check (Domain.recheck): it looks at the ends of
 * connections whatever the doorbells say, so that a wake-up lost costs at
 * most about a second, and it leaves alone ends with nothing waiting, which
 * an event would find nothing to do for.
 */
import { expect } from 'chai';
import type net from 'node:net';
import * as zivm from '../src';
import { currentDomain } from '../src/shm/join';
import * as Lay from '../src/shm/layout';
import type { ShmHandle } from '../src/net/handle';

function channelOf(sock: net.Socket): ShmHandle['ch'] {
  return (sock as unknown as { _handle: ShmHandle })._handle.ch;
}

/** Counts the events the domain gives `sock`'s end of its connection from now on. */
function countEvents(sock: net.Socket): { count: () => number } {
  const ch = channelOf(sock);
  const inner = ch.onchange;
  let events = 0;
  ch.onchange = () => {
    events++;
    inner();
  };
  return { count: () => events };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('the re-check', function () {
  this.timeout(30000);
  let server: net.Server;
  let port = 0;
  const open: net.Socket[] = [];
  const accepted: net.Socket[] = [];

  beforeEach(async () => {
    server = zivm.createServer((sock) => {
      open.push(sock);
      accepted.push(sock);
      sock.on('data', (chunk) => sock.write(chunk));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });

  afterEach(async () => {
    for (const sock of open.splice(0)) sock.destroy();
    accepted.length = 0;
    await new Promise((resolve) => server.close(resolve));
  });

  async function connected(): Promise<{ client: zivm.Socket; peer: net.Socket }> {
    const client = zivm.connect(port, '127.0.0.1');
    open.push(client);
    await new Promise((resolve) => client.once('connect', resolve));
    expect(client.transport).to.equal('shm');
    // An echo: both ends have had traffic, and the server's end exists.
    await new Promise((resolve) => {
      client.once('data', resolve);
      client.write('hello');
    });
    return { client, peer: accepted[accepted.length - 1] };
  }

  it('gives a quiet connection no events (neither end), over several re-checks', async () => {
    const { client, peer } = await connected();
    // What the echo left (the busy-poll's last look) is over by then.
    await sleep(100);
    const mine = countEvents(client);
    const theirs = countEvents(peer);
    // The re-check runs every 500 ms: three of them at least.
    await sleep(1700);
    expect(mine.count(), "the client's end").to.equal(0);
    expect(theirs.count(), "the server's end").to.equal(0);
    // Still connected and served.
    const answer = await new Promise<Buffer>((resolve) => {
      client.once('data', resolve);
      client.write('again');
    });
    expect(answer.toString()).to.equal('again');
  });

  it('reads bytes whose doorbell was never rung within about a second', async () => {
    const { client, peer } = await connected();
    const ch = channelOf(client);
    const domain = currentDomain()!;
    // The word the server's end looks at before ringing ours: cleared, it takes
    // our end for awake and rings nobody (as a word someone wrote into the region would make it).
    const sleeping = (Lay.ringOffsets(domain.geo, ch.slot).s2cHdr + Lay.RING_READER_SLEEPING) >>> 2;
    // Let the busy-poll of both ends stop first: nothing would look at the ring then.
    await sleep(100);
    Atomics.store(domain.i32, sleeping, 0);
    const start = Date.now();
    const got = new Promise<Buffer>((resolve) => client.once('data', resolve));
    peer.write('unannounced');
    const chunk = await got;
    const ms = Date.now() - start;
    expect(chunk.toString()).to.equal('unannounced');
    expect(ms, 'ms until the bytes were read').to.be.below(1500);
  });
});
