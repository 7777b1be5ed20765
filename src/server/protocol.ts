/**
 * QEMU's ivshmem-server protocol (docs/specs/ivshmem-spec.rst), as the daemon
 * speaks it to every member. Each message is a little-endian int64 with at
 * most one fd in SCM_RIGHTS. A newcomer gets:
 *   1. 0 (protocol version)
 *   2. its ID
 *   3. -1 with the shared-memory fd
 *      (meanwhile every other member gets the new ID once per vector, each
 *      with one of the newcomer's eventfds)
 *   4. for every other member, its ID once per vector, each with that
 *      member's eventfd
 *   5. its own ID once per vector, each with its own eventfd (its interrupt
 *      setup)
 * Later: another member's ID with an fd (it joined) or without (it left).
 * QEMU sends nothing; a host process running zivm sends HELLO and gets
 * zivm's notes (shm/notes.ts). Anything else is read and dropped; EOF means
 * the member left.
 */
import { debug } from '../log';
import { helloVersion, readFdRequest } from '../shm/notes';
import { closeQuiet, type Native, type NativePoller } from '../shm/native';
import type { Outbox } from './outbox';

/** The protocol version sent first on every connection. */
export const PROTOCOL_VERSION = 0;

/** One member as the daemon knows it. */
export interface Member {
  id: number;
  gen: number;
  pid: number;
  sock: number;
  /** Its eventfds, one per vector: how the others ring it. */
  efds: number[];
  poller: NativePoller | null;
  outbox: Outbox;
  gone: boolean;
  /** It said HELLO (see shm/notes.ts): a host process running zivm, not QEMU. */
  host: boolean;
  /** It said HELLO2: it asks for the doorbells of the peers it rings, and gets no others. */
  onRequest: boolean;
}

export type Send = (to: Member, value: number, fd: number, ref: number) => void;

/**
 * The handshake for newcomer `member`, and its announcement to `others` first, so
 * that by the time it has its own interrupt setup every other member has its
 * doorbells queued. A member that said HELLO2 gets other members' doorbells
 * when it asks (see answerFdRequest), not all of them up front: it holds
 * eventfds for the peers it talks to.
 */
export function welcome(member: Member, others: Member[], memfd: number, vectors: number, send: Send): void {
  send(member, PROTOCOL_VERSION, -1, -1);
  send(member, member.id, -1, -1);
  send(member, -1, memfd, -1);
  for (const other of others) {
    if (other.onRequest) continue;
    for (let vector = 0; vector < vectors; vector++) send(other, member.id, member.efds[vector], member.id);
  }
  if (!member.onRequest) for (const other of others) for (let vector = 0; vector < vectors; vector++) send(member, other.id, other.efds[vector], other.id);
  for (let vector = 0; vector < vectors; vector++) send(member, member.id, member.efds[vector], member.id);
}

/**
 * Tells `others` that `member` left. Doorbells of the leaver still waiting in
 * another member's queue are dropped (its fds are closed next); a member that
 * never heard of the leaver is not told it left.
 */
export function farewell(member: Member, others: Member[], vectors: number, send: Send): void {
  for (const other of others) {
    const dropped = other.outbox.dropDoorbellsOf(member.id);
    if (dropped < vectors) send(other, member.id, -1, -1);
  }
}

/** Answers `member`'s request for the doorbells of `peer`: its fds, or its id alone if it is not a member (any more). */
export function answerFdRequest(member: Member, peer: Member | undefined, peerId: number, vectors: number, send: Send): void {
  if (!peer || peer.gone || peer === member) {
    send(member, peerId, -1, -1);
    return;
  }
  for (let vector = 0; vector < vectors; vector++) send(member, peer.id, peer.efds[vector], peer.id);
}

/**
 * Reads what a member sent: HELLO from a host process (`onHello`), a
 * request for a peer's doorbells from one (`onFdRequest`); anything else is
 * dropped (fds passed along with it are closed). 'closed' on EOF or a broken
 * socket.
 */
export function readInput(
  addon: Native,
  sock: number,
  id: number,
  onHello: (version: number) => void,
  onFdRequest: (peer: number) => void = () => undefined,
): 'open' | 'closed' {
  for (let k = 0; k < 16; k++) {
    let msg: [number, number] | null | false;
    try {
      msg = addon.recvMsg(sock);
    } catch (err) {
      debug('peer %d sent a message cut short: %s', id, (err as Error).message);
      return 'closed';
    }
    if (msg === null) return 'open';
    if (msg === false) return 'closed';
    const [value, fd] = msg;
    if (fd >= 0) closeQuiet(fd);
    const wanted = fd < 0 ? readFdRequest(value) : undefined;
    if (helloVersion(value) > 0 && fd < 0) onHello(helloVersion(value));
    else if (wanted !== undefined) onFdRequest(wanted);
    else debug('peer %d sent %d (ignored)', id, value);
  }
  return 'open';
}
