/* The pool under injected faults: results that cannot be made, workers that
 * stall or cannot be started, initializers that crash or hang, chunks that
 * die part-way, and exit after a shutdown that does not wait.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"

#include <sys/resource.h>
#include <sys/wait.h>

/* ---- a result that cannot be made is never success ----------------------- */

/* Lower this worker's descriptor limit so no new descriptor can be opened,
 * run `fn`, then restore the limit. */
static int with_no_fds(int (*fn)(mproc_task_ctx *), mproc_task_ctx *ctx) {
  struct rlimit old, low;
  getrlimit(RLIMIT_NOFILE, &old);
  int probe = dup(0);
  low = old;
  low.rlim_cur = probe >= 0 ? (rlim_t)probe : 3;
  close(probe);
  setrlimit(RLIMIT_NOFILE, &low);
  int r = fn(ctx);
  setrlimit(RLIMIT_NOFILE, &old);
  return r;
}

static int return_big_ignoring_error(mproc_task_ctx *ctx) {
  static char big[1 << 20];
  (void)mproc_task_return(ctx, big, sizeof big);
  return 0;
}

static int task_big_result_no_fds(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l;
  return with_no_fds(return_big_ignoring_error, ctx);
}

static int buf_big_then_nothing(mproc_task_ctx *ctx) {
  return mproc_task_result_buf(ctx, 1 << 20) == NULL ? 0 : 1;
}

static int task_big_buf_no_fds(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l;
  return with_no_fds(buf_big_then_nothing, ctx);
}

/* A failed large buffer, then a small result: the small one stands. */
static int task_big_buf_then_small(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l;
  if (with_no_fds(buf_big_then_nothing, ctx) != 0)
    return 1;
  int v = 42;
  return mproc_task_return(ctx, &v, sizeof v);
}

static int return_big_checked(mproc_task_ctx *ctx) {
  static char big[1 << 20];
  return mproc_task_return(ctx, big, sizeof big);
}

static int task_big_return_checked(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l;
  int r = with_no_fds(return_big_checked, ctx);
  return r == -EMFILE ? 7 : 8;
}

/* Run fn and expect MPROC_ETASK with `task_code` and a message holding `msg`. */
static void expect_task_error(mproc_pool *p, mproc_task_fn fn, int task_code, const char *msg) {
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, fn, NULL, 0, &f));
  const void *d;
  size_t n = 0;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETASK);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.task_code, task_code);
  ck_assert_msg(strstr(e.message, msg) != NULL, "message: %s", e.message);
  mproc_future_free(f);
}

START_TEST(test_failed_result_is_not_success) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  expect_task_error(p, task_big_result_no_fds, -EMFILE, "1048576-byte result");
  expect_task_error(p, task_big_buf_no_fds, -EMFILE, "1048576-byte result");
  /* The error reaches the task itself too. */
  expect_task_error(p, task_big_return_checked, 7, "");
  mproc_future *f;
  const void *d;
  size_t n = 0;
  /* A later successful result replaces the failed buffer. */
  mproc_assert_ok(mproc_pool_submit(p, task_big_buf_then_small, NULL, 0, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_uint_eq(n, sizeof(int));
  ck_assert_int_eq(*(const int *)d, 42);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* ---- forking fails for a while, or for good -------------------------------- */

/* Kill the pool's only worker with forking failing, wait until the pool has
 * noticed (no worker listed), then queue a task. */
static mproc_future *submit_during_outage(mproc_pool *p) {
  pid_t pid;
  ck_assert_int_eq(mproc_pool_worker_pids(p, &pid, 1), 1);
  kill(pid, SIGKILL);
  int64_t dl = mproc_now_ms() + 10000;
  while (mproc_pool_worker_pids(p, &pid, 1) != 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  mproc_future *f;
  int x = 5;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  return f;
}

START_TEST(test_task_runs_after_fork_outage) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  /* Four attempts fail (~150 ms of back-off), then forking recovers: the
   * task queued meanwhile runs without any other event waking the pool. */
  atomic_store(&mproc__test_fail_spawn, 4);
  mproc_future *f = submit_during_outage(p);
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 10000));
  ck_assert_int_eq(*(const int *)d, 25);
  mproc_future_free(f);
  ck_assert_int_eq(atomic_load(&mproc__test_fail_spawn), 0);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_no_worker_fails_queued_tasks) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  atomic_store(&mproc__test_fail_spawn, -1);
  int64_t t0 = mproc_now_ms();
  mproc_future *f = submit_during_outage(p);
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), -EAGAIN);
  /* Bounded: the no-worker limit plus at most one back-off step. */
  ck_assert_int_ge(mproc_now_ms() - t0, MPROC__NO_WORKER_MS - 100);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_msg(strstr(e.message, "could not start a worker: ") != NULL, "message: %s", e.message);
  mproc_future_free(f);
  /* A task queued while it lasts fails too, in bounded time. */
  int x = 3;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), -EAGAIN);
  mproc_future_free(f);
  /* Forking recovers: the pool works again. */
  atomic_store(&mproc__test_fail_spawn, 0);
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 9);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_new_fails_cleanly_when_fork_fails) {
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.workers = 3};
  atomic_store(&mproc__test_fail_spawn, -1);
  mproc_assert_err(mproc_pool_new(&p, &o), -EAGAIN);
  atomic_store(&mproc__test_fail_spawn, 0);
  ck_assert_ptr_null(p);
}
END_TEST

/* ---- initializers that crash, exit or hang ---------------------------------- */

static _Atomic int *init_runs; /* shared page: initializer runs */

static int init_segv(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(init_runs, 1);
  raise(SIGSEGV);
  return 0;
}

static int init_exit(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(init_runs, 1);
  _exit(1);
}

static int init_hang(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(init_runs, 1);
  while (atomic_load(init_runs) > 0) /* forever: the count never drops */
    pause();
  return 0;
}

/* A pool of two workers whose initializer is `init` breaks (see
 * expect_pool_broken), and no worker is forked again: at most one
 * initializer run per slot. */
static void expect_broken_by(mproc_init_fn init, int64_t init_timeout_ms, const char *msg,
                             int signo, int status) {
  init_runs =
      mmap(NULL, sizeof *init_runs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(init_runs, MAP_FAILED);
  atomic_store(init_runs, 0);
  mproc_pool *p;
  struct mproc_pool_options o = {
      .workers = 2, .initializer = init, .init_timeout_ms = init_timeout_ms};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  expect_pool_broken(p, msg, signo, status);
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_le(atomic_load(init_runs), 2);
  munmap(init_runs, sizeof *init_runs);
}

START_TEST(test_initializer_crash_breaks_pool) {
  expect_broken_by(init_segv, 0, "killed by signal 11 (SEGV) in its initializer", SIGSEGV, -1);
}
END_TEST

START_TEST(test_initializer_exit_breaks_pool) {
  expect_broken_by(init_exit, 0, "exited with status 1 in its initializer", 0, 1);
}
END_TEST

START_TEST(test_initializer_deadline) {
  int64_t t0 = mproc_now_ms();
  expect_broken_by(init_hang, 300, "did not finish within 300 ms", SIGKILL, -1);
  ck_assert_int_lt(mproc_now_ms() - t0, 20000);
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.init_timeout_ms = -1};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  ck_assert_ptr_null(p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-faults");
  TCase *tc = pool_tcase(s, "faults", 60);
  tcase_add_test(tc, test_failed_result_is_not_success);
  tcase_add_test(tc, test_task_runs_after_fork_outage);
  tcase_add_test(tc, test_no_worker_fails_queued_tasks);
  tcase_add_test(tc, test_new_fails_cleanly_when_fork_fails);
  tcase_add_test(tc, test_initializer_crash_breaks_pool);
  tcase_add_test(tc, test_initializer_exit_breaks_pool);
  tcase_add_test(tc, test_initializer_deadline);
  return mproc_test_run(s);
}
