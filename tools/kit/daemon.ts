/**
 * The zivm command of this build as a child process: `zivm server` (the
 * domain daemon) started and stopped around a test or a benchmark, and any
 * other command run to its end.
 */
import { ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { Exit } from './proc';
import { until } from './wait';

export type { Exit };

/** dist/src/cli/main.js of this build (this file runs as dist/tools/kit/daemon.js). */
export const CLI = path.join(__dirname, '..', '..', 'src', 'cli', 'main.js');

/** Sends `signal` to `pid` if there is one; a process already gone is no error. */
export function killQuiet(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (!pid) return;
  try {
    process.kill(pid, signal);
  } catch {
    // No such process: it is gone already, which is what was wanted.
  }
}

export interface ServerProc {
  child: ChildProcess;
  socket: string;
  out: { stdout: string; stderr: string };
  exited: Promise<Exit>;
  /** SIGTERM, then wait for the exit (SIGKILL after `graceMs`, default 3 s). */
  stop(graceMs?: number): Promise<Exit>;
}

function collect(child: ChildProcess): { out: { stdout: string; stderr: string }; exited: Promise<Exit> } {
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { out, exited };
}

/**
 * Starts `zivm server --socket <socket> ...args` and waits for its "listening"
 * line. `env` is laid over this process's environment (a key set to undefined
 * is left out).
 */
export async function startServer(socket: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, timeoutMs = 8000): Promise<ServerProc> {
  const child = spawn(process.execPath, [CLI, 'server', '--socket', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const { out, exited } = collect(child);
  let done: Exit | undefined;
  void exited.then((entry) => (done = entry));
  const stop = async (graceMs = 3000): Promise<Exit> => {
    if (done) return done;
    killQuiet(child.pid, 'SIGTERM');
    const timer = setTimeout(() => killQuiet(child.pid, 'SIGKILL'), graceMs);
    const entry = await exited;
    clearTimeout(timer);
    return entry;
  };
  try {
    await until(() => out.stdout.includes('listening') || done !== undefined, timeoutMs, 'the server to listen');
  } catch (err) {
    await stop();
    throw err;
  }
  if (done) throw new Error(`server exited early (${JSON.stringify(done)}): ${out.stderr}`);
  return { child, socket, out, exited, stop };
}

/** Runs `zivm ...args` to its end (SIGKILL after `timeoutMs`). */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 8000): Promise<Exit & { stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const { out, exited } = collect(child);
  const timer = setTimeout(() => killQuiet(child.pid, 'SIGKILL'), timeoutMs);
  const entry = await exited;
  clearTimeout(timer);
  return { ...entry, ...out };
}
