/** native/vfio.cc: the VFIO calls, without a device (argument checks, and the BAR0 register encoding on a memfd). */
import { expect } from 'chai';
import fs from 'node:fs';
import { addon, codeOf, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('VFIO calls (without a device: argument checks and the register encoding on a memfd)', () => {
    it('vfioOpen validates the PCI address and says which call failed', () => {
      expect(codeOf(() => addon.vfioOpen(3 as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      for (const bad of ['', '00:03.0', '0000:00:03', '0000:00:03.8', '0000:0g:03.0', '../../../0000:00:03.0', '0000:00:03.0/x', '0000:00:03.0\0']) {
        const err2 = codeOf(() => addon.vfioOpen(bad));
        expect(err2.code, bad).to.be.oneOf(['ERR_ZIVM_BAD_ARG']);
      }
      const err = codeOf(() => addon.vfioOpen('ffff:ff:1f.7'));
      expect(err.code).to.equal('ENOENT');
      expect(err.err.syscall).to.equal('readlink');
      expect(err.err.path).to.equal('/sys/bus/pci/devices/ffff:ff:1f.7/iommu_group');
    });

    it('bar0Notify writes (peer << 16) | vector at +12, bar0Read32 reads a register (on a memfd standing in for the device fd)', () => {
      const fd = addon.memfdCreate('bar0', 8192);
      try {
        const base = 4096;
        addon.bar0Notify(fd, base, 3, 1);
        const buf = Buffer.alloc(16);
        fs.readSync(fd, buf, 0, 16, base);
        expect(buf.readUInt32LE(12)).to.equal((3 << 16) | 1);
        addon.bar0Notify(fd, base, 0xffff, 0xffff);
        expect(addon.bar0Read32(fd, base, 12)).to.equal(-1);
        fs.writeSync(fd, Buffer.from([7, 0, 0, 0]), 0, 4, base + 8);
        expect(addon.bar0Read32(fd, base, 8)).to.equal(7);
        expect(codeOf(() => addon.bar0Notify(fd, base, 0x10000, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.bar0Notify(fd, base, 0, -1)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.bar0Notify(fd, -4, 0, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.bar0Notify(fd, base, '1' as any, 0)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => addon.bar0Read32(fd, base, 6)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.bar0Read32(fd, base, 256)).code).to.equal('ERR_ZIVM_BAD_ARG');
        // past the end of a (sealed) memfd: a short read is EIO
        const err = codeOf(() => addon.bar0Read32(fd, 8192 - 8, 8));
        expect(err.code).to.equal('EIO');
        expect(err.err.syscall).to.equal('pread');
      } finally {
        addon.close(fd);
      }
    });

    it('vfioEnableBusMaster sets Bus Master and Memory in PCI_COMMAND, keeping the other bits', () => {
      const fd = addon.memfdCreate('cfg', 4096);
      try {
        fs.writeSync(fd, Buffer.from([0x01, 0x04]), 0, 2, 256 + 4); // I/O space + INTx disable
        expect(addon.vfioEnableBusMaster(fd, 256)).to.equal(0x0407);
        const buf = Buffer.alloc(2);
        fs.readSync(fd, buf, 0, 2, 256 + 4);
        expect(buf.readUInt16LE(0)).to.equal(0x0407);
        expect(codeOf(() => addon.vfioEnableBusMaster(fd, -1)).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.vfioEnableBusMaster(-1, 0)).code).to.equal('ERR_ZIVM_BAD_ARG');
      } finally {
        addon.close(fd);
      }
    });

    it('vfioSetMsix validates the eventfds and reports the ioctl on a non-VFIO fd', () => {
      const fd = addon.memfdCreate('notvfio', 4096);
      const efd = addon.eventfd();
      try {
        expect(codeOf(() => addon.vfioSetMsix(fd, efd as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => addon.vfioSetMsix(fd, ['3' as any])).code).to.equal('ERR_INVALID_ARG_TYPE');
        expect(codeOf(() => addon.vfioSetMsix(fd, [-2])).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.vfioSetMsix(fd, [1.5])).code).to.equal('ERR_ZIVM_BAD_ARG');
        expect(codeOf(() => addon.vfioSetMsix(fd, new Array(2049).fill(efd))).code).to.equal('ERR_ZIVM_BAD_ARG');
        const err = codeOf(() => addon.vfioSetMsix(fd, [efd, -1]));
        expect(err.code).to.equal('ENOTTY');
        expect(err.err.syscall).to.equal('ioctl');
        expect(err.err.request).to.equal('VFIO_DEVICE_SET_IRQS');
        expect(err.err.errno).to.equal(-25);
      } finally {
        addon.close(efd);
        addon.close(fd);
      }
    });

    it('vfioClose closes the three fds once and marks them -1', () => {
      const dev = { deviceFd: addon.eventfd(), groupFd: addon.eventfd(), containerFd: addon.eventfd() };
      const fds = [dev.deviceFd, dev.groupFd, dev.containerFd];
      addon.vfioClose(dev);
      expect(dev).to.deep.equal({ deviceFd: -1, groupFd: -1, containerFd: -1 });
      for (const fd of fds) expect(codeOf(() => addon.fdSize(fd)).code).to.equal('EBADF');
      addon.vfioClose(dev); // idempotent
      expect(codeOf(() => addon.vfioClose(null as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => addon.vfioClose({ deviceFd: '3', groupFd: -1, containerFd: -1 } as any)).code).to.equal('ERR_INVALID_ARG_TYPE');
      expect(codeOf(() => addon.vfioClose({ deviceFd: -2, groupFd: -1, containerFd: -1 })).code).to.equal('ERR_ZIVM_BAD_ARG');
    });
  });
});
