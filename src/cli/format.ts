/** Text output of the CLI: sizes and tables. */

/** `262144` -> `256 KiB` (exact multiples only; else bytes). */
export function bytesText(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && value % 1024 === 0 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value} ${units[unit]}`;
}

/** `262144` -> `256K`, as sizes are written on the command line. */
export function sizeText(count: number): string {
  for (const [unit, subject] of [
    [1 << 30, 'G'],
    [1 << 20, 'M'],
    [1 << 10, 'K'],
  ] as const) {
    if (count >= unit && count % unit === 0) return `${count / unit}${subject}`;
  }
  return String(count);
}

/** Rows as aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, i) => Math.max(...rows.map((res) => res[i].length)));
  return rows.map((res) => '  ' + res.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}
