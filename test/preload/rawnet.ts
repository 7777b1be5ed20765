/** The raw net programs (apps/raw-server.js, apps/raw-client.js) run as one scenario, for several tests. */
import { expect } from 'chai';
import { loBytes } from '../../tools/kit/lo';
import { startApp, settle, Mode } from './harness';

export interface RawResult {
  lo: number;
  serverTransport: string | null;
  clientTransport: string | null;
}

/** Client sends `total` bytes and ends; server then sends `back` bytes and ends; everything checked by sha256. */
export async function rawScenario(serverMode: Mode, clientMode: Mode, total: number, back: number): Promise<RawResult> {
  const server = startApp('raw-server.js', [back], serverMode);
  const { port } = await server.event('listening', 15000);
  const lo0 = loBytes();
  const client = startApp('raw-client.js', [port, total], clientMode);
  const item = await client.event('connect', 15000);
  const conn = await server.event('connection', 15000);
  const cs = await client.event('sent', 60000);
  const sr = await server.event('received', 60000);
  const ss = await server.event('sent', 60000);
  const cr = await client.event('received', 60000);
  const cc = await client.event('close', 15000);
  const sc = await server.event('close', 15000);
  const lo = loBytes() - lo0;

  // client -> server, then half-close
  expect(cs.bytes).to.equal(total);
  expect(sr.bytes, 'bytes the server received').to.equal(total);
  expect(sr.sha256, 'sha256 of what the server received').to.equal(cs.sha256);
  expect(sr.writable, 'server still writable after the client ended').to.equal(true);
  // server -> client after the client's end()
  expect(ss.bytes).to.equal(back);
  expect(cr.bytes, 'bytes the client received').to.equal(back);
  expect(cr.sha256, 'sha256 of what the client received').to.equal(ss.sha256);
  expect(cr.dataBeforeEnd, 'bytes the client got before its own end()').to.equal(0);
  // pause/resume: paused sockets emit no data
  expect(sr.pauses).to.equal(Math.floor(total / (4 * 1048576)));
  expect(sr.dataWhilePaused, 'server data events while paused').to.equal(0);
  expect(cr.pauses).to.equal(Math.floor(back / 1048576));
  expect(cr.dataWhilePaused, 'client data events while paused').to.equal(0);
  expect(cc.hadError).to.equal(false);
  expect(sc.hadError).to.equal(false);

  await settle(client);
  await settle(server);
  return { lo, serverTransport: conn.transport, clientTransport: item.transport };
}
