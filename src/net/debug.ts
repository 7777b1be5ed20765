/** NODE_DEBUG=zivm lines and diagnostics_channel events for the transport chosen. */
import { debuglog } from 'node:util';
import dc from 'node:diagnostics_channel';
import { record } from './stats';

export const debug = debuglog('zivm');

/** Published for every connection attempt zivm routes: { socket, transport, reason, address, port }. */
export const transportChannel = dc.channel('zivm:transport');

export function chose(socket: object, transport: 'shm' | 'tcp', reason: string, address?: string, port?: number): void {
  debug('%s to %s:%s: %s', transport, address, port, reason);
  record(transport, reason);
  if (transportChannel.hasSubscribers) transportChannel.publish({ socket, transport, reason, address, port });
}

/** ZIVM=off (or 0/false/tcp) routes everything through plain net. */
export function disabled(): boolean {
  const v = (process.env.ZIVM ?? '').toLowerCase();
  return v === 'off' || v === '0' || v === 'false' || v === 'tcp';
}
