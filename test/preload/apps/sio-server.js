// A plain socket.io server (websocket transport only) on node:http. 'echo'
// acks its argument; 'bin' acks the length and sha256 of a binary payload;
// 'fetch' acks n random bytes with their sha256; 'seq' messages are checked
// for order and hashed, 'seq-done' acks the tally; 'send-me' emits n 'srv-seq'
// messages then 'srv-seq-done'; 'kick' disconnects the client from the
// server side. Reports connections with their transport, and disconnect
// reasons. Prints JSON lines.
'use strict';
const http = require('http');
const crypto = require('crypto');
const { Server } = require('socket.io');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

const httpServer = http.createServer();
httpServer.on('connection', (s) => out({ event: 'connection', transport: s.transport ?? null }));
const io = new Server(httpServer, { transports: ['websocket'], maxHttpBufferSize: 16 << 20 });

io.on('connection', (socket) => {
  out({ event: 'socket', name: socket.handshake.query.name, transport: socket.conn.transport.name });
  let next = 0,
    disorder = 0;
  const h = crypto.createHash('sha256');
  socket.on('echo', (v, ack) => ack(v));
  socket.on('bin', (buf, ack) => ack({ len: buf.length, sha256: sha(buf) }));
  socket.on('fetch', (n, ack) => {
    const data = crypto.randomBytes(n);
    ack({ data, sha256: sha(data) });
  });
  socket.on('seq', (i, payload) => {
    if (i !== next) disorder++;
    next = i + 1;
    h.update(payload);
  });
  socket.on('seq-done', (ack) => ack({ count: next, disorder, sha256: h.digest('hex') }));
  socket.on('send-me', (n) => {
    const all = crypto.createHash('sha256');
    for (let i = 0; i < n; i++) {
      const payload = `${i}:${crypto.randomBytes(1 + (i % 200)).toString('base64')}`;
      all.update(payload);
      socket.emit('srv-seq', i, payload);
    }
    socket.emit('srv-seq-done', n, all.digest('hex'));
  });
  socket.on('kick', () => socket.disconnect(true));
  socket.on('disconnect', (reason) => out({ event: 'disconnect', name: socket.handshake.query.name, reason }));
});

httpServer.listen(0, '127.0.0.1', () => out({ event: 'listening', port: httpServer.address().port }));
process.on('SIGTERM', () => io.close(() => process.exit(0)));
