/* Tasks and helpers shared by the pool test suites. */
#ifndef MPROC_TEST_POOL_HELPERS_H
#define MPROC_TEST_POOL_HELPERS_H

#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* A page shared with workers forked after it is made (inherited mapping). */
struct shared {
  _Atomic int pid;     /* a task publishes its worker's pid */
  _Atomic int count;   /* tasks or initializers that ran */
  _Atomic int running; /* tasks running right now */
  _Atomic int max_running;
  _Atomic int grandchild;
  _Atomic int release; /* blocked tasks return once set */
};

static inline struct shared *shared_new(void) {
  void *m =
      mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  memset(m, 0, sizeof(struct shared));
  return m;
}
static inline void shared_free(struct shared *s) { munmap(s, sizeof *s); }

static struct shared *S; /* the test's shared page (set before the pool) */

static inline int task_square(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  int x = *(const int *)arg;
  x *= x;
  return mproc_task_return(ctx, &x, sizeof x);
}

static inline int task_pid(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  int pid = (int)getpid();
  return mproc_task_return(ctx, &pid, sizeof pid);
}

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Publishes its pid, then waits until S->release (or forever). */
static inline int task_block(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  (void)ctx;
  atomic_store(&S->pid, (int)getpid());
  while (!atomic_load(&S->release))
    sleep_ms(1);
  return 0;
}

/* Sleeps arg milliseconds (work of a known duration, not synchronisation). */
static inline int task_sleep(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  (void)ctx;
  sleep_ms(*(const int *)arg);
  return 0;
}

/* Wait (bounded) until `pid` is gone or a zombie. */
static inline int wait_pid_dead(pid_t pid, int64_t timeout_ms) {
  int64_t dl = mproc_now_ms() + timeout_ms;
  for (;;) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
      return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p != NULL && (p[2] == 'Z' || p[2] == 'X'))
      return 1;
    if (mproc_now_ms() > dl)
      return 0;
    sleep_ms(5);
  }
}

/* Wait (bounded) until a future finished. */
static inline void wait_done(mproc_future *f) { mproc_assert_ok(mproc_future_wait(f, 30000)); }

static void *noop_thread(void *arg) { return arg; }

/* ThreadSanitizer starts a helper thread of its own at a process's first
 * pthread_create; start it before the leak fixture counts threads, so the
 * pool's (joined) manager thread is not blamed for it. */
static inline void warm_up_threads(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, noop_thread, NULL) == 0)
    pthread_join(t, NULL);
}

/* mproc_test_tcase() with the warm-up running before the leak fixture. */
static inline TCase *pool_tcase(Suite *s, const char *name, double timeout_s) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, warm_up_threads, NULL);
  tcase_add_checked_fixture(tc, mproc_test_setup, mproc_test_teardown);
  const char *env = getenv("MPROC_TEST_TIMEOUT_SCALE");
  double scale = env != NULL && atof(env) > 0 ? atof(env) : 1.0;
  tcase_set_timeout(tc, timeout_s * scale);
  suite_add_tcase(s, tc);
  return tc;
}

/* A pool whose initializer failed: its first task fails with
 * MPROC_EINITFAILED, a message holding `msg`, the worker's pid and the
 * signal or exit status that ended it (or the submit already sees the pool
 * broken); within bounded time every submit returns MPROC_EBROKEN. */
static inline void expect_pool_broken(mproc_pool *p, const char *msg, int signo, int status) {
  mproc_future *f;
  int r = mproc_pool_submit(p, task_pid, NULL, 0, &f);
  if (r == 0) {
    const void *d;
    size_t n;
    mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_EINITFAILED);
    struct mproc_task_error e;
    mproc_assert_ok(mproc_future_error(f, &e));
    ck_assert_msg(strstr(e.message, msg) != NULL, "message: %s", e.message);
    ck_assert_int_eq(e.signo, signo);
    ck_assert_int_eq(e.exit_status, status);
    ck_assert_int_gt(e.pid, 0);
    mproc_future_free(f);
  } else {
    mproc_assert_err(r, MPROC_EBROKEN);
  }
  int64_t dl = mproc_now_ms() + 10000;
  while ((r = mproc_pool_submit(p, task_pid, NULL, 0, &f)) == 0) {
    mproc_future_wait(f, 30000);
    mproc_future_free(f);
    ck_assert(mproc_now_ms() < dl);
  }
  mproc_assert_err(r, MPROC_EBROKEN);
}

#endif
