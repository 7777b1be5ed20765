/**
 * Runs INSIDE the guests of guest-attack.test.ts (host's node over 9p), each
 * guest on a zivm daemon of its own, the two on one private link (eth0):
 *
 *   attack-peer.js server --addr B --port P --for MS
 *     guest B: ADDR/24 on eth0, joins its domain through `zivm guest setup`
 *     (--mode 666), has uid 65534 try to join as well, serves a zivm echo on
 *     0.0.0.0:P for MS ms, then exits.
 *
 *   attack-peer.js attacker --addr A --host-node N --victim-ports LO,ZLO,W
 *                           --b-addr B --b-port P --markers M1,M2 --for MS
 *     guest A, as root, holding its ivshmem device itself (no agent): runs
 *     test/security/hostile.py on the device and, through it, writes into all
 *     the memory the guest maps: listener entries for 127.0.0.1 (plain and
 *     zivm host servers' ports, with the host's node id), B's address
 *     published as its own with listeners on it; then, for MS ms, searches
 *     the whole region for the host's markers (hex) again and again; then
 *     lists which host ports it sees listeners for, and forges connection
 *     requests to the host's wildcard server W at 127.0.0.1 (as itself, and in
 *     the name of W's owner), with a control marker of its own in the ring.
 *
 * Findings are `ZIVM-ATTACK {json}` lines on the console.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { sleep } from '../../tools/kit/wait';
import { Any, arg, echoServer, joinAsGuest, joinsAs, reporter, setAddress } from '../../tools/vm/peer';
import { ROOT } from '../../tools/vm/qemu';

const report = reporter('ZIVM-ATTACK ');
const HOSTILE = path.join(ROOT, 'test', 'security', 'hostile.py');

/** hostile.py on the guest's device: one command, one answer. */
class Hostile {
  private readonly lines: AsyncIterableIterator<string>;
  private readonly child = spawn('python3', [HOSTILE, 'pci'], { stdio: ['pipe', 'pipe', 'inherit'] });

  constructor() {
    this.lines = readline.createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async next(): Promise<Any> {
    const line = await this.lines.next();
    if (line.done) throw new Error('hostile.py exited');
    return JSON.parse(line.value);
  }

  async do(cmd: Any): Promise<Any> {
    this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
    const answer = await this.next();
    if (!answer.ok) throw new Error(`hostile ${cmd.op}: ${answer.error}`);
    return answer;
  }

  quit(): void {
    this.child.stdin.end(`${JSON.stringify({ op: 'quit' })}\n`);
  }
}

const quad = (addr: string): number[] => addr.split('.').map(Number);
const hex = (text: string): string => Buffer.from(text).toString('hex');

async function attacker(argv: string[]): Promise<void> {
  setAddress(arg(argv, '--addr'), 24, 'eth0');
  const hostNode = Number(arg(argv, '--host-node'));
  const [loPort, zloPort, wildPort] = arg(argv, '--victim-ports').split(',').map(Number);
  const bAddr = arg(argv, '--b-addr');
  const bPort = Number(arg(argv, '--b-port'));
  const markers = arg(argv, '--markers').split(',');
  const forMs = Number(arg(argv, '--for'));
  const bad = new Hostile();
  const me = await bad.next();
  report('device', { id: me.id, size: me.size });
  // Host loopback, as a host process would register it (the host's node id: the attacker is told it).
  for (const port of [loPort, zloPort]) await bad.do({ op: 'listen', port, node: hostNode, addr: [127, 0, 0, 1] });
  // Guest B's address, published as our own, with listeners on B's port and another.
  await bad.do({ op: 'publish', addr: quad(bAddr), kind: 2 });
  for (const port of [bPort, bPort + 1]) await bad.do({ op: 'listen', port, node: me.id + 1000, addr: quad(bAddr) });
  report('armed', { id: me.id });

  const seen = new Map<string, number>(markers.map((marker) => [marker, 0]));
  let scans = 0;
  const until = Date.now() + forMs;
  while (Date.now() < until) {
    for (const marker of markers) {
      const { count } = await bad.do({ op: 'find', hex: hex(marker) });
      if (count > 0 && seen.get(marker) === 0) report('seen', { marker, count });
      seen.set(marker, seen.get(marker)! + count);
    }
    scans++;
    await sleep(200);
  }
  report('scanned', { scans, seen: Object.fromEntries(seen) });

  const listed = ((await bad.do({ op: 'listeners' })).listeners as Any[]).map((entry) => ({ port: entry.port, owner: entry.owner }));
  report('listeners', { listed });
  const control = `control-${me.id}-${Date.now()}`;
  const requests = [];
  for (const as of ['itself', 'owner']) {
    const req = await bad.do({ op: 'request', port: wildPort, data: control, ...(as === 'owner' ? { as: 'owner' } : {}) });
    requests.push({ as, slot: req.slot, owner: req.owner });
  }
  await sleep(1500);
  const states = [];
  for (const req of requests) {
    const slots = (await bad.do({ op: 'slots', server: req.owner })).slots as Any[];
    states.push({ as: req.as, state: (slots.find((entry) => entry.slot === req.slot)?.state ?? -1) & 0xff });
  }
  report('requests', { states, controlSeen: (await bad.do({ op: 'find', hex: hex(control) })).count });
  bad.quit();
}

async function server(argv: string[]): Promise<void> {
  setAddress(arg(argv, '--addr'), 24, 'eth0');
  // Every user may join (666), but this guest's kernel is strict about device memory (no
  // iomem=relaxed): the agent has only the device to hand out, so it lets root alone join.
  const joined = joinAsGuest(['--mode', '666']);
  report('joined', joined);
  report('other-uid', await joinsAs(65534, `/run/zivm/guest-${joined.pci as string}.sock`));
  const port = Number(arg(argv, '--port'));
  await echoServer(port, (subject: Any) => report('accepted', { transport: subject.transport ?? null, remoteAddress: subject.remoteAddress ?? null }));
  report('listening', { port });
  await sleep(Number(arg(argv, '--for')));
}

const [role, ...rest] = process.argv.slice(2);
(role === 'attacker' ? attacker(rest) : server(rest)).then(
  () => process.exit(0),
  (err: Error) => {
    report('error', { message: err.stack ?? err.message });
    process.exit(1);
  },
);
