/**
 * Test helpers for the daemon: a raw ivshmem protocol client that decodes
 * every message itself (so tests check the daemon against the spec, not
 * against our own client code), and the processes around it (`zivm server`
 * itself runs through tools/kit/daemon.ts).
 *
 * Run as a script (`node daemon-client.js race <socket>`) it is one contender
 * of the autostart race: connectDaemon, print {"pid": <daemon pid from the
 * region header>, "id": <our id>} and stay in the domain until stdin closes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Geometry, HEADER, readHeader, viewSize } from '../../src/shm/layout';
import { NativeRegion, native } from '../../src/shm/native';
import { HELLO } from '../../src/shm/notes';
import { Proc, spawnNode } from '../../tools/kit/proc';

export const SELF = __filename;

/** [value, fd]: fd is -1 when the message carried none. */
export type Msg = [number, number];

export class RawClient {
  readonly fd: number;
  /** Every fd received so far (closed by close()). */
  readonly received: number[] = [];
  private open = true;

  constructor(fd: number) {
    this.fd = fd;
  }

  static connect(sock: string): RawClient {
    return new RawClient(native().unixConnect(sock));
  }

  /** The next message; false at end of stream; throws after `timeoutMs` without one. */
  recv(timeoutMs = 3000): Msg | false {
    const addon = native();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = addon.recvMsg(this.fd);
      if (res === false) return false;
      if (res) {
        if (res[1] >= 0) this.received.push(res[1]);
        return [res[0], res[1]];
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message from the daemon within ${timeoutMs} ms`);
      addon.waitReadable(this.fd, left);
    }
  }

  /** The next message, which must not be end of stream. */
  next(timeoutMs = 3000): Msg {
    const msg = this.recv(timeoutMs);
    if (msg === false) throw new Error('daemon closed the connection');
    return msg;
  }

  /** `count` messages. */
  take(count: number, timeoutMs = 3000): Msg[] {
    const out: Msg[] = [];
    for (let i = 0; i < count; i++) out.push(this.next(timeoutMs));
    return out;
  }

  /** True when nothing arrives for `ms`. */
  quiet(ms: number): boolean {
    return !native().waitReadable(this.fd, ms);
  }

  /**
   * Reads the greeting of a new connection: version, id, region fd, the other
   * peers' doorbells, then its own `vectors` interrupt fds. Checks the shape.
   */
  handshake(vectors: number, timeoutMs = 3000): Handshake {
    const [version, vfd] = this.next(timeoutMs);
    if (version !== 0 || vfd !== -1) throw new Error(`bad version message [${version}, ${vfd}]`);
    const [id, idfd] = this.next(timeoutMs);
    if (id < 0 || idfd !== -1) throw new Error(`bad id message [${id}, ${idfd}]`);
    const [minus1, shmFd] = this.next(timeoutMs);
    if (minus1 !== -1 || shmFd < 0) throw new Error(`bad region message [${minus1}, ${shmFd}]`);
    const peers = new Map<number, number[]>();
    const own: number[] = [];
    const order: Msg[] = [];
    while (own.length < vectors) {
      const msg = this.next(timeoutMs);
      order.push(msg);
      if (msg[1] < 0) throw new Error(`unexpected message without fd during setup: [${msg[0]}, ${msg[1]}]`);
      if (msg[0] === id) own.push(msg[1]);
      else {
        if (own.length) throw new Error(`peer ${msg[0]} announced in the middle of the interrupt setup`);
        const list = peers.get(msg[0]) ?? [];
        list.push(msg[1]);
        peers.set(msg[0], list);
      }
    }
    return { id, shmFd, peers, own, order };
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    const addon = native();
    addon.close(this.fd);
    for (const fd of this.received.splice(0)) {
      try {
        addon.close(fd);
      } catch {
        // Closed already: nothing to release.
      }
    }
  }
}

export interface Handshake {
  id: number;
  shmFd: number;
  /** Doorbells of the peers that were there before us, by id, one per vector. */
  peers: Map<number, number[]>;
  /** Our own interrupt eventfds, one per vector. */
  own: number[];
  /** The messages after the region fd, in order. */
  order: Msg[];
}

/** Maps a region fd and checks its header. */
export function mapRegion(fd: number): { region: NativeRegion; i32: Int32Array; g: Geometry; daemonPid: number } {
  const addon = native();
  const size = addon.fdSize(fd);
  const region = new addon.Region(fd, size, 0, viewSize(size));
  const i32 = new Int32Array(region.buffer);
  const geo = readHeader(i32, size);
  return { region, i32, g: geo, daemonPid: i32[HEADER.DAEMON_PID] };
}

// ---- processes ----------------------------------------------------------------

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-daemon-test-'));
}

export function removeDir(dir: string): void {
  try {
    fs.chmodSync(dir, 0o700);
  } catch {
    // Gone already, or its mode is fine: rmSync below says if it is not.
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Whether `pid` is a live process (a zombie counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Starts one contender of the autostart race (see the top of this file). */
export function spawnRacer(socket: string, env: NodeJS.ProcessEnv): Proc {
  return spawnNode(SELF, ['race', socket], { name: 'racer', env: { ...process.env, ...env } });
}

function raceMain(socket: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded in the racer process only, where the race's environment is set
  const { connectDaemon } = require('../../src/shm/autostart') as typeof import('../../src/shm/autostart');
  const fd = connectDaemon({ socketPath: socket, timeoutMs: 15000 });
  // A host process says so first: an auto-started daemon admits host processes only.
  native().sendMsg(fd, HELLO, -1);
  const member = new RawClient(fd);
  member.next(10000); // version
  const [id] = member.next(10000);
  const [, shmFd] = member.next(10000);
  const { region, daemonPid } = mapRegion(shmFd);
  process.stdout.write(`${JSON.stringify({ pid: daemonPid, id })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    region.close();
    member.close();
    process.exit(0);
  });
}

if (require.main === module) {
  const [cmd, arg] = process.argv.slice(2);
  if (cmd === 'race' && arg) raceMain(arg);
  else {
    process.stderr.write('usage: daemon-client.js race <socket>\n');
    process.exit(2);
  }
}
