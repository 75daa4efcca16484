/* Crash containment of the process pool: worker deaths, timeouts, cancel,
 * recycling, initializer failures, Ctrl-C, parent death.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"

#include <pthread.h>

#if defined(__SANITIZE_ADDRESS__)
#define MPROC_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_TEST_SANITIZED 1
#endif
#endif
#ifndef MPROC_TEST_SANITIZED
#define MPROC_TEST_SANITIZED 0
#endif
#if defined(__SANITIZE_THREAD__)
#define MPROC_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPROC_TEST_TSAN 1
#endif
#endif
#ifndef MPROC_TEST_TSAN
#define MPROC_TEST_TSAN 0
#endif
#include <sys/wait.h>

#include "start.h"

static int pid_in(pid_t pid, const pid_t *pids, int n) {
  for (int i = 0; i < n; i++)
    if (pids[i] == pid)
      return 1;
  return 0;
}

/* Wait (bounded) until the pool has `n` workers and none of them is `gone`. */
static void wait_replaced(mproc_pool *p, pid_t gone, int n) {
  int64_t dl = mproc_now_ms() + 10000;
  pid_t pids[64];
  int k;
  while ((k = mproc_pool_worker_pids(p, pids, 64)) != n || pid_in(gone, pids, k)) {
    ck_assert_msg(mproc_now_ms() < dl, "worker %d not replaced (%d workers)", (int)gone, k);
    sleep_ms(1);
  }
}

START_TEST(test_sigkill_busy_worker_with_backlog) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  mproc_future *blk, *fs[20];
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &blk));
  for (int i = 0; i < 20; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_square, &i, sizeof i, &fs[i]));
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&S->pid) == 0)
    ck_assert(mproc_now_ms() < dl);
  pid_t victim = atomic_load(&S->pid);
  ck_assert_int_eq(kill(victim, SIGKILL), 0);
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(blk, &d, &n, 30000), MPROC_EWORKERDIED);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(blk, &e));
  ck_assert_int_eq(e.code, MPROC_EWORKERDIED);
  ck_assert_int_eq(e.pid, victim);
  ck_assert_int_eq(e.signo, SIGKILL);
  ck_assert_ptr_nonnull(strstr(e.message, "signal 9"));
  for (int i = 0; i < 20; i++) {
    mproc_assert_ok(mproc_future_result(fs[i], &d, &n, 30000));
    ck_assert_int_eq(*(const int *)d, i * i);
    mproc_future_free(fs[i]);
  }
  mproc_future_free(blk);
  wait_replaced(p, victim, 2);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int task_segv(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  raise(SIGSEGV);
  return 0;
}
static int task_abort(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  abort();
}
static int task_exit42(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  _exit(42);
}
static int task_exit0(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  exit(0);
}
/* A real SIGFPE even under UBSan, which would otherwise report the division
 * itself and exit. */
#if defined(__clang__)
__attribute__((no_sanitize("integer-divide-by-zero")))
#elif defined(__GNUC__)
__attribute__((no_sanitize_undefined))
#endif
static int
task_divide(const void *a, size_t l, mproc_task_ctx *c) {
  (void)l;
  volatile int divisor = *(const int *)a;
  int q = 10 / divisor;
  return mproc_task_return(c, &q, sizeof q);
}

static void expect_death(mproc_pool *p, mproc_task_fn fn, int signo, int status) {
  mproc_future *f;
  int zero = 0;
  mproc_assert_ok(mproc_pool_submit(p, fn, &zero, sizeof zero, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_EWORKERDIED);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_FAILED);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
#if MPROC_TEST_SANITIZED
  /* exit() in the worker runs the sanitizer's leak check, which may replace
   * a clean exit by another status or an abort: only the failure counts. */
  if (status != 0 || signo != 0)
#endif
#if MPROC_TEST_TSAN
    /* A worker exec'd by spawn or forkserver is a fresh image whose sanitizer
     * runtime installs its own crash handlers (a forked worker has default
     * dispositions): it reports the signal and exits.  Only the death counts. */
    if (signo != 0 && mproc__start_method_default() != MPROC_START_FORK)
      ck_assert(e.signo != 0 || e.exit_status != 0);
    else
#endif
    {
      ck_assert_int_eq(e.signo, signo);
      ck_assert_int_eq(e.exit_status, status);
    }
  ck_assert_int_gt(e.pid, 0);
  mproc_future_free(f);
  /* The pool carries on. */
  int x = 9;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 81);
  mproc_future_free(f);
}

START_TEST(test_crash_kinds) {
  mproc_pool *p = make_pool(2);
  expect_death(p, task_segv, SIGSEGV, -1);
  expect_death(p, task_abort, SIGABRT, -1);
  expect_death(p, task_exit42, 0, 42);
  expect_death(p, task_exit0, 0, 0); /* exit 0 mid-task is a failure */
  expect_death(p, task_divide, SIGFPE, -1);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_idle_worker_death_fails_nothing) {
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_pid, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  pid_t w = *(const int *)d;
  mproc_future_free(f);
  /* The worker dies after delivering its result: nothing fails. */
  ck_assert_int_eq(kill(w, SIGKILL), 0);
  wait_replaced(p, w, 1);
  mproc_assert_ok(mproc_pool_submit(p, task_pid, NULL, 0, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_ne(*(const int *)d, w);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static int task_spin(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  for (volatile unsigned long i = 0;; i++) {
  }
  return 0;
}

START_TEST(test_task_timeout) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .task_timeout_ms = 200};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f, *g;
  mproc_assert_ok(mproc_pool_submit(p, task_spin, NULL, 0, &f));
  int x = 3;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &g));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETIMEDOUT);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_FAILED);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.code, MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_future_result(g, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 9);
  /* A per-task timeout overrides the pool's. */
  mproc_future *h;
  struct mproc_submit_options so = {.timeout_ms = 100, .retries = -1};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_spin, NULL, 0, &so, &h));
  mproc_assert_err(mproc_future_result(h, &d, &n, 30000), MPROC_ETIMEDOUT);
  mproc_future_free(f);
  mproc_future_free(g);
  mproc_future_free(h);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_cancel_running) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f));
  int64_t dl = mproc_now_ms() + 10000;
  while (mproc_future_state(f) != MPROC_FUTURE_RUNNING)
    ck_assert(mproc_now_ms() < dl);
  while (atomic_load(&S->pid) == 0)
    ck_assert(mproc_now_ms() < dl);
  pid_t w = atomic_load(&S->pid);
  mproc_assert_ok(mproc_future_cancel(f));
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_CANCELED);
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 0), MPROC_ECANCELED);
  mproc_assert_err(mproc_future_cancel(f), MPROC_ESTATE);
  mproc_future_free(f);
  wait_replaced(p, w, 1);
  ck_assert(wait_pid_dead(w, 5000));
  int x = 4;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 16);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static void max_tasks_shape(int workers, uint32_t per_child, int tasks) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = workers, .max_tasks_per_worker = per_child};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *fs[16];
  pid_t pids[16];
  for (int i = 0; i < tasks; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_pid, NULL, 0, &fs[i]));
  for (int i = 0; i < tasks; i++) {
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(fs[i], &d, &n, 30000));
    pids[i] = *(const int *)d;
    mproc_future_free(fs[i]);
  }
  for (int i = 0; i < tasks; i++) {
    uint32_t same = 0;
    for (int j = 0; j < tasks; j++)
      same += pids[j] == pids[i];
    ck_assert_msg(same <= per_child, "worker %d ran %u tasks, limit %u", (int)pids[i], same,
                  per_child);
  }
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_ok(mproc_pool_join(p, 30000));
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_max_tasks_per_worker) {
  max_tasks_shape(1, 2, 6);
  max_tasks_shape(2, 2, 8);
  max_tasks_shape(1, 1, 3);
}
END_TEST

static int task_storm(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  /* Kill one sibling worker: another child of our parent. */
  pid_t self = getpid(), parent = getppid();
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid <= 0 || pid == self)
      continue;
    struct mproc__pstat ps;
    if (mproc__proc_stat(NULL, pid, &ps) == 0 && ps.ppid == parent && ps.state != 'Z') {
      kill(pid, SIGKILL);
      break;
    }
  }
  if (d != NULL)
    closedir(d);
  return 0;
}

START_TEST(test_crash_storm) {
  static const int sizes[] = {1, 2, 5, 13};
  for (size_t k = 0; k < 4; k++) {
    mproc_pool *p = make_pool(sizes[k]);
    int ntasks = 3 * sizes[k] + 2;
    mproc_future *fs[64];
    for (int i = 0; i < ntasks; i++)
      mproc_assert_ok(mproc_pool_submit(p, task_storm, NULL, 0, &fs[i]));
    mproc_assert_ok(mproc_futures_wait(fs, (size_t)ntasks, MPROC_ALL_COMPLETED, 60000) < 0);
    for (int i = 0; i < ntasks; i++) {
      int s = mproc_future_state(fs[i]);
      ck_assert(s == MPROC_FUTURE_DONE || s == MPROC_FUTURE_FAILED);
      if (s == MPROC_FUTURE_FAILED) {
        struct mproc_task_error e;
        mproc_assert_ok(mproc_future_error(fs[i], &e));
        ck_assert_int_eq(e.code, MPROC_EWORKERDIED);
        ck_assert_int_eq(e.signo, SIGKILL);
      }
      mproc_future_free(fs[i]);
    }
    /* Healthy afterwards. */
    mproc_future *f;
    int x = 5;
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
    mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
    ck_assert_int_eq(*(const int *)d, 25);
    mproc_future_free(f);
    mproc_assert_ok(mproc_pool_free(p));
  }
}
END_TEST

static int task_crash_once(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  if (atomic_fetch_add(&S->count, 1) == 0)
    raise(SIGKILL);
  int v = 7;
  return mproc_task_return(c, &v, sizeof v);
}

START_TEST(test_retries) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .retries = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_crash_once, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 7);
  ck_assert_int_eq(atomic_load(&S->count), 2);
  mproc_future_free(f);
  /* Per task: no retries. */
  atomic_store(&S->count, 0);
  struct mproc_submit_options so = {.retries = 0};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_crash_once, NULL, 0, &so, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_EWORKERDIED);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int init_fail(void *arg, mproc_task_ctx *ctx) {
  (void)arg;
  atomic_fetch_add(&S->count, 1);
  return mproc_task_fail(ctx, 5, "cannot open %s", "the database");
}

START_TEST(test_initializer_failure_breaks_pool) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .initializer = init_fail};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  expect_pool_broken(p, "cannot open the database", 0, 3);
  /* No respawn storm: at most one initializer run per worker slot. */
  ck_assert_int_le(atomic_load(&S->count), 2);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int task_grandchild(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  pid_t g = fork();
  if (g == 0) {
    for (;;)
      pause();
  }
  atomic_store(&S->grandchild, (int)g);
  raise(SIGKILL);
  return 0;
}

START_TEST(test_worker_children_die_with_it) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_grandchild, NULL, 0, &f));
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_FAILED);
  pid_t g = atomic_load(&S->grandchild);
  ck_assert_int_gt(g, 0);
  ck_assert_msg(wait_pid_dead(g, 5000), "grandchild %d survived its worker", (int)g);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int slow_item(const void *in, void *out) {
  (void)out;
  sleep_ms(*(const int *)in);
  return 0;
}

/* A separate process owns a pool and reports its worker pids on a pipe. */
static pid_t pool_owner(int wfd, unsigned flags, int mode) {
  pid_t c = fork();
  if (c != 0)
    return c;
  /* The test runner's own SIGINT handler (inherited) would kill the whole
   * test: give the owner the default disposition of a fresh program. */
  signal(SIGINT, SIG_DFL);
  /* Its own process group, like a job a shell started: Ctrl-C goes to the
   * whole group. */
  setpgid(0, 0);
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .flags = flags};
  if (mproc_pool_new(&p, &o) != 0)
    _exit(10);
  pid_t pids[2];
  if (mproc_pool_worker_pids(p, pids, 2) != 2)
    _exit(11);
  if (write(wfd, pids, sizeof pids) != (ssize_t)sizeof pids)
    _exit(12);
  if (mode == 0) /* wait to be killed */
    for (;;)
      pause();
  if (mode == 1) { /* exit() with a live pool and a running task */
    mproc_future *f;
    int ms = 60000;
    mproc_pool_submit(p, task_sleep, &ms, sizeof ms, &f);
    exit(0);
  }
  /* mode 2: a blocked map that SIGINT must stop, then a blocked wait */
  int in[4] = {60000, 60000, 60000, 60000};
  struct mproc_map_options mo = {.chunksize = 1};
  int r = mproc_pool_map(p, slow_item, in, 4, sizeof *in, NULL, 0, &mo, NULL, 60000);
  if (r != MPROC_EINTERRUPTED)
    _exit(20);
  mproc_future *fs[4];
  for (int i = 0; i < 4; i++)
    mproc_pool_submit(p, task_sleep, &in[i], sizeof in[i], &fs[i]);
  r = mproc_futures_wait(fs, 4, MPROC_ALL_COMPLETED, 60000);
  if (r != MPROC_EINTERRUPTED)
    _exit(21);
  /* The test keeps pressing Ctrl-C until we are done. */
  sigset_t intr;
  sigemptyset(&intr);
  sigaddset(&intr, SIGINT);
  sigprocmask(SIG_BLOCK, &intr, NULL);
  mproc_pool_terminate(p);
  for (int i = 0; i < 4; i++) {
    if (mproc_future_state(fs[i]) != MPROC_FUTURE_CANCELED)
      _exit(22);
    mproc_future_free(fs[i]);
  }
  _exit(mproc_pool_free(p) == 0 ? 0 : 23);
}

static void read_pids(int rfd, pid_t *pids) {
  ck_assert_int_eq(read(rfd, pids, 2 * sizeof *pids), (ssize_t)(2 * sizeof *pids));
}

START_TEST(test_parent_sigkill_kills_workers) {
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t owner = pool_owner(pfd[1], 0, 0);
  pid_t pids[2];
  read_pids(pfd[0], pids);
  kill(owner, SIGKILL);
  ck_assert_int_eq(waitpid(owner, NULL, 0), owner);
  /* Within 1 s (scaled for slow sanitizer runs). */
  int64_t limit = mproc_test_scaled_ms(1000);
  for (int i = 0; i < 2; i++)
    ck_assert_msg(wait_pid_dead(pids[i], limit), "worker %d survived", (int)pids[i]);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(test_exit_with_live_pool) {
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t owner = pool_owner(pfd[1], 0, 1);
  pid_t pids[2];
  read_pids(pfd[0], pids);
  int st;
  ck_assert_int_eq(waitpid(owner, &st, 0), owner);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  for (int i = 0; i < 2; i++)
    ck_assert_msg(wait_pid_dead(pids[i], 3000), "worker %d survived", (int)pids[i]);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(test_exit_in_forked_child_leaves_pool_alone) {
  mproc_pool *p = make_pool(2);
  pid_t before[2];
  ck_assert_int_eq(mproc_pool_worker_pids(p, before, 2), 2);
  pid_t c = fork();
  if (c == 0)
    exit(0); /* runs the exit hook in a child: it must not touch the pool */
  ck_assert_int_eq(waitpid(c, NULL, 0), c);
  pid_t after[2];
  ck_assert_int_eq(mproc_pool_worker_pids(p, after, 2), 2);
  for (int i = 0; i < 2; i++)
    ck_assert(pid_in(before[i], after, 2) && mproc_test_pid_exists(before[i]));
  mproc_future *f;
  int x = 6;
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 36);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_sigint_interrupts_wait) {
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t owner = pool_owner(pfd[1], MPROC_POOL_SIGINT, 2);
  pid_t pids[2];
  read_pids(pfd[0], pids);
  /* Press Ctrl-C (SIGINT to the owner's process group, as a terminal does)
   * until the owner, blocked in its wait, has returned and exited: a signal
   * sent before it blocked is not lost that way.  The workers are in groups
   * of their own and never see it. */
  int st = 0;
  pid_t got = 0;
  int64_t dl = mproc_now_ms() + 20000;
  while ((got = waitpid(owner, &st, WNOHANG)) == 0) {
    ck_assert_msg(mproc_now_ms() < dl, "the owner's wait was not interrupted");
    kill(-owner, SIGINT);
    sleep_ms(20);
  }
  ck_assert_int_eq(got, owner);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "owner status %#x", st);
  for (int i = 0; i < 2; i++)
    ck_assert(wait_pid_dead(pids[i], 3000));
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(test_sigint_without_flag_kills_program) {
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t owner = pool_owner(pfd[1], 0, 0);
  pid_t pids[2];
  read_pids(pfd[0], pids);
  kill(-owner, SIGINT);
  int st;
  ck_assert_int_eq(waitpid(owner, &st, 0), owner);
  ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT);
  for (int i = 0; i < 2; i++)
    ck_assert(wait_pid_dead(pids[i], 3000));
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

static _Atomic int hammer_stop;
static pthread_mutex_t user_mu = PTHREAD_MUTEX_INITIALIZER;

static void *hammer(void *arg) {
  FILE *null = arg;
  while (!atomic_load(&hammer_stop)) {
    void *m = malloc(64 + (size_t)(rand() % 4096));
    pthread_mutex_lock(&user_mu);
    fprintf(null, "%p\n", m);
    printf("%s", "");
    pthread_mutex_unlock(&user_mu);
    free(m);
  }
  return NULL;
}

static int task_uses_libc(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
#if MPROC_TEST_SANITIZED
  /* glibc's malloc is safe across fork, the sanitizer's allocator (as of
   * clang 14) is not: a worker forked while a hammering thread holds its
   * lock would hang in the sanitizer, not in the library. */
  char m[100];
#else
  char *m = malloc(100);
#endif
  snprintf(m, 100, "%d", (int)getpid());
  printf("%s", "");
  fflush(stdout);
  int v = (int)strlen(m);
#if !MPROC_TEST_SANITIZED
  free(m);
#endif
  return mproc_task_return(c, &v, sizeof v);
}

START_TEST(test_replacement_while_threads_hold_locks) {
  FILE *null = fopen("/dev/null", "we");
  ck_assert_ptr_nonnull(null);
  pthread_t th[3];
  atomic_store(&hammer_stop, 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, null), 0);
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .max_tasks_per_worker = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  enum { N = 200 };
  mproc_future **fs = calloc(N, sizeof *fs);
  for (int i = 0; i < N; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_uses_libc, NULL, 0, &fs[i]));
  mproc_assert_ok(mproc_futures_wait(fs, N, MPROC_ALL_COMPLETED, mproc_test_scaled_ms(60000)) < 0);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(mproc_future_state(fs[i]), MPROC_FUTURE_DONE);
    mproc_future_free(fs[i]);
  }
  free(fs);
  atomic_store(&hammer_stop, 1);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  fclose(null);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

char *volatile hog_sink;

static int task_hog(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  /* Grow the heap past the ceiling (and keep it: a leak). */
  size_t n = 64u << 20;
  char *m = malloc(n);
  memset(m, 1, n);
  hog_sink = m;
  int pid = (int)getpid();
  return mproc_task_return(c, &pid, sizeof pid);
}

START_TEST(test_memory_ceiling_recycles) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .max_worker_rss = 32u << 20};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  pid_t prev = 0;
  for (int i = 0; i < 3; i++) {
    mproc_future *f;
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_pool_submit(p, task_hog, NULL, 0, &f));
    mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
    ck_assert_int_ne(*(const int *)d, prev);
    prev = *(const int *)d;
    mproc_future_free(f);
  }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-crash");
  TCase *tc = mproc_test_tcase(s, "crash", 60);
  tcase_add_test(tc, test_sigkill_busy_worker_with_backlog);
  tcase_add_test(tc, test_crash_kinds);
  tcase_add_test(tc, test_idle_worker_death_fails_nothing);
  tcase_add_test(tc, test_task_timeout);
  tcase_add_test(tc, test_cancel_running);
  tcase_add_test(tc, test_max_tasks_per_worker);
  tcase_add_test(tc, test_crash_storm);
  tcase_add_test(tc, test_retries);
  tcase_add_test(tc, test_initializer_failure_breaks_pool);
  tcase_add_test(tc, test_worker_children_die_with_it);
  tcase_add_test(tc, test_parent_sigkill_kills_workers);
  tcase_add_test(tc, test_exit_with_live_pool);
  tcase_add_test(tc, test_exit_in_forked_child_leaves_pool_alone);
  tcase_add_test(tc, test_sigint_interrupts_wait);
  tcase_add_test(tc, test_sigint_without_flag_kills_program);
  tcase_add_test(tc, test_replacement_while_threads_hold_locks);
  tcase_add_test(tc, test_memory_ceiling_recycles);
  return mproc_test_run(s);
}
