// The client side of the HTTP edge cases (see edge-server.js), one scenario
// per run:
//   halfclose:   raw requests, each followed at once by end()
//   serverclose: 50 requests in a row on a keep-alive agent, per server path
//   connect:     10 times: an HTTP CONNECT tunnel through the proxy, then an
//                https GET over it
//   h2flow:      a raw HTTP/2 client sending 54 bytes of DATA into an 18-byte
//                window, and the frames it gets back
//   pausedbody:  POSTs the server never reads, each followed by a GET
//   latewrite:   a second request written after the server closed
//   poison:      5 times, on a fresh keep-alive agent: a GET, and 100 ms
//                later another (by then the server has sent a response nobody
//                asked for)
// Prints what it observed as {event:'outcome', outcome}, exceptions nobody
// caught, and the transport of each of its connections ('net.client.socket').
'use strict';
const http = require('http');
const https = require('https');
const net = require('net');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { clientSockets } = require('./client-sockets');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const [scenario, portArg, targetArg] = process.argv.slice(2);
const port = Number(portArg);

const sockets = clientSockets();
const uncaught = [];
process.on('uncaughtException', (e) => uncaught.push(`${e.code || ''} ${e.message}`.trim()));

/** A raw HTTP/1.1 exchange on a new connection; the client half-closes right after writing. */
function rawHalfClose(request) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    const events = [];
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => events.push('end'));
    s.on('error', (e) => events.push(`error ${e.code}`));
    s.on('close', (hadError) => {
      events.push(`close${hadError ? ' with error' : ''}`);
      const all = Buffer.concat(chunks);
      const sep = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, sep).toString('latin1').split('\r\n');
      const headers = Object.fromEntries(head.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status: head[0], connection: headers.connection, body: all.subarray(sep + 4), headers, events });
    });
    s.write(request);
    s.end();
  });
}

function get(agent, p, socketsSeen) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks), socket: req.socket }));
    });
    req.on('socket', (s) => socketsSeen.add(s));
    req.on('error', (e) => resolve({ error: e.code || e.message }));
  });
}

const scenarios = {
  async halfclose() {
    const g = await rawHalfClose(`GET /bytes/1048576 HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    const body = crypto.randomBytes(256 * 1024);
    const p = await rawHalfClose(Buffer.concat([Buffer.from(`POST /hash HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    let hash = {};
    try {
      hash = JSON.parse(p.body.toString());
    } catch {
      /* not JSON: the result below says the POST was not intact */
    }
    return {
      get: {
        status: g.status,
        connection: g.connection,
        length: g.body.length,
        intact: g.body.length === 1048576 && sha(g.body) === g.headers['x-sha256'],
        events: g.events,
      },
      post: { status: p.status, connection: p.connection, intact: hash.len === body.length && hash.sha256 === sha(body), events: p.events },
    };
  },

  async serverclose() {
    // Requests one after the other on a keep-alive agent (one socket): each sent as soon as the
    // previous response has ended, or 10 ms later (by when a FIN that followed it has come in).
    const outcome = {};
    for (const [p, pause] of [
      ['/header', 0],
      ['/end', 0],
      ['/end', 10],
    ]) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const seen = new Set();
      const errors = {};
      let ok = 0;
      for (let i = 0; i < 50; i++) {
        if (pause) await new Promise((resolve) => setTimeout(resolve, pause));
        const r = await get(agent, p, seen);
        if (r.error) errors[r.error] = (errors[r.error] || 0) + 1;
        else if (r.status === 200 && /^response \d+$/.test(r.body.toString())) ok++;
      }
      agent.destroy();
      outcome[`${p}${pause ? ` after ${pause} ms` : ''}`] = { ok, errors, connections: seen.size };
    }
    return outcome;
  },

  async connect() {
    const ca = fs.readFileSync(path.join(__dirname, '..', '..', 'fixtures', 'tls-cert.pem'));
    const runs = [];
    for (let i = 0; i < 10; i++) {
      runs.push(
        await new Promise((resolve) => {
          const r = { events: [] };
          const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: `localhost:${targetArg}` });
          req.on('error', (e) => {
            r.events.push(`connect error ${e.code}`);
            resolve(r);
          });
          req.on('connect', (res, socket, head) => {
            r.connect = res.statusCode;
            r.head = head.length;
            socket.on('close', () => r.events.push('tunnel close'));
            const get = https.get({ socket, host: 'localhost', servername: 'localhost', path: '/bytes/65536', ca, agent: false }, (resp) => {
              const chunks = [];
              resp.on('data', (d) => chunks.push(d));
              resp.on('end', () => {
                const body = Buffer.concat(chunks);
                r.status = resp.statusCode;
                r.intact = body.length === 65536 && sha(body) === resp.headers['x-sha256'];
                r.events.push('response end');
              });
            });
            get.on('error', (e) => r.events.push(`request error ${e.code}`));
            get.on('close', () => {
              r.events.push('request close');
              // Whatever the tunnel does after the response, give it a moment to show.
              setTimeout(() => resolve(r), 50);
            });
          });
          req.end();
        }),
      );
    }
    return { runs: runs.map((r) => ({ connect: r.connect, head: r.head, status: r.status, intact: r.intact, events: r.events })) };
  },

  async h2flow() {
    const frame = (type, flags, stream, payload = Buffer.alloc(0)) => {
      const h = Buffer.alloc(9);
      h.writeUIntBE(payload.length, 0, 3);
      h[3] = type;
      h[4] = flags;
      h.writeUInt32BE(stream, 5);
      return Buffer.concat([h, payload]);
    };
    const authority = Buffer.from(`localhost:${port}`);
    // HPACK: :method GET, :scheme http, :path / (indexed), :authority (literal, indexed name 1)
    const block = Buffer.concat([Buffer.from([0x82, 0x86, 0x84, 0x41, authority.length]), authority]);
    const all = Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frame(0x4, 0, 0), // SETTINGS
      frame(0x4, 0x1, 0), // SETTINGS ACK (of the server's, before it is even seen)
      frame(0x1, 0x4, 1, block), // HEADERS, END_HEADERS
      frame(0x0, 0, 1, Buffer.alloc(18, 'a')), // three DATA frames: 54 bytes into an 18-byte window
      frame(0x0, 0, 1, Buffer.alloc(18, 'b')),
      frame(0x0, 0, 1, Buffer.alloc(18, 'c')),
    ]);
    const NAMES = { 0: 'DATA', 1: 'HEADERS', 3: 'RST_STREAM', 4: 'SETTINGS', 6: 'PING', 7: 'GOAWAY', 8: 'WINDOW_UPDATE' };
    const CODES = { 0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 3: 'FLOW_CONTROL_ERROR', 5: 'STREAM_CLOSED' };
    return new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(all));
      let buf = Buffer.alloc(0);
      const frames = [];
      let done = false;
      let timer;
      const finish = (how) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        s.destroy();
        resolve({ frames, how });
      };
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 9) {
          const len = buf.readUIntBE(0, 3);
          if (buf.length < 9 + len) break;
          const type = buf[3],
            flags = buf[4],
            stream = buf.readUInt32BE(5) & 0x7fffffff;
          const payload = buf.subarray(9, 9 + len);
          buf = buf.subarray(9 + len);
          const f = { type: NAMES[type] || type, stream };
          if (type === 4) f.ack = Boolean(flags & 1);
          if (type === 3) f.code = CODES[payload.readUInt32BE(0)] || payload.readUInt32BE(0);
          if (type === 7) f.code = CODES[payload.readUInt32BE(4)] || payload.readUInt32BE(4);
          if (type === 1 || type === 0) f.endStream = Boolean(flags & 1);
          frames.push(f);
          // Whatever else the server sends after the reset, within 100 ms.
          if (type === 3 && stream === 1) setTimeout(() => finish('reset'), 100);
        }
      });
      s.on('end', () => finish('end'));
      s.on('error', (e) => finish(`error ${e.code}`));
      timer = setTimeout(() => finish('timeout'), 3000);
    });
  },

  async pausedbody() {
    // A POST whose body the server never reads, answered at once; then a GET on the same
    // keep-alive agent: on the same connection if the server kept it.
    const outcome = {};
    for (const size of [1024, 64 * 1024, 1024 * 1024, 8 * 1024 * 1024]) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const r = await new Promise((resolve) => {
        const r = { events: [] };
        let socket;
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/upload', agent, headers: { 'content-length': size } }, (res) => {
          r.status = res.statusCode;
          r.connection = res.headers.connection;
          const chunks = [];
          res.on('data', (d) => chunks.push(d));
          res.on('end', () => {
            r.body = Buffer.concat(chunks).toString();
            get(agent, '/bytes/16', new Set()).then((g) => {
              r.next = g.error ? { error: g.error } : { status: g.status, intact: g.body.length === 16, sameConnection: g.socket === socket };
              r.events = r.events.slice();
              resolve(r);
            });
          });
        });
        req.on('socket', (s) => {
          socket = s;
          s.on('close', () => r.events.push('socket close'));
        });
        req.on('finish', () => r.events.push('request finish'));
        req.on('error', (e) => {
          r.events.push(`request error ${e.code}`);
          resolve(r);
        });
        req.end(crypto.randomBytes(size));
      });
      agent.destroy();
      outcome[size] = r;
    }
    return outcome;
  },

  async poison() {
    const runs = [];
    for (let i = 0; i < 5; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const seen = new Set();
      const first = await get(agent, '/a', seen);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const second = await get(agent, '/b', seen);
      agent.destroy();
      const body = (r) => (r.error ? `error ${r.error}` : r.body.toString().replace(/\d+$/, 'N'));
      runs.push({ first: body(first), second: body(second), connections: seen.size });
    }
    return runs;
  },

  async latewrite() {
    // A raw client sends a request, and a second one once the server has answered the first
    // and closed (its response and FIN wait unread), then reads.
    return new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      const events = [];
      let data = '';
      s.pause();
      s.on('connect', () => {
        s.write('GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n');
        setTimeout(() => {
          s.write('GET /second HTTP/1.1\r\nHost: localhost\r\n\r\n', (err) => events.push(`second write ${err ? err.code : 'ok'}`));
          s.resume();
        }, 200);
      });
      s.on('data', (d) => {
        data += d;
      });
      s.on('end', () => events.push('end'));
      s.on('error', (e) => events.push(`error ${e.code} ${e.syscall}`));
      s.on('close', () => resolve({ response: data.split('\r\n')[0], body: data.slice(data.indexOf('\r\n\r\n') + 4), events }));
    });
  },
};

scenarios[scenario]().then(
  (outcome) => {
    out({ event: 'outcome', outcome, uncaught, sockets });
  },
  (e) => {
    out({ event: 'error', message: String((e && e.stack) || e) });
    process.exitCode = 1;
  },
);
