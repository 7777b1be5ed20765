#include "readpool.h"

#include <sys/mman.h>
#include <time.h>

#include <string>
#include <vector>

#include "errors.h"

namespace zivm {

namespace {

// Set once this thread's pool has been destroyed (thread or process exit): a
// Buffer collected after that leaves its chunk alone. A trivially destructible
// thread_local, readable at any time.
thread_local bool poolGone = false;

// A pool is trimmed once no chunk has been taken for this long.
constexpr int64_t kTrimIdleNs = 1000000000;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct Pool {
  uint8_t* base = nullptr;  // READ_POOL_CHUNKS chunks, reserved on first use
  bool unavailable = false;  // the reservation failed: no pooling on this thread
  uint32_t fresh = 0;        // chunks [fresh, READ_POOL_CHUNKS) never handed out
  // Free chunks, most recently returned last; free[0, trimmed) have no pages.
  std::vector<uint32_t> free;
  size_t trimmed = 0;
  size_t out = 0;
  size_t bytesOut = 0;  // bytes of the Buffers of the chunks out
  int64_t lastTakeNs = 0;

  ~Pool() {
    poolGone = true;
    // Buffers still alive keep pointing into the mapping: leave it then.
    if (base != nullptr && out == 0) munmap(base, READ_POOL_CHUNKS * READ_POOL_CHUNK);
  }

  uint8_t* Take() {
    if (base == nullptr && !unavailable) {
      void* p = mmap(nullptr, READ_POOL_CHUNKS * READ_POOL_CHUNK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        unavailable = true;
      } else {
        base = static_cast<uint8_t*>(p);
        free.reserve(READ_POOL_CHUNKS);
      }
    }
    if (base == nullptr) return nullptr;
    uint32_t i;
    if (!free.empty()) {
      i = free.back();
      free.pop_back();
      if (trimmed > free.size()) trimmed = free.size();
    } else if (fresh < READ_POOL_CHUNKS) {
      i = fresh++;
    } else {
      return nullptr;
    }
    out++;
    lastTakeNs = NowNs();
    return base + static_cast<size_t>(i) * READ_POOL_CHUNK;
  }

  void Give(uint8_t* chunk, size_t n) {
    out--;
    bytesOut -= n;
    free.push_back(static_cast<uint32_t>((chunk - base) / READ_POOL_CHUNK));
  }

  size_t Trim() {
    if (NowNs() - lastTakeNs < kTrimIdleNs) return 0;
    if (free.size() <= READ_POOL_KEEP) return 0;
    size_t upTo = free.size() - READ_POOL_KEEP;
    size_t n = 0;
    for (size_t k = trimmed; k < upTo; k++) {
      madvise(base + static_cast<size_t>(free[k]) * READ_POOL_CHUNK, READ_POOL_CHUNK, MADV_DONTNEED);
      n++;
    }
    if (upTo > trimmed) trimmed = upTo;
    return n;
  }
};

thread_local Pool pool;

// Runs on the thread of the Buffer's environment (Node defers a Buffer's
// finalizer to its event loop).
void Release(napi_env, void* data, void* length) {
  if (!poolGone) pool.Give(static_cast<uint8_t*>(data), reinterpret_cast<size_t>(length));
}

// V8 collects Buffers in its young-generation collections (cheap: a reader's
// heap holds little else that is young), but it counts every Buffer's bytes as
// new memory outside its heap and starts a whole-heap collection once that
// count has grown by 64 MiB since its lowest point. A bulk reader's Buffers
// reach that at 7 GB/s every 9 ms; each such collection also keeps V8's
// marking threads busy on the cores the reader and the writer need (half the
// rate on a 2-core machine). So the young generation must be collected before
// 64 MiB of them are out.
//
// V8 before 13 (Node 20 and 22) does that itself for the Buffers it allocates,
// at twice its largest semi-space (32 MiB), checked as it allocates another: a
// one-byte allocation through V8 lets it apply that rule to these too. V8 13
// and later check at 128 MiB, after the whole-heap collection has begun, so
// the nudge alone is too late there. What starts a young-generation collection
// on any line is a full young generation: each pooled read past the nudge point
// also allocates a short-lived string there, READ_POOL_FILL bytes for every
// READ_POOL_NUDGE out (a few MiB of semi-space over the next 32 MiB of reads).
// A reader whose program allocates enough itself is collected before it gets
// here and pays nothing; one that keeps every read pays for at most the pool's
// worth of reads (no chunk, no fill).
void CollectSoon(Napi::Env env, size_t n) {
  void* byte;
  napi_value nudge;
  if (napi_create_arraybuffer(env, 1, &byte, &nudge) != napi_ok && env.IsExceptionPending()) {
    env.GetAndClearPendingException();  // no memory for one byte: the read says so next
  }
  static const char kFill[READ_POOL_CHUNK] = {};
  size_t fill = READ_POOL_FILL * (pool.bytesOut / READ_POOL_NUDGE);
  if (fill > n) fill = n;
  napi_value young;
  if (napi_create_string_latin1(env, kFill, fill, &young) != napi_ok && env.IsExceptionPending()) {
    env.GetAndClearPendingException();  // as above
  }
}

}  // namespace

Napi::Value NewReadBuffer(Napi::Env env, size_t n, uint8_t** data) {
  napi_value buf;
  if (n >= READ_POOL_MIN && n <= READ_POOL_CHUNK) {
    uint8_t* chunk = pool.Take();
    if (chunk != nullptr) {
      if (pool.bytesOut >= READ_POOL_NUDGE) CollectSoon(env, n);
      if (napi_create_external_buffer(env, n, chunk, Release, reinterpret_cast<void*>(n), &buf) == napi_ok) {
        pool.bytesOut += n;
        *data = chunk;
        return Napi::Value(env, buf);
      }
      // A runtime that does not allow external buffers: a Buffer of its own.
      pool.Give(chunk, 0);
      if (env.IsExceptionPending()) env.GetAndClearPendingException();
    }
  }
  void* dst = nullptr;
  if (napi_create_buffer(env, n, &dst, &buf) != napi_ok) {
    if (!env.IsExceptionPending()) {
      ThrowCode(env, "ERR_ZIVM_NO_MEMORY", "could not allocate a Buffer of " + std::to_string(n) + " bytes");
    }
    return Napi::Value();
  }
  *data = static_cast<uint8_t*>(dst);
  return Napi::Value(env, buf);
}

Napi::Value ReadPoolStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  size_t freeCount = poolGone ? 0 : pool.free.size();
  size_t trimmed = poolGone ? 0 : pool.trimmed;
  o.Set("free", Napi::Number::New(env, static_cast<double>(freeCount)));
  o.Set("out", Napi::Number::New(env, static_cast<double>(poolGone ? 0 : pool.out)));
  // Chunks that may hold pages: handed out, or free and not trimmed.
  o.Set("resident", Napi::Number::New(env, static_cast<double>(poolGone ? 0 : pool.out + freeCount - trimmed)));
  o.Set("chunk", Napi::Number::New(env, static_cast<double>(READ_POOL_CHUNK)));
  return o;
}

Napi::Value ReadPoolTrim(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(poolGone ? 0 : pool.Trim()));
}

Napi::Value ReleaseCopies(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  uint32_t released = 0;
  if (info.Length() < 1 || !info[0].IsArray()) return Napi::Number::New(env, 0);
  Napi::Array views = info[0].As<Napi::Array>();
  const uint32_t n = views.Length();
  for (uint32_t i = 0; i < n; i++) {
    napi_value view;
    if (napi_get_element(env, views, i, &view) != napi_ok) break;
    bool typed = false;
    if (napi_is_typedarray(env, view, &typed) != napi_ok || !typed) continue;
    napi_typedarray_type type;
    size_t length = 0;
    size_t offset = 0;
    napi_value buffer;
    if (napi_get_typedarray_info(env, view, &type, &length, nullptr, &buffer, &offset) != napi_ok) continue;
    if (type != napi_uint8_array || offset != 0 || length == 0) continue;
    bool isArrayBuffer = false;  // false for a SharedArrayBuffer
    if (napi_is_arraybuffer(env, buffer, &isArrayBuffer) != napi_ok || !isArrayBuffer) continue;
    size_t whole = 0;
    if (napi_get_arraybuffer_info(env, buffer, nullptr, &whole) != napi_ok || whole != length) continue;
    bool detached = false;
    if (napi_is_detached_arraybuffer(env, buffer, &detached) != napi_ok || detached) continue;
    if (napi_detach_arraybuffer(env, buffer) == napi_ok) released++;
  }
  // A buffer V8 refused to detach (not detachable) leaves no exception behind: it was skipped.
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  return Napi::Number::New(env, released);
}

}  // namespace zivm
