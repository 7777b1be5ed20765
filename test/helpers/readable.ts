/**
 * A copy of the package that other users may read and run (the checkout may
 * be private to us, as CI's is), for tests whose peers run as other users.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES } from './proc';

/** May users other than us run `file` (every folder on its way searchable by others, the file executable by them)? */
function othersMayRun(file: string): boolean {
  let at = path.resolve(file);
  if ((fs.statSync(at).mode & 0o001) === 0) return false;
  for (at = path.dirname(at); ; at = path.dirname(at)) {
    if ((fs.statSync(at).mode & 0o001) === 0) return false;
    if (at === path.dirname(at)) return true;
  }
}

export interface ReadableCopy {
  /** The copy's test/fixtures. */
  fixtures: string;
  /** A node other users may run: the running one, or a copy of it. */
  nodeBin: string;
  remove(): void;
}

/** Copies dist, the addon and the runtime dependencies to a folder others may read. */
export function readableCopy(): ReadableCopy {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-pkg-'));
  fs.chmodSync(copy, 0o755);
  const root = path.resolve(FIXTURES, '..', '..', '..');
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  // The addon: built here, or a prebuilt one.
  for (const dir of [path.join('build', 'Release'), 'prebuilds']) {
    if (fs.existsSync(path.join(root, dir))) fs.cpSync(path.join(root, dir), path.join(copy, dir), { recursive: true });
  }
  for (const dep of ['eventemitter3', 'node-gyp-build']) {
    fs.cpSync(path.join(root, 'node_modules', dep), path.join(copy, 'node_modules', dep), { recursive: true });
  }
  // The running node, where others may run it (a Node line may come from a folder of ours).
  let nodeBin = process.execPath;
  if (!othersMayRun(nodeBin)) {
    nodeBin = path.join(copy, 'node');
    fs.copyFileSync(process.execPath, nodeBin);
    fs.chmodSync(nodeBin, 0o755);
  }
  return { fixtures: path.join(copy, 'dist', 'test', 'fixtures'), nodeBin, remove: () => fs.rmSync(copy, { recursive: true, force: true }) };
}
