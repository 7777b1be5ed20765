#include "region.h"

#include <v8-typed-array.h>  // v8::TypedArray::kMaxLength: the largest external buffer Node makes
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "fdstat.h"

namespace zivm {

const napi_type_tag kRegionTag = {0x7a69766d52656769ULL, 0x6f6e000000000001ULL};

namespace {

constexpr unsigned long kAnonInodeFsMagic = 0x09041934;  // ANON_INODE_FS_MAGIC (linux/magic.h)

void Unmap(Mapping* m) {
  if (m->unmapped) return;
  m->unmapped = true;
  munmap(m->addr, m->size);
}

void Release(Mapping* m) {
  if (--m->refs == 0) delete m;
}

// Unmaps once nothing in JS reaches the pages any more.
void UnmapIfUnreachable(Mapping* m) {
  if (!m->bufferLive && m->views == 0) Unmap(m);
}

// True for an fd whose fstat size says nothing about what can be mapped: an
// empty non-regular file (character devices) or an anonymous inode (a VFIO
// device fd). An empty regular file (a memfd, a tmpfs file) has really 0 bytes.
bool SizeUnknown(int fd, const struct stat& st) {
  if (st.st_size != 0) return false;
  if (!S_ISREG(st.st_mode)) return true;
  struct statfs fs;
  return fstatfs(fd, &fs) == 0 && static_cast<unsigned long>(fs.f_type) == kAnonInodeFsMagic;
}

}  // namespace

Napi::Function Region::Init(Napi::Env env) {
  return DefineClass(env, "Region",
                     {
                         InstanceAccessor<&Region::GetBuffer>("buffer"),
                         InstanceAccessor<&Region::GetSize>("size"),
                         InstanceMethod<&Region::Close>("close"),
                         InstanceMethod<&Region::Resident>("resident"),
                         InstanceMethod<&Region::Discard>("discard"),
                         InstanceMethod<&Region::Zero>("zero"),
                         InstanceMethod<&Region::Copy>("copy"),
                     });
}

Region::Region(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Region>(info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t size;
  int64_t offset = 0;
  if (!ArgFd(info, 0, "fd", &fd)) return;
  if (!ArgInteger(info, 1, "size", 1, kMaxSafeInteger, &size)) return;
  int64_t view = size;
  if (info.Length() > 3 && !info[3].IsUndefined() && !ArgInteger(info, 3, "view", 1, size, &view)) return;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!ArgInteger(info, 2, "offset", 0, kMaxSafeInteger, &offset)) return;
    const int64_t page = sysconf(_SC_PAGESIZE);
    if (page > 0 && offset % page != 0) {
      ThrowRangeError(env, "The value of \"offset\" must be a multiple of the page size (" + std::to_string(page) + "). Received " +
                               std::to_string(offset));
      return;
    }
    if (offset > kMaxSafeInteger - size) {
      ThrowRangeError(env, "offset " + std::to_string(offset) + " + size " + std::to_string(size) + " is beyond 2^53");
      return;
    }
  }
  struct stat st;
  if (FdStat(fd, &st) != 0) {
    ThrowErrno(env, "fstat", errno);
    return;
  }
  // A file knows its size; a device fd that reports none (VFIO's, an anonymous
  // inode) maps what the caller says (the size of its region info).
  if (!SizeUnknown(fd, st) && offset + size > st.st_size) {
    ThrowRangeError(env, "cannot map " + std::to_string(size) + " bytes" + (offset ? " at offset " + std::to_string(offset) : std::string()) +
                             " of an fd of " + std::to_string(st.st_size) + " bytes");
    return;
  }
  if (static_cast<uint64_t>(view) > static_cast<uint64_t>(v8::TypedArray::kMaxLength)) {
    ThrowRangeError(env, "cannot view " + std::to_string(view) + " bytes of a mapping: an ArrayBuffer holds at most " +
                             std::to_string(static_cast<uint64_t>(v8::TypedArray::kMaxLength)));
    return;
  }
  void* addr = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) {
    ThrowErrno(env, "mmap", errno);
    return;
  }
  Mapping* m = new Mapping{static_cast<uint8_t*>(addr), static_cast<size_t>(size), false, 2, true, 0};
  napi_value ab;
  napi_status status = napi_create_external_arraybuffer(env, addr, static_cast<size_t>(view), FinalizeBuffer, m, &ab);
  if (status != napi_ok) {
    // If Node ran the finalizer already it dropped its reference; otherwise the
    // record is leaked on purpose (a late finalizer must still find it).
    Unmap(m);
    if (!env.IsExceptionPending()) ThrowCode(env, "ERR_ZIVM_NO_MEMORY", "could not create an ArrayBuffer over the mapping");
    return;
  }
  mapping_ = m;
  size_ = static_cast<size_t>(size);
  buffer_ = Napi::Persistent(Napi::ArrayBuffer(env, ab));
  if (napi_add_env_cleanup_hook(env, EnvCleanup, this) == napi_ok) hook_ = true;
  info.This().As<Napi::Object>().TypeTag(&kRegionTag);
}

Region::~Region() {
  if (hook_) napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
  if (mapping_ != nullptr) Release(mapping_);
}

void Region::FinalizeBuffer(napi_env, void*, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  m->bufferLive = false;
  UnmapIfUnreachable(m);
  Release(m);
}

void Region::FinalizeView(napi_env, void*, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  m->views--;
  UnmapIfUnreachable(m);
  Release(m);
}

Napi::Value Region::NewView(Napi::Env env, uint64_t offset, size_t length) {
  Mapping* m = mapping_;
  napi_value buf;
  m->refs++;
  m->views++;
  napi_status status = napi_create_external_buffer(env, length, m->addr + offset, FinalizeView, m, &buf);
  if (status == napi_ok) return Napi::Value(env, buf);
  if (status == napi_no_external_buffers_allowed) {
    // Refused before anything was made (a Node.js built with V8's sandbox): no finalizer will run.
    m->views--;
    m->refs--;
  }
  // Otherwise Node may or may not have called the finalizer: the counts may
  // stay taken, which keeps the pages mapped until env cleanup (a leak, never
  // a view of unmapped memory).
  if (env.IsExceptionPending()) env.GetAndClearPendingException();
  return Napi::Value();
}

void Region::EnvCleanup(void* arg) {
  Region* self = static_cast<Region*>(arg);
  self->hook_ = false;
  self->closed_ = true;
  // No JS runs any more: unmap now rather than whenever the buffer goes.
  if (self->mapping_ != nullptr) Unmap(self->mapping_);
}

Napi::Value Region::GetBuffer(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kRegionTag)) return Napi::Value();
  return buffer_.Value();
}

Napi::Value Region::GetSize(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kRegionTag)) return Napi::Value();
  return Napi::Number::New(info.Env(), static_cast<double>(size_));
}

// resident([offset, length]): bytes of the mapping's pages [offset, offset + length)
// that are memory now (mincore: for a shared mapping, pages any process
// touched), not what is merely mapped.
Napi::Value Region::Resident(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kRegionTag)) return Napi::Value();
  Napi::Env env = info.Env();
  if (closed()) {
    ThrowCode(env, ERR_CLOSED, "region is closed");
    return Napi::Value();
  }
  int64_t offset = 0;
  int64_t length = static_cast<int64_t>(size_);
  if (info.Length() > 0 && !info[0].IsUndefined() && !ArgInteger(info, 0, "offset", 0, static_cast<int64_t>(size_), &offset)) return Napi::Value();
  if (info.Length() > 1 && !info[1].IsUndefined() && !ArgInteger(info, 1, "length", 0, static_cast<int64_t>(size_) - offset, &length))
    return Napi::Value();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t start = static_cast<size_t>(offset) / page * page;
  size_t end = static_cast<size_t>(offset + length);
  if (end <= start) return Napi::Number::New(env, 0);
  // In chunks: one byte of vector per page.
  constexpr size_t kChunkPages = 65536;
  std::vector<unsigned char> vec(kChunkPages);
  double bytes = 0;
  for (size_t at = start; at < end; at += kChunkPages * page) {
    size_t span = std::min(end - at, kChunkPages * page);
    if (mincore(mapping_->addr + at, span, vec.data()) != 0) {
      ThrowErrno(env, "mincore", errno);
      return Napi::Value();
    }
    size_t pages = (span + page - 1) / page;
    for (size_t i = 0; i < pages; i++)
      if (vec[i] & 1) bytes += static_cast<double>(page);
  }
  return Napi::Number::New(env, bytes);
}

// discard(offset, length): gives the pages of [offset, offset + length) back
// (MADV_REMOVE: every mapping of the memory reads zeros there afterwards, and
// they are no longer memory until written again). offset and length page
// aligned. False where the mapping cannot (a device's memory).
Napi::Value Region::Discard(const Napi::CallbackInfo& info) {
  int64_t offset, length;
  if (!EnterRange(info, kMaxSafeInteger, &offset, &length)) return Napi::Value();
  Napi::Env env = info.Env();
  const int64_t page = sysconf(_SC_PAGESIZE);
  if (offset % page != 0 || length % page != 0) {
    ThrowRangeError(env, "discard: offset and length must be multiples of the page size (" + std::to_string(page) + ")");
    return Napi::Value();
  }
  if (length == 0) return Napi::Boolean::New(env, true);
  return Napi::Boolean::New(env, madvise(mapping_->addr + offset, static_cast<size_t>(length), MADV_REMOVE) == 0);
}

Napi::Value Region::Close(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kRegionTag)) return Napi::Value();
  Napi::Env env = info.Env();
  if (closed_) return env.Undefined();
  closed_ = true;
  // Detach first so no JS view can reach the pages, then unmap. If the buffer
  // cannot be detached the pages stay mapped until it is collected: leaking is
  // better than leaving a live view over unmapped memory.
  bool detached = false;
  if (!buffer_.IsEmpty()) {
    Napi::ArrayBuffer ab = buffer_.Value();
    if (!ab.IsEmpty()) {
      // Already detached means someone else took the contents (a transfer):
      // the pages then live until that owner lets go, and the finalizer unmaps.
      bool already = false;
      if (napi_is_detached_arraybuffer(env, ab, &already) != napi_ok) already = true;
      if (already) {
        detached = false;
      } else if (napi_detach_arraybuffer(env, ab) == napi_ok) {
        detached = true;
      } else if (env.IsExceptionPending()) {
        env.GetAndClearPendingException();
      }
    }
  }
  if (detached && mapping_ != nullptr) {
    mapping_->bufferLive = false;
    // A view still alive keeps the pages until it is collected.
    UnmapIfUnreachable(mapping_);
  }
  return env.Undefined();
}


// The common start of the calls on a byte range of the mapping: right class,
// still mapped, and [offset, offset + length) inside it, length at most `most`.
bool Region::EnterRange(const Napi::CallbackInfo& info, int64_t most, int64_t* offset, int64_t* length) {
  if (!CheckThis(info, &kRegionTag)) return false;
  if (closed()) {
    ThrowCode(info.Env(), ERR_CLOSED, "region is closed");
    return false;
  }
  if (!ArgInteger(info, 0, "offset", 0, static_cast<int64_t>(size_), offset)) return false;
  return ArgInteger(info, 1, "length", 0, std::min<int64_t>(static_cast<int64_t>(size_) - *offset, most), length);
}

// zero(offset, length): writes zeros over [offset, offset + length) of the
// mapping, anywhere in it (the buffer may view only its start).
Napi::Value Region::Zero(const Napi::CallbackInfo& info) {
  int64_t offset, length;
  if (!EnterRange(info, kMaxSafeInteger, &offset, &length)) return Napi::Value();
  if (length > 0) memset(mapping_->addr + offset, 0, static_cast<size_t>(length));
  return info.Env().Undefined();
}

// copy(offset, length): a new Buffer with the bytes of [offset, offset + length),
// at most 1 GiB, anywhere in the mapping (for inspection: nothing on a
// connection's path).
Napi::Value Region::Copy(const Napi::CallbackInfo& info) {
  int64_t offset, length;
  if (!EnterRange(info, int64_t{1} << 30, &offset, &length)) return Napi::Value();
  return Napi::Buffer<uint8_t>::Copy(info.Env(), mapping_->addr + offset, static_cast<size_t>(length));
}

}  // namespace zivm
