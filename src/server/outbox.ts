/**
 * What the daemon has yet to send one member: protocol messages (a value and
 * at most one fd each) in order. A message the member's socket has no room
 * for waits; a member whose socket stays full too long is given up on.
 */
import { closeQuiet, Native } from '../shm/native';
import { errCode } from '../sys';

/** A member whose socket stays full this long is dropped. */
export const SEND_STALL_MS = 5000;

interface Msg {
  value: number;
  fd: number;
  /** The peer whose eventfd `fd` is (-1 for the region fd, or none). */
  ref: number;
  /** `fd` is ours to close once sent (or dropped). */
  owned: boolean;
}

export type SendResult = 'sent' | 'queued' | 'broken';

export class Outbox {
  private queue: Msg[] = [];
  private blockedSince = 0;

  constructor(
    private readonly addon: Native,
    private readonly sock: number,
  ) {}

  get empty(): boolean {
    return this.queue.length === 0;
  }

  /**
   * Sends now, or queues behind what waits already. 'broken': the socket
   * failed. `owned`: the fd is closed once sent, or when the message is
   * dropped, whatever the outcome.
   */
  send(value: number, fd: number, ref: number, owned = false): SendResult {
    if (this.queue.length === 0) {
      const outcome = this.trySend(value, fd);
      if (outcome !== 'full') {
        if (owned && fd >= 0) closeQuiet(fd);
        return outcome;
      }
      this.blockedSince = Date.now();
    }
    this.queue.push({ value, fd, ref, owned });
    return 'queued';
  }

  /**
   * Sends what waits, in order, as far as the socket takes it. 'stalled': it
   * took nothing for SEND_STALL_MS; 'pending': more waits.
   */
  flush(now: number): 'done' | 'pending' | 'stalled' | 'broken' {
    while (this.queue.length) {
      const msg = this.queue[0];
      const outcome = this.trySend(msg.value, msg.fd);
      if (outcome === 'broken') return 'broken';
      if (outcome === 'full') return now - this.blockedSince > SEND_STALL_MS ? 'stalled' : 'pending';
      this.queue.shift();
      if (msg.owned && msg.fd >= 0) closeQuiet(msg.fd);
      this.blockedSince = now;
    }
    return 'done';
  }

  /** Drops the queued doorbells (messages with an fd) of peer `ref`; returns how many. */
  dropDoorbellsOf(ref: number): number {
    const before = this.queue.length;
    this.queue = this.queue.filter((msg) => !(msg.ref === ref && msg.fd >= 0));
    return before - this.queue.length;
  }

  clear(): void {
    for (const msg of this.queue) if (msg.owned && msg.fd >= 0) closeQuiet(msg.fd);
    this.queue = [];
  }

  private trySend(value: number, fd: number): 'sent' | 'full' | 'broken' {
    try {
      this.addon.sendMsg(this.sock, value, fd);
      return 'sent';
    } catch (err) {
      const code = errCode(err);
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'ENOBUFS') return 'full';
      return 'broken';
    }
  }
}
