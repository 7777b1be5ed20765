/**
 * A zivm socket between a host process and a process in a QEMU guest.
 *
 * Host: a zivm daemon, and net-peer.js `host` in a private network namespace
 * whose only non-loopback address is 10.77.1.1/16, on a tap device; QEMU runs
 * in that namespace with the guest's eth0 on the tap (10.77.2.2/16), so host
 * peer and guest also have a real TCP path between them, and nothing else:
 * no byte can leave. Guest: net-peer.js `guest`, which binds the ivshmem device
 * to vfio-pci, starts the agent and joins the domain through it. A second host
 * peer (10.77.1.3, on the lo of a namespace of its own) is reachable from the
 * guest only over shared memory.
 *
 * One boot: guest client -> host server, a refused port both ways (real TCP:
 * ECONNREFUSED), host client -> guest server, a host peer killed, then the
 * guest powers off with a connection to the host open.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ServerProc, startServer } from '../../tools/kit/daemon';
import { GUEST_ADDR, HOST_ADDR } from '../../tools/vm/peer';
import { Ev, NsPeer, consoleEvents, spawnNsPeer } from '../../tools/vm/harness';
import { GuestResult, ROOT, ensureGuestImage, startGuest } from '../../tools/vm/qemu';

const PEER = path.join(ROOT, 'dist', 'test', 'vm', 'net-peer.js');
const HOST_PORT = 7701;
const GUEST_PORT = 7702;
const REFUSED_PORT = 7709;
const TAP = 'ztap0';
const GUEST_MAC = '52:54:00:77:02:02';
const VICTIM_ADDR = '10.77.1.3';
const VICTIM_PORT = 7703;
const BYTES = 16 << 20;
const ROUNDS = 20;

(process.env.ZIVM_VM ? describe : describe.skip)('VM: zivm sockets between a host process and a guest process', function () {
  this.timeout(300000);

  let dir = '';
  let server: ServerProc | undefined;
  let hostPeer: NsPeer | undefined;
  let victim: NsPeer | undefined;
  let victimKilledAt = 0;
  let victimGoneAt = 0;
  let hostEv: Ev[] = [];
  let victimEv: Ev[] = [];
  const guestEv = new Map<string, Ev>();
  let result: GuestResult;
  let poweringOffAt = 0;
  let qemuExitAt = 0;

  before(async function () {
    ensureGuestImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vmnet-'));
    const sock = path.join(dir, 'zivm.sock');
    server = await startServer(sock, ['--size', '64M', '--vectors', '1', '--verbose', '--guest-addr', GUEST_ADDR]);

    // Host peers, each in a network namespace of its own: the main one with its address on a
    // tap device the guest's eth0 is plugged into, the victim with its address on its lo.
    const start = async (net: string, port: number): Promise<NsPeer> => {
      const part = spawnNsPeer(net, PEER, ['host', '--port', String(port)], { ZIVM_SOCKET: sock });
      if (!(await part.find((entry) => entry.ev === 'listening', 10000))) throw new Error(`a host peer did not listen: ${part.stderr()}`);
      return part;
    };
    hostPeer = await start(`ip tuntap add dev ${TAP} mode tap && ip addr add ${HOST_ADDR}/16 dev ${TAP} && ip link set ${TAP} up`, HOST_PORT);
    victim = await start(`ip addr add ${VICTIM_ADDR}/32 dev lo`, VICTIM_PORT);
    hostEv = hostPeer.lines;
    victimEv = victim.lines;

    const guest = startGuest({
      args: [
        PEER,
        'guest',
        '--host-addr',
        HOST_ADDR,
        '--port',
        String(HOST_PORT),
        '--refused-port',
        String(REFUSED_PORT),
        '--guest-port',
        String(GUEST_PORT),
        '--bytes',
        String(BYTES),
        '--rounds',
        String(ROUNDS),
        '--victim-addr',
        VICTIM_ADDR,
        '--victim-port',
        String(VICTIM_PORT),
      ],
      ivshmem: { socket: sock, vectors: 1 },
      tap: { ifname: TAP, netnsPid: hostPeer.proc.pid!, mac: GUEST_MAC },
      timeoutMs: 150000,
      onConsole: consoleEvents('ZIVM-NET ', (out) => {
        guestEv.set(String(out.what), out);
        if (out.what === 'listening') {
          hostPeer!.send({ cmd: 'refused', host: GUEST_ADDR, port: REFUSED_PORT });
          hostPeer!.send({ cmd: 'connect', host: GUEST_ADDR, port: GUEST_PORT, bytes: BYTES, rounds: ROUNDS });
        }
        if (out.what === 'victim-connected') {
          victimKilledAt = Date.now();
          victim!.proc.kill('SIGKILL');
        }
        if (out.what === 'victim-gone') victimGoneAt = Date.now();
        if (out.what === 'powering-off') poweringOffAt = Date.now();
      }),
    });
    result = await guest.done;
    qemuExitAt = Date.now();
    // The host's side of the connection the guest left open.
    await hostPeer.find((entry) => entry.id === 2 && (entry.ev === 'conn-close' || entry.ev === 'conn-error'), 10000);
  });

  after(async function () {
    if (victim && victim.proc.exitCode === null && victim.proc.signalCode === null) victim.proc.kill('SIGKILL');
    await hostPeer?.stop();
    if (server) await server.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return `\n--- guest console ---\n${result?.console ?? '(none)'}\n--- daemon ---\n${server?.out.stderr ?? ''}\n--- host peer ---\n${JSON.stringify(hostEv)}\n${hostPeer?.stderr() ?? ''}`;
  }

  it('zivm guest setup binds the device and starts the agent; the guest process joins through it and publishes its address', function () {
    expect(result.timedOut, `watchdog fired${explain()}`).to.equal(false);
    expect(guestEv.get('error'), explain()).to.equal(undefined);
    const j = guestEv.get('joined');
    expect(j, explain()).to.not.equal(undefined);
    expect(j!.guest).to.equal(true);
    expect(j!.pci, 'ZIVM_GUEST_PCI=auto found the device zivm guest setup bound').to.equal(j!.setupPci);
    expect(j!.published).to.deep.equal([GUEST_ADDR]);
    // QEMU is the daemon's peer; the process has an entry of its own, rung as one of the guest's vectors.
    expect(server!.out.stderr).to.match(new RegExp(`peer ${j!.guestPeer} joined`));
    expect(j!.id).to.not.equal(j!.guestPeer);
    expect(j!.vector).to.equal(0);
  });

  it('(a) guest client -> host server by the address the host published: shm, 16 MiB echo intact', function () {
    const res = guestEv.get('to-host');
    expect(res?.error, explain()).to.equal(undefined);
    expect(res!.transport).to.equal('shm');
    expect(res!.remoteAddress).to.equal(HOST_ADDR);
    expect(res!.bytes).to.equal(BYTES);
    expect(res!.sha256Ok).to.equal(true);
    const acc = hostEv.find((entry) => entry.ev === 'accepted' && entry.id === 1);
    expect(acc?.transport, explain()).to.equal('shm');
    // The server sees the client at an address the client's node published.
    expect(acc?.remoteAddress, explain()).to.equal(GUEST_ADDR);
    process.stderr.write(
      `      guest->host: connect ${res!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${res!.rttUs.min}/${res!.rttUs.median}/${res!.rttUs.max} us, ` +
        `16 MiB echo ${Math.round(res!.echoMs)} ms (${((2 * BYTES) / 1048576 / (res!.echoMs / 1000)).toFixed(1)} MiB/s both ways)\n`,
    );
  });

  it('(c) guest -> a host address and port nobody listens on: TCP over eth0, ECONNREFUSED at once', function () {
    const res = guestEv.get('refused');
    expect(res, explain()).to.not.equal(undefined);
    expect(res!.transport).to.equal('tcp');
    expect(res!.code).to.equal('ECONNREFUSED');
    expect(res!.ms).to.be.below(5000);
  });

  it('(c) host -> a guest address and port nobody listens on: TCP over the tap, ECONNREFUSED at once', function () {
    const res = hostEv.find((entry) => entry.ev === 'refused');
    expect(res, explain()).to.not.equal(undefined);
    expect(res!.transport).to.equal('tcp');
    expect(res!.code).to.equal('ECONNREFUSED');
    expect(res!.ms).to.be.below(5000);
  });

  it('(b) host client -> guest server by the address the guest published: shm, 16 MiB echo intact', function () {
    const res = hostEv.find((entry) => entry.ev === 'client');
    expect(res?.error, explain()).to.equal(undefined);
    expect(res!.transport).to.equal('shm');
    expect(res!.remoteAddress).to.equal(GUEST_ADDR);
    expect(res!.bytes).to.equal(BYTES);
    expect(res!.sha256Ok).to.equal(true);
    expect(guestEv.get('accepted')?.transport).to.equal('shm');
    expect(guestEv.get('accepted')?.remoteAddress).to.equal(HOST_ADDR);
    process.stderr.write(
      `      host->guest: connect ${res!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${res!.rttUs.min}/${res!.rttUs.median}/${res!.rttUs.max} us, ` +
        `16 MiB echo ${Math.round(res!.echoMs)} ms (${((2 * BYTES) / 1048576 / (res!.echoMs / 1000)).toFixed(1)} MiB/s both ways)\n`,
    );
  });

  it("a host peer killed mid-connection: the guest's socket closes (the daemon's reap wakes the guest through QEMU)", function () {
    expect(victimEv.find((entry) => entry.ev === 'accepted')?.transport, explain()).to.equal('shm');
    expect(guestEv.get('victim-connected')?.transport, explain()).to.equal('shm');
    const geo = guestEv.get('victim-gone');
    expect(geo?.error, explain()).to.equal(undefined);
    expect(victimGoneAt - victimKilledAt).to.be.below(5000);
    process.stderr.write(
      `      host peer SIGKILLed -> guest socket ${geo!.code ? `error ${geo!.code}` : 'close'} seen on the console after ${victimGoneAt - victimKilledAt} ms\n`,
    );
  });

  it('(d) the guest powers off mid-connection: the host side is closed within seconds', function () {
    expect(guestEv.get('powering-off')?.transport, explain()).to.equal('shm');
    expect(hostEv.find((entry) => entry.ev === 'accepted' && entry.id === 2)?.transport, explain()).to.equal('shm');
    const end = hostEv.find((entry) => entry.id === 2 && (entry.ev === 'conn-close' || entry.ev === 'conn-error'));
    expect(end, explain()).to.not.equal(undefined);
    expect(poweringOffAt).to.be.greaterThan(0);
    const ms = end!.seenAt - poweringOffAt;
    expect(ms).to.be.below(5000);
    const err = hostEv.find((entry) => entry.id === 2 && entry.ev === 'conn-error');
    process.stderr.write(
      `      power-off -> host socket ${err ? `error ${err.code}` : 'close'} after ${ms} ms (QEMU exited ${qemuExitAt - poweringOffAt} ms after the power-off line)\n`,
    );
  });
});
