/**
 * The results of a run: the JSON document's shape, the text table and the
 * SVG bar chart (hand-written, no dependencies).
 */
import { Json, Metric, Summary, TRANSPORTS, TRANSPORT_LABELS, TransportKey } from './common';
import { fmt, ratioCell, summaryCell, textTable } from './format';

export interface TrialRecord {
  case: string;
  transport: TransportKey;
  trial: number;
  ok: boolean;
  error?: string;
  seconds: number;
  metrics?: Record<string, number>;
  /** Transports the sockets of each side reported, e.g. { client: { shm: 1 }, server: { shm: 1 } }. */
  seen?: Record<string, Record<string, number>>;
  detail?: Json;
}

export interface MetricResult extends Metric {
  /** Medians and spread over the successful trials, per transport. */
  results: Partial<Record<TransportKey, Summary>>;
  /** Quotients of medians: zivm shm over node:net TCP, over node:net Unix, and zivm's TCP fallback over node:net TCP. */
  ratios: { shmOverTcp?: number; shmOverUnix?: number; fallbackOverTcp?: number };
}

export interface CaseResult {
  name: string;
  method: string;
  seconds: number;
  metrics: MetricResult[];
  trials: TrialRecord[];
}

export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  kernel: string;
  platform: string;
  memoryGiB: number;
  loadavgStart: number[];
  loadavgEnd?: number[];
}

export interface Results {
  tool: string;
  version: number;
  date: string;
  zivm: { version: string; commit?: string };
  machine: Machine;
  settings: Json;
  method: string[];
  transports: Record<TransportKey, string>;
  cases: CaseResult[];
  errors: string[];
  seconds: number;
}

const SHORT: Record<TransportKey, string> = {
  'zivm-shm': 'zivm shm',
  'zivm-tcp': 'zivm tcp-fb',
  'net-tcp': 'net tcp',
  'net-unix': 'net unix',
};

function ratio(first: Summary | undefined, second: Summary | undefined): number | undefined {
  if (!first || !second || !(second.median > 0)) return undefined;
  return first.median / second.median;
}

export function ratios(results: MetricResult['results']): MetricResult['ratios'] {
  return {
    shmOverTcp: ratio(results['zivm-shm'], results['net-tcp']),
    shmOverUnix: ratio(results['zivm-shm'], results['net-unix']),
    fallbackOverTcp: ratio(results['zivm-tcp'], results['net-tcp']),
  };
}

/** The text table: one row per case/metric, one column per transport, then the ratios. */
export function table(res: Results): string {
  const head = ['case', 'metric', 'unit', ...TRANSPORTS.map((target) => SHORT[target]), 'shm/tcp', 'shm/unix'];
  const rows: string[][] = [];
  for (const item of res.cases) {
    for (const msg of item.metrics) {
      rows.push([
        item.name,
        msg.label,
        `${msg.unit} ${msg.better === 'higher' ? '↑' : '↓'}`,
        ...TRANSPORTS.map((target) => summaryCell(msg.results[target])),
        ratioCell(msg.ratios.shmOverTcp),
        ratioCell(msg.ratios.shmOverUnix),
      ]);
    }
  }
  // A case's name on its first row only.
  const shown = rows.map((res2, i) => (i > 0 && res2[0] === rows[i - 1][0] ? ['', ...res2.slice(1)] : res2));
  return textTable(head, shown, 3);
}

/** What goes under the table: how to read it, the machine, the method. */
export function notes(res: Results): string {
  const msg = res.machine;
  const lines = [
    '',
    `Medians over ${res.settings.trials} trial${res.settings.trials === 1 ? '' : 's'} per transport, (min–max) across trials; ↑ higher is better, ↓ lower is better;`,
    'shm/tcp and shm/unix are quotients of the medians (zivm over shm divided by node:net over TCP loopback / over a Unix socket).',
    'Columns: ' + TRANSPORTS.map((target) => `${SHORT[target]} = ${res.transports[target]}`).join('; ') + '.',
    '',
    `Machine: ${msg.cpu}, ${msg.cores} cores, ${msg.memoryGiB} GiB; Linux ${msg.kernel}; Node ${msg.node}; load average at start ${msg.loadavgStart.map((val) => val.toFixed(2)).join(' ')}` +
      (msg.loadavgEnd ? `, at end ${msg.loadavgEnd.map((val) => val.toFixed(2)).join(' ')}` : '') +
      '.',
    `zivm ${res.zivm.version}${res.zivm.commit ? ` (${res.zivm.commit})` : ''}; run took ${res.seconds.toFixed(0)} s on ${res.date}.`,
    '',
    'Method:',
    ...res.method.map((str) => `  - ${str}`),
    ...res.cases.map((item) => `  - ${item.name}: ${item.method}`),
  ];
  if (res.errors.length) lines.push('', `ERRORS (${res.errors.length}, those trials are not in the figures):`, ...res.errors.map((entry) => `  - ${entry}`));
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------

const COLORS: Record<TransportKey, string> = {
  'zivm-shm': '#d95f02',
  'zivm-tcp': '#fdae6b',
  'net-tcp': '#1b9e77',
  'net-unix': '#7570b3',
};

function esc(str: string): string {
  return str.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A grid of small bar charts, one per case/metric, each on its own scale, with min–max whiskers. */
export function svg(res: Results): string {
  const panels: { title: string; sub: string; m: MetricResult }[] = [];
  for (const item of res.cases)
    for (const msg2 of item.metrics) panels.push({ title: `${item.name}: ${msg2.label}`, sub: `${msg2.unit}, ${msg2.better} is better`, m: msg2 });
  const cols = 4;
  const pw = 280;
  const ph = 210;
  const top = 78;
  const rowsN = Math.max(1, Math.ceil(panels.length / cols));
  const word = cols * pw + 20;
  const hdr = top + rowsN * ph + 20;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${word}" height="${hdr}" viewBox="0 0 ${word} ${hdr}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${word}" height="${hdr}" fill="#fff"/>`);
  out.push(
    `<text x="10" y="22" font-size="16" font-weight="bold">zivm benchmarks: medians of ${res.settings.trials} trial(s), whiskers min–max (cut ones marked)</text>`,
  );
  const msg = res.machine;
  out.push(`<text x="10" y="40" fill="#444">${esc(`${msg.cpu}, ${msg.cores} cores, Linux ${msg.kernel}, Node ${msg.node}, ${res.date}`)}</text>`);
  let lx = 10;
  for (const target of TRANSPORTS) {
    out.push(`<rect x="${lx}" y="52" width="12" height="12" fill="${COLORS[target]}"/>`);
    const label = `${TRANSPORT_LABELS[target]}`;
    out.push(`<text x="${lx + 16}" y="62">${esc(label)}</text>`);
    lx += 30 + label.length * 6.5;
  }
  panels.forEach((part, i) => {
    const x0 = 10 + (i % cols) * pw;
    const y0 = top + Math.floor(i / cols) * ph;
    out.push(`<g transform="translate(${x0},${y0})">`);
    out.push(`<rect x="0" y="0" width="${pw - 10}" height="${ph - 10}" fill="#fafafa" stroke="#ddd"/>`);
    const title = part.title.length > 44 ? part.title.slice(0, 43) + '…' : part.title;
    out.push(`<text x="8" y="16" font-weight="bold">${esc(title)}</text>`);
    out.push(`<text x="8" y="30" fill="#666">${esc(part.sub)}</text>`);
    const present = TRANSPORTS.filter((target) => part.m.results[target]?.n);
    // Scale to the medians (and the middle half of the trials), not to one wild trial: longer whiskers are cut and labelled.
    const medMax = Math.max(0, ...present.map((target) => part.m.results[target]!.median));
    const q3Max = Math.max(0, ...present.map((target) => part.m.results[target]!.q3));
    const absMax = Math.max(0, ...present.map((target) => part.m.results[target]!.max));
    const max = Math.min(absMax, Math.max(medMax * 1.6, q3Max)) || absMax;
    const chartTop = 48;
    const chartH = ph - 10 - chartTop - 22;
    const base = chartTop + chartH;
    const scale = max > 0 ? chartH / (max * 1.08) : 0;
    const yval = (value: number): number => base - Math.min(value, max * 1.08) * scale;
    const bw = 44;
    const gap = (pw - 10 - 4 * bw) / 5;
    out.push(`<line x1="6" y1="${base}" x2="${pw - 16}" y2="${base}" stroke="#999"/>`);
    if (present.length && absMax === 0) out.push(`<text x="${(pw - 10) / 2}" y="${chartTop + chartH / 2}" text-anchor="middle" fill="#666">all zero</text>`);
    TRANSPORTS.forEach((target, j) => {
      const summary = part.m.results[target];
      const bx = gap + j * (bw + gap);
      out.push(`<text x="${bx + bw / 2}" y="${base + 14}" text-anchor="middle" fill="#444" font-size="10">${esc(SHORT[target])}</text>`);
      if (!summary || !summary.n) {
        out.push(`<text x="${bx + bw / 2}" y="${base - 4}" text-anchor="middle" fill="#999">n/a</text>`);
        return;
      }
      const yBar = yval(summary.median);
      out.push(
        `<rect x="${bx}" y="${yBar.toFixed(1)}" width="${bw}" height="${(base - yBar).toFixed(1)}" fill="${COLORS[target]}"><title>${esc(`${TRANSPORT_LABELS[target]}: ${summaryCell(summary)} ${part.m.unit}`)}</title></rect>`,
      );
      const yMin = yval(summary.min);
      const yMax = yval(summary.max);
      const cut = summary.max > max * 1.08;
      const cx = bx + bw / 2;
      if (summary.n > 1 && summary.max > summary.min) {
        out.push(`<line x1="${cx}" y1="${yMin.toFixed(1)}" x2="${cx}" y2="${yMax.toFixed(1)}" stroke="#222"/>`);
        out.push(`<line x1="${cx - 6}" y1="${yMin.toFixed(1)}" x2="${cx + 6}" y2="${yMin.toFixed(1)}" stroke="#222"/>`);
        if (cut)
          out.push(`<path d="M${cx - 5},${(yMax + 6).toFixed(1)} L${cx},${yMax.toFixed(1)} L${cx + 5},${(yMax + 6).toFixed(1)}" fill="none" stroke="#222"/>`);
        else out.push(`<line x1="${cx - 6}" y1="${yMax.toFixed(1)}" x2="${cx + 6}" y2="${yMax.toFixed(1)}" stroke="#222"/>`);
      }
      if (cut) out.push(`<text x="${cx + 8}" y="${(yMax + 8).toFixed(1)}" font-size="9" fill="#555">max ${esc(fmt(summary.max))}</text>`);
      const labelY = Math.min(yBar, summary.n > 1 && !cut ? yMax : yBar) - 4;
      out.push(`<text x="${cx}" y="${(cut ? yBar - 4 : labelY).toFixed(1)}" text-anchor="middle" font-size="10">${esc(fmt(summary.median))}</text>`);
    });
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
