// A plain node:http client (keep-alive Agent) and the global fetch against
// http-server.js: GET and POST bodies of several sizes, each one's content
// checked by sha256. Prints JSON lines; the last is {event:'done'}.
'use strict';
const http = require('http');
const crypto = require('crypto');

const port = Number(process.argv[2]);
const sizes = (process.argv[3] || '0,1024,1048576,8388608').split(',').map(Number);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const sockets = new Set();
const transports = [];

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path, agent, headers: body ? { 'content-length': body.length, 'content-type': 'application/octet-stream' } : {} },
      (res) => {
        const chunks = [];
        res.on('data', (d) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('socket', (s) => {
      if (!sockets.has(s)) {
        sockets.add(s);
        const note = () => transports.push(s.transport ?? null);
        if (s.connecting) s.once('connect', note);
        else note();
      }
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function viaFetch(method, path, body) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method, body });
  return { status: r.status, headers: Object.fromEntries(r.headers), body: Buffer.from(await r.arrayBuffer()) };
}

async function main() {
  const results = [];
  for (const [via, call] of [
    ['http', request],
    ['fetch', viaFetch],
  ]) {
    for (const n of sizes) {
      const g = await call('GET', `/bytes/${n}`);
      results.push({ via, method: 'GET', size: n, status: g.status, ok: g.status === 200 && g.body.length === n && sha(g.body) === g.headers['x-sha256'] });
      const body = crypto.randomBytes(n);
      const e = await call('POST', '/echo', body);
      results.push({ via, method: 'POST', path: '/echo', size: n, status: e.status, ok: e.status === 200 && e.body.length === n && sha(e.body) === sha(body) });
      const h = await call('POST', '/hash', body);
      let j = {};
      try {
        j = JSON.parse(h.body.toString());
      } catch {
        /* not JSON: `ok` below is false */
      }
      results.push({ via, method: 'POST', path: '/hash', size: n, status: h.status, ok: h.status === 200 && j.len === n && j.sha256 === sha(body) });
    }
  }
  out({ event: 'done', results, agentSockets: sockets.size, transports });
  agent.destroy();
}
main().catch((e) => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  process.exitCode = 1;
  agent.destroy();
});
