/**
 * zivm's additions to the ivshmem-server stream, between the daemon and host
 * processes only. QEMU speaks the protocol as documented and never sends a
 * thing; a host process says HELLO once it has its interrupt set-up, and the
 * daemon answers with notes (negative values QEMU never sees): whether the
 * domain admits guests, whether doorbells come on request, which members are
 * host processes (and, later, each host process that says hello), the guests'
 * declared addresses, then END. Host processes are thus known from what the
 * daemon saw on its socket, never from the region, which a guest can write.
 *
 * Every value fits a JavaScript number (|v| < 2^53): a note is
 * -(2^52 + type * 2^48 + payload), payload < 2^48.
 */

/** What a host process sends, once: 'ZIVM' and the notes' version. */
export const HELLO = 0x5a49564d * 0x10000 + 1;
/** Version 2: the same, and it asks for the doorbells of the peers it rings (fdRequest) rather than getting all of them. */
export const HELLO2 = 0x5a49564d * 0x10000 + 2;

/** The notes' version a value says HELLO in (1 or 2), or 0. */
export function helloVersion(value: number): number {
  return value === HELLO ? 1 : value === HELLO2 ? 2 : 0;
}

export const NOTE_MEMBER = 1; // payload: the id of a member that is a host process
// 2: no longer sent (a secret for signed requests, before host processes had a domain of their own)
export const NOTE_END = 3; // the answer to HELLO is complete
export const NOTE_GUEST4 = 4; // payload: an IPv4 address the operator declared for the domain's guests
export const NOTE_GUEST6 = 5; // payload: index (bits 32..33) and 32 bits of such an IPv6 address, four in a row
export const NOTE_GUESTS = 6; // the domain admits QEMU guests: host processes meet elsewhere
export const NOTE_ON_REQUEST = 7; // other members' doorbells are not announced: ask for a peer's (fdRequest) when it is first rung

/** What a host process sends for the doorbells of peer P (P < 2^16): 'ZIFQ', then P. The daemon answers as it announces a peer: P with each fd, or P alone if P is not a member. */
const FD_REQUEST = 0x5a494651 * 0x10000;

export function fdRequest(peer: number): number {
  return FD_REQUEST + peer;
}

/** The peer a value asks the doorbells of, or undefined if it is no such request. */
export function readFdRequest(value: number): number | undefined {
  const peer = value - FD_REQUEST;
  return Number.isInteger(peer) && peer >= 0 && peer < 0x10000 ? peer : undefined;
}

const BASE = 2 ** 52;
const TYPE = 2 ** 48;

export function note(type: number, payload: number): number {
  return -(BASE + type * TYPE + payload);
}

/** The note a value is, or undefined for any other message. */
export function readNote(value: number): { type: number; payload: number } | undefined {
  if (!(value <= -BASE) || value < -(2 ** 53)) return undefined;
  const rest = -value - BASE;
  const type = Math.floor(rest / TYPE);
  return { type, payload: rest - type * TYPE };
}

/** The notes that declare `addr` (16 bytes; IPv4 in the first 4) a guest address. */
export function guestAddrNotes(family: 4 | 6, bytes: Uint8Array): number[] {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  if (family === 4) return [note(NOTE_GUEST4, view.readUInt32BE(0))];
  return [0, 1, 2, 3].map((index) => note(NOTE_GUEST6, index * 2 ** 32 + view.readUInt32BE(4 * index)));
}

/** Puts the guest address notes together as they come: `take(note)` returns an address once one is complete. */
export class GuestAddrReader {
  private readonly v6 = Buffer.alloc(16);
  private have = 0;

  take(type: number, payload: number): { family: 4 | 6; bytes: Uint8Array } | undefined {
    if (type === NOTE_GUEST4) {
      const bytes = new Uint8Array(16);
      Buffer.from(bytes.buffer).writeUInt32BE(payload % 2 ** 32, 0);
      return { family: 4, bytes };
    }
    if (type !== NOTE_GUEST6) return undefined;
    const index = Math.floor(payload / 2 ** 32);
    if (index !== this.have) {
      this.have = 0;
      return undefined;
    }
    this.v6.writeUInt32BE(payload % 2 ** 32, 4 * index);
    if (++this.have < 4) return undefined;
    this.have = 0;
    return { family: 6, bytes: new Uint8Array(this.v6) };
  }
}

/*
 * Between processes of different users (see shm/pairs.ts and
 * server/broker.ts). A process that dials a port another uid listens on
 * connects to that uid's daemon's broker socket and says where it dials:
 * DIAL4 (an IPv4 address and the port), or DIAL6 four times (an IPv6
 * address, 32 bits each, as GUEST6) then DIAL_PORT. The daemon answers PAIR
 * (with the dialler's end of a new pair domain's socket, or without an fd
 * for a pair domain it has with that process already), or NO_PAIR. The
 * listening process, a member of the daemon's domain, gets SERVE on its own
 * socket: which of its listeners was paired, and where.
 */
export const NOTE_DIAL4 = 8; // payload: address * 2^16 + port
export const NOTE_DIAL6 = 9; // payload: index (bits 32..33) and 32 bits of the IPv6 address dialled
export const NOTE_DIAL_PORT = 10; // payload: the port, after four DIAL6
export const NOTE_PAIR = 11; // payload: pair serial * 2^16 + the listener's index in the pair domain; fd: the socket of a new pair domain
export const NOTE_NO_PAIR = 12; // payload: why (PAIR_REFUSALS)
export const NOTE_SERVE = 13; // payload: pair serial * 2^32 + host listener index * 2^16 + pair listener index; fd: the socket of a new pair domain
/**
 * The domain is one of a network namespace other than the daemon's (a
 * container, a pod; server/pods.ts): connections to the addresses of other
 * namespaces on this host are asked of the daemon (DIAL notes on a new
 * connection to its socket). Where a daemon pairs namespaces, the DIAL notes
 * it sends before PAIR (to the dialler) and before SERVE (to the listening
 * process) name the dialler's address, as the daemon saw it in the kernel:
 * the source the listener sees, with port 0.
 */
export const NOTE_POD = 14;

/** Why a broker answers NO_PAIR, by the payload it sends. */
export const PAIR_REFUSALS = [
  'the dial could not be read',
  'no listener of that daemon holds the address and port',
  'same user: such processes meet in their own domain',
  'the daemon could not make a pair domain',
  'the listener is not a host process',
  'too many pair domains already (the listening process, or this user)',
  'no other network namespace of this host holds that address',
  'more than one network namespace of this host holds that address',
  'nothing listens there in that network namespace',
  'the dialling network namespace has no address to dial from',
  'dialled from a network namespace zivm cannot tell (its process is not visible to the daemon)',
  "the daemon cannot tell where the node's NAT rules send it",
  "the node's NAT rules send it to no network namespace of this node (a pod on another node, say)",
] as const;

/** Refusals that may go another way next time (a Service's rules pick at random): not remembered by the dialler. */
export const PAIR_REFUSALS_AGAIN = new Set([12]);

/** The notes a dialler sends for (addr, port): `bytes` is 16 bytes, IPv4 in the first 4. */
export function dialNotes(family: 4 | 6, bytes: Uint8Array, port: number): number[] {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  if (family === 4) return [note(NOTE_DIAL4, view.readUInt32BE(0) * 0x10000 + port)];
  return [...[0, 1, 2, 3].map((index) => note(NOTE_DIAL6, index * 2 ** 32 + view.readUInt32BE(4 * index))), note(NOTE_DIAL_PORT, port)];
}

/** Puts a dial together as its notes come: `take(type, payload)` returns it once complete. */
export class DialReader {
  private readonly v6 = new GuestAddrReader();
  private pending: { family: 6; bytes: Uint8Array } | undefined;

  take(type: number, payload: number): { family: 4 | 6; bytes: Uint8Array; port: number } | undefined {
    if (type === NOTE_DIAL4) {
      const bytes = new Uint8Array(16);
      Buffer.from(bytes.buffer).writeUInt32BE(Math.floor(payload / 0x10000) % 2 ** 32, 0);
      return { family: 4, bytes, port: payload % 0x10000 };
    }
    if (type === NOTE_DIAL6) {
      const got = this.v6.take(NOTE_GUEST6, payload);
      if (got) this.pending = { family: 6, bytes: got.bytes };
      return undefined;
    }
    if (type === NOTE_DIAL_PORT && this.pending && payload < 0x10000) {
      const done = { ...this.pending, port: payload };
      this.pending = undefined;
      return done;
    }
    return undefined;
  }
}
