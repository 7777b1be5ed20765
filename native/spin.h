// Spinner: the short busy-poll before the event loop sleeps. While a peer is
// "hot" (traffic in the last few hundred microseconds) it watches its pending
// bitmap in the region from a uv_prepare callback instead of waiting for a
// doorbell, and advertises that in its peer entry so producers skip the
// eventfd write. When traffic stops it backs off to zero CPU: the flag is
// cleared, the bitmap re-checked, and the loop sleeps on the eventfd again.
#ifndef ZIVM_SPIN_H
#define ZIVM_SPIN_H

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <memory>

namespace zivm {

class Region;
class Spinner;

struct SpinHandles {
  uv_prepare_t prepare;
  uv_idle_t idle;
  Spinner* owner;
  int open;  // handles not yet closed
};

class Spinner : public Napi::ObjectWrap<Spinner> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Spinner(const Napi::CallbackInfo& info);
  ~Spinner() override;

 private:
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value SetTimes(const Napi::CallbackInfo& info);
  Napi::Value Wake(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void BeginClose();
  bool AnyPending() const;
  void SetPolling(int32_t v);
  void Call();
  void Cool();
  void Miss(uint64_t now);
  void SetWindow(uint64_t ns);
  int OtherWorkIn(uv_loop_t* loop);
  static void OnPrepare(uv_prepare_t* handle);
  static void OnIdle(uv_idle_t* handle);
  static void OnClose(uv_handle_t* handle);
  static void EnvCleanup(void* arg);

  SpinHandles* handles_ = nullptr;
  bool closing_ = false;
  bool selfRef_ = false;
  bool hook_ = false;
  bool hot_ = false;
  Region* region_ = nullptr;
  Napi::ObjectReference regionRef_;
  size_t bitmapOffset_ = 0;
  size_t words_ = 0;
  size_t pollingOffset_ = 0;
  uint64_t sliceNs_ = 50000;  // longest single spin before the loop gets a turn
  uint64_t hotNs_ = 200000;   // how long after the last traffic we keep spinning, at least
  // How long now: from hotNs_ up to kWindowGrowth times it, doubled each time
  // traffic came back after we stopped spinning but within the longest window
  // (a longer spin would have caught it: a peer that takes a millisecond to
  // answer), halved each time it came back long after.
  uint64_t windowNs_ = 200000;
  uint64_t cooledAt_ = 0;  // when spinning last stopped for want of traffic (0: it did not since)
  uint64_t lastWork_ = 0;
  uint64_t backoffUntil_ = 0;  // no spinning before this (spinning did not pay)
  int misses_ = 0;
  uint64_t backoffNs_ = 0;  // the next back-off's length (grows while spinning keeps not paying)
  int hits_ = 0;            // productive spins since the last back-off
  // [0]: kick (set by JS on traffic); [1]: turns of the loop (one per prepare
  // phase); [2]: set by JS when it left work for the next turn; [3]: the spin
  // window now, in microseconds (for inspection).
  int32_t* state_ = nullptr;
  Napi::Reference<Napi::Int32Array> stateRef_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace zivm

#endif
