// A plain mqtt.js publisher: n0 messages at QoS 0, then n1 at QoS 1, each a
// 4-byte sequence number and random bytes (up to 16 KiB), hashed in order.
'use strict';
const mqtt = require('mqtt');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [port, n0, n1] = process.argv.slice(2).map(Number);
const hash = { 0: crypto.createHash('sha256'), 1: crypto.createHash('sha256') };
let bytes = 0;

function payload(seq) {
  const b = crypto.randomBytes(4 + Math.floor(Math.random() * 16384));
  b.writeUInt32BE(seq, 0);
  bytes += b.length;
  return b;
}

const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'pub-' + process.pid, reconnectPeriod: 0 });
client.on('connect', async () => {
  out({ event: 'connect', transport: client.stream.transport ?? null });
  try {
    for (let i = 0; i < n0; i++) {
      const p = payload(i);
      hash[0].update(p);
      client.publish('zivm/q0', p, { qos: 0 });
    }
    const acks = [];
    for (let i = 0; i < n1; i++) {
      const p = payload(i);
      hash[1].update(p);
      acks.push(client.publishAsync('zivm/q1', p, { qos: 1 }));
    }
    await Promise.all(acks);
    out({ event: 'done', bytes, sha256: { 0: hash[0].digest('hex'), 1: hash[1].digest('hex') } });
    client.end();
  } catch (e) {
    out({ event: 'error', message: String(e.stack || e) });
    process.exitCode = 1;
    client.end(true);
  }
});
client.on('error', (e) => {
  out({ event: 'error', message: String(e.stack || e) });
  process.exitCode = 1;
});
