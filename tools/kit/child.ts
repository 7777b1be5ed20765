/**
 * The other side of proc.ts, inside the child: JSON lines out on stdout,
 * commands in on stdin, and the exit when stdin closes, so that no child
 * outlives the process that started it.
 */
import readline from 'node:readline';
import type { Json } from './proc';

export type { Json };

/** Prints one JSON line on stdout. */
export function say(value: object): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Commands from the parent, one JSON line each on stdin (`{"cmd": NAME, ...}`); the process exits when stdin closes. */
export class Commands {
  private readonly handlers = new Map<string, (msg: Json) => void>();
  constructor() {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      let msg: Json;
      try {
        msg = JSON.parse(line) as Json;
      } catch {
        return; // not a command
      }
      this.handlers.get(String(msg.cmd))?.(msg);
    });
    rl.on('close', () => process.exit(0));
  }

  on(cmd: string, fn: (msg: Json) => void): this {
    this.handlers.set(cmd, fn);
    return this;
  }
}

/** Exits when stdin closes (a child that takes no commands). */
export function exitWithStdin(): void {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

/** Resolves when stdin closes (the parent is done with us). */
export function stdinClosed(): Promise<void> {
  return new Promise((resolve) => process.stdin.once('end', () => resolve()).resume());
}
