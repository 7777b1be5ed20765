/*
 * vfio-irq: the VFIO calls a zivm guest peer needs, for the VM test (runs in
 * the guest, compiled on the host by build-guest.sh). It stands in for what
 * the native addon does not have yet (ioctl):
 *
 *   vfio-irq <pci-addr> <unix-socket> <vectors>
 *
 * Opens the device bound to vfio-pci (container, type1 IOMMU, group), maps
 * BAR2 through the device fd and checks the zivm magic, turns on bus mastering
 * (MSI-X messages are bus-master writes), enables MSI-X with one eventfd per
 * vector (VFIO_DEVICE_SET_IRQS), then connects to <unix-socket> and hands the
 * eventfds over as ivshmem-server style messages: [vector as int64 LE] with the
 * eventfd in SCM_RIGHTS, then [-1] with the VFIO device fd itself (its BARs
 * are read and written with pread/pwrite at the offsets in the JSON line: once
 * vfio-pci has claimed a BAR, the sysfs resource mappings are revoked). It
 * prints one JSON line on stdout, keeps the device open until the socket is
 * closed by the other end, and then turns MSI-X off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char* what) {
  printf("{\"what\":\"vfio-helper\",\"error\":\"%s: %s\"}\n", what, strerror(errno));
  fflush(stdout);
  exit(1);
}

static int send_fd(int sock, int64_t value, int fd) {
  struct msghdr msg = {0};
  struct iovec iov = {&value, sizeof value};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  return sendmsg(sock, &msg, 0) == (ssize_t)sizeof value ? 0 : -1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: vfio-irq <pci-addr> <unix-socket> <vectors>\n");
    return 2;
  }
  const char* addr = argv[1];
  int vectors = atoi(argv[3]);
  if (vectors < 1 || vectors > 64) {
    fprintf(stderr, "vfio-irq: vectors must be 1..64\n");
    return 2;
  }

  char link[256], target[256];
  snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", addr);
  ssize_t tl = readlink(link, target, sizeof target - 1);
  if (tl < 0) die("readlink iommu_group");
  target[tl] = 0;
  char gpath[300];
  snprintf(gpath, sizeof gpath, "/dev/vfio/%s", basename(target));

  int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  if (container < 0) die("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) die("VFIO_GET_API_VERSION");
  int iommu = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
  int group = open(gpath, O_RDWR | O_CLOEXEC);
  if (group < 0) die("open group");
  struct vfio_group_status gs = {.argsz = sizeof gs};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs)) die("VFIO_GROUP_GET_STATUS");
  if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    errno = EBUSY;
    die("group not viable");
  }
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) die("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, iommu)) die("VFIO_SET_IOMMU");
  int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, addr);
  if (dev < 0) die("VFIO_GROUP_GET_DEVICE_FD");

  struct vfio_region_info bar0 = {.argsz = sizeof bar0, .index = VFIO_PCI_BAR0_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &bar0)) die("GET_REGION_INFO bar0");
  struct vfio_region_info bar2 = {.argsz = sizeof bar2, .index = VFIO_PCI_BAR2_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &bar2)) die("GET_REGION_INFO bar2");
  uint32_t magic[2] = {0, 0};
  if (bar2.flags & VFIO_REGION_INFO_FLAG_MMAP) {
    void* p = mmap(NULL, bar2.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)bar2.offset);
    if (p == MAP_FAILED) die("mmap bar2");
    memcpy(magic, p, sizeof magic);
    munmap(p, bar2.size);
  }

  struct vfio_region_info cfg = {.argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg)) die("GET_REGION_INFO config");
  uint16_t cmd;
  if (pread(dev, &cmd, 2, (off_t)cfg.offset + 4) != 2) die("read command");
  cmd |= 0x4 | 0x2; /* bus master, memory */
  if (pwrite(dev, &cmd, 2, (off_t)cfg.offset + 4) != 2) die("write command");

  struct vfio_irq_info irq = {.argsz = sizeof irq, .index = VFIO_PCI_MSIX_IRQ_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &irq)) die("GET_IRQ_INFO msix");
  if ((int)irq.count < vectors) {
    errno = ERANGE;
    die("device has fewer MSI-X vectors");
  }
  int efd[64];
  for (int v = 0; v < vectors; v++) {
    efd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd[v] < 0) die("eventfd");
  }
  size_t sz = sizeof(struct vfio_irq_set) + sizeof(int) * (size_t)vectors;
  struct vfio_irq_set* set = calloc(1, sz);
  set->argsz = (uint32_t)sz;
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = 0;
  set->count = (uint32_t)vectors;
  memcpy(set->data, efd, sizeof(int) * (size_t)vectors);
  if (ioctl(dev, VFIO_DEVICE_SET_IRQS, set)) die("SET_IRQS msix");

  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, argv[2], sizeof sa.sun_path - 1);
  if (connect(sock, (struct sockaddr*)&sa, sizeof sa)) die("connect");
  for (int v = 0; v < vectors; v++)
    if (send_fd(sock, v, efd[v])) die("sendmsg");
  if (send_fd(sock, -1, dev)) die("sendmsg");
  printf("{\"what\":\"vfio-helper\",\"iommu\":%d,\"msixCount\":%u,\"bar2Size\":%llu,\"bar2Mmap\":%s,\"magic\":[\"%x\",\"%x\"],\"command\":%u,\"bar0Offset\":%llu,\"bar2Offset\":%llu}\n",
         iommu, irq.count, (unsigned long long)bar2.size, (bar2.flags & VFIO_REGION_INFO_FLAG_MMAP) ? "true" : "false", magic[0], magic[1],
         cmd, (unsigned long long)bar0.offset, (unsigned long long)bar2.offset);
  fflush(stdout);

  char b[64];
  while (read(sock, b, sizeof b) > 0) {
  }
  set->argsz = sizeof(struct vfio_irq_set);
  set->flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->count = 0;
  ioctl(dev, VFIO_DEVICE_SET_IRQS, set);
  return 0;
}
