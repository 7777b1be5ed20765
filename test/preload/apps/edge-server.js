// The server side of the HTTP edge cases (edge-client.js is the other side),
// one scenario per run: node's own servers doing what they do over TCP.
//   halfclose:   node:http; GET /bytes/<n>, POST /hash
//   serverclose: node:http closing the connection after each response,
//                with 'Connection: close' (GET /header) or res.end() then
//                req.socket.end() (GET /end)
//   connect:     an https server, and a net server as an HTTP CONNECT proxy
//                piping to it that destroys the client's socket once the
//                target has ended
//   h2flow:      node:http2 with an initial window of 18 bytes, answering
//                every stream
//   pausedbody:  node:http pausing a POST body it never reads, then answering
//   latewrite:   node:http answering one request with 'Connection: close'
//   poison:      a raw HTTP/1.1 server that answers each request, and 30 ms
//                after the first on a connection sends a response nobody
//                asked for
// Reports every connection it accepts with its transport, and what happened.
// Prints JSON lines.
'use strict';
const http = require('http');
const https = require('https');
const http2 = require('http2');
const net = require('net');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const scenario = process.argv[2];
const accepted = (server, name) => server.on('connection', (s) => out({ event: 'connection', server: name, transport: s.transport ?? null }));

function bytes(req, res) {
  const m = /^\/bytes\/(\d+)$/.exec(req.url);
  if (!m) return false;
  const body = crypto.randomBytes(Number(m[1]));
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, 'x-sha256': sha(body) });
  res.end(body);
  return true;
}

const scenarios = {
  halfclose() {
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && bytes(req, res)) return;
      const h = crypto.createHash('sha256');
      let len = 0;
      req.on('data', (d) => {
        h.update(d);
        len += d.length;
      });
      req.on('end', () => res.end(JSON.stringify({ len, sha256: h.digest('hex') })));
    });
    accepted(server, 'http');
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },

  serverclose() {
    let n = 0;
    const server = http.createServer((req, res) => {
      const body = Buffer.from(`response ${n++}`);
      if (req.url === '/header') {
        res.setHeader('Connection', 'close');
        res.end(body);
      } else {
        res.end(body);
        req.socket.end();
      }
    });
    accepted(server, 'http');
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },

  connect() {
    const dir = path.join(__dirname, '..', '..', 'fixtures');
    const target = https.createServer(
      { key: fs.readFileSync(path.join(dir, 'tls-key.pem')), cert: fs.readFileSync(path.join(dir, 'tls-cert.pem')) },
      (req, res) => {
        if (!bytes(req, res)) res.writeHead(404).end();
      },
    );
    accepted(target, 'https');
    const proxy = net.createServer((client) => {
      let head = Buffer.alloc(0);
      client.on('error', (e) => out({ event: 'proxy-error', side: 'client', code: e.code }));
      client.on('data', function onData(d) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        client.removeListener('data', onData);
        client.pause();
        const m = /^CONNECT ([^:\s]+):(\d+) HTTP\/1\.1\r\n/.exec(head.toString('latin1'));
        if (!m) return void client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
        const upstream = net.connect(Number(m[2]), m[1], () => {
          out({ event: 'upstream', transport: upstream.transport ?? null });
          client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          const rest = head.subarray(end + 4);
          if (rest.length) upstream.write(rest);
          upstream.pipe(client);
          client.pipe(upstream);
          client.resume();
        });
        upstream.on('error', (e) => out({ event: 'proxy-error', side: 'upstream', code: e.code }));
        upstream.on('end', () => client.destroy());
        client.on('close', () => upstream.destroy());
      });
    });
    accepted(proxy, 'proxy');
    let ready = 0;
    const listening = () => {
      if (++ready === 2) out({ event: 'listening', port: proxy.address().port, target: target.address().port });
    };
    target.listen(0, '127.0.0.1', listening);
    proxy.listen(0, '127.0.0.1', listening);
  },

  poison() {
    let n = 0;
    const server = net.createServer((s) => {
      let head = '';
      let first = true;
      s.on('error', () => {});
      s.on('data', (d) => {
        head += d.toString('latin1');
        let end;
        while ((end = head.indexOf('\r\n\r\n')) >= 0) {
          head = head.slice(end + 4);
          const body = `response ${n++}`;
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n${body}`);
          if (first) setTimeout(() => s.writable && s.write('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned'), 30);
          first = false;
        }
      });
    });
    accepted(server, 'raw');
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },

  h2flow() {
    const server = http2.createServer({ settings: { initialWindowSize: 18 } });
    accepted(server, 'http2');
    server.on('session', (session) => {
      session.on('error', (e) => out({ event: 'session-error', code: e.code }));
      session.on('close', () => out({ event: 'session-closed' }));
    });
    server.on('stream', (stream) => {
      let respond = 'ok';
      try {
        stream.respond({ ':status': 200 });
        stream.end('ok');
      } catch (e) {
        respond = e.code || e.message;
      }
      out({ event: 'stream', respond });
      stream.on('error', (e) => out({ event: 'stream-error', code: e.code, message: e.message }));
      stream.on('close', () => out({ event: 'stream-closed', rstCode: stream.rstCode }));
    });
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },

  pausedbody() {
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && bytes(req, res)) return;
      req.pause();
      res.end('done');
    });
    accepted(server, 'http');
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },

  latewrite() {
    const server = http.createServer((req, res) => {
      res.setHeader('Connection', 'close');
      res.end('only one');
    });
    accepted(server, 'http');
    server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
  },
};

process.on('uncaughtException', (e) => {
  out({ event: 'uncaught', code: e.code, message: e.message });
});
scenarios[scenario]();
