/**
 * The package as users load it. `require('zivm')`, `import 'zivm'` and the
 * preload hook (`zivm/register`) all come to one file bundled from this
 * module (tools/bundle.ts): one instance of zivm per process whichever way it
 * is loaded, and one file for Node to read and compile instead of the
 * forty-odd modules of dist/src (a process's first connection pays for
 * loading them). The bundle is zivm's public API; the preload hook's patch of
 * node:net is on it under a symbol.
 */
import { patchNet } from './net/patch';
import { kRegisterHook } from './symbols';

export * from './index';

Object.defineProperty(exports, kRegisterHook, { value: patchNet });
