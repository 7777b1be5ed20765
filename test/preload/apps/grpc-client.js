// A plain @grpc/grpc-js client for grpc-server.js (blobs.proto), on one
// channel: unary calls, server, client and bidi streaming with payloads of
// up to 3 MiB checked by sha256, a deadline that expires, and a download the
// client cancels mid-stream. Records the transport of every connection it
// makes ('net.client.socket' and 'zivm:transport' diagnostics channels).
// The last line is {event:'done'}.
'use strict';
const path = require('path');
const crypto = require('crypto');
const dc = require('diagnostics_channel');
const { clientSockets } = require('./client-sockets');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const MiB = 1 << 20;
const port = Number(process.argv[2]);

const sockets = clientSockets();
const decisions = [];
dc.subscribe('zivm:transport', ({ transport, reason }) => decisions.push({ transport, reason }));

const def = loader.loadSync(path.join(__dirname, 'blobs.proto'), { keepCase: true, longs: Number, defaults: true });
const { Blobs } = grpc.loadPackageDefinition(def).zivm.test;
const client = new Blobs(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': 8 * MiB,
});

const results = [];
let volume = 0;
const check = (name, ok, extra = {}) => results.push({ name, ok: Boolean(ok), ...extra });

function unary(method, req, opts = {}) {
  return new Promise((resolve) => client[method](req, opts, (err, res) => resolve({ err, res })));
}

async function unaryCalls() {
  for (const size of [0, 1, 1024, 1.5 * MiB, 3 * MiB]) {
    const data = crypto.randomBytes(size);
    const { err, res } = await unary('Echo', { data, index: size });
    volume += 2 * size;
    check(`unary ${size} B`, !err && res.index === size && res.sha256 === sha(data) && sha(res.data) === sha(data), { err: err && err.message });
  }
}

function download(count, size) {
  return new Promise((resolve) => {
    const call = client.Download({ count, size });
    let n = 0,
      bad = 0,
      bytes = 0;
    call.on('data', (c) => {
      if (c.index !== n || c.data.length !== size || sha(c.data) !== c.sha256) bad++;
      n++;
      bytes += c.data.length;
    });
    call.on('error', (err) => resolve({ err, n, bad, bytes }));
    call.on('end', () => resolve({ n, bad, bytes }));
  });
}

async function serverStreaming() {
  for (const [count, size] of [
    [500, 100],
    [8, 1.25 * MiB],
  ]) {
    const r = await download(count, size);
    volume += r.bytes;
    check(`server streaming ${count} x ${size} B`, !r.err && r.n === count && r.bad === 0 && r.bytes === count * size, {
      err: r.err && r.err.message,
      n: r.n,
      bad: r.bad,
    });
  }
}

async function clientStreaming() {
  const sizes = [1, 100, 64 * 1024, 1.25 * MiB, 1.25 * MiB, 2 * MiB, 1.25 * MiB, 7, 1.25 * MiB];
  const h = crypto.createHash('sha256');
  let bytes = 0;
  const r = await new Promise((resolve) => {
    const call = client.Upload((err, res) => resolve({ err, res }));
    sizes.forEach((size, index) => {
      const data = crypto.randomBytes(size);
      h.update(data);
      bytes += size;
      call.write({ data, sha256: sha(data), index });
    });
    call.end();
  });
  volume += bytes;
  const want = { count: sizes.length, bytes, sha256: h.digest('hex'), bad: 0 };
  check('client streaming', !r.err && JSON.stringify(r.res) === JSON.stringify(want), { err: r.err && r.err.message, got: r.res, want });
}

async function bidi() {
  const N = 300;
  const sent = [];
  const r = await new Promise((resolve) => {
    const call = client.Chat();
    let n = 0,
      bad = 0;
    call.on('data', (c) => {
      const s = sent[n];
      if (!s || c.index !== n || c.sha256 !== s || sha(c.data) !== s) bad++;
      n++;
    });
    call.on('error', (err) => resolve({ err, n, bad }));
    call.on('end', () => resolve({ n, bad }));
    for (let i = 0; i < N; i++) {
      const size = i % 50 === 49 ? 1.5 * MiB : 1 + Math.floor(Math.random() * 64 * 1024);
      const data = crypto.randomBytes(size);
      sent.push(sha(data));
      volume += 2 * size;
      call.write({ data, sha256: sha(data), index: i });
    }
    call.end();
  });
  check(`bidi streaming ${N} messages`, !r.err && r.n === N && r.bad === 0, { err: r.err && r.err.message, n: r.n, bad: r.bad });
}

async function deadline() {
  const t0 = Date.now();
  const { err } = await unary('Stall', { delay_ms: 10000 }, { deadline: Date.now() + 300 });
  const ms = Date.now() - t0;
  check('deadline expires', err && err.code === grpc.status.DEADLINE_EXCEEDED && ms >= 250 && ms < 5000, { code: err && err.code, ms });
}

async function cancel() {
  const r = await new Promise((resolve) => {
    const call = client.Download({ count: 0, size: 64 * 1024 });
    let n = 0,
      bad = 0;
    call.on('data', (c) => {
      if (c.index !== n || sha(c.data) !== c.sha256) bad++;
      if (++n === 5) call.cancel();
    });
    call.on('error', (err) => resolve({ err, n, bad }));
    call.on('end', () => resolve({ n, bad }));
  });
  check('client cancels mid-stream', r.err && r.err.code === grpc.status.CANCELLED && r.n >= 5 && r.bad === 0, { code: r.err && r.err.code, n: r.n });
}

async function main() {
  await unaryCalls();
  await serverStreaming();
  await clientStreaming();
  await bidi();
  await deadline();
  await cancel();
  // The channel is still usable on its connection afterwards.
  const data = crypto.randomBytes(4096);
  const { err, res } = await unary('Echo', { data, index: 1 });
  check('unary after the deadline and the cancellation', !err && res.sha256 === sha(data));
  client.close();
  out({ event: 'done', results, volume, sockets, decisions });
}
main().catch((e) => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  process.exitCode = 1;
});
