// VFIO: a PCI device bound to vfio-pci, opened from user space (the guest side
// of an ivshmem-doorbell device). Container + group + device fd, region and
// IRQ info, bus mastering, MSI-X interrupts as eventfds, and the ivshmem BAR0
// registers (IVPosition, Doorbell) through pread/pwrite on the device fd.
#ifndef ZIVM_VFIO_H
#define ZIVM_VFIO_H

#include <napi.h>

namespace zivm {

// vfioOpen(pciAddress) -> { deviceFd, groupFd, containerFd, group, iommu, regions, irqs }
Napi::Value VfioOpen(const Napi::CallbackInfo& info);
// vfioEnableBusMaster(deviceFd, configRegionOffset) -> PCI command word written
Napi::Value VfioEnableBusMaster(const Napi::CallbackInfo& info);
// vfioSetMsix(deviceFd, eventfds) (an empty array turns MSI-X off)
Napi::Value VfioSetMsix(const Napi::CallbackInfo& info);
// vfioClose(device): closes the three fds of a vfioOpen result, sets them to -1
Napi::Value VfioClose(const Napi::CallbackInfo& info);
// bar0Notify(deviceFd, bar0Offset, peer, vector): ivshmem Doorbell register
Napi::Value Bar0Notify(const Napi::CallbackInfo& info);
// bar0Read32(deviceFd, bar0Offset, reg): a 32-bit register (IVPosition is 8)
Napi::Value Bar0Read32(const Napi::CallbackInfo& info);

}  // namespace zivm

#endif
