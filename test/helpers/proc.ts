/** Child processes for tests: every transport test has its server and client in separate processes. */
import path from 'node:path';
import { Proc, spawnNode } from '../../tools/kit/proc';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

/** Runs test/fixtures/<name>.js with args (env laid over this process's); its stdout must be JSON lines. No time limit on its lines: the test's own applies. */
export function spawnPeer(name: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  return spawnNode(path.join(FIXTURES, `${name}.js`), args, { name: `${name} ${args[0] ?? ''}`.trim(), env: { ...process.env, ...env }, timeoutMs: Infinity });
}
