/**
 * The private properties zivm puts on objects it shares with node:net and
 * the application (sockets, servers, kernel handles), in one place.
 */

/** socket[kTransport]: the transport a socket took, remembered after its handle is gone. */
export const kTransport = Symbol('zivm.transport');
/** server[kListener]: the server's registration in the domain's directory. */
export const kListener = Symbol('zivm.listener');
/** kernelHandle[kIntercepted]: its connect is routed by zivm; the value is its socket. */
export const kIntercepted = Symbol('zivm.intercepted');
/** socket[kTryShm]: this connection may still go over shared memory. */
export const kTryShm = Symbol('zivm.tryShm');
/** socket[kDialPort]: the port being dialled, while the transport is being chosen. */
export const kDialPort = Symbol('zivm.dialPort');
/** kernelHandle[kNativeConsumed]: a native stream consumer may have taken it: the connection stays on it. */
export const kNativeConsumed = Symbol('zivm.nativeConsumed');
/** socket[kNativeReads]: an HTTP/2 session will take its handle once connected, whichever it is. */
export const kNativeReads = Symbol('zivm.nativeReads');
/** handle[kShmHandle] is true on shared-memory handles (ShmHandle.prototype): known without loading their module. */
export const kShmHandle = Symbol('zivm.shmHandle');
/** kernelHandle[kTlsWrapped]: TLS wraps it: the connection stays on TCP. */
export const kTlsWrapped = Symbol('zivm.tlsWrapped');
/** kernelHandle[kTlsUnguarded]: intercepted before node:tls was loaded (TLS could not mark it then). */
export const kTlsUnguarded = Symbol('zivm.tlsUnguarded');

/*
 * Markers of patches made to Node's own modules. They are registered symbols
 * (Symbol.for) on purpose: two copies of zivm in one process (two versions in
 * node_modules) must see each other's patches and not patch twice.
 */
/** On node:net's exports: zivm/register has replaced its classes. */
export const kNetPatched = Symbol.for('zivm.register');
/** On tls.TLSSocket.prototype: _wrapHandle knows shared-memory handles. */
export const kTlsPatched = Symbol.for('zivm.tls');

/** On the package's bundled module (src/package.ts): the preload hook's patch of node:net, for zivm/register. */
export const kRegisterHook = Symbol.for('zivm.registerHook');
