// zivm native addon: shared-memory regions and rings, doorbells, fd passing,
// and VFIO for the guest side of an ivshmem-doorbell device.
#include <napi.h>

#include "doorbell.h"
#include "errors.h"
#include "spin.h"
#include "fdpass.h"
#include "region.h"
#include "readpool.h"
#include "ring.h"
#include "vfio.h"

namespace zivm {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorFactory", Napi::Function::New<SetErrorFactory>(env, "setErrorFactory"));
  exports.Set("Region", Region::Init(env));
  exports.Set("Ring", Ring::Init(env));
  exports.Set("readPool", Napi::Function::New<ReadPoolStats>(env, "readPool"));
  exports.Set("readPoolTrim", Napi::Function::New<ReadPoolTrim>(env, "readPoolTrim"));
  exports.Set("releaseCopies", Napi::Function::New<ReleaseCopies>(env, "releaseCopies"));
  exports.Set("Poller", Poller::Init(env));
  exports.Set("Spinner", Spinner::Init(env));
  exports.Set("memfdCreate", Napi::Function::New<MemfdCreate>(env, "memfdCreate"));
  exports.Set("fdSize", Napi::Function::New<FdSize>(env, "fdSize"));
  exports.Set("eventfd", Napi::Function::New<EventFd>(env, "eventfd"));
  exports.Set("notify", Napi::Function::New<Notify>(env, "notify"));
  exports.Set("drain", Napi::Function::New<Drain>(env, "drain"));
  exports.Set("unixListen", Napi::Function::New<UnixListen>(env, "unixListen"));
  exports.Set("socketPair", Napi::Function::New<SocketPair>(env, "socketPair"));
  exports.Set("unixAccept", Napi::Function::New<UnixAccept>(env, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New<UnixConnect>(env, "unixConnect"));
  exports.Set("sendMsg", Napi::Function::New<SendMsg>(env, "sendMsg"));
  exports.Set("recvMsg", Napi::Function::New<RecvMsg>(env, "recvMsg"));
  exports.Set("waitReadable", Napi::Function::New<WaitReadable>(env, "waitReadable"));
  exports.Set("peerCred", Napi::Function::New<PeerCred>(env, "peerCred"));
  exports.Set("tryLock", Napi::Function::New<TryLock>(env, "tryLock"));
  exports.Set("close", Napi::Function::New<CloseFd>(env, "close"));
  exports.Set("vfioOpen", Napi::Function::New<VfioOpen>(env, "vfioOpen"));
  exports.Set("vfioEnableBusMaster", Napi::Function::New<VfioEnableBusMaster>(env, "vfioEnableBusMaster"));
  exports.Set("vfioSetMsix", Napi::Function::New<VfioSetMsix>(env, "vfioSetMsix"));
  exports.Set("vfioClose", Napi::Function::New<VfioClose>(env, "vfioClose"));
  exports.Set("bar0Notify", Napi::Function::New<Bar0Notify>(env, "bar0Notify"));
  exports.Set("bar0Read32", Napi::Function::New<Bar0Read32>(env, "bar0Read32"));
  return exports;
}

}  // namespace zivm

static Napi::Object InitZivm(Napi::Env env, Napi::Object exports) { return zivm::Init(env, exports); }

NODE_API_MODULE(zivm, InitZivm)
