#include "ring.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "errors.h"
#include "layout.h"
#include "readpool.h"

namespace zivm {

const napi_type_tag kRingTag = {0x7a69766d52696e67ULL, 0x0000000000000002ULL};

namespace {

inline uint64_t LoadAcquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

inline void StoreRelease(uint64_t* p, uint64_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
  // Full fence: a later load of the other side's sleeping flag (Atomics.load in
  // JS) must not be ordered before this publish.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

std::string Str(uint64_t v) { return std::to_string(v); }

// The rings made on this thread and not yet collected. A method's receiver is
// one of them or the call is refused: a check of the pointer alone (its object
// is never read until then), where the type tag (a property lookup) cost as
// much as the rest of a call. The tag stays on every ring for other checks.
thread_local std::unordered_set<const Ring*> tLiveRings;

}  // namespace

Napi::Function Ring::Init(Napi::Env env) {
  return DefineClass(env, "Ring",
                     {
                         InstanceAccessor<&Ring::GetCapacity>("capacity"),
                         InstanceMethod<&Ring::Write>("write"),
                         InstanceMethod<&Ring::Writev>("writev"),
                         InstanceMethod<&Ring::Free>("free"),
                         InstanceMethod<&Ring::Read>("read"),
                         InstanceMethod<&Ring::ReadInto>("readInto"),
                         InstanceMethod<&Ring::ReadSmall>("readSmall"),
                         InstanceMethod<&Ring::Peek>("peek"),
                         InstanceMethod<&Ring::Release>("release"),
                         InstanceMethod<&Ring::Available>("available"),
                         InstanceMethod<&Ring::Head>("head"),
                         InstanceMethod<&Ring::Tail>("tail"),
                         InstanceMethod<&Ring::Resync>("resync"),
                     });
}

Ring::Ring(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Ring>(info) {
  Napi::Env env = info.Env();
  if (!HasTag(env, info[0], &kRegionTag)) {
    ThrowTypeError(env, "The \"region\" argument must be a Region");
    return;
  }
  Napi::Object regionObj = info[0].As<Napi::Object>();
  Region* region = Region::Unwrap(regionObj);
  if (region == nullptr) return;
  int64_t header, data, capacity;
  bool producer;
  if (!ArgInteger(info, 1, "headerOffset", 0, kMaxSafeInteger, &header)) return;
  if (!ArgInteger(info, 2, "dataOffset", 0, kMaxSafeInteger, &data)) return;
  if (!ArgInteger(info, 3, "capacity", static_cast<int64_t>(RING_MIN_CAPACITY), kMaxSafeInteger, &capacity)) return;
  if (!ArgBool(info, 4, "producer", &producer)) return;
  if (region->closed()) {
    ThrowCode(env, ERR_CLOSED, "region is closed");
    return;
  }
  uint64_t h = static_cast<uint64_t>(header), d = static_cast<uint64_t>(data), c = static_cast<uint64_t>(capacity);
  uint64_t size = region->size();
  if ((c & (c - 1)) != 0) {
    ThrowRangeError(env, "ring capacity must be a power of two >= " + Str(RING_MIN_CAPACITY) + ", got " + Str(c));
    return;
  }
  if (h % RING_HEADER_ALIGN != 0 || d % RING_DATA_ALIGN != 0) {
    ThrowRangeError(env, "ring header offset must be " + Str(RING_HEADER_ALIGN) + "-aligned and data offset " +
                             Str(RING_DATA_ALIGN) + "-aligned");
    return;
  }
  if (h > size || size - h < RING_HEADER_SIZE) {
    ThrowRangeError(env, "ring header at " + Str(h) + " does not fit in a region of " + Str(size) + " bytes");
    return;
  }
  if (d > size || size - d < c) {
    ThrowRangeError(env, "ring data " + Str(d) + "+" + Str(c) + " does not fit in a region of " + Str(size) + " bytes");
    return;
  }
  if (d < h + RING_HEADER_SIZE && h < d + c) {
    ThrowRangeError(env, "ring header and data overlap");
    return;
  }
  region_ = region;
  header_ = h;
  data_ = d;
  capacity_ = c;
  mask_ = c - 1;
  producer_ = producer;
  uint64_t head = LoadAcquire(SharedHead());
  uint64_t tail = LoadAcquire(SharedTail());
  if (head - tail > capacity_) {
    ThrowCode(env, ERR_CORRUPT, "ring is corrupt: head " + Str(head) + " and tail " + Str(tail) + " are more than " +
                                    Str(capacity_) + " apart");
    return;
  }
  pos_ = producer ? head : tail;
  seenTail_ = tail;
  regionRef_ = Napi::Persistent(regionObj);
  info.This().As<Napi::Object>().TypeTag(&kRingTag);
  tLiveRings.insert(this);
}

Ring::~Ring() { tLiveRings.erase(this); }

bool Ring::CheckLive(const Napi::CallbackInfo& info) const {
  if (tLiveRings.count(this) != 0) return true;
  ThrowTypeError(info.Env(), "Illegal invocation");
  return false;
}

uint64_t* Ring::SharedHead() const { return reinterpret_cast<uint64_t*>(region_->base() + header_ + RING_HEAD); }
uint64_t* Ring::SharedTail() const { return reinterpret_cast<uint64_t*>(region_->base() + header_ + RING_TAIL); }
uint8_t* Ring::Data() const { return region_->base() + data_; }

bool Ring::Enter(const Napi::CallbackInfo& info, int end, const char* what) {
  if (!CheckLive(info)) return false;
  if (region_ == nullptr || region_->closed()) {
    ThrowCode(info.Env(), ERR_CLOSED, std::string("ring is closed (its region was closed): cannot ") + what);
    return false;
  }
  if (end >= 0 && (end == 1) != producer_) {
    ThrowCode(info.Env(), ERR_BAD_ARG, std::string(what) + "() is for the " + (end == 1 ? "producer" : "consumer") + " end");
    return false;
  }
  return true;
}

bool Ring::Used(Napi::Env env, uint64_t* used) {
  uint64_t head = producer_ ? pos_ : LoadAcquire(SharedHead());
  uint64_t tail = producer_ ? LoadAcquire(SharedTail()) : pos_;
  uint64_t u = head - tail;
  if (u > capacity_) {
    ThrowCode(env, ERR_CORRUPT, std::string("ring is corrupt: ") + (producer_ ? "tail " : "head ") +
                                    Str(producer_ ? tail : head) + " is more than " + Str(capacity_) + " bytes from " +
                                    (producer_ ? "head " : "tail ") + Str(pos_));
    return false;
  }
  *used = u;
  if (producer_) seenTail_ = tail;
  return true;
}

bool Ring::Room(Napi::Env env, uint64_t want, uint64_t* room) {
  uint64_t seen = capacity_ - (pos_ - seenTail_);
  if (seen >= want) {
    *room = seen;
    return true;
  }
  uint64_t used;
  if (!Used(env, &used)) return false;
  *room = capacity_ - used;
  return true;
}

void Ring::CopyIn(uint64_t pos, const uint8_t* src, size_t n) {
  size_t off = static_cast<size_t>(pos & mask_);
  size_t first = std::min(n, static_cast<size_t>(capacity_) - off);
  // memmove: the source may itself be a view of this region.
  std::memmove(Data() + off, src, first);
  if (n > first) std::memmove(Data(), src + first, n - first);
}

void Ring::CopyOut(uint64_t pos, uint8_t* dst, size_t n) const {
  size_t off = static_cast<size_t>(pos & mask_);
  size_t first = std::min(n, static_cast<size_t>(capacity_) - off);
  std::memcpy(dst, Data() + off, first);
  if (n > first) std::memcpy(dst + first, Data(), n - first);
}

void Ring::Publish(uint64_t pos) { StoreRelease(producer_ ? SharedHead() : SharedTail(), pos); }

Napi::Value Ring::GetCapacity(const Napi::CallbackInfo& info) {
  if (!CheckLive(info)) return Napi::Value();
  return Napi::Number::New(info.Env(), static_cast<double>(capacity_));
}

Napi::Value Ring::Write(const Napi::CallbackInfo& info) {
  if (!Enter(info, 1, "write")) return Napi::Value();
  Napi::Env env = info.Env();
  uint8_t* src;
  size_t len;
  if (!BytesOf(env, info[0], "chunk", &src, &len)) return Napi::Value();
  uint64_t room;
  if (!Room(env, len, &room)) return Napi::Value();
  size_t n = static_cast<size_t>(std::min<uint64_t>(len, room));
  if (n > 0) {
    CopyIn(pos_, src, n);
    pos_ += n;
    Publish(pos_);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value Ring::Writev(const Napi::CallbackInfo& info) {
  if (!Enter(info, 1, "writev")) return Napi::Value();
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) {
    ThrowTypeError(env, "The \"chunks\" argument must be an Array of Uint8Array");
    return Napi::Value();
  }
  Napi::Array arr = info[0].As<Napi::Array>();
  uint32_t count = arr.Length();
  // Fetch every element first (getters may run JS), then read the views and
  // copy with no JS in between. A few chunks (the usual case) need no heap.
  constexpr uint32_t kInline = 16;
  napi_value inlineItems[kInline];
  std::pair<uint8_t*, size_t> inlineViews[kInline];
  std::vector<napi_value> heapItems;
  std::vector<std::pair<uint8_t*, size_t>> heapViews;
  napi_value* items = inlineItems;
  std::pair<uint8_t*, size_t>* views = inlineViews;
  if (count > kInline) {
    heapItems.resize(count);
    heapViews.resize(count);
    items = heapItems.data();
    views = heapViews.data();
  }
  for (uint32_t i = 0; i < count; i++) {
    if (napi_get_element(env, arr, i, &items[i]) != napi_ok) {
      if (!env.IsExceptionPending()) ThrowTypeError(env, "The \"chunks\" argument could not be read");
      return Napi::Value();
    }
  }
  if (region_->closed()) {
    ThrowCode(env, ERR_CLOSED, "ring is closed (its region was closed): cannot writev");
    return Napi::Value();
  }
  uint64_t want = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_typedarray_type type;
    size_t length = 0;
    void* ptr = nullptr;
    if (napi_get_typedarray_info(env, items[i], &type, &length, &ptr, nullptr, nullptr) != napi_ok ||
        (type != napi_uint8_array && type != napi_uint8_clamped_array)) {
      // Not a byte view: BytesOf says so, with the element's name.
      std::string name = "chunks[" + std::to_string(i) + "]";
      BytesOf(env, items[i], name.c_str(), &views[i].first, &views[i].second);
      return Napi::Value();
    }
    views[i].first = static_cast<uint8_t*>(ptr);
    views[i].second = ptr == nullptr ? 0 : length;
    want += views[i].second;
  }
  uint64_t room;
  if (!Room(env, want, &room)) return Napi::Value();
  uint64_t pos = pos_;
  for (uint32_t i = 0; i < count; i++) {
    if (room == 0) break;
    const auto& v = views[i];
    size_t n = static_cast<size_t>(std::min<uint64_t>(v.second, room));
    CopyIn(pos, v.first, n);
    pos += n;
    room -= n;
    if (n < v.second) break;
  }
  size_t total = static_cast<size_t>(pos - pos_);
  if (total > 0) {
    pos_ = pos;
    Publish(pos_);
  }
  return Napi::Number::New(env, static_cast<double>(total));
}

Napi::Value Ring::Free(const Napi::CallbackInfo& info) {
  if (!Enter(info, -1, "free")) return Napi::Value();
  uint64_t used;
  if (!Used(info.Env(), &used)) return Napi::Value();
  return Napi::Number::New(info.Env(), static_cast<double>(capacity_ - used));
}

Napi::Value Ring::Available(const Napi::CallbackInfo& info) {
  if (!Enter(info, -1, "available")) return Napi::Value();
  uint64_t used;
  if (!Used(info.Env(), &used)) return Napi::Value();
  return Napi::Number::New(info.Env(), static_cast<double>(used));
}

Napi::Value Ring::Read(const Napi::CallbackInfo& info) {
  if (!Enter(info, 0, "read")) return Napi::Value();
  Napi::Env env = info.Env();
  int64_t max;
  if (!ArgInteger(info, 0, "max", 1, kMaxSafeInteger, &max)) return Napi::Value();
  uint64_t used;
  if (!Used(env, &used)) return Napi::Value();
  if (used == 0) return env.Null();
  size_t n = static_cast<size_t>(std::min<uint64_t>(used, static_cast<uint64_t>(max)));
  uint8_t* dst = nullptr;
  Napi::Value buf = NewReadBuffer(env, n, &dst);
  if (buf.IsEmpty()) return Napi::Value();
  // Allocation may run GC but no JS: the region is still mapped (we hold it).
  CopyOut(pos_, dst, n);
  pos_ += n;
  peeked_ = 0;
  Publish(pos_);
  return buf;
}

// readInto(target): copies up to target.byteLength bytes into `target` (a
// Uint8Array the caller made, e.g. from Node's Buffer pool: much cheaper than
// a Buffer made here for a small read) and releases them; returns the count.
Napi::Value Ring::ReadInto(const Napi::CallbackInfo& info) {
  if (!Enter(info, 0, "readInto")) return Napi::Value();
  Napi::Env env = info.Env();
  uint8_t* dst;
  size_t len;
  if (!BytesOf(env, info[0], "target", &dst, &len)) return Napi::Value();
  uint64_t used;
  if (!Used(env, &used)) return Napi::Value();
  size_t n = static_cast<size_t>(std::min<uint64_t>(used, len));
  if (n > 0) {
    CopyOut(pos_, dst, n);
    pos_ += n;
    peeked_ = 0;
    Publish(pos_);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// readSmall(pool, offset, cap): a small read in one call. If the ring holds
// 1..cap bytes, copies them all to pool[offset..] and releases them, returning
// the count; 0 when empty; minus the count waiting when more than `cap` do
// (nothing is read: the caller reads them another way).
Napi::Value Ring::ReadSmall(const Napi::CallbackInfo& info) {
  if (!Enter(info, 0, "readSmall")) return Napi::Value();
  Napi::Env env = info.Env();
  uint8_t* dst;
  size_t len;
  if (!BytesOf(env, info[0], "pool", &dst, &len)) return Napi::Value();
  int64_t offset, cap;
  if (!ArgInteger(info, 1, "offset", 0, static_cast<int64_t>(len), &offset)) return Napi::Value();
  if (!ArgInteger(info, 2, "cap", 1, static_cast<int64_t>(len) - offset, &cap)) return Napi::Value();
  uint64_t used;
  if (!Used(env, &used)) return Napi::Value();
  if (used > static_cast<uint64_t>(cap)) return Napi::Number::New(env, -static_cast<double>(used));
  if (used > 0) {
    CopyOut(pos_, dst + offset, static_cast<size_t>(used));
    pos_ += used;
    peeked_ = 0;
    Publish(pos_);
  }
  return Napi::Number::New(env, static_cast<double>(used));
}

// peek(max): a Buffer over the bytes waiting from this end's position, up to
// `max` and to the ring's end (bytes past it come with the next peek), without
// copying or releasing them: the caller reads them in place, then release()s
// them. Null when empty; undefined if no such Buffer can be made here (read a
// copy). Only the count checked here may be released; a head that moved on
// meanwhile is looked at by the next peek. The Buffer keeps the pages mapped
// while it lives; the bytes are the producer's to write once released (and a
// hostile producer's at any time: they are data, never looked at here).
Napi::Value Ring::Peek(const Napi::CallbackInfo& info) {
  if (!Enter(info, 0, "peek")) return Napi::Value();
  Napi::Env env = info.Env();
  int64_t max;
  if (!ArgInteger(info, 0, "max", 1, kMaxSafeInteger, &max)) return Napi::Value();
  peeked_ = 0;
  uint64_t used;
  if (!Used(env, &used)) return Napi::Value();
  uint64_t off = pos_ & mask_;
  uint64_t n = std::min(std::min(used, capacity_ - off), static_cast<uint64_t>(max));
  if (n == 0) return env.Null();
  Napi::Value view = region_->NewView(env, data_ + off, static_cast<size_t>(n));
  if (view.IsEmpty()) return env.Undefined();
  peeked_ = n;
  return view;
}

// release(n): lets go of `n` bytes found by the last peek() (at most that
// many): the producer may write over them.
Napi::Value Ring::Release(const Napi::CallbackInfo& info) {
  if (!Enter(info, 0, "release")) return Napi::Value();
  Napi::Env env = info.Env();
  int64_t n;
  if (!ArgInteger(info, 0, "count", 0, static_cast<int64_t>(peeked_), &n)) return Napi::Value();
  peeked_ = 0;
  if (n > 0) {
    pos_ += static_cast<uint64_t>(n);
    Publish(pos_);
  }
  return env.Undefined();
}

Napi::Value Ring::Head(const Napi::CallbackInfo& info) {
  if (!Enter(info, -1, "head")) return Napi::Value();
  uint64_t v = producer_ ? pos_ : LoadAcquire(SharedHead());
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

// resync(): the ring's header now belongs to another connection of the same
// slot (the object is used again instead of a new one): this end's position
// is read from it again, with the constructor's check.
Napi::Value Ring::Resync(const Napi::CallbackInfo& info) {
  if (!Enter(info, -1, "resync")) return Napi::Value();
  uint64_t head = LoadAcquire(SharedHead());
  uint64_t tail = LoadAcquire(SharedTail());
  if (head - tail > capacity_) {
    ThrowCode(info.Env(), ERR_CORRUPT, "ring is corrupt: head " + Str(head) + " and tail " + Str(tail) +
                                           " are more than " + Str(capacity_) + " apart");
    return Napi::Value();
  }
  pos_ = producer_ ? head : tail;
  seenTail_ = tail;
  peeked_ = 0;
  return info.Env().Undefined();
}

Napi::Value Ring::Tail(const Napi::CallbackInfo& info) {
  if (!Enter(info, -1, "tail")) return Napi::Value();
  uint64_t v = producer_ ? LoadAcquire(SharedTail()) : pos_;
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

}  // namespace zivm
