/**
 * Both ends of the guest<->host zivm socket test (guest-net.test.ts).
 *
 *   node net-peer.js host --port P
 *     The host side, run in a private network namespace whose only address
 *     besides loopback is 10.77.1.1 (on lo, or on a tap device the guest's eth0
 *     is plugged into): a zivm echo server on 0.0.0.0:P; on stdin,
 *     `{"cmd":"connect","host":H,"port":N,"bytes":B}` lines make it a client of
 *     the guest (ping-pong, then a sha256-checked echo of B bytes), and
 *     `{"cmd":"refused","host":H,"port":N}` connects where nobody listens.
 *     Everything it sees is a JSON line on stdout.
 *
 *   node net-peer.js guest --host-addr A --port P --refused-port R --guest-port G --bytes B
 *     The guest side (as root in the guest, chrooted into the host's node): puts
 *     10.77.2.2 on eth0 (on lo if there is no eth0), binds the ivshmem device to vfio-pci and starts the guest
 *     agent (`zivm guest setup`), joins the domain through the agent
 *     (ZIVM_GUEST_PCI=auto), then
 *       1. client of the host's echo server at A:P (ping-pong, sha256 echo);
 *       2. connects to A:R where nobody listens;
 *       3. echo server on 0.0.0.0:G until the host's client has been served;
 *       4. with --victim-addr V --victim-port Q: connects to a second host peer
 *          there and waits for the connection to end (the test kills that peer);
 *       5. connects to A:P again, exchanges a few bytes and powers the guest off
 *          with the connection open (sysrq o: no shutdown, no close).
 *     Lines `ZIVM-NET {json}` on the console.
 */
import fs from 'node:fs';
import { Commands, say } from '../../tools/kit/child';
import { sleep } from '../../tools/kit/wait';
import { Any, GUEST_ADDR, arg, echoClient, echoServer, joinAsGuest, powerOff, refused, reporter, runRoles, setAddress, zivm } from '../../tools/vm/peer';

const report = reporter('ZIVM-NET ');

// ---- host ------------------------------------------------------------------------

async function host(argv: string[]): Promise<void> {
  const port = Number(arg(argv, '--port'));
  let conns = 0;
  await echoServer(port, (subject) => {
    const id = ++conns;
    const time = Date.now();
    let bytes = 0;
    say({ ev: 'accepted', id, transport: subject.transport, remoteAddress: subject.remoteAddress });
    subject.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    subject.on('error', (err: Error & { code?: string }) =>
      say({ ev: 'conn-error', id, code: err.code ?? null, message: err.message, bytes, at: Date.now(), ms: Date.now() - time }),
    );
    subject.on('close', () => say({ ev: 'conn-close', id, bytes, at: Date.now(), ms: Date.now() - time }));
  });
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- zivm is loaded on first use only (see tools/vm/peer.ts)
  const domain = (require('../../src/shm/join') as typeof import('../../src/shm/join')).currentDomain();
  say({ ev: 'listening', port, peer: domain?.id ?? null });
  new Commands()
    .on('refused', (msg) => void refused(msg.host, msg.port).then((res) => say({ ev: 'refused', ...res })))
    .on(
      'connect',
      (msg) =>
        void echoClient(msg.host, msg.port, msg.bytes, msg.rounds).then(
          (res) => say({ ev: 'client', ...res }),
          (err: Error & { code?: string }) => say({ ev: 'client', error: err.message, code: err.code ?? null }),
        ),
    );
}

// ---- guest -----------------------------------------------------------------------

async function guest(argv: string[]): Promise<void> {
  const hostAddr = arg(argv, '--host-addr');
  const port = Number(arg(argv, '--port'));
  const refusedPort = Number(arg(argv, '--refused-port'));
  const guestPort = Number(arg(argv, '--guest-port'));
  const bytes = Number(arg(argv, '--bytes'));
  const rounds = Number(arg(argv, '--rounds', '20'));
  const victimAddr = arg(argv, '--victim-addr', '');
  const victimPort = Number(arg(argv, '--victim-port', '0'));

  // On the host peer's tap link: TCP between the two works, so fallbacks are real.
  // Without eth0, an address on lo that exists only in this guest.
  if (fs.existsSync('/sys/class/net/eth0')) setAddress(GUEST_ADDR, 16, 'eth0');
  else setAddress(GUEST_ADDR, 32, 'lo');
  report('joined', joinAsGuest());

  // 1. Guest client -> host server.
  try {
    report('to-host', await echoClient(hostAddr, port, bytes, rounds));
  } catch (err) {
    report('to-host', { error: (err as Error).message });
  }

  // 2. Nobody listens there.
  report('refused', await refused(hostAddr, refusedPort));

  // 3. Guest server <- host client: serve one connection to its end.
  let srv: Any;
  await new Promise<void>((resolve, reject) => {
    echoServer(guestPort, (subject2) => {
      report('accepted', { transport: subject2.transport, remoteAddress: subject2.remoteAddress });
      subject2.once('close', () => {
        srv.close();
        resolve();
      });
    }).then((elem) => {
      srv = elem;
      report('listening', { port: guestPort });
    }, reject);
  });

  // 4. A connection to a second host peer, which the test kills: the daemon's reap
  //    flags the slot and wakes us through QEMU (vector 0).
  if (victimAddr) {
    const value = zivm().connect({ host: victimAddr, port: victimPort });
    await new Promise<void>((resolve, reject) => {
      value.once('connect', () => value.write('hello'));
      value.once('data', () => resolve());
      value.once('error', reject);
    });
    const time = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        report('victim-gone', { error: 'hung', ms: Date.now() - time });
        value.destroy();
        resolve();
      }, 20000);
      let code: string | null = null;
      value.on('error', (err: Error & { code?: string }) => (code = err.code ?? err.message));
      value.on('end', () => undefined);
      value.once('close', () => {
        clearTimeout(timer);
        report('victim-gone', { code, ms: Date.now() - time });
        resolve();
      });
      value.resume();
      report('victim-connected', { transport: value.transport });
    });
  }

  // 5. A connection to the host, then power off with it open.
  const subject = zivm().connect({ host: hostAddr, port });
  await new Promise<void>((resolve, reject) => {
    subject.once('connect', () => subject.write('still here'));
    subject.once('data', () => resolve());
    subject.once('error', reject);
  });
  report('powering-off', { transport: subject.transport });
  powerOff();
  await sleep(60000);
}

if (require.main === module) runRoles({ host, guest }, { usage: 'usage: net-peer.js host|guest ...', report, reporting: ['guest'], stays: ['host', 'guest'] });
