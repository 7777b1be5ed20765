#include "spin.h"

#include "callback.h"

#include <algorithm>
#include <sched.h>
#include <time.h>

#include "errors.h"
#include "region.h"

namespace zivm {

namespace {

const napi_type_tag kSpinnerTag = {0x7a69766d5370696eULL, 0x6e65720000000005ULL};

uint64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// How long to spin before offering the core to whoever else is runnable.
constexpr uint64_t kYieldEveryNs = 20000;
constexpr int kMissesBeforeBackoff = 3;
// A sched_yield() that takes longer than this gave our core away for long
// enough to count: we were off it for a scheduler's slice, as when a process
// that computes wants the core. Shorter ones are threads taking turns (the
// peer spinning too, V8's compiler threads while a process warms up): counted
// as misses, they kept a fresh HTTP server and its client in 20 ms back-offs
// for most of their first half second, ringing each other's doorbells, at
// about 0.9x TCP's request rate where 1 ms makes it 1.3x.
constexpr uint64_t kGaveAwayNs = 1000000;
// A back-off lasts 1 ms the first time, twice as long each time spinning
// still does not pay right after one, up to 20 ms. A few misses in a row also
// come from other threads taking turns on a core the peer does not share
// (V8's compiler and GC threads): a short back-off costs a latency-bound
// connection a few doorbell round trips, not 20 ms of them.
constexpr uint64_t kBackoffMinNs = 1000000;
constexpr uint64_t kBackoffMaxNs = 20000000;
// Productive spins after which the next back-off is a short one again.
constexpr int kHitsToForgive = 64;
// The spin window grows up to this many times the configured one (2 ms by
// default): traffic that comes back after spinning stopped, but within what
// the longest window would have covered, doubles it; traffic that comes back
// after more than four times that halves it. A waker's doorbell and the
// sleeper's wake-up cost more than a spin of a millisecond in a VM (20 to 45 µs
// for the eventfd write alone here), and a TLS handshake waits about that
// long for each flight.
constexpr uint64_t kWindowGrowth = 10;

}  // namespace

Napi::Function Spinner::Init(Napi::Env env) {
  return DefineClass(env, "Spinner",
                     {
                         InstanceAccessor<&Spinner::GetState>("state"),
                         InstanceMethod<&Spinner::SetTimes>("setTimes"),
                         InstanceMethod<&Spinner::Wake>("wake"),
                         InstanceMethod<&Spinner::Close>("close"),
                     });
}

// new Spinner(region, bitmapOffset, words, pollingOffset, onWork)
Spinner::Spinner(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Spinner>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !HasTag(env, info[0], &kRegionTag)) {
    ThrowTypeError(env, "The \"region\" argument must be a Region");
    return;
  }
  Napi::Object regionObj = info[0].As<Napi::Object>();
  Region* region = Region::Unwrap(regionObj);
  if (region == nullptr || region->closed()) {
    ThrowCode(env, ERR_CLOSED, "region is closed");
    return;
  }
  int64_t bitmap, words, polling;
  Napi::Function cb;
  if (!ArgInteger(info, 1, "bitmapOffset", 0, INT64_MAX, &bitmap)) return;
  if (!ArgInteger(info, 2, "words", 1, 1 << 20, &words)) return;
  if (!ArgInteger(info, 3, "pollingOffset", 0, INT64_MAX, &polling)) return;
  if (!ArgFunction(info, 4, "onWork", &cb)) return;
  size_t size = region->size();
  if (bitmap % 4 != 0 || polling % 4 != 0 || static_cast<uint64_t>(bitmap) + static_cast<uint64_t>(words) * 4 > size ||
      static_cast<uint64_t>(polling) + 4 > size) {
    ThrowRangeError(env, "bitmap or polling word outside the region or misaligned");
    return;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    ThrowCode(env, "ERR_ZIVM_NO_LOOP", "no event loop");
    return;
  }
  Napi::AsyncContext* ctx = new Napi::AsyncContext(env, "ZivmSpinner", info.This().As<Napi::Object>());
  if (env.IsExceptionPending()) {
    delete ctx;
    return;
  }
  context_.reset(ctx);
  Napi::Int32Array state = Napi::Int32Array::New(env, 4);
  state_ = state.Data();
  state_[3] = static_cast<int32_t>(windowNs_ / 1000);
  stateRef_ = Napi::Persistent(state);
  region_ = region;
  regionRef_ = Napi::Persistent(regionObj);
  bitmapOffset_ = static_cast<size_t>(bitmap);
  words_ = static_cast<size_t>(words);
  pollingOffset_ = static_cast<size_t>(polling);
  callback_ = Napi::Persistent(cb);

  SpinHandles* h = new SpinHandles();
  h->owner = this;
  h->open = 2;
  uv_prepare_init(loop, &h->prepare);
  uv_idle_init(loop, &h->idle);
  h->prepare.data = h;
  h->idle.data = h;
  uv_prepare_start(&h->prepare, OnPrepare);
  // Neither handle keeps the process alive: sockets do that.
  uv_unref(reinterpret_cast<uv_handle_t*>(&h->prepare));
  uv_unref(reinterpret_cast<uv_handle_t*>(&h->idle));
  handles_ = h;
  if (napi_add_env_cleanup_hook(env, EnvCleanup, this) == napi_ok) hook_ = true;
  Ref();
  selfRef_ = true;
  info.This().As<Napi::Object>().TypeTag(&kSpinnerTag);
}

Spinner::~Spinner() {
  if (hook_) napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
  if (handles_ != nullptr) {
    handles_->owner = nullptr;
    if (!closing_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&handles_->prepare), OnClose);
      uv_close(reinterpret_cast<uv_handle_t*>(&handles_->idle), OnClose);
    }
    handles_ = nullptr;
  }
}

Napi::Value Spinner::GetState(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kSpinnerTag)) return Napi::Value();
  return stateRef_.Value();
}

// setTimes(sliceUs, hotUs): hotUs 0 turns spinning off.
Napi::Value Spinner::SetTimes(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kSpinnerTag)) return Napi::Value();
  int64_t slice, hot;
  if (!ArgInteger(info, 0, "sliceUs", 0, 1000000, &slice)) return Napi::Value();
  if (!ArgInteger(info, 1, "hotUs", 0, 10000000, &hot)) return Napi::Value();
  sliceNs_ = static_cast<uint64_t>(slice) * 1000;
  hotNs_ = static_cast<uint64_t>(hot) * 1000;
  SetWindow(hotNs_);
  cooledAt_ = 0;
  if (hotNs_ == 0) Cool();
  return info.Env().Undefined();
}

// wake(): work waits for the next turn of the loop. The loop polls without
// blocking until then, and the prepare phase calls for it (state [2]): what
// ringing our own doorbell does, without its three system calls (the eventfd
// write, the poll that returns it, the read that clears it). False once closed.
Napi::Value Spinner::Wake(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kSpinnerTag)) return Napi::Value();
  if (closing_ || handles_ == nullptr || region_->closed()) return Napi::Boolean::New(info.Env(), false);
  state_[2] = 1;
  uv_idle_start(&handles_->idle, OnIdle);
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value Spinner::Close(const Napi::CallbackInfo& info) {
  if (!CheckThis(info, &kSpinnerTag)) return Napi::Value();
  BeginClose();
  return info.Env().Undefined();
}

void Spinner::BeginClose() {
  if (closing_ || handles_ == nullptr) return;
  Cool();
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&handles_->prepare), OnClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&handles_->idle), OnClose);
}

void Spinner::OnClose(uv_handle_t* handle) {
  SpinHandles* h = static_cast<SpinHandles*>(handle->data);
  if (--h->open > 0) return;
  Spinner* owner = h->owner;
  delete h;
  if (owner == nullptr) return;
  owner->handles_ = nullptr;
  Napi::HandleScope scope(owner->Env());
  owner->context_.reset();
  if (owner->selfRef_) {
    owner->selfRef_ = false;
    owner->Unref();
  }
}

void Spinner::EnvCleanup(void* arg) {
  Spinner* self = static_cast<Spinner*>(arg);
  self->hook_ = false;
  if (self->handles_ != nullptr) {
    if (!self->closing_) {
      self->closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&self->handles_->prepare), OnClose);
      uv_close(reinterpret_cast<uv_handle_t*>(&self->handles_->idle), OnClose);
    }
    self->handles_->owner = nullptr;
    self->handles_ = nullptr;
  }
}

bool Spinner::AnyPending() const {
  if (region_->closed()) return false;
  const int32_t* w = reinterpret_cast<const int32_t*>(region_->base() + bitmapOffset_);
  for (size_t i = 0; i < words_; i++) {
    if (__atomic_load_n(&w[i], __ATOMIC_ACQUIRE) != 0) return true;
  }
  return false;
}

void Spinner::SetPolling(int32_t v) {
  if (region_->closed()) return;
  int32_t* p = reinterpret_cast<int32_t*>(region_->base() + pollingOffset_);
  __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

void Spinner::SetWindow(uint64_t ns) {
  windowNs_ = ns;
  if (state_ != nullptr) state_[3] = static_cast<int32_t>(ns / 1000);
}

// Stop spinning: producers ring the doorbell again from now on.
void Spinner::Cool() {
  if (!hot_) return;
  hot_ = false;
  SetPolling(0);
  if (handles_ != nullptr && !closing_) uv_idle_stop(&handles_->idle);
}

void Spinner::Call() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  CallRounds(env, *context_, Value(), callback_.Value(), Napi::Number::New(env, 0));
}

void Spinner::OnIdle(uv_idle_t*) {}

void Spinner::OnPrepare(uv_prepare_t* handle) {
  SpinHandles* h = static_cast<SpinHandles*>(handle->data);
  Spinner* s = h->owner;
  if (s == nullptr || s->closing_ || s->region_->closed()) return;
  // A new turn of the loop: JavaScript bounds the work it does per turn by it.
  s->state_[1]++;
  uint64_t now = NowNs();
  if (s->state_[2] != 0) {
    // Work JavaScript left for this turn (it had done its share of the last one).
    s->state_[2] = 0;
    s->lastWork_ = now;
    s->Call();
    // Not spinning, and no more left for the next turn: the loop may block again (see Wake).
    if (!s->closing_ && s->handles_ != nullptr && !s->hot_ && s->state_[2] == 0) uv_idle_stop(&h->idle);
    return;
  }
  if (s->state_[0] != 0) {
    s->state_[0] = 0;
    s->lastWork_ = now;
    if (s->cooledAt_ != 0) {
      uint64_t gap = now - s->cooledAt_;
      s->cooledAt_ = 0;
      uint64_t longest = s->hotNs_ * kWindowGrowth;
      uint64_t waited = s->windowNs_ + gap;  // from the last traffic to this
      if (waited <= longest) {
        s->SetWindow(std::min(s->windowNs_ * 2, longest));
      } else if (waited > 4 * longest) {
        s->SetWindow(std::max(s->windowNs_ / 2, s->hotNs_));
      }
    }
    if (!s->hot_ && s->hotNs_ > 0 && now >= s->backoffUntil_) {
      s->hot_ = true;
      // The idle handle makes the loop poll without blocking while we are hot.
      uv_idle_start(&h->idle, OnIdle);
    }
  }
  if (!s->hot_) return;
  // Other work is ready for this turn: an immediate (an HTTP/2 session's
  // write completes on one), a callback libuv has pending, a handle closing,
  // a timer due. It runs first: a spin now would only delay it (by a whole
  // slice per turn, for work that takes a turn per step), so the bitmap is
  // looked at once, not watched. Nor does a spin outlast the next timer.
  uint64_t deadline = now + s->sliceNs_;
  int timeout = s->OtherWorkIn(handle->loop);
  if (timeout == 0) {
    s->SetPolling(1);
    if (s->AnyPending()) {
      s->lastWork_ = now;
      s->Call();
    }
    return;
  }
  if (timeout > 0) deadline = std::min(deadline, now + static_cast<uint64_t>(timeout) * 1000000);
  s->SetPolling(1);
  uint64_t yieldAt = now + kYieldEveryNs;
  // Whether a sched_yield() of this spin gave the core away (someone else ran).
  bool gaveAway = false;
  for (;;) {
    if (s->AnyPending()) {
      // Work that only came after we had to give the core away means the
      // peer needed our core: spinning costs it more than a doorbell would.
      // (Work that merely took a while, with a core of its own, is a hit.)
      if (gaveAway) {
        s->Miss(now);
      } else {
        s->misses_ = 0;
        if (++s->hits_ >= kHitsToForgive) s->backoffNs_ = 0;
      }
      s->lastWork_ = now;
      s->Call();
      return;
    }
    now = NowNs();
    if (now >= deadline) break;
    if (now >= yieldAt) {
      // Cooperative: if another process wants this core (often the peer we
      // wait for), let it run; if not, this returns at once.
      sched_yield();
      uint64_t back = NowNs();
      if (back - now > kGaveAwayNs) gaveAway = true;
      now = back;
      yieldAt = now + kYieldEveryNs;
    } else {
      CpuRelax();
    }
  }
  if (now - s->lastWork_ < s->windowNs_) return;
  // Quiet for long enough: sleep on the doorbell. A producer that saw us
  // polling skipped it, so look once more after saying we stopped.
  s->Cool();
  s->cooledAt_ = now;
  if (s->AnyPending()) s->Call();
}

// Milliseconds until the loop has other work (0: now; -1: none is
// scheduled), leaving out our own idle handle, which is active while we are
// hot only to keep the poll phase from blocking.
int Spinner::OtherWorkIn(uv_loop_t* loop) {
  uv_idle_t* idle = &handles_->idle;
  const bool active = uv_is_active(reinterpret_cast<uv_handle_t*>(idle)) != 0;
  if (active) uv_idle_stop(idle);
  int timeout = uv_backend_timeout(loop);
  if (active) uv_idle_start(idle, OnIdle);
  return timeout;
}

// Several unproductive spins in a row: sleep on doorbells for a while, as a
// plain socket would, then try spinning again (see kBackoffMinNs).
void Spinner::Miss(uint64_t now) {
  hits_ = 0;
  if (++misses_ < kMissesBeforeBackoff) return;
  misses_ = 0;
  backoffNs_ = backoffNs_ == 0 ? kBackoffMinNs : std::min(backoffNs_ * 2, kBackoffMaxNs);
  backoffUntil_ = now + backoffNs_;
  // The peer needs our core: long spins cost it most.
  SetWindow(hotNs_);
  cooledAt_ = 0;
  Cool();
}

}  // namespace zivm
