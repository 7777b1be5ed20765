/** The order in which the ends of connections get their turns of work (see Domain). */

/** A FIFO of small integers below `size`, each queued at most once. */
export class RunQueue {
  private readonly queue: Int32Array;
  private readonly queued: Uint8Array;
  private head = 0;
  length = 0;

  constructor(size: number) {
    this.queue = new Int32Array(size);
    this.queued = new Uint8Array(size);
  }

  /** Queues `value`; false if it was queued already. */
  push(value: number): boolean {
    if (value < 0 || value >= this.queue.length || this.queued[value]) return false;
    this.queued[value] = 1;
    this.queue[(this.head + this.length) % this.queue.length] = value;
    this.length++;
    return true;
  }

  /** Queues `value` first; false if it was queued already. */
  unshift(value: number): boolean {
    if (value < 0 || value >= this.queue.length || this.queued[value]) return false;
    this.queued[value] = 1;
    this.head = (this.head + this.queue.length - 1) % this.queue.length;
    this.queue[this.head] = value;
    this.length++;
    return true;
  }

  /** The first entry, or -1. */
  shift(): number {
    if (this.length === 0) return -1;
    const value = this.queue[this.head];
    this.head = (this.head + 1) % this.queue.length;
    this.length--;
    this.queued[value] = 0;
    return value;
  }
}
