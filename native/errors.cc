#include "errors.h"

#include <uv.h>

#include <cmath>
#include <cstring>

namespace zivm {

namespace {

void SetCode(Napi::Env env, Napi::Object err, const char* code) {
  err.Set("code", Napi::String::New(env, code));
}

std::string Describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "type boolean";
    case napi_number: return "type number";
    case napi_string: return "type string";
    case napi_symbol: return "type symbol";
    case napi_object: return "an instance of Object";
    case napi_function: return "function";
    case napi_external: return "type external";
    case napi_bigint: return "type bigint";
  }
  return "unknown";
}

void ThrowInvalidType(const Napi::CallbackInfo& info, size_t i, const char* name, const char* expected) {
  Napi::Value v = info[i];
  ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must be " + expected + ". Received " + Describe(v));
}

}  // namespace

void ThrowErrno(Napi::Env env, const char* syscall, int err, const char* path) {
  const char* code = uv_err_name(-err);
  std::string msg = std::string(syscall) + " " + code;
  if (path != nullptr) msg += std::string(" ") + path;
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  SetCode(env, o, code);
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) o.Set("path", Napi::String::New(env, path));
  e.ThrowAsJavaScriptException();
}

void ThrowUv(Napi::Env env, const char* syscall, int uvStatus) {
  ThrowErrno(env, syscall, -uvStatus);
}

namespace {

// Per environment: the JavaScript function that makes zivm's errors (see SetErrorFactory).
struct InstanceData {
  Napi::FunctionReference errorFactory;
};

InstanceData* Data(Napi::Env env) {
  InstanceData* d = env.GetInstanceData<InstanceData>();
  if (d == nullptr) {
    d = new InstanceData();
    env.SetInstanceData(d);  // deleted with the environment
  }
  return d;
}

}  // namespace

void ThrowCode(Napi::Env env, const char* code, const std::string& message) {
  InstanceData* d = Data(env);
  if (!d->errorFactory.IsEmpty()) {
    // The error of zivm's own class for `code`.
    Napi::Value e = d->errorFactory.Call({Napi::String::New(env, code), Napi::String::New(env, message)});
    if (env.IsExceptionPending()) return;
    if (e.IsObject()) {
      napi_throw(env, e);
      return;
    }
  }
  Napi::Error e = Napi::Error::New(env, message);
  SetCode(env, e.Value(), code);
  e.ThrowAsJavaScriptException();
}

Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  Napi::Function f;
  if (!ArgFunction(info, 0, "factory", &f)) return Napi::Value();
  Data(info.Env())->errorFactory = Napi::Persistent(f);
  return info.Env().Undefined();
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError e = Napi::TypeError::New(env, message);
  SetCode(env, e.Value(), ERR_INVALID_ARG_TYPE);
  e.ThrowAsJavaScriptException();
}

void ThrowRangeError(Napi::Env env, const std::string& message) {
  Napi::RangeError e = Napi::RangeError::New(env, message);
  SetCode(env, e.Value(), ERR_BAD_ARG);
  e.ThrowAsJavaScriptException();
}

bool ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max, int64_t* out) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) {
    ThrowInvalidType(info, i, name, "of type number");
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", d);
    ThrowRangeError(info.Env(), std::string("The value of \"") + name + "\" is out of range. It must be an integer >= " +
                                    std::to_string(min) + " and <= " + std::to_string(max) + ". Received " + buf);
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name, int* out) {
  int64_t v;
  if (!ArgInteger(info, i, name, 0, INT32_MAX, &v)) return false;
  *out = static_cast<int>(v);
  return true;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name, bool* out) {
  Napi::Value v = info[i];
  if (!v.IsBoolean()) {
    ThrowInvalidType(info, i, name, "of type boolean");
    return false;
  }
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* name, std::string* out) {
  Napi::Value v = info[i];
  if (!v.IsString()) {
    ThrowInvalidType(info, i, name, "of type string");
    return false;
  }
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    ThrowRangeError(info.Env(), std::string("The \"") + name + "\" argument must not contain null bytes");
    return false;
  }
  *out = std::move(s);
  return true;
}

bool ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* name, Napi::Function* out) {
  Napi::Value v = info[i];
  if (!v.IsFunction()) {
    ThrowInvalidType(info, i, name, "of type function");
    return false;
  }
  *out = v.As<Napi::Function>();
  return true;
}

bool BytesOf(Napi::Env env, napi_value v, const char* name, uint8_t** data, size_t* len) {
  // One call: napi_get_typedarray_info refuses anything but a typed array.
  napi_typedarray_type type;
  size_t length = 0;
  void* ptr = nullptr;
  if (napi_get_typedarray_info(env, v, &type, &length, &ptr, nullptr, nullptr) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array)) {
    ThrowTypeError(env, std::string("The \"") + name + "\" argument must be an instance of Uint8Array or Buffer");
    return false;
  }
  // napi_get_typedarray_info already points `ptr` at byteOffset; length is in
  // elements, which are bytes here. A detached view reports length 0.
  *data = static_cast<uint8_t*>(ptr);
  *len = ptr == nullptr ? 0 : length;
  return true;
}

bool HasTag(Napi::Env env, napi_value v, const napi_type_tag* tag) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object) return false;
  bool ok = false;
  if (napi_check_object_type_tag(env, v, tag, &ok) != napi_ok) return false;
  return ok;
}

bool CheckThis(const Napi::CallbackInfo& info, const napi_type_tag* tag) {
  if (HasTag(info.Env(), info.This(), tag)) return true;
  ThrowTypeError(info.Env(), "Illegal invocation");
  return false;
}

}  // namespace zivm
