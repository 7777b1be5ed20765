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

/** The modules every client process loads (the library and its preload hook, apart or bundled). */
const CLIENT = '^src/(net|shm|bundle)/|^src/guest/link\\.ts$|^src/(index|register|package)\\.ts$';

/** A rule: no module whose path matches `from` imports one whose path matches `to` (or `to` as dependency-cruiser's own condition). */
function never(name, comment, from, to) {
  return { name, severity: 'error', comment, from: from === undefined ? {} : { path: from }, to: typeof to === 'string' ? { path: to } : to };
}

module.exports = {
  forbidden: [
    never('no-circular', 'No import cycles: each module can be read (and loaded) before the ones that use it.', undefined, { circular: true }),
    never(
      'net-asks-the-channel',
      'The socket layer asks the channel in words (open, fin, reset, gone): it does not read layout constants, slot words or peer entries.',
      '^src/net/',
      '^src/shm/(layout|slot|peers)\\.ts$',
    ),
    never('src-is-the-product', 'Nothing the package ships imports benchmarks, tests or development tools.', '^src/', '^(bench|test|tools)/'),
    never('bench-imports-no-tests', 'Benchmarks share tooling with the tests through tools/, not through test/.', '^bench/', '^test/'),
    never('tools-stand-alone', 'tools/ is shared by the tests and the benchmarks: it imports neither.', '^tools/', '^(test|bench)/'),
    never(
      'clients-never-load-the-daemon',
      'A client process (the library, the preload hook) never loads the domain daemon, not even through another module.',
      CLIENT,
      {
        path: '^src/server/',
        reachable: true,
      },
    ),
    never('daemon-needs-no-sockets', 'The daemon works on the region; it has no use for the net compatibility layer.', '^src/server/', '^src/net/'),
    never('not-to-unresolvable', 'Every import resolves.', undefined, { couldNotResolve: true }),
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
