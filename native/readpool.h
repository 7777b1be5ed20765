// Read buffers for large reads, kept mapped for reuse.
//
// A read that allocates a fresh 64 KiB Buffer each time lands in memory the
// allocator has just given back to the kernel: the garbage collector frees
// such buffers tens of megabytes at a time, glibc trims the top of its heap,
// and every byte read then costs a page fault (half the reader's time in a
// bulk transfer). Chunks from here come from a reserved mapping of this
// thread's own; a chunk goes back to the pool when its Buffer is collected and
// is written again while still mapped. The pages of chunks not used for a
// while go back to the kernel (readPoolTrim, called once a second).
#ifndef ZIVM_READPOOL_H
#define ZIVM_READPOOL_H

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace zivm {

// Size of a pooled chunk: the largest read a socket delivers at once (twice
// libuv's 64 KiB: a bulk reader's work per byte goes down by a tenth).
constexpr size_t READ_POOL_CHUNK = 128 * 1024;
// Reads of at least this many bytes use a pooled chunk (so at most half of a
// chunk is ever unused); smaller ones get a Buffer of their own size.
constexpr size_t READ_POOL_MIN = READ_POOL_CHUNK / 2;
// Chunks per thread (address space reserved on first use, 128 MiB; V8
// collects buffers once about 32 MiB of them are garbage, see below). Past
// that, reads get Buffers of their own.
constexpr size_t READ_POOL_CHUNKS = 1024;
// Bytes of pooled Buffers out (not yet collected) from which each new one also
// makes V8 collect its young generation soon (see NewReadBuffer): 32 MiB, the
// threshold of V8 before 13 with its default semi-space.
constexpr size_t READ_POOL_NUDGE = 32 * 1024 * 1024;
// Bytes of young-generation allocation per pooled read from that point on, per
// READ_POOL_NUDGE bytes out (see NewReadBuffer).
constexpr size_t READ_POOL_FILL = 16 * 1024;
// Free chunks whose pages are kept when the pool is trimmed.
constexpr size_t READ_POOL_KEEP = 16;

// A Buffer of `n` bytes whose memory the caller fills through `*data` before
// any JavaScript runs. Empty (with an exception pending) on failure.
Napi::Value NewReadBuffer(Napi::Env env, size_t n, uint8_t** data);

// readPool(): { free, out, resident, chunk } of this thread's pool.
Napi::Value ReadPoolStats(const Napi::CallbackInfo& info);
// readPoolTrim(): if no chunk was taken for a second, gives the pages
// of free chunks beyond READ_POOL_KEEP back to the kernel. Returns the number
// of chunks trimmed.
Napi::Value ReadPoolTrim(const Napi::CallbackInfo& info);

// releaseCopies(views): detaches the ArrayBuffer under each Uint8Array of the
// array that spans the whole of it, so that its memory goes back to the
// allocator now instead of at the next garbage collection. For buffers that
// only the caller can reach (the copies a native stream consumer's write hands
// over, see ShmHandle.onwrite). Other entries are left alone. Returns how many
// were released.
Napi::Value ReleaseCopies(const Napi::CallbackInfo& info);

}  // namespace zivm

#endif
