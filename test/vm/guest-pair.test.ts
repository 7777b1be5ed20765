/**
 * zivm sockets between processes in two QEMU guests.
 *
 * One daemon, two guests booted together, each with an ivshmem-doorbell device
 * on the daemon's socket and a virtio-net NIC on a private link between the
 * two (QEMU socket netdev over host loopback: no other machine, no route off
 * it). Guest B (10.77.3.2) runs pair-peer.js `server`, guest A (10.77.3.1)
 * `client`; each dials the other by the other's eth0 address.
 *
 * One boot: A -> B (zivm echo, plain node:net echo, half-close, a refused
 * port), the same B -> A, then B powers off while A holds a zivm connection
 * to it.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ServerProc, startServer } from '../../tools/kit/daemon';
import { PAIR_ADDRS, PREFIX } from '../../tools/vm/pair';
import { Guest, GuestResult, ROOT, ensureGuestImage, pairDone, startLinkedPair } from '../../tools/vm/qemu';
import { Ev, consoleEvents } from '../../tools/vm/harness';

const PEER = path.join(ROOT, 'dist', 'test', 'vm', 'pair-peer.js');
const [A_ADDR, B_ADDR] = PAIR_ADDRS;
const BYTES = 16 << 20;
const TCP_BYTES = 1 << 20;
const HALF_BYTES = 1 << 20;
const TAIL = 1 << 20;
const REFUSED_PORT = 7739;
const ROUNDS = 20;

/** Collects a guest's `ZIVM-PAIR {json}` console lines, stamped with when they were seen. */
function collector(events: Ev[]): (chunk: string) => void {
  return consoleEvents(PREFIX, (entry) => events.push(entry));
}

const mibps = (bytes: number, ms: number) => (bytes / 1048576 / (ms / 1000)).toFixed(1);

(process.env.ZIVM_VM ? describe : describe.skip)('VM: zivm sockets between two guests', function () {
  this.timeout(300000);

  let dir = '';
  let server: ServerProc | undefined;
  let guests: Guest[] = [];
  const aEv: Ev[] = [];
  const bEv: Ev[] = [];
  let ra: GuestResult | undefined;
  let rb: GuestResult | undefined;
  let bootMs = 0;

  before(async function () {
    ensureGuestImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vmpair-'));
    const sock = path.join(dir, 'zivm.sock');
    // Several processes of a guest may each take a vector: 4 per peer.
    server = await startServer(sock, ['--size', '64M', '--vectors', '4', '--verbose', '--guests']);
    const common = [
      '--bytes',
      String(BYTES),
      '--tcp-bytes',
      String(TCP_BYTES),
      '--half-bytes',
      String(HALF_BYTES),
      '--tail',
      String(TAIL),
      '--refused-port',
      String(REFUSED_PORT),
      '--rounds',
      String(ROUNDS),
    ];
    const t0 = Date.now();
    const pair = await startLinkedPair(
      { args: [PEER, 'server', '--addr', B_ADDR, ...common], ivshmem: { socket: sock, vectors: 4 }, timeoutMs: 150000, onConsole: collector(bEv) },
      {
        args: [PEER, 'client', '--addr', A_ADDR, '--peer', B_ADDR, ...common],
        ivshmem: { socket: sock, vectors: 4 },
        timeoutMs: 150000,
        onConsole: collector(aEv),
      },
    );
    guests = pair;
    // Should one guest fail early, the other is not left waiting for it.
    [rb, ra] = await pairDone(pair);
    const joined = [aEv, bEv].map((entry) => entry.find((elem) => elem.what === 'joined')?.seenAt ?? NaN);
    bootMs = Math.max(...joined) - t0;
  });

  after(async function () {
    for (const geo of guests) geo.kill();
    if (server) await server.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return (
      `\n--- guest A (${A_ADDR}) console ---\n${ra?.console ?? guests[1]?.console() ?? '(none)'}` +
      `\n--- guest B (${B_ADDR}) console ---\n${rb?.console ?? guests[0]?.console() ?? '(none)'}` +
      `\n--- daemon ---\n${server?.out.stderr ?? ''}`
    );
  }
  const find = (events: Ev[], what: string, pred: (e: Ev) => boolean = () => true) => events.find((entry) => entry.what === what && pred(entry));
  /** [client's events, server's events, client address, server address] of a direction. */
  const dirs: [string, Ev[], Ev[], string, string][] = [
    ['A -> B', aEv, bEv, A_ADDR, B_ADDR],
    ['B -> A', bEv, aEv, B_ADDR, A_ADDR],
  ];

  it('both guests join the domain through their ivshmem devices and publish their eth0 addresses', function () {
    expect(ra?.timedOut, `watchdog fired${explain()}`).to.equal(false);
    expect(rb?.timedOut, `watchdog fired${explain()}`).to.equal(false);
    for (const [events, addr] of [
      [aEv, A_ADDR],
      [bEv, B_ADDR],
    ] as const) {
      expect(find(events, 'error'), explain()).to.equal(undefined);
      const j = find(events, 'joined');
      expect(j, explain()).to.not.equal(undefined);
      expect(j!.guest).to.equal(true);
      expect(j!.published).to.deep.equal([addr]);
    }
    expect(find(aEv, 'joined')!.id).to.not.equal(find(bEv, 'joined')!.id);
    expect(ra!.exitCode, `guest A's script failed${explain()}`).to.equal(0);
    process.stderr.write(`      both guests booted and joined ${bootMs} ms after the start (concurrently, TCG)\n`);
  });

  for (const [name, cEv, sEv, cAddr, sAddr] of dirs) {
    it(`${name}: plain node:net over eth0 works (the baseline path): plain sockets both ends, bytes on eth0`, function () {
      const res = find(cEv, 'plain');
      expect(res?.error, explain()).to.equal(undefined);
      expect(res!.plainNet).to.equal(true);
      expect(res!.transport).to.equal(null);
      expect(res!.remoteAddress).to.equal(sAddr);
      expect(res!.localAddress).to.equal(cAddr);
      expect(res!.sha256Ok).to.equal(true);
      expect(res!.eth0.tx).to.be.at.least(TCP_BYTES);
      const acc = find(sEv, 'accepted', (entry) => entry.tag === res!.tag);
      expect(acc?.kind, explain()).to.equal('plain');
      expect(acc!.plainNet).to.equal(true);
      expect(acc!.remoteAddress).to.equal(cAddr);
      process.stderr.write(
        `      ${name} node:net TCP: connect ${res!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${res!.rttUs.min}/${res!.rttUs.median}/${res!.rttUs.max} us, ` +
          `1 MiB echo ${Math.round(res!.echoMs)} ms (${mibps(2 * TCP_BYTES, res!.echoMs)} MiB/s both ways)\n`,
      );
    });

    it(`${name}: zivm client -> zivm server by the server guest's eth0 address: shm both ends, 16 MiB echo intact, nothing on eth0`, function () {
      const res = find(cEv, 'echo');
      expect(res?.error, explain()).to.equal(undefined);
      expect(res!.transport).to.equal('shm');
      expect(res!.remoteAddress).to.equal(sAddr);
      expect(res!.bytes).to.equal(BYTES);
      expect(res!.sha256Ok).to.equal(true);
      expect(res!.eth0.tx + res!.eth0.rx, 'bytes went over eth0').to.be.below(64 << 10);
      const acc = find(sEv, 'accepted', (entry) => entry.tag === res!.tag);
      expect(acc?.kind, explain()).to.equal('zivm');
      expect(acc!.transport).to.equal('shm');
      // The server sees the client at the address the client's guest published.
      expect(acc!.remoteAddress).to.equal(cAddr);
      process.stderr.write(
        `      ${name} zivm shm:     connect ${res!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${res!.rttUs.min}/${res!.rttUs.median}/${res!.rttUs.max} us, ` +
          `16 MiB echo ${Math.round(res!.echoMs)} ms (${mibps(2 * BYTES, res!.echoMs)} MiB/s both ways)\n`,
      );
    });

    it(`${name}: half-close: the client ends, the server (allowHalfOpen) keeps writing after 'end', the client gets it all, then 'end'`, function () {
      const res = find(cEv, 'half');
      expect(res?.error, explain()).to.equal(undefined);
      expect(res!.transport).to.equal('shm');
      const srv = find(sEv, 'half-server', (entry) => entry.tag === res!.tag);
      expect(srv, explain()).to.not.equal(undefined);
      expect(srv!.transport).to.equal('shm');
      expect(srv!.received).to.equal(HALF_BYTES);
      expect(res!.serverDigestOk, 'the server got what the client sent before its end').to.equal(true);
      expect(res!.firstDataAfterOurEnd).to.equal(true);
      expect(res!.tailBytes).to.equal(TAIL);
      expect(res!.tailOk).to.equal(true);
      expect(res!.gotEnd).to.equal(true);
      expect(res!.hadError).to.equal(false);
      process.stderr.write(`      ${name} half-close: 1 MiB up, end, 1 MiB back after it, end: ${Math.round(res!.ms)} ms\n`);
    });

    it(`${name}: a port nobody listens on at the other guest's address: TCP over eth0, ECONNREFUSED at once`, function () {
      const res = find(cEv, 'refused');
      expect(res, explain()).to.not.equal(undefined);
      expect(res!.transport).to.equal('tcp');
      expect(res!.code).to.equal('ECONNREFUSED');
      expect(res!.ms).to.be.below(5000);
    });
  }

  it("a second process of A, connected to B's zivm server, is killed: B's side of its connection ends within seconds", function () {
    const tag = `victim-${A_ADDR}`;
    const value = find(aEv, 'victim-connected');
    expect(value?.transport, explain()).to.equal('shm');
    const first = find(aEv, 'joined');
    expect(value!.peer, 'the second process is a peer of its own').to.not.equal(first?.id);
    expect(find(bEv, 'accepted', (entry) => entry.tag === tag)?.transport, explain()).to.equal('shm');
    const kill = find(aEv, 'killing-victim');
    const end = find(bEv, 'server-conn-close', (entry) => entry.tag === tag);
    expect(end, explain()).to.not.equal(undefined);
    const ms = end!.seenAt - kill!.seenAt;
    expect(ms).to.be.below(5000);
    const err = find(bEv, 'server-conn-error', (entry) => entry.tag === tag);
    process.stderr.write(`      A's process SIGKILLed -> B's socket ${err ? `error ${err.code}` : 'end'}, closed ~${ms} ms later (console lines)\n`);
  });

  it("B powers off mid-connection: A's zivm socket is closed within seconds", function () {
    const pre = find(aEv, 'pre-poweroff');
    expect(pre?.transport, explain()).to.equal('shm');
    expect(find(bEv, 'accepted', (entry) => entry.tag === `poweroff-${A_ADDR}`)?.transport, explain()).to.equal('shm');
    const off = find(bEv, 'powering-off');
    const gone = find(aEv, 'peer-gone');
    expect(off, explain()).to.not.equal(undefined);
    expect(gone?.error, explain()).to.equal(undefined);
    expect(gone!.ms).to.be.below(5000);
    expect(gone!.seenAt - off!.seenAt).to.be.below(5000);
    expect(rb!.exitCode, 'B never got to the end of its script').to.equal(null);
    process.stderr.write(
      `      B powered off -> A's socket ${gone!.code ? `error ${gone!.code}` : 'close'} ${Math.round(gone!.ms)} ms after A asked for it (${gone!.seenAt - off!.seenAt} ms between the console lines)\n`,
    );
  });
});
