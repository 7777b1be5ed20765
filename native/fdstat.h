// fstat's mode and size through statx. glibc 2.33 and later export fstat as a
// symbol of their own version, so a binary built against them would not load
// with an older glibc; statx is in glibc since 2.28, as old as the oldest glibc
// Node's own Linux binaries run on, so a prebuilt addon loads wherever Node does.
#ifndef ZIVM_FDSTAT_H
#define ZIVM_FDSTAT_H

#include <fcntl.h>
#include <sys/stat.h>

namespace zivm {

// Fills st_mode and st_size (the other fields are zero); -1 with errno on failure.
inline int FdStat(int fd, struct stat* st) {
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MODE | STATX_SIZE, &sx) != 0) return -1;
  *st = {};
  st->st_mode = sx.stx_mode;
  st->st_size = static_cast<off_t>(sx.stx_size);
  return 0;
}

}  // namespace zivm

#endif
