// What the apps report about their own connections: the transport of every
// client socket they make, as node:net and zivm publish each one on the
// 'net.client.socket' diagnostics channel ('shm', 'tcp', or null for a socket
// zivm did not make; undefined until it connects).
'use strict';
const dc = require('diagnostics_channel');

/** A list that gets one { transport } per client socket made from now on. */
function clientSockets() {
  const sockets = [];
  dc.subscribe('net.client.socket', ({ socket }) => {
    const seen = { transport: undefined };
    sockets.push(seen);
    socket.once('connect', () => {
      seen.transport = socket.transport ?? null;
    });
  });
  return sockets;
}

module.exports = { clientSockets };
