/**
 * Both ends of the test of several zivm processes in one guest (guest-procs.test.ts).
 *
 *   node procs-peer.js host --port P
 *     Host side, run in a private network namespace whose only address besides
 *     loopback is 10.77.1.1 (on lo): a zivm "tail" server on 0.0.0.0:P (echoes,
 *     and after the client's end() writes `tail <bytes received>` and ends:
 *     half-close). On stdin, `{"cmd":"hold","host":H,"port":N}` connects to the
 *     guest and keeps the connection open; `{"cmd":"end"}` half-closes the held
 *     connections. Everything it sees is a JSON line on stdout.
 *
 *   node procs-peer.js guest --host-addr A --port P --guest-port G --bytes B
 *     Guest orchestrator (as root in the guest). It never loads zivm itself: each
 *     step is a child process of its own, every one a peer of the domain through
 *     the agent `zivm guest setup` started. Lines `ZIVM-PROCS {json}` on the console.
 *
 *   node procs-peer.js child ROLE ...   (started by the orchestrator)
 */
import fs from 'node:fs';
import { Commands, say, stdinClosed } from '../../tools/kit/child';
import { Proc, spawnNode } from '../../tools/kit/proc';
import { sleep } from '../../tools/kit/wait';
import { Any, GUEST_ADDR, arg, guestSetup, joinsAs, membership, reporter, runRoles, setAddress, tailClient, tailServer, zivm } from '../../tools/vm/peer';

const report = reporter('ZIVM-PROCS ');

// ---- host ------------------------------------------------------------------------

async function host(argv: string[]): Promise<void> {
  const port = Number(arg(argv, '--port'));
  await tailServer(port, (subject, id) => {
    say({ ev: 'accepted', id, transport: subject.transport, remoteAddress: subject.remoteAddress });
    subject.on('error', (err: Any) => say({ ev: 'conn-error', id, code: err.code ?? null }));
    subject.on('close', () => say({ ev: 'conn-close', id }));
  });
  say({ ev: 'listening', port });
  const held: Any[] = [];
  new Commands()
    .on('hold', (msg) => {
      const subject = zivm().connect({ host: msg.host, port: msg.port, allowHalfOpen: true });
      held.push(subject);
      subject.on('connect', () => {
        say({ ev: 'held', tag: msg.tag, transport: subject.transport });
        subject.write('ping');
      });
      subject.once('data', () => say({ ev: 'held-data', tag: msg.tag }));
      subject.on('error', (err: Any) => say({ ev: 'held-error', tag: msg.tag, code: err.code ?? null }));
      subject.on('end', () => {
        // The guest side is gone: as over TCP, the first write is taken (the peer would answer
        // it with a reset), the next fails with EPIPE and the socket closes.
        say({ ev: 'held-end', tag: msg.tag });
        subject.write('anyone there?');
        setTimeout(() => subject.write('hello?'), 100);
      });
      subject.on('close', () => say({ ev: 'held-close', tag: msg.tag }));
    })
    .on('tail', (msg) => {
      tailClient(msg.host, msg.port, 1 << 20).then(
        (res) => say({ ev: 'tail', ...res }),
        (err: Any) => say({ ev: 'tail', error: err.message, code: err.code ?? null }),
      );
    });
}

// ---- guest -----------------------------------------------------------------------

/** A step of the orchestrator: this script as `child ROLE args...`, a process of its own (and a peer of its own). */
function child(role: string, args: string[]): Proc {
  return spawnNode(__filename, ['child', role, ...args], {
    name: role,
    stderr: 'inherit',
    timeoutMs: 60000,
    onText: (line) => process.stdout.write(`[${role}] ${line}\n`),
  });
}

async function guest(argv: string[]): Promise<void> {
  const hostAddr = arg(argv, '--host-addr');
  const port = Number(arg(argv, '--port'));
  const guestPort = Number(arg(argv, '--guest-port'));
  const bytes = Number(arg(argv, '--bytes'));

  setAddress(GUEST_ADDR, 32, 'lo');
  // Every user of the guest may join (mode 666), one process per uid other than root.
  const setup = guestSetup(['--mode', '666', '--per-uid', '1']);
  report('setup', { out: setup.out.trim() });

  // 1. A server process.
  const server = child('server', ['--port', String(guestPort)]);
  const sl = await server.next();
  report('server', sl);

  // 2. Two client processes at once: one to the server in this guest over loopback, one to the host.
  const local = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', String(bytes)]);
  const toHost = child('client', ['--host', hostAddr, '--port', String(port), '--bytes', String(bytes)]);
  const [lr, hr] = await Promise.all([local.next(), toHost.next()]);
  report('local', { ...lr, serverSaw: await server.next() });
  report('to-host', hr);
  // All three are members now, each with a vector of its own.
  report('members-up', { count: 3 });
  await sleep(1500);
  local.proc.stdin!.end();
  toHost.proc.stdin!.end();
  await Promise.all([local.exited, toHost.exited]);

  // 3. With vectors=4: the server and three holders take them all; a fifth process finds none left.
  const holders = [child('idle', []), child('idle', []), child('idle', [])];
  for (const holder of holders) report('holder', await holder.next());
  const extra = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', '65536']);
  report('no-vector', { ...(await extra.next()), serverSaw: await server.next() });
  extra.proc.stdin!.end();
  await extra.exited;
  for (const holder of holders) holder.proc.kill('SIGKILL');
  await Promise.all(holders.map((holder) => holder.exited));
  // Their vectors are free again.
  const again = child('client', ['--host', '127.0.0.1', '--port', String(guestPort), '--bytes', '65536']);
  report('vector-reused', { ...(await again.next()), serverSaw: await server.next() });
  again.proc.stdin!.end();
  await again.exited;

  // 3b. Another user of the guest: one member at a time (--per-uid 1), and what it gets is its
  //     share (BAR2 and BAR0 as resource files, an eventfd), never the device itself.
  report('other-uid', await joinsAs(65534, `/run/zivm/guest-${setup.pci}.sock`));

  // 4. A guest process killed mid-connection: a client holding a connection to the host,
  //    then the server holding one from the host (the host test connects when asked).
  const victim = child('hold', ['--host', hostAddr, '--port', String(port)]);
  report('victim-connected', await victim.next());
  await sleep(300);
  report('killing-client', { at: Date.now() });
  victim.proc.kill('SIGKILL');
  await victim.exited;
  report('host-may-connect', { port: guestPort });
  report('host-tail', await server.next()); // the host's half-close exchange
  report('server-held', await server.next()); // the host's connection it holds open
  await sleep(300);
  report('killing-server', {});
  server.proc.kill('SIGKILL');
  await server.exited;
  await sleep(1500);

  // 5. The agent itself is killed: its processes leave the domain by themselves (their
  //    connections end on both sides); a new agent takes over and new processes join it.
  const pci = setup.pci;
  const agentPid = Number(fs.readFileSync(`/run/zivm/guest-${pci}.sock.pid`, 'utf8'));
  const orphan = child('hold', ['--host', hostAddr, '--port', String(port)]);
  report('orphan-connected', await orphan.next());
  report('killing-agent', { pid: agentPid });
  process.kill(agentPid, 'SIGKILL');
  report('orphan-closed', await orphan.next());
  orphan.proc.stdin!.end();
  await orphan.exited;
  report('setup-again', { out: guestSetup().out.trim() });
  const fresh = child('client', ['--host', hostAddr, '--port', String(port), '--bytes', '65536']);
  report('after-new-agent', await fresh.next());
  fresh.proc.stdin!.end();
  await fresh.exited;
  // Wait for the host test to see the ends before powering off.
  await sleep(1500);
  report('done', {});
}

/** The steps' processes (see guest()); each says what it is in the domain (membership()). */
async function childMain(role: string, argv: string[]): Promise<void> {
  if (role === 'server') {
    await tailServer(Number(arg(argv, '--port')), (subject) => {
      say({ ev: 'accepted', transport: subject.transport, remoteAddress: subject.remoteAddress });
    });
    say({ ev: 'listening', ...membership() });
    await stdinClosed();
    return;
  }
  if (role === 'client') {
    const res = await tailClient(arg(argv, '--host'), Number(arg(argv, '--port')), Number(arg(argv, '--bytes')));
    say({ ...res, ...membership() });
    await stdinClosed();
    return;
  }
  if (role === 'idle') {
    // Joins the domain (a listener makes it a member) and waits.
    await new Promise<void>((resolve) => zivm().createServer().listen(0, '127.0.0.1', resolve));
    say({ ev: 'idle', ...membership() });
    await stdinClosed();
    return;
  }
  if (role === 'hold') {
    const subject = zivm().connect({ host: arg(argv, '--host'), port: Number(arg(argv, '--port')) });
    let code: string | null = null;
    subject.on('error', (err: Any) => (code = err.code ?? err.message));
    await new Promise<void>((resolve) => subject.once('connect', resolve));
    subject.write('hello');
    await new Promise<void>((resolve) => subject.once('data', () => resolve()));
    say({ transport: subject.transport, ...membership() });
    subject.resume();
    subject.once('close', () => say({ ev: 'closed', code }));
    await stdinClosed();
    return;
  }
  throw new Error(`unknown child role ${role}`);
}

if (require.main === module) {
  runRoles(
    { host, guest, child: (args) => childMain(args[0], args.slice(1)) },
    { usage: 'usage: procs-peer.js host|guest|child ...', report, reporting: ['guest'], stays: ['host'] },
  );
}
