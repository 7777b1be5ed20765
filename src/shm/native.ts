/**
 * Typed view of the native addon (native/*.cc). Mechanism only: every call
 * either does what it says or throws an Error carrying Node's usual fields
 * (`code` such as 'ECONNREFUSED', negative `errno`, `syscall`). The addon's own
 * failures are ZivmErrors (ZivmCorruptError, ZivmClosedError...; errors.ts).
 */
import path from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import { makeZivmError, ZivmNoAddonError } from '../errors';

/** A mapping of a shared-memory fd. */
export interface NativeRegion {
  /** External ArrayBuffer over the mapping's first `view` bytes (all of it unless the constructor was told otherwise); detached (length 0) after close(). */
  readonly buffer: ArrayBuffer;
  readonly size: number;
  /** Unmaps. Idempotent. Rings made on this region throw ERR_ZIVM_CLOSED afterwards. */
  close(): void;
  /** Bytes of [offset, offset + length) (default: all of it) that are memory now, whoever touched them (mincore). */
  resident(offset?: number, length?: number): number;
  /** Gives the pages of [offset, offset + length) back (page aligned): zeros for every mapping, no memory until written again. False where the mapping cannot (a device's memory). */
  discard(offset: number, length: number): boolean;
  /** Writes zeros over [offset, offset + length), anywhere in the mapping. */
  zero(offset: number, length: number): void;
  /** A copy of the bytes of [offset, offset + length) (at most 1 GiB), anywhere in the mapping: for inspection. */
  copy(offset: number, length: number): Buffer;
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
  /** Consumer: copies up to `target.byteLength` bytes into `target` and releases them; returns the count (0 when empty). */
  readInto(target: Uint8Array): number;
  /**
   * Consumer: a small read in one call. With 1..cap bytes waiting, copies them
   * all to pool[offset..] and releases them: returns the count. 0 when empty;
   * minus the count waiting when more than `cap` do (nothing is read).
   */
  readSmall(pool: Uint8Array, offset: number, cap: number): number;
  /**
   * Consumer: a Buffer over the bytes waiting from this end's position, up
   * to `max` and to the ring's end, read in place (no copy); nothing is
   * released. Null when empty; undefined if this Node.js cannot make such a
   * Buffer (read a copy). The bytes may change under it (a hostile peer):
   * hand it only to a consumer that copies before it looks.
   */
  peek(max: number): Buffer | null | undefined;
  /** Consumer: releases `count` of the bytes the last peek() found (at most those; RangeError past them). */
  release(count: number): void;
  /** Consumer: bytes readable now. */
  available(): number;
  /** Both: total bytes the producer has published (head) and the consumer has released (tail), as seen by this end. */
  head(): number;
  tail(): number;
  /** Reads this end's position from the header again (the object serves another connection of its slot). Throws ERR_ZIVM_CORRUPT as the constructor does. */
  resync(): void;
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

/** A region of a VFIO device (VFIO_DEVICE_GET_REGION_INFO). */
export interface VfioRegionInfo {
  /** VFIO.BAR0 ... VFIO.BAR5, VFIO.ROM, VFIO.CONFIG, ... */
  index: number;
  size: number;
  /** Where the region starts in the device fd (pread/pwrite, mmap): index << 40 for vfio-pci. */
  offset: number;
  /** VFIO.REGION_READ | REGION_WRITE | REGION_MMAP ... */
  flags: number;
}

/** An interrupt index of a VFIO device (VFIO_DEVICE_GET_IRQ_INFO). */
export interface VfioIrqInfo {
  /** VFIO.INTX, VFIO.MSI, VFIO.MSIX, ... */
  index: number;
  count: number;
  flags: number;
}

/** What vfioOpen returns; vfioClose closes the fds and sets them to -1. */
export interface VfioDevice {
  deviceFd: number;
  groupFd: number;
  containerFd: number;
  /** The IOMMU group (its number, as in /dev/vfio/<group>). */
  group: string;
  /** The IOMMU model set on the container (VFIO_TYPE1v2_IOMMU 3, VFIO_TYPE1_IOMMU 1, VFIO_NOIOMMU_IOMMU 8). */
  iommu: number;
  /** VFIO_DEVICE_FLAGS_* (PCI: 2, resettable: 1). */
  flags: number;
  regions: VfioRegionInfo[];
  irqs: VfioIrqInfo[];
}

/** vfio-pci's region and IRQ indexes and region flags (linux/vfio.h). */
export const VFIO = {
  BAR0: 0,
  BAR1: 1,
  BAR2: 2,
  ROM: 6,
  CONFIG: 7,
  INTX: 0,
  MSI: 1,
  MSIX: 2,
  REGION_READ: 1,
  REGION_WRITE: 2,
  REGION_MMAP: 4,
} as const;

/** ivshmem BAR0 registers (byte offsets). */
export const IVSHMEM = { INTR_MASK: 0, INTR_STATUS: 4, IV_POSITION: 8, DOORBELL: 12 } as const;

/**
 * The busy-poll before the loop sleeps (see native/spin.h). `state[0] = 1`
 * marks traffic: the peer turns hot and, from the loop's prepare phase, spins
 * on its pending bitmap for up to `sliceUs` at a time, for as long as traffic
 * came in the last `hotUs`, with the POLLING word of its peer entry set.
 */
export interface NativeSpinner {
  readonly state: Int32Array;
  setTimes(sliceUs: number, hotUs: number): void;
  /** Work waits for the next turn of the loop (see Domain.ringSelf); false once closed. */
  wake(): boolean;
  close(): void;
}

export interface Native {
  /** Errors with a zivm code are made by `factory` from then on. */
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  Spinner: new (
    region: NativeRegion,
    bitmapOffset: number,
    words: number,
    pollingOffset: number,
    onWork: (status: number, round: number) => unknown,
  ) => NativeSpinner;
  /**
   * Maps `size` bytes of `fd` from `offset` (default 0; a multiple of the page
   * size). offset + size must lie inside the fd (fstat), except for an fd that
   * reports no size at all, such as a VFIO device fd: its regions sit at
   * `index << 40` and their size comes from the region info (vfioOpen).
   */
  Region: new (fd: number, size: number, offset?: number, view?: number) => NativeRegion;
  Ring: new (region: NativeRegion, headerOffset: number, dataOffset: number, capacity: number, producer: boolean) => NativeRing;
  /**
   * Watches `fd` for readability with uv_poll on the main loop. When readable:
   * if `drainEventfd`, reads the eventfd until EAGAIN first; then calls
   * `onReadable(status)` (0, or a negative errno from libuv) through
   * MakeCallback, so process.nextTick and promise jobs run after it.
   * Starts ref'd and active.
   */
  Poller: new (fd: number, onReadable: (status: number, round: number) => unknown, drainEventfd: boolean) => NativePoller;

  /**
   * This thread's pool of 64 KiB read buffers (reads of 32 KiB or more use
   * one): chunks free, handed out (their Buffers not yet collected), and
   * that may hold pages.
   */
  readPool(): { free: number; out: number; resident: number; chunk: number };
  /** Gives the pages of free read chunks beyond a few back, once no read has taken one for a second. Returns how many. */
  readPoolTrim(): number;
  /**
   * Detaches the ArrayBuffer under each Uint8Array of `views` that spans the
   * whole of it (its memory goes back to the allocator now, not at the next
   * collection); other entries are left alone. Only for buffers nothing else
   * can reach. Returns how many were released.
   */
  releaseCopies(views: readonly Uint8Array[]): number;
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

  /**
   * socket(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC), bind, listen.
   * A path starting with '@' names a socket in the abstract namespace (no
   * file; one namespace per network namespace), as in unixConnect.
   */
  unixListen(path: string, backlog: number): number;
  /** socketpair(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC): two connected ends. */
  socketPair(): [number, number];
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

  /**
   * Opens a PCI device bound to vfio-pci (address as in /sys/bus/pci/devices,
   * e.g. '0000:00:03.0'): a container (API version checked), the device's IOMMU
   * group attached to it (the group must be viable: every device in it bound to
   * vfio-pci), the type1 v2 IOMMU (type1 as a fallback), the device fd, and the
   * info of every region and IRQ index. All fds are close-on-exec. Errors carry
   * `syscall` 'ioctl' and the ioctl's name in `request` (a group that is not
   * viable: EBUSY from VFIO_GROUP_GET_STATUS).
   */
  vfioOpen(pciAddress: string): VfioDevice;
  /**
   * Sets Bus Master (and Memory Space) in PCI_COMMAND through the config
   * region (pread/pwrite at `configRegionOffset` + 4): MSI-X messages are bus
   * master writes. Returns the command word read back.
   */
  vfioEnableBusMaster(deviceFd: number, configRegionOffset: number): number;
  /**
   * MSI-X vector i triggers eventfds[i] (VFIO_DEVICE_SET_IRQS, ACTION_TRIGGER,
   * DATA_EVENTFD); -1 leaves a vector unassigned. Enabling unmasks the vectors:
   * interrupts the device had pending fire right away. An empty array turns
   * MSI-X off.
   */
  vfioSetMsix(deviceFd: number, eventfds: number[]): void;
  /** Closes the device, group and container fds (in that order) and sets them to -1 in `device`. */
  vfioClose(device: Pick<VfioDevice, 'deviceFd' | 'groupFd' | 'containerFd'>): void;
  /** ivshmem: rings `peer`'s `vector` by writing (peer << 16) | vector to the Doorbell register (BAR0 + 12). */
  bar0Notify(deviceFd: number, bar0Offset: number, peer: number, vector: number): void;
  /** Reads a 32-bit BAR0 register (`reg` a multiple of 4 below 256; IVSHMEM.IV_POSITION is this guest's peer id). */
  bar0Read32(deviceFd: number, bar0Offset: number, reg: number): number;
}

let cached: Native | undefined;

/** The package's folder: binding.gyp, build/ (a build made here) and prebuilds/ (the binaries it ships). */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface AddonSource {
  /** The file node-gyp-build picks, if any. */
  file?: string;
  /** 'build': compiled on this machine (npm install without a matching prebuild, or npm run build:native). */
  kind?: 'prebuild' | 'build';
  /** Why no file matches. */
  error?: string;
}

/** Which addon file this process loads (or would load), without loading it. */
export function addonSource(): AddonSource {
  try {
    const file = nodeGypBuild.resolve(PACKAGE_ROOT);
    const rel = path.relative(PACKAGE_ROOT, file);
    return { file, kind: rel.split(path.sep)[0] === 'prebuilds' ? 'prebuild' : 'build' };
  } catch (err) {
    return { error: (err as Error).message.trim() };
  }
}

/**
 * Loads the addon once: a build made on this machine if there is one, else the
 * prebuild for this platform that the package ships. Throws ERR_ZIVM_NO_ADDON
 * with the reason if neither loads.
 */
export function native(): Native {
  if (cached) return cached;
  const src = addonSource();
  let why: string;
  if (src.file) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- the file is found at run time
      const addon = require(src.file) as Native;
      // Errors the addon throws with a zivm code are zivm's own classes (errors.ts).
      addon.setErrorFactory(makeZivmError);
      cached = addon;
      return cached;
    } catch (err) {
      why = `${src.file}: ${(err as Error).message}`;
    }
  } else {
    why = `no build and no prebuilt binary for ${process.platform}-${process.arch} here (${src.error?.split('\n')[0]})`;
  }
  throw new ZivmNoAddonError(`zivm native addon could not be loaded (npm rebuild zivm builds it from source; that needs g++, make and python3): ${why}`);
}

/** One message from a unix socket (see Native.recvMsg), with a broken socket read as its end (false). */
export function recvOrEnd(fd: number): [number, number] | null | false {
  try {
    return native().recvMsg(fd);
  } catch {
    return false;
  }
}

/** Closes `fd`; one that is closed already is fine (shutdown paths). */
export function closeQuiet(fd: number): void {
  try {
    native().close(fd);
  } catch {
    // Closed already: nothing is left to release.
  }
}
