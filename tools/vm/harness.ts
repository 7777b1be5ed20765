/**
 * What the VM tests and the VM bench share on the host side: reading JSON
 * events from a guest's console, and host peers in network namespaces of their own.
 */
import { Json, Proc } from '../kit/proc';

export type Ev = Json;

/**
 * An onConsole callback: every console line holding `PREFIX {json}` becomes
 * an event, stamped with `seenAt` (when this process saw it), passed to `on`.
 * Lines cut by kernel messages are skipped.
 */
export function consoleEvents(prefix: string, on: (e: Ev) => void): (chunk: string) => void {
  let con = '';
  return (chunk) => {
    con += chunk.replace(/\r/g, '');
    for (let i; (i = con.indexOf('\n')) >= 0;) {
      const line = con.slice(0, i);
      con = con.slice(i + 1);
      const k = line.indexOf(prefix);
      if (k < 0) continue;
      let entry: Ev;
      try {
        entry = JSON.parse(line.slice(k + prefix.length)) as Ev;
      } catch {
        continue; // a line cut by kernel messages
      }
      entry.seenAt = Date.now();
      on(entry);
    }
  };
}

/**
 * Runs `node script args...` in a network namespace of its own (root: -n;
 * otherwise in a user namespace too), after the shell commands `net` (run
 * with lo up) gave it its addresses: nothing it sends can leave the namespace.
 * Its JSON lines are stamped with `seenAt`; stop() ends its stdin, then
 * SIGKILL 2 s later.
 */
export function spawnNsPeer(net: string, script: string, args: string[], env: NodeJS.ProcessEnv): NsPeer {
  const ns = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
  const part = new Proc('unshare', [...ns, 'sh', '-c', `ip link set lo up && ${net} && exec "$0" "$@"`, process.execPath, script, ...args], {
    name: `host peer ${args[0] ?? ''}`.trim(),
    env: { ...process.env, ...env },
    stamp: true,
  });
  const stop = part.stop.bind(part);
  part.stop = (ms = 2000) => stop(ms);
  return part;
}

/** A host peer: a child process speaking JSON lines (tools/kit/proc.ts). */
export type NsPeer = Proc;
