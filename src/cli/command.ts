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
export function parse<O extends Options>(args: string[], options: O): { values: Record<keyof O | 'help', string | boolean | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, help: { type: 'boolean' } }, allowPositionals: true, strict: true });
    return { values: r.values as unknown as Record<keyof O | 'help', string | boolean | undefined>, positionals: r.positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

/** A whole number from `min` to `max`, or `fallback` when the option is absent. */
export function intOption(v: string | boolean | undefined, name: string, min: number, max: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim()) || n < min || n > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max}`);
  return n;
}

/** No positional arguments beyond the first `max`. */
export function noMore(positionals: string[], max = 0): void {
  if (positionals.length > max) throw new UsageError(`unexpected argument ${positionals[max]}`);
}
