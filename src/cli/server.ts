/** `zivm server`: the domain daemon in the foreground. */
import path from 'node:path';
import {
  DEFAULT_MAX_LISTENERS,
  DEFAULT_MAX_PEERS,
  DEFAULT_VECTORS,
  autoIdleMs,
  parseSize,
  regionSize,
  ringSize as ringSizeFromEnv,
  socketPath,
} from '../config';
import { UsageError } from '../errors';
import { computeGeometry } from '../shm/layout';
import { type Addr, formatAddr, isLoopback, isUnspecified, parseAddr } from '../shm/addrs';
import { runDaemon } from '../server/run';
import { Command, intOption, noMore, parse } from './command';
import { bytesText } from './format';

/** A size option (512K, 256M...), else `fallback()` (which reads the environment). */
function sizeOption(value: string | boolean | undefined, name: string, fallback: () => number): number {
  try {
    if (value === undefined || value === '') return fallback();
    return parseSize(String(value));
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

const SERVER_USAGE = `usage: zivm server [options]

Runs the domain daemon: owns the shared region and hands it to peers (processes,
or QEMU guests with -device ivshmem-doorbell) over an ivshmem-server socket.

options:
  --socket PATH        socket to serve (default: ZIVM_SOCKET, else zivm.sock in
                       ZIVM_DIR, $XDG_RUNTIME_DIR/zivm or <tmpdir>/zivm-<uid>)
  --size SIZE          region size, e.g. 256M, 32G (default ZIVM_SIZE, else 32G;
                       256M with --guests or --guest-addr: the BAR QEMU maps)
  --ring SIZE          bytes per direction of each connection, a power of two
                       (default ZIVM_RING, else 1M; 512K with --guests or
                       --guest-addr)
  --vectors N          interrupt vectors per peer (default 1)
  --max-peers N        peer ids 0..N-1 (default 1024)
  --max-listeners N    listening sockets in the whole domain (default 1024)
  --idle-exit SECONDS  exit this long after the last peer left (default: never;
                       with --auto: ZIVM_IDLE_MS milliseconds, or 1 s, counted
                       from start-up too)
  --allow-uid UID,...  also admit processes (or QEMU) of these uids; by default
                       only the daemon's own uid is admitted, root included
                       (the socket's file mode must let them in too)
  --guests             admit QEMU guests (-device ivshmem-doorbell on this socket);
                       without it (and without --guest-addr) the domain is host
                       processes only: anything that does not say it is one
                       gets nothing
  --guest-addr A,...   the addresses of this domain's guests (their eth0, as the
                       operator set them up): host processes reach guests, and
                       take connections from them, over shared memory at these
                       addresses only; none declared: TCP between host and guests
  --pods               containers and pods of every uid may reach the socket (mode
                       0666; run as root): each network namespace and uid gets a
                       domain of its own; processes of this network namespace
                       are admitted as without it
  --auto               started on demand: exit quietly if a daemon already serves
  --verbose            one line per peer join/leave on stderr
`;

export const serverCommand: Command = {
  summary: 'run the domain daemon',
  usage: SERVER_USAGE,
  async run(args) {
    const { values: opts, positionals } = parse(args, {
      socket: { type: 'string' },
      size: { type: 'string' },
      ring: { type: 'string' },
      vectors: { type: 'string' },
      'max-peers': { type: 'string' },
      'max-listeners': { type: 'string' },
      'idle-exit': { type: 'string' },
      'allow-uid': { type: 'string', multiple: true },
      'guest-addr': { type: 'string', multiple: true },
      guests: { type: 'boolean' },
      pods: { type: 'boolean' },
      auto: { type: 'boolean' },
      verbose: { type: 'boolean' },
    });
    if (opts.help) {
      process.stdout.write(SERVER_USAGE);
      return 0;
    }
    noMore(positionals);
    const env = process.env;
    const auto = !!opts.auto;
    const sock = typeof opts.socket === 'string' ? opts.socket : socketPath(env);
    if (!sock) throw new UsageError('--socket needs a path');
    const guests = !!opts.guests || ((opts['guest-addr'] as string[] | undefined) ?? []).length > 0;
    const size = sizeOption(opts.size, 'size', () => regionSize(env, guests));
    const ringSize = sizeOption(opts.ring, 'ring', () => ringSizeFromEnv(env, guests));
    const vectors = intOption(opts.vectors, 'vectors', 1, 1024, DEFAULT_VECTORS);
    const maxPeers = intOption(opts['max-peers'], 'max-peers', 2, 4096, DEFAULT_MAX_PEERS);
    const maxListeners = intOption(opts['max-listeners'], 'max-listeners', 1, 65536, DEFAULT_MAX_LISTENERS);
    let idleMs = auto ? autoIdleMs(env) : Infinity;
    if (opts['idle-exit'] !== undefined) {
      const seconds = Number(opts['idle-exit']);
      if (typeof opts['idle-exit'] !== 'string' || opts['idle-exit'].trim() === '' || !Number.isFinite(seconds) || seconds < 0)
        throw new UsageError('--idle-exit must be a number of seconds >= 0');
      idleMs = seconds * 1000;
    }
    const allowUids: number[] = [];
    for (const list of (opts['allow-uid'] as string[] | undefined) ?? []) {
      for (const item of String(list).split(',')) {
        const uid = Number(item.trim());
        if (item.trim() === '' || !Number.isInteger(uid) || uid < 0 || uid > 0xfffffffe) throw new UsageError(`--allow-uid: not a uid: ${item}`);
        allowUids.push(uid);
      }
    }
    const guestAddrs: Addr[] = [];
    for (const list of (opts['guest-addr'] as string[] | undefined) ?? []) {
      for (const item of String(list).split(',')) {
        const addr = parseAddr(item.trim());
        if (!addr || isLoopback(addr) || isUnspecified(addr)) throw new UsageError(`--guest-addr: not a guest address: ${item}`);
        guestAddrs.push(addr);
      }
    }
    if (opts.pods && (opts.guests || guestAddrs.length > 0))
      throw new UsageError('--pods is for a daemon of host processes, not with --guests or --guest-addr');
    let geo;
    try {
      geo = computeGeometry({ size, ringSize, vectors, maxPeers, maxListeners });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const verbose = !!opts.verbose && !auto;
    return runDaemon(
      {
        socketPath: sock,
        size,
        ringSize,
        vectors,
        maxPeers,
        maxListeners,
        idleMs,
        auto,
        verbose,
        allowUids,
        guestAddrs,
        guests: !!opts.guests,
        pods: !!opts.pods,
      },
      (daemon) => {
        if (!auto) {
          process.stdout.write(
            `zivm server listening on ${daemon.socketPath} (size ${bytesText(geo.size)}, ${geo.nslots} slots, ring ${bytesText(geo.ringSize)}, ` +
              `${geo.vectors} vector${geo.vectors === 1 ? '' : 's'})\n` +
              (daemon.guests
                ? `QEMU, for each guest of this domain: -chardev socket,path=${daemon.socketPath},id=zivm ` +
                  `-device ivshmem-doorbell,chardev=zivm,vectors=${geo.vectors}\n` +
                  (guestAddrs.length > 0
                    ? `guest addresses: ${guestAddrs.map(formatAddr).join(', ')}\n`
                    : 'no guest addresses declared (--guest-addr): host processes and guests talk over TCP\n') +
                  `host processes whose daemon socket is in ${path.dirname(daemon.socketPath)} (ZIVM_DIR) join this domain too, ` +
                  'for connections with its guests only\n'
                : 'host processes only (no QEMU guests: see --guests)\n') +
              (opts.pods ? 'containers and pods of every uid may reach the socket (--pods): a domain per network namespace and uid\n' : ''),
          );
        }
      },
    );
  },
};
