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

function ratio(a: Summary | undefined, b: Summary | undefined): number | undefined {
  if (!a || !b || !(b.median > 0)) return undefined;
  return a.median / b.median;
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
  const head = ['case', 'metric', 'unit', ...TRANSPORTS.map((t) => SHORT[t]), 'shm/tcp', 'shm/unix'];
  const rows: string[][] = [];
  for (const c of res.cases) {
    for (const m of c.metrics) {
      rows.push([
        c.name,
        m.label,
        `${m.unit} ${m.better === 'higher' ? '↑' : '↓'}`,
        ...TRANSPORTS.map((t) => summaryCell(m.results[t])),
        ratioCell(m.ratios.shmOverTcp),
        ratioCell(m.ratios.shmOverUnix),
      ]);
    }
  }
  // A case's name on its first row only.
  const shown = rows.map((r, i) => (i > 0 && r[0] === rows[i - 1][0] ? ['', ...r.slice(1)] : r));
  return textTable(head, shown, 3);
}

/** What goes under the table: how to read it, the machine, the method. */
export function notes(res: Results): string {
  const m = res.machine;
  const lines = [
    '',
    `Medians over ${res.settings.trials} trial${res.settings.trials === 1 ? '' : 's'} per transport, (min–max) across trials; ↑ higher is better, ↓ lower is better;`,
    'shm/tcp and shm/unix are quotients of the medians (zivm over shm divided by node:net over TCP loopback / over a Unix socket).',
    'Columns: ' + TRANSPORTS.map((t) => `${SHORT[t]} = ${res.transports[t]}`).join('; ') + '.',
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; Linux ${m.kernel}; Node ${m.node}; load average at start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')}` +
      (m.loadavgEnd ? `, at end ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' ')}` : '') +
      '.',
    `zivm ${res.zivm.version}${res.zivm.commit ? ` (${res.zivm.commit})` : ''}; run took ${res.seconds.toFixed(0)} s on ${res.date}.`,
    '',
    'Method:',
    ...res.method.map((x) => `  - ${x}`),
    ...res.cases.map((c) => `  - ${c.name}: ${c.method}`),
  ];
  if (res.errors.length) lines.push('', `ERRORS (${res.errors.length}, those trials are not in the figures):`, ...res.errors.map((e) => `  - ${e}`));
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

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A grid of small bar charts, one per case/metric, each on its own scale, with min–max whiskers. */
export function svg(res: Results): string {
  const panels: { title: string; sub: string; m: MetricResult }[] = [];
  for (const c of res.cases) for (const m of c.metrics) panels.push({ title: `${c.name}: ${m.label}`, sub: `${m.unit}, ${m.better} is better`, m });
  const cols = 4;
  const pw = 280;
  const ph = 210;
  const top = 78;
  const rowsN = Math.max(1, Math.ceil(panels.length / cols));
  const W = cols * pw + 20;
  const H = top + rowsN * ph + 20;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="10" y="22" font-size="16" font-weight="bold">zivm benchmarks: medians of ${res.settings.trials} trial(s), whiskers min–max (cut ones marked)</text>`);
  const m = res.machine;
  out.push(`<text x="10" y="40" fill="#444">${esc(`${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node}, ${res.date}`)}</text>`);
  let lx = 10;
  for (const t of TRANSPORTS) {
    out.push(`<rect x="${lx}" y="52" width="12" height="12" fill="${COLORS[t]}"/>`);
    const label = `${TRANSPORT_LABELS[t]}`;
    out.push(`<text x="${lx + 16}" y="62">${esc(label)}</text>`);
    lx += 30 + label.length * 6.5;
  }
  panels.forEach((p, i) => {
    const x0 = 10 + (i % cols) * pw;
    const y0 = top + Math.floor(i / cols) * ph;
    out.push(`<g transform="translate(${x0},${y0})">`);
    out.push(`<rect x="0" y="0" width="${pw - 10}" height="${ph - 10}" fill="#fafafa" stroke="#ddd"/>`);
    const title = p.title.length > 44 ? p.title.slice(0, 43) + '…' : p.title;
    out.push(`<text x="8" y="16" font-weight="bold">${esc(title)}</text>`);
    out.push(`<text x="8" y="30" fill="#666">${esc(p.sub)}</text>`);
    const present = TRANSPORTS.filter((t) => p.m.results[t]?.n);
    // Scale to the medians (and the middle half of the trials), not to one wild trial: longer whiskers are cut and labelled.
    const medMax = Math.max(0, ...present.map((t) => p.m.results[t]!.median));
    const q3Max = Math.max(0, ...present.map((t) => p.m.results[t]!.q3));
    const absMax = Math.max(0, ...present.map((t) => p.m.results[t]!.max));
    const max = Math.min(absMax, Math.max(medMax * 1.6, q3Max)) || absMax;
    const chartTop = 48;
    const chartH = ph - 10 - chartTop - 22;
    const base = chartTop + chartH;
    const scale = max > 0 ? chartH / (max * 1.08) : 0;
    const y = (v: number): number => base - Math.min(v, max * 1.08) * scale;
    const bw = 44;
    const gap = (pw - 10 - 4 * bw) / 5;
    out.push(`<line x1="6" y1="${base}" x2="${pw - 16}" y2="${base}" stroke="#999"/>`);
    if (present.length && absMax === 0) out.push(`<text x="${(pw - 10) / 2}" y="${chartTop + chartH / 2}" text-anchor="middle" fill="#666">all zero</text>`);
    TRANSPORTS.forEach((t, j) => {
      const s = p.m.results[t];
      const bx = gap + j * (bw + gap);
      out.push(`<text x="${bx + bw / 2}" y="${base + 14}" text-anchor="middle" fill="#444" font-size="10">${esc(SHORT[t])}</text>`);
      if (!s || !s.n) {
        out.push(`<text x="${bx + bw / 2}" y="${base - 4}" text-anchor="middle" fill="#999">n/a</text>`);
        return;
      }
      const yBar = y(s.median);
      out.push(
        `<rect x="${bx}" y="${yBar.toFixed(1)}" width="${bw}" height="${(base - yBar).toFixed(1)}" fill="${COLORS[t]}"><title>${esc(`${TRANSPORT_LABELS[t]}: ${summaryCell(s)} ${p.m.unit}`)}</title></rect>`,
      );
      const yMin = y(s.min);
      const yMax = y(s.max);
      const cut = s.max > max * 1.08;
      const cx = bx + bw / 2;
      if (s.n > 1 && s.max > s.min) {
        out.push(`<line x1="${cx}" y1="${yMin.toFixed(1)}" x2="${cx}" y2="${yMax.toFixed(1)}" stroke="#222"/>`);
        out.push(`<line x1="${cx - 6}" y1="${yMin.toFixed(1)}" x2="${cx + 6}" y2="${yMin.toFixed(1)}" stroke="#222"/>`);
        if (cut) out.push(`<path d="M${cx - 5},${(yMax + 6).toFixed(1)} L${cx},${yMax.toFixed(1)} L${cx + 5},${(yMax + 6).toFixed(1)}" fill="none" stroke="#222"/>`);
        else out.push(`<line x1="${cx - 6}" y1="${yMax.toFixed(1)}" x2="${cx + 6}" y2="${yMax.toFixed(1)}" stroke="#222"/>`);
      }
      if (cut) out.push(`<text x="${cx + 8}" y="${(yMax + 8).toFixed(1)}" font-size="9" fill="#555">max ${esc(fmt(s.max))}</text>`);
      const labelY = Math.min(yBar, s.n > 1 && !cut ? yMax : yBar) - 4;
      out.push(`<text x="${cx}" y="${(cut ? yBar - 4 : labelY).toFixed(1)}" text-anchor="middle" font-size="10">${esc(fmt(s.median))}</text>`);
    });
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
