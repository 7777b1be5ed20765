/** What every `zivm` subcommand is, and its argument parsing (node's util.parseArgs). */
import { parseArgs, ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors';

export interface Command {
  /** One line for `zivm --help`. */
  summary: string;
  /** Full usage text for `zivm <name> --help` and usage errors. */
  usage: string;
  /** Runs with the arguments after the command's name; resolves with the exit code (2: bad usage). */
  run(args: string[]): number | Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses `args` against `options` (plus --help): the values and the
 * positional arguments. Anything unknown or malformed is a UsageError.
 */
export function parse<O extends Options>(
  args: string[],
  options: O,
): { values: Record<keyof O | 'help', string | boolean | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean' } }, allowPositionals: true, strict: true });
    return { values: parsed.values as unknown as Record<keyof O | 'help', string | boolean | undefined>, positionals: parsed.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

/** A whole number from `min` to `max`, or `fallback` when the option is absent. */
export function intOption(value: string | boolean | undefined, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  const count = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value.trim()) || count < min || count > max)
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}`);
  return count;
}

/** No positional arguments beyond the first `max`. */
export function noMore(positionals: string[], max = 0): void {
  if (positionals.length > max) throw new UsageError(`unexpected argument ${positionals[max]}`);
}
