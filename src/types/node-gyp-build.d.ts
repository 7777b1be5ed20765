/** The part of node-gyp-build (which ships no types) that native.ts uses. */
declare module 'node-gyp-build' {
  interface NodeGypBuild {
    /** Loads the addon of the package in `dir`. */
    (dir: string): unknown;
    /** The addon file to load: build/Release, else build/Debug, else the prebuild for this platform; throws if none. */
    resolve(dir: string): string;
  }
  const nodeGypBuild: NodeGypBuild;
  export = nodeGypBuild;
}
