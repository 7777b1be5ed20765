// Placeholder entry point while the transport is being built: re-exports node:net.
export * from 'node:net';
