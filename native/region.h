// Region: a MAP_SHARED mapping of a shared-memory fd, exposed to JS as an
// external ArrayBuffer. new Region(fd, size[, offset[, view]]): `offset` (page
// aligned, default 0) is where in the fd the mapping starts; `view` (default
// size) is how many bytes from the start the ArrayBuffer covers (the rest is
// reached by rings, zero(), discard() and resident() only); offset + size
// must lie inside the fd unless the fd reports no size at all (a VFIO device
// fd, whose regions sit at index << 40: the caller's size then counts).
#ifndef ZIVM_REGION_H
#define ZIVM_REGION_H

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace zivm {

extern const napi_type_tag kRegionTag;

// The mapping is shared by the Region, the ArrayBuffer's backing store and
// the views of parts of it (NewView): whichever lets go last frees this record.
// The pages are unmapped exactly once: when the ArrayBuffer is detached by
// close() or collected and no view is left, or at env cleanup.
struct Mapping {
  uint8_t* addr;
  size_t size;
  bool unmapped;
  int refs;
  // The ArrayBuffer over the mapping can still be reached from JS.
  bool bufferLive;
  // Views made by NewView not yet collected.
  int views;
};

class Region : public Napi::ObjectWrap<Region> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Region(const Napi::CallbackInfo& info);
  ~Region() override;

  // True once close() was called or the pages are gone: nothing may touch them.
  bool closed() const { return closed_ || mapping_ == nullptr || mapping_->unmapped; }
  uint8_t* base() const { return mapping_->addr; }
  size_t size() const { return mapping_->size; }
  // A Buffer over [offset, offset + length) of the mapping (in range, checked
  // by the caller), without a copy: the pages stay mapped while it lives,
  // even past close(). Empty on failure (this Node.js makes no Buffers over
  // outside memory, say): the caller copies instead.
  Napi::Value NewView(Napi::Env env, uint64_t offset, size_t length);

 private:
  Napi::Value GetBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Resident(const Napi::CallbackInfo& info);
  Napi::Value Discard(const Napi::CallbackInfo& info);
  Napi::Value Zero(const Napi::CallbackInfo& info);
  Napi::Value Copy(const Napi::CallbackInfo& info);
  bool EnterRange(const Napi::CallbackInfo& info, int64_t most, int64_t* offset, int64_t* length);

  static void FinalizeBuffer(napi_env env, void* data, void* hint);
  static void FinalizeView(napi_env env, void* data, void* hint);
  static void EnvCleanup(void* arg);

  Mapping* mapping_ = nullptr;
  size_t size_ = 0;
  Napi::Reference<Napi::ArrayBuffer> buffer_;
  bool closed_ = false;
  bool hook_ = false;
};

}  // namespace zivm

#endif
