/**
 * tls: TLS on top of each transport, the same code everywhere: the client
 * connects a plain socket and starts TLS on it (tls.connect({ socket })), the
 * server upgrades what it accepts (new tls.TLSSocket(socket, { isServer })).
 * Two figures: handshakes per second (one connection at a time: connect, TLS
 * handshake, 1 byte each way, close) and MB/s of 64 KiB writes over one TLS
 * connection. The key and self-signed certificate are made once per run with
 * openssl (ECDSA P-256, TLS 1.3).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type nodeNet from 'node:net';
import type { Commands, Json, RunSettings, Scenario, TransportKey, TrialOutcome } from './common';
import { TransportTally, childMain, connectTo, cpuSince, listen, netFor, now, pairedTrial, say, serverReport, watchdog } from './common';

const NAME = 'tls';
const WARMUP_S = 0.5;
const CHUNK = 64 * 1024;

/** A key and certificate for the run, made once (openssl). */
function credentials(subject: RunSettings): { key: string; cert: string } {
  const key = path.join(subject.tmp, 'tls-key.pem');
  const cert = path.join(subject.tmp, 'tls-cert.pem');
  if (!fs.existsSync(cert)) {
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=localhost',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { stdio: 'ignore' },
      );
    } catch (err) {
      throw new Error(`tls: openssl could not make a certificate (${(err as Error).message})`);
    }
  }
  return { key, cert };
}

export const scenario: Scenario = {
  name: NAME,
  method: (subject) =>
    `TLS 1.3 (ECDSA P-256, self-signed) started on a connected socket of each transport (tls.connect({ socket }) / new tls.TLSSocket(socket, { isServer })); ` +
    `handshakes: one connection at a time (connect, handshake, 1 byte each way, close), ${WARMUP_S} s of warm-up, then ${subject.duration} s; ` +
    `bulk: one TLS connection, 64 KiB writes for ${subject.duration} s, MB/s at the receiver`,
  metrics: () => [
    { key: 'hs', label: 'handshake + 1 B each way + close', unit: 'conn/s', better: 'higher' },
    { key: 'rate', label: '64 KiB writes over TLS', unit: 'MB/s', better: 'higher' },
  ],
  trial: (target: TransportKey, subject: RunSettings): Promise<TrialOutcome> =>
    pairedTrial(NAME, target, subject, { server: credentials(subject), client: { duration: subject.duration } }, async (server, client) => {
      const hs = await client.expect('handshakes', 20000 + subject.duration * 4000);
      const bulk = await client.expect('bulk-sent', 20000 + subject.duration * 4000);
      const res = await server.expect('bulk-received', 20000 + subject.duration * 4000);
      if (res.bytes !== bulk.bytes) throw new Error(`tls: client wrote ${bulk.bytes} bytes, server received ${res.bytes}`);
      const sr = await serverReport(server);
      return {
        metrics: { hs: hs.count / hs.seconds, rate: res.bytes / 1e6 / res.seconds },
        seen: { client: hs.seen, server: sr.seen },
        detail: {
          handshakes: hs.count,
          seconds: hs.seconds,
          clientCpuSeconds: hs.cpu,
          bulkBytes: res.bytes,
          bulkSeconds: res.seconds,
          receiverCpuSeconds: res.cpu,
        },
      };
    }),
};

function server(target: TransportKey, params: Json, commands: Commands): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const options = { isServer: true, key: fs.readFileSync(String(params.key)), cert: fs.readFileSync(String(params.cert)) };
  const srv = net.createServer((sock) => {
    seen.add(sock);
    sock.setNoDelay(true);
    sock.on('error', () => undefined);
    const secure = new tls.TLSSocket(sock, options);
    secure.on('error', () => undefined);
    let mode: 'echo' | 'bulk' | undefined;
    let bytes = 0;
    let t0 = 0;
    let cpu0 = process.cpuUsage();
    secure.on('data', (chunk: Buffer) => {
      if (!mode) {
        mode = chunk[0] === 0x62 /* b */ ? 'bulk' : 'echo';
        if (mode === 'echo') return void secure.write(chunk);
        t0 = now();
        cpu0 = process.cpuUsage();
        chunk = chunk.subarray(1);
      }
      if (mode === 'echo') secure.write(chunk);
      else bytes += chunk.length;
    });
    secure.on('end', () => {
      if (mode === 'bulk') say({ event: 'bulk-received', bytes, seconds: now() - t0, cpu: cpuSince(cpu0) });
      secure.end();
    });
  });
  listen(srv, target, params);
  commands.on('report', () => say({ event: 'report', seen: seen.counts }));
}

function client(target: TransportKey, params: Json): void {
  const net = netFor(target);
  const seen = new TransportTally();
  const duration = Number(params.duration);
  const fail = (what: string) => (err: Error) => {
    say({ event: 'error', message: `${what}: ${err.message}` });
    process.exit(1);
  };
  const open = (onSecure: (s: tls.TLSSocket, plain: nodeNet.Socket) => void): void => {
    const plain = connectTo(net, params.ep);
    plain.setNoDelay(true);
    plain.on('error', fail('client socket'));
    plain.once('connect', () => {
      seen.add(plain);
      const sock = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' }, () => onSecure(sock, plain));
      sock.on('error', fail('client TLS'));
    });
  };

  // Handshakes, one after another.
  let done = 0;
  let warm = true;
  const start = now();
  let t0 = 0;
  let cpu0 = process.cpuUsage();
  const dog = watchdog(() => `handshake ${done + 1}${warm ? ' (warm-up)' : ''}`);
  const next = (): void => {
    open((sock) => {
      sock.once('data', () => sock.end());
      sock.on('close', () => {
        dog.poke();
        if (warm) {
          if (now() - start < WARMUP_S) return next();
          warm = false;
          done = 0;
          t0 = now();
          cpu0 = process.cpuUsage();
        } else done++;
        if (now() - t0 < duration) return next();
        dog.stop();
        say({ event: 'handshakes', count: done, seconds: now() - t0, cpu: cpuSince(cpu0), seen: seen.counts });
        bulk();
      });
      sock.write('x');
    });
  };

  // Then bulk over one connection.
  const bulk = (): void => {
    open((sock) => {
      const buf = Buffer.alloc(CHUNK, 0x61);
      let bytes = 0;
      const end = now() + duration;
      const bulkDog = watchdog(() => `bulk: ${bytes} bytes written`);
      const go = (): void => {
        bulkDog.poke();
        while (now() < end) {
          bytes += buf.length;
          if (!sock.write(buf)) return void sock.once('drain', go);
        }
        bulkDog.stop();
        sock.end();
        say({ event: 'bulk-sent', bytes });
      };
      sock.write('b');
      go();
    });
  };
  next();
}

if (require.main === module) childMain({ server, client });
