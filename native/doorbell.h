// Doorbells: eventfd create/notify/drain, and Poller, a uv_poll watcher that
// calls back into JS on the main loop when an fd becomes readable.
#ifndef ZIVM_DOORBELL_H
#define ZIVM_DOORBELL_H

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <memory>

namespace zivm {

extern const napi_type_tag kPollerTag;

Napi::Value EventFd(const Napi::CallbackInfo& info);
Napi::Value Notify(const Napi::CallbackInfo& info);
Napi::Value Drain(const Napi::CallbackInfo& info);

class Poller;

// The uv handle lives apart from the Poller: libuv frees it asynchronously
// (uv_close), possibly after the Poller is gone at env teardown.
struct PollHandle {
  uv_poll_t poll;
  Poller* owner;
};

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Poller(const Napi::CallbackInfo& info);
  ~Poller() override;

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RefHandle(const Napi::CallbackInfo& info);
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info);
  Napi::Value HasRef(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void BeginClose();
  void OnClosed();
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClose(uv_handle_t* handle);
  static void EnvCleanup(void* arg);

  PollHandle* handle_ = nullptr;  // set from init until the close callback
  bool closing_ = false;          // close requested (uv_close called)
  bool selfRef_ = false;          // holding a strong reference to our JS object
  bool hook_ = false;
  bool drain_ = false;
  int fd_ = -1;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace zivm

#endif
