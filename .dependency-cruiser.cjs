/**
 * The architecture's rules, checked on every import (npm run lint):
 *
 *   src/net     net compatibility (Socket, Server, the JS handle): asks the
 *               channel in words, never reads the region's layout itself
 *   src/shm     the data plane (region, layout, slots, peers, channels, doorbells)
 *   src/guest   the ivshmem device, the in-guest agent, a guest process's link
 *   src/server  the domain daemon: never loaded by a client process
 *   src/cli     the `zivm` command
 *   bench/      the benchmarks; tools/ shared tooling; test/ the tests
 *
 * Type-only imports count (tsPreCompilationDeps): a cycle through types is a
 * cycle of concepts too.
 */

/** The modules every client process loads (the library and its preload hook). */
const CLIENT = '^src/(net|shm)/|^src/guest/link\\.ts$|^src/index\\.ts$|^src/register\\.ts$';

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles: each module can be read (and loaded) before the ones that use it.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'net-asks-the-channel',
      severity: 'error',
      comment: 'The socket layer asks the channel in words (open, fin, reset, gone): it does not read layout constants, slot words or peer entries.',
      from: { path: '^src/net/' },
      to: { path: '^src/shm/(layout|slot|peers)\\.ts$' },
    },
    {
      name: 'src-is-the-product',
      severity: 'error',
      comment: 'Nothing the package ships imports benchmarks, tests or development tools.',
      from: { path: '^src/' },
      to: { path: '^(bench|test|tools)/' },
    },
    {
      name: 'bench-imports-no-tests',
      severity: 'error',
      comment: 'Benchmarks share tooling with the tests through tools/, not through test/.',
      from: { path: '^bench/' },
      to: { path: '^test/' },
    },
    {
      name: 'tools-stand-alone',
      severity: 'error',
      comment: 'tools/ is shared by the tests and the benchmarks: it imports neither.',
      from: { path: '^tools/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'clients-never-load-the-daemon',
      severity: 'error',
      comment: 'A client process (the library, the preload hook) never loads the domain daemon.',
      from: { path: CLIENT },
      to: { path: '^src/server/' },
    },
    {
      name: 'daemon-needs-no-sockets',
      severity: 'error',
      comment: 'The daemon works on the region; it has no use for the net compatibility layer.',
      from: { path: '^src/server/' },
      to: { path: '^src/net/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'Every import resolves.',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|build|prebuilds)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], mainFields: ['main', 'types'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
