// A plain node:http2 server over cleartext (h2c), core API. GET /bytes/<n>:
// n random bytes, their sha256 in x-sha256. POST /echo: the body streamed
// back. GET /forever: 16 KiB chunks until the client resets the stream.
// GET /cut/<n>: announces n bytes, sends a quarter, then closes the stream.
// GET /hold: never answers. GET /goaway: answers, then sends GOAWAY and
// closes the session.
// Reports connections (with their transport), sessions and the end of the
// streams that did not finish normally. Prints JSON lines.
'use strict';
const http2 = require('http2');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const { HTTP2_HEADER_PATH: PATH, HTTP2_HEADER_METHOD: METHOD } = http2.constants;

const server = http2.createServer();
server.on('connection', (s) => out({ event: 'connection', transport: s.transport ?? null }));
server.on('session', (session) => {
  // session.socket is a proxy: what it says of the transport, and what the stream's session says
  out({ event: 'session', transport: session.socket.transport ?? null });
  session.on('close', () => out({ event: 'session-closed' }));
  session.on('error', (e) => out({ event: 'session-error', code: e.code }));
});
server.on('stream', (stream, headers) => {
  const path = headers[PATH];
  const method = headers[METHOD];
  stream.on('error', (e) => out({ event: 'stream-error', path, code: e.code, message: e.message }));
  let m;
  if (method === 'GET' && (m = /^\/bytes\/(\d+)$/.exec(path))) {
    const body = crypto.randomBytes(Number(m[1]));
    stream.respond({ ':status': 200, 'content-length': body.length, 'x-sha256': sha(body), 'x-transport': String(stream.session.socket.transport ?? null) });
    stream.end(body);
  } else if (method === 'POST' && path === '/echo') {
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  } else if (path === '/forever') {
    stream.respond({ ':status': 200 });
    let sent = 0;
    const chunk = Buffer.alloc(16384, 7);
    const pump = () => {
      while (!stream.destroyed && !stream.closed) {
        sent += chunk.length;
        if (!stream.write(chunk)) return void stream.once('drain', pump);
      }
    };
    stream.on('close', () => out({ event: 'stream-closed', path, rstCode: stream.rstCode, sent }));
    pump();
  } else if ((m = /^\/cut\/(\d+)$/.exec(path))) {
    const n = Number(m[1]);
    stream.respond({ ':status': 200, 'content-length': n });
    stream.write(Buffer.alloc(n >> 2, 1), () => stream.close());
    stream.on('close', () => out({ event: 'stream-closed', path, rstCode: stream.rstCode }));
  } else if (path === '/hold') {
    stream.on('close', () => out({ event: 'stream-closed', path, rstCode: stream.rstCode }));
  } else if (path === '/goaway') {
    const session = stream.session;
    stream.respond({ ':status': 200 });
    stream.end('bye', () => {
      session.goaway();
      session.close();
    });
  } else {
    stream.respond({ ':status': 404 });
    stream.end();
  }
});
server.listen(0, () => out({ event: 'listening', port: server.address().port }));
