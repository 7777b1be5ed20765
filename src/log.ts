/** NODE_DEBUG=zivm: one terse line per decision, join and leave. */
import { debuglog } from 'node:util';

export const debug = debuglog('zivm');
