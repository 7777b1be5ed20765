/** Text output of the CLI: sizes and tables. */

/** `262144` -> `256 KiB` (exact multiples only; else bytes). */
export function bytesText(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let power = 0;
  let value = bytes;
  while (value >= 1024 && value % 1024 === 0 && power < units.length - 1) {
    value /= 1024;
    power++;
  }
  return `${value} ${units[power]}`;
}

/** `262144` -> `256K`, as sizes are written on the command line. */
export function sizeText(count: number): string {
  for (const [multiple, suffix] of [
    [1 << 30, 'G'],
    [1 << 20, 'M'],
    [1 << 10, 'K'],
  ] as const) {
    if (count >= multiple && count % multiple === 0) return `${count / multiple}${suffix}`;
  }
  return String(count);
}

/** Rows as aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return (
    rows
      .map(
        (row) =>
          '  ' +
          row
            .map((cell, i) => cell.padEnd(widths[i]))
            .join('  ')
            .trimEnd(),
      )
      .join('\n') + '\n'
  );
}
