/** NODE_DEBUG=zivm lines and diagnostics_channel events for the transport chosen. */
import dc from 'node:diagnostics_channel';
import { debug } from '../log';
import { record } from './stats';

/** Published for every connection attempt zivm routes: { socket, transport, reason, address, port }. */
export const transportChannel = dc.channel('zivm:transport');

export function chose(socket: object, transport: 'shm' | 'tcp', reason: string, address?: string, port?: number): void {
  if (debug.enabled) debug('%s to %s:%s: %s', transport, address, port, reason);
  record(transport, reason);
  if (transportChannel.hasSubscribers) transportChannel.publish({ socket, transport, reason, address, port });
}
