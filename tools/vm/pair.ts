/**
 * Two guests on one private link and in one zivm domain: what the pair's
 * peer scripts share (test/vm/pair-peer.ts, the guest <-> guest test, and
 * bench/vm-peer.ts, the guest <-> guest benchmark). Each guest runs in its own
 * QEMU (as root, chrooted into the host's root); the two share a private
 * Ethernet link (eth0: a QEMU socket netdev over host loopback, nothing else
 * on it) and one zivm domain (their ivshmem-doorbell devices are on one daemon).
 *
 * Every role puts ADDR/24 on eth0, binds the ivshmem device to vfio-pci
 * (`zivm guest setup`), joins the domain through it (ZIVM_GUEST_PCI=auto),
 * and serves on two ports: a zivm server on 0.0.0.0:--port and a plain
 * node:net server on 0.0.0.0:--tcp-port (zivm is not involved there at all).
 * A connection to either starts with a line `MODE TAG\n`:
 *   E  echo until the client ends, then end;
 *   H  half-close: read until the client ends, then write `<sha256 of what
 *      came>\n` and --tail more bytes in pieces, then end (allowHalfOpen);
 *   S  sink: an 8-byte length L, then L bytes, answered by one byte 'K'; again.
 *
 * The `server` role (pairServer) also listens for control on plain node:net
 * 0.0.0.0:--ctrl-port and takes JSON lines from the other guest:
 *   {"cmd":"client","peer":A}  run the client tests against A (the test's), answer {"done":true};
 *   {"cmd":"poweroff"}         power off at once (sysrq o): no shutdown, no close;
 *   {"cmd":"bye"}              answer and exit.
 * The other guest connects to control (ctrlConnect, retrying until the
 * server listens) and runs its scenario.
 *
 * Everything is reported as `ZIVM-PAIR {json}` lines on the console.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import nodeNet from 'node:net';
import readline from 'node:readline';
import { sleep } from '../kit/wait';
import { Any, Res, arg, block, joinAsGuest, powerOff, reporter, setAddress, zivm } from './peer';

/** Addresses on the guests' eth0 (a /24 that exists only on their private link). */
export const PAIR_ADDRS = ['10.77.3.1', '10.77.3.2'] as const;
export const PREFIX = 'ZIVM-PAIR ';

export const report = reporter(PREFIX);

export const now = (): number => Number(process.hrtime.bigint()) / 1e6;

/** Bytes eth0 sent and received so far. */
export function eth0(): { tx: number; rx: number } {
  const rd = (k: string) => Number(fs.readFileSync(`/sys/class/net/eth0/statistics/${k}`, 'utf8'));
  return { tx: rd('tx_bytes'), rx: rd('rx_bytes') };
}
export function eth0Since(from: { tx: number; rx: number }): { tx: number; rx: number } {
  const fields = eth0();
  return { tx: fields.tx - from.tx, rx: fields.rx - from.rx };
}

/** What a socket says about itself: zivm's transport, or that it is node:net's own class. */
export function sockInfo(subject: Any): Res {
  return {
    transport: subject.transport ?? null,
    plainNet: Object.getPrototypeOf(subject) === nodeNet.Socket.prototype,
    remoteAddress: subject.remoteAddress ?? null,
    localAddress: subject.localAddress ?? null,
  };
}

/** The options every role takes. */
export interface PairOptions {
  addr: string;
  port: number;
  tcpPort: number;
  ctrlPort: number;
  refusedPort: number;
  bytes: number;
  tcpBytes: number;
  halfBytes: number;
  tail: number;
  rounds: number;
}

export function pairOptions(argv: string[]): PairOptions {
  return {
    addr: arg(argv, '--addr'),
    port: Number(arg(argv, '--port', '7731')),
    tcpPort: Number(arg(argv, '--tcp-port', '7732')),
    ctrlPort: Number(arg(argv, '--ctrl-port', '7730')),
    refusedPort: Number(arg(argv, '--refused-port', '7739')),
    bytes: Number(arg(argv, '--bytes', String(16 << 20))),
    tcpBytes: Number(arg(argv, '--tcp-bytes', String(1 << 20))),
    halfBytes: Number(arg(argv, '--half-bytes', String(1 << 20))),
    tail: Number(arg(argv, '--tail', String(1 << 20))),
    rounds: Number(arg(argv, '--rounds', '20')),
  };
}

/** The guest's set-up: `addr`/24 on eth0 first (a guest publishes its node's addresses when it joins), then the join. */
export function pairSetup(addr: string): void {
  const t0 = Date.now();
  setAddress(addr, 24, 'eth0');
  report('joined', { addr, ...joinAsGuest(), ms: Date.now() - t0 });
}

// ---- servers -------------------------------------------------------------------------

/** Serves one connection of either server (see the header comment for the modes). */
function serve(subject: Any, kind: 'zivm' | 'plain', tailBytes: number): void {
  subject.setNoDelay?.(true);
  let head = Buffer.alloc(0);
  let mode = '';
  let tag = '';
  let onBody: (d: Buffer) => void = () => undefined;
  subject.on('error', (err: Error & { code?: string }) => report('server-conn-error', { kind, tag, code: err.code ?? err.message }));
  subject.on('close', () => report('server-conn-close', { kind, tag }));
  subject.on('data', (chunk: Buffer) => {
    if (mode) return onBody(chunk);
    head = Buffer.concat([head, chunk]);
    const nl = head.indexOf(10);
    if (nl < 0) return;
    [mode, tag] = head.subarray(0, nl).toString().split(' ');
    const rest = head.subarray(nl + 1);
    report('accepted', { kind, mode, tag, ...sockInfo(subject) });
    if (mode === 'E') {
      onBody = (buf) => {
        if (!subject.write(buf)) {
          subject.pause();
          subject.once('drain', () => subject.resume());
        }
      };
      subject.on('end', () => subject.end());
    } else if (mode === 'H') {
      const holder = crypto.createHash('sha256');
      let got = 0;
      onBody = (buf) => {
        got += buf.length;
        holder.update(buf);
      };
      subject.on('end', () => {
        // The client's side is closed; ours stays open and keeps writing for a while.
        const tail = block(tailBytes, 0x7a11);
        report('half-server', { kind, tag, transport: subject.transport ?? null, received: got, tailBytes });
        subject.write(`${holder.digest('hex')}\n`);
        let off = 0;
        const step = () => {
          if (subject.destroyed) return;
          if (off >= tail.length) return void subject.end();
          const count = Math.min(65536, tail.length - off);
          subject.write(tail.subarray(off, off + count));
          off += count;
          setTimeout(step, 1);
        };
        setTimeout(step, 1);
      });
    } else if (mode === 'S') {
      let want = -1;
      let got = 0;
      let lenBuf = Buffer.alloc(0);
      onBody = (buf) => {
        while (buf.length) {
          if (want < 0) {
            const k = Math.min(8 - lenBuf.length, buf.length);
            lenBuf = Buffer.concat([lenBuf, buf.subarray(0, k)]);
            buf = buf.subarray(k);
            if (lenBuf.length < 8) return;
            want = Number(lenBuf.readBigUInt64LE(0));
            lenBuf = Buffer.alloc(0);
            got = 0;
          }
          const k = Math.min(want - got, buf.length);
          got += k;
          buf = buf.subarray(k);
          if (got === want) {
            want = -1;
            subject.write('K');
          }
        }
      };
      subject.on('end', () => subject.end());
    } else {
      subject.destroy();
      return;
    }
    if (rest.length) onBody(rest);
  });
}

/** The two servers of every role: zivm on 0.0.0.0:port, plain node:net on 0.0.0.0:tcpPort. */
export async function startServers(port: number, tcpPort: number, tailBytes: number): Promise<void> {
  const zval = zivm().createServer({ allowHalfOpen: true }, (subject: Any) => serve(subject, 'zivm', tailBytes));
  const part = nodeNet.createServer({ allowHalfOpen: true }, (subject: Any) => serve(subject, 'plain', tailBytes));
  await Promise.all(
    [
      [zval, port],
      [part, tcpPort],
    ].map(
      ([srv, addon]) =>
        new Promise<void>((resolve, reject) => {
          (srv as nodeNet.Server).once('error', reject);
          (srv as nodeNet.Server).listen(addon as number, '0.0.0.0', () => resolve());
        }),
    ),
  );
  report('listening', { port, tcpPort });
}

// ---- clients --------------------------------------------------------------------------

/** Connects with `mod` (zivm or node:net) and sends the mode line. */
export async function open(mod: Any, host: string, port: number, mode: string, tag: string): Promise<{ s: Any; connectMs: number }> {
  const t0 = now();
  const subject = mod.connect({ host, port });
  await new Promise<void>((resolve, reject) => {
    subject.once('connect', resolve);
    subject.once('error', reject);
  });
  const connectMs = now() - t0;
  subject.setNoDelay(true);
  subject.write(`${mode} ${tag}\n`);
  return { s: subject, connectMs };
}

/** Sends `msg` and waits until as many bytes came back, `n` times; round trips in µs, sorted. */
export async function pingPong(subject: Any, count: number, msg: Buffer): Promise<number[]> {
  const rtt: number[] = [];
  let failed: Error | undefined;
  const onError = (err: Error) => (failed = err);
  subject.on('error', onError);
  try {
    for (let i = 0; i < count; i++) {
      if (failed) throw failed;
      await new Promise<void>((resolve, reject) => {
        const target = process.hrtime.bigint();
        let got = 0;
        const onData = (chunk: Buffer) => {
          got += chunk.length;
          if (got < msg.length) return;
          subject.off('data', onData);
          subject.off('close', onClose);
          rtt.push(Number(process.hrtime.bigint() - target) / 1e3);
          resolve();
        };
        const onClose = () => reject(failed ?? new Error('closed during a round trip'));
        subject.on('data', onData);
        subject.once('close', onClose);
        subject.write(msg);
      });
    }
  } finally {
    subject.off('error', onError);
  }
  return rtt.sort((lhs, rhs) => lhs - rhs);
}

/** The `q` quantile of sorted values (the nearest rank). */
export const pick = (sorted: number[], queue: number): number => sorted[Math.min(sorted.length - 1, Math.floor(queue * sorted.length))];

/** Ends our side and waits (up to 5 s) until the server has ended its side too and the socket closed. */
export function closeGently(subject: Any): Promise<void> {
  return new Promise((resolve) => {
    if (subject.destroyed) return resolve();
    const timer = setTimeout(() => {
      subject.destroy();
      resolve();
    }, 5000);
    subject.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    subject.on('error', () => undefined);
    subject.resume();
    subject.end();
  });
}

// ---- control ---------------------------------------------------------------------------

/** A control connection: JSON lines both ways. */
export class Ctrl {
  private waiting: { resolve: (m: Res) => void; reject: (e: Error) => void }[] = [];
  private queue: Res[] = [];
  private closed = false;
  constructor(readonly s: nodeNet.Socket) {
    readline.createInterface({ input: s }).on('line', (line) => {
      const msg = JSON.parse(line) as Res;
      const write = this.waiting.shift();
      if (write) write.resolve(msg);
      else this.queue.push(msg);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.closed = true;
      for (const write of this.waiting.splice(0)) write.reject(new Error('control connection closed'));
    });
  }
  send(msg: Res): void {
    this.s.write(`${JSON.stringify(msg)}\n`);
  }
  next(): Promise<Res> {
    const msg = this.queue.shift();
    if (msg) return Promise.resolve(msg);
    if (this.closed) return Promise.reject(new Error('control connection closed'));
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }
  async ask(msg: Res): Promise<Res> {
    this.send(msg);
    return this.next();
  }
}

/** Connects to the server guest's control port (plain TCP), retrying until it listens. */
export async function ctrlConnect(peer: string, port: number, timeoutMs = 120000): Promise<Ctrl> {
  const t0 = Date.now();
  let tries = 0;
  for (;;) {
    tries++;
    try {
      const sock = nodeNet.connect({ host: peer, port });
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      report('ctrl-connected', { tries, ms: Date.now() - t0 });
      return new Ctrl(sock);
    } catch (err) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`control connection to ${peer}:${port}: ${(err as Error).message} after ${tries} tries`);
      await sleep(200);
    }
  }
}

/**
 * The `server` role (the guest the other one dials): set-up, the two servers,
 * and control (see the header comment). `client` runs the scenario's client
 * tests against the other guest when it asks; without it, the command is unknown.
 */
export async function pairServer(argv: string[], client?: (peer: string, o: PairOptions) => Promise<void>): Promise<void> {
  const out = pairOptions(argv);
  pairSetup(out.addr);
  await startServers(out.port, out.tcpPort, out.tail);
  const ctrlSrv = nodeNet.createServer((conn) => {
    const ctrl = new Ctrl(conn);
    conn.on('close', () => process.exit(0));
    const loop = async () => {
      for (;;) {
        const msg = await ctrl.next();
        if (msg.cmd === 'client' && client) {
          await client(String(msg.peer), out);
          ctrl.send({ done: true });
        } else if (msg.cmd === 'poweroff') {
          report('powering-off');
          powerOff();
          await sleep(60000);
        } else if (msg.cmd === 'bye') {
          ctrl.send({ bye: true });
          conn.end();
          return;
        } else ctrl.send({ error: `unknown command ${String(msg.cmd)}` });
      }
    };
    loop().catch(() => process.exit(0));
  });
  await new Promise<void>((resolve) => ctrlSrv.listen(out.ctrlPort, '0.0.0.0', () => resolve()));
  report('ctrl-listening', { port: out.ctrlPort });
}
