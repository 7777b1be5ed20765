/**
 * Root in a guest, holding its ivshmem device, against the host and another
 * guest.
 *
 * The host runs its own domain (zivm.sock: host processes only) and, beside
 * it, one daemon per guest: a.sock for guest A (--guest-addr A), b.sock for
 * guest B (--guest-addr B). Both guests share a private link (eth0). Guest B
 * (attack-peer.js server) serves a zivm echo on its address; guest A
 * (attack-peer.js attacker) is root with its device and no agent: it writes
 * listener entries for the host's loopback ports (with the host's node id),
 * publishes B's address as its own with listeners on it, and searches all of
 * its memory for the bytes of the host's connections; then it forges
 * connection requests to a host server at 127.0.0.1.
 *
 * Host processes meanwhile: a client to a plain TCP server on 127.0.0.1 and
 * one to a zivm server bound to 127.0.0.1 (host<->host, with a marker); a
 * client in a network namespace of its own (no route anywhere) to B's server
 * by B's address (host<->guest B, another marker) and to the port where only
 * A listens, at B's address.
 */
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import nodeNet from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ServerProc, startServer } from '../../tools/kit/daemon';
import { Json, Proc, killAll } from '../../tools/kit/proc';
import { waitFor } from '../../tools/kit/wait';
import { PAIR_ADDRS } from '../../tools/vm/pair';
import { Guest, GuestResult, ROOT, ensureGuestImage, pairDone, startLinkedPair } from '../../tools/vm/qemu';
import { Ev, consoleEvents, spawnNsPeer } from '../../tools/vm/harness';
import { spawnPeer } from '../helpers/proc';

const PEER = path.join(ROOT, 'dist', 'test', 'vm', 'attack-peer.js');
const VICTIM = path.join(ROOT, 'dist', 'test', 'fixtures', 'victim.js');
const [B_ADDR, A_ADDR] = PAIR_ADDRS;
const B_PORT = 7741;
/** How long the attacker searches its memory, and guest B serves. */
const WINDOW_MS = 45000;

async function echo(proc: Proc, text: string, ms = 20000): Promise<Json> {
  proc.send({ cmd: 'echo', text });
  return proc.next((line) => line.event === 'echo' || line.event === 'error' || line.event === 'close', ms);
}

(process.env.ZIVM_VM ? describe : describe.skip)('VM: root in a guest, holding its device, against the host and another guest', function () {
  this.timeout(300000);

  let dir = '';
  const daemons: ServerProc[] = [];
  let guests: Guest[] = [];
  const aEv: Ev[] = [];
  const bEv: Ev[] = [];
  let ra: GuestResult | undefined;
  let rb: GuestResult | undefined;
  const markers = { hostHost: '', hostB: '' };
  const host: Record<string, Json> = {};
  let plain: nodeNet.Server | undefined;
  let zlo: Proc | undefined;
  let wild: Proc | undefined;
  let hostDone = 0;

  before(async function () {
    ensureGuestImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vmattack-'));
    const env = { ZIVM_SOCKET: path.join(dir, 'zivm.sock'), NODE_DEBUG: 'zivm' };
    daemons.push(await startServer(env.ZIVM_SOCKET, ['--size', '16M']));
    const aSock = path.join(dir, 'a.sock');
    const bSock = path.join(dir, 'b.sock');
    daemons.push(await startServer(aSock, ['--size', '16M', '--vectors', '2', '--guest-addr', A_ADDR]));
    daemons.push(await startServer(bSock, ['--size', '16M', '--vectors', '2', '--guest-addr', B_ADDR]));

    // The host's servers: plain TCP and zivm on 127.0.0.1, zivm on the wildcard (the guests' memory lists only that one).
    plain = nodeNet.createServer((sock) => sock.pipe(sock));
    await new Promise<void>((resolve) => plain!.listen(0, '127.0.0.1', resolve));
    const loPort = (plain.address() as nodeNet.AddressInfo).port;
    zlo = spawnPeer('peer', ['echo-server', 'zivm', '127.0.0.1'], env);
    const zloPort = (await zlo.event('listening')).port as number;
    wild = spawnPeer('peer', ['echo-server', 'zivm', '0.0.0.0'], env);
    const wildPort = (await wild.event('listening')).port as number;
    host.ports = { loPort, zloPort, wildPort };

    markers.hostHost = `host-host-${crypto.randomBytes(8).toString('hex')}`;
    markers.hostB = `host-guestB-${crypto.randomBytes(8).toString('hex')}`;
    const pair = await startLinkedPair(
      {
        args: [PEER, 'server', '--addr', B_ADDR, '--port', String(B_PORT), '--for', String(WINDOW_MS)],
        ivshmem: { socket: bSock, vectors: 2 },
        timeoutMs: 200000,
        onConsole: consoleEvents('ZIVM-ATTACK ', (entry) => bEv.push(entry)),
      },
      {
        args: [
          PEER,
          'attacker',
          '--addr',
          A_ADDR,
          '--host-node',
          String(fs.statSync('/proc/self/ns/net').ino),
          '--victim-ports',
          `${loPort},${zloPort},${wildPort}`,
          '--b-addr',
          B_ADDR,
          '--b-port',
          String(B_PORT),
          '--markers',
          `${markers.hostHost},${markers.hostB}`,
          '--for',
          String(WINDOW_MS),
        ],
        ivshmem: { socket: aSock, vectors: 2 },
        timeoutMs: 200000,
        onConsole: consoleEvents('ZIVM-ATTACK ', (entry) => aEv.push(entry)),
      },
    );
    guests = pair;
    const done = pairDone(pair);
    try {
      await waitFor(
        () =>
          aEv.some((entry) => entry.what === 'armed' || entry.what === 'error') && bEv.some((entry) => entry.what === 'listening' || entry.what === 'error'),
        150000,
      );

      // Host <-> host, at loopback ports the attacker has listener entries for.
      const toPlain = spawnPeer('victim', [String(loPort), '127.0.0.1'], env);
      host.plain = { connect: await toPlain.event('connect'), echo: await echo(toPlain, 'to the real one') };
      const toZlo = spawnPeer('victim', [String(zloPort), '127.0.0.1'], env);
      host.zlo = { connect: await toZlo.event('connect'), echo: await echo(toZlo, markers.hostHost) };
      // Host <-> guest B, from a network namespace with no route anywhere: only shared memory reaches B.
      const toB = spawnNsPeer('true', VICTIM, [String(B_PORT), B_ADDR], env);
      host.b = { connect: await toB.next((line) => line.event === 'connect' || line.event === 'error', 20000) };
      if (host.b.connect.event === 'connect') host.b.echo = await echo(toB, markers.hostB);
      // The port only A listens on, at B's address.
      const toA = spawnNsPeer('true', VICTIM, [String(B_PORT + 1), B_ADDR], env);
      host.taken = await toA.next((line) => line.event === 'connect' || line.event === 'error', 20000);
      hostDone = Date.now();
      [rb, ra] = await done;
    } finally {
      await killAll();
    }
  });

  after(async function () {
    for (const guest of guests) guest.kill();
    plain?.close();
    for (const daemon of daemons) await daemon.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return (
      `\n--- host ---\n${JSON.stringify(host)}` +
      `\n--- guest A (${A_ADDR}) console ---\n${ra?.console ?? guests[1]?.console() ?? '(none)'}` +
      `\n--- guest B (${B_ADDR}) console ---\n${rb?.console ?? guests[0]?.console() ?? '(none)'}`
    );
  }
  const event = (events: Ev[], what: string): Ev | undefined => events.find((entry) => entry.what === what);

  it('both guests ran: A holds its device (no agent), B serves over its domain', function () {
    expect(event(aEv, 'error'), explain()).to.equal(undefined);
    expect(event(bEv, 'error'), explain()).to.equal(undefined);
    expect(event(aEv, 'armed'), explain()).to.not.equal(undefined);
    expect(event(bEv, 'joined')?.guest, explain()).to.equal(true);
    expect(ra?.exitCode, explain()).to.equal(0);
  });

  it('in B (a kernel strict about device memory), the agent hands out only the device, so it lets only root join: uid 65534 is refused', function () {
    const other = event(bEv, 'other-uid');
    expect(other?.code, explain()).to.equal(0);
    expect(
      other!.joins.map((join: Json) => join.values),
      JSON.stringify(other),
    ).to.deep.equal([[-13], [-13]]);
    expect(other!.joins.flatMap((join: Json) => join.links)).to.deep.equal([]);
  });

  it("A does not receive host connections to 127.0.0.1: the plain server's client goes over TCP, the zivm server's over the host domain, both to the real server", function () {
    expect(host.plain.connect.transport, explain()).to.equal('tcp');
    expect(host.plain.echo.event, explain()).to.equal('echo');
    expect(host.zlo.connect.transport, explain()).to.equal('shm');
    expect(host.zlo.echo.event, explain()).to.equal('echo');
    expect(zlo!.lines.filter((line) => line.event === 'connection').length, 'connections the real zivm server saw').to.equal(1);
  });

  it("A cannot take B's address: a host client reaches B's real server there over B's memory, and A's listener at B's address gets nothing", function () {
    expect(host.b.connect.transport, explain()).to.equal('shm');
    expect(host.b.echo?.event, explain()).to.equal('echo');
    expect(bEv.filter((entry) => entry.what === 'accepted').map((entry) => entry.transport)).to.deep.equal(['shm']);
    expect(host.taken.event, explain()).to.equal('error');
    expect(host.taken.code, explain()).to.match(/ENETUNREACH|EHOSTUNREACH|ECONNREFUSED/);
  });

  it('A cannot reach a host server bound to 127.0.0.1 (not listed in its memory); its requests to the wildcard server at 127.0.0.1 are refused', function () {
    const listed = event(aEv, 'listeners')?.listed as Json[] | undefined;
    expect(listed, explain()).to.not.equal(undefined);
    const ports = listed!.map((entry) => entry.port);
    expect(ports, "the host's wildcard server is listed for guests").to.include(host.ports.wildPort);
    expect(ports.filter((port) => port === host.ports.zloPort).length, 'entries for the loopback zivm server: only the one A wrote').to.equal(1);
    const requests = event(aEv, 'requests');
    expect(requests?.states, explain()).to.deep.equal([
      { as: 'itself', state: 4 },
      { as: 'owner', state: 4 },
    ]);
    expect(
      wild!.lines.filter((line) => line.event === 'connection'),
      'connections the wildcard server saw',
    ).to.deep.equal([]);
  });

  it('A never sees a byte of the host<->host or host<->B connections in the memory it maps (and does find what it wrote itself)', function () {
    const scanned = event(aEv, 'scanned');
    expect(scanned, explain()).to.not.equal(undefined);
    expect(scanned!.seenAt, 'the search went on until after the host connections were done').to.be.above(hostDone);
    expect(scanned!.seen, explain()).to.deep.equal({ [markers.hostHost]: 0, [markers.hostB]: 0 });
    expect(scanned!.scans).to.be.at.least(3);
    expect(event(aEv, 'requests')?.controlSeen, 'the control marker A wrote into its own request').to.be.at.least(1);
  });
});
