/**
 * Several zivm processes in one guest, sharing its ivshmem device through the
 * in-guest agent (`zivm guest setup`), each a peer of the domain with an MSI-X
 * vector of its own: loopback inside the guest, guest <-> host with half-close,
 * a process that finds every vector taken (TCP), vectors handed out again, and
 * guest processes killed mid-connection (the agent reaps them; the host's
 * sockets end). Host side as in guest-net.test.ts: a peer in a private network
 * namespace (10.77.1.1 on its lo); the guest has no network device.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ServerProc, runCli, startServer } from '../../tools/kit/daemon';
import { GUEST_ADDR, HOST_ADDR } from '../../tools/vm/peer';
import { Ev, NsPeer, consoleEvents, spawnNsPeer } from '../../tools/vm/harness';
import { GuestResult, ROOT, ensureGuestImage, startGuest } from '../../tools/vm/qemu';
import { sleep } from '../../tools/kit/wait';

const PEER = path.join(ROOT, 'dist', 'test', 'vm', 'procs-peer.js');
const HOST_PORT = 7801;
const GUEST_PORT = 7802;
const BYTES = 4 << 20;
const VECTORS = 4;

interface StatPeer {
  id: number;
  kind: string;
  state: string;
}

(process.env.ZIVM_VM ? describe : describe.skip)('VM: several zivm processes in one guest, through the guest agent', function () {
  this.timeout(300000);

  let dir = '';
  let sock = '';
  let server: ServerProc | undefined;
  let hostPeer: NsPeer | undefined;
  let hostEv: Ev[] = [];
  const guestEv = new Map<string, Ev>();
  let result: GuestResult;
  let peersUp: StatPeer[] = [];
  let peersAfter: StatPeer[] = [];
  const stats: Promise<void>[] = [];

  const statPeers = async (): Promise<StatPeer[]> => {
    const res = await runCli(['stat', '--json'], { ZIVM_SOCKET: sock });
    return (JSON.parse(res.stdout) as { peers: StatPeer[] }).peers;
  };
  before(async function () {
    ensureGuestImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vmprocs-'));
    sock = path.join(dir, 'zivm.sock');
    server = await startServer(sock, ['--size', '64M', '--vectors', String(VECTORS), '--verbose', '--guest-addr', GUEST_ADDR]);

    // The host peer, in a network namespace of its own whose only address besides loopback is on its lo.
    hostPeer = spawnNsPeer(`ip addr add ${HOST_ADDR}/32 dev lo`, PEER, ['host', '--port', String(HOST_PORT)], { ZIVM_SOCKET: sock });
    hostEv = hostPeer.lines;
    if (!(await hostPeer.find((entry) => entry.ev === 'listening', 10000))) throw new Error(`the host peer did not listen: ${hostPeer.stderr()}`);

    const guest = startGuest({
      args: [PEER, 'guest', '--host-addr', HOST_ADDR, '--port', String(HOST_PORT), '--guest-port', String(GUEST_PORT), '--bytes', String(BYTES)],
      ivshmem: { socket: sock, vectors: VECTORS },
      // Lets the agent hand out BAR2 and BAR0 through sysfs while vfio-pci holds the device.
      kernelArgs: ['iomem=relaxed'],
      timeoutMs: 200000,
      onConsole: consoleEvents('ZIVM-PROCS ', (out) => {
        guestEv.set(String(out.what), out);
        if (out.what === 'members-up') stats.push(statPeers().then((parts) => void (peersUp = parts)));
        if (out.what === 'host-may-connect') {
          hostPeer!.send({ cmd: 'tail', host: GUEST_ADDR, port: GUEST_PORT });
          void hostPeer!.find((entry) => entry.ev === 'tail').then(() => hostPeer!.send({ cmd: 'hold', host: GUEST_ADDR, port: GUEST_PORT, tag: 'srv' }));
        }
      }),
    });
    result = await guest.done;
    await Promise.all(stats);
    // The daemon reaps the guest and its processes once QEMU is gone.
    const time = Date.now();
    do {
      peersAfter = await statPeers();
      if (!peersAfter.some((peer) => peer.kind === 'guest' || peer.kind === 'guest-process')) break;
      await sleep(100);
    } while (Date.now() - time < 5000);
  });

  after(async function () {
    await hostPeer?.stop();
    if (server) await server.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return `\n--- guest console ---\n${result?.console ?? '(none)'}\n--- daemon ---\n${server?.out.stderr ?? ''}\n--- host peer ---\n${JSON.stringify(hostEv)}\n${hostPeer?.stderr() ?? ''}`;
  }

  it('zivm guest setup starts the agent; the guest runs to the end', function () {
    expect(result.timedOut, `watchdog fired${explain()}`).to.equal(false);
    expect(guestEv.get('error'), explain()).to.equal(undefined);
    expect(guestEv.get('setup')?.out, explain()).to.match(/agent pid \d+/);
    expect(guestEv.get('done'), explain()).to.not.equal(undefined);
  });

  it('three processes are members at once, each with a peer entry and an MSI-X vector of its own', function () {
    const subject = guestEv.get('server')!;
    const list = guestEv.get('local')!;
    const holder = guestEv.get('to-host')!;
    expect(
      [subject.peer, list.peer, holder.peer].every((elem) => typeof elem === 'number'),
      explain(),
    ).to.equal(true);
    expect(new Set([subject.peer, list.peer, holder.peer]).size).to.equal(3);
    expect(new Set([subject.vector, list.vector, holder.vector]).size).to.equal(3);
    expect(subject.guestPeer).to.equal(list.guestPeer);
    expect(holder.guestPeer).to.equal(list.guestPeer);
    // Seen from the host while they were up: the guest and its processes.
    const procs = peersUp.filter((peer) => peer.kind === 'guest-process' && peer.state === 'alive').map((peer) => peer.id);
    expect(procs, JSON.stringify(peersUp)).to.include.members([subject.peer, list.peer, holder.peer]);
    expect(peersUp.some((peer) => peer.kind === 'guest' && peer.id === subject.guestPeer)).to.equal(true);
  });

  it('loopback inside the guest, between two of its processes: shm, echo intact, half-close', function () {
    const list = guestEv.get('local')!;
    expect(list.transport, explain()).to.equal('shm');
    expect(list.serverSaw.transport).to.equal('shm');
    expect(list.remoteAddress).to.equal('127.0.0.1');
    expect(list.echoOk).to.equal(true);
    expect(list.tail, 'the server wrote after the client ended').to.equal(`tail ${BYTES}`);
    process.stderr.write(`      in-guest loopback: ${BYTES >> 20} MiB echo + half-close in ${list.ms} ms\n`);
  });

  it('guest process -> host: shm, echo intact, half-close', function () {
    const holder = guestEv.get('to-host')!;
    expect(holder.transport, explain()).to.equal('shm');
    expect(holder.echoOk).to.equal(true);
    expect(holder.tail).to.equal(`tail ${BYTES}`);
    const acc = hostEv.find((entry) => entry.ev === 'accepted' && entry.id === 1);
    expect(acc?.transport, explain()).to.equal('shm');
    expect(acc?.remoteAddress).to.equal(GUEST_ADDR);
    process.stderr.write(`      guest -> host: ${BYTES >> 20} MiB echo + half-close in ${holder.ms} ms\n`);
  });

  it('host -> guest process: shm, echo intact, half-close', function () {
    const target = hostEv.find((entry) => entry.ev === 'tail');
    expect(target?.error, explain()).to.equal(undefined);
    expect(target!.transport).to.equal('shm');
    expect(target!.echoOk).to.equal(true);
    expect(target!.tail).to.equal(`tail ${1 << 20}`);
    expect(guestEv.get('host-tail')?.transport).to.equal('shm');
  });

  it(`a fifth process finds all ${VECTORS} vectors taken: TCP, bytes intact, and the reason says so`, function () {
    const addon = guestEv.get('no-vector')!;
    expect(addon, explain()).to.not.equal(undefined);
    expect(addon.peer).to.equal(null);
    expect(addon.reason).to.match(/no vector left/);
    expect(addon.transport).to.equal('tcp');
    expect(addon.serverSaw.transport).to.equal('tcp');
    expect(addon.echoOk).to.equal(true);
    expect(addon.tail).to.equal(`tail ${65536}`);
  });

  it('vectors of processes that were killed are handed out again', function () {
    const value = guestEv.get('vector-reused')!;
    expect(value?.transport, explain()).to.equal('shm');
    expect(value.echoOk).to.equal(true);
    expect(value.vector).to.be.a('number');
  });

  it('another user of the guest joins once (--per-uid 1), and gets BAR2, BAR0 and an eventfd, never the VFIO device', function () {
    const other = guestEv.get('other-uid')!;
    expect(other?.code, explain()).to.equal(0);
    const [first, second] = other.joins as { values: number[]; links: string[] }[];
    expect(first.values.length, JSON.stringify(other)).to.equal(9);
    expect(first.values[0], 'the protocol version').to.equal(2);
    expect(first.values[8], 'BAR0 is mapped (BAR0_MAP), not written through the device').to.equal(1);
    expect(first.links.map((link) => link.replace(/^.*\//, '').replace(/^anon_inode:\[(\w+)\]$/, '$1')).sort()).to.deep.equal([
      'eventfd',
      'resource0',
      'resource2',
    ]);
    for (const link of first.links) expect(link, 'no VFIO fd').to.not.match(/vfio/);
    expect(second.values, 'the second join of that uid').to.deep.equal([-122]);
    expect(second.links).to.deep.equal([]);
  });

  it('a guest client process killed mid-connection: the host side ends within seconds', function () {
    expect(guestEv.get('victim-connected')?.transport, explain()).to.equal('shm');
    const acc = hostEv.find((entry) => entry.ev === 'accepted' && entry.id === 2);
    expect(acc?.transport, explain()).to.equal('shm');
    const end = hostEv.find((entry) => entry.id === 2 && (entry.ev === 'conn-close' || entry.ev === 'conn-error'));
    expect(end, explain()).to.not.equal(undefined);
    const ms = end!.seenAt - guestEv.get('killing-client')!.seenAt;
    expect(ms).to.be.below(5000);
    const err = hostEv.find((entry) => entry.id === 2 && entry.ev === 'conn-error');
    process.stderr.write(`      guest client SIGKILLed -> host socket ${err ? `error ${err.code}` : 'close'} after ~${ms} ms\n`);
  });

  it('a guest server process killed with a connection from the host open: the host side ends within seconds', function () {
    expect(hostEv.find((entry) => entry.ev === 'held' && entry.tag === 'srv')?.transport, explain()).to.equal('shm');
    const end = hostEv.find((entry) => entry.ev === 'held-close' && entry.tag === 'srv');
    expect(end, explain()).to.not.equal(undefined);
    const ms = end!.seenAt - guestEv.get('killing-server')!.seenAt;
    expect(ms).to.be.below(5000);
    const first = hostEv.find((entry) => (entry.ev === 'held-end' || entry.ev === 'held-error') && entry.tag === 'srv');
    const err = hostEv.find((entry) => entry.ev === 'held-error' && entry.tag === 'srv');
    // allowHalfOpen: the end comes first; a write after it is taken, the next fails.
    if (first?.ev === 'held-end') expect(err?.code, explain()).to.equal('EPIPE');
    process.stderr.write(
      `      guest server SIGKILLed -> host socket ${first?.ev === 'held-end' ? `end after ~${first.seenAt - guestEv.get('killing-server')!.seenAt} ms, then its write failed with ${err?.code}` : `error ${err?.code}`}, close after ~${ms} ms\n`,
    );
  });

  it('the agent killed: its processes leave by themselves (both ends of their connections close); a new agent takes over', function () {
    expect(guestEv.get('orphan-connected')?.transport, explain()).to.equal('shm');
    const closed = guestEv.get('orphan-closed');
    expect(closed?.ev, explain()).to.equal('closed');
    // The host's side of that connection (the fourth the host server accepted) ends too.
    const acc = hostEv.filter((entry) => entry.ev === 'accepted');
    const id = acc[acc.length - 2]?.id; // the last one is the client after the new agent
    expect(
      hostEv.some((entry) => entry.id === id && entry.ev === 'conn-close'),
      explain(),
    ).to.equal(true);
    const ms = closed!.seenAt - guestEv.get('killing-agent')!.seenAt;
    expect(ms).to.be.below(5000);
    expect(guestEv.get('setup-again')?.out).to.match(/agent pid \d+/);
    const fresh = guestEv.get('after-new-agent')!;
    expect(fresh.transport, explain()).to.equal('shm');
    expect(fresh.echoOk).to.equal(true);
    process.stderr.write(
      `      agent SIGKILLed -> its process's connection closed (${closed!.code ?? 'no error'}) ~${ms} ms later; a new agent serves new processes\n`,
    );
  });

  it('after the guest powered off, the daemon has reaped it and its processes', function () {
    expect(
      peersAfter.filter((peer) => peer.kind === 'guest' || peer.kind === 'guest-process'),
      JSON.stringify(peersAfter),
    ).to.deep.equal([]);
  });
});
