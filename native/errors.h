// Error helpers. Every Throw* leaves a pending JS exception; the caller must
// return right after (C++ exceptions are off).
#ifndef ZIVM_ERRORS_H
#define ZIVM_ERRORS_H

#include <napi.h>

#include <cstdint>
#include <string>

namespace zivm {

constexpr const char* ERR_CORRUPT = "ERR_ZIVM_CORRUPT";
constexpr const char* ERR_CLOSED = "ERR_ZIVM_CLOSED";
constexpr const char* ERR_BAD_ARG = "ERR_ZIVM_BAD_ARG";
constexpr const char* ERR_INVALID_ARG_TYPE = "ERR_INVALID_ARG_TYPE";

// Node-style system error: message "<syscall> <CODE>[ <path>]", fields code,
// errno (negative), syscall[, path]. `err` is a positive errno value.
void ThrowErrno(Napi::Env env, const char* syscall, int err, const char* path = nullptr);
// Same for a libuv status (negative).
void ThrowUv(Napi::Env env, const char* syscall, int uvStatus);
// Error with a zivm code (ERR_ZIVM_CORRUPT, ERR_ZIVM_CLOSED, ...).
void ThrowCode(Napi::Env env, const char* code, const std::string& message);
// setErrorFactory(fn): errors with a zivm code are made by fn(code, message)
// from then on (zivm's own error classes), else plain Errors with a code.
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info);
// TypeError with code ERR_INVALID_ARG_TYPE.
void ThrowTypeError(Napi::Env env, const std::string& message);
// RangeError with code ERR_ZIVM_BAD_ARG.
void ThrowRangeError(Napi::Env env, const std::string& message);

// Argument readers: return false with an exception pending on failure.
constexpr int64_t kMaxSafeInteger = 9007199254740991LL;  // 2^53 - 1
bool ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max, int64_t* out);
bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name, int* out);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool* out);
// A string without NUL characters.
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* name, std::string* out);
bool ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* name, Napi::Function* out);
// A Uint8Array (Buffer included): its bytes, respecting byteOffset/byteLength.
bool BytesOf(Napi::Env env, napi_value v, const char* name, uint8_t** data, size_t* len);

// True if `info.This()` carries `tag` (the object was made by our constructor),
// so a method borrowed onto another object cannot reinterpret its wrap.
// Throws TypeError "Illegal invocation" otherwise.
bool CheckThis(const Napi::CallbackInfo& info, const napi_type_tag* tag);
bool HasTag(Napi::Env env, napi_value v, const napi_type_tag* tag);

}  // namespace zivm

#endif
