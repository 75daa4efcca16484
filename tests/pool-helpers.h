/* Tasks and helpers shared by the pool test suites. */
#ifndef MPROC_TEST_POOL_HELPERS_H
#define MPROC_TEST_POOL_HELPERS_H

#include "harness.h"
#include "internal.h"

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

/* A page shared with the pool's workers.  It is a memfd kept inheritable
 * at a fixed descriptor number, so a worker started by spawn or forkserver
 * (a fresh image, which inherits only such descriptors) maps the same page
 * on first use; a forked worker simply inherits the mapping. */
struct shared {
  _Atomic int pid;     /* a task publishes its worker's pid */
  _Atomic int count;   /* tasks or initializers that ran */
  _Atomic int running; /* tasks running right now */
  _Atomic int max_running;
  _Atomic int grandchild;
  _Atomic int release; /* blocked tasks return once set */
};

/* The page's descriptor in the test process and in every worker. */
#define SHARED_FD 900

/* Maps len bytes shared with every worker started after it, at descriptor
 * number fd (inheritable): works under every start method. */
void *shared_map_new(size_t len, int fd);
/* The mapping of descriptor fd (len bytes) in this process. */
void *shared_map_fd(size_t len, int fd);
void shared_map_free(void *m, size_t len, int fd);

/* The test's page, new, and its release.  shared_new() also records the
 * page as S: in `S = shared_new()` the compiler may evaluate the right side
 * first, and S's lookup would then map the descriptor a second time (a
 * mapping never unmapped). */
struct shared *shared_new(void);
void shared_free(struct shared *s);

/* The test's shared page (set before the pool): in an exec'd worker it is
 * mapped from SHARED_FD on first use (pool-helpers.c). */
struct shared **shared_ref(void);
#define S (*shared_ref())

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
    struct mproc__pstat ps;
    if (mproc__proc_stat(NULL, pid, &ps) != 0 || ps.state == 'Z' || ps.state == 'X')
      return 1;
    if (mproc_now_ms() > dl)
      return 0;
    sleep_ms(5);
  }
}

/* Wait (bounded) until a future finished. */
static inline void wait_done(mproc_future *f) { mproc_assert_ok(mproc_future_wait(f, 30000)); }

/* A pool of `workers` workers, default options otherwise. */
static inline mproc_pool *make_pool(int workers) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = workers};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  return p;
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

/* Runs fn(NULL) on p and checks that it succeeded. */
static inline void run_ok(mproc_pool *p, mproc_task_fn fn) {
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, fn, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  mproc_future_free(f);
}

/* map_shm suites: a block of n ints of input followed by n ints of output, made after the
 * pool: in[i] = i % 20000 - 100 (squares stay inside an int). */
static inline mproc_shm *ints_block(size_t n) {
  mproc_shm *b;
  mproc_assert_ok(mproc_shm_new(&b, 2 * n * sizeof(int)));
  int *in = mproc_shm_addr(b);
  for (size_t i = 0; i < n; i++)
    in[i] = (int)(i % 20000) - 100;
  return b;
}

static inline size_t bad_squares(const int *in, const int *out, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    bad += out[i] != in[i] * in[i];
  return bad;
}

#endif
