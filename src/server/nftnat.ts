/**
 * Where a node's nftables NAT chains send a TCP connection, read from
 * `nft -j list ruleset` (server/dnat.ts reads it, and iptables-save beside
 * it): every base chain of type nat on the prerouting hook (tables of the
 * ip, ip6 and inet families), in priority order, as the kernel runs them for
 * a connection's first packet: the first chain that translates the
 * destination decides.
 *
 * The expressions are the ones kube-proxy's nftables mode writes (table
 * ip/ip6 kube-proxy: nat-prerouting -> services, a verdict map keyed by
 * address . protocol . port -> service-* -> numgen random -> endpoint-* ->
 * dnat to): matches on the IP source and destination (an address, a prefix,
 * a range, a set), the transport protocol and destination port, and
 * concatenations of them, looked up in named and anonymous sets and verdict
 * maps; `numgen random` (drawn as the kernel draws: one number each time the
 * rule is reached); `fib saddr|daddr type local` (the node's own
 * addresses); jump, goto, return, continue, accept; `dnat to` an address and
 * port; mark setting, counters, logging and comments, passed over. Anything
 * else on the connection's way, a rule that drops it, or a set the kernel
 * fills as packets pass (session affinity) means "cannot tell", and why.
 */
import { type Addr, parseAddr, sameBytes } from '../shm/addrs';

export type Verdict = { to: Addr; port: number } | { none: true } | { unknown: string };

/** Nested jumps and gotos followed at most (the kernel's own limit is lower). */
const MAX_DEPTH = 32;
/** Rules evaluated for one connection at most. */
const MAX_STEPS = 100_000;

type Obj = Record<string, unknown>;

interface Rule {
  expr: unknown[];
}

interface NftSet {
  /** Elements as nft prints them (a map's are [key, data] pairs). */
  elem: unknown[];
  /** Elements added by the kernel as packets pass, or that time out. */
  dynamic: boolean;
}

interface Table {
  /** `family name`, as nft writes a table. */
  label: string;
  chains: Map<string, Rule[]>;
  sets: Map<string, NftSet>;
}

interface BaseChain {
  family: string;
  table: Table;
  name: string;
  prio: number;
  policy: unknown;
}

/** The nat prerouting chains of a ruleset, and the tables they reach into. */
export interface NftRuleset {
  base: BaseChain[];
}

/** A TCP connection being followed, with the random numbers it draws and what the node's own addresses are. */
export interface Conn {
  src: Addr;
  dst: Addr;
  port: number;
  draw: () => number;
  isLocal: (addr: Addr) => boolean;
}

/** The connection, and the rules evaluated for it so far. */
interface Packet extends Conn {
  steps: number;
}

/** A value read from the packet. */
type Value =
  | { kind: 'addr'; addr: Addr }
  | { kind: 'num'; num: number }
  | { kind: 'proto'; num: number }
  | { kind: 'nfproto'; word: string }
  | { kind: 'local'; local: boolean }
  | { kind: 'concat'; parts: Value[] };

/** What a rule's expression comes to: go on with the rule, the next rule, or a verdict. */
type Outcome = 'on' | 'next' | { jump: string } | { goto: string } | Step;
/** What following a chain came to: a verdict, accept (this base chain is done), or (`back`) its end or a return. */
type Step = Verdict | { accept: true } | { back: true };

const isObj = (value: unknown): value is Obj => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The one key of an expression object (`{ "match": {...} }`) and its value. */
function single(value: unknown): [string, unknown] | undefined {
  if (!isObj(value)) return undefined;
  const keys = Object.keys(value);
  return keys.length === 1 ? [keys[0], value[keys[0]]] : undefined;
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/** The ruleset `nft -j list ruleset` printed, or why it cannot be read. */
export function parseNft(text: string): NftRuleset | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'nft printed something other than JSON';
  }
  const list = isObj(doc) ? doc.nftables : undefined;
  if (!Array.isArray(list)) return 'nft printed no ruleset';
  const tables = new Map<string, Table>();
  const tableOf = (item: Obj): Table | undefined => {
    const { family, table: name } = item;
    if (typeof family !== 'string' || typeof name !== 'string') return undefined;
    const label = `${family} ${name}`;
    let table = tables.get(label);
    if (!table) tables.set(label, (table = { label, chains: new Map(), sets: new Map() }));
    return table;
  };
  const base: BaseChain[] = [];
  for (const item of list) {
    const [what, body] = single(item) ?? [];
    if (!isObj(body)) continue;
    const table = tableOf(body);
    if (!table) continue;
    if (what === 'chain' && typeof body.name === 'string') {
      if (!table.chains.has(body.name)) table.chains.set(body.name, []);
      const family = body.family as string;
      if (body.type === 'nat' && body.hook === 'prerouting' && (family === 'ip' || family === 'ip6' || family === 'inet')) {
        base.push({ family, table, name: body.name, prio: typeof body.prio === 'number' ? body.prio : NaN, policy: body.policy });
      }
    } else if (what === 'rule' && typeof body.chain === 'string' && Array.isArray(body.expr)) {
      let rules = table.chains.get(body.chain);
      if (!rules) table.chains.set(body.chain, (rules = []));
      rules.push({ expr: body.expr as unknown[] });
    } else if ((what === 'set' || what === 'map') && typeof body.name === 'string') {
      const flags = Array.isArray(body.flags) ? body.flags : typeof body.flags === 'string' ? [body.flags] : [];
      table.sets.set(body.name, {
        elem: Array.isArray(body.elem) ? (body.elem as unknown[]) : [],
        dynamic: flags.includes('dynamic') || flags.includes('timeout'),
      });
    }
  }
  return { base };
}

/**
 * Where the ruleset's nat prerouting chains send a TCP connection. `skip`
 * leaves out tables read elsewhere (iptables-nft's, as `family name`).
 */
export function nftVerdict(rules: NftRuleset, conn: Conn, skip: (table: string) => boolean = () => false): Verdict {
  const family = conn.dst.family === 4 ? 'ip' : 'ip6';
  const chains = rules.base.filter((chain) => (chain.family === family || chain.family === 'inet') && !skip(chain.table.label));
  const odd = chains.find((chain) => !Number.isInteger(chain.prio));
  if (odd) return { unknown: `a nat chain whose priority zivm cannot read (${odd.table.label} ${odd.name})` };
  chains.sort((first, second) => first.prio - second.prio);
  const packet: Packet = { ...conn, steps: 0 };
  // The first chain that translates decides; chains of one priority run in an order nobody can tell, so they must agree.
  let found: { verdict: { to: Addr; port: number }; prio: number; where: string } | undefined;
  for (const chain of chains) {
    const where = `${chain.table.label} ${chain.name}`;
    if (found && chain.prio !== found.prio) break;
    const step = walk(chain.table, chain.name, packet, 0);
    if ('unknown' in step) return step;
    if ('back' in step && chain.policy !== 'accept') return { unknown: `the policy of nat chain ${where} (${show(chain.policy)})` };
    if (!('to' in step)) continue;
    if (!found) found = { verdict: step, prio: chain.prio, where };
    else if (step.port !== found.verdict.port || step.to.family !== found.verdict.to.family || !sameBytes(step.to.bytes, found.verdict.to.bytes)) {
      return { unknown: `nat chains of one priority translate it differently (${found.where}, ${where})` };
    }
  }
  return found ? found.verdict : { none: true };
}

function walk(table: Table, name: string, packet: Packet, depth: number): Step {
  if (depth > MAX_DEPTH) return { unknown: 'nftables chains nested too deep' };
  const rules = table.chains.get(name);
  if (!rules) return { unknown: `a jump to a chain zivm cannot find (${table.label} ${name})` };
  for (const rule of rules) {
    if (++packet.steps > MAX_STEPS) return { unknown: 'too many nftables rules on the way' };
    const outcome = run(table, rule, packet);
    if (outcome === 'next') continue;
    if (outcome === 'on') continue; // the rule's end: the next rule
    if ('unknown' in outcome) return { unknown: `${outcome.unknown}, in ${table.label} ${name}` };
    if ('goto' in outcome) return walk(table, outcome.goto, packet, depth + 1);
    if ('jump' in outcome) {
      const inner = walk(table, outcome.jump, packet, depth + 1);
      if ('back' in inner) continue;
      return inner;
    }
    return outcome;
  }
  return { back: true };
}

/** One rule's expressions, in order. */
function run(table: Table, rule: Rule, packet: Packet): Outcome {
  for (const expr of rule.expr) {
    const outcome = step(table, expr, packet);
    if (outcome !== 'on') return outcome;
  }
  return 'on';
}

function step(table: Table, expr: unknown, packet: Packet): Outcome {
  const [what, body] = single(expr) ?? [];
  const cannot = (): Outcome => ({ unknown: `a rule zivm cannot read (${show(expr)})` });
  switch (what) {
    case 'match': {
      // `in` is nft's flag test, unless the right side is a set: only `==`, `!=` and set lookups are read.
      if (!isObj(body) || (body.op !== '==' && body.op !== '!=' && !(body.op === 'in' && elementsOf(table, body.right) !== undefined))) return cannot();
      const value = load(body.left, packet);
      if (value === 'absent') return 'next';
      if (value === undefined) return cannot();
      const hit = test(table, value, body.right);
      if (typeof hit === 'string') return { unknown: hit };
      if (hit === undefined) return cannot();
      return hit === (body.op !== '!=') ? 'on' : 'next';
    }
    case 'vmap': {
      if (!isObj(body)) return cannot();
      const value = load(body.key, packet);
      if (value === 'absent') return 'next';
      if (value === undefined) return cannot();
      const found = lookup(table, value, body.data);
      if (typeof found === 'string') return { unknown: found };
      if (found === undefined) return cannot();
      if (found === null) return 'next';
      const [verdict] = single(found) ?? [];
      return verdict !== undefined && ['jump', 'goto', 'return', 'continue', 'accept', 'drop', 'reject'].includes(verdict)
        ? step(table, found, packet)
        : cannot();
    }
    case 'jump':
    case 'goto': {
      const target = isObj(body) ? body.target : undefined;
      if (typeof target !== 'string' || target.length === 0) return cannot();
      return what === 'jump' ? { jump: target } : { goto: target };
    }
    case 'return':
      return { back: true };
    case 'continue':
      return 'next';
    case 'accept':
      return { accept: true };
    case 'drop':
    case 'reject':
      return { unknown: `a rule that drops it (${show(expr)})` };
    case 'counter':
    case 'log':
      return 'on';
    case 'mangle': {
      // The packet's mark (kube-proxy's mark-for-masquerade): read only after routing, by the chains that masquerade.
      const key = isObj(body) ? single(body.key) : undefined;
      return key?.[0] === 'meta' && isObj(key[1]) && key[1].key === 'mark' ? 'on' : cannot();
    }
    case 'set':
      return { unknown: `a rule that adds to a set as packets pass (${show(expr)}: session affinity)` };
    case 'xt':
      return { unknown: `an iptables extension zivm cannot read (${show(expr)})` };
    case 'dnat':
      return dnat(body, packet) ?? cannot();
    default:
      return cannot();
  }
}

/** `dnat to addr[:port]`: the destination, or 'on' where it is of the other family (an inet table's `dnat ip to` on IPv6: no-op). */
function dnat(body: unknown, packet: Packet): Outcome | undefined {
  if (!isObj(body)) return undefined;
  const family = packet.dst.family === 4 ? 'ip' : 'ip6';
  if (body.family !== undefined && body.family !== family) return body.family === 'ip' || body.family === 'ip6' ? 'on' : undefined;
  const to = typeof body.addr === 'string' ? parseAddr(body.addr) : undefined;
  if (!to || to.family !== packet.dst.family) return undefined;
  if (body.port === undefined) return { to, port: packet.port };
  const port = body.port;
  return typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535 ? { to, port } : undefined;
}

/** What an expression reads from the packet: a value, absent (a header the packet has not: the rule does not match), or undefined (cannot tell). */
function load(expr: unknown, packet: Packet): Value | 'absent' | undefined {
  const [what, body] = single(expr) ?? [];
  if (!isObj(body) && what !== 'concat') return undefined;
  switch (what) {
    case 'payload': {
      const { protocol, field } = body as Obj;
      if (protocol === 'ip' || protocol === 'ip6') {
        if ((protocol === 'ip') !== (packet.dst.family === 4)) return 'absent';
        if (field === 'saddr' || field === 'daddr') return { kind: 'addr', addr: field === 'saddr' ? packet.src : packet.dst };
        if (field === (protocol === 'ip' ? 'protocol' : 'nexthdr')) return { kind: 'proto', num: 6 };
        return undefined;
      }
      if (protocol === 'th' || protocol === 'tcp') return field === 'dport' ? { kind: 'num', num: packet.port } : undefined;
      // Another transport's header: nft matches the protocol first, and this is TCP.
      return typeof protocol === 'string' && ['udp', 'udplite', 'sctp', 'dccp', 'icmp', 'icmpv6'].includes(protocol) ? 'absent' : undefined;
    }
    case 'meta': {
      const { key } = body as Obj;
      if (key === 'l4proto') return { kind: 'proto', num: 6 };
      if (key === 'nfproto') return { kind: 'nfproto', word: packet.dst.family === 4 ? 'ipv4' : 'ipv6' };
      return undefined;
    }
    case 'fib': {
      // `fib saddr|daddr type`: one flag, printed alone or in a list.
      const { result, flags } = body as Obj;
      const flag: unknown = Array.isArray(flags) && flags.length === 1 ? flags[0] : flags;
      if (result !== 'type' || (flag !== 'saddr' && flag !== 'daddr')) return undefined;
      return { kind: 'local', local: packet.isLocal(flag === 'saddr' ? packet.src : packet.dst) };
    }
    case 'numgen': {
      const { mode, mod, offset = 0 } = body as Obj;
      if (mode !== 'random' || !Number.isInteger(mod) || (mod as number) < 1 || (mod as number) > 2 ** 32 || !Number.isInteger(offset)) return undefined;
      return { kind: 'num', num: Math.min(Math.floor(packet.draw() * (mod as number)), (mod as number) - 1) + (offset as number) };
    }
    case 'concat': {
      if (!Array.isArray(body)) return undefined;
      const parts: Value[] = [];
      for (const part of body) {
        const value = load(part, packet);
        if (value === undefined || value === 'absent') return value;
        parts.push(value);
      }
      return { kind: 'concat', parts };
    }
    default:
      return undefined;
  }
}

/** The elements of a named set (`@name`) or an anonymous one; a string: why not. */
function elementsOf(table: Table, right: unknown): unknown[] | string | undefined {
  if (typeof right === 'string' && right.startsWith('@')) {
    const set = table.sets.get(right.slice(1));
    if (!set) return `a set zivm cannot find (${table.label} ${right})`;
    if (set.dynamic) return `a set the kernel fills as packets pass (${table.label} ${right}: session affinity)`;
    return set.elem;
  }
  const [what, list] = single(right) ?? [];
  return what === 'set' && Array.isArray(list) ? list : undefined;
}

/** Does the value match the right-hand side (a value, a prefix, a range, a set)? undefined: cannot tell; a string: why not. */
function test(table: Table, value: Value, right: unknown): boolean | string | undefined {
  const elements = elementsOf(table, right);
  if (elements === undefined) return equals(value, right);
  if (typeof elements === 'string') return elements;
  let unsure = false;
  for (const element of elements) {
    const hit = equals(value, unwrap(element));
    if (hit) return true;
    if (hit === undefined) unsure = true;
  }
  return unsure ? undefined : false;
}

/** The data of the map element the value matches: null if none does; undefined: cannot tell; a string: why not. */
function lookup(table: Table, value: Value, map: unknown): unknown {
  const elements = elementsOf(table, map);
  if (elements === undefined || typeof elements === 'string') return elements;
  let unsure = false;
  for (const element of elements) {
    if (!Array.isArray(element) || element.length !== 2) return undefined;
    const hit = equals(value, unwrap(element[0]));
    if (hit) return element[1] as unknown;
    if (hit === undefined) unsure = true;
  }
  return unsure ? undefined : null;
}

/** An element with a comment, a timeout or a counter: `{ "elem": { "val": ... } }`. */
function unwrap(element: unknown): unknown {
  return isObj(element) && isObj(element.elem) ? element.elem.val : element;
}

/** Does the value equal one literal, a prefix or a range? undefined: cannot tell. */
function equals(value: Value, literal: unknown): boolean | undefined {
  const [what, body] = single(literal) ?? [];
  if (value.kind === 'concat') {
    const parts = what === 'concat' && Array.isArray(body) ? body : undefined;
    if (!parts || parts.length !== value.parts.length) return undefined;
    let all: boolean | undefined = true;
    for (let i = 0; i < parts.length; i++) {
      const hit = equals(value.parts[i], parts[i]);
      if (hit === false) return false;
      if (hit === undefined) all = undefined;
    }
    return all;
  }
  if (what === 'range') {
    if (!Array.isArray(body) || body.length !== 2) return undefined;
    const low = order(value, body[0]);
    const high = order(value, body[1]);
    return low === undefined || high === undefined ? undefined : low >= 0 && high <= 0;
  }
  if (what === 'prefix') {
    if (value.kind !== 'addr' || !isObj(body) || typeof body.addr !== 'string') return undefined;
    const net = parseAddr(body.addr);
    const bits = body.len;
    if (!net || net.family !== value.addr.family || typeof bits !== 'number' || !Number.isInteger(bits) || bits < 0 || bits > (net.family === 4 ? 32 : 128)) {
      return undefined;
    }
    for (let bit = 0; bit < bits; bit++) {
      const mask = 0x80 >> (bit & 7);
      if ((net.bytes[bit >> 3] & mask) !== (value.addr.bytes[bit >> 3] & mask)) return false;
    }
    return true;
  }
  if (value.kind === 'nfproto') return literal === 'ipv4' || literal === 'ipv6' ? literal === value.word : undefined;
  // The address types of `fib`: only local is told apart from the rest.
  if (value.kind === 'local') return literal === 'local' ? value.local : undefined;
  // nft prints protocols by name (TCP as "tcp"), a number where it knows no name.
  if (value.kind === 'proto' && typeof literal === 'string') return /^[a-z][a-z0-9-]*$/.test(literal) ? literal === 'tcp' : undefined;
  const place = order(value, literal);
  return place === undefined ? undefined : place === 0;
}

/** Where the value stands against one literal of its kind: -1, 0 or 1; undefined: cannot tell. */
function order(value: Value, literal: unknown): number | undefined {
  switch (value.kind) {
    case 'addr': {
      const other = typeof literal === 'string' ? parseAddr(literal) : undefined;
      if (!other || other.family !== value.addr.family) return undefined;
      for (let i = 0; i < 16; i++) if (value.addr.bytes[i] !== other.bytes[i]) return value.addr.bytes[i] < other.bytes[i] ? -1 : 1;
      return 0;
    }
    case 'proto':
    case 'num':
      return typeof literal === 'number' && Number.isInteger(literal) ? Math.sign(value.num - literal) : undefined;
    default:
      return undefined;
  }
}
