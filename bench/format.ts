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
    return parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }).values as OptionValues;
  } catch (e) {
    const err = e as Error & { code?: string };
    // parseArgs names what it stumbled on first in quotes: '--foo', 'pos', '-h, --help', '--cases <value>'.
    const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? '';
    const option = /--[\w-]+/.exec(quoted)?.[0] ?? quoted;
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${quoted}`);
    if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument ${quoted}`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const kind = spec[option.slice(2)]?.type;
      throw new UsageError(kind === 'boolean' ? `${option} takes no value` : `${option} needs a value`);
    }
    throw e;
  }
}

/** The value of a string option, if given. */
export function stringOption(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** A comma-separated list option, trimmed, empty items left out; undefined if not given. */
export function listOption(v: string | boolean | undefined): string[] | undefined {
  return stringOption(v)
    ?.split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/** A number above 0 and at most `max` (a whole one if `integer`). */
export function positive(v: string, name: string, integer: boolean, max: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be a ${integer ? 'whole ' : ''}number above 0 and at most ${max}`);
  }
  return n;
}

/** A whole number from `min` to `max`. */
export function wholeNumber(v: string | undefined, name: string, min: number, max: number): number {
  const n = Number(v);
  if (v === undefined || v.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max}`);
  return n;
}

/** A byte count: 64, 1K, 64K, 1M (K and M are 1024 and 1024², a trailing B or iB is allowed), from 1 to `max`. */
export function parseSize(v: string, name: string, max: number): number {
  const m = /^\s*(\d+)\s*([kKmM]?)(?:i?[bB])?\s*$/.exec(v);
  if (!m) throw new UsageError(`bad size ${JSON.stringify(v)} for --${name} (try 64, 1K, 64K, 1M)`);
  const n = Number(m[1]) * (m[2] ? (m[2].toLowerCase() === 'k' ? 1024 : 1 << 20) : 1);
  if (n < 1 || n > max) throw new UsageError(`--${name} ${v} out of range (1 B to ${sizeLabel(max)})`);
  return n;
}

/** 3 significant figures, no exponent for the ranges a benchmark sees. */
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

/** A byte count as people write it: 64 B, 16 KiB, 1 MiB (KiB or MiB only when exact). */
export function sizeLabel(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n >> 10} KiB`;
  return `${n} B`;
}

/** A quotient of medians: 1.23x, or '-'. */
export function ratioCell(r: number | undefined): string {
  return r === undefined || !Number.isFinite(r) ? '-' : `${r.toFixed(2)}x`;
}

/** What a benchmark table shows of a figure: median (min–max over trials), or the range alone. */
export function summaryCell(s: { n: number; median: number; min: number; max: number } | undefined, range = false): string {
  if (!s || !s.n) return '-';
  if (range) return `${fmt(s.min)}–${fmt(s.max)}`;
  return s.n === 1 ? fmt(s.median) : `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

/**
 * A text table: the head, a rule, the rows; columns from `numericFrom` on
 * are right-aligned (figures), the others left-aligned.
 */
export function textTable(head: string[], rows: string[][], numericFrom: number): string {
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string =>
    r
      .map((v, i) => (i >= numericFrom ? v.padStart(width[i]) : v.padEnd(width[i])))
      .join('  ')
      .trimEnd();
  return [line(head), width.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n';
}
