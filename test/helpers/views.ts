/** Counting the reads native consumers take in place (views of a ring) while a test runs. */
import { Channel } from '../../src/shm/channel';

/** Counts the reads a native consumer took in place (views of the ring) while `fn` runs. */
export async function countingViews<T>(fn: () => Promise<T>): Promise<{ result: T; views: number; bytes: number }> {
  const { view } = Channel.prototype as { view: (this: Channel, max: number) => Buffer | null | undefined };
  let views = 0;
  let bytes = 0;
  Channel.prototype.view = function (this: Channel, max: number) {
    const got = view.call(this, max);
    if (got) {
      views++;
      bytes += got.length;
    }
    return got;
  };
  try {
    const result = await fn();
    return { result, views, bytes };
  } finally {
    Channel.prototype.view = view;
  }
}
