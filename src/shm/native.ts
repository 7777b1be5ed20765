/**
 * Typed view of the native addon (native/*.cc). Mechanism only: every call
 * either does what it says or throws an Error carrying Node's usual fields
 * (`code` such as 'ECONNREFUSED', negative `errno`, `syscall`). The addon's own
 * failures carry codes prefixed ERR_ZIVM_ (ERR_ZIVM_CORRUPT, ERR_ZIVM_CLOSED,
 * ERR_ZIVM_BAD_ARG).
 */
import path from 'node:path';

/** A mapping of a shared-memory fd. */
export interface NativeRegion {
  /** External ArrayBuffer over the whole mapping; detached (length 0) after close(). */
  readonly buffer: ArrayBuffer;
  readonly size: number;
  /** Unmaps. Idempotent. Rings made on this region throw ERR_ZIVM_CLOSED afterwards. */
  close(): void;
}

/**
 * One direction of a connection: a single-producer single-consumer byte ring in
 * the region (header layout in layout.ts, RING_*). An instance is either the
 * producer or the consumer end; it keeps its own position privately and
 * validates the other side's position on every read of it (a position more than
 * `capacity` away from its own is corruption: ERR_ZIVM_CORRUPT).
 * After publishing a position both ends issue a full fence, so a following
 * Atomics.load of the other side's sleeping flag is ordered after it.
 */
export interface NativeRing {
  readonly capacity: number;
  /** Producer: copies as much of `chunk` as fits; returns bytes copied (0 when full). */
  write(chunk: Uint8Array): number;
  /** Producer: copies chunks in order until one does not fit entirely (that one partly); one publish. Returns bytes copied. */
  writev(chunks: Uint8Array[]): number;
  /** Producer: bytes that can be written now. */
  free(): number;
  /** Consumer: a new Buffer with up to `max` bytes, or null when empty. */
  read(max: number): Buffer | null;
  /** Consumer: bytes readable now. */
  available(): number;
  /** Both: total bytes the producer has published (head) and the consumer has released (tail), as seen by this end. */
  head(): number;
  tail(): number;
}

export interface NativePoller {
  /** Starts watching for readability (again). */
  start(): void;
  /** Stops watching; the fd stays open. */
  stop(): void;
  ref(): void;
  unref(): void;
  hasRef(): boolean;
  /** Stops and releases the libuv handle (asynchronously). Does not close the fd. Idempotent. */
  close(): void;
}

/**
 * The busy-poll before the loop sleeps (see native/spin.h). `state[0] = 1`
 * marks traffic: the peer turns hot and, from the loop's prepare phase, spins
 * on its pending bitmap for up to `sliceUs` at a time, for as long as traffic
 * came in the last `hotUs`, with the POLLING word of its peer entry set.
 */
export interface NativeSpinner {
  readonly state: Int32Array;
  setTimes(sliceUs: number, hotUs: number): void;
  close(): void;
}

export interface Native {
  Spinner: new (region: NativeRegion, bitmapOffset: number, words: number, pollingOffset: number, onWork: () => void) => NativeSpinner;
  Region: new (fd: number, size: number) => NativeRegion;
  Ring: new (region: NativeRegion, headerOffset: number, dataOffset: number, capacity: number, producer: boolean) => NativeRing;
  /**
   * Watches `fd` for readability with uv_poll on the main loop. When readable:
   * if `drainEventfd`, reads the eventfd until EAGAIN first; then calls
   * `onReadable(status)` (0, or a negative errno from libuv) through
   * MakeCallback, so process.nextTick and promise jobs run after it.
   * Starts ref'd and active.
   */
  Poller: new (fd: number, onReadable: (status: number) => void, drainEventfd: boolean) => NativePoller;

  /** memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING) + ftruncate(size) + seal against shrink/grow. Returns the fd. */
  memfdCreate(name: string, size: number): number;
  /** fstat(fd).st_size */
  fdSize(fd: number): number;
  /** eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC) */
  eventfd(): number;
  /** Adds 1 to an eventfd. EAGAIN (counter saturated) counts as already signalled; EINTR retried. */
  notify(fd: number): void;
  /** Reads an eventfd until EAGAIN; returns the sum read (0 if none). */
  drain(fd: number): number;

  /** socket(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC), bind, listen. */
  unixListen(path: string, backlog: number): number;
  /** accept4(SOCK_NONBLOCK|SOCK_CLOEXEC); -1 when no connection is waiting. */
  unixAccept(fd: number): number;
  /** Connects (blocking connect, then O_NONBLOCK|O_CLOEXEC). */
  unixConnect(path: string): number;
  /**
   * Sends one ivshmem protocol message: `value` as a little-endian int64, with
   * `passFd` in SCM_RIGHTS unless it is -1. Throws EAGAIN if the socket is full.
   */
  sendMsg(fd: number, value: number, passFd: number): void;
  /**
   * Receives one 8-byte message: [value, fd] (fd -1 when none came), null when
   * nothing is waiting (EAGAIN), false at end of stream. Extra fds are closed.
   * A message split by the kernel is completed (waiting at most 1 s).
   */
  recvMsg(fd: number): [number, number] | null | false;
  /** Blocks up to `timeoutMs` for readability; true if readable. */
  waitReadable(fd: number, timeoutMs: number): boolean;
  /** SO_PEERCRED of a connected unix socket. */
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  /** flock(fd, LOCK_EX|LOCK_NB); true if taken, false if held by someone else. */
  tryLock(fd: number): boolean;
  close(fd: number): void;
}

let cached: Native | undefined;

/** Loads the addon once. Throws ERR_ZIVM_NO_ADDON with the reason if it is not built. */
export function native(): Native {
  if (cached) return cached;
  const root = path.resolve(__dirname, '..', '..', '..');
  const candidates = [path.join(root, 'build', 'Release', 'zivm.node'), path.join(root, 'build', 'Debug', 'zivm.node')];
  let lastErr: unknown;
  for (const file of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      cached = require(file) as Native;
      return cached;
    } catch (e) {
      lastErr = e;
    }
  }
  const err = new Error(`zivm native addon could not be loaded: ${(lastErr as Error)?.message}`) as Error & { code: string };
  err.code = 'ERR_ZIVM_NO_ADDON';
  throw err;
}
