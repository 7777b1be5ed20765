#include "doorbell.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "callback.h"
#include "errors.h"

namespace zivm {

const napi_type_tag kPollerTag = {0x7a69766d506f6c6cULL, 0x6572000000000003ULL};

namespace {

// Reads an eventfd until EAGAIN. Returns the sum, or -errno on another error
// (the sum so far is then in *sum).
int DrainFd(int fd, uint64_t* sum) {
  *sum = 0;
  for (;;) {
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    if (n == static_cast<ssize_t>(sizeof v)) {
      *sum += v;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n < 0) return -errno;
    return -EINVAL;  // short read: not an eventfd
  }
}

}  // namespace

Napi::Value EventFd(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(info.Env(), "eventfd", errno);
    return Napi::Value();
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Notify(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  uint64_t one = 1;
  for (;;) {
    ssize_t n = write(fd, &one, sizeof one);
    if (n == static_cast<ssize_t>(sizeof one)) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // counter saturated: already signalled
    ThrowErrno(info.Env(), "write", n < 0 ? errno : EIO);
    return Napi::Value();
  }
  return info.Env().Undefined();
}

Napi::Value Drain(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  uint64_t sum;
  int r = DrainFd(fd, &sum);
  if (r < 0) {
    ThrowErrno(info.Env(), "read", -r);
    return Napi::Value();
  }
  return Napi::Number::New(info.Env(), static_cast<double>(sum));
}

Napi::Function Poller::Init(Napi::Env env) {
  return DefineClass(env, "Poller",
                     {
                         InstanceMethod<&Poller::Start>("start"),
                         InstanceMethod<&Poller::Stop>("stop"),
                         InstanceMethod<&Poller::RefHandle>("ref"),
                         InstanceMethod<&Poller::UnrefHandle>("unref"),
                         InstanceMethod<&Poller::HasRef>("hasRef"),
                         InstanceMethod<&Poller::Close>("close"),
                     });
}

Poller::Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
  Napi::Env env = info.Env();
  int fd;
  Napi::Function cb;
  bool drain;
  if (!ArgFd(info, 0, "fd", &fd)) return;
  if (!ArgFunction(info, 1, "onReadable", &cb)) return;
  if (!ArgBool(info, 2, "drainEventfd", &drain)) return;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    ThrowCode(env, "ERR_ZIVM_NO_LOOP", "no event loop");
    return;
  }
  Napi::AsyncContext* ctx = new Napi::AsyncContext(env, "ZivmPoller", info.This().As<Napi::Object>());
  if (env.IsExceptionPending()) {
    delete ctx;
    return;
  }
  context_.reset(ctx);
  PollHandle* h = new PollHandle();
  h->owner = nullptr;
  int r = uv_poll_init(loop, &h->poll, fd);
  if (r != 0) {
    delete h;
    ThrowUv(env, "uv_poll_init", r);
    return;
  }
  // uv_poll_init made the fd non-blocking, so draining cannot hang.
  h->poll.data = h;
  r = uv_poll_start(&h->poll, UV_READABLE, OnPoll);
  if (r != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&h->poll), OnClose);  // owner is null: just frees
    ThrowUv(env, "uv_poll_start", r);
    return;
  }
  h->owner = this;
  handle_ = h;
  fd_ = fd;
  drain_ = drain;
  callback_ = Napi::Persistent(cb);
  if (napi_add_env_cleanup_hook(env, EnvCleanup, this) == napi_ok) hook_ = true;
  // Stay alive while the handle is open, whatever JS holds.
  Ref();
  selfRef_ = true;
  info.This().As<Napi::Object>().TypeTag(&kPollerTag);
}

Poller::~Poller() {
  if (hook_) napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
  if (handle_ != nullptr) {
    handle_->owner = nullptr;
    if (!closing_) uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll), OnClose);
    handle_ = nullptr;
  }
}

void Poller::BeginClose() {
  if (closing_ || handle_ == nullptr) return;
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll), OnClose);
}

void Poller::OnClose(uv_handle_t* handle) {
  PollHandle* h = static_cast<PollHandle*>(handle->data);
  Poller* owner = h->owner;
  delete h;
  if (owner != nullptr) owner->OnClosed();
}

void Poller::OnClosed() {
  handle_ = nullptr;
  Napi::HandleScope scope(Env());
  context_.reset();
  if (selfRef_) {
    selfRef_ = false;
    Unref();  // may let GC take us now
  }
}

void Poller::EnvCleanup(void* arg) {
  // The env is going away: close the handle now; the close callback may run
  // after this object is gone, so it must not find us.
  Poller* self = static_cast<Poller*>(arg);
  self->hook_ = false;
  if (self->handle_ != nullptr) {
    if (!self->closing_) {
      self->closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&self->handle_->poll), OnClose);
    }
    self->handle_->owner = nullptr;
    self->handle_ = nullptr;
  }
}

void Poller::OnPoll(uv_poll_t* handle, int status, int) {
  PollHandle* h = static_cast<PollHandle*>(handle->data);
  Poller* self = h->owner;
  if (self == nullptr || self->closing_) return;
  if (self->drain_ && status == 0) {
    uint64_t sum;
    DrainFd(self->fd_, &sum);  // errors show up to the callback's own reads
  }
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  CallRounds(env, *self->context_, self->Value(), self->callback_.Value(), Napi::Number::New(env, status));
}

Napi::Value Poller::Start(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  if (closing_ || handle_ == nullptr) {
    ThrowCode(info.Env(), ERR_CLOSED, "poller is closed");
    return Napi::Value();
  }
  int r = uv_poll_start(&handle_->poll, UV_READABLE, OnPoll);
  if (r != 0) {
    ThrowUv(info.Env(), "uv_poll_start", r);
    return Napi::Value();
  }
  return info.Env().Undefined();
}

Napi::Value Poller::Stop(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  if (!closing_ && handle_ != nullptr) uv_poll_stop(&handle_->poll);
  return info.Env().Undefined();
}

Napi::Value Poller::RefHandle(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  if (!closing_ && handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.Env().Undefined();
}

Napi::Value Poller::UnrefHandle(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  if (!closing_ && handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.Env().Undefined();
}

Napi::Value Poller::HasRef(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  bool r = !closing_ && handle_ != nullptr && uv_has_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll)) != 0;
  return Napi::Boolean::New(info.Env(), r);
}

Napi::Value Poller::Close(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kPollerTag)) return Napi::Value();
  BeginClose();
  return info.Env().Undefined();
}

}  // namespace zivm
