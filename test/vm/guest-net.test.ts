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
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ServerProc, startServer } from '../helpers/daemon-client';
import { GUEST_ADDR, HOST_ADDR } from './net-peer';
import { GuestResult, ROOT, ensureGuestImage, startGuest } from './qemu';

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

type Ev = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

(process.env.ZIVM_VM ? describe : describe.skip)('VM: zivm sockets between a host process and a guest process', function () {
  this.timeout(300000);

  let dir = '';
  let server: ServerProc | undefined;
  let hostProc: ChildProcess | undefined;
  let victim: ChildProcess | undefined;
  let victimKilledAt = 0;
  let victimGoneAt = 0;
  let hostErr = '';
  const hostEv: Ev[] = [];
  const victimEv: Ev[] = [];
  const guestEv = new Map<string, Ev>();
  let result: GuestResult;
  let poweringOffAt = 0;
  let qemuExitAt = 0;

  before(async function () {
    ensureGuestImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vmnet-'));
    const sock = path.join(dir, 'zivm.sock');
    server = await startServer(sock, ['--size', '64M', '--vectors', '1', '--verbose']);

    // Host peers, each in its own network namespace (root: -n; otherwise a user namespace too)
    // whose only address besides 127.0.0.1 is on its lo: nothing can leave it.
    const ns = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
    const hostPeer = async (addr: string, port: number, events: Ev[], tap: boolean): Promise<ChildProcess> => {
      const net = tap
        ? `ip tuntap add dev ${TAP} mode tap && ip addr add ${addr}/16 dev ${TAP} && ip link set ${TAP} up`
        : `ip addr add ${addr}/32 dev lo`;
      const p = spawn(
        'unshare',
        [...ns, 'sh', '-c', `ip link set lo up && ${net} && exec "$0" "$@"`, process.execPath, PEER, 'host', '--port', String(port)],
        { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ZIVM_SOCKET: sock } },
      );
      let buf = '';
      p.stdout!.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        for (let i; (i = buf.indexOf('\n')) >= 0; ) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            events.push({ ...(JSON.parse(line) as Ev), seenAt: Date.now() });
          } catch {
            hostErr += `${line}\n`;
          }
        }
      });
      p.stderr!.setEncoding('utf8').on('data', (d: string) => (hostErr += d));
      const t = Date.now();
      while (!events.some((e) => e.ev === 'listening') && p.exitCode === null && Date.now() - t < 10000) await sleep(20);
      if (!events.some((e) => e.ev === 'listening')) throw new Error(`the host peer at ${addr} did not listen: ${hostErr}`);
      return p;
    };
    hostProc = await hostPeer(HOST_ADDR, HOST_PORT, hostEv, true);
    victim = await hostPeer(VICTIM_ADDR, VICTIM_PORT, victimEv, false);

    let con = '';
    const guest = startGuest({
      args: [PEER, 'guest', '--host-addr', HOST_ADDR, '--port', String(HOST_PORT), '--refused-port', String(REFUSED_PORT), '--guest-port', String(GUEST_PORT), '--bytes', String(BYTES), '--rounds', String(ROUNDS), '--victim-addr', VICTIM_ADDR, '--victim-port', String(VICTIM_PORT)],
      ivshmem: { socket: sock, vectors: 1 },
      tap: { ifname: TAP, netnsPid: hostProc.pid!, mac: GUEST_MAC },
      timeoutMs: 150000,
      onConsole: (chunk) => {
        con += chunk.replace(/\r/g, '');
        for (let i; (i = con.indexOf('\n')) >= 0; ) {
          const line = con.slice(0, i);
          con = con.slice(i + 1);
          const k = line.indexOf('ZIVM-NET ');
          if (k < 0) continue;
          let o: Ev;
          try {
            o = JSON.parse(line.slice(k + 'ZIVM-NET '.length)) as Ev;
          } catch {
            continue;
          }
          guestEv.set(String(o.what), o);
          if (o.what === 'listening') {
            hostProc!.stdin!.write(`${JSON.stringify({ cmd: 'refused', host: GUEST_ADDR, port: REFUSED_PORT })}\n`);
            hostProc!.stdin!.write(`${JSON.stringify({ cmd: 'connect', host: GUEST_ADDR, port: GUEST_PORT, bytes: BYTES, rounds: ROUNDS })}\n`);
          }
          if (o.what === 'victim-connected') {
            victimKilledAt = Date.now();
            victim!.kill('SIGKILL');
          }
          if (o.what === 'victim-gone') victimGoneAt = Date.now();
          if (o.what === 'powering-off') poweringOffAt = Date.now();
        }
      },
    });
    result = await guest.done;
    qemuExitAt = Date.now();
    // The host's side of the connection the guest left open.
    const t2 = Date.now();
    while (!hostEv.some((e) => e.id === 2 && (e.ev === 'conn-close' || e.ev === 'conn-error')) && Date.now() - t2 < 10000) await sleep(20);
  });

  after(async function () {
    if (victim && victim.exitCode === null && victim.signalCode === null) victim.kill('SIGKILL');
    if (hostProc && hostProc.exitCode === null) {
      hostProc.stdin!.end();
      const t = setTimeout(() => hostProc!.kill('SIGKILL'), 2000);
      await new Promise((r) => hostProc!.once('exit', r));
      clearTimeout(t);
    }
    if (server) await server.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return `\n--- guest console ---\n${result?.console ?? '(none)'}\n--- daemon ---\n${server?.out.stderr ?? ''}\n--- host peer ---\n${JSON.stringify(hostEv)}\n${hostErr}`;
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
    const r = guestEv.get('to-host');
    expect(r?.error, explain()).to.equal(undefined);
    expect(r!.transport).to.equal('shm');
    expect(r!.remoteAddress).to.equal(HOST_ADDR);
    expect(r!.bytes).to.equal(BYTES);
    expect(r!.sha256Ok).to.equal(true);
    const acc = hostEv.find((e) => e.ev === 'accepted' && e.id === 1);
    expect(acc?.transport, explain()).to.equal('shm');
    // The server sees the client at an address the client's node published.
    expect(acc?.remoteAddress, explain()).to.equal(GUEST_ADDR);
    process.stderr.write(
      `      guest->host: connect ${r!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${r!.rttUs.min}/${r!.rttUs.median}/${r!.rttUs.max} us, ` +
        `16 MiB echo ${Math.round(r!.echoMs)} ms (${((2 * BYTES) / 1048576 / (r!.echoMs / 1000)).toFixed(1)} MiB/s both ways)\n`,
    );
  });

  it('(c) guest -> a host address and port nobody listens on: TCP over eth0, ECONNREFUSED at once', function () {
    const r = guestEv.get('refused');
    expect(r, explain()).to.not.equal(undefined);
    expect(r!.transport).to.equal('tcp');
    expect(r!.code).to.equal('ECONNREFUSED');
    expect(r!.ms).to.be.below(5000);
  });

  it('(c) host -> a guest address and port nobody listens on: TCP over the tap, ECONNREFUSED at once', function () {
    const r = hostEv.find((e) => e.ev === 'refused');
    expect(r, explain()).to.not.equal(undefined);
    expect(r!.transport).to.equal('tcp');
    expect(r!.code).to.equal('ECONNREFUSED');
    expect(r!.ms).to.be.below(5000);
  });

  it('(b) host client -> guest server by the address the guest published: shm, 16 MiB echo intact', function () {
    const r = hostEv.find((e) => e.ev === 'client');
    expect(r?.error, explain()).to.equal(undefined);
    expect(r!.transport).to.equal('shm');
    expect(r!.remoteAddress).to.equal(GUEST_ADDR);
    expect(r!.bytes).to.equal(BYTES);
    expect(r!.sha256Ok).to.equal(true);
    expect(guestEv.get('accepted')?.transport).to.equal('shm');
    expect(guestEv.get('accepted')?.remoteAddress).to.equal(HOST_ADDR);
    process.stderr.write(
      `      host->guest: connect ${r!.connectMs.toFixed(1)} ms, 1-byte round trip min/median/max ${r!.rttUs.min}/${r!.rttUs.median}/${r!.rttUs.max} us, ` +
        `16 MiB echo ${Math.round(r!.echoMs)} ms (${((2 * BYTES) / 1048576 / (r!.echoMs / 1000)).toFixed(1)} MiB/s both ways)\n`,
    );
  });

  it("a host peer killed mid-connection: the guest's socket closes (the daemon's reap wakes the guest through QEMU)", function () {
    expect(victimEv.find((e) => e.ev === 'accepted')?.transport, explain()).to.equal('shm');
    expect(guestEv.get('victim-connected')?.transport, explain()).to.equal('shm');
    const g = guestEv.get('victim-gone');
    expect(g?.error, explain()).to.equal(undefined);
    expect(victimGoneAt - victimKilledAt).to.be.below(5000);
    process.stderr.write(`      host peer SIGKILLed -> guest socket ${g!.code ? `error ${g!.code}` : 'close'} seen on the console after ${victimGoneAt - victimKilledAt} ms\n`);
  });

  it('(d) the guest powers off mid-connection: the host side is closed within seconds', function () {
    expect(guestEv.get('powering-off')?.transport, explain()).to.equal('shm');
    expect(hostEv.find((e) => e.ev === 'accepted' && e.id === 2)?.transport, explain()).to.equal('shm');
    const end = hostEv.find((e) => e.id === 2 && (e.ev === 'conn-close' || e.ev === 'conn-error'));
    expect(end, explain()).to.not.equal(undefined);
    expect(poweringOffAt).to.be.greaterThan(0);
    const ms = end!.seenAt - poweringOffAt;
    expect(ms).to.be.below(5000);
    const err = hostEv.find((e) => e.id === 2 && e.ev === 'conn-error');
    process.stderr.write(
      `      power-off -> host socket ${err ? `error ${err.code}` : 'close'} after ${ms} ms (QEMU exited ${qemuExitAt - poweringOffAt} ms after the power-off line)\n`,
    );
  });
});
