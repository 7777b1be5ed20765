import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { parseSize, socketPath } from '../src/config';
import { connectDaemon } from '../src/shm/autostart';
import * as Peers from '../src/shm/peers';
import {
  F_CLOSED,
  F_DEAD,
  F_FIN,
  LISTENER,
  LST_ACTIVE,
  LST_CLAIMED,
  LST_FREE,
  PEER,
  PEER_ALIVE,
  PEER_DEAD,
  PEER_FREE,
  PEER_JOINING,
  PEER_KIND_GUEST_PROCESS,
  SLOT,
  SLOT_CLAIMED,
  SLOT_CONNECTING,
  SLOT_ESTABLISHED,
  SLOT_FREE,
  SLOT_REFUSED,
  computeGeometry,
  listenerOffset,
  makeRoute,
  makeState,
  peerOffset,
  pendingOffset,
  slotOffset,
  bitmapOffset,
  writeHeader,
  markPending,
} from '../src/shm/layout';
import { native } from '../src/shm/native';
import { checkDir, ensureDir } from '../src/shm/sockdir';
import { ServerProc, killQuiet, runCli, startServer } from '../tools/kit/daemon';
import type { Proc } from '../tools/kit/proc';
import { until } from '../tools/kit/wait';
import { RawClient, mapRegion, processAlive, removeDir, spawnRacer, tempDir } from './helpers/daemon-client';

const MiB = 1024 * 1024;
// Raw clients here speak the ivshmem-server protocol as QEMU does (no HELLO): a daemon that admits guests.
const SMALL = ['--size', '4M', '--ring', '64K', '--guests'];

describe('daemon', function () {
  this.timeout(15000);

  let dir: string;
  const servers: ServerProc[] = [];
  const clients: RawClient[] = [];
  const pids: number[] = [];
  const children: Proc[] = [];

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    for (const member of clients.splice(0)) member.close();
    for (const ch of children.splice(0)) killQuiet(ch.pid);
    await Promise.all(servers.splice(0).map((srv) => srv.stop()));
    for (const pid of pids.splice(0)) if (processAlive(pid)) killQuiet(pid);
    removeDir(dir);
  });

  function client(sock: string): RawClient {
    const member = RawClient.connect(sock);
    clients.push(member);
    return member;
  }

  async function server(args: string[] = [], env: NodeJS.ProcessEnv = {}, sock = path.join(dir, 'zivm.sock')): Promise<ServerProc> {
    const srv = await startServer(sock, args, env);
    servers.push(srv);
    return srv;
  }

  describe('protocol', () => {
    it('greets the first client with version, id, region, then its own interrupt setup', async () => {
      const srv = await server(SMALL);
      expect(srv.out.stdout).to.match(/^zivm server listening on .*zivm\.sock \(size 4 MiB, \d+ slots, ring 64 KiB, 1 vector\)\n/);
      expect(srv.out.stdout).to.contain(`-chardev socket,path=${srv.socket},id=zivm -device ivshmem-doorbell,chardev=zivm,vectors=1\n`);
      expect(srv.out.stdout).to.contain('no guest addresses declared');
      const member = client(srv.socket);
      expect(member.next()).to.deep.equal([0, -1]);
      const [id, idFd] = member.next();
      expect(id).to.equal(0);
      expect(idFd).to.equal(-1);
      const [minus1, shm] = member.next();
      expect(minus1).to.equal(-1);
      expect(shm).to.be.at.least(0);
      expect(native().fdSize(shm)).to.equal(4 * MiB);
      const { region, i32, g, daemonPid } = mapRegion(shm);
      try {
        expect(g.size).to.equal(4 * MiB);
        expect(g.ringSize).to.equal(64 * 1024);
        expect(g.vectors).to.equal(1);
        expect(daemonPid).to.equal(srv.child.pid);
        const pw = peerOffset(g, 0) >> 2;
        expect(Atomics.load(i32, pw + PEER.STATE)).to.equal(PEER_JOINING);
        expect(i32[pw + PEER.PID]).to.equal(process.pid);
        expect(i32[pw + PEER.GEN]).to.be.at.least(1);
      } finally {
        region.close();
      }
      const [own, ownFd] = member.next();
      expect(own).to.equal(0);
      expect(ownFd).to.be.at.least(0);
      expect(member.quiet(50)).to.equal(true);
    });

    it('introduces peers to each other, one doorbell per vector, and announces leaves (3 vectors)', async () => {
      const srv = await server([...SMALL, '--vectors', '3']);
      const first = client(srv.socket);
      const ha = first.handshake(3);
      expect(ha.id).to.equal(0);
      expect(ha.peers.size).to.equal(0);
      expect(ha.own).to.have.length(3);
      expect(ha.order.map((msg) => msg[0])).to.deep.equal([0, 0, 0]);

      const second = client(srv.socket);
      const hb = second.handshake(3);
      expect(hb.id).to.equal(1);
      // the first's doorbells, then its own interrupt setup
      expect(hb.order.map((msg) => msg[0])).to.deep.equal([0, 0, 0, 1, 1, 1]);
      expect(hb.peers.get(0)).to.have.length(3);
      // the first hears of the second: its id three times, each with a doorbell
      const news = first.take(3);
      expect(news.map((msg) => msg[0])).to.deep.equal([1, 1, 1]);
      for (const msg of news) expect(msg[1]).to.be.at.least(0);
      expect(first.quiet(30)).to.equal(true);

      // doorbells work both ways, per vector
      const addon = native();
      for (let value = 0; value < 3; value++) {
        for (const fd of [...ha.own, ...hb.own]) addon.drain(fd);
        addon.notify(news[value][1]); // a rings b on vector v
        expect(addon.drain(hb.own[value])).to.be.at.least(1);
        for (let word = 0; word < 3; word++) if (word !== value) expect(addon.drain(hb.own[word])).to.equal(0);
        addon.notify(hb.peers.get(0)![value]); // b rings a on vector v
        expect(addon.drain(ha.own[value])).to.be.at.least(1);
      }

      second.close();
      expect(first.next()).to.deep.equal([1, -1]);
      expect(first.quiet(30)).to.equal(true);
    });

    it('keeps every message, in order, when a socket fills up', async () => {
      const value2 = 32; // 11 peers × 32 doorbells is more than a unix socket holds at once
      const srv = await server([...SMALL, '--vectors', String(value2)]);
      const cs = Array.from({ length: 12 }, () => client(srv.socket));
      await until(() => srv.child.exitCode === null && cs.every((member) => !member.quiet(0)), 3000, 'greetings');
      await new Promise((resolve) => setTimeout(resolve, 100)); // let the daemon fill the sockets
      const hs = cs.map((member) => member.handshake(value2));
      hs.forEach((holder, k) => {
        expect(holder.id).to.equal(k);
        const expected: number[] = [];
        for (let entry = 0; entry < k; entry++) for (let value = 0; value < value2; value++) expected.push(entry);
        for (let value = 0; value < value2; value++) expected.push(k);
        expect(holder.order.map((msg) => msg[0])).to.deep.equal(expected);
      });
      const news = cs[0].take(11 * value2);
      const expected: number[] = [];
      for (let entry = 1; entry < 12; entry++) for (let value = 0; value < value2; value++) expected.push(entry);
      expect(news.map((msg) => msg[0])).to.deep.equal(expected);
      expect(news.every((msg) => msg[1] >= 0)).to.equal(true);
      expect(cs[0].quiet(20)).to.equal(true);
    });

    it('hands out the lowest free id and frees the peer entry on leave', async () => {
      const srv = await server([...SMALL, '--verbose']);
      const [first, second, member] = [client(srv.socket), client(srv.socket), client(srv.socket)];
      const ha = first.handshake(1);
      const hb = second.handshake(1);
      const hc = member.handshake(1);
      expect([ha.id, hb.id, hc.id]).to.deep.equal([0, 1, 2]);
      expect([...hc.peers.keys()]).to.deep.equal([0, 1]);
      const { region, i32, g } = mapRegion(ha.shmFd);
      try {
        const gen1 = i32[(peerOffset(g, 1) >> 2) + PEER.GEN];
        second.close();
        first.close();
        const gone = member.take(2).sort((elem, yval) => elem[0] - yval[0]);
        expect(gone).to.deep.equal([
          [0, -1],
          [1, -1],
        ]);
        const pw1 = peerOffset(g, 1) >> 2;
        // leaves are announced first, then the region is cleaned
        await until(() => Atomics.load(i32, pw1 + PEER.STATE) === PEER_FREE, 3000, 'the entry to be freed');
        expect(i32[pw1 + PEER.GEN]).to.equal(gen1);
        const data = client(srv.socket);
        expect(data.handshake(1).id).to.equal(0);
        const entry = client(srv.socket);
        const he = entry.handshake(1);
        expect(he.id).to.equal(1);
        expect(i32[pw1 + PEER.GEN]).to.equal(gen1 + 1);
        expect([...he.peers.keys()]).to.deep.equal([0, 2]);
      } finally {
        region.close();
      }
      // --verbose: one line per join and per leave
      await until(() => (srv.out.stderr.match(/\n/g) ?? []).length >= 7, 3000, 'the log lines');
      const lines = srv.out.stderr.trim().split('\n');
      expect(lines.filter((line) => / joined /.test(line))).to.have.length(5);
      expect(lines.filter((line) => / left /.test(line))).to.have.length(2);
      expect(lines[0]).to.match(/^zivm: peer 0 joined \(pid \d+/);
    });

    it('ignores what clients send, and survives a client that vanishes mid-greeting', async () => {
      const srv = await server(SMALL);
      const first = client(srv.socket);
      first.handshake(1);
      fs.writeSync(first.fd, Buffer.from('hello daemon, these bytes mean nothing'));
      const second = RawClient.connect(srv.socket);
      second.close(); // before reading anything
      // a hears of b (join, maybe leave); the daemon is still fine for a newcomer
      const member = client(srv.socket);
      const hc = member.handshake(1);
      expect(hc.id).to.be.oneOf([1, 2]);
      expect(processAlive(srv.child.pid!)).to.equal(true);
    });
  });

  describe('markPending', () => {
    it('asks for a doorbell only when the bitmap word was clear: one per word until the peer takes it, whoever set the first bit', () => {
      const geo = computeGeometry({ size: MiB, ringSize: 4096, vectors: 1, maxPeers: 4, maxListeners: 8 });
      const i32 = new Int32Array(new SharedArrayBuffer(geo.size));
      const bitmap = bitmapOffset(geo, 2) >> 2;
      const summary = pendingOffset(geo, 2) >> 2;
      expect(markPending(i32, geo, 2, 3), 'word 0 clear').to.equal(true);
      expect(markPending(i32, geo, 2, 3), 'the same slot again').to.equal(false);
      expect(markPending(i32, geo, 2, 17), 'another slot of word 0').to.equal(false);
      expect(markPending(i32, geo, 2, 40), 'word 1 clear').to.equal(true);
      expect(i32[bitmap]).to.equal((1 << 3) | (1 << 17));
      expect(i32[bitmap + 1]).to.equal(1 << 8);
      expect(i32[summary]).to.equal(3);
      // The peer takes word 0 (summary first, then the word): the next bit there rings again.
      Atomics.exchange(i32, summary, 0);
      Atomics.exchange(i32, bitmap, 0);
      expect(markPending(i32, geo, 2, 17)).to.equal(true);
      expect(markPending(i32, geo, 2, 41), 'word 1 still untaken').to.equal(false);
      // Another peer's bitmap is its own.
      expect(markPending(i32, geo, 1, 3)).to.equal(true);
    });
  });

  describe('Peers.reap', () => {
    it('frees and flags exactly what belonged to the dead peer, and wakes the survivor', () => {
      const geo = computeGeometry({ size: MiB, ringSize: 4096, vectors: 1, maxPeers: 4, maxListeners: 8 });
      expect(geo.nslots).to.be.greaterThan(40);
      const i32 = new Int32Array(new SharedArrayBuffer(geo.size));
      writeHeader(i32, geo, 1, 1);
      const data = 1;
      const DG = 5;
      const SV = 2;
      const SG = 3;
      const peer = (id: number, state: number, gen: number): void => {
        i32[(peerOffset(geo, id) >> 2) + PEER.STATE] = state;
        i32[(peerOffset(geo, id) >> 2) + PEER.GEN] = gen;
      };
      peer(data, PEER_ALIVE, DG);
      peer(SV, PEER_ALIVE, SG);
      const lst = (i: number, state: number, owner: number, ownerGen: number): number => {
        const word = listenerOffset(geo, i) >> 2;
        i32[word + LISTENER.STATE] = state;
        i32[word + LISTENER.OWNER] = owner;
        i32[word + LISTENER.OWNER_GEN] = ownerGen;
        return word;
      };
      const l0 = lst(0, makeState(2, LST_ACTIVE), data, DG);
      const l1 = lst(1, makeState(2, LST_ACTIVE), data, DG - 1); // an earlier life of the same id
      const l2 = lst(2, makeState(7, LST_ACTIVE), SV, SG);
      const l3 = lst(3, makeState(0, LST_CLAIMED), data, DG);
      const slot = (i: number, state: number, count: number, cg: number, sv: number, sg: number, cf = 0, sf = 0): number => {
        const word = slotOffset(geo, i) >> 2;
        i32[word + SLOT.STATE] = state;
        i32[word + SLOT.CLIENT] = count;
        i32[word + SLOT.CLIENT_GEN] = cg;
        i32[word + SLOT.SERVER] = sv;
        i32[word + SLOT.SERVER_GEN] = sg;
        i32[word + SLOT.CLIENT_FLAGS] = cf;
        i32[word + SLOT.SERVER_FLAGS] = sf;
        return word;
      };
      const s0 = slot(0, makeState(4, SLOT_CLAIMED), data, DG, 0, 0); // no server yet: nobody to wake
      const s1 = slot(1, makeState(2, SLOT_CONNECTING), data, DG, SV, SG);
      const s2 = slot(2, makeState(6, SLOT_CONNECTING), SV, SG, data, DG);
      const s3 = slot(3, makeState(1, SLOT_ESTABLISHED), data, DG, SV, SG);
      const s4 = slot(4, makeState(9, SLOT_ESTABLISHED), SV, SG, data, DG, F_CLOSED | F_FIN, 0);
      const s5 = slot(5, makeState(3, SLOT_ESTABLISHED), data, DG - 1, SV, SG); // stale generation
      const s6 = slot(6, makeState(8, SLOT_FREE), data, DG, SV, SG); // free: left alone
      const s7 = slot(7, makeState(2, SLOT_REFUSED), SV, SG, data, DG);
      const s8 = slot(8, makeState(5, SLOT_ESTABLISHED), data, DG, data, DG); // to itself
      const s33 = slot(33, makeState(1, SLOT_ESTABLISHED), data, DG, SV, SG, 0, F_FIN);
      const pendS = bitmapOffset(geo, SV) >> 2;
      const pendD = bitmapOffset(geo, data) >> 2;
      const summaryS = pendingOffset(geo, SV) >> 2;
      i32[pendS] = 1 << 3; // the survivor already has slot 3 pending: rung for it, it takes bitmap word 0 whole, no second wake
      i32[pendD] = -1;
      i32[pendD + 1] = 0x1234;

      const woken: number[] = [];
      Peers.reap(i32, geo, data, DG, (entry) => woken.push(entry));

      // listeners
      expect(i32[l0 + LISTENER.STATE]).to.equal(makeState(3, LST_FREE));
      expect(i32[l1 + LISTENER.STATE]).to.equal(makeState(2, LST_ACTIVE));
      expect(i32[l2 + LISTENER.STATE]).to.equal(makeState(7, LST_ACTIVE));
      expect(i32[l3 + LISTENER.STATE]).to.equal(makeState(1, LST_FREE));
      // slots
      const DC = F_DEAD | F_CLOSED;
      expect(i32[s0 + SLOT.STATE]).to.equal(makeState(5, SLOT_FREE));
      expect(i32[s0 + SLOT.CLIENT_FLAGS]).to.equal(DC);
      expect(i32[s1 + SLOT.STATE]).to.equal(makeState(3, SLOT_FREE));
      expect(i32[s1 + SLOT.CLIENT_FLAGS]).to.equal(DC);
      expect(i32[s1 + SLOT.SERVER_FLAGS]).to.equal(0);
      expect(i32[s2 + SLOT.STATE]).to.equal(makeState(6, SLOT_REFUSED));
      expect(i32[s2 + SLOT.SERVER_FLAGS]).to.equal(DC);
      expect(i32[s2 + SLOT.CLIENT_FLAGS]).to.equal(0);
      expect(i32[s3 + SLOT.STATE]).to.equal(makeState(1, SLOT_ESTABLISHED));
      expect(i32[s3 + SLOT.CLIENT_FLAGS]).to.equal(DC);
      expect(i32[s4 + SLOT.STATE]).to.equal(makeState(10, SLOT_FREE));
      expect(i32[s4 + SLOT.SERVER_FLAGS]).to.equal(DC);
      expect(i32[s4 + SLOT.CLIENT_FLAGS]).to.equal(F_CLOSED | F_FIN);
      expect(i32[s5 + SLOT.STATE]).to.equal(makeState(3, SLOT_ESTABLISHED));
      expect(i32[s5 + SLOT.CLIENT_FLAGS]).to.equal(0);
      expect(i32[s6 + SLOT.STATE]).to.equal(makeState(8, SLOT_FREE));
      expect(i32[s6 + SLOT.CLIENT_FLAGS]).to.equal(0);
      expect(i32[s7 + SLOT.STATE]).to.equal(makeState(2, SLOT_REFUSED));
      expect(i32[s7 + SLOT.SERVER_FLAGS]).to.equal(DC);
      expect(i32[s8 + SLOT.STATE]).to.equal(makeState(6, SLOT_FREE));
      expect(i32[s8 + SLOT.CLIENT_FLAGS]).to.equal(DC);
      expect(i32[s8 + SLOT.SERVER_FLAGS]).to.equal(DC);
      expect(i32[s33 + SLOT.STATE]).to.equal(makeState(1, SLOT_ESTABLISHED));
      expect(i32[s33 + SLOT.CLIENT_FLAGS]).to.equal(DC);
      expect(i32[s33 + SLOT.SERVER_FLAGS]).to.equal(F_FIN);
      // the survivor: pending bits for slots 1, 2, 3, 4, 7 and 33; woken once per bitmap word that was clear (word 1, for slot 33)
      expect(i32[pendS] >>> 0).to.equal(((1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 7)) >>> 0);
      expect(i32[pendS + 1]).to.equal(1 << 1);
      expect(i32[summaryS], 'summary: bitmap words 0 and 1').to.equal(3);
      expect(woken).to.deep.equal([SV]);
      // the dead peer: summary and bitmap cleared, entry free, generation kept
      const areaD = pendingOffset(geo, data) >> 2;
      for (let k = 0; k < geo.pendingStride >> 2; k++) expect(i32[areaD + k]).to.equal(0);
      expect(i32[(peerOffset(geo, data) >> 2) + PEER.STATE]).to.equal(PEER_FREE);
      expect(i32[(peerOffset(geo, data) >> 2) + PEER.GEN]).to.equal(DG);
      expect(i32[(peerOffset(geo, SV) >> 2) + PEER.STATE]).to.equal(PEER_ALIVE);
      expect(PEER_DEAD).to.not.equal(PEER_FREE);
    });

    it('cleans the region when a real peer leaves and rings the survivor', async () => {
      const srv = await server(SMALL);
      const first = client(srv.socket);
      const ha = first.handshake(1);
      const second = client(srv.socket);
      const hb = second.handshake(1);
      first.take(1); // b joined
      const { region, i32, g } = mapRegion(ha.shmFd);
      try {
        const gen = (id: number): number => i32[(peerOffset(g, id) >> 2) + PEER.GEN];
        const word = slotOffset(g, 0) >> 2;
        i32[word + SLOT.CLIENT] = hb.id;
        i32[word + SLOT.CLIENT_GEN] = gen(hb.id);
        i32[word + SLOT.SERVER] = ha.id;
        i32[word + SLOT.SERVER_GEN] = gen(ha.id);
        Atomics.store(i32, word + SLOT.STATE, makeState(0, SLOT_ESTABLISHED));
        const lw = listenerOffset(g, 0) >> 2;
        i32[lw + LISTENER.OWNER] = hb.id;
        i32[lw + LISTENER.OWNER_GEN] = gen(hb.id);
        Atomics.store(i32, lw + LISTENER.STATE, makeState(0, LST_ACTIVE));
        native().drain(ha.own[0]);
        second.close();
        expect(first.next()).to.deep.equal([hb.id, -1]);
        // the daemon tells the others first, then cleans up and rings
        expect(native().waitReadable(ha.own[0], 3000)).to.equal(true);
        expect(native().drain(ha.own[0])).to.be.at.least(1);
        expect(i32[word + SLOT.CLIENT_FLAGS]).to.equal(F_DEAD | F_CLOSED);
        expect(Atomics.load(i32, word + SLOT.STATE)).to.equal(makeState(0, SLOT_ESTABLISHED));
        expect(Atomics.load(i32, pendingOffset(g, ha.id) >> 2) & 1).to.equal(1);
        expect(Atomics.load(i32, lw + LISTENER.STATE)).to.equal(makeState(1, LST_FREE));
      } finally {
        region.close();
      }
    });
    it("reaps a guest's processes with the guest, wakes through the routed vector, and skips entries an agent claimed", async () => {
      const srv = await server([...SMALL, '--vectors', '2', '--verbose']);
      const first = client(srv.socket); // the survivor, hosting a process rung as its vector 1 (another guest)
      const ha = first.handshake(2);
      const second = client(srv.socket); // stands in for QEMU: the guest whose process goes with it
      const hb = second.handshake(2);
      first.take(2); // b's two doorbells
      const { region, i32, g } = mapRegion(ha.shmFd);
      try {
        // What an in-guest agent does: claim an entry by CAS, fill it in, route it through the guest's vector.
        const claim = (id: number, via: number, vector: number): number => {
          const pw = peerOffset(g, id) >> 2;
          expect(Atomics.compareExchange(i32, pw + PEER.STATE, PEER_FREE, PEER_JOINING)).to.equal(PEER_FREE);
          i32[pw + PEER.GEN] = 7;
          i32[pw + PEER.KIND] = PEER_KIND_GUEST_PROCESS;
          i32[pw + PEER.ROUTE] = makeRoute(via, vector);
          Atomics.store(i32, pw + PEER.STATE, PEER_ALIVE);
          return 7;
        };
        const elem = 2;
        const yval = g.maxPeers - 1;
        const genX = claim(elem, hb.id, 1);
        const genY = claim(yval, ha.id, 1);
        // The next id the daemon hands out skips the claimed entry.
        const member = client(srv.socket);
        expect(member.handshake(2).id).to.equal(3);
        member.close();
        first.take(3); // c's two doorbells and its leave
        const word = slotOffset(g, 0) >> 2;
        i32[word + SLOT.CLIENT] = elem;
        i32[word + SLOT.CLIENT_GEN] = genX;
        i32[word + SLOT.SERVER] = yval;
        i32[word + SLOT.SERVER_GEN] = genY;
        Atomics.store(i32, word + SLOT.STATE, makeState(0, SLOT_ESTABLISHED));
        for (const fd of ha.own) native().drain(fd);
        second.close();
        // The guest's process is reaped with it, and its peer is woken on the vector its route names.
        expect(native().waitReadable(ha.own[1], 3000)).to.equal(true);
        expect(native().drain(ha.own[1])).to.be.at.least(1);
        expect(native().drain(ha.own[0])).to.equal(0);
        expect(i32[word + SLOT.CLIENT_FLAGS]).to.equal(F_DEAD | F_CLOSED);
        expect(Atomics.load(i32, pendingOffset(g, yval) >> 2) & 1).to.equal(1);
        await until(() => Atomics.load(i32, (peerOffset(g, elem) >> 2) + PEER.STATE) === PEER_FREE, 3000, "the guest process's entry to be freed");
        expect(Atomics.load(i32, (peerOffset(g, yval) >> 2) + PEER.STATE)).to.equal(PEER_ALIVE);
        await until(() => /peer 2 left \(a process of guest peer 1\)/.test(srv.out.stderr), 3000, 'the log line');
      } finally {
        region.close();
      }
    });
  });

  describe('lifetime', () => {
    it('exits when idle and leaves nothing behind, removing a folder it made', async () => {
      const sub = path.join(dir, 'sub');
      const sock = path.join(sub, 'zivm.sock');
      const srv = await server([...SMALL, '--idle-exit', '0.2'], {}, sock);
      expect(fs.statSync(sub).mode & 0o777).to.equal(0o700);
      expect(fs.lstatSync(sock).mode & 0o777).to.equal(0o600);
      const member = client(sock);
      member.handshake(1);
      // a peer keeps it alive past the idle time
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(processAlive(srv.child.pid!)).to.equal(true);
      member.close();
      const entry = await Promise.race([srv.exited, new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000))]);
      expect(entry).to.deep.equal({ code: 0, signal: null });
      expect(fs.existsSync(sub)).to.equal(false);
    });

    it('an auto-started daemon nobody joins exits on its own', async () => {
      const sock = path.join(dir, 'zivm.sock');
      const res = await runCli(['server', '--auto', '--socket', sock, ...SMALL], { ZIVM_IDLE_MS: '100' });
      expect(res.code).to.equal(0);
      expect(res.stdout).to.equal('');
      expect(fs.readdirSync(dir)).to.deep.equal([]);
    });

    it('stops on SIGTERM: peers see end of stream, files are gone', async () => {
      const srv = await server(SMALL);
      const member = client(srv.socket);
      member.handshake(1);
      expect(fs.readdirSync(dir).sort()).to.deep.equal(['zivm.sock', 'zivm.sock.lock']);
      expect(await srv.stop()).to.deep.equal({ code: 0, signal: null });
      expect(member.recv()).to.equal(false);
      expect(fs.readdirSync(dir)).to.deep.equal([]);
    });

    it('takes over from a daemon that was killed (stale socket and lock)', async () => {
      const s1 = await server(SMALL);
      killQuiet(s1.child.pid, 'SIGKILL');
      await s1.exited;
      expect(fs.readdirSync(dir).sort()).to.deep.equal(['zivm.sock', 'zivm.sock.lock']);
      const s2 = await server(SMALL);
      const member = client(s2.socket);
      expect(member.handshake(1).id).to.equal(0);
    });

    it('refuses to start a second time on the same socket', async () => {
      const srv = await server(SMALL);
      const res = await runCli(['server', '--socket', srv.socket, ...SMALL]);
      expect(res.code).to.equal(1);
      expect(res.stderr).to.equal(`zivm: a daemon already serves ${srv.socket}\n`);
      const auto = await runCli(['server', '--auto', '--socket', srv.socket, ...SMALL]);
      expect(auto.code).to.equal(0);
      expect(auto.stderr).to.equal('');
      // the first one is untouched
      const member = client(srv.socket);
      expect(member.handshake(1).id).to.equal(0);
    });
  });

  describe('autostart', () => {
    it('six processes starting at once share one daemon', async function () {
      this.timeout(30000);
      const sock = path.join(dir, 'zivm.sock');
      const env = { ZIVM_SIZE: '4M', ZIVM_RING: '64K', ZIVM_IDLE_MS: '300' };
      const racers = Array.from({ length: 6 }, () => spawnRacer(sock, env));
      children.push(...racers);
      // Each says which daemon it joined and its id: one line, or its exit with its stderr.
      const got = (await Promise.all(racers.map((res) => res.next(undefined, 25000)))) as { pid: number; id: number }[];
      const daemonPids = new Set(got.map((val) => val.pid));
      expect(daemonPids.size, JSON.stringify(got)).to.equal(1);
      const daemonPid = got[0].pid;
      pids.push(daemonPid);
      expect(new Set(got.map((val) => val.id)).size).to.equal(6);
      expect(processAlive(daemonPid)).to.equal(true);
      for (const res of racers) res.proc.stdin!.end();
      expect((await Promise.all(racers.map((res) => res.exited))).map((entry) => entry.code)).to.deep.equal([0, 0, 0, 0, 0, 0]);
      await until(() => !processAlive(daemonPid), 5000, 'the daemon to exit');
      await until(() => fs.readdirSync(dir).length === 0, 2000, 'the folder to be empty');
    });

    it('connectDaemon without autostart fails with ERR_ZIVM_NO_DAEMON', () => {
      const sock = path.join(dir, 'zivm.sock');
      expect(() => connectDaemon({ socketPath: sock, autostart: false }))
        .to.throw()
        .with.property('code', 'ERR_ZIVM_NO_DAEMON');
      expect(() => connectDaemon({ socketPath: sock, env: { ZIVM_AUTOSTART: '0' } }))
        .to.throw()
        .with.property('code', 'ERR_ZIVM_NO_DAEMON');
      expect(fs.readdirSync(dir)).to.deep.equal([]);
    });

    it('parses sizes', () => {
      expect(parseSize('4096')).to.equal(4096);
      expect(parseSize('512K')).to.equal(512 * 1024);
      expect(parseSize('256M')).to.equal(256 * MiB);
      expect(parseSize('1G')).to.equal(1024 * MiB);
      expect(parseSize('1.5g')).to.equal(1536 * MiB);
      expect(parseSize('64KiB')).to.equal(64 * 1024);
      for (const bad of ['', 'M', '12Q', '-1M', '0.3', '1 2']) expect(() => parseSize(bad), bad).to.throw(RangeError);
    });
  });

  describe('paths and options', () => {
    it('picks the socket path from the environment', () => {
      expect(socketPath({ ZIVM_SOCKET: '/a/b.sock', ZIVM_DIR: '/c', XDG_RUNTIME_DIR: '/d' })).to.equal('/a/b.sock');
      expect(socketPath({ ZIVM_DIR: '/c', XDG_RUNTIME_DIR: '/d' })).to.equal('/c/zivm.sock');
      expect(socketPath({ XDG_RUNTIME_DIR: '/d' })).to.equal('/d/zivm/zivm.sock');
      expect(socketPath({})).to.match(/\/zivm-\d+\/zivm\.sock$/);
    });

    it('refuses an unsafe folder with ERR_ZIVM_UNSAFE_DIR', async () => {
      const open = path.join(dir, 'open');
      fs.mkdirSync(open);
      fs.chmodSync(open, 0o777);
      expect(() => ensureDir(open))
        .to.throw()
        .with.property('code', 'ERR_ZIVM_UNSAFE_DIR');
      expect(() => connectDaemon({ socketPath: path.join(open, 'zivm.sock') }))
        .to.throw()
        .with.property('code', 'ERR_ZIVM_UNSAFE_DIR');
      const res = await runCli(['server', '--socket', path.join(open, 'zivm.sock'), ...SMALL]);
      expect(res.code).to.equal(1);
      expect(res.stderr).to.contain('refusing to use socket folder');
      expect(fs.readdirSync(open)).to.deep.equal([]);
      const link = path.join(dir, 'link');
      fs.symlinkSync(dir, link);
      expect(() => checkDir(link))
        .to.throw()
        .with.property('code', 'ERR_ZIVM_UNSAFE_DIR');
      const made = path.join(dir, 'made', 'deeper');
      expect(ensureDir(made)).to.equal(true);
      expect(ensureDir(made)).to.equal(false);
      expect(fs.statSync(made).mode & 0o777).to.equal(0o700);
      if (process.getuid?.() === 0) {
        const theirs = path.join(dir, 'theirs');
        fs.mkdirSync(theirs, { mode: 0o700 });
        fs.chownSync(theirs, 65534, 65534);
        expect(() => ensureDir(theirs)).to.throw(/owned by uid 65534/);
      }
    });

    it('rejects bad options with usage and exit code 2', async () => {
      const sock = path.join(dir, 'zivm.sock');
      const cases = [
        ['server', '--socket', sock, '--bogus'],
        ['server', '--socket', sock, '--size', '12Q'],
        ['server', '--socket', sock, '--ring', '3000'],
        ['server', '--socket', sock, '--vectors', 'x'],
        ['server', '--socket', sock, '--idle-exit'],
        ['server', '--socket', sock, 'extra'],
        ['frobnicate'],
      ];
      const results = await Promise.all(cases.map((item) => runCli(item)));
      results.forEach((res, i) => {
        expect(res.code, cases[i].join(' ')).to.equal(2);
        expect(res.stderr, cases[i].join(' ')).to.contain('usage: zivm');
        expect(res.stdout).to.equal('');
      });
      expect(fs.readdirSync(dir)).to.deep.equal([]);
    });

    it('prints help and version', async () => {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
      const [value, holder] = await Promise.all([runCli(['--version']), runCli(['--help'])]);
      expect(value.code).to.equal(0);
      expect(value.stdout).to.equal(`${pkg.version}\n`);
      expect(holder.code).to.equal(0);
      expect(holder.stdout).to.contain('server');
    });
  });
});
