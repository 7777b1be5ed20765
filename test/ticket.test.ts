/** shm/ticket.ts: which connection requests a host process's listener takes, by the kind of domain they came through. */
import { expect } from 'chai';
import { parseAddr, writeAddr, type Addr } from '../src/shm/addrs';
import * as Lay from '../src/shm/layout';
import { vet } from '../src/shm/ticket';

function addr(text: string): Addr {
  return parseAddr(text)!;
}

/** A request's words as a client writes them: dialled (address, port) from `source`. */
function request(dialled: string, port: number, source: string): Int32Array {
  const snap = new Int32Array(Lay.SLOT.TICKET + 2);
  const to = addr(dialled);
  snap[Lay.SLOT.FAMILY] = to.family;
  writeAddr(snap, Lay.SLOT.SERVER_ADDR, to.bytes);
  writeAddr(snap, Lay.SLOT.CLIENT_ADDR, addr(source).bytes);
  snap[Lay.SLOT.SERVER_PORT] = port;
  return snap;
}

describe('request vetting', () => {
  const loopbackListener = { addr: addr('127.0.0.1'), port: 8000 };
  const wildListener = { addr: addr('0.0.0.0'), port: 8000 };

  it('in a domain of host processes (one user), every request is taken', () => {
    expect(vet('host', [], loopbackListener, request('10.9.9.9', 1, '10.8.8.8')).refused).to.equal(undefined);
  });

  it('in a pair domain, takes what loopback TCP would: an address of this node the listener is bound to, from one', () => {
    expect(vet('pair', [], loopbackListener, request('127.0.0.1', 8000, '127.0.0.1')).refused).to.equal(undefined);
    expect(vet('pair', [], wildListener, request('127.0.0.1', 8000, '127.0.0.1')).refused).to.equal(undefined);
    expect(vet('pair', [], { addr: addr('::'), port: 8000 }, request('::1', 8000, '::1')).refused).to.equal(undefined);
  });

  it('in a pair domain, refuses another port, another bound address, and addresses that are not of this node', () => {
    expect(vet('pair', [], loopbackListener, request('127.0.0.1', 8001, '127.0.0.1')).refused).to.match(/port/);
    expect(vet('pair', [], loopbackListener, request('127.0.0.2', 8000, '127.0.0.1')).refused).to.match(/not bound/);
    // 192.0.2.0/24 is documentation space: never an address of this node.
    expect(vet('pair', [], wildListener, request('192.0.2.7', 8000, '127.0.0.1')).refused).to.match(/not of this node/);
    expect(vet('pair', [], wildListener, request('127.0.0.1', 8000, '192.0.2.8')).refused).to.match(/source address/);
    expect(vet('pair', [], wildListener, request('0.0.0.0', 8000, '127.0.0.1')).refused).to.match(/not of this node/);
    const badFamily = request('127.0.0.1', 8000, '127.0.0.1');
    badFamily[Lay.SLOT.FAMILY] = 5;
    expect(vet('pair', [], wildListener, badFamily).refused).to.match(/family/);
  });

  it('from guests, a listener on loopback is never reached, and only declared guest addresses are taken', () => {
    expect(vet('guests', [addr('192.0.2.9')], loopbackListener, request('127.0.0.1', 8000, '192.0.2.9')).refused).to.match(/loopback/);
    expect(vet('guests', [addr('192.0.2.9')], wildListener, request('127.0.0.1', 8000, '192.0.2.9')).refused).to.match(/not for guests/);
  });
});
