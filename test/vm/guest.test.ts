/**
 * A QEMU guest joins a zivm domain through -device ivshmem-doorbell.
 *
 * Host: a zivm daemon and a raw protocol client (peer 0) in the same domain.
 * Guest: Debian's kernel under TCG, running guest-probe.js with the host's node
 * over 9p. One boot; the checks below read what both sides saw.
 *
 * Run with `npm run test:vm` (ZIVM_VM=1). Under the plain `npm test` run it is
 * skipped: it needs QEMU, a kernel download on the first run, and minutes of CPU.
 * ZIVM_VM_ECHO=1 copies the guest console to stderr.
 */
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HEADER, PEER, PEER_FREE, PEER_JOINING, VERSION, peerOffset } from '../../src/shm/layout';
import { native } from '../../src/shm/native';
import { ServerProc, startServer } from '../../tools/kit/daemon';
import { Handshake, RawClient, mapRegion } from '../helpers/daemon-client';
import * as elem from './exchange';
import { GuestResult, ROOT, ensureGuestImage, startGuest } from '../../tools/vm/qemu';
import { sleep } from '../../tools/kit/wait';

const VECTORS = 2;
const ROUNDS = 20; // doorbell ping-pong rounds through VFIO interrupts in the guest
const PROBE = path.join(ROOT, 'dist', 'test', 'vm', 'guest-probe.js');

type Probe = Record<string, any>;

function parseProbe(output: string): Map<string, Probe> {
  const map = new Map<string, Probe>();
  for (const line of output.split('\n')) {
    const i = line.indexOf('ZIVM-PROBE ');
    if (i < 0) continue;
    try {
      const out = JSON.parse(line.slice(i + 'ZIVM-PROBE '.length)) as Probe;
      map.set(String(out.what), out);
    } catch {
      // A line garbled by kernel messages on the console: the probe's other lines still count.
    }
  }
  return map;
}

(process.env.ZIVM_VM ? describe : describe.skip)('VM: a QEMU guest in the domain (ivshmem-doorbell)', function () {
  this.timeout(300000);

  const timings: Record<string, number> = {};
  let dir = '';
  let server: ServerProc | undefined;
  let client: RawClient | undefined;
  let hs: Handshake;
  let result: GuestResult;
  let probe: Map<string, Probe>;
  const host: {
    nonce: number;
    daemonPid: number;
    seed: number;
    guestSeed: number;
    messages: [number, number][];
    joinedId: number;
    guestFds: number[];
    left: boolean;
    peerWhileRunning?: { state: number; pid: number };
    peerAfter?: { state: number };
    doorbells: number[];
    pongs: number;
    rangAgain: boolean;
    guestMessage?: string;
    guestBlockOk?: boolean;
    qemuPid?: number;
    errors: string[];
  } = {
    nonce: 0,
    daemonPid: 0,
    seed: 0,
    guestSeed: 0,
    messages: [],
    joinedId: -1,
    guestFds: [],
    left: false,
    doorbells: new Array<number>(VECTORS).fill(0),
    pongs: 0,
    rangAgain: false,
    errors: [],
  };

  before(async function () {
    const t0 = Date.now();
    ensureGuestImage();
    timings.image = Date.now() - t0;

    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-vm-'));
    const sock = path.join(dir, 'zivm.sock');
    const t1 = Date.now();
    server = await startServer(sock, ['--size', '64M', '--vectors', String(VECTORS), '--verbose', '--guests']);
    client = RawClient.connect(sock);
    hs = client.handshake(VECTORS);
    timings.daemon = Date.now() - t1;
    const addon = native();
    const { region, i32, g } = mapRegion(hs.shmFd);
    const u8 = new Uint8Array(region.buffer);
    host.nonce = i32[HEADER.NONCE] >>> 0;
    host.daemonPid = i32[HEADER.DAEMON_PID];
    host.seed = crypto.randomBytes(4).readUInt32LE(0) || 1;
    host.guestSeed = crypto.randomBytes(4).readUInt32LE(0) || 2;

    // Before the guest: the host's message and block in the scratch area.
    const base = elem.scratchOffset(g);
    const write = new Int32Array(region.buffer, base, 2);
    const s8 = u8.subarray(base, base + elem.SCRATCH_SIZE);
    s8.set(elem.pattern(host.seed), elem.HOST_BLOCK);
    elem.writeMsg(s8, elem.HOST_MSG, `host->guest nonce=${host.nonce} seed=${host.seed}`);
    Atomics.store(write, elem.W_GUEST, 0);
    Atomics.store(write, elem.W_HOST, elem.HOST_WROTE);

    const t2 = Date.now();
    const guest = startGuest({
      args: [PROBE, '--host-id', String(hs.id), '--seed', String(host.guestSeed), '--timeout', '120000', '--rounds', String(ROUNDS)],
      ivshmem: { socket: sock, vectors: VECTORS },
      timeoutMs: 240000,
    });
    host.qemuPid = guest.proc.pid;

    // The host side of the exchange, while the guest runs. Our doorbells are watched
    // with the project's Poller; in the ping-pong phase each one is answered at once.
    const pollers = hs.own.map(
      (fd, value) =>
        new addon.Poller(
          fd,
          () => {
            host.doorbells[value] += addon.drain(fd);
            if (value === 0 && Atomics.load(write, elem.W_GUEST) === elem.GUEST_PINGPONG && host.guestFds.length) {
              host.pongs++;
              addon.notify(host.guestFds[0]);
            }
          },
          false,
        ),
    );
    let replied = false;
    const poll = () => {
      for (;;) {
        const res = addon.recvMsg(client!.fd);
        if (res === null || res === false) break;
        if (res[1] >= 0) client!.received.push(res[1]);
        host.messages.push([res[0], res[1]]);
        if (res[1] >= 0 && res[0] !== hs.id) {
          if (host.joinedId < 0) host.joinedId = res[0];
          if (res[0] === host.joinedId) host.guestFds.push(res[1]);
        } else if (res[1] < 0 && res[0] === host.joinedId) host.left = true;
      }
      if (host.joinedId >= 0 && !host.left) {
        const pw = peerOffset(g, host.joinedId) >>> 2;
        host.peerWhileRunning = { state: Atomics.load(i32, pw + PEER.STATE), pid: Atomics.load(i32, pw + PEER.PID) };
      }
      if (!replied && Atomics.load(write, elem.W_GUEST) >= elem.GUEST_WROTE) {
        replied = true;
        host.guestMessage = elem.readMsg(s8, elem.GUEST_MSG);
        host.guestBlockOk = Buffer.compare(Buffer.from(s8.subarray(elem.GUEST_BLOCK, elem.GUEST_BLOCK + elem.BLOCK)), elem.pattern(host.guestSeed)) === 0;
        elem.writeMsg(s8, elem.HOST_MSG, `host->guest reply: got "${host.guestMessage}" block=${host.guestBlockOk ? 'ok' : 'BAD'}`);
        Atomics.store(write, elem.W_HOST, elem.HOST_REPLIED);
        // Ring every vector of the guest (the fds QEMU's join announced, in vector order).
        if (host.guestFds.length !== VECTORS) host.errors.push(`guest announced ${host.guestFds.length} doorbells, expected ${VECTORS}`);
        for (const fd of host.guestFds) addon.notify(fd);
      }
      if (!host.rangAgain && Atomics.load(write, elem.W_GUEST) === elem.GUEST_IRQ_READY) {
        host.rangAgain = true;
        for (const fd of host.guestFds) addon.notify(fd);
        Atomics.store(write, elem.W_HOST, elem.HOST_RANG);
      }
    };
    const timer = setInterval(() => {
      try {
        poll();
      } catch (err) {
        host.errors.push((err as Error).message);
      }
    }, 5);
    result = await guest.done;
    timings.guest = Date.now() - t2;
    // The daemon notices QEMU's socket closing and tells the others.
    const t3 = Date.now();
    while (!host.left && Date.now() - t3 < 5000) await sleep(10);
    clearInterval(timer);
    poll();
    for (const part of pollers) part.close();
    if (host.joinedId >= 0) host.peerAfter = { state: Atomics.load(i32, (peerOffset(g, host.joinedId) >>> 2) + PEER.STATE) };
    probe = parseProbe(result.output);
    region.close();
    timings.total = Date.now() - t0;
    process.stderr.write(
      `      timings: image ${timings.image} ms, daemon ${timings.daemon} ms, guest ${timings.guest} ms (boot + probe + power-off), total ${timings.total} ms\n`,
    );
  });

  after(async function () {
    client?.close();
    if (server) await server.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function explain(): string {
    return `\n--- guest console ---\n${result?.console ?? '(none)'}\n--- daemon ---\n${server?.out.stderr ?? ''}\n--- host ---\n${JSON.stringify(host)}`;
  }

  it('boots, runs the probe with the host node over 9p, and powers off', function () {
    expect(result.timedOut, `watchdog fired${explain()}`).to.equal(false);
    expect(result.code, `qemu exit${explain()}`).to.equal(0);
    expect(result.exitCode, `probe exit${explain()}`).to.equal(0);
    expect(probe.get('error'), explain()).to.equal(undefined);
  });

  it('the guest sees the ivshmem device and maps the same region (header nonce and daemon pid)', function () {
    const devs = probe.get('devices');
    expect(devs?.ivshmem, explain()).to.have.length(1);
    const holder = probe.get('header');
    expect(holder, explain()).to.not.equal(undefined);
    expect(holder!.magic).to.deep.equal(['4d56495a', '4e474552']);
    expect(holder!.version).to.equal(VERSION);
    expect(holder!.nonce).to.equal(host.nonce);
    expect(holder!.daemonPid).to.equal(host.daemonPid);
    expect(holder!.daemonPid).to.equal(server!.child.pid);
    expect(holder!.size).to.equal(64 << 20);
    expect(holder!.mapped).to.equal(64 << 20);
    expect(holder!.vectors).to.equal(VECTORS);
  });

  it('the daemon admitted QEMU as a peer: the host was told, and the peer table has its pid', function () {
    expect(host.joinedId, explain()).to.be.greaterThan(hs.id);
    expect(host.guestFds, explain()).to.have.length(VECTORS);
    expect(probe.get('registers')?.ivPosition, 'IVPosition in the guest is the id the host was told').to.equal(host.joinedId);
    expect(host.peerWhileRunning, explain()).to.deep.equal({ state: PEER_JOINING, pid: host.qemuPid });
  });

  it('bytes go both ways through the region', function () {
    const from = probe.get('from-host');
    expect(from?.message, explain()).to.equal(`host->guest nonce=${host.nonce} seed=${host.seed}`);
    expect(from!.blockSha256).to.equal(elem.sha256(elem.pattern(host.seed)));
    expect(host.guestMessage, explain()).to.equal(`guest->host ivposition=${host.joinedId} nonce=${host.nonce} seed=${host.guestSeed}`);
    expect(host.guestBlockOk).to.equal(true);
    expect(probe.get('reply')?.message).to.equal(`host->guest reply: got "${host.guestMessage}" block=ok`);
  });

  it("the guest rings the host's doorbells, per vector (BAR0 Doorbell register)", function () {
    // vector v was rung v+1 times (and vector 0 once more per ping-pong round); an eventfd adds them up.
    expect(host.doorbells, explain()).to.deep.equal(Array.from({ length: VECTORS }, (_, value) => value + 1 + (value === 0 ? ROUNDS : 0)));
  });

  it("the host rings the guest's vectors: QEMU marks them pending (MSI-X masked, no driver yet)", function () {
    const msg = probe.get('msix');
    expect(msg?.cap, explain()).to.be.greaterThan(0);
    expect(msg!.tableSize).to.equal(VECTORS);
    expect(msg!.pendingBefore).to.equal(0);
    const res = probe.get('reply');
    expect(res?.pending, explain()).to.equal((1 << VECTORS) - 1);
  });

  it('the guest can bind the device to vfio-pci (own IOMMU group, /dev/vfio node)', function () {
    const value = probe.get('vfio');
    expect(value?.error, explain()).to.equal(undefined);
    expect(value!.driver).to.equal('vfio-pci');
    expect(value!.groupDevices).to.deep.equal([probe.get('pci')!.dev]);
    expect(value!.dev).to.equal(`/dev/vfio/${value!.group}`);
  });

  it('real interrupts in the guest: the addon opens the device through VFIO, MSI-X eventfds watched with the Poller fire when the host rings', function () {
    const irq = probe.get('irq');
    expect(irq?.error, explain()).to.equal(undefined);
    expect(irq!.iommu, 'type1 v2 IOMMU').to.equal(3);
    expect(irq!.group).to.equal(probe.get('vfio')!.group);
    expect(irq!.bar2Mmap).to.equal(true);
    expect(irq!.bar2Size).to.equal(64 << 20);
    expect(irq!.magic, 'BAR2 mapped through the VFIO device fd').to.deep.equal(['4d56495a', '4e474552']);
    expect(irq!.nonce, 'the same region through VFIO').to.equal(host.nonce);
    expect(irq!.vectors).to.equal(VECTORS);
    expect(irq!.hostStateViaVfio).to.equal(elem.HOST_REPLIED);
    expect(irq!.ivPosition, 'IVPosition read through the device fd').to.equal(host.joinedId);
    expect(irq!.command & 0x6, 'memory space and bus master on').to.equal(0x6);
    expect(irq!.msixCount).to.equal(VECTORS);
    expect(host.rangAgain).to.equal(true);
    expect(irq!.counts).to.have.length(VECTORS);
    for (const count of irq!.counts as number[]) expect(count).to.be.greaterThan(0);
    expect(irq!.rounds).to.equal(ROUNDS);
    expect(host.pongs).to.equal(ROUNDS);
    expect(irq!.closed, 'MSI-X off, device, group and container closed').to.equal(true);
    process.stderr.write(
      `      guest VFIO: open ${irq!.openMs.toFixed(1)} ms; interrupts: first after ${Math.round(irq!.firstMs)} ms, stale on unmask ${JSON.stringify(irq!.stale)}, ` +
        `doorbell round trip guest->host->guest (TCG) min/median/max ${irq!.rttUs.min}/${irq!.rttUs.median}/${irq!.rttUs.max} us\n`,
    );
  });

  it('the daemon saw QEMU leave when the guest powered off: the host was told, the id is free again', function () {
    expect(host.left, explain()).to.equal(true);
    expect(host.messages.filter(([id, fd]) => id === host.joinedId && fd < 0)).to.have.length(1);
    expect(host.peerAfter?.state).to.equal(PEER_FREE);
    expect(host.errors, explain()).to.deep.equal([]);
    expect(server!.out.stderr).to.match(new RegExp(`peer ${host.joinedId} joined \\(pid ${host.qemuPid}`));
    expect(server!.out.stderr).to.match(new RegExp(`peer ${host.joinedId} left`));
  });
});
