/**
 * Child processes that speak JSON lines, seen from the process that started
 * them (a test, the benchmark driver, a VM peer's orchestrator).
 *
 * A child prints one JSON object per line on stdout (what it saw: `listening`,
 * `connect`, `result`...) and may take commands, one JSON object per line, on
 * stdin (child.ts is that side). Every line is kept in `lines`; a cursor
 * marks how far next(), expect() and event() have read, so each line is
 * handed out once, in order, while find() searches all of them.
 *
 * A process that dies of a signal nobody sent it (through kill(), stop() or
 * killAll()) has crashed: the `crashes` list it was given hears of it.
 */
import { ChildProcess, spawn } from 'node:child_process';
import readline from 'node:readline';

export type Json = Record<string, any>;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcOptions {
  /** How errors name it (default: the program and its first argument). */
  name?: string;
  /** Its whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Commands on stdin (default true); false: stdin is /dev/null. */
  stdin?: boolean;
  /** 'inherit': its stderr goes to ours instead of being kept (default 'pipe'). */
  stderr?: 'pipe' | 'inherit';
  /** How long next(), expect() and event() wait by default, in ms (default 30000; Infinity: no limit). */
  timeoutMs?: number;
  /** Run it as this user and group (as root). */
  uid?: number;
  gid?: number;
  /** Stamp every line with `seenAt`: Date.now() when it arrived. */
  stamp?: boolean;
  /** A stdout line that is not a JSON object (default: kept with stderr, for the error messages). */
  onText?: (line: string) => void;
  /** Where a death by a signal nobody sent is recorded, as a line of text with the end of stderr. */
  crashes?: string[];
}

const live = new Set<Proc>();

/** Keeps the last 100,000 characters once a text passes 200,000. */
function capped(text: string): string {
  return text.length > 200000 ? text.slice(-100000) : text;
}

export class Proc {
  readonly proc: ChildProcess;
  readonly name: string;
  /** Every JSON line printed so far, in order. */
  readonly lines: Json[] = [];
  /** Settles once it has exited and its last stdout lines are in. */
  readonly exited: Promise<Exit>;
  private cursor = 0;
  private done = false;
  private err = '';
  private readonly sent = new Set<string>();
  private readonly wake = new Set<() => void>();
  private readonly timeoutMs: number;

  constructor(file: string, args: string[], out: ProcOptions = {}) {
    this.name = out.name ?? [file, args[0]].filter(Boolean).join(' ');
    this.timeoutMs = out.timeoutMs ?? 30000;
    this.proc = spawn(file, args, {
      env: out.env ?? process.env,
      cwd: out.cwd,
      uid: out.uid,
      gid: out.gid,
      stdio: [out.stdin === false ? 'ignore' : 'pipe', 'pipe', out.stderr ?? 'pipe'],
    });
    live.add(this);
    // Signals sent on purpose, by whatever path (kill(), stop(), killAll(), proc.kill()): a death by another is a crash.
    const kill = this.proc.kill.bind(this.proc);
    this.proc.kill = (signal?: NodeJS.Signals | number): boolean => {
      this.sent.add(String(signal ?? 'SIGTERM'));
      return kill(signal);
    };
    this.proc.stdin?.on('error', () => {
      /* the child went away: its exit says so */
    });
    this.proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.err = capped(this.err + chunk)));
    const onText = out.onText ?? ((line: string) => (this.err = capped(`${this.err}${line}\n`)));
    const rl = readline.createInterface({ input: this.proc.stdout! });
    const stdoutEnded = new Promise<void>((resolve) => rl.once('close', resolve));
    rl.on('line', (line) => {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        value = undefined;
      }
      if (value === null || typeof value !== 'object') return onText(line);
      if (out.stamp) (value as Json).seenAt = Date.now();
      this.lines.push(value);
      for (const write of [...this.wake]) write();
    });
    let settle: (e: Exit) => void = () => undefined;
    this.exited = new Promise((resolve) => (settle = resolve));
    const ended = (code: number | null, signal: NodeJS.Signals | null): void => {
      live.delete(this);
      if (signal && !this.sent.has(signal)) out.crashes?.push(`${this.name} died of ${signal}; stderr:\n${this.err.slice(-2000)}`);
      // The last stdout lines come through before the end is declared (but a
      // process it left behind may hold stdout open: not longer than a second).
      const end = (): void => {
        clearTimeout(grace);
        if (this.done) return;
        this.done = true;
        for (const write of [...this.wake]) write();
        settle({ code, signal });
      };
      const grace = setTimeout(end, 1000);
      void stdoutEnded.then(() => setImmediate(end));
    };
    this.proc.on('exit', ended);
    this.proc.on('error', (err) => {
      this.err = capped(`${this.err}[${file}: ${err.message}]\n`);
      if (this.proc.pid === undefined) ended(null, null); // it never ran
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Still running: no exit seen yet. */
  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Its stderr so far (and stdout lines that were not JSON). */
  stderr(): string {
    return this.err;
  }

  /** Why a wait ended without its line: the exit, with the end of stderr. */
  private exitMessage(): string {
    return `${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) without the expected line; stderr:\n${this.err.slice(-4000)}`;
  }

  /**
   * The next line (after those already handed out) that `pred` accepts; the
   * lines it passes over are handed out too. Rejects when the process has
   * exited without one, or after `ms`.
   */
  next(pred: (v: Json) => boolean = () => true, ms = this.timeoutMs): Promise<Json> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      /** Settles the wait, once: true when it did. */
      const check = (): boolean => {
        while (this.cursor < this.lines.length) {
          const value = this.lines[this.cursor++];
          if (pred(value)) {
            finish();
            resolve(value);
            return true;
          }
        }
        if (!this.done) return false;
        finish();
        reject(new Error(this.exitMessage()));
        return true;
      };
      const onChange = (): void => void check();
      const finish = (): void => {
        clearTimeout(timer);
        this.wake.delete(onChange);
      };
      if (check()) return;
      this.wake.add(onChange);
      if (Number.isFinite(ms)) {
        timer = setTimeout(() => {
          finish();
          reject(
            new Error(
              `${this.name}: no expected line within ${ms} ms; lines so far: ${JSON.stringify(this.lines).slice(-2000)}; stderr:\n${this.err.slice(-4000)}`,
            ),
          );
        }, ms);
      }
    });
  }

  /** The next line, which must have this `event`: an `error` event or any other line is an error. */
  async expect(event: string, ms?: number): Promise<Json> {
    const value = await this.next(undefined, ms);
    if (value.event === 'error' && event !== 'error') throw new Error(`${this.name}: ${value.message ?? JSON.stringify(value)}`);
    if (value.event !== event) throw new Error(`${this.name}: expected ${event}, got ${JSON.stringify(value)}`);
    return value;
  }

  /** The next line with this `event`, passing over others; an `error` event fails the wait at once. */
  async event(event: string, ms?: number): Promise<Json> {
    const value = await this.next((list) => list.event === event || list.event === 'error', ms);
    if (value.event === 'error' && event !== 'error')
      throw new Error(`${this.name} reported an error: ${JSON.stringify(value)}\nstderr:\n${this.err.slice(-4000)}`);
    return value;
  }

  /**
   * The first line of all (handed out or not) that `pred` accepts, waiting up
   * to `ms` for it; undefined if none came before the time or the exit.
   */
  async find(pred: (v: Json) => boolean, ms = 20000): Promise<Json | undefined> {
    const end = Date.now() + ms;
    for (;;) {
      const value = this.lines.find(pred);
      if (value || this.done) return value;
      const left = end - Date.now();
      if (left <= 0) return undefined;
      await this.change(left);
    }
  }

  /** Resolves at the next line or at the end, or after `ms`. */
  private change(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const go = (): void => {
        clearTimeout(timer);
        this.wake.delete(go);
        resolve();
      };
      const timer = setTimeout(go, ms);
      this.wake.add(go);
    });
  }

  /** Writes a command: one JSON line on its stdin. */
  send(msg: Json): void {
    if (this.proc.stdin?.writable) this.proc.stdin.write(`${JSON.stringify(msg)}\n`);
  }

  /** Sends a signal (a death by it is then no crash). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) this.proc.kill(signal);
  }

  /** Waits for the exit, up to `ms`: rejects after that, with the end of stderr. */
  async exit(ms = 20000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} did not exit within ${ms} ms; stderr:\n${this.err.slice(-4000)}`)), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes its stdin (a child built on child.ts exits then), and SIGKILL if it is still there after `ms`. */
  async stop(ms = 3000): Promise<void> {
    if (!this.running) return;
    this.proc.stdin?.end();
    const timer = setTimeout(() => this.kill('SIGKILL'), ms);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts `node script args...` (this process's node). */
export function spawnNode(script: string, args: (string | number)[], out: ProcOptions = {}): Proc {
  return new Proc(process.execPath, [script, ...args.map(String)], { name: out.name ?? `${script.replace(/^.*\//, '')} ${args[0] ?? ''}`.trim(), ...out });
}

/** SIGKILLs every process started here that still runs, and waits until they have exited. */
export async function killAll(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const part of live) {
    if (!part.running) continue;
    waits.push(part.exited);
    part.kill('SIGKILL');
  }
  await Promise.all(waits);
}
