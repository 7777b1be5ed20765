// A plain @grpc/grpc-js server for blobs.proto. Reports every accepted
// connection (node's 'net.server.socket' diagnostics channel) with its
// transport, every call with its peer, and every call the client cancelled
// or let expire. Prints JSON lines.
'use strict';
const path = require('path');
const crypto = require('crypto');
const dc = require('diagnostics_channel');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

dc.subscribe('net.server.socket', ({ socket }) => {
  out({ event: 'connection', transport: socket.transport ?? null, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
});

const def = loader.loadSync(path.join(__dirname, 'blobs.proto'), { keepCase: true, longs: Number, defaults: true });
const { Blobs } = grpc.loadPackageDefinition(def).zivm.test;

// grpc-js emits 'cancelled' whenever a call's stream closes: it is a
// cancellation only if the server had not finished the call by then.
function seen(method, call) {
  const state = { finished: false };
  out({ event: 'call', method, peer: call.getPeer() });
  call.on('cancelled', () => {
    if (!state.finished) out({ event: 'cancelled', method });
  });
  return state;
}

const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 << 20 });
server.addService(Blobs.service, {
  Echo(call, cb) {
    seen('Echo', call).finished = true;
    const { data, index } = call.request;
    cb(null, { data, sha256: sha(data), index });
  },
  Download(call) {
    const state = seen('Download', call);
    const { count, size } = call.request;
    let i = 0;
    let stopped = false;
    call.on('cancelled', () => {
      if (state.finished) return;
      stopped = true;
      out({ event: 'stopped', method: 'Download', sent: i });
    });
    const pump = () => {
      while (!stopped && (count === 0 || i < count)) {
        const data = crypto.randomBytes(size);
        const more = call.write({ data, sha256: sha(data), index: i++ });
        if (!more) return void call.once('drain', pump);
      }
      if (!stopped) {
        state.finished = true;
        call.end();
      }
    };
    pump();
  },
  Upload(call, cb) {
    const state = seen('Upload', call);
    const h = crypto.createHash('sha256');
    let count = 0,
      bytes = 0,
      bad = 0;
    call.on('data', (c) => {
      if (sha(c.data) !== c.sha256 || c.index !== count) bad++;
      h.update(c.data);
      count++;
      bytes += c.data.length;
    });
    call.on('end', () => {
      state.finished = true;
      cb(null, { count, bytes, sha256: h.digest('hex'), bad });
    });
  },
  Chat(call) {
    const state = seen('Chat', call);
    call.on('data', (c) => call.write({ data: c.data, sha256: sha(c.data), index: c.index }));
    call.on('end', () => {
      state.finished = true;
      call.end();
    });
  },
  Stall(call, cb) {
    const state = seen('Stall', call);
    const t = setTimeout(() => {
      state.finished = true;
      cb(null, { data: Buffer.alloc(0), sha256: '', index: 0 });
    }, call.request.delay_ms);
    call.on('cancelled', () => clearTimeout(t));
  },
});

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    out({ event: 'error', message: String(err.stack || err) });
    process.exit(1);
  }
  out({ event: 'listening', port });
});
process.on('SIGTERM', () => {
  server.forceShutdown();
  process.exit(0);
});
