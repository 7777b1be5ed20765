/**
 * The package's preload hook (`zivm/register`): the bundled zivm, with
 * node:net patched. The bundle is built next to this file after tsc
 * (tools/bundle.ts); dist/src/register.js does the same from the separate
 * modules.
 */
import path from 'node:path';

/** kRegisterHook of symbols.ts (a global symbol: not worth a module load in every process). */
const kRegisterHook = Symbol.for('zivm.registerHook');

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the bundle is a build output, not a module of the source
(require(path.join(__dirname, 'zivm.js')) as Record<symbol, () => void>)[kRegisterHook]();
