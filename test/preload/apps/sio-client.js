// A plain socket.io-client (websocket transport only) for sio-server.js: an
// event with an ack, binary payloads of up to 4 MiB both ways checked by
// sha256, thousands of messages in order each way, and the disconnect
// reasons of a client-side and a server-side disconnect. Records the
// transport of every connection ('net.client.socket'). The last line is
// {event:'done'}.
'use strict';
const crypto = require('crypto');
const { clientSockets } = require('./client-sockets');
const { io } = require('socket.io-client');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const port = Number(process.argv[2]);
const N = Number(process.argv[3]) || 2000;
const MiB = 1 << 20;

const sockets = clientSockets();

const results = [];
let volume = 0;
const check = (name, ok, extra = {}) => results.push({ name, ok: Boolean(ok), ...extra });

function connect(name) {
  const socket = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, query: { name } });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

function disconnected(socket) {
  return new Promise((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
}

async function main() {
  const a = await connect('a');
  check('websocket transport', a.io.engine.transport.name === 'websocket', { transport: a.io.engine.transport.name });

  const v = { text: 'héllo wörld €😀', n: 42, list: [1, 2, 3], nested: { ok: true, none: null } };
  const back = await a.timeout(10000).emitWithAck('echo', v);
  check('event with an ack', JSON.stringify(back) === JSON.stringify(v));

  for (const n of [1, 1024, MiB, 4 * MiB]) {
    const buf = crypto.randomBytes(n);
    const r = await a.timeout(20000).emitWithAck('bin', buf);
    check(`binary ${n} B to the server`, r.len === n && r.sha256 === sha(buf), r);
    const f = await a.timeout(20000).emitWithAck('fetch', n);
    check(`binary ${n} B from the server`, Buffer.isBuffer(f.data) && f.data.length === n && sha(f.data) === f.sha256);
    volume += 2 * n;
  }

  // Client to server, in order.
  const h = crypto.createHash('sha256');
  for (let i = 0; i < N; i++) {
    const payload = `${i}:${crypto.randomBytes(1 + (i % 200)).toString('base64')}`;
    h.update(payload);
    volume += payload.length;
    a.emit('seq', i, payload);
  }
  const tally = await a.timeout(20000).emitWithAck('seq-done');
  check(`${N} messages to the server in order`, tally.count === N && tally.disorder === 0 && tally.sha256 === h.digest('hex'), tally);

  // Server to client, in order.
  const got = await new Promise((resolve) => {
    let next = 0,
      disorder = 0;
    const mine = crypto.createHash('sha256');
    a.on('srv-seq', (i, payload) => {
      if (i !== next) disorder++;
      next = i + 1;
      mine.update(payload);
      volume += payload.length;
    });
    a.once('srv-seq-done', (n, digest) => resolve({ n, received: next, disorder, ok: digest === mine.digest('hex') }));
    a.emit('send-me', N);
  });
  check(`${N} messages from the server in order`, got.n === N && got.received === N && got.disorder === 0 && got.ok, got);

  // The client disconnects.
  const aGone = disconnected(a);
  a.disconnect();
  check('client-side disconnect reason', (await aGone) === 'io client disconnect');

  // The server disconnects.
  const b = await connect('b');
  const bGone = disconnected(b);
  b.emit('kick');
  check('server-side disconnect reason', (await bGone) === 'io server disconnect');

  out({ event: 'done', results, volume, sockets });
}
main().catch((e) => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  process.exitCode = 1;
});
