// A plain node:http server. GET /bytes/<n>: n random bytes, their sha256 in
// x-sha256. POST /echo: the request body streamed back. POST /hash: the body's
// length and sha256 as JSON. Prints one JSON line per event on stdout.
'use strict';
const http = require('http');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
  if (req.method === 'GET' && m) {
    const body = crypto.randomBytes(Number(m[1]));
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': body.length,
      'x-sha256': crypto.createHash('sha256').update(body).digest('hex'),
    });
    res.end(body);
  } else if (req.method === 'POST' && url.pathname === '/echo') {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    req.pipe(res);
  } else if (req.method === 'POST' && url.pathname === '/hash') {
    const h = crypto.createHash('sha256');
    let len = 0;
    req.on('data', (d) => {
      h.update(d);
      len += d.length;
    });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ len, sha256: h.digest('hex') }));
    });
  } else if (url.pathname === '/quit') {
    res.end('bye');
    server.close();
    server.closeAllConnections();
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.on('connection', (s) => out({ event: 'connection', transport: s.transport ?? null }));
server.on('close', () => out({ event: 'closed' }));
server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
