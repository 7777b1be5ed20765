/**
 * Every error zivm makes, in one place.
 *
 * - Failures of the operating system look exactly as Node's own: message
 *   `<syscall> <CODE>`, fields code, errno (negative) and syscall
 *   (errnoException; the native addon builds the same from errno).
 * - zivm's own failures are ZivmError instances with a code prefixed
 *   ERR_ZIVM_; the subclasses say what failed, so callers test with
 *   instanceof. The native addon throws them too (it is given
 *   makeZivmError when it loads).
 */
import os from 'node:os';

export interface ErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
  address?: string;
  port?: number;
}

/** `${syscall} ${code}` with a negative errno, as Node builds them from libuv. */
export function errnoException(code: string, syscall: string): ErrnoError {
  const errno = (os.constants.errno as Record<string, number>)[code] ?? 0;
  const err = new Error(`${syscall} ${code}`) as ErrnoError;
  err.errno = -errno;
  err.code = code;
  err.syscall = syscall;
  return err;
}

/** A failure of zivm itself (not of the operating system): `code` starts with ERR_ZIVM_. */
export class ZivmError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  // Shown as Node shows its own coded errors: `Error [ERR_ZIVM_...]: message`.
  override get name(): string {
    return 'Error';
  }
}

/** Shared memory that makes no sense (a ring index out of range, a bad slot state): fails its connection. */
export class ZivmCorruptError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_CORRUPT', message);
  }
}

/** Something used after its region, ring or poller was closed. */
export class ZivmClosedError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_CLOSED', message);
  }
}

/** The daemon (or a guest agent) said something that does not follow the protocol. */
export class ZivmProtocolError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_PROTOCOL', message);
  }
}

/** A region whose header is missing, inconsistent or too small for what it says. */
export class ZivmBadRegionError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_BAD_REGION', message);
  }
}

/** A region laid out by another version of zivm. */
export class ZivmVersionMismatchError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_VERSION_MISMATCH', message);
  }
}

/** No daemon serves the socket (and none could be started). */
export class ZivmNoDaemonError extends ZivmError {
  constructor(message: string, cause?: unknown) {
    super('ERR_ZIVM_NO_DAEMON', message, cause === undefined ? undefined : { cause });
  }
}

/** A daemon found beside ours serves host processes only: it is not a domain of guests (route.ts). */
export class ZivmNotGuestsError extends ZivmError {
  constructor(message: string) {
    super('ERR_ZIVM_NOT_GUESTS', message);
  }
}

/** The daemon socket's folder is not private to this user. */
export class ZivmUnsafeDirError extends ZivmError {
  readonly dir: string;

  constructor(dir: string, why: string) {
    super('ERR_ZIVM_UNSAFE_DIR', `zivm: refusing to use socket folder ${dir}: ${why}`);
    this.dir = dir;
  }
}

/** Inside a VM guest: the ivshmem device or the guest agent cannot be used. */
export class ZivmGuestError extends ZivmError {
  constructor(message: string, cause?: unknown) {
    super('ERR_ZIVM_GUEST', message, cause === undefined ? undefined : { cause });
  }
}

/** The native addon could not be loaded. */
export class ZivmNoAddonError extends ZivmError {
  constructor(message: string, cause?: unknown) {
    super('ERR_ZIVM_NO_ADDON', message, cause === undefined ? undefined : { cause });
  }
}

/** A command line that cannot be run as written (the CLI prints it with the usage). */
export class UsageError extends Error {}

const byCode: Record<string, new (message: string) => ZivmError> = {
  ERR_ZIVM_CORRUPT: ZivmCorruptError,
  ERR_ZIVM_CLOSED: ZivmClosedError,
  ERR_ZIVM_PROTOCOL: ZivmProtocolError,
  ERR_ZIVM_BAD_REGION: ZivmBadRegionError,
  ERR_ZIVM_VERSION_MISMATCH: ZivmVersionMismatchError,
};

/** The error for `code`: its own class where there is one. The native addon makes its errors with this. */
export function makeZivmError(code: string, message: string): ZivmError {
  const ErrorClass = byCode[code];
  return ErrorClass ? new ErrorClass(message) : new ZivmError(code, message);
}
