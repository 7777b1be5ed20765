/**
 * Containers and pods: processes in network namespaces of their own, each
 * with an address on a bridge, that share the daemon's socket (a folder
 * bind-mounted into each, as a DaemonSet's hostPath gives pods). The test
 * makes the namespaces, veth pairs and the bridge (in a namespace of its
 * own: the host's network is not touched) and removes them. Needs root and
 * iproute2.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES } from './helpers/proc';
import { Proc, killAll } from '../tools/kit/proc';
import { maxPeersOf, zivmMaps } from './helpers/maps';
import { readableCopy, type ReadableCopy } from './helpers/readable';

const PEER = path.join(FIXTURES, 'peer.js');
const MAIN = path.join(FIXTURES, '..', '..', 'src', 'cli', 'main.js');
const MiB = 1024 * 1024;
/** The node's addresses on the bridge: the pods' gateway, and one that no pod holds (as a pod of another node would be). */
const GATEWAY = '10.77.0.254';
const NODE_OTHER = '10.77.0.99';
const SERVICE = '10.96.0.10';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** Bytes that crossed a namespace's eth0, both ways. */
function ethBytes(ns: string): number {
  const [link] = JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', 'eth0')) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
  return link.stats64.rx.bytes + link.stats64.tx.bytes;
}

describe('pods: processes in network namespaces of their own', function () {
  this.timeout(120000);
  const prefix = `zp${process.pid % 100000}x`;
  const pods = [1, 2, 3].map((i) => ({ ns: `${prefix}${i}`, addr: `10.77.0.${i}`, addr6: `fd77::${i}` }));
  const bridge = `${prefix}br`;
  let dir = '';
  let sock = '';
  let daemon: Proc | undefined;
  /** The package as other users may run it (pods of other uids). */
  let copy: ReadableCopy | undefined;

  before(async function () {
    if (process.getuid?.() !== 0) throw new Error('these tests make network namespaces: run them as root');
    try {
      ip('-V');
    } catch {
      throw new Error('these tests need iproute2 (apt-get install iproute2)');
    }
    try {
      execFileSync('iptables-save', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error('these tests need iptables (apt-get install iptables): the node namespace gets Service DNAT rules');
    }
    // The node: the bridge, the node's own addresses on it (the pods' gateway), routing, and the daemon.
    ip('netns', 'add', bridge);
    ip('-n', bridge, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', bridge, 'link', 'set', 'br0', 'up');
    ip('-n', bridge, 'link', 'set', 'lo', 'up');
    ip('-n', bridge, 'addr', 'add', `${GATEWAY}/24`, 'dev', 'br0');
    ip('-n', bridge, 'addr', 'add', `${NODE_OTHER}/24`, 'dev', 'br0');
    execFileSync('ip', ['netns', 'exec', bridge, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    pods.forEach(({ ns, addr, addr6 }, k) => {
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${k}`, 'netns', bridge);
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
      ip('-n', ns, 'addr', 'add', `${addr6}/64`, 'dev', 'eth0', 'nodad');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'route', 'add', 'default', 'via', GATEWAY);
      ip('-n', bridge, 'link', 'set', `p${k}`, 'master', 'br0');
      ip('-n', bridge, 'link', 'set', `p${k}`, 'up');
    });
    // The node's folder, as a hostPath is (others may pass through it); the daemon makes its own folder in it.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-pods-'));
    fs.chmodSync(dir, 0o755);
    sock = path.join(dir, 'node', 'zivm.sock');
    copy = readableCopy();
    // --pods: containers of every uid may reach the socket; NODE_DEBUG says why a connection stays on TCP.
    daemon = new Proc('ip', ['netns', 'exec', bridge, process.execPath, MAIN, 'server', '--socket', sock, '--pods', '--verbose'], {
      name: 'node daemon',
      timeoutMs: 10000,
      env: { ...process.env, NODE_DEBUG: 'zivm' },
    });
    const deadline = Date.now() + 5000;
    while (!fs.existsSync(sock)) {
      if (Date.now() > deadline) throw new Error(`no daemon socket at ${sock}: ${daemon.stderr()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });

  after(async () => {
    await killAll();
    // Only those the set-up made (it may have stopped early, for example without iptables).
    for (const ns of [...pods.map((pod) => pod.ns), bridge]) {
      if (fs.existsSync(`/run/netns/${ns}`)) execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    copy?.remove();
  });

  const running: Proc[] = [];
  afterEach(async () => {
    const stopping = running.splice(0);
    for (const proc of stopping) proc.kill('SIGKILL');
    await Promise.all(stopping.map((proc) => proc.exit(5000)));
  });

  /** test/fixtures/peer.js in network namespace `ns` as user `uid`, with the node's daemon socket. */
  function inPodAs(ns: string, uid: number, args: string[]): Proc {
    const proc = new Proc(
      'ip',
      ['netns', 'exec', ns, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', copy!.nodeBin, path.join(copy!.fixtures, 'peer.js'), ...args],
      { name: `${args[0]} in ${ns} as ${uid}`, cwd: '/', env: { ...process.env, HOME: '/', ZIVM_SOCKET: sock, ZIVM_AUTOSTART: '0' } },
    );
    running.push(proc);
    return proc;
  }

  /** test/fixtures/peer.js in the node's network namespace (the daemon's). */
  function inNode(args: string[]): Proc {
    return inPod(bridge, args);
  }

  /** test/fixtures/peer.js in network namespace `ns`, with the node's daemon socket (and `env`). */
  function inPod(ns: string, args: string[], env: Record<string, string> = {}): Proc {
    const proc = new Proc('ip', ['netns', 'exec', ns, process.execPath, PEER, ...args], {
      name: `${args[0]} in ${ns}`,
      env: { ...process.env, ZIVM_SOCKET: sock, ZIVM_AUTOSTART: '0', ...env },
    });
    running.push(proc);
    return proc;
  }

  it('two pods connect over shared memory at their own addresses: a 64 MiB echo arrives intact both ways, the listener sees the dialler at its address, no bytes cross the veth pair', async () => {
    const [podA, podB] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7001']);
    expect((await server.event('listening')).port).to.equal(7001);
    const before = ethBytes(podA.ns) + ethBytes(podB.ns);
    const client = inPod(podB.ns, ['transfer', 'zivm', '7001', podA.addr, String(64 * MiB), '7']);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    const conn = await server.event('connection');
    expect(conn).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
    const done = await client.event('done');
    expect(done.bytes).to.equal(64 * MiB);
    expect(done.received, 'sha256 of what came back').to.equal(done.sent);
    expect(ethBytes(podA.ns) + ethBytes(podB.ns) - before, 'bytes on the veth pairs').to.be.below(MiB);
  });

  it("each pod maps only its own namespace's domain and the pair domains of its own connections", async () => {
    const [podA, podB, podC] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7007']);
    const bystander = inPod(podC.ns, ['echo-server', 'zivm', '0.0.0.0', '7008']);
    await Promise.all([server.event('listening'), bystander.event('listening')]);
    const client = inPod(podB.ns, ['flood', 'zivm', '7007', podA.addr]);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    await server.event('connection');
    const mapsA = zivmMaps(server.pid);
    const mapsB = zivmMaps(client.pid);
    const mapsC = zivmMaps(bystander.pid);
    const shared = [...mapsA.keys()].filter((inode) => mapsB.has(inode));
    expect(shared, 'regions both pods map').to.have.length(1);
    expect(maxPeersOf(mapsA.get(shared[0])!), 'the one they share is a pair domain').to.equal(2);
    expect(mapsA.size, "A's regions: its namespace's domain and the pair domain").to.equal(2);
    expect(mapsB.size, "B's regions: its namespace's domain and the pair domain").to.equal(2);
    expect(
      [...mapsC.keys()].filter((inode) => mapsA.has(inode) || mapsB.has(inode)),
      'regions C shares with them',
    ).to.deep.equal([]);
  });

  it('over IPv6 too: a pod dials another at its IPv6 address and is seen at its own', async () => {
    const [podA, podB] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '::', '7009']);
    await server.event('listening');
    const client = inPod(podB.ns, ['transfer', 'zivm', '7009', podA.addr6, String(4 * MiB), '9']);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    expect(await server.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: podB.addr6 });
    const done = await client.event('done');
    expect(done.received, 'sha256 of what came back').to.equal(done.sent);
  });

  it("a Service's address whose DNAT rule picks a pod of this node goes over shared memory to that pod; one whose rule picks an address of no pod here stays TCP", async () => {
    const [podA, podB] = pods;
    const rules = [
      '-N KUBE-SERVICES',
      '-N KUBE-SVC-ECHO',
      '-N KUBE-SEP-A',
      '-N KUBE-SVC-AWAY',
      '-N KUBE-SEP-AWAY',
      '-N KUBE-MARK-MASQ',
      '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      `-A KUBE-SERVICES -d ${SERVICE}/32 -p tcp -m comment --comment "default/echo cluster IP" -m tcp --dport 80 -j KUBE-SVC-ECHO`,
      `-A KUBE-SERVICES -d ${SERVICE}/32 -p tcp -m comment --comment "default/away cluster IP" -m tcp --dport 81 -j KUBE-SVC-AWAY`,
      `-A KUBE-SVC-ECHO -m comment --comment "default/echo -> ${podA.addr}:7010" -j KUBE-SEP-A`,
      `-A KUBE-SEP-A -s ${podA.addr}/32 -j KUBE-MARK-MASQ`,
      `-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination ${podA.addr}:7010`,
      '-A KUBE-SVC-AWAY -j KUBE-SEP-AWAY',
      `-A KUBE-SEP-AWAY -p tcp -m tcp -j DNAT --to-destination ${NODE_OTHER}:7011`,
    ];
    for (const rule of rules)
      execFileSync('ip', ['netns', 'exec', bridge, 'iptables', '-t', 'nat', ...rule.match(/"[^"]*"|\S+/g)!.map((word) => word.replace(/^"|"$/g, ''))]);
    try {
      const server = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7010']);
      await server.event('listening');
      const client = inPod(podB.ns, ['transfer', 'zivm', '80', SERVICE, String(4 * MiB), '11']);
      expect(await client.next(), 'the client, connected').to.deep.include({ event: 'connect', transport: 'shm', remoteAddress: SERVICE, remotePort: 80 });
      expect(await server.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
      const done = await client.event('done');
      expect(done.received, 'sha256 of what came back').to.equal(done.sent);
      // The same Service over plain TCP, through the node's rules: the rules are real.
      const plain = inPod(podB.ns, ['transfer', 'net', '80', SERVICE, String(MiB), '12']);
      expect(await plain.next()).to.deep.include({ event: 'connect', transport: 'tcp' });
      expect((await plain.event('done')).bytes).to.equal(MiB);
      // Sent to an address of the node that no pod holds (a pod of another node, as far as zivm can tell): TCP, refused there.
      const away = inPod(podB.ns, ['flood', 'zivm', '81', SERVICE]);
      expect(await away.next()).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
    } finally {
      execFileSync('ip', ['netns', 'exec', bridge, 'iptables', '-t', 'nat', '-F']);
      execFileSync('ip', ['netns', 'exec', bridge, 'iptables', '-t', 'nat', '-X']);
    }
  });

  it("the same with kube-proxy's nftables mode (table ip kube-proxy): the endpoint `numgen random` picks among pods of this node over shared memory, one of another node over TCP, and a rule zivm cannot read keeps TCP and says why", async () => {
    try {
      execFileSync('nft', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error('this test needs nft (apt-get install nftables): the node namespace gets Service DNAT rules in nftables');
    }
    const [podA, podB, podC] = pods;
    // As kube-proxy writes them (nftables mode): a verdict map by address . protocol . port, a service chain drawing an endpoint, endpoint chains with the masquerade mark.
    const table = 'ip kube-proxy';
    const rules = [
      `add table ${table} { comment "rules for kube-proxy" ; }`,
      `add map ${table} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
      `add chain ${table} nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }`,
      ...['mark-for-masquerade', 'services', 'service-ECHO', 'endpoint-A', 'endpoint-C', 'service-AWAY', 'endpoint-AWAY', 'service-ODD'].map(
        (chain) => `add chain ${table} ${chain}`,
      ),
      `add rule ${table} mark-for-masquerade mark set mark or 0x4000`,
      `add rule ${table} nat-prerouting jump services`,
      `add rule ${table} services ip daddr . meta l4proto . th dport vmap @service-ips`,
      `add rule ${table} service-ECHO ip daddr ${SERVICE} ip saddr != 10.77.0.0/24 jump mark-for-masquerade`,
      `add rule ${table} service-ECHO numgen random mod 2 vmap { 0 : goto endpoint-A , 1 : goto endpoint-C }`,
      `add rule ${table} endpoint-A ip saddr ${podA.addr} jump mark-for-masquerade`,
      `add rule ${table} endpoint-A meta l4proto tcp dnat to ${podA.addr}:7017`,
      `add rule ${table} endpoint-C ip saddr ${podC.addr} jump mark-for-masquerade`,
      `add rule ${table} endpoint-C counter meta l4proto tcp dnat to ${podC.addr}:7017`,
      `add rule ${table} service-AWAY numgen random mod 1 vmap { 0 : goto endpoint-AWAY }`,
      `add rule ${table} endpoint-AWAY meta l4proto tcp dnat to ${NODE_OTHER}:7018`,
      // A match zivm does not read (the incoming interface), on the way to a pod of this node.
      `add rule ${table} service-ODD iifname "p1" jump mark-for-masquerade`,
      `add rule ${table} service-ODD meta l4proto tcp dnat to ${podA.addr}:7017`,
      `add element ${table} service-ips { ${SERVICE} . tcp . 80 comment "default/echo:http" : goto service-ECHO }`,
      `add element ${table} service-ips { ${SERVICE} . tcp . 81 : goto service-AWAY }`,
      `add element ${table} service-ips { ${SERVICE} . tcp . 82 : goto service-ODD }`,
    ];
    execFileSync('ip', ['netns', 'exec', bridge, 'nft', '-f', '-'], { input: rules.join('\n') + '\n' });
    try {
      const servers = [inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7017']), inPod(podC.ns, ['echo-server', 'zivm', '0.0.0.0', '7017'])];
      await Promise.all(servers.map((server) => server.event('listening')));
      // The daemon reads the node's rules again after a second.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const client = inPod(podB.ns, ['transfer', 'zivm', '80', SERVICE, String(4 * MiB), '17']);
      expect(await client.next(), 'the client, connected').to.deep.include({ event: 'connect', transport: 'shm', remoteAddress: SERVICE, remotePort: 80 });
      const done = await client.event('done');
      expect(done.received, 'sha256 of what came back').to.equal(done.sent);
      const reached = await Promise.all(servers.map((server) => server.find((line) => line.event === 'connection', 500)));
      expect(reached.filter(Boolean), 'connections that reached pod A or pod C').to.have.length(1);
      expect(reached.find(Boolean)).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
      // The same Service over plain TCP, through the node's rules: the rules are real.
      const plain = inPod(podB.ns, ['transfer', 'net', '80', SERVICE, String(MiB), '18']);
      expect(await plain.next()).to.deep.include({ event: 'connect', transport: 'tcp' });
      expect((await plain.event('done')).bytes).to.equal(MiB);
      // Sent to an address of the node that no pod holds (a pod of another node, as far as zivm can tell): TCP, refused there.
      const away = inPod(podB.ns, ['flood', 'zivm', '81', SERVICE]);
      expect(await away.next()).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
      // A rule zivm cannot read: TCP (which the kernel takes to pod A), and NODE_DEBUG=zivm says why, in the pod and in the daemon.
      const odd = inPod(podB.ns, ['transfer', 'zivm', '82', SERVICE, String(MiB), '19'], { NODE_DEBUG: 'zivm' });
      expect(await odd.next()).to.deep.include({ event: 'connect', transport: 'tcp' });
      expect((await odd.event('done')).bytes).to.equal(MiB);
      expect(odd.stderr()).to.include(`tcp to ${SERVICE}:82: the zivm daemon: the daemon cannot tell where the node's NAT rules send it`);
      expect(daemon!.stderr()).to.match(
        new RegExp(`${SERVICE.replace(/\./g, '\\.')}:82: a rule zivm cannot read \\(.*iifname.*\\), in ip kube-proxy service-ODD`),
      );
    } finally {
      execFileSync('ip', ['netns', 'exec', bridge, 'nft', 'delete', 'table', 'ip', 'kube-proxy']);
    }
  });

  it('pods of other uids (the daemon with --pods): each maps only the domain of its namespace and uid, and the pair domain', async () => {
    const [podA, podB] = pods;
    const server = inPodAs(podA.ns, 64101, ['echo-server', 'zivm', '0.0.0.0', '7012']);
    await server.event('listening');
    const client = inPodAs(podB.ns, 64102, ['flood', 'zivm', '7012', podA.addr]);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    expect(await server.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
    const mapsA = zivmMaps(server.pid);
    const mapsB = zivmMaps(client.pid);
    const shared = [...mapsA.keys()].filter((inode) => mapsB.has(inode));
    expect(shared, 'regions both map').to.have.length(1);
    expect(maxPeersOf(mapsA.get(shared[0])!)).to.equal(2);
    expect(mapsA.size).to.equal(2);
    expect(mapsB.size).to.equal(2);
    // A root pod in A's namespace has a domain of its own, not the one of uid 64101.
    const rootInA = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7013']);
    await rootInA.event('listening');
    expect(
      [...zivmMaps(rootInA.pid).keys()].filter((inode) => mapsA.has(inode)),
      'regions of root and of uid 64101 in one namespace in common',
    ).to.deep.equal([]);
  });

  it("the node and a pod: a node process reaches a pod at the pod's address, a pod reaches a node process at the node's address, each seen at its own", async () => {
    const [podA, podB] = pods;
    // A process of the node (the daemon's network namespace): its own domain, the daemon's.
    const nodeServer = inNode(['echo-server', 'zivm', '0.0.0.0', '7015']);
    const podServer = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7016']);
    await Promise.all([nodeServer.event('listening'), podServer.event('listening')]);
    const toNode = inPod(podB.ns, ['transfer', 'zivm', '7015', GATEWAY, String(2 * MiB), '15']);
    expect(await toNode.next()).to.deep.include({ event: 'connect', transport: 'shm', remoteAddress: GATEWAY });
    expect(await nodeServer.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
    expect((await toNode.event('done')).received).to.be.a('string');
    const toPod = inNode(['transfer', 'zivm', '7016', podA.addr, String(2 * MiB), '16']);
    expect(await toPod.next()).to.deep.include({ event: 'connect', transport: 'shm', remoteAddress: podA.addr });
    expect(await podServer.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: GATEWAY });
    const done = await toPod.event('done');
    expect(done.received, 'sha256 of what came back').to.equal(done.sent);
  });

  it("a pod's loopback stays in that pod: another pod dialling 127.0.0.1 gets its own loopback (ECONNREFUSED), the pod itself gets its listener", async () => {
    const [podA, podB] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '127.0.0.1', '7002']);
    await server.event('listening');
    const other = inPod(podB.ns, ['flood', 'zivm', '7002', '127.0.0.1']);
    expect(await other.next()).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
    const own = inPod(podA.ns, ['flood', 'zivm', '7002', '127.0.0.1']);
    expect(await own.next()).to.deep.include({ event: 'connect', transport: 'shm' });
  });

  it("a pod reaches only the namespace that holds the address: a third pod's address with nothing listening is ECONNREFUSED, a port only another pod listens on is too, and a listener on the same port in another pod takes nothing", async () => {
    const [podA, podB, podC] = pods;
    const serverA = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7003']);
    const serverC = inPod(podC.ns, ['echo-server', 'zivm', '0.0.0.0', '7003']);
    const onlyC = inPod(podC.ns, ['echo-server', 'zivm', '0.0.0.0', '7004']);
    await Promise.all([serverA.event('listening'), serverC.event('listening'), onlyC.event('listening')]);
    // Nothing of A's at 7004: A's kernel refuses, C's listener there is not asked.
    const toA = inPod(podB.ns, ['flood', 'zivm', '7004', podA.addr]);
    expect(await toA.next()).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
    // A at 7003 (C listens on 7003 too): A takes it.
    const client = inPod(podB.ns, ['transfer', 'zivm', '7003', podA.addr, String(MiB), '3']);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    expect((await client.event('done')).received).to.be.a('string');
    expect(await serverA.event('connection')).to.deep.include({ transport: 'shm', remoteAddress: podB.addr });
    expect(await serverC.find((line) => line.event === 'connection', 300), 'a connection that reached C').to.equal(undefined);
    // A third pod with no zivm process listening at a port: refused as by its kernel.
    const toNothing = inPod(podB.ns, ['flood', 'zivm', '7099', podC.addr]);
    expect(await toNothing.next()).to.deep.include({ event: 'error', code: 'ECONNREFUSED' });
  });

  it("a pod that puts another pod's address on its own interface takes none of its connections over shared memory (the daemon sees two holders: TCP)", async () => {
    const [podA, podB, podC] = pods;
    const serverA = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7014']);
    const serverC = inPod(podC.ns, ['echo-server', 'zivm', '0.0.0.0', '7014']);
    await Promise.all([serverA.event('listening'), serverC.event('listening')]);
    ip('-n', podC.ns, 'addr', 'add', `${podA.addr}/32`, 'dev', 'lo');
    // The daemon reads a namespace's addresses again after a second.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    try {
      const client = inPod(podB.ns, ['flood', 'zivm', '7014', podA.addr]);
      const first = await client.next();
      expect(first.transport, JSON.stringify(first)).to.not.equal('shm');
      expect(await serverC.find((line) => line.event === 'connection' && line.transport === 'shm', 300), 'a shared-memory connection that reached C').to.equal(
        undefined,
      );
    } finally {
      ip('-n', podC.ns, 'addr', 'del', `${podA.addr}/32`, 'dev', 'lo');
    }
  });

  it('a pod killed mid-transfer ends the connection of the other pod within a second', async () => {
    const [podA, podB] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7005']);
    await server.event('listening');
    const client = inPod(podB.ns, ['flood', 'zivm', '7005', podA.addr]);
    expect(await client.next()).to.deep.include({ event: 'connect', transport: 'shm' });
    await server.event('connection');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const killedAt = Date.now();
    server.kill('SIGKILL');
    const ended = await client.next((line) => line.event === 'error' || line.event === 'close', 5000);
    expect(Date.now() - killedAt, `ended by ${JSON.stringify(ended)}`).to.be.below(1000);
  });

  it('leaves nothing behind: the pods and the daemon gone, no file in the socket folder or /dev/shm', async () => {
    const shmBefore = fs.readdirSync('/dev/shm').filter((name) => name.includes('zivm'));
    const [podA, podB] = pods;
    const server = inPod(podA.ns, ['echo-server', 'zivm', '0.0.0.0', '7006']);
    await server.event('listening');
    const client = inPod(podB.ns, ['transfer', 'zivm', '7006', podA.addr, String(MiB), '5']);
    await client.event('done');
    const stopping = running.splice(0);
    for (const proc of stopping) proc.kill('SIGKILL');
    await Promise.all(stopping.map((proc) => proc.exit(5000)));
    daemon?.kill('SIGTERM');
    await daemon?.exit(5000);
    daemon = undefined;
    const deadline = Date.now() + 5000;
    while (fs.existsSync(path.dirname(sock)) && fs.readdirSync(path.dirname(sock)).length > 0) {
      if (Date.now() > deadline) throw new Error(`left in the socket folder: ${fs.readdirSync(path.dirname(sock)).join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(fs.readdirSync('/dev/shm').filter((name) => name.includes('zivm'))).to.deep.equal(shmBefore);
  });
});
