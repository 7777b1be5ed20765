// A plain aedes MQTT broker on net.createServer (named import from node:net).
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
server.on('connection', (s) => out({ event: 'connection', transport: s.transport ?? null }));
broker.on('clientError', (client, err) => out({ event: 'clientError', id: client && client.id, message: err.message }));
server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));
