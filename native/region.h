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

// The mapping is shared by the Region and the ArrayBuffer's backing store:
// whichever lets go last frees this record; the pages are unmapped exactly once
// (on close(), when the ArrayBuffer is collected, or at env cleanup).
struct Mapping {
  uint8_t* addr;
  size_t size;
  bool unmapped;
  int refs;
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
  static void EnvCleanup(void* arg);

  Mapping* mapping_ = nullptr;
  size_t size_ = 0;
  Napi::Reference<Napi::ArrayBuffer> buffer_;
  bool closed_ = false;
  bool hook_ = false;
};

}  // namespace zivm

#endif
