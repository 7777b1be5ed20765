/**
 * What the VM tests and the VM bench share on the host side: reading JSON
 * events from a guest's console, and host peers in network namespaces of their own.
 */
import { ChildProcess, spawn } from 'node:child_process';

export type Ev = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An onConsole callback: every console line holding `PREFIX {json}` becomes
 * an event, stamped with `seenAt` (when this process saw it), passed to `on`.
 * Lines cut by kernel messages are skipped.
 */
export function consoleEvents(prefix: string, on: (e: Ev) => void): (chunk: string) => void {
  let con = '';
  return (chunk) => {
    con += chunk.replace(/\r/g, '');
    for (let i; (i = con.indexOf('\n')) >= 0; ) {
      const line = con.slice(0, i);
      con = con.slice(i + 1);
      const k = line.indexOf(prefix);
      if (k < 0) continue;
      let e: Ev;
      try {
        e = JSON.parse(line.slice(k + prefix.length)) as Ev;
      } catch {
        continue;
      }
      e.seenAt = Date.now();
      on(e);
    }
  };
}

export interface NsPeer {
  proc: ChildProcess;
  /** Its stdout's JSON lines, stamped with `seenAt`. */
  events: Ev[];
  /** Its stderr and any stdout line that was not JSON. */
  err(): string;
  /** Writes a JSON line to its stdin. */
  send(o: Ev): void;
  /** The first event that matches, waiting up to `ms`. */
  waitFor(pred: (e: Ev) => boolean, ms?: number): Promise<Ev | undefined>;
  /** Ends its stdin, then SIGKILL if it is still there 2 s later. */
  stop(): Promise<void>;
}

/**
 * Runs `node script args...` in a network namespace of its own (root: -n;
 * otherwise in a user namespace too), after the shell commands `net` (run
 * with lo up) gave it its addresses: nothing it sends can leave the namespace.
 */
export function spawnNsPeer(net: string, script: string, args: string[], env: NodeJS.ProcessEnv): NsPeer {
  const ns = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
  const proc = spawn('unshare', [...ns, 'sh', '-c', `ip link set lo up && ${net} && exec "$0" "$@"`, process.execPath, script, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const events: Ev[] = [];
  let err = '';
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; ) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        events.push({ ...(JSON.parse(line) as Ev), seenAt: Date.now() });
      } catch {
        err += `${line}\n`;
      }
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  return {
    proc,
    events,
    err: () => err,
    send: (o) => void proc.stdin!.write(`${JSON.stringify(o)}\n`),
    async waitFor(pred, ms = 20000) {
      const t = Date.now();
      for (;;) {
        const e = events.find(pred);
        if (e || Date.now() - t >= ms || proc.exitCode !== null) return e;
        await sleep(20);
      }
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.stdin!.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 2000);
      await new Promise((r) => proc.once('exit', r));
      clearTimeout(t);
    },
  };
}
