/**
 * A scratch area of the shared region where the VM test's host side and the
 * guest probe leave each other messages. It lies outside everything the zivm
 * protocol uses: the unused tail after the last slot when there is room, else
 * the ring data of the last slot (no connection takes it in this test).
 *
 *   +0      i32 host state   (HOST_* below)
 *   +4      i32 guest state  (GUEST_* below)
 *   +64     host message:  u32 length, UTF-8 bytes (< 4000)
 *   +4096   guest message: u32 length, UTF-8 bytes (< 4000)
 *   +8192   host block  (BLOCK bytes of pattern(hostSeed))
 *   +8192+BLOCK  guest block (BLOCK bytes of pattern(guestSeed))
 */
import { createHash } from 'node:crypto';
import { Geometry, PAGE, ringOffsets } from '../../src/shm/layout';

export const BLOCK = 64 * 1024;
export const SCRATCH_SIZE = 8192 + 2 * BLOCK;

export const W_HOST = 0;
export const W_GUEST = 1;
export const HOST_MSG = 64;
export const GUEST_MSG = 4096;
export const HOST_BLOCK = 8192;
export const GUEST_BLOCK = 8192 + BLOCK;

/** Host states. */
export const HOST_WROTE = 1; // host message and block are there
export const HOST_REPLIED = 2; // host read the guest's message and block, wrote its reply, rang the guest
export const HOST_RANG = 3; // host rang every vector of the guest again (after GUEST_IRQ_READY)

/** Guest states. */
export const GUEST_WROTE = 1; // guest message and block are there, host's doorbell rung
export const GUEST_SAW_REPLY = 2; // guest saw the reply (and its interrupts pending)
export const GUEST_IRQ_READY = 3; // guest takes MSI-X interrupts through VFIO now: ring every vector once
export const GUEST_PINGPONG = 4; // answer each doorbell on the host's vector 0 with one on the guest's vector 0
export const GUEST_DONE = 5; // about to exit

export function scratchOffset(geo: Geometry): number {
  const end = geo.ringsOff + geo.nslots * 2 * geo.ringSize;
  if (geo.size - end >= SCRATCH_SIZE + PAGE) return end;
  const res = ringOffsets(geo, geo.nslots - 1);
  if (geo.ringSize < SCRATCH_SIZE) throw new Error(`no room for the VM test's scratch area (ring ${geo.ringSize})`);
  return res.c2sData;
}

/** Deterministic bytes from a 32-bit seed (xorshift32). */
export function pattern(seed: number, size = BLOCK): Buffer {
  const buf = Buffer.alloc(size);
  let val = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < size; i += 4) {
    val ^= val << 13;
    val >>>= 0;
    val ^= val >>> 17;
    val ^= val << 5;
    val >>>= 0;
    buf.writeUInt32LE(val, i);
  }
  return buf;
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

export function writeMsg(u8: Uint8Array, off: number, text: string): void {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length > 4000) throw new Error('message too long');
  u8.set(buf, off + 4);
  new DataView(u8.buffer, u8.byteOffset).setUint32(off, buf.length, true);
}

export function readMsg(u8: Uint8Array, off: number): string {
  const len = new DataView(u8.buffer, u8.byteOffset).getUint32(off, true);
  if (len > 4000) throw new Error(`bad message length ${len}`);
  return Buffer.from(u8.subarray(off + 4, off + 4 + len)).toString('utf8');
}
