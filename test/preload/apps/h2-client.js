// A plain node:http2 client for h2-server.js. Three sessions, each made its
// own way: http2.connect('http://localhost:PORT'); with createConnection
// returning net.connect() still connecting; with createConnection returning
// a socket already connected. On each: GETs and POSTs of 1 B..8 MiB checked
// by sha256, then a graceful session.close() with a response in flight. Then,
// on another session: a stream reset by the client mid-body, one closed by
// the server mid-body, a stream timeout, and a GOAWAY from the server.
// Records the transport of every connection ('net.client.socket') and what
// session.socket (a proxy) says of it. The last line is {event:'done'}.
'use strict';
const http2 = require('http2');
const net = require('net');
const crypto = require('crypto');
const { clientSockets } = require('./client-sockets');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const port = Number(process.argv[2]);
const sizes = (process.argv[3] || '1,1024,65537,1048576,8388608').split(',').map(Number);
const url = `http://localhost:${port}`;
const { NGHTTP2_CANCEL } = http2.constants;

const sockets = clientSockets();

const results = [];
let volume = 0;
const check = (name, ok, extra = {}) => results.push({ name, ok: Boolean(ok), ...extra });

function request(session, headers, body) {
  return new Promise((resolve) => {
    const req = session.request(headers, { endStream: body === undefined });
    const chunks = [];
    let res;
    req.on('response', (h) => {
      res = h;
    });
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => resolve({ headers: res, body: Buffer.concat(chunks) }));
    req.on('error', (err) => resolve({ err }));
    if (body !== undefined) req.end(body);
  });
}

function connected(session) {
  return new Promise((resolve, reject) => {
    session.once('connect', resolve);
    session.once('error', reject);
  });
}

async function transfers(name, session) {
  await connected(session);
  const proxyTransport = session.socket.transport ?? null;
  for (const n of sizes) {
    const g = await request(session, { ':method': 'GET', ':path': `/bytes/${n}` });
    check(`${name}: GET ${n} B`, !g.err && g.headers[':status'] === 200 && g.body.length === n && sha(g.body) === g.headers['x-sha256'], {
      err: g.err && g.err.code,
    });
    const body = crypto.randomBytes(n);
    const e = await request(session, { ':method': 'POST', ':path': '/echo' }, body);
    check(`${name}: POST ${n} B`, !e.err && e.headers[':status'] === 200 && e.body.length === n && sha(e.body) === sha(body), { err: e.err && e.err.code });
    volume += 3 * n;
  }
  // Graceful close with a response in flight: the response completes, then the session closes.
  const order = [];
  const r = await new Promise((resolve) => {
    const req = session.request({ ':path': '/bytes/1048576' });
    const chunks = [];
    let headers;
    req.on('response', (h) => {
      headers = h;
      session.close(() => order.push('closed'));
      try {
        // Node 20 throws; later lines return a stream that fails at once with the same error.
        const late = session.request({ ':path': '/bytes/1' });
        late.on('error', (e) => order.push(`request after close(): ${e.code}`));
        late.on('response', () => order.push('request after close() accepted'));
      } catch (e) {
        order.push(`request after close(): ${e.code}`);
      }
    });
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => order.push('end'));
    req.on('error', (err) => resolve({ err }));
    req.on('close', () => resolve({ headers, body: Buffer.concat(chunks) }));
  });
  await new Promise((resolve) => (session.destroyed ? setImmediate(resolve) : session.once('close', resolve)));
  check(
    `${name}: graceful close`,
    !r.err &&
      r.body.length === 1048576 &&
      sha(r.body) === r.headers['x-sha256'] &&
      order.join() === 'request after close(): ERR_HTTP2_GOAWAY_SESSION,end,closed',
    { order, err: r.err && r.err.code },
  );
  return { name, proxyTransport };
}

function connectingSocket() {
  return net.connect(port, '127.0.0.1');
}

function connectedSocket() {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

async function resets() {
  const session = http2.connect(url);
  await connected(session);

  // The client resets a stream while the server is still sending.
  const reset = await new Promise((resolve) => {
    const req = session.request({ ':path': '/forever' });
    let got = 0;
    req.on('data', (d) => {
      got += d.length;
      if (got >= 256 * 1024 && !req.closed) req.close(NGHTTP2_CANCEL);
    });
    req.on('error', (e) => resolve({ err: e.code, got }));
    req.on('close', () => resolve({ rstCode: req.rstCode, got }));
  });
  check('client resets a stream mid-body', reset.rstCode === NGHTTP2_CANCEL && reset.got >= 256 * 1024, reset);

  // The server closes a stream mid-body.
  const cut = await new Promise((resolve) => {
    const req = session.request({ ':path': '/cut/1048576' });
    const seen = { got: 0, events: [] };
    req.on('response', (h) => {
      seen.events.push('response');
      seen.length = Number(h['content-length']);
    });
    req.on('data', (d) => {
      seen.got += d.length;
    });
    req.on('aborted', () => seen.events.push('aborted'));
    req.on('end', () => seen.events.push('end'));
    req.on('error', (e) => seen.events.push(`error ${e.code}`));
    req.on('close', () => {
      seen.events.push('close');
      seen.rstCode = req.rstCode;
      resolve(seen);
    });
  });
  // Everything written before the close arrives, short of the content-length; the stream then
  // ends (RST_STREAM NO_ERROR first) or fails the content-length check (END_STREAM first).
  const cutEnds = [
    ['response,end,close', 0],
    ['response,error ERR_HTTP2_STREAM_ERROR,close', 1],
  ];
  check(
    'server closes a stream mid-body',
    cut.got === 262144 && cut.length === 1048576 && cutEnds.some(([events, rstCode]) => cut.events.join() === events && cut.rstCode === rstCode),
    cut,
  );

  // A stream with no answer times out; the client then cancels it.
  const t0 = Date.now();
  const timeout = await new Promise((resolve) => {
    const req = session.request({ ':path': '/hold' });
    req.setTimeout(250, () => {
      const ms = Date.now() - t0;
      req.close(NGHTTP2_CANCEL);
      req.on('close', () => resolve({ ms, rstCode: req.rstCode }));
    });
    req.on('error', (e) => resolve({ err: e.code }));
  });
  check('stream timeout', timeout.ms >= 240 && timeout.ms < 5000 && timeout.rstCode === NGHTTP2_CANCEL, timeout);

  // The session still works after all that.
  const g = await request(session, { ':method': 'GET', ':path': '/bytes/65536' });
  check('session usable after resets', !g.err && sha(g.body) === g.headers['x-sha256']);
  await new Promise((resolve) => session.close(resolve));

  // GOAWAY from the server: the stream it answered completes (its end and the
  // GOAWAY may come in one read, in either order), the session takes no new
  // streams, and closes when the server closes its end.
  const s2 = http2.connect(url);
  await connected(s2);
  const goaway = await new Promise((resolve) => {
    const seen = { events: [] };
    s2.on('error', (e) => seen.events.push(`session error ${e.code}`));
    s2.on('goaway', (code, last) => {
      // close() after goaway() sends one more
      seen.goaways = (seen.goaways || 0) + 1;
      if (seen.goaways > 1) return;
      seen.events.push('goaway');
      seen.code = code;
      seen.lastStreamID = last;
      setImmediate(() => {
        seen.closed = s2.closed;
        try {
          // Node 20 throws; later lines return a stream that fails at once.
          const late = s2.request({ ':path': '/bytes/1' });
          seen.after = 'no error';
          late.on('error', (e) => (seen.after = e.code));
        } catch (e) {
          seen.after = e.code;
        }
      });
    });
    s2.on('close', () => {
      seen.events.push('session close');
      resolve(seen);
    });
    request(s2, { ':path': '/goaway' }).then((r) => {
      seen.events.push('response');
      seen.body = r.body && r.body.toString();
    });
  });
  check(
    'GOAWAY from the server',
    goaway.code === 0 &&
      goaway.lastStreamID === 1 &&
      goaway.body === 'bye' &&
      goaway.closed === true &&
      /^ERR_HTTP2_(GOAWAY|INVALID)_SESSION$/.test(goaway.after) &&
      goaway.events.length === 3 &&
      goaway.events.includes('response') &&
      goaway.events.includes('goaway') &&
      goaway.events[2] === 'session close',
    goaway,
  );
}

// A request made in the same tick as session.close() is refused (REFUSED_STREAM)
// and the session closes, on a session made each of the three ways.
async function refused() {
  const make = {
    url: () => http2.connect(url),
    'connecting socket': () => http2.connect(url, { createConnection: connectingSocket }),
    'connected socket': async () => {
      const sock = await connectedSocket();
      return http2.connect(url, { createConnection: () => sock });
    },
  };
  for (const [name, mk] of Object.entries(make)) {
    const session = await mk();
    const first = await request(session, { ':path': '/bytes/1024' });
    const r = await new Promise((resolve) => {
      const req = session.request({ ':path': '/bytes/1024' });
      req.on('error', (e) => resolve({ code: e.code, message: e.message }));
      req.on('end', () => resolve({ code: 'none' }));
      req.resume();
      session.close();
    });
    await new Promise((resolve) => (session.destroyed && session.closed ? setImmediate(resolve) : session.once('close', resolve)));
    check(`${name}: request refused by a closing session`, !first.err && r.code === 'ERR_HTTP2_STREAM_ERROR' && /REFUSED_STREAM/.test(r.message), r);
  }
  out({ event: 'done', results, sockets });
}

async function main() {
  if (process.argv[4] === 'refused') return refused();
  const sessions = [];
  sessions.push(await transfers('url', http2.connect(url)));
  sessions.push(await transfers('connecting socket', http2.connect(url, { createConnection: connectingSocket })));
  const sock = await connectedSocket();
  sessions.push(await transfers('connected socket', http2.connect(url, { createConnection: () => sock })));
  await resets();
  out({ event: 'done', results, volume, sessions, sockets });
}
main().catch((e) => {
  out({ event: 'error', message: String((e && e.stack) || e) });
  process.exitCode = 1;
});
