/** The order in which the ends of connections get their turns of work (see Domain). */

/** A FIFO of small integers below `size`, each queued at most once. */
export class RunQueue {
  private readonly q: Int32Array;
  private readonly queued: Uint8Array;
  private head = 0;
  length = 0;

  constructor(size: number) {
    this.q = new Int32Array(size);
    this.queued = new Uint8Array(size);
  }

  /** Queues `v`; false if it was queued already. */
  push(v: number): boolean {
    if (v < 0 || v >= this.q.length || this.queued[v]) return false;
    this.queued[v] = 1;
    this.q[(this.head + this.length) % this.q.length] = v;
    this.length++;
    return true;
  }

  /** Queues `v` first; false if it was queued already. */
  unshift(v: number): boolean {
    if (v < 0 || v >= this.q.length || this.queued[v]) return false;
    this.queued[v] = 1;
    this.head = (this.head + this.q.length - 1) % this.q.length;
    this.q[this.head] = v;
    this.length++;
    return true;
  }

  /** The first entry, or -1. */
  shift(): number {
    if (this.length === 0) return -1;
    const v = this.q[this.head];
    this.head = (this.head + 1) % this.q.length;
    this.length--;
    this.queued[v] = 0;
    return v;
  }
}

