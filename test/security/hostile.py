#!/usr/bin/env python3
"""A hostile member of a zivm domain, written only from QEMU's ivshmem-server
protocol (docs/specs/ivshmem-spec.rst) and the region layout that zivm
documents (src/shm/layout.ts): it shares no code with zivm. It attaches to the
daemon's socket exactly as QEMU's ivshmem-doorbell device does, maps the
region, and then does what it is told, one JSON command per line on stdin,
one JSON answer per line on stdout:

  {"op": "info"}                          its id, the region's size, the header words, the peers it can ring
  {"op": "r32", "off": N}                 the 32-bit word at byte offset N
  {"op": "w32", "off": N, "val": V}       writes V there
  {"op": "fill", "off": N, "len": L, "byte": B}
  {"op": "read", "off": N, "len": L}      bytes, hex
  {"op": "random", "seed": S, "count": C, "from": A, "to": B}
                                          C random 32-bit words at random aligned offsets in [A, B)
  {"op": "ring", "peer": P, "vector": V}  rings that peer's doorbell
  {"op": "news"}                          reads the daemon's news (peers that joined or left)
  {"op": "listeners"}                     the active listener entries
  {"op": "request", "port": P, "corrupt": bool, "data": text, "as": "owner"?}
                                          writes a connection request to the owner of the listener on
                                          port P into a free slot (with rings that make no sense, if
                                          corrupt; with `data` already in it, if given), sets its bit and
                                          rings the owner; "as": "owner" writes the request in the
                                          name of the listener's owner itself
  {"op": "listen", "port": P, "node": N, "addr": [a, b, c, d]}
                                          writes a listener entry of its own for addr:P on node N (the
                                          network namespace's inode, as a host process would write it)
  {"op": "publish", "addr": [a, b, c, d], "kind": K}
                                          publishes addr as its own (peer entry address words), kind K
  {"op": "owner", "port": P, "owner": ID}  rewrites the owner of the listener entry on port P
  {"op": "slots", "server": S}            the slots whose server is peer S: slot, state word, flags
  {"op": "steal", "slot": N}              marks slot N free under its owners (the next generation)
  {"op": "head", "slot": N, "low": L, "high": H, "peer": P}
                                          writes the head (the producer's position) of slot N's
                                          client-to-server ring as two 32-bit halves, and rings peer P
  {"op": "peerword", "peer": P, "word": W, "val": V}
                                          writes word W of peer P's entry
  {"op": "find", "hex": H}                 how many times the bytes H occur anywhere in the region
  {"op": "quit"}

In a QEMU guest, `pci` instead of the socket path attaches to the guest's
ivshmem-doorbell device itself, as root in the guest can (see Device).

With `--hello` after the socket path it says what a host process running zivm
says first (HELLO: 'ZIVM' and version 1 as one 64-bit value), which makes it a
process of the daemon's own user gone wrong rather than a guest.

`broker:UID:A.B.C.D:PORT` instead of the socket path dials as a process of
another user would (zivm's notes on the ivshmem stream, src/shm/notes.ts): it
asks the broker of user UID (the abstract socket name `zivm-broker.UID`) for
a pair domain with whoever listens on A.B.C.D:PORT, and attaches to the pair
domain's socket it is handed. "request" then takes "src" and "dst" (4 bytes
each): the addresses it claims to come from and to dial (127.0.0.1 by default).
"""
import json
import mmap
import os
import random
import select
import socket
import struct
import sys


def recv_msg(sock, timeout):
    """One protocol message: (int64 value, fd or -1), or None on timeout, or raises EOFError."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, fds, _flags, _addr = socket.recv_fds(sock, 8, 1)
    if len(data) == 0:
        raise EOFError('daemon closed the connection')
    while len(data) < 8:
        more, more_fds, _f, _a = socket.recv_fds(sock, 8 - len(data), 1)
        if not more:
            raise EOFError('daemon closed the connection mid-message')
        data += more
        fds += more_fds
    (value,) = struct.unpack('<q', data)
    return value, (fds[0] if fds else -1)


# The region layout (src/shm/layout.ts), as an attacker reads it.
H_VECTORS, H_MAX_PEERS, H_MAX_LISTENERS, H_NSLOTS, H_RING_SIZE, H_RINGS_OFF = 5, 6, 7, 8, 9, 10
H_PEERS_OFF, H_LISTENERS_OFF, H_PENDING_OFF, H_PENDING_STRIDE, H_SLOTS_OFF = 14, 15, 16, 17, 18
PEER_SIZE, LISTENER_SIZE = 128, 64
P_GEN = 1
L_STATE, L_OWNER, L_OWNER_GEN, L_PORT, L_FAMILY = 0, 1, 2, 3, 4
S_STATE, S_CLIENT, S_CLIENT_GEN, S_SERVER, S_SERVER_GEN, S_LISTENER, S_LISTENER_STATE, S_FAMILY = 0, 1, 2, 3, 4, 5, 6, 7
S_CLIENT_ADDR, S_CLIENT_PORT, S_SERVER_ADDR, S_SERVER_PORT, S_CLIENT_FLAGS, S_SERVER_FLAGS = 8, 12, 13, 17, 32, 48
RING_C2S_HDR, SLOT_SIZE = 256, 1024
LST_ACTIVE, SLOT_FREE, SLOT_CONNECTING = 2, 0, 2


class Device:
    """Inside a QEMU guest, as root: the ivshmem-doorbell PCI device itself
    (1af4:1110, the first one found), through sysfs: BAR2 is the region, BAR0's
    IVPosition (offset 8) our peer id and its Doorbell register (offset 12)
    rings any peer's vector. No driver, no agent: what root in a guest holds."""

    def __init__(self):
        base = '/sys/bus/pci/devices'
        found = [d for d in sorted(os.listdir(base))
                 if open(os.path.join(base, d, 'vendor')).read().strip() == '0x1af4'
                 and open(os.path.join(base, d, 'device')).read().strip() == '0x1110']
        if not found:
            raise SystemExit('no ivshmem device (1af4:1110)')
        dev = os.path.join(base, found[0])
        with open(os.path.join(dev, 'config'), 'r+b', buffering=0) as cfg:
            cfg.seek(4)
            command = struct.unpack('<H', cfg.read(2))[0]
            cfg.seek(4)
            cfg.write(struct.pack('<H', command | 0x2))  # memory space on
        self.bar0_fd = os.open(os.path.join(dev, 'resource0'), os.O_RDWR | os.O_SYNC)
        self.bar0 = mmap.mmap(self.bar0_fd, 256, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.memfd = os.open(os.path.join(dev, 'resource2'), os.O_RDWR | os.O_SYNC)
        self.my_id = struct.unpack_from('<I', self.bar0, 8)[0]

    def ring(self, peer, vector):
        struct.pack_into('<I', self.bar0, 12, ((peer & 0xffff) << 16) | (vector & 0xffff))
        return True


def main():
    path = sys.argv[1]
    peers = {}
    device = None
    if path == 'pci':
        device = Device()
        my_id, memfd = device.my_id, device.memfd
        sock = None
    elif path.startswith('broker:'):
        _, uid, ip, port = path.split(':')
        broker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        broker.connect('\0zivm-broker.' + uid)
        dial = -(2**52 + 8 * 2**48 + struct.unpack('>I', socket.inet_aton(ip))[0] * 0x10000 + int(port))
        broker.sendall(struct.pack('<q', dial))
        answer = recv_msg(broker, 5)
        broker.close()
        if answer is None or answer[1] < 0:
            raise SystemExit('the broker gave no pair domain: %r' % (answer,))
        sock = socket.socket(fileno=answer[1])
        sock.setblocking(True)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    if sock is not None:
        if '--hello' in sys.argv[2:]:
            sock.sendall(struct.pack('<q', 0x5a49564d * 0x10000 + 1))
        version, _ = recv_msg(sock, 5)
        my_id, _ = recv_msg(sock, 5)
        mark, memfd = recv_msg(sock, 5)
        if version != 0 or mark != -1 or memfd < 0:
            raise SystemExit('unexpected handshake: %r %r %r' % (version, my_id, mark))
    size = os.fstat(memfd).st_size
    region = mmap.mmap(memfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def news(timeout):
        while sock is not None:
            msg = recv_msg(sock, timeout)
            if msg is None:
                return
            peer, fd = msg
            if fd >= 0:
                peers.setdefault(peer, []).append(fd)
            else:
                for old in peers.pop(peer, []):
                    os.close(old)
            timeout = 0

    news(0.5)

    def word(off):
        return struct.unpack_from('<i', region, off)[0]

    def out(obj):
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()

    def put(off, val):
        struct.pack_into('<i', region, off, ((val + 2**31) % 2**32) - 2**31)

    def hdr(k):
        return word(4 * k)

    def listeners():
        found = []
        for i in range(hdr(H_MAX_LISTENERS)):
            base = hdr(H_LISTENERS_OFF) + i * LISTENER_SIZE
            state = word(base)
            if state & 0xff == LST_ACTIVE:
                found.append({'index': i, 'state': state, 'owner': word(base + 4 * L_OWNER),
                              'ownerGen': word(base + 4 * L_OWNER_GEN), 'port': word(base + 4 * L_PORT),
                              'family': word(base + 4 * L_FAMILY)})
        return found

    def slot_base(n):
        return hdr(H_SLOTS_OFF) + n * SLOT_SIZE

    def data_base(n):
        return hdr(H_RINGS_OFF) + n * 2 * hdr(H_RING_SIZE)

    def ring(peer, vector=0):
        if device is not None:
            return device.ring(peer, vector)
        news(0)
        fds = peers.get(peer, [])
        if vector >= len(fds):
            return False
        os.write(fds[vector], struct.pack('<Q', 1))
        return True

    def request(cmd):
        lst = [entry for entry in listeners() if entry['port'] == cmd['port']]
        if not lst:
            raise ValueError('nobody listens on port %d' % cmd['port'])
        entry = lst[0]
        for n in range(hdr(H_NSLOTS)):
            base = slot_base(n)
            state = word(base)
            if state & 0xff != SLOT_FREE:
                continue
            gen = ((state >> 8) + 1) & 0xffffff
            region[base + 4:base + SLOT_SIZE] = bytes(SLOT_SIZE - 4)
            client = entry['owner'] if cmd.get('as') == 'owner' else my_id
            my_gen = word(hdr(H_PEERS_OFF) + client * PEER_SIZE + 4 * P_GEN)
            for field, val in ((S_CLIENT, client), (S_CLIENT_GEN, my_gen), (S_SERVER, entry['owner']),
                               (S_SERVER_GEN, entry['ownerGen']), (S_LISTENER, entry['index']),
                               (S_LISTENER_STATE, entry['state']), (S_FAMILY, 4),
                               (S_CLIENT_PORT, 40000 + n), (S_SERVER_PORT, cmd['port'])):
                put(base + 4 * field, val)
            region[base + 4 * S_CLIENT_ADDR:base + 4 * S_CLIENT_ADDR + 4] = bytes(cmd.get('src', [127, 0, 0, 1]))
            region[base + 4 * S_SERVER_ADDR:base + 4 * S_SERVER_ADDR + 4] = bytes(cmd.get('dst', [127, 0, 0, 1]))
            ring_hdr = base + RING_C2S_HDR
            if cmd.get('corrupt'):
                put(ring_hdr + 4, 0x7fffffff)  # the head's high half: 2^62 bytes written
            elif cmd.get('data'):
                data = cmd['data'].encode('latin1')
                region[data_base(n):data_base(n) + len(data)] = data
                put(ring_hdr, len(data))
            put(base, (gen << 8) | SLOT_CONNECTING)
            owner = entry['owner']
            # The owner's pending area: a summary (one bit per bitmap word, 64-byte aligned), then the bitmap.
            area = hdr(H_PENDING_OFF) + owner * hdr(H_PENDING_STRIDE)
            bitmap_words = (hdr(H_NSLOTS) + 31) // 32
            summary_bytes = ((bitmap_words + 31) // 32 * 4 + 63) // 64 * 64
            bitmap = area + summary_bytes + 4 * (n >> 5)
            put(bitmap, word(bitmap) | (1 << (n & 31)))
            summary = area + 4 * ((n >> 5) >> 5)
            put(summary, word(summary) | (1 << ((n >> 5) & 31)))
            return {'slot': n, 'gen': gen, 'owner': owner, 'rung': ring(owner)}
        raise ValueError('no free slot')

    # Alive in its own entry, as any member announces itself (PEER.STATE = ALIVE).
    put(hdr(H_PEERS_OFF) + my_id * PEER_SIZE, 2)
    out({'event': 'joined', 'id': my_id, 'size': size})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd['op']
        try:
            if op == 'info':
                news(0)
                out({'ok': True, 'id': my_id, 'size': size, 'header': [word(4 * k) for k in range(21)],
                     'peers': {str(k): len(v) for k, v in peers.items()}})
            elif op == 'r32':
                out({'ok': True, 'val': word(cmd['off'])})
            elif op == 'w32':
                put(cmd['off'], cmd['val'])
                out({'ok': True})
            elif op == 'fill':
                region[cmd['off']:cmd['off'] + cmd['len']] = bytes([cmd['byte']]) * cmd['len']
                out({'ok': True})
            elif op == 'read':
                out({'ok': True, 'hex': region[cmd['off']:cmd['off'] + cmd['len']].hex()})
            elif op == 'random':
                rnd = random.Random(cmd['seed'])
                lo, hi = cmd['from'] // 4, cmd['to'] // 4
                for _ in range(cmd['count']):
                    struct.pack_into('<I', region, 4 * rnd.randrange(lo, hi), rnd.getrandbits(32))
                out({'ok': True})
            elif op == 'ring':
                vector = cmd.get('vector', 0)
                if ring(cmd['peer'], vector):
                    out({'ok': True})
                else:
                    out({'ok': False, 'error': 'no doorbell for peer %d vector %d' % (cmd['peer'], vector)})
            elif op == 'news':
                news(0.1)
                out({'ok': True, 'peers': {str(k): len(v) for k, v in peers.items()}})
            elif op == 'listeners':
                out({'ok': True, 'listeners': listeners()})
            elif op == 'request':
                out(dict({'ok': True}, **request(cmd)))
            elif op == 'listen':
                for i in range(hdr(H_MAX_LISTENERS)):
                    base = hdr(H_LISTENERS_OFF) + i * LISTENER_SIZE
                    state = word(base)
                    if state & 0xff != 0:
                        continue
                    my_gen = word(hdr(H_PEERS_OFF) + my_id * PEER_SIZE + 4 * P_GEN)
                    node = cmd['node']
                    for field, val in ((L_OWNER, my_id), (L_OWNER_GEN, my_gen), (L_PORT, cmd['port']), (L_FAMILY, 4),
                                       (5, 0), (6, node % 2**32), (7, node // 2**32)):
                        put(base + 4 * field, val)
                    region[base + 32:base + 48] = bytes(cmd['addr']) + bytes(12)
                    put(base, ((((state >> 8) + 1) & 0xffffff) << 8) | LST_ACTIVE)
                    out({'ok': True, 'index': i})
                    break
                else:
                    out({'ok': False, 'error': 'listener table full'})
            elif op == 'publish':
                entry = hdr(H_PEERS_OFF) + my_id * PEER_SIZE
                put(entry + 4 * 3, cmd.get('kind', 2))
                put(entry + 4 * 8, 1)  # one IPv4 address, no IPv6
                region[entry + 36:entry + 40] = bytes(cmd['addr'])
                out({'ok': True})
            elif op == 'owner':
                entry = [e for e in listeners() if e['port'] == cmd['port']][0]
                put(hdr(H_LISTENERS_OFF) + entry['index'] * LISTENER_SIZE + 4 * L_OWNER, cmd['owner'])
                out({'ok': True})
            elif op == 'slots':
                found = []
                for n in range(hdr(H_NSLOTS)):
                    base = slot_base(n)
                    if word(base) & 0xff != SLOT_FREE and word(base + 4 * S_SERVER) == cmd['server']:
                        found.append({'slot': n, 'state': word(base), 'client': word(base + 4 * S_CLIENT),
                                      'clientFlags': word(base + 4 * S_CLIENT_FLAGS),
                                      'serverFlags': word(base + 4 * S_SERVER_FLAGS)})
                out({'ok': True, 'slots': found})
            elif op == 'steal':
                base = slot_base(cmd['slot'])
                put(base, ((((word(base) >> 8) + 1) & 0xffffff) << 8) | SLOT_FREE)
                out({'ok': True})
            elif op == 'head':
                ring_hdr = slot_base(cmd['slot']) + RING_C2S_HDR
                put(ring_hdr, cmd['low'])
                put(ring_hdr + 4, cmd['high'])
                out({'ok': True, 'rung': ring(cmd['peer'])})
            elif op == 'find':
                pattern = bytes.fromhex(cmd['hex'])
                count, at = 0, region.find(pattern)
                while at >= 0:
                    count += 1
                    at = region.find(pattern, at + 1)
                out({'ok': True, 'count': count})
            elif op == 'peerword':
                put(hdr(H_PEERS_OFF) + cmd['peer'] * PEER_SIZE + 4 * cmd['word'], cmd['val'])
                out({'ok': True})
            elif op == 'quit':
                out({'ok': True})
                break
            else:
                out({'ok': False, 'error': 'unknown op ' + op})
        except Exception as err:  # an attacker's command gone wrong is reported, not fatal
            out({'ok': False, 'error': repr(err)})


if __name__ == '__main__':
    main()
