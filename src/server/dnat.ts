/**
 * Where a node's DNAT rules send a connection, as kube-proxy writes them in
 * iptables mode (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* -> DNAT), read
 * from `iptables-save -t nat` in the daemon's network namespace (the node's)
 * and followed from PREROUTING, the way a packet from a pod's veth goes.
 *
 * Only what can be told for certain is answered: the rules' matches on
 * source and destination address, protocol, destination port, comments,
 * the node's own addresses (addrtype LOCAL), random statistics (picked as the kernel would: one draw per rule), marks
 * and jumps. A rule with a match of any other kind that the connection
 * reaches means "cannot tell" (the connection stays TCP), as do nftables
 * rules iptables-save does not show.
 */
import { execFileSync } from 'node:child_process';
import { type Addr, isOwnAddress, parseAddr } from '../shm/addrs';

/** How long the rules read are used before they are read again. */
const RULES_MS = 1000;

interface Rule {
  /** The rule's words after `-A CHAIN`. */
  words: string[];
}

export type Verdict = { to: Addr; port: number } | { none: true } | { unknown: string };

let cache: { at: number; chains: Map<string, Rule[]> | undefined; why?: string } | undefined;

/** Splits a rule line into words, keeping "quoted strings" whole. */
function splitWords(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let match = re.exec(line); match; match = re.exec(line)) out.push(match[1] ?? match[2]);
  return out;
}

function readRules(): Map<string, Rule[]> | string {
  let text: string;
  try {
    text = execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 });
  } catch (err) {
    return `cannot read the node's NAT rules (iptables-save: ${(err as Error).message.split('\n')[0]})`;
  }
  const chains = new Map<string, Rule[]>();
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0];
      if (!chains.has(name)) chains.set(name, []);
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const words = splitWords(line);
    const chain = words[1];
    if (!chains.has(chain)) chains.set(chain, []);
    chains.get(chain)!.push({ words: words.slice(2) });
  }
  return chains;
}

function rules(): { chains?: Map<string, Rule[]>; why?: string } {
  const now = Date.now();
  if (!cache || now - cache.at > RULES_MS) {
    const read = readRules();
    cache = typeof read === 'string' ? { at: now, chains: undefined, why: read } : { at: now, chains: read };
  }
  return { chains: cache.chains, why: cache.why };
}

/** Is `addr` within `cidr` (a.b.c.d[/n] or an IPv6 prefix)? undefined if it cannot be read. */
function within(addr: Addr, cidr: string): boolean | undefined {
  const [text, bits] = cidr.split('/');
  const net = parseAddr(text);
  if (!net) return undefined;
  if (net.family !== addr.family) return false;
  const length = bits === undefined ? (net.family === 4 ? 32 : 128) : Number(bits);
  if (!Number.isInteger(length) || length < 0 || length > (net.family === 4 ? 32 : 128)) return undefined;
  for (let bit = 0; bit < length; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((net.bytes[byte] & mask) !== (addr.bytes[byte] & mask)) return false;
  }
  return true;
}

/** Does the rule match a TCP connection from `src` to (dst, port)? undefined: cannot tell. */
function matches(words: string[], src: Addr, dst: Addr, port: number, draw: () => number): { match: boolean | undefined; target: string[] } {
  let match: boolean | undefined = true;
  let target: string[] = [];
  for (let i = 0; i < words.length && match !== false; i++) {
    const negate = words[i] === '!';
    if (negate) i++;
    const word = words[i];
    const arg = words[i + 1];
    let result: boolean | undefined;
    switch (word) {
      case '-s':
      case '-d':
        result = within(word === '-s' ? src : dst, arg);
        i++;
        break;
      case '-p':
        result = arg === 'tcp' || arg === '6';
        i++;
        break;
      case '--dport':
        result = Number(arg) === port;
        i++;
        break;
      case '-m':
        // Modules whose options follow: tcp (--dport), comment, statistic.
        if (arg !== 'tcp' && arg !== 'comment' && arg !== 'statistic' && arg !== 'addrtype') return { match: undefined, target };
        result = true;
        i++;
        break;
      case '--comment':
        result = true;
        i++;
        break;
      case '--dst-type':
        // The node's own addresses (the daemon runs in the node's network namespace).
        if (arg !== 'LOCAL') return { match: undefined, target };
        result = isOwnAddress(dst);
        i++;
        break;
      case '--mode':
        if (arg !== 'random') return { match: undefined, target };
        result = true;
        i++;
        break;
      case '--probability': {
        const probability = Number(arg);
        if (!(probability >= 0 && probability <= 1)) return { match: undefined, target };
        result = draw() < probability;
        i++;
        break;
      }
      case '-j':
        target = words.slice(i + 1);
        i = words.length;
        result = true;
        break;
      default:
        return { match: undefined, target };
    }
    if (result === undefined) return { match: undefined, target };
    match = negate ? !result : result;
  }
  return { match, target };
}

/**
 * Where the node's DNAT rules send a TCP connection from `src` to (dst,
 * port): the destination they pick, none (no DNAT rule applies), or why it
 * cannot be told. `draw` picks the random numbers (Math.random by default).
 */
export function dnatTarget(src: Addr, dst: Addr, port: number, draw: () => number = Math.random): Verdict {
  const { chains, why } = rules();
  if (!chains) return { unknown: why ?? 'no NAT rules' };
  return follow(chains, 'PREROUTING', src, dst, port, draw, 0);
}

/** For tests: rules given as iptables-save text, not read from the kernel. */
export function dnatTargetIn(text: string, src: Addr, dst: Addr, port: number, draw: () => number = Math.random): Verdict {
  const chains = new Map<string, Rule[]>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('-A ')) continue;
    const words = splitWords(line);
    if (!chains.has(words[1])) chains.set(words[1], []);
    chains.get(words[1])!.push({ words: words.slice(2) });
  }
  return follow(chains, 'PREROUTING', src, dst, port, draw, 0);
}

/** What following a chain came to: a verdict, or (`back`) its end or a RETURN, where the caller goes on. */
type Step = Verdict | { back: true };

function follow(chains: Map<string, Rule[]>, chain: string, src: Addr, dst: Addr, port: number, draw: () => number, depth: number): Verdict {
  const step = walk(chains, chain, src, dst, port, draw, depth);
  return 'back' in step ? { none: true } : step;
}

function walk(chains: Map<string, Rule[]>, chain: string, src: Addr, dst: Addr, port: number, draw: () => number, depth: number): Step {
  if (depth > 32) return { unknown: 'NAT rules nested too deep' };
  for (const rule of chains.get(chain) ?? []) {
    const { match, target } = matches(rule.words, src, dst, port, draw);
    if (match === undefined) return { unknown: `a NAT rule zivm cannot read (-A ${chain} ${rule.words.join(' ')})` };
    if (!match) continue;
    const [name, ...opts] = target;
    if (name === undefined || name === 'MARK' || name === 'LOG') continue;
    if (name === 'RETURN') return { back: true };
    if (name === 'ACCEPT' || name === 'MASQUERADE' || name === 'SNAT') return { none: true };
    if (name === 'DNAT') {
      const at = opts.indexOf('--to-destination');
      const dest = at >= 0 ? opts[at + 1] : undefined;
      const parsed = dest ? /^\[?([^\]]+?)\]?:(\d+)$/.exec(dest) : null;
      const to = parsed ? parseAddr(parsed[1]) : dest ? parseAddr(dest) : undefined;
      if (!to) return { unknown: `a DNAT target zivm cannot read (${dest ?? 'none'})` };
      return { to, port: parsed ? Number(parsed[2]) : port };
    }
    if (!chains.has(name)) return { unknown: `a NAT target zivm cannot follow (${name})` };
    const inner = walk(chains, name, src, dst, port, draw, depth + 1);
    if (!('back' in inner)) return inner;
  }
  return { back: true };
}
