/** Running a daemon as the process's job (`zivm server`): signals, exit code. */
import { Daemon, DaemonOptions } from './daemon';

/**
 * Runs a daemon until it stops: resolves with the process exit code.
 * 0 after a clean stop (idle exit or SIGTERM/SIGINT/SIGHUP), or when `auto`
 * and another daemon already serves; 1 (message on stderr) when an explicit
 * daemon finds another one serving, or start-up fails.
 * `onReady` runs once the socket accepts connections.
 */
export function runDaemon(opts: DaemonOptions, onReady?: (daemon: Daemon) => void): Promise<number> {
  let daemon: Daemon;
  try {
    daemon = new Daemon(opts);
    if (!daemon.start()) {
      if (!opts.auto) process.stderr.write(`zivm: a daemon already serves ${daemon.socketPath}\n`);
      return Promise.resolve(opts.auto ? 0 : 1);
    }
  } catch (err) {
    process.stderr.write(`${prefixed((err as Error).message)}\n`);
    return Promise.resolve(1);
  }
  return new Promise<number>((resolve) => {
    let code = 0;
    const stop = (): void => daemon.close();
    const crash = (err: unknown): void => {
      process.stderr.write(`${prefixed(`daemon failed: ${(err as Error)?.stack ?? String(err)}`)}\n`);
      code = 1;
      daemon.close();
    };
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const signal of signals) process.on(signal, stop);
    process.on('uncaughtException', crash);
    daemon.once('close', () => {
      for (const signal of signals) process.off(signal, stop);
      process.off('uncaughtException', crash);
      resolve(code);
    });
    if (onReady) onReady(daemon);
  });
}

function prefixed(msg: string): string {
  return msg.startsWith('zivm:') ? msg : `zivm: ${msg}`;
}
