/** native/fdpass.cc: memfds, Unix sockets with fd passing, peer credentials, locks and close. */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addon, codeOf, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('memfdCreate / fdSize', () => {
    it('creates a memfd of the given size, sealed against shrinking and growing', () => {
      const fd = addon.memfdCreate('sealed', 3 * 4096 + 5);
      try {
        expect(addon.fdSize(fd)).to.equal(3 * 4096 + 5);
        expect(codeOf(() => fs.ftruncateSync(fd, 0)).code).to.equal('EPERM');
        expect(codeOf(() => fs.ftruncateSync(fd, 1 << 20)).code).to.equal('EPERM');
        expect(addon.fdSize(fd)).to.equal(3 * 4096 + 5);
      } finally {
        addon.close(fd);
      }
    });

    it('takes sizes above 4 GiB (sparse)', () => {
      const size = 5 * 2 ** 30;
      const fd = addon.memfdCreate('big', size);
      try {
        expect(addon.fdSize(fd)).to.equal(size);
      } finally {
        addon.close(fd);
      }
    });
  });

  describe('unix sockets and fd passing', () => {
    let dir: string;
    let sockPath: string;
    const open: number[] = [];
    const track = (fd: number) => {
      open.push(fd);
      return fd;
    };
    const closeFd = (fd: number) => {
      const i = open.indexOf(fd);
      if (i >= 0) open.splice(i, 1);
      addon.close(fd);
    };
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      sockPath = path.join(dir, 'ctl.sock');
    });
    afterEach(() => {
      while (open.length) addon.close(open.pop()!);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    function pair(): { lfd: number; cfd: number; sfd: number } {
      const lfd = track(addon.unixListen(sockPath, 16));
      expect(addon.unixAccept(lfd)).to.equal(-1);
      const cfd = track(addon.unixConnect(sockPath));
      const sfd = track(addon.unixAccept(lfd));
      expect(sfd).to.be.at.least(0);
      return { lfd, cfd, sfd };
    }

    it('listens, connects and accepts; the accepted socket is non-blocking', () => {
      const { sfd, cfd } = pair();
      expect(addon.recvMsg(sfd)).to.equal(null);
      expect(addon.recvMsg(cfd)).to.equal(null);
    });

    it('peerCred reports this process', () => {
      const { sfd, cfd } = pair();
      const cred = addon.peerCred(sfd);
      expect(cred.pid).to.equal(process.pid);
      expect(cred.uid).to.equal(process.getuid!());
      expect(cred.gid).to.equal(process.getgid!());
      expect(addon.peerCred(cfd).pid).to.equal(process.pid);
    });

    it('sendMsg/recvMsg carry 64-bit little-endian values without an fd', () => {
      const { sfd, cfd } = pair();
      addon.sendMsg(cfd, 42, -1);
      addon.sendMsg(cfd, -1, -1);
      addon.sendMsg(cfd, 2 ** 40 + 5, -1);
      expect(addon.recvMsg(sfd)).to.deep.equal([42, -1]);
      expect(addon.recvMsg(sfd)).to.deep.equal([-1, -1]);
      expect(addon.recvMsg(sfd)).to.deep.equal([2 ** 40 + 5, -1]);
      expect(addon.recvMsg(sfd)).to.equal(null);
      // the wire format: 8 bytes little-endian
      addon.sendMsg(cfd, 0x0102, -1);
      const raw = Buffer.alloc(16);
      expect(fs.readSync(sfd, raw, 0, 16, null)).to.equal(8);
      expect([...raw.subarray(0, 8)]).to.deep.equal([2, 1, 0, 0, 0, 0, 0, 0]);
    });

    it('passes a memfd with SCM_RIGHTS: a new fd number for the same memory', () => {
      const { sfd, cfd } = pair();
      const mfd = track(addon.memfdCreate('passed', 12345));
      addon.sendMsg(cfd, 7, mfd);
      const got = addon.recvMsg(sfd);
      expect(got).to.be.an('array');
      const [value, rfd] = got as [number, number];
      track(rfd);
      expect(value).to.equal(7);
      expect(rfd).to.be.at.least(0);
      expect(rfd).to.not.equal(mfd);
      expect(addon.fdSize(rfd)).to.equal(12345);
      const first = new addon.Region(mfd, 4096);
      const second = new addon.Region(rfd, 4096);
      new Uint8Array(first.buffer)[9] = 99;
      expect(new Uint8Array(second.buffer)[9]).to.equal(99);
      first.close();
      second.close();
      // message without fd afterwards comes alone
      addon.sendMsg(cfd, 8, -1);
      expect(addon.recvMsg(sfd)).to.deep.equal([8, -1]);
    });

    it('completes a message the sender wrote in two pieces', () => {
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      fs.writeSync(cfd, Buffer.from([0, 0, 0, 0, 0]));
      expect(addon.recvMsg(sfd)).to.deep.equal([5, -1]);
    });

    it('gives up on a message cut short after 1 s', function () {
      this.timeout(10000);
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      const started = Date.now();
      const err = codeOf(() => addon.recvMsg(sfd));
      expect(err.code).to.equal('ETIMEDOUT');
      expect(Date.now() - started).to.be.within(900, 3000);
    });

    it('recvMsg returns false once the peer closed', () => {
      const { sfd, cfd } = pair();
      addon.sendMsg(cfd, 1, -1);
      closeFd(cfd);
      expect(addon.recvMsg(sfd)).to.deep.equal([1, -1]);
      expect(addon.recvMsg(sfd)).to.equal(false);
      expect(addon.recvMsg(sfd)).to.equal(false);
    });

    it('sendMsg to a closed peer throws EPIPE (no SIGPIPE)', () => {
      const { sfd, cfd } = pair();
      closeFd(sfd);
      const err = codeOf(() => addon.sendMsg(cfd, 1, -1));
      expect(err.code).to.equal('EPIPE');
      expect(err.err.syscall).to.equal('sendmsg');
    });

    it('waitReadable times out when nothing is waiting and returns true when a message is', () => {
      const { sfd, cfd } = pair();
      expect(addon.waitReadable(sfd, 0)).to.equal(false);
      const started = Date.now();
      expect(addon.waitReadable(sfd, 50)).to.equal(false);
      expect(Date.now() - started).to.be.at.least(40);
      addon.sendMsg(cfd, 3, -1);
      expect(addon.waitReadable(sfd, 1000)).to.equal(true);
      expect(addon.recvMsg(sfd)).to.deep.equal([3, -1]);
    });

    it('connect to a missing path and a second listen on the same path fail with Node-style errors', () => {
      let err = codeOf(() => addon.unixConnect(sockPath));
      expect(err.code).to.equal('ENOENT');
      expect(err.err.errno).to.equal(-2);
      expect(err.err.syscall).to.equal('connect');
      expect(err.err.path).to.equal(sockPath);
      track(addon.unixListen(sockPath, 4));
      err = codeOf(() => addon.unixListen(sockPath, 4));
      expect(err.code).to.equal('EADDRINUSE');
      expect(err.err.syscall).to.equal('bind');
    });

    it('connect to a socket nobody listens on fails with ECONNREFUSED', () => {
      const lfd = addon.unixListen(sockPath, 4);
      addon.close(lfd); // the socket file stays
      expect(codeOf(() => addon.unixConnect(sockPath)).code).to.equal('ECONNREFUSED');
    });
  });

  describe('tryLock / close', () => {
    it('tryLock is per open file description: true, false on a second open, true after the first closes', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const file = path.join(dir, 'lock');
      const fd1 = fs.openSync(file, 'w');
      const fd2 = fs.openSync(file, 'r');
      try {
        expect(addon.tryLock(fd1)).to.equal(true);
        expect(addon.tryLock(fd1)).to.equal(true); // already ours
        expect(addon.tryLock(fd2)).to.equal(false);
        addon.close(fd1);
        expect(addon.tryLock(fd2)).to.equal(true);
      } finally {
        addon.close(fd2);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('close of a bad fd throws EBADF', () => {
      const err = codeOf(() => addon.close(1_000_000));
      expect(err.code).to.equal('EBADF');
      expect(err.err.errno).to.equal(-9);
      expect(err.err.syscall).to.equal('close');
      expect(err.err.message).to.equal('close EBADF');
    });
  });
});
