/* Shared helpers of the synchronization tests: pipes for "I am ready"
 * handshakes (mappings are counted by mproc_test_count_shared_maps). */
#ifndef MPROC_TEST_SYNC_UTIL_H
#define MPROC_TEST_SYNC_UTIL_H

#include "child.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static inline void *anon_new(size_t size) {
  void *p;
  mproc_assert_ok(mproc__map_anon_shared(size, &p));
  return p;
}

static inline void pipe_new(int p[2]) { ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0); }

static inline void pipe_close(int p[2]) {
  close(p[0]);
  close(p[1]);
}

/* Wait (30 s bound) for one byte. */
static inline void wait_byte(int fd) {
  ck_assert_int_gt(mproc__poll1(fd, POLLIN, mproc__deadline(30000)), 0);
  char b;
  ck_assert_int_eq(read(fd, &b, 1), 1);
}

static inline int say_ready(int fd) {
  char b = 1;
  return write(fd, &b, 1) == 1 ? 0 : 1;
}

/* Replaces every aligned 32-bit copy of `from` in [p, p+len) by `to`: what a
 * process given a dead owner's recycled tid or pid would find recorded. */
static inline int recycle_id(void *p, size_t len, pid_t from, pid_t to) {
  int n = 0;
  for (size_t off = 0; off + sizeof(int32_t) <= len; off += sizeof(int32_t)) {
    int32_t v;
    memcpy(&v, (char *)p + off, sizeof v);
    if (v == (int32_t)from) {
      int32_t w = (int32_t)to;
      memcpy((char *)p + off, &w, sizeof w);
      n++;
    }
  }
  return n;
}

/* Returns once the clock has moved past the calling thread's start time,
 * measured as /proc/<tid>/stat does (clock ticks after boot), so that a
 * process forked afterwards started in a later tick: a tid recycled after
 * an owner's death belongs to a thread that started later than the owner,
 * and a test faking the recycling (recycle_id) must keep that true even
 * when the test and its child start within one tick. */
static inline void start_after_own_tick(void) {
  struct mproc__pstat ps;
  mproc_assert_ok(mproc__proc_stat(NULL, gettid(), &ps));
  long hz = sysconf(_SC_CLK_TCK);
  int64_t deadline = mproc__deadline(5000);
  for (;;) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    uint64_t ticks = (uint64_t)ts.tv_sec * (uint64_t)hz + (uint64_t)ts.tv_nsec / (1000000000u / hz);
    if (ticks > ps.start_time + 1)
      return;
    ck_assert_int_lt(mproc_now_ms(), deadline);
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL); /* waiting for the clock itself, not for an event */
  }
}

#endif /* MPROC_TEST_SYNC_UTIL_H */
