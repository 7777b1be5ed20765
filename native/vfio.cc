#include "vfio.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"

#ifndef VFIO_NOIOMMU_IOMMU  // headers older than Linux 4.5
#define VFIO_NOIOMMU_IOMMU 8
#endif

namespace zivm {

namespace {

constexpr int kPciCommand = 0x04;
constexpr uint16_t kPciCommandMemory = 0x2;
constexpr uint16_t kPciCommandMaster = 0x4;
constexpr int kIvshmemDoorbell = 12;  // BAR0 register offsets: IntrMask 0, IntrStatus 4, IVPosition 8, Doorbell 12
constexpr int kBar0Registers = 256;   // ivshmem's BAR0 size
constexpr int64_t kMaxMsixVectors = 2048;  // the PCI limit on an MSI-X table

// A failed ioctl as a Node-style system error: syscall 'ioctl', plus the
// request name (`request`) and, when there is one, the file (`path`).
void ThrowIoctl(Napi::Env env, const char* request, int err, const std::string& path = std::string()) {
  const char* code = uv_err_name(-err);
  std::string msg = std::string("ioctl ") + request + " " + code;
  if (!path.empty()) msg += " " + path;
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  o.Set("code", Napi::String::New(env, code));
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", Napi::String::New(env, "ioctl"));
  o.Set("request", Napi::String::New(env, request));
  if (!path.empty()) o.Set("path", Napi::String::New(env, path));
  e.ThrowAsJavaScriptException();
}

int IoctlRetry(int fd, unsigned long request, void* arg) {
  for (;;) {
    int r = ioctl(fd, request, arg);
    if (r >= 0 || errno != EINTR) return r;
  }
}

int IoctlRetry(int fd, unsigned long request, unsigned long arg) {
  for (;;) {
    int r = ioctl(fd, request, arg);
    if (r >= 0 || errno != EINTR) return r;
  }
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// DDDD:BB:DD.F (a domain of 4 to 8 hex digits), as in /sys/bus/pci/devices.
bool ValidPciAddress(const std::string& s) {
  size_t c1 = s.find(':');
  if (c1 == std::string::npos || c1 < 4 || c1 > 8) return false;
  for (size_t i = 0; i < c1; i++)
    if (!IsHex(s[i])) return false;
  const std::string rest = s.substr(c1 + 1);  // BB:DD.F
  if (rest.size() != 7) return false;
  return IsHex(rest[0]) && IsHex(rest[1]) && rest[2] == ':' && IsHex(rest[3]) && IsHex(rest[4]) && rest[5] == '.' && rest[6] >= '0' &&
         rest[6] <= '7';
}

// pread/pwrite exactly `len` bytes at `off`, retrying EINTR; a short transfer is EIO.
int PreadAll(int fd, void* buf, size_t len, int64_t off) {
  for (;;) {
    ssize_t n = pread(fd, buf, len, static_cast<off_t>(off));
    if (n == static_cast<ssize_t>(len)) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? errno : EIO;
  }
}

int PwriteAll(int fd, const void* buf, size_t len, int64_t off) {
  for (;;) {
    ssize_t n = pwrite(fd, buf, len, static_cast<off_t>(off));
    if (n == static_cast<ssize_t>(len)) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? errno : EIO;
  }
}

void CloseAll(std::initializer_list<int> fds) {
  for (int fd : fds)
    if (fd >= 0) close(fd);
}

// An fd field of a vfioOpen result: an integer fd, or -1 (already closed).
bool FdField(Napi::Env env, Napi::Object o, const char* name, int* out) {
  Napi::Value v = o.Get(name);
  if (env.IsExceptionPending()) return false;
  if (!v.IsNumber()) {
    ThrowTypeError(env, std::string("The \"device.") + name + "\" property must be of type number");
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -1 && d <= INT32_MAX) || static_cast<double>(static_cast<int64_t>(d)) != d) {
    ThrowRangeError(env, std::string("The \"device.") + name + "\" property must be an fd or -1");
    return false;
  }
  *out = static_cast<int>(d);
  return true;
}

}  // namespace

Napi::Value VfioOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string addr;
  if (!ArgString(info, 0, "pciAddress", &addr)) return Napi::Value();
  if (!ValidPciAddress(addr)) {
    ThrowRangeError(env, "The \"pciAddress\" argument must look like 0000:00:03.0. Received '" + addr + "'");
    return Napi::Value();
  }

  // The IOMMU group: /sys/bus/pci/devices/<addr>/iommu_group -> .../iommu_groups/<N>
  const std::string link = "/sys/bus/pci/devices/" + addr + "/iommu_group";
  char target[512];
  ssize_t tl = readlink(link.c_str(), target, sizeof target - 1);
  if (tl < 0) {
    ThrowErrno(env, "readlink", errno, link.c_str());
    return Napi::Value();
  }
  target[tl] = '\0';
  const char* slash = strrchr(target, '/');
  const std::string group = slash != nullptr ? slash + 1 : target;
  if (group.empty() || group.find_first_not_of("0123456789") != std::string::npos) {
    ThrowCode(env, "ERR_ZIVM_VFIO", "unexpected IOMMU group '" + group + "' for " + addr);
    return Napi::Value();
  }

  int container = -1, groupFd = -1, device = -1;
  const char* containerPath = "/dev/vfio/vfio";
  container = open(containerPath, O_RDWR | O_CLOEXEC);
  if (container < 0) {
    ThrowErrno(env, "open", errno, containerPath);
    return Napi::Value();
  }
  int api = IoctlRetry(container, VFIO_GET_API_VERSION, 0UL);
  if (api != VFIO_API_VERSION) {
    int e = api < 0 ? errno : EPROTONOSUPPORT;  // a kernel speaking another VFIO API
    CloseAll({container});
    ThrowIoctl(env, "VFIO_GET_API_VERSION", e, containerPath);
    return Napi::Value();
  }

  // The group node; without an IOMMU (enable_unsafe_noiommu_mode) it is noiommu-<N>.
  bool noiommu = false;
  std::string groupPath = "/dev/vfio/" + group;
  groupFd = open(groupPath.c_str(), O_RDWR | O_CLOEXEC);
  if (groupFd < 0 && errno == ENOENT) {
    std::string alt = "/dev/vfio/noiommu-" + group;
    int fd = open(alt.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      groupFd = fd;
      groupPath = alt;
      noiommu = true;
    } else {
      errno = ENOENT;
    }
  }
  if (groupFd < 0) {
    int e = errno;
    CloseAll({container});
    ThrowErrno(env, "open", e, groupPath.c_str());
    return Napi::Value();
  }
  vfio_group_status gs;
  memset(&gs, 0, sizeof gs);
  gs.argsz = sizeof gs;
  if (IoctlRetry(groupFd, VFIO_GROUP_GET_STATUS, &gs) != 0) {
    int e = errno;
    CloseAll({groupFd, container});
    ThrowIoctl(env, "VFIO_GROUP_GET_STATUS", e, groupPath);
    return Napi::Value();
  }
  if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    // Another device of the group is not bound to vfio-pci (or to no driver).
    CloseAll({groupFd, container});
    ThrowIoctl(env, "VFIO_GROUP_GET_STATUS", EBUSY, groupPath);
    return Napi::Value();
  }
  if (IoctlRetry(groupFd, VFIO_GROUP_SET_CONTAINER, &container) != 0) {
    int e = errno;
    CloseAll({groupFd, container});
    ThrowIoctl(env, "VFIO_GROUP_SET_CONTAINER", e, groupPath);
    return Napi::Value();
  }

  // The IOMMU model: type1 v2, else type1 (else the no-IOMMU driver for a noiommu group).
  int iommu = -1;
  const int candidates[] = {VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_NOIOMMU_IOMMU};
  int lastErr = ENODEV;
  for (int type : candidates) {
    if (type == VFIO_NOIOMMU_IOMMU && !noiommu) continue;
    if (IoctlRetry(container, VFIO_CHECK_EXTENSION, static_cast<unsigned long>(type)) <= 0) continue;
    if (IoctlRetry(container, VFIO_SET_IOMMU, static_cast<unsigned long>(type)) == 0) {
      iommu = type;
      break;
    }
    lastErr = errno;
  }
  if (iommu < 0) {
    CloseAll({groupFd, container});
    ThrowIoctl(env, "VFIO_SET_IOMMU", lastErr, containerPath);
    return Napi::Value();
  }

  device = IoctlRetry(groupFd, VFIO_GROUP_GET_DEVICE_FD, const_cast<char*>(addr.c_str()));
  if (device < 0) {
    int e = errno;
    CloseAll({groupFd, container});
    ThrowIoctl(env, "VFIO_GROUP_GET_DEVICE_FD", e, addr);
    return Napi::Value();
  }
  // The kernel's device fd is O_CLOEXEC from 6.x on; make sure of it before.
  int fdflags = fcntl(device, F_GETFD);
  if (fdflags >= 0) fcntl(device, F_SETFD, fdflags | FD_CLOEXEC);

  vfio_device_info di;
  memset(&di, 0, sizeof di);
  di.argsz = sizeof di;
  if (IoctlRetry(device, VFIO_DEVICE_GET_INFO, &di) != 0) {
    int e = errno;
    CloseAll({device, groupFd, container});
    ThrowIoctl(env, "VFIO_DEVICE_GET_INFO", e, addr);
    return Napi::Value();
  }

  Napi::Array regions = Napi::Array::New(env);
  uint32_t nr = 0;
  for (uint32_t i = 0; i < di.num_regions; i++) {
    vfio_region_info ri;
    memset(&ri, 0, sizeof ri);
    ri.argsz = sizeof ri;
    ri.index = i;
    if (IoctlRetry(device, VFIO_DEVICE_GET_REGION_INFO, &ri) != 0) {
      if (errno == EINVAL) continue;  // a region this device lacks (vfio-pci's VGA region)
      int e = errno;
      CloseAll({device, groupFd, container});
      ThrowIoctl(env, "VFIO_DEVICE_GET_REGION_INFO", e, addr);
      return Napi::Value();
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("index", Napi::Number::New(env, ri.index));
    r.Set("size", Napi::Number::New(env, static_cast<double>(ri.size)));
    r.Set("offset", Napi::Number::New(env, static_cast<double>(ri.offset)));
    r.Set("flags", Napi::Number::New(env, ri.flags));
    regions.Set(nr++, r);
  }

  Napi::Array irqs = Napi::Array::New(env);
  uint32_t ni = 0;
  for (uint32_t i = 0; i < di.num_irqs; i++) {
    vfio_irq_info ii;
    memset(&ii, 0, sizeof ii);
    ii.argsz = sizeof ii;
    ii.index = i;
    if (IoctlRetry(device, VFIO_DEVICE_GET_IRQ_INFO, &ii) != 0) {
      if (errno == EINVAL) continue;
      int e = errno;
      CloseAll({device, groupFd, container});
      ThrowIoctl(env, "VFIO_DEVICE_GET_IRQ_INFO", e, addr);
      return Napi::Value();
    }
    Napi::Object q = Napi::Object::New(env);
    q.Set("index", Napi::Number::New(env, ii.index));
    q.Set("count", Napi::Number::New(env, ii.count));
    q.Set("flags", Napi::Number::New(env, ii.flags));
    irqs.Set(ni++, q);
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("deviceFd", Napi::Number::New(env, device));
  out.Set("groupFd", Napi::Number::New(env, groupFd));
  out.Set("containerFd", Napi::Number::New(env, container));
  out.Set("group", Napi::String::New(env, group));
  out.Set("iommu", Napi::Number::New(env, iommu));
  out.Set("flags", Napi::Number::New(env, di.flags));
  out.Set("regions", regions);
  out.Set("irqs", irqs);
  return out;
}

Napi::Value VfioEnableBusMaster(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t cfg;
  if (!ArgFd(info, 0, "deviceFd", &fd)) return Napi::Value();
  if (!ArgInteger(info, 1, "configRegionOffset", 0, kMaxSafeInteger - 256, &cfg)) return Napi::Value();
  uint8_t b[2];
  int e = PreadAll(fd, b, sizeof b, cfg + kPciCommand);
  if (e != 0) {
    ThrowErrno(env, "pread", e);
    return Napi::Value();
  }
  uint16_t cmd = static_cast<uint16_t>(b[0] | (b[1] << 8));
  // Bus mastering: MSI-X messages are memory writes by the device. Memory
  // space too, for the BARs (vfio-pci normally has it on already).
  cmd |= kPciCommandMaster | kPciCommandMemory;
  b[0] = static_cast<uint8_t>(cmd & 0xff);
  b[1] = static_cast<uint8_t>(cmd >> 8);
  e = PwriteAll(fd, b, sizeof b, cfg + kPciCommand);
  if (e != 0) {
    ThrowErrno(env, "pwrite", e);
    return Napi::Value();
  }
  // Read back what the device (through vfio-pci's config virtualisation) kept.
  e = PreadAll(fd, b, sizeof b, cfg + kPciCommand);
  if (e != 0) {
    ThrowErrno(env, "pread", e);
    return Napi::Value();
  }
  return Napi::Number::New(env, b[0] | (b[1] << 8));
}

Napi::Value VfioSetMsix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "deviceFd", &fd)) return Napi::Value();
  Napi::Value arg = info[1];
  if (!arg.IsArray()) {
    ThrowTypeError(env, "The \"eventfds\" argument must be an array of fds");
    return Napi::Value();
  }
  Napi::Array arr = arg.As<Napi::Array>();
  uint32_t count = arr.Length();
  if (count > kMaxMsixVectors) {
    ThrowRangeError(env, "The \"eventfds\" argument has " + std::to_string(count) + " entries; MSI-X has at most " +
                             std::to_string(kMaxMsixVectors) + " vectors");
    return Napi::Value();
  }
  std::vector<int32_t> fds(count);
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value v = arr.Get(i);
    if (env.IsExceptionPending()) return Napi::Value();
    if (!v.IsNumber()) {
      ThrowTypeError(env, "eventfds[" + std::to_string(i) + "] must be of type number");
      return Napi::Value();
    }
    double d = v.As<Napi::Number>().DoubleValue();
    // -1 leaves that vector without a trigger.
    if (!(d >= -1 && d <= INT32_MAX) || static_cast<double>(static_cast<int64_t>(d)) != d) {
      ThrowRangeError(env, "eventfds[" + std::to_string(i) + "] must be an fd or -1");
      return Napi::Value();
    }
    fds[i] = static_cast<int32_t>(d);
  }
  std::vector<uint8_t> buf(sizeof(vfio_irq_set) + sizeof(int32_t) * count);
  vfio_irq_set* set = reinterpret_cast<vfio_irq_set*>(buf.data());
  set->argsz = static_cast<uint32_t>(buf.size());
  // No eventfds: tear MSI-X down (DATA_NONE with count 0).
  set->flags = VFIO_IRQ_SET_ACTION_TRIGGER | (count ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = 0;
  set->count = count;
  if (count) memcpy(set->data, fds.data(), sizeof(int32_t) * count);
  if (IoctlRetry(fd, VFIO_DEVICE_SET_IRQS, set) != 0) {
    ThrowIoctl(env, "VFIO_DEVICE_SET_IRQS", errno);
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value VfioClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value arg = info[0];
  if (!arg.IsObject()) {
    ThrowTypeError(env, "The \"device\" argument must be the object vfioOpen returned");
    return Napi::Value();
  }
  Napi::Object o = arg.As<Napi::Object>();
  int device, group, container;
  if (!FdField(env, o, "deviceFd", &device) || !FdField(env, o, "groupFd", &group) || !FdField(env, o, "containerFd", &container))
    return Napi::Value();
  // The device first (vfio-pci turns its interrupts off and resets it), then
  // the group (it leaves the container), then the container.
  int firstErr = 0;
  const char* names[] = {"deviceFd", "groupFd", "containerFd"};
  int fds[] = {device, group, container};
  for (int i = 0; i < 3; i++) {
    if (fds[i] < 0) continue;
    if (close(fds[i]) != 0 && errno != EINTR && firstErr == 0) firstErr = errno;
    o.Set(names[i], Napi::Number::New(env, -1));  // a second vfioClose cannot close someone else's fd
  }
  if (firstErr != 0) {
    ThrowErrno(env, "close", firstErr);
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value Bar0Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t bar0, peer, vector;
  if (!ArgFd(info, 0, "deviceFd", &fd)) return Napi::Value();
  if (!ArgInteger(info, 1, "bar0Offset", 0, kMaxSafeInteger - kBar0Registers, &bar0)) return Napi::Value();
  if (!ArgInteger(info, 2, "peer", 0, 0xffff, &peer)) return Napi::Value();
  if (!ArgInteger(info, 3, "vector", 0, 0xffff, &vector)) return Napi::Value();
  uint32_t v = (static_cast<uint32_t>(peer) << 16) | static_cast<uint32_t>(vector);
  uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
  int e = PwriteAll(fd, b, sizeof b, bar0 + kIvshmemDoorbell);
  if (e != 0) {
    ThrowErrno(env, "pwrite", e);
    return Napi::Value();
  }
  return env.Undefined();
}

Napi::Value Bar0Read32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t bar0, reg;
  if (!ArgFd(info, 0, "deviceFd", &fd)) return Napi::Value();
  if (!ArgInteger(info, 1, "bar0Offset", 0, kMaxSafeInteger - kBar0Registers, &bar0)) return Napi::Value();
  if (!ArgInteger(info, 2, "reg", 0, kBar0Registers - 4, &reg)) return Napi::Value();
  if (reg % 4 != 0) {
    ThrowRangeError(env, "The value of \"reg\" must be a multiple of 4. Received " + std::to_string(reg));
    return Napi::Value();
  }
  uint8_t b[4];
  int e = PreadAll(fd, b, sizeof b, bar0 + reg);
  if (e != 0) {
    ThrowErrno(env, "pread", e);
    return Napi::Value();
  }
  uint32_t v = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) | (static_cast<uint32_t>(b[2]) << 16) |
               (static_cast<uint32_t>(b[3]) << 24);
  // Signed, like an Int32Array element (IVPosition is small and non-negative).
  return Napi::Number::New(env, static_cast<int32_t>(v));
}

}  // namespace zivm
