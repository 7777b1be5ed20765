/** Text output of the CLI: sizes and tables. */

/** `262144` -> `256 KiB` (exact multiples only; else bytes). */
export function bytesText(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = bytes;
  while (v >= 1024 && v % 1024 === 0 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v} ${units[u]}`;
}

/** `262144` -> `256K`, as sizes are written on the command line. */
export function sizeText(n: number): string {
  for (const [u, s] of [
    [1 << 30, 'G'],
    [1 << 20, 'M'],
    [1 << 10, 'K'],
  ] as const) {
    if (n >= u && n % u === 0) return `${n / u}${s}`;
  }
  return String(n);
}

/** Rows as aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => '  ' + r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}
