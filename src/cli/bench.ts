/**
 * `zivm bench`: the comparison benchmark, which ships beside the library
 * (dist/bench) as a program of its own: it is run, not loaded.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Command } from './command';

/** dist/bench/run.js, beside dist/src (this file is dist/src/cli/bench.js). */
const RUNNER = path.join(__dirname, '..', '..', 'bench', 'run.js');

export const benchCommand: Command = {
  summary: 'compare zivm with node:net over TCP and Unix sockets',
  usage: 'usage: zivm bench [options]   (zivm bench --help lists them)\n',
  run(args) {
    if (!fs.existsSync(RUNNER)) {
      process.stderr.write(`zivm bench: the benchmark is not installed here (${RUNNER})\n`);
      return 1;
    }
    const child = spawn(process.execPath, [RUNNER, ...args], { stdio: 'inherit' });
    return new Promise<number>((resolve) => {
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
      child.on('error', (err) => {
        process.stderr.write(`zivm bench: ${err.message}\n`);
        resolve(1);
      });
    });
  },
};
