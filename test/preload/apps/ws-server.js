// A plain ws WebSocketServer: echoes every message back with its type, keeps a
// running sha256 of what it received, pings the client once, and reports the
// close code and reason it sees.
'use strict';
const { WebSocketServer } = require('ws');
const crypto = require('crypto');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });

wss.on('listening', () => out({ event: 'listening', port: wss.address().port }));
wss.on('connection', (ws, req) => {
  out({ event: 'connection', transport: req.socket.transport ?? null });
  const hash = crypto.createHash('sha256');
  let count = 0,
    text = 0,
    binary = 0,
    bytes = 0,
    pongs = 0;
  ws.on('message', (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data);
    const len = Buffer.alloc(5);
    len[0] = isBinary ? 1 : 0;
    len.writeUInt32BE(buf.length, 1);
    hash.update(len).update(buf);
    count++;
    bytes += buf.length;
    if (isBinary) binary++;
    else text++;
    ws.send(isBinary ? buf : buf.toString('utf8'), { binary: isBinary });
  });
  ws.on('ping', (p) => out({ event: 'ping', data: p.toString() }));
  ws.on('pong', (p) => {
    pongs++;
    out({ event: 'pong', data: p.toString() });
  });
  ws.ping('from-server');
  ws.on('close', (code, reason) => {
    out({ event: 'close', code, reason: reason.toString(), count, text, binary, bytes, pongs, sha256: hash.digest('hex') });
    wss.close();
  });
});
