#include "callback.h"

namespace zivm {

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
      if (st == napi_pending_exception) {
        napi_value e;
        if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
      } else if (st == napi_ok) {
        napi_valuetype type = napi_undefined;
        napi_typeof(env, result, &type);
        if (type == napi_boolean) {
          napi_get_value_bool(env, result, &more);
        } else if (type == napi_function) {
          napi_value undefined;
          napi_value ignored;
          napi_get_undefined(env, &undefined);
          st = napi_call_function(env, undefined, result, 0, nullptr, &ignored);
          if (st == napi_pending_exception) {
            napi_value e;
            if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
          } else {
            more = st == napi_ok;
          }
        }
      }
    }
    napi_close_handle_scope(env, scope);
    if (!more) return;
  }
}

}  // namespace zivm
