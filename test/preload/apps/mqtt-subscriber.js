// A plain mqtt.js subscriber: counts QoS 0 and QoS 1 messages, checks their
// sequence numbers arrive in order, and hashes their payloads in arrival order.
'use strict';
const mqtt = require('mqtt');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [port, n0, n1] = process.argv.slice(2).map(Number);
const want = { 0: n0, 1: n1 };
const got = { 0: 0, 1: 0 };
const hash = { 0: crypto.createHash('sha256'), 1: crypto.createHash('sha256') };
const disorder = [];

const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'sub-' + process.pid, reconnectPeriod: 0 });
client.on('connect', () => {
  out({ event: 'connect', transport: client.stream.transport ?? null });
  client.subscribe({ 'zivm/q0': { qos: 0 }, 'zivm/q1': { qos: 1 } }, (err, granted) => {
    if (err) {
      out({ event: 'error', message: String(err) });
      return;
    }
    out({ event: 'subscribed', granted: granted.map((g) => [g.topic, g.qos]) });
  });
});
client.on('message', (topic, payload, packet) => {
  const q = topic === 'zivm/q0' ? 0 : 1;
  const seq = payload.readUInt32BE(0);
  if (seq !== got[q] && disorder.length < 10) disorder.push({ qos: q, expected: got[q], got: seq });
  if (packet.qos !== q && disorder.length < 10) disorder.push({ qos: q, packetQos: packet.qos });
  got[q]++;
  hash[q].update(payload);
  if (got[0] === want[0] && got[1] === want[1]) {
    out({ event: 'done', got, disorder, sha256: { 0: hash[0].digest('hex'), 1: hash[1].digest('hex') } });
    client.end();
  }
});
client.on('error', (e) => {
  out({ event: 'error', message: String(e.stack || e) });
  process.exitCode = 1;
});
