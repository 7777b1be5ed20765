/** Running a daemon as the process's job (`zivm server`): signals, exit code. */
import path from 'node:path';
import { Daemon, DaemonOptions } from './daemon';

/**
 * Runs a daemon until it stops: resolves with the process exit code.
 * 0 after a clean stop (idle exit or SIGTERM/SIGINT/SIGHUP), or when `auto`
 * and another daemon already serves; 1 (message on stderr) when an explicit
 * daemon finds another one serving, or start-up fails.
 * `onReady` runs once the socket accepts connections.
 */
export function runDaemon(opts: DaemonOptions, onReady?: (d: Daemon) => void): Promise<number> {
  let d: Daemon;
  try {
    d = new Daemon(opts);
    if (!d.start()) {
      if (!opts.auto) process.stderr.write(`zivm: a daemon already serves ${path.resolve(opts.socketPath)}\n`);
      return Promise.resolve(opts.auto ? 0 : 1);
    }
  } catch (e) {
    process.stderr.write(`${prefixed((e as Error).message)}\n`);
    return Promise.resolve(1);
  }
  return new Promise<number>((resolve) => {
    let code = 0;
    const stop = (): void => d.close();
    const crash = (e: unknown): void => {
      process.stderr.write(`${prefixed(`daemon failed: ${(e as Error)?.stack ?? String(e)}`)}\n`);
      code = 1;
      d.close();
    };
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const s of signals) process.on(s, stop);
    process.on('uncaughtException', crash);
    d.once('close', () => {
      for (const s of signals) process.off(s, stop);
      process.off('uncaughtException', crash);
      resolve(code);
    });
    if (onReady) onReady(d);
  });
}

function prefixed(msg: string): string {
  return msg.startsWith('zivm:') ? msg : `zivm: ${msg}`;
}
