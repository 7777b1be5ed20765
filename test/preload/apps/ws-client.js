// A plain ws client: sends thousands of text and binary messages of random
// sizes (1 B..64 KiB), checks every echo in order, pings, and closes with 4001.
'use strict';
const WebSocket = require('ws');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [port, n] = process.argv.slice(2).map(Number);
const COUNT = n || 3000;

function randomSize() {
  // log-uniform over 1..65536, with both ends included now and then
  const r = Math.random();
  if (r < 0.01) return 1;
  if (r < 0.02) return 65536;
  return Math.max(1, Math.min(65536, Math.floor(Math.exp(Math.random() * Math.log(65537)))));
}
const MB = ['é', '€', '😀', 'ß', 'ж'];
function randomText(bytes) {
  let s = crypto
    .randomBytes(Math.ceil(bytes * 0.75) + 3)
    .toString('base64')
    .slice(0, bytes);
  // swap some ASCII for multi-byte characters while staying within `bytes`
  if (bytes >= 8) s = s.slice(0, bytes - 7) + MB[bytes % MB.length] + s.slice(bytes - 7 + Buffer.byteLength(MB[bytes % MB.length]));
  return s;
}

const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
const sent = [];
const hash = crypto.createHash('sha256');
const echoHash = crypto.createHash('sha256');
let received = 0,
  mismatch = null,
  sentBytes = 0,
  serverPing = null;

ws.on('ping', (p) => {
  serverPing = p.toString();
});
ws.on('open', () => {
  out({ event: 'open', transport: ws._socket.transport ?? null });
  for (let i = 0; i < COUNT; i++) {
    const size = randomSize();
    const binary = Math.random() < 0.5;
    const payload = binary ? crypto.randomBytes(size) : randomText(size);
    const buf = binary ? payload : Buffer.from(payload, 'utf8');
    const hdr = Buffer.alloc(5);
    hdr[0] = binary ? 1 : 0;
    hdr.writeUInt32BE(buf.length, 1);
    hash.update(hdr).update(buf);
    sentBytes += buf.length;
    sent.push({ binary, buf });
    ws.send(payload, { binary });
  }
});
ws.on('message', (data, isBinary) => {
  const exp = sent[received];
  const hdr = Buffer.alloc(5);
  hdr[0] = isBinary ? 1 : 0;
  hdr.writeUInt32BE(data.length, 1);
  echoHash.update(hdr).update(data);
  if (!mismatch && (!exp || exp.binary !== isBinary || !exp.buf.equals(data))) {
    mismatch = { index: received, expectedLength: exp && exp.buf.length, gotLength: data.length, expectedBinary: exp && exp.binary, gotBinary: isBinary };
  }
  sent[received] = null;
  received++;
  if (received === COUNT) {
    const t = setTimeout(() => {
      out({ event: 'error', message: 'no pong' });
      ws.terminate();
    }, 5000);
    ws.once('pong', (p) => {
      clearTimeout(t);
      out({ event: 'pong', data: p.toString() });
      ws.close(4001, 'client says bye');
    });
    ws.ping('from-client');
  }
});
ws.on('close', (code, reason) => {
  out({
    event: 'close',
    code,
    reason: reason.toString(),
    sent: COUNT,
    received,
    sentBytes,
    mismatch,
    serverPing,
    sha256: hash.digest('hex'),
    echoSha256: echoHash.digest('hex'),
  });
});
ws.on('error', (e) => {
  out({ event: 'error', message: String(e.stack || e) });
  process.exitCode = 1;
});
