/**
 * Bundles the package's entry (dist/src/package.js, compiled by tsc) with
 * everything it loads into one file, dist/src/bundle/zivm.js: what
 * `require('zivm')`, `import 'zivm'` and `zivm/register` load. Node's module
 * loader costs about half a millisecond per module on a cold start, and a
 * client's first connection loads some forty of them. Run by `npm run build`
 * after tsc.
 *
 * The bundle sits at the same depth below the package root as the modules of
 * dist/src/shm and dist/src/net, so the paths they derive from __dirname (the
 * package root for the addon, dist/src/cli for the daemon it may start) hold
 * in it too. Modules keep their own scope and load when first required, as
 * they do apart; names are kept (class and function names show in errors and
 * stack traces).
 */
import path from 'node:path';
import { buildSync } from 'esbuild';

const DIST_SRC = path.join(__dirname, '..', 'src');

const result = buildSync({
  entryPoints: [path.join(DIST_SRC, 'package.js')],
  outfile: path.join(DIST_SRC, 'bundle', 'zivm.js'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: 'linked',
  logLevel: 'warning',
  banner: { js: '// zivm, bundled from dist/src (see tools/bundle.ts in the source).' },
});
if (result.errors.length > 0 || result.warnings.length > 0) process.exit(1);
