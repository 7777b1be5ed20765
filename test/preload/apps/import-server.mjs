// A plain ES-module echo server using the named import from node:net.
import { createServer } from 'node:net';

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const server = createServer((sock) => {
  out({ event: 'connection', transport: sock.transport ?? null });
  sock.pipe(sock);
  sock.on('close', () => server.close());
});
server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
