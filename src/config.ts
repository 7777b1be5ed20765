/**
 * Every setting zivm reads from the environment, in one place (the README's
 * table of variables says the same). Each is read when asked for, so that a
 * program (or a test) may set them before it first uses zivm.
 */
import os from 'node:os';
import path from 'node:path';
import { myUid } from './sys';

type Env = NodeJS.ProcessEnv;

/** ZIVM: `off` (or `0`, `false`, `tcp`) routes everything through plain node:net. */
export function zivmOff(env: Env = process.env): boolean {
  const value = (env.ZIVM ?? '').toLowerCase();
  return value === 'off' || value === '0' || value === 'false' || value === 'tcp';
}

let offAtFirstUse: boolean | undefined;

/**
 * zivmOff() as it was when the process first connected or listened: read once
 * (reading the environment costs a microsecond or two, on every connection).
 */
export function zivmOffOnce(): boolean {
  offAtFirstUse ??= zivmOff();
  return offAtFirstUse;
}

/** The daemon socket's file name in its folder. */
export const SOCKET_NAME = 'zivm.sock';

/** ZIVM_DIR: the folder of the daemon socket; else $XDG_RUNTIME_DIR/zivm; else <tmpdir>/zivm-<uid>. */
export function socketDir(env: Env = process.env): string {
  if (env.ZIVM_DIR) return path.resolve(env.ZIVM_DIR);
  if (env.XDG_RUNTIME_DIR) return path.join(path.resolve(env.XDG_RUNTIME_DIR), 'zivm');
  return path.join(os.tmpdir(), `zivm-${myUid()}`);
}

/** ZIVM_SOCKET: the daemon socket itself; else zivm.sock in socketDir(). */
export function socketPath(env: Env = process.env): string {
  if (env.ZIVM_SOCKET) return path.resolve(env.ZIVM_SOCKET);
  return path.join(socketDir(env), SOCKET_NAME);
}

/**
 * The broker socket of the daemon of user `uid` (server/broker.ts): a name in
 * the abstract namespace, which belongs to a network namespace, so only
 * processes in the daemon's own network namespace reach it. ZIVM_BROKER=off:
 * a daemon brokers nothing and a process dials no broker.
 */
export function brokerName(uid: number): string {
  return `@zivm-broker.${uid}`;
}

export function brokerOff(env: Env = process.env): boolean {
  const value = (env.ZIVM_BROKER ?? '').toLowerCase();
  return value === 'off' || value === '0' || value === 'false';
}

/** The lock file that goes with a daemon socket. */
export function lockPath(sock: string): string {
  return `${sock}.lock`;
}

/** ZIVM_AUTOSTART=0: never start a daemon on demand. */
export function autostartAllowed(env: Env = process.env): boolean {
  return env.ZIVM_AUTOSTART !== '0';
}

/**
 * Region and ring sizes of a daemon when neither the command line nor the
 * environment says. A domain of host processes maps 32 GiB of a memfd: only
 * the pages connections touch are memory (about 12 KiB for a connection that
 * moved a few KiB), and the slots (16,374 with 1 MiB rings) are a table,
 * not an allocation. Rings of 1 MiB a direction move bulk data 10 to 25%
 * faster than 512 KiB ones (fewer hand-overs between writer and reader per
 * byte); only a connection that moves that much touches them all. A daemon of
 * guests gives QEMU a BAR of the region's size: 256 MiB, with 512 KiB rings
 * (255 connections).
 */
export const DEFAULT_SIZE = 32 * 1024 * 1024 * 1024;
export const DEFAULT_GUEST_SIZE = 256 * 1024 * 1024;
export const DEFAULT_RING = 1024 * 1024;
export const DEFAULT_GUEST_RING = 512 * 1024;
export const DEFAULT_VECTORS = 1;
export const DEFAULT_MAX_PEERS = 1024;
export const DEFAULT_MAX_LISTENERS = 1024;
/** How long an auto-started daemon stays after its last peer, unless ZIVM_IDLE_MS says. */
export const DEFAULT_AUTO_IDLE_MS = 1000;

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * Parses a byte count: "4096", "512K", "256M", "1G", "1.5G" (K/M/G/T are powers
 * of 1024; a trailing "B" or "iB" is allowed). Throws RangeError otherwise.
 */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new RangeError(`invalid size: ${text}`);
    return text;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new RangeError(`invalid size: ${JSON.stringify(text)} (try 512K, 256M, 1G)`);
  const bytes = Number(match[1]) * UNITS[match[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`invalid size: ${JSON.stringify(text)} (not a whole number of bytes)`);
  return bytes;
}

function sizeFrom(env: Env, name: 'ZIVM_SIZE' | 'ZIVM_RING', fallback: number): number {
  const value = env[name];
  if (value === undefined || value === '') return fallback;
  try {
    return parseSize(value);
  } catch (err) {
    throw new RangeError(`${name}: ${(err as Error).message}`);
  }
}

/** ZIVM_SIZE: region size of a daemon started without --size (`guests`: one that admits QEMU guests). Throws RangeError when unreadable. */
export function regionSize(env: Env = process.env, guests = false): number {
  return sizeFrom(env, 'ZIVM_SIZE', guests ? DEFAULT_GUEST_SIZE : DEFAULT_SIZE);
}

/** ZIVM_RING: bytes per ring direction of a daemon started without --ring (`guests`: one that admits QEMU guests). Throws RangeError when unreadable. */
export function ringSize(env: Env = process.env, guests = false): number {
  return sizeFrom(env, 'ZIVM_RING', guests ? DEFAULT_GUEST_RING : DEFAULT_RING);
}

/** ZIVM_IDLE_MS: an auto-started daemon exits this long after its last peer. */
export function autoIdleMs(env: Env = process.env): number {
  const value = env.ZIVM_IDLE_MS;
  if (value !== undefined && value !== '') {
    const count = Number(value);
    if (Number.isFinite(count) && count >= 0) return count;
  }
  return DEFAULT_AUTO_IDLE_MS;
}

function micros(value: string | undefined, fallback: number): number {
  const count = Number(value);
  return value !== undefined && value !== '' && Number.isFinite(count) && count >= 0 ? Math.min(Math.floor(count), 10_000_000) : fallback;
}

/**
 * ZIVM_SPIN_US: how long to keep busy-polling after traffic (0: never);
 * ZIVM_SPIN_SLICE_US: the longest single spin before the event loop gets a
 * turn. A guest does not spin unless ZIVM_SPIN_US says so: its vCPUs are the
 * host's threads.
 */
export function spinTimes(guest: boolean, env: Env = process.env): { slice: number; hot: number } {
  return { slice: micros(env.ZIVM_SPIN_SLICE_US, 50), hot: micros(env.ZIVM_SPIN_US, guest ? 0 : 200) };
}

/**
 * In a VM guest, which agent a process joins through: ZIVM_GUEST_AGENT (a
 * socket path) if set, else ZIVM_GUEST_PCI (`off`, a PCI address, `auto`, or
 * unset: auto). See guest/link.ts for what `auto` finds.
 */
export function guestSetting(env: Env = process.env): { agent: string } | { pci: string } | 'off' | 'auto' | 'unset' {
  if (env.ZIVM_GUEST_AGENT) return { agent: path.resolve(env.ZIVM_GUEST_AGENT) };
  const value = env.ZIVM_GUEST_PCI;
  if (value === 'off') return 'off';
  if (!value) return 'unset';
  if (value === 'auto') return 'auto';
  return { pci: value };
}
