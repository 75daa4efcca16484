/* The one definition of the pool suites' shared page (pool-helpers.h). */
#include "pool-helpers.h"

#include <fcntl.h>

static struct shared *shared_page;

void *shared_map_new(size_t len, int fd) {
  int m = memfd_create("mproc-test-shared", MFD_CLOEXEC);
  ck_assert_int_ge(m, 0);
  ck_assert_int_eq(ftruncate(m, (off_t)len), 0);
  /* dup2 leaves the copy inheritable: spawn and forkserver workers get it. */
  ck_assert_int_eq(dup2(m, fd), fd);
  close(m);
  void *p = shared_map_fd(len, fd);
  ck_assert_ptr_nonnull(p);
  return p;
}

void *shared_map_fd(size_t len, int fd) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

void shared_map_free(void *m, size_t len, int fd) {
  munmap(m, len);
  close(fd);
}

struct shared *shared_new(void) {
  shared_page = shared_map_new(sizeof(struct shared), SHARED_FD);
  return shared_page;
}

void shared_free(struct shared *s) {
  shared_map_free(s, sizeof *s, SHARED_FD);
  if (s == shared_page)
    shared_page = NULL;
}

struct shared **shared_ref(void) {
  if (shared_page == NULL && fcntl(SHARED_FD, F_GETFD) >= 0)
    shared_page = shared_map_fd(sizeof(struct shared), SHARED_FD);
  return &shared_page;
}
