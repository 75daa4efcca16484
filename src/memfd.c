/* Anonymous shared memory (memfd) and /dev/shm names.
 *
 * Design notes: every shared mapping the library makes for its own use starts
 * as a memfd: never visible in /dev/shm, released by the kernel with the last
 * fd and mapping, so a crash can never leak it.  Names the library makes up
 * for /dev/shm objects embed the creator's pid (so tools and tests can tell
 * whose an entry is) plus a counter and random bits (so a squatter cannot
 * predict them). */
#include "internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

int mproc__memfd_create(const char *name, size_t size, int *fd_out) {
  if (fd_out == NULL || size > (size_t)INT64_MAX)
    return MPROC_EINVAL;
  int fd = memfd_create(name != NULL ? name : "mproc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return mproc__neg_errno();
  if (ftruncate(fd, (off_t)size) != 0) {
    int err = mproc__neg_errno();
    close(fd);
    return err;
  }
  fd = mproc__fd_own(fd);
  *fd_out = fd;
  return 0;
}

int mproc__map_shared(int fd, size_t size, void **addr_out) {
  if (addr_out == NULL || size == 0)
    return MPROC_EINVAL;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return mproc__neg_errno();
  *addr_out = p;
  return 0;
}

int mproc__map_anon_shared(size_t size, void **addr_out) {
  if (addr_out == NULL || size == 0)
    return MPROC_EINVAL;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return mproc__neg_errno();
  *addr_out = p;
  return 0;
}

int mproc__shm_make_name(char *buf, size_t len, const char *kind) {
  static _Atomic unsigned seq;
  unsigned rnd = 0;
  if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
    rnd = (unsigned)mproc_now_ms() * 2654435761u;
  int n = snprintf(buf, len, "/mproc.%d.%s.%u.%08x", (int)getpid(), kind != NULL ? kind : "shm",
                   atomic_fetch_add(&seq, 1), rnd);
  return n > 0 && (size_t)n < len ? 0 : MPROC_ENAMETOOLONG;
}
