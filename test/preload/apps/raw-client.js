// A plain net client: sends `total` random bytes, then end()s its side and
// reads what the server still sends, pausing now and then, until the server ends.
'use strict';
const net = require('net');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const port = Number(process.argv[2]);
const total = Number(process.argv[3] || 64 * 1048576);

const sock = net.connect({ port, host: '127.0.0.1' });
const r = crypto.createHash('sha256');
let received = 0,
  endedOwnSide = false,
  dataBeforeEnd = 0,
  pauses = 0,
  dataWhilePaused = 0,
  paused = false,
  nextPause = 1048576;

sock.on('connect', async () => {
  out({ event: 'connect', transport: sock.transport ?? null });
  const h = crypto.createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const chunk = crypto.randomBytes(Math.min(65536, total - sent));
    h.update(chunk);
    sent += chunk.length;
    if (!sock.write(chunk)) await new Promise((res) => sock.once('drain', res));
  }
  sock.end();
  endedOwnSide = true;
  out({ event: 'sent', bytes: sent, sha256: h.digest('hex') });
});
sock.on('data', (d) => {
  if (!endedOwnSide) dataBeforeEnd += d.length;
  if (paused) dataWhilePaused++;
  r.update(d);
  received += d.length;
  if (received >= nextPause) {
    nextPause += 1048576;
    pauses++;
    paused = true;
    sock.pause();
    setTimeout(() => {
      paused = false;
      sock.resume();
    }, 5);
  }
});
sock.on('end', () => {
  out({ event: 'received', bytes: received, sha256: r.digest('hex'), dataBeforeEnd, pauses, dataWhilePaused });
});
sock.on('error', (e) => {
  out({ event: 'error', message: String(e.stack || e) });
  process.exitCode = 1;
});
sock.on('close', (hadError) => out({ event: 'close', hadError }));
