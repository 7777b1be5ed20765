// Unix-domain sockets with fd passing (SCM_RIGHTS), memfd, and small fd helpers.
#ifndef ZIVM_FDPASS_H
#define ZIVM_FDPASS_H

#include <napi.h>

namespace zivm {

Napi::Value MemfdCreate(const Napi::CallbackInfo& info);
Napi::Value FdSize(const Napi::CallbackInfo& info);
Napi::Value UnixListen(const Napi::CallbackInfo& info);
Napi::Value SocketPair(const Napi::CallbackInfo& info);
Napi::Value UnixAccept(const Napi::CallbackInfo& info);
Napi::Value UnixConnect(const Napi::CallbackInfo& info);
Napi::Value SendMsg(const Napi::CallbackInfo& info);
Napi::Value RecvMsg(const Napi::CallbackInfo& info);
Napi::Value WaitReadable(const Napi::CallbackInfo& info);
Napi::Value PeerCred(const Napi::CallbackInfo& info);
Napi::Value TryLock(const Napi::CallbackInfo& info);
Napi::Value CloseFd(const Napi::CallbackInfo& info);

}  // namespace zivm

#endif
