#include "fdpass.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include "errors.h"
#include "fdstat.h"

namespace zivm {

namespace {

constexpr int kMaxFdsPerMsg = 16;  // more are closed on arrival
constexpr int kSplitWaitMs = 1000;  // how long to wait for the rest of a split message
constexpr int kConnectTimeoutSec = 1;  // a listener whose backlog stays full

// A path, or "@name" for a name in the abstract namespace (Linux: no file,
// scoped to the network namespace). *len is the address length to pass on.
bool MakeAddr(Napi::Env env, const std::string& path, sockaddr_un* addr, socklen_t* len) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  bool abstract = !path.empty() && path[0] == '@';
  if (path.size() < (abstract ? 2u : 1u) || path.size() >= sizeof addr->sun_path) {
    ThrowRangeError(env, "unix socket path must be 1.." + std::to_string(sizeof addr->sun_path - 1) + " bytes, got " +
                             std::to_string(path.size()));
    return false;
  }
  memcpy(addr->sun_path, path.data(), path.size());
  if (abstract) {
    addr->sun_path[0] = '\0';
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    *len = sizeof *addr;
  }
  return true;
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// poll() for `events` up to timeoutMs (-1: forever), retrying EINTR with the
// time left. Returns revents (0 on timeout) or -errno.
int PollFd(int fd, short events, int timeoutMs) {
  int64_t deadline = timeoutMs < 0 ? -1 : NowMs() + timeoutMs;
  for (;;) {
    pollfd p = {fd, events, 0};
    int wait = timeoutMs;
    if (deadline >= 0) {
      int64_t left = deadline - NowMs();
      wait = left < 0 ? 0 : static_cast<int>(left);
    }
    int r = poll(&p, 1, wait);
    if (r > 0) return p.revents;
    if (r == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

void CloseQuietly(int fd) {
  if (fd >= 0) close(fd);
}

// Collects SCM_RIGHTS fds from a received message: the first one goes to
// *fd if it is still -1, every other one is closed.
void TakeFds(msghdr* msg, int* fd) {
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < n; i++) {
      int got;
      memcpy(&got, p + i * sizeof(int), sizeof(int));
      if (*fd < 0) {
        *fd = got;
      } else {
        close(got);
      }
    }
  }
}

}  // namespace

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t size;
  if (!ArgString(info, 0, "name", &name)) return Napi::Value();
  if (!ArgInteger(info, 1, "size", 0, kMaxSafeInteger, &size)) return Napi::Value();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    ThrowErrno(env, "memfd_create", errno);
    return Napi::Value();
  }
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, "ftruncate", e);
    return Napi::Value();
  }
  // No peer can shrink it under the others' mappings (SIGBUS) or grow it.
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, "fcntl", e);
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value FdSize(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  struct stat st;
  if (FdStat(fd, &st) != 0) {
    ThrowErrno(info.Env(), "fstat", errno);
    return Napi::Value();
  }
  return Napi::Number::New(info.Env(), static_cast<double>(st.st_size));
}

Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  int64_t backlog;
  if (!ArgString(info, 0, "path", &path)) return Napi::Value();
  if (!ArgInteger(info, 1, "backlog", 0, INT32_MAX, &backlog)) return Napi::Value();
  sockaddr_un addr;
  socklen_t addrLen;
  if (!MakeAddr(env, path, &addr, &addrLen)) return Napi::Value();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return Napi::Value();
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), addrLen) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, "bind", e, path.c_str());
    return Napi::Value();
  }
  if (listen(fd, static_cast<int>(backlog)) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, "listen", e, path.c_str());
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    ThrowErrno(env, "socketpair", errno);
    return Napi::Value();
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, fds[0]));
  pair.Set(1u, Napi::Number::New(env, fds[1]));
  return pair;
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  for (;;) {
    int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) return Napi::Number::New(info.Env(), c);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), "accept", errno);
    return Napi::Value();
  }
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "path", &path)) return Napi::Value();
  sockaddr_un addr;
  socklen_t addrLen;
  if (!MakeAddr(env, path, &addr, &addrLen)) return Napi::Value();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return Napi::Value();
  }
  // A unix connect only blocks while the listener's backlog is full; bound
  // that wait so a stuck listener cannot freeze the event loop for ever
  // (it then fails with EAGAIN).
  timeval tv = {kConnectTimeoutSec, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  for (;;) {
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), addrLen) == 0) break;
    if (errno == EINTR) continue;  // an interrupted unix connect leaves the socket unconnected
    if (errno == EISCONN) break;
    int e = errno;
    close(fd);
    ThrowErrno(env, "connect", e, path.c_str());
    return Napi::Value();
  }
  tv = {0, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, "fcntl", e);
    return Napi::Value();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t value, passFd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  if (!ArgInteger(info, 1, "value", -kMaxSafeInteger, kMaxSafeInteger, &value)) return Napi::Value();
  if (!ArgInteger(info, 2, "passFd", -1, INT32_MAX, &passFd)) return Napi::Value();
  unsigned char bytes[8];
  uint64_t u = static_cast<uint64_t>(value);
  for (int i = 0; i < 8; i++) bytes[i] = static_cast<unsigned char>(u >> (8 * i));
  iovec iov = {bytes, sizeof bytes};
  msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int))];
  if (passFd >= 0) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int pf = static_cast<int>(passFd);
    memcpy(CMSG_DATA(c), &pf, sizeof pf);
  }
  for (;;) {
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(sizeof bytes)) return env.Undefined();
    if (n < 0 && errno == EINTR) continue;
    // A short send leaves the stream out of step: report it like a full socket.
    ThrowErrno(env, "sendmsg", n < 0 ? errno : EAGAIN);
    return Napi::Value();
  }
}

Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  unsigned char bytes[8];
  size_t got = 0;
  int passed = -1;
  int64_t deadline = -1;
  while (got < sizeof bytes) {
    iovec iov = {bytes + got, sizeof bytes - got};
    alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg)];
    msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0 || (n == 0 && msg.msg_controllen > 0)) TakeFds(&msg, &passed);
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (n == 0 || errno == ECONNRESET) {
      // End of stream (a message cut short by it is dropped).
      CloseQuietly(passed);
      return Napi::Boolean::New(env, false);
    }
    int e = errno;
    if ((e == EAGAIN || e == EWOULDBLOCK) && got == 0) return env.Null();
    if (e == EAGAIN || e == EWOULDBLOCK) {
      // The rest of a split message: wait for it, but not for ever.
      if (deadline < 0) deadline = NowMs() + kSplitWaitMs;
      int64_t left = deadline - NowMs();
      int r = left > 0 ? PollFd(fd, POLLIN, static_cast<int>(left)) : 0;
      if (r > 0) continue;
      CloseQuietly(passed);
      ThrowErrno(env, "recvmsg", r < 0 ? -r : ETIMEDOUT);
      return Napi::Value();
    }
    CloseQuietly(passed);
    ThrowErrno(env, "recvmsg", e);
    return Napi::Value();
  }
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  int64_t value = static_cast<int64_t>(u);
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, static_cast<double>(value)));
  result.Set(1u, Napi::Number::New(env, passed));
  return result;
}

Napi::Value WaitReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t timeout;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  if (!ArgInteger(info, 1, "timeoutMs", -1, INT32_MAX, &timeout)) return Napi::Value();
  int r = PollFd(fd, POLLIN, static_cast<int>(timeout));
  if (r < 0) {
    ThrowErrno(env, "poll", -r);
    return Napi::Value();
  }
  if (r & POLLNVAL) {
    ThrowErrno(env, "poll", EBADF);
    return Napi::Value();
  }
  return Napi::Boolean::New(env, r != 0);
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    ThrowErrno(env, "getsockopt", errno);
    return Napi::Value();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  return o;
}

Napi::Value TryLock(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), "flock", errno);
    return Napi::Value();
  }
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fd", &fd)) return Napi::Value();
  // EINTR is not retried: on Linux the fd is gone either way.
  if (close(fd) != 0 && errno != EINTR) {
    ThrowErrno(info.Env(), "close", errno);
    return Napi::Value();
  }
  return info.Env().Undefined();
}

}  // namespace zivm
