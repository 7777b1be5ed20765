// Ring: one end (producer or consumer) of a single-producer single-consumer
// byte ring whose header and data live in a Region (layout in layout.h).
#ifndef ZIVM_RING_H
#define ZIVM_RING_H

#include <napi.h>

#include <cstddef>
#include <cstdint>

#include "region.h"

namespace zivm {

extern const napi_type_tag kRingTag;

class Ring : public Napi::ObjectWrap<Ring> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Ring(const Napi::CallbackInfo& info);
  ~Ring() override;

 private:
  Napi::Value GetCapacity(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Writev(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value ReadInto(const Napi::CallbackInfo& info);
  Napi::Value ReadSmall(const Napi::CallbackInfo& info);
  Napi::Value Peek(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Available(const Napi::CallbackInfo& info);
  Napi::Value Head(const Napi::CallbackInfo& info);
  Napi::Value Tail(const Napi::CallbackInfo& info);
  Napi::Value Resync(const Napi::CallbackInfo& info);

  // Common entry checks: right class, region still mapped, right end
  // (`end`: 1 producer only, 0 consumer only, -1 either).
  bool Enter(const Napi::CallbackInfo& info, int end, const char* what);
  // Whether this receiver is a ring made here (else throws "Illegal invocation").
  bool CheckLive(const Napi::CallbackInfo& info) const;
  uint64_t* SharedHead() const;
  uint64_t* SharedTail() const;
  uint8_t* Data() const;
  // Loads the other side's position and returns the bytes in the ring as seen
  // by this end; false (ERR_ZIVM_CORRUPT thrown) if it is more than capacity.
  bool Used(Napi::Env env, uint64_t* used);
  // Producer: the room for a write of `want` bytes. The consumer's position as
  // last seen when that leaves enough room (it only moves forward: the room
  // only grew since), else loaded again (and checked, as Used does). Saves a
  // load of the line the consumer writes on most writes.
  bool Room(Napi::Env env, uint64_t want, uint64_t* room);
  void CopyIn(uint64_t pos, const uint8_t* src, size_t n);
  void CopyOut(uint64_t pos, uint8_t* dst, size_t n) const;
  void Publish(uint64_t pos);

  Napi::ObjectReference regionRef_;  // keeps the mapping alive
  Region* region_ = nullptr;
  uint64_t header_ = 0;
  uint64_t data_ = 0;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  bool producer_ = false;
  uint64_t pos_ = 0;  // producer: head; consumer: tail
  uint64_t seenTail_ = 0;  // producer: the consumer's tail when last loaded
  uint64_t peeked_ = 0;  // consumer: bytes the last peek() found, that release() may let go of
};

}  // namespace zivm

#endif
