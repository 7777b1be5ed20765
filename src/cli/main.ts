#!/usr/bin/env node
/**
 * The `zivm` command: each subcommand in a file of its own, listed in
 * COMMANDS; each parses its own arguments and resolves with an exit code
 * (2 for bad usage).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors';
import { benchCommand } from './bench';
import { Command } from './command';
import { doctorCommand } from './doctor';
import { guestCommand } from './guest';
import { serverCommand } from './server';
import { statCommand } from './stat';

export const COMMANDS: Record<string, Command> = {
  server: serverCommand,
  stat: statCommand,
  doctor: doctorCommand,
  bench: benchCommand,
  guest: guestCommand,
};

function version(): string {
  for (const file of [path.join(__dirname, '..', '..', '..', 'package.json'), path.join(__dirname, '..', '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'zivm' && pkg.version) return pkg.version;
    } catch {
      // Not at this path (a checkout and a packed install differ): try the next.
    }
  }
  return 'unknown';
}

function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  const lines = Object.entries(COMMANDS).map(([name, cmd]) => `  ${name.padEnd(width)}  ${cmd.summary}`);
  return `usage: zivm <command> [options]

commands:
${lines.join('\n')}

  zivm <command> --help   options of a command
  zivm --version          print the version
`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) {
    process.stderr.write(mainUsage());
    return 2;
  }
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(mainUsage());
    return 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = Object.prototype.hasOwnProperty.call(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!command) {
    process.stderr.write(`zivm: unknown command ${cmd}\n\n${mainUsage()}`);
    return 2;
  }
  try {
    return await command.run(args);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`zivm ${cmd}: ${err.message}\n\n${command.usage}`);
      return 2;
    }
    throw err;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`zivm: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
