// A plain node:cluster HTTP server: the primary forks two workers that listen
// on the port given (on 127.0.0.1); the scheduling policy is node's, from
// NODE_CLUSTER_SCHED_POLICY. Each response is `size` random bytes with their
// sha256, the worker's id and the transport of the connection in headers.
// The workers report every connection they accept. SIGTERM to the primary
// disconnects the workers and exits. Prints JSON lines (workers too).
'use strict';
const cluster = require('cluster');
const http = require('http');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const port = Number(process.argv[2]);
const size = Number(process.argv[3]) || 8192;
const WORKERS = 2;

if (cluster.isPrimary) {
  const policy = cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none';
  let listening = 0;
  let stopping = false;
  cluster.on('listening', (w, address) => {
    out({ event: 'worker-listening', worker: w.id, address: address.address, port: address.port });
    if (++listening === WORKERS) out({ event: 'listening', port, policy, workers: Object.keys(cluster.workers).map(Number) });
  });
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) out({ event: 'error', message: `worker ${w.id} exited (${code ?? signal}) while serving` });
  });
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  process.on('SIGTERM', () => {
    stopping = true;
    cluster.disconnect(() => process.exit(0));
  });
} else {
  const id = cluster.worker.id;
  const server = http.createServer((req, res) => {
    const body = crypto.randomBytes(size);
    res.writeHead(200, {
      'content-length': body.length,
      'x-sha256': crypto.createHash('sha256').update(body).digest('hex'),
      'x-worker': id,
      'x-transport': String(req.socket.transport ?? null),
    });
    res.end(body);
  });
  server.on('connection', (s) => out({ event: 'connection', worker: id, transport: s.transport ?? null }));
  server.listen(port, '127.0.0.1');
}
