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
  await echoServer(port, (s) => {
    const id = ++conns;
    const t = Date.now();
    let bytes = 0;
    say({ ev: 'accepted', id, transport: s.transport, remoteAddress: s.remoteAddress });
    s.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    s.on('error', (e: Error & { code?: string }) => say({ ev: 'conn-error', id, code: e.code ?? null, message: e.message, bytes, at: Date.now(), ms: Date.now() - t }));
    s.on('close', () => say({ ev: 'conn-close', id, bytes, at: Date.now(), ms: Date.now() - t }));
  });
  const d = require('../../src/shm/domain').currentDomain(); // eslint-disable-line @typescript-eslint/no-require-imports
  say({ ev: 'listening', port, peer: d?.id ?? null });
  new Commands()
    .on('refused', (m) => void refused(m.host, m.port).then((r) => say({ ev: 'refused', ...r })))
    .on('connect', (m) =>
      void echoClient(m.host, m.port, m.bytes, m.rounds).then(
        (r) => say({ ev: 'client', ...r }),
        (e: Error & { code?: string }) => say({ ev: 'client', error: e.message, code: e.code ?? null }),
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
  } catch (e) {
    report('to-host', { error: (e as Error).message });
  }

  // 2. Nobody listens there.
  report('refused', await refused(hostAddr, refusedPort));

  // 3. Guest server <- host client: serve one connection to its end.
  let srv: Any;
  await new Promise<void>((resolve, reject) => {
    echoServer(guestPort, (s) => {
      report('accepted', { transport: s.transport, remoteAddress: s.remoteAddress });
      s.once('close', () => {
        srv.close();
        resolve();
      });
    }).then((x) => {
      srv = x;
      report('listening', { port: guestPort });
    }, reject);
  });

  // 4. A connection to a second host peer, which the test kills: the daemon's reap
  //    flags the slot and wakes us through QEMU (vector 0).
  if (victimAddr) {
    const v = zivm().connect({ host: victimAddr, port: victimPort });
    await new Promise<void>((resolve, reject) => {
      v.once('connect', () => v.write('hello'));
      v.once('data', () => resolve());
      v.once('error', reject);
    });
    const t = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        report('victim-gone', { error: 'hung', ms: Date.now() - t });
        v.destroy();
        resolve();
      }, 20000);
      let code: string | null = null;
      v.on('error', (e: Error & { code?: string }) => (code = e.code ?? e.message));
      v.on('end', () => undefined);
      v.once('close', () => {
        clearTimeout(timer);
        report('victim-gone', { code, ms: Date.now() - t });
        resolve();
      });
      v.resume();
      report('victim-connected', { transport: v.transport });
    });
  }

  // 5. A connection to the host, then power off with it open.
  const s = zivm().connect({ host: hostAddr, port });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => s.write('still here'));
    s.once('data', () => resolve());
    s.once('error', reject);
  });
  report('powering-off', { transport: s.transport });
  powerOff();
  await sleep(60000);
}

if (require.main === module) runRoles({ host, guest }, { usage: 'usage: net-peer.js host|guest ...', report, reporting: ['guest'], stays: ['host', 'guest'] });
