/**
 * The objects of a connection keep their hidden class (V8's map) for the
 * connection's whole life: byte counts and ring positions outgrow V8's small
 * integers after 2 GiB, and a field that started as one would then change
 * representation, and throw away the optimised code of every connection in
 * the middle of a transfer. Such fields are doubles from the start. Run in a
 * child process with --allow-natives-syntax, which the test process does not
 * have; %DebugPrint shows how each field of a new connection's objects is held.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import path from 'node:path';

const INDEX = path.join(__dirname, '..', 'src', 'index.js');

const SCRIPT = `
const net = require(process.env.ZIVM_INDEX);
const TOTAL = 2.5 * 1024 ** 3;
const chunk = Buffer.alloc(1024 * 1024, 7);
const srv = net.createServer((sock) => {
  let got = 0;
  sock.on('data', (d) => {
    got += d.length;
    if (got < TOTAL) return;
    const used = [sock._handle, sock._handle.ch];
    const fresh = net.connect(srv.address().port, '127.0.0.1');
    fresh.on('connect', () => {
      const now = [fresh._handle, fresh._handle.ch];
      const same = used.map((obj, i) => %HaveSameMap(obj, now[i]));
      console.log('RESULT ' + JSON.stringify({ transport: sock.transport, got, bytesRead: sock._handle.bytesRead, same }));
      process.exit(0);
    });
  });
});
srv.listen(0, '127.0.0.1', () => {
  const c = net.connect(srv.address().port, '127.0.0.1');
  c.once('connect', () => {
    %DebugPrint(c._handle);
    %DebugPrint(c._handle.ch);
  });
  let sent = 0;
  const go = () => {
    while (sent < TOTAL) {
      sent += chunk.length;
      if (!c.write(chunk)) return void c.once('drain', go);
    }
  };
  c.on('connect', go);
});
`;

describe('object shapes', function () {
  this.timeout(60000);

  it('byte counts and ring positions are doubles from the start: a handle and its channel that moved 2.5 GiB have the hidden class of new ones', async () => {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['--allow-natives-syntax', '-e', SCRIPT], { env: { ...process.env, ZIVM_INDEX: INDEX } }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
    const held = new Map<string, string>();
    for (const line of out.split('\n')) {
      const field = /#(bytesRead|bytesWritten|trimmedAt|headSeen): (.*)/.exec(line);
      if (field) held.set(field[1], /<HeapNumber /.test(field[2]) ? 'double' : field[2]);
    }
    expect(Object.fromEntries(held)).to.deep.equal({ bytesRead: 'double', bytesWritten: 'double', trimmedAt: 'double', headSeen: 'double' });
    const line = out.split('\n').find((text) => text.startsWith('RESULT '));
    expect(line, out).to.be.a('string');
    const res = JSON.parse(line!.slice('RESULT '.length)) as { transport: string; got: number; bytesRead: number; same: boolean[] };
    expect(res.transport).to.equal('shm');
    expect(res.bytesRead).to.equal(res.got);
    expect(res.same, 'handle, channel').to.deep.equal([true, true]);
  });
});
