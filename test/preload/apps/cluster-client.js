// A plain node:http client for cluster-server.js: `count` GETs, `parallel` at
// a time, through an Agent with keepAlive false (a new connection for each
// request, 'Connection: close') or true (maxSockets = parallel). Checks each body by sha256 and
// tallies the responses per worker, the transport the worker saw per request,
// and the transport of every connection on this side ('net.client.socket').
// The last line is {event:'done'}.
'use strict';
const http = require('http');
const crypto = require('crypto');
const { clientSockets } = require('./client-sockets');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [port, count, parallel] = process.argv.slice(2, 5).map(Number);
const keepAlive = process.argv[5] === 'keepalive';

const sockets = clientSockets();

// Without keepAlive, maxSockets stays Infinity: an Agent with a finite one
// keeps connections alive for the requests queued behind them.
const agent = keepAlive ? new http.Agent({ keepAlive, maxSockets: parallel }) : new http.Agent({ keepAlive });
const perWorker = {};
const workerTransports = {};
const errors = [];
let ok = 0,
  bad = 0,
  bytes = 0;

function get() {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        if (!keepAlive && res.headers.connection !== 'close') errors.push(`connection: ${res.headers.connection}`);
        const body = Buffer.concat(chunks);
        const w = res.headers['x-worker'];
        const t = res.headers['x-transport'];
        perWorker[w] = (perWorker[w] || 0) + 1;
        workerTransports[t] = (workerTransports[t] || 0) + 1;
        bytes += body.length;
        if (res.statusCode === 200 && crypto.createHash('sha256').update(body).digest('hex') === res.headers['x-sha256']) ok++;
        else bad++;
        resolve();
      });
      res.on('error', (e) => {
        errors.push(e.code || e.message);
        resolve();
      });
    });
    req.on('error', (e) => {
      errors.push(e.code || e.message);
      resolve();
    });
  });
}

async function main() {
  let issued = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (issued < count) {
        issued++;
        await get();
      }
    }),
  );
  const ms = Date.now() - t0;
  agent.destroy();
  out({ event: 'done', keepAlive, count, ok, bad, errors, perWorker, workerTransports, sockets, bytes, ms });
}
main().catch((e) => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  process.exitCode = 1;
});
