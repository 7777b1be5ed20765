// A plain net server (allowHalfOpen): hashes everything the client sends,
// pausing the socket now and then; once the client has ended its side, writes
// `back` random bytes and then ends its own.
'use strict';
const net = require('net');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const back = Number(process.argv[2] || 8 * 1048576);
const PAUSE_EVERY = 4 * 1048576;

const server = net.createServer({ allowHalfOpen: true }, (sock) => {
  out({ event: 'connection', transport: sock.transport ?? null, remote: sock.remoteAddress });
  const h = crypto.createHash('sha256');
  let received = 0,
    nextPause = PAUSE_EVERY,
    pauses = 0,
    dataWhilePaused = 0,
    paused = false;
  sock.on('data', (d) => {
    if (paused) dataWhilePaused++;
    h.update(d);
    received += d.length;
    if (received >= nextPause) {
      nextPause += PAUSE_EVERY;
      pauses++;
      paused = true;
      sock.pause();
      setTimeout(() => {
        paused = false;
        sock.resume();
      }, 15);
    }
  });
  sock.on('end', async () => {
    out({ event: 'received', bytes: received, sha256: h.digest('hex'), pauses, dataWhilePaused, writable: sock.writable });
    // The client's side is closed; ours is still open: send, then end.
    const s = crypto.createHash('sha256');
    let sent = 0;
    while (sent < back) {
      const chunk = crypto.randomBytes(Math.min(65536, back - sent));
      s.update(chunk);
      sent += chunk.length;
      if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
    }
    sock.end(() => out({ event: 'sent', bytes: sent, sha256: s.digest('hex') }));
  });
  sock.on('error', (e) => out({ event: 'error', message: String(e.stack || e) }));
  sock.on('close', (hadError) => {
    out({ event: 'close', hadError });
    server.close();
  });
});
server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
