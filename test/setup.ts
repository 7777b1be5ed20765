/**
 * Root hooks for the whole run: one private zivm socket folder, so the tests'
 * daemon is their own, and a short idle delay so it leaves promptly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

if (!process.env.ZIVM_TEST_KEEP_DIR) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-test-'));
  process.env.ZIVM_DIR = dir;
  // The daemon removes its files once this process has gone; the folder is ours.
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
}
process.env.ZIVM_IDLE_MS ??= '300';
delete process.env.ZIVM;
delete process.env.ZIVM_SOCKET;

export const mochaHooks = {
  afterAll(): void {
    // The daemon removes its own files once every peer (this process last) has gone.
  },
};
