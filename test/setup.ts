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

// The package's entry points are one file bundled from dist/src after tsc (npm run build): tests that
// load zivm as users do would otherwise run code older than the modules beside it.
{
  const src = path.join(__dirname, '..', 'src');
  const bundle = path.join(src, 'bundle', 'zivm.js');
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...fs.readdirSync(dir, { withFileTypes: true }).map((entry) => {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) return entry.name === 'bundle' ? 0 : newest(file);
        return entry.name.endsWith('.js') ? fs.statSync(file).mtimeMs : 0;
      }),
    );
  if (!fs.existsSync(bundle) || fs.statSync(bundle).mtimeMs < newest(src)) {
    throw new Error(`${bundle} is missing or older than the modules it is bundled from: run npm run build`);
  }
}
delete process.env.ZIVM;
delete process.env.ZIVM_SOCKET;

export const mochaHooks = {
  afterAll(): void {
    // The daemon removes its own files once every peer (this process last) has gone.
  },
};
