#include "callback.h"

namespace zivm {

namespace {

// After a call: an exception goes to the process (as from any libuv callback). True if the call went through.
bool Settle(napi_env env, napi_status st) {
  if (st == napi_pending_exception) {
    napi_value e;
    if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
    return false;
  }
  return st == napi_ok;
}

}  // namespace

void CallRounds(napi_env env, napi_async_context ctx, napi_value recv, napi_value fn, napi_value arg) {
  for (int round = 0; round < kMaxRounds; round++) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value argv[2];
    argv[0] = arg;
    bool more = false;
    if (napi_create_int32(env, round, &argv[1]) == napi_ok) {
      napi_value result;
      // The C API, not the wrapper: while the environment shuts down JS can no
      // longer run and the call fails; that is not an error worth dying for.
      napi_status st = napi_make_callback(env, ctx, recv, fn, 2, argv, &result);
      if (Settle(env, st)) {
        napi_valuetype type = napi_undefined;
        napi_typeof(env, result, &type);
        if (type == napi_boolean) {
          napi_get_value_bool(env, result, &more);
        } else if (type == napi_function) {
          // A read for a native consumer, in a callback scope of its own.
          napi_value ignored;
          st = napi_make_callback(env, ctx, recv, result, 0, nullptr, &ignored);
          more = Settle(env, st);
        } else if (type == napi_object) {
          // [fn]: a read for a native consumer, outside any callback scope.
          napi_value bare;
          napi_valuetype bareType = napi_undefined;
          if (napi_get_element(env, result, 0, &bare) == napi_ok && napi_typeof(env, bare, &bareType) == napi_ok && bareType == napi_function) {
            napi_value undefined;
            napi_value ignored;
            napi_get_undefined(env, &undefined);
            st = napi_call_function(env, undefined, bare, 0, nullptr, &ignored);
            more = Settle(env, st);
          }
        }
      }
    }
    napi_close_handle_scope(env, scope);
    if (!more) return;
  }
}

}  // namespace zivm
