// A plain ES-module client using the named import from node:net: sends
// `total` random bytes to an echo server and checks what comes back.
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const port = Number(process.argv[2]);
const total = Number(process.argv[3]);

const sock = connect(port, '127.0.0.1');
const sent = createHash('sha256');
const got = createHash('sha256');
let received = 0;
sock.on('connect', async () => {
  out({ event: 'connect', transport: sock.transport ?? null });
  let n = 0;
  while (n < total) {
    const c = randomBytes(Math.min(65536, total - n));
    sent.update(c);
    n += c.length;
    if (!sock.write(c)) await new Promise((r) => sock.once('drain', r));
  }
  sock.end();
});
sock.on('data', (d) => {
  got.update(d);
  received += d.length;
});
sock.on('end', () => out({ event: 'done', sent: total, received, sha256: sent.digest('hex'), echoSha256: got.digest('hex') }));
sock.on('error', (e) => {
  out({ event: 'error', message: String(e.stack || e) });
  process.exitCode = 1;
});
