// A plain express app: GET /data answers a fixed 8 KiB text body; GET /json a small JSON.
'use strict';
const express = require('express');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const size = Number(process.argv[2] || 8192);
const body = Array.from({ length: size }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');

const app = express();
app.get('/data', (req, res) => {
  res.type('text/plain').send(body);
});
app.get('/json', (req, res) => res.json({ ok: true }));

const server = app.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
server.on('connection', (s) => out({ event: 'connection', transport: s.transport ?? null }));
