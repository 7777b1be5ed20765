/**
 * Node addresses published in peer entries, and the directory's matching of
 * listeners on another node (a VM guest) by those addresses. Pure layout: a
 * region in an ArrayBuffer and stand-in domains, no daemon.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Domain } from '../src/shm/domain';
import { parseAddr, publishAddrs, publishedAddrs, publishableAddrs, formatAddr, isOwnAddress, Addr } from '../src/shm/addrs';
import { find, register } from '../src/shm/directory';
import * as Lay from '../src/shm/layout';

const addr = (str: string): Addr => parseAddr(str)!;

function region(): { i32: Int32Array; g: Lay.Geometry } {
  const geo = Lay.computeGeometry({ size: 1 << 20, ringSize: 4096, vectors: 1, maxPeers: 8, maxListeners: 8 });
  const i32 = new Int32Array(new ArrayBuffer(geo.size));
  Lay.writeHeader(i32, geo, 1, 42);
  Atomics.store(i32, Lay.HEADER.STATE, Lay.REGION_STATE_READY);
  return { i32, g: geo };
}

/** A stand-in domain: peer `id` of `node`, alive, publishing `addrs`. */
function peer(res: { i32: Int32Array; g: Lay.Geometry }, id: number, node: number, kind: number, addrs: string[], guest = false): Domain {
  const entry = Lay.peerOffset(res.g, id) >>> 2;
  Atomics.store(res.i32, entry + Lay.PEER.GEN, 7);
  Atomics.store(res.i32, entry + Lay.PEER.KIND, kind);
  publishAddrs(res.i32, res.g, id, addrs.map(addr));
  Atomics.store(res.i32, entry + Lay.PEER.STATE, Lay.PEER_ALIVE);
  return {
    id,
    gen: 7,
    nodeId: node,
    i32: res.i32,
    geo: res.g,
    guest: guest ? {} : undefined,
    // What the daemon would have told a host process: here, the entries of kind 'process'.
    guestAddrs: guest ? [] : [addr('10.77.2.2')],
    declares: (wanted: Addr) => !guest && formatAddr(wanted) === '10.77.2.2',
    isHostProcess: (pid: number) => Atomics.load(res.i32, (Lay.peerOffset(res.g, pid) >>> 2) + Lay.PEER.KIND) === Lay.PEER_KIND_PROCESS,
    peerAlive: (pid: number, gen: number) =>
      Atomics.load(res.i32, (Lay.peerOffset(res.g, pid) >>> 2) + Lay.PEER.STATE) === Lay.PEER_ALIVE &&
      Atomics.load(res.i32, (Lay.peerOffset(res.g, pid) >>> 2) + Lay.PEER.GEN) === gen,
  } as unknown as Domain;
}

describe('peer addresses: publishing and cross-node lookup', () => {
  it('the address words sit in the reserved part of the 128-byte peer entry', () => {
    expect(Lay.PEER_ADDRS.ADDR_COUNTS).to.be.greaterThan(Math.max(...Object.values(Lay.PEER)));
    expect(Lay.PEER_ADDRS.ADDR_V4 + Lay.ADDR_MAX_V4).to.be.at.most(Lay.PEER_ADDRS.ADDR_V6);
    expect((Lay.PEER_ADDRS.ADDR_V6 + 4 * Lay.ADDR_MAX_V6) * 4).to.be.at.most(Lay.PEER_SIZE);
  });

  it('round-trips IPv4 and IPv6 addresses, capped per family', () => {
    const res = region();
    const v4 = Array.from({ length: 9 }, (_, i) => `10.0.0.${i + 1}`);
    const v6 = ['2001:db8::1', 'fd00::2', 'fd00::3', 'fd00::4', 'fd00::5'];
    publishAddrs(res.i32, res.g, 3, [...v4, ...v6].map(addr));
    const got = publishedAddrs(res.i32, res.g, 3).map(formatAddr);
    expect(got).to.deep.equal([...v4.slice(0, Lay.ADDR_MAX_V4), ...v6.slice(0, Lay.ADDR_MAX_V6)]);
    publishAddrs(res.i32, res.g, 3, []);
    expect(publishedAddrs(res.i32, res.g, 3)).to.deep.equal([]);
  });

  it('never publishes loopback, unspecified or IPv6 link-local addresses', () => {
    for (const arg of publishableAddrs().map(formatAddr)) {
      expect(arg).to.not.match(/^127\.|^::1$|^fe[89ab]/);
    }
  });

  it('a guest reaches a host listener by an address the host published; loopback stays on the node', () => {
    const res = region();
    const host = peer(res, 0, 1000, Lay.PEER_KIND_PROCESS, ['10.77.1.1']);
    const guest = peer(res, 1, 2 ** 50 + 5, Lay.PEER_KIND_GUEST, ['10.77.2.2'], true);
    register(host, { addr: addr('0.0.0.0'), port: 80, ipv6Only: false, backlog: 5 });
    register(host, { addr: addr('127.0.0.1'), port: 81, ipv6Only: false, backlog: 5 });
    expect(find(guest, addr('10.77.1.1'), 80)?.owner).to.equal(0);
    expect(find(guest, addr('10.77.1.9'), 80), 'an address the host did not publish').to.equal(undefined);
    expect(find(guest, addr('127.0.0.1'), 80), 'loopback is the guest itself').to.equal(undefined);
    expect(find(guest, addr('10.77.1.1'), 81), 'a loopback listener is not reachable from another node').to.equal(undefined);
    expect(find(host, addr('127.0.0.1'), 81)?.owner).to.equal(0);
  });

  it('a host reaches a guest listener by the guest address the operator declared; between two host nodes nothing changes', () => {
    const res = region();
    const host = peer(res, 0, 1000, Lay.PEER_KIND_PROCESS, ['10.77.1.1']);
    const other = peer(res, 2, 2000, Lay.PEER_KIND_PROCESS, ['10.77.3.3']);
    const guest = peer(res, 1, 2 ** 50 + 5, Lay.PEER_KIND_GUEST, ['10.77.2.2'], true);
    register(guest, { addr: addr('10.77.2.2'), port: 90, ipv6Only: false, backlog: 5 });
    register(other, { addr: addr('0.0.0.0'), port: 91, ipv6Only: false, backlog: 5 });
    expect(find(host, addr('10.77.2.2'), 90)?.owner).to.equal(1);
    register(guest, { addr: addr('10.77.9.9'), port: 92, ipv6Only: false, backlog: 5 });
    publishAddrs(res.i32, res.g, 1, [addr('10.77.2.2'), addr('10.77.9.9')]);
    expect(find(host, addr('10.77.9.9'), 92), 'an address the guest published but the operator did not declare').to.equal(undefined);
    expect(find(host, addr('10.77.3.3'), 91), 'another network namespace of the host: TCP, as before').to.equal(undefined);
    // The guest dies: its entry is no longer alive.
    Atomics.store(res.i32, (Lay.peerOffset(res.g, 1) >>> 2) + Lay.PEER.STATE, Lay.PEER_DEAD);
    expect(find(host, addr('10.77.2.2'), 90)).to.equal(undefined);
  });
  it("finders in a guest's domain look up to the listener mark: a forged mark hides listeners (their connections go over TCP), nothing else", () => {
    const res = region();
    const host = peer(res, 0, 1000, Lay.PEER_KIND_PROCESS, ['10.77.1.1']);
    const guest = peer(res, 1, 2 ** 50 + 5, Lay.PEER_KIND_GUEST, ['10.77.2.2'], true);
    for (let port = 100; port < 106; port++) register(host, { addr: addr('0.0.0.0'), port, ipv6Only: false, backlog: 5 });
    expect(Atomics.load(res.i32, Lay.HEADER.LISTENERS_HIGH), 'the mark: one past the last entry claimed').to.equal(6);
    expect(find(guest, addr('10.77.1.1'), 105)?.index).to.equal(5);
    // A guest writes the mark: too low hides the entries above it, as rewriting their state words would.
    Atomics.store(res.i32, Lay.HEADER.LISTENERS_HIGH, 3);
    expect(find(guest, addr('10.77.1.1'), 105)).to.equal(undefined);
    expect(find(guest, addr('10.77.1.1'), 102)?.index).to.equal(2);
    // Zero, negative or past the table: every entry.
    for (const forged of [0, -1, 9, 0x7fffffff]) {
      Atomics.store(res.i32, Lay.HEADER.LISTENERS_HIGH, forged);
      expect(find(guest, addr('10.77.1.1'), 105)?.index, `mark ${forged}`).to.equal(5);
    }
  });

  it("a client's choice takes this node's address list up to 10 s old and makes it again after the turn; a vetting side takes one at most 1 s old", async () => {
    const realList = os.networkInterfaces;
    const realNow = Date.now;
    let clock = realNow() + 3_600_000;
    let extra: string | undefined;
    let dumps = 0;
    const fake = (): NodeJS.Dict<os.NetworkInterfaceInfo[]> => {
      dumps++;
      const list = realList();
      if (extra) {
        list.zivmtest0 = [{ address: extra, netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr: `${extra}/24` }];
      }
      return list;
    };
    os.networkInterfaces = fake;
    Date.now = () => clock;
    try {
      const target = addr('10.99.88.77');
      expect(isOwnAddress(target)).to.equal(false);
      const made = dumps;
      extra = '10.99.88.77';
      clock += 500;
      expect(isOwnAddress(target, true), 'half a second old: as it is').to.equal(false);
      expect(isOwnAddress(target), 'half a second old: as it is').to.equal(false);
      expect(dumps).to.equal(made);
      clock += 4000;
      expect(isOwnAddress(target, true), 'a client, 4.5 s old: the old list, now').to.equal(false);
      expect(dumps, 'no dump on the way').to.equal(made);
      await new Promise((resolve) => setImmediate(resolve));
      expect(dumps, 'made again after the turn').to.equal(made + 1);
      expect(isOwnAddress(target, true)).to.equal(true);
      extra = undefined;
      clock += 1500;
      expect(isOwnAddress(target), 'a vetting side, 1.5 s old: made again at once').to.equal(false);
      expect(dumps).to.equal(made + 2);
      extra = '10.99.88.77';
      clock += 11_000;
      expect(isOwnAddress(target, true), 'a client, 11 s old: made again at once').to.equal(true);
      expect(dumps).to.equal(made + 3);
    } finally {
      os.networkInterfaces = realList;
      Date.now = realNow;
      // The list cached now is of the future: the next look makes it again.
      expect(isOwnAddress(addr('10.99.88.77'))).to.equal(false);
    }
  });

  it('a peer publishes addresses that appear after it joined (an interface that comes up later), within about a second', async function () {
    this.timeout(20000);
    // A process in a network namespace of its own: it joins, then an address is added to its lo.
    const src = path.join(__dirname, '..', 'src');
    const script = `
      const { execFileSync } = require('node:child_process');
      const { getDomain } = require(${JSON.stringify(path.join(src, 'shm', 'join'))});
      const { publishedAddrs, formatAddr } = require(${JSON.stringify(path.join(src, 'shm', 'addrs'))});
      const d = getDomain(true);
      if (!d) throw new Error('no domain');
      const now = () => publishedAddrs(d.i32, d.geo, d.id).map(formatAddr);
      const before = now();
      execFileSync('ip', ['addr', 'add', '10.66.0.1/32', 'dev', 'lo']);
      const t0 = Date.now();
      const poll = () => {
        if (now().includes('10.66.0.1') || Date.now() - t0 > 5000) {
          console.log(JSON.stringify({ before, after: now(), ms: Date.now() - t0 }));
          process.exit(0);
        }
        setTimeout(poll, 20);
      };
      poll();`;
    const ns = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
    const out = await new Promise<string>((resolve, reject) =>
      execFile('unshare', [...ns, 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, '-e', script], (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    const res = JSON.parse(out) as { before: string[]; after: string[]; ms: number };
    expect(res.before).to.deep.equal([]);
    expect(res.after).to.deep.equal(['10.66.0.1']);
    expect(res.ms).to.be.below(3000);
  });
});

describe('parsing addresses', () => {
  /** What node:net makes of it: undefined if not an IP address, else its canonical text (IPv4-mapped as IPv4). */
  function reference(text: string): string | undefined {
    const version = net.isIP(text);
    if (version === 4) return text;
    if (version !== 6) return undefined;
    const host = new URL(`http://[${text.replace(/%.*$/, '')}]/`).hostname.slice(1, -1);
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (!mapped) return host;
    const high = parseInt(mapped[1], 16);
    const low = parseInt(mapped[2], 16);
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
  }

  function check(text: string): void {
    const ours = parseAddr(text);
    const want = reference(text);
    expect(ours === undefined ? undefined : formatAddr(ours), JSON.stringify(text)).to.equal(want);
  }

  it('takes exactly what net.isIP takes, with the bytes node:url reads', () => {
    const known = [
      '',
      '1.2.3.4',
      '255.255.255.255',
      '256.1.1.1',
      '01.2.3.4',
      '1.2.3',
      '1.2.3.4.5',
      '1..2.3',
      '0.0.0.0',
      ' 1.2.3.4',
      '::',
      '::1',
      '1::',
      '::ffff:1.2.3.4',
      '::ffff:7f00:1',
      '1:2:3:4:5:6:7:8',
      '1:2:3:4:5:6:7::',
      '1:2:3:4::5:6:7:8',
      '1:2:3:4:5:6:1.2.3.4',
      '1:2:1.2.3.4',
      '::1.2.3.4',
      '1::2::3',
      ':1::',
      '1:::2',
      'fe80::1%eth0',
      'fe80::1%',
      'fe80::1%e/0',
      'FE80::ABCD',
      '12345::',
      '::g',
      '1:2:3:4:5:6:7:8:9',
      '::01.2.3.4',
      '2001:db8::1.2.3.4',
      '1:2:3:4:5::1.2.3.4',
      '1:2:3:4:5:6::1.2.3.4',
      ':',
      ':::',
      '1:',
    ];
    for (const text of known) check(text);
    // Random strings over the characters addresses are made of.
    const alphabet = '0123456789abcdefABCDEF:.%';
    let seed = 12345;
    const rand = (below: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % below;
    };
    for (let k = 0; k < 40000; k++) {
      let text = '';
      const len = rand(24);
      for (let i = 0; i < len; i++) text += alphabet[rand(alphabet.length)];
      check(text);
    }
    // Random valid addresses, written in every way node prints or takes them.
    for (let k = 0; k < 5000; k++) {
      const bytes = Buffer.alloc(16);
      for (let i = 0; i < 16; i++) bytes[i] = rand(4) === 0 ? rand(256) : 0;
      const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
      check(groups.join(':'));
      check(formatAddr({ family: 6, bytes: new Uint8Array(bytes) }));
      check(`${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`);
    }
  });
});
