// Calling into JavaScript from a libuv callback, the way libuv's own handles
// reach it: each call in a callback scope of its own, so that the nextTick and
// microtask queues run after every call, as they do after every read callback
// of a TCP handle.
#ifndef ZIVM_CALLBACK_H
#define ZIVM_CALLBACK_H

#include <napi.h>

namespace zivm {

// Most calls made for one libuv callback: the callback does one unit of work
// per call (one read, one accepted connection) and returns true while it has
// more; past this many, it must arrange for the rest itself (it is told which
// call this is).
constexpr int kMaxRounds = 64;

// Calls fn(arg, round) with round = 0, 1, ... while it returns true, at most
// kMaxRounds times. If it returns a function instead, that function is called
// with no arguments in a callback scope of its own, and if it returns [fn],
// fn is called outside any callback scope (a read handed to a native stream
// consumer: then each callback the consumer makes into JavaScript is one of
// its own, as when libuv hands it a read); the rounds go on. An exception goes to the
// process as an uncaught exception (as for any libuv callback) and ends the
// rounds.
void CallRounds(napi_env env, napi_async_context ctx, napi_value recv, napi_value fn, napi_value arg);

}  // namespace zivm

#endif
