/**
 * The benchmarks' command lines and text: options read with util.parseArgs,
 * sizes and numbers checked, and figures, sizes and tables written out.
 * Shared by the driver (run.ts, report.ts) and the guest benchmark (vm.ts).
 */
import { parseArgs } from 'node:util';

/** A mistake in the command line: the caller prints it with the usage text and exits 2. */
export class UsageError extends Error {}

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;
export type OptionValues = Record<string, string | boolean | undefined>;

/**
 * Reads `argv` (no node/script) with util.parseArgs: `--name value`,
 * `--name=value` and flags; no positional argument. Its errors become
 * UsageErrors that name the option.
 */
export function readOptions(argv: string[], spec: OptionSpec): OptionValues {
  try {
    return parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }).values;
  } catch (err2) {
    const err = err2 as Error & { code?: string };
    // parseArgs names what it stumbled on first in quotes: '--foo', 'pos', '-h, --help', '--cases <value>'.
    const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? '';
    const option = /--[\w-]+/.exec(quoted)?.[0] ?? quoted;
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${quoted}`);
    if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument ${quoted}`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const kind = spec[option.slice(2)]?.type;
      throw new UsageError(kind === 'boolean' ? `${option} takes no value` : `${option} needs a value`);
    }
    throw err2;
  }
}

/** The value of a string option, if given. */
export function stringOption(value: string | boolean | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** A comma-separated list option, trimmed, empty items left out; undefined if not given. */
export function listOption(value: string | boolean | undefined): string[] | undefined {
  return stringOption(value)
    ?.split(',')
    .map((str) => str.trim())
    .filter(Boolean);
}

/** A number above 0 and at most `max` (a whole one if `integer`). */
export function positive(value: string, name: string, integer: boolean, max: number): number {
  const count = Number(value);
  if (value.trim() === '' || !Number.isFinite(count) || count <= 0 || count > max || (integer && !Number.isInteger(count))) {
    throw new UsageError(`--${name} must be a ${integer ? 'whole ' : ''}number above 0 and at most ${max}`);
  }
  return count;
}

/** A whole number from `min` to `max`. */
export function wholeNumber(value: string | undefined, name: string, min: number, max: number): number {
  const count = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isInteger(count) || count < min || count > max)
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}`);
  return count;
}

/** A byte count: 64, 1K, 64K, 1M (K and M are 1024 and 1024², a trailing B or iB is allowed), from 1 to `max`. */
export function parseSize(value: string, name: string, max: number): number {
  const match = /^\s*(\d+)\s*([kKmM]?)(?:i?[bB])?\s*$/.exec(value);
  if (!match) throw new UsageError(`bad size ${JSON.stringify(value)} for --${name} (try 64, 1K, 64K, 1M)`);
  const count = Number(match[1]) * (match[2] ? (match[2].toLowerCase() === 'k' ? 1024 : 1 << 20) : 1);
  if (count < 1 || count > max) throw new UsageError(`--${name} ${value} out of range (1 B to ${sizeLabel(max)})`);
  return count;
}

/** 3 significant figures, no exponent for the ranges a benchmark sees. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return '-';
  const lhs = Math.abs(value);
  if (lhs >= 1000) return Math.round(value).toLocaleString('en-US');
  if (lhs >= 100) return value.toFixed(0);
  if (lhs >= 10) return value.toFixed(1);
  if (lhs >= 1) return value.toFixed(2);
  if (lhs === 0) return '0';
  return value.toPrecision(2);
}

/** A byte count as people write it: 64 B, 16 KiB, 1 MiB (KiB or MiB only when exact). */
export function sizeLabel(count: number): string {
  if (count >= 1 << 20 && count % (1 << 20) === 0) return `${count >> 20} MiB`;
  if (count >= 1024 && count % 1024 === 0) return `${count >> 10} KiB`;
  return `${count} B`;
}

/** A quotient of medians: 1.23x, or '-'. */
export function ratioCell(res: number | undefined): string {
  return res === undefined || !Number.isFinite(res) ? '-' : `${res.toFixed(2)}x`;
}

/** What a benchmark table shows of a figure: median (min–max over trials), or the range alone. */
export function summaryCell(slotWord: { n: number; median: number; min: number; max: number } | undefined, range = false): string {
  if (!slotWord || !slotWord.n) return '-';
  if (range) return `${fmt(slotWord.min)}–${fmt(slotWord.max)}`;
  return slotWord.n === 1 ? fmt(slotWord.median) : `${fmt(slotWord.median)} (${fmt(slotWord.min)}–${fmt(slotWord.max)})`;
}

/**
 * A text table: the head, a rule, the rows; columns from `numericFrom` on
 * are right-aligned (figures), the others left-aligned.
 */
export function textTable(head: string[], rows: string[][], numericFrom: number): string {
  const width = head.map((holder, i) => Math.max(holder.length, ...rows.map((res) => res[i].length)));
  const line = (res: string[]): string =>
    res
      .map((value, i) => (i >= numericFrom ? value.padStart(width[i]) : value.padEnd(width[i])))
      .join('  ')
      .trimEnd();
  return [line(head), width.map((word) => '-'.repeat(word)).join('  '), ...rows.map(line)].join('\n') + '\n';
}
