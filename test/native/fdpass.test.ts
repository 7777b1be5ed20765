/** native/fdpass.cc: memfds, Unix sockets with fd passing, peer credentials, locks and close. */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { n, codeOf, noFdLeft } from './fixture';

describe('native addon', () => {
  noFdLeft();

  describe('memfdCreate / fdSize', () => {
    it('creates a memfd of the given size, sealed against shrinking and growing', () => {
      const fd = n.memfdCreate('sealed', 3 * 4096 + 5);
      try {
        expect(n.fdSize(fd)).to.equal(3 * 4096 + 5);
        expect(codeOf(() => fs.ftruncateSync(fd, 0)).code).to.equal('EPERM');
        expect(codeOf(() => fs.ftruncateSync(fd, 1 << 20)).code).to.equal('EPERM');
        expect(n.fdSize(fd)).to.equal(3 * 4096 + 5);
      } finally {
        n.close(fd);
      }
    });

    it('takes sizes above 4 GiB (sparse)', () => {
      const size = 5 * 2 ** 30;
      const fd = n.memfdCreate('big', size);
      try {
        expect(n.fdSize(fd)).to.equal(size);
      } finally {
        n.close(fd);
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
      n.close(fd);
    };
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      sockPath = path.join(dir, 'ctl.sock');
    });
    afterEach(() => {
      while (open.length) n.close(open.pop()!);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    function pair(): { lfd: number; cfd: number; sfd: number } {
      const lfd = track(n.unixListen(sockPath, 16));
      expect(n.unixAccept(lfd)).to.equal(-1);
      const cfd = track(n.unixConnect(sockPath));
      const sfd = track(n.unixAccept(lfd));
      expect(sfd).to.be.at.least(0);
      return { lfd, cfd, sfd };
    }

    it('listens, connects and accepts; the accepted socket is non-blocking', () => {
      const { sfd, cfd } = pair();
      expect(n.recvMsg(sfd)).to.equal(null);
      expect(n.recvMsg(cfd)).to.equal(null);
    });

    it('peerCred reports this process', () => {
      const { sfd, cfd } = pair();
      const cred = n.peerCred(sfd);
      expect(cred.pid).to.equal(process.pid);
      expect(cred.uid).to.equal(process.getuid!());
      expect(cred.gid).to.equal(process.getgid!());
      expect(n.peerCred(cfd).pid).to.equal(process.pid);
    });

    it('sendMsg/recvMsg carry 64-bit little-endian values without an fd', () => {
      const { sfd, cfd } = pair();
      n.sendMsg(cfd, 42, -1);
      n.sendMsg(cfd, -1, -1);
      n.sendMsg(cfd, 2 ** 40 + 5, -1);
      expect(n.recvMsg(sfd)).to.deep.equal([42, -1]);
      expect(n.recvMsg(sfd)).to.deep.equal([-1, -1]);
      expect(n.recvMsg(sfd)).to.deep.equal([2 ** 40 + 5, -1]);
      expect(n.recvMsg(sfd)).to.equal(null);
      // the wire format: 8 bytes little-endian
      n.sendMsg(cfd, 0x0102, -1);
      const raw = Buffer.alloc(16);
      expect(fs.readSync(sfd, raw, 0, 16, null)).to.equal(8);
      expect([...raw.subarray(0, 8)]).to.deep.equal([2, 1, 0, 0, 0, 0, 0, 0]);
    });

    it('passes a memfd with SCM_RIGHTS: a new fd number for the same memory', () => {
      const { sfd, cfd } = pair();
      const mfd = track(n.memfdCreate('passed', 12345));
      n.sendMsg(cfd, 7, mfd);
      const got = n.recvMsg(sfd);
      expect(got).to.be.an('array');
      const [value, rfd] = got as [number, number];
      track(rfd);
      expect(value).to.equal(7);
      expect(rfd).to.be.at.least(0);
      expect(rfd).to.not.equal(mfd);
      expect(n.fdSize(rfd)).to.equal(12345);
      const a = new n.Region(mfd, 4096);
      const b = new n.Region(rfd, 4096);
      new Uint8Array(a.buffer)[9] = 99;
      expect(new Uint8Array(b.buffer)[9]).to.equal(99);
      a.close();
      b.close();
      // message without fd afterwards comes alone
      n.sendMsg(cfd, 8, -1);
      expect(n.recvMsg(sfd)).to.deep.equal([8, -1]);
    });

    it('completes a message the sender wrote in two pieces', () => {
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      fs.writeSync(cfd, Buffer.from([0, 0, 0, 0, 0]));
      expect(n.recvMsg(sfd)).to.deep.equal([5, -1]);
    });

    it('gives up on a message cut short after 1 s', function () {
      this.timeout(10000);
      const { sfd, cfd } = pair();
      fs.writeSync(cfd, Buffer.from([5, 0, 0]));
      const started = Date.now();
      const e = codeOf(() => n.recvMsg(sfd));
      expect(e.code).to.equal('ETIMEDOUT');
      expect(Date.now() - started).to.be.within(900, 3000);
    });

    it('recvMsg returns false once the peer closed', () => {
      const { sfd, cfd } = pair();
      n.sendMsg(cfd, 1, -1);
      closeFd(cfd);
      expect(n.recvMsg(sfd)).to.deep.equal([1, -1]);
      expect(n.recvMsg(sfd)).to.equal(false);
      expect(n.recvMsg(sfd)).to.equal(false);
    });

    it('sendMsg to a closed peer throws EPIPE (no SIGPIPE)', () => {
      const { sfd, cfd } = pair();
      closeFd(sfd);
      const e = codeOf(() => n.sendMsg(cfd, 1, -1));
      expect(e.code).to.equal('EPIPE');
      expect(e.err.syscall).to.equal('sendmsg');
    });

    it('waitReadable times out when nothing is waiting and returns true when a message is', () => {
      const { sfd, cfd } = pair();
      expect(n.waitReadable(sfd, 0)).to.equal(false);
      const started = Date.now();
      expect(n.waitReadable(sfd, 50)).to.equal(false);
      expect(Date.now() - started).to.be.at.least(40);
      n.sendMsg(cfd, 3, -1);
      expect(n.waitReadable(sfd, 1000)).to.equal(true);
      expect(n.recvMsg(sfd)).to.deep.equal([3, -1]);
    });

    it('connect to a missing path and a second listen on the same path fail with Node-style errors', () => {
      let e = codeOf(() => n.unixConnect(sockPath));
      expect(e.code).to.equal('ENOENT');
      expect(e.err.errno).to.equal(-2);
      expect(e.err.syscall).to.equal('connect');
      expect(e.err.path).to.equal(sockPath);
      track(n.unixListen(sockPath, 4));
      e = codeOf(() => n.unixListen(sockPath, 4));
      expect(e.code).to.equal('EADDRINUSE');
      expect(e.err.syscall).to.equal('bind');
    });

    it('connect to a socket nobody listens on fails with ECONNREFUSED', () => {
      const lfd = n.unixListen(sockPath, 4);
      n.close(lfd); // the socket file stays
      expect(codeOf(() => n.unixConnect(sockPath)).code).to.equal('ECONNREFUSED');
    });
  });

  describe('tryLock / close', () => {
    it('tryLock is per open file description: true, false on a second open, true after the first closes', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zivm-native-'));
      const file = path.join(dir, 'lock');
      const fd1 = fs.openSync(file, 'w');
      const fd2 = fs.openSync(file, 'r');
      try {
        expect(n.tryLock(fd1)).to.equal(true);
        expect(n.tryLock(fd1)).to.equal(true); // already ours
        expect(n.tryLock(fd2)).to.equal(false);
        n.close(fd1);
        expect(n.tryLock(fd2)).to.equal(true);
      } finally {
        n.close(fd2);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('close of a bad fd throws EBADF', () => {
      const e = codeOf(() => n.close(1_000_000));
      expect(e.code).to.equal('EBADF');
      expect(e.err.errno).to.equal(-9);
      expect(e.err.syscall).to.equal('close');
      expect(e.err.message).to.equal('close EBADF');
    });
  });
});
