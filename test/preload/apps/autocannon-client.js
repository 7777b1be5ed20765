// autocannon used programmatically against GET /data for a few seconds,
// checking every response body. Prints the result summary as one JSON line.
'use strict';
const autocannon = require('autocannon');

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [port, seconds, size] = process.argv.slice(2).map(Number);
const expectBody = Array.from({ length: size || 8192 }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');

autocannon(
  {
    url: `http://127.0.0.1:${port}/data`,
    connections: 8,
    pipelining: 1,
    duration: seconds || 3,
    expectBody,
  },
  (err, r) => {
    if (err) {
      out({ event: 'error', message: String(err.stack || err) });
      process.exitCode = 1;
      return;
    }
    out({
      event: 'done',
      requests: r.requests.total,
      rps: r.requests.average,
      bytes: r.throughput.total,
      errors: r.errors,
      timeouts: r.timeouts,
      mismatches: r.mismatches,
      non2xx: r.non2xx,
      ok2xx: r['2xx'],
      resets: r.resets,
    });
  },
);
