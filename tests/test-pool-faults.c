/* The pool under injected faults: results that cannot be made, workers that
 * stall or cannot be started, initializers that crash or hang, chunks that
 * die part-way, and exit after a shutdown that does not wait.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"
#include "shm_layout.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

static int init_segv(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(&S->count, 1); /* initializer runs */
  raise(SIGSEGV);
  return 0;
}

static int init_exit(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(&S->count, 1); /* initializer runs */
  _exit(1);
}

static int init_hang(void *arg, mproc_task_ctx *ctx) {
  (void)arg, (void)ctx;
  atomic_fetch_add(&S->count, 1);    /* initializer runs */
  while (atomic_load(&S->count) > 0) /* forever: the count never drops */
    pause();
  return 0;
}

/* A pool of two workers whose initializer is `init` breaks (see
 * expect_pool_broken), and no worker is forked again: at most one
 * initializer run per slot. */
static void expect_broken_by(mproc_init_fn init, int64_t init_timeout_ms, const char *msg,
                             int signo, int status) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {
      .workers = 2, .initializer = init, .init_timeout_ms = init_timeout_ms};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  expect_pool_broken(p, msg, signo, status);
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_le(atomic_load(&S->count), 2);
  shared_free(S);
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

/* ---- no task waits behind a long one while a worker idles ------------------- */

START_TEST(test_no_task_waits_behind_long_task) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  for (int round = 0; round < 3; round++) {
    atomic_store(&S->pid, 0);
    atomic_store(&S->release, 0);
    mproc_future *lf, *f[20];
    mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &lf));
    /* Some short tasks go in before the long one has started, some after. */
    for (int i = 0; i < 20; i++) {
      int x = i;
      mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f[i]));
      if (i == 10) {
        int64_t dl = mproc_now_ms() + 10000;
        while (atomic_load(&S->pid) == 0) {
          ck_assert(mproc_now_ms() < dl);
          sleep_ms(1);
        }
      }
    }
    /* Every short task finishes while the long one still runs. */
    for (int i = 0; i < 20; i++) {
      const void *d;
      size_t n;
      mproc_assert_ok(mproc_future_result(f[i], &d, &n, 10000));
      ck_assert_int_eq(*(const int *)d, i * i);
      mproc_future_free(f[i]);
    }
    ck_assert_int_eq(mproc_future_done(lf), 0);
    atomic_store(&S->release, 1);
    wait_done(lf);
    mproc_future_free(lf);
  }
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* ---- a stalled worker strands nothing ---------------------------------------- */

/* Submit n squares and expect every result within 15 s. */
static void squares_complete(mproc_pool *p, int n) {
  mproc_future *f[16];
  ck_assert_int_le(n, 16);
  for (int i = 0; i < n; i++) {
    int x = i;
    mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f[i]));
  }
  for (int i = 0; i < n; i++) {
    const void *d;
    size_t len;
    mproc_assert_ok(mproc_future_result(f[i], &d, &len, 15000));
    ck_assert_int_eq(*(const int *)d, i * i);
    mproc_future_free(f[i]);
  }
}

/* Runs one task, then waits (bounded) until the manager sleeps with no
 * deadline: the pool has been idle long enough that the next task must wake
 * it to be watched. */
static void wait_manager_untimed(mproc_pool *p) {
  squares_complete(p, 1);
  int64_t dl = mproc_now_ms() + 15000;
  while (!atomic_load(&p->mgr_untimed)) {
    ck_assert_msg(mproc_now_ms() < dl, "the idle manager never dropped its watch");
    sleep_ms(5);
  }
}

/* `long_idle`: the pool idles until its manager drops its watch first, so
 * the tasks that find the stopped worker are the first to wake it. */
static void stopped_worker_queue_moves(bool long_idle) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  if (long_idle)
    wait_manager_untimed(p);
  pid_t pids[2];
  ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
  kill(pids[0], SIGSTOP);
  /* Some tasks land in the stopped worker's ring; they move to the other. */
  squares_complete(p, 16);
  kill(pids[0], SIGCONT);
  /* Once it moves again it takes work again, and nothing ran twice. */
  squares_complete(p, 16);
  ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_stopped_worker_queue_moves) { stopped_worker_queue_moves(false); }
END_TEST

START_TEST(test_long_idle_pool_moves_stopped_workers_queue) { stopped_worker_queue_moves(true); }
END_TEST

static void stopped_only_worker_is_replaced(bool long_idle) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .task_timeout_ms = 300};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  if (long_idle)
    wait_manager_untimed(p);
  pid_t pid;
  ck_assert_int_eq(mproc_pool_worker_pids(p, &pid, 1), 1);
  kill(pid, SIGSTOP);
  /* No other worker: the stopped one is killed at the task timeout and its
   * replacement runs the queued tasks. */
  squares_complete(p, 4);
  pid_t now;
  ck_assert_int_eq(mproc_pool_worker_pids(p, &now, 1), 1);
  ck_assert_int_ne(now, pid);
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_stopped_only_worker_with_timeout_is_replaced) {
  stopped_only_worker_is_replaced(false);
}
END_TEST

START_TEST(test_long_idle_pool_replaces_stopped_only_worker) {
  stopped_only_worker_is_replaced(true);
}
END_TEST

START_TEST(test_stopped_running_task_times_out) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .task_timeout_ms = 300};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *lf;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &lf));
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&S->pid) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  kill(atomic_load(&S->pid), SIGSTOP);
  squares_complete(p, 3); /* queued behind it, run by the replacement */
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(lf, &d, &n, 15000), MPROC_ETIMEDOUT);
  mproc_future_free(lf);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* ---- a long-idle pool still watches what it is given ------------------------- */

START_TEST(test_long_idle_pool_times_out_hung_task) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .task_timeout_ms = 300};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  wait_manager_untimed(p);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 15000), MPROC_ETIMEDOUT);
  mproc_future_free(f);
  squares_complete(p, 2);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* Back-to-back round trips keep the manager's watch armed: a submit wakes it
 * only after an idle spell of MPROC__IDLE_WATCH_MS, not once per task. */
START_TEST(test_round_trips_do_not_wake_manager) {
  mproc_pool *p = make_pool(1);
  int64_t t0 = mproc_now_ms();
  for (int i = 0; i < 3000; i++)
    squares_complete(p, 1);
  int64_t elapsed = mproc_now_ms() - t0;
  pthread_mutex_lock(&p->mu);
  uint64_t kicks = p->idle_kicks;
  pthread_mutex_unlock(&p->mu);
  /* One for the first task, one per idle spell the loop could contain. */
  ck_assert_uint_le(kicks, 2 + (uint64_t)(elapsed / MPROC__IDLE_WATCH_MS));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* ---- a worker's group is killed only while the worker exists --------------- */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* A worker the kernel reaped already no longer holds its group's id: a
 * group of that id may be another program's, and must not be killed.  Here
 * a live group stands for the recycled id beside a reaped worker's pidfd. */
START_TEST(test_worker_group_kill_spares_recycled_id) {
  pid_t dead = fork();
  if (dead == 0)
    _exit(0);
  ck_assert_int_gt(dead, 0);
  int pidfd = (int)syscall(SYS_pidfd_open, dead, 0);
  ck_assert_int_ge(pidfd, 0);
  ck_assert_int_eq(waitpid(dead, NULL, 0), dead);
  pid_t other = fork();
  if (other == 0) {
    setpgid(0, 0);
    for (;;)
      pause();
  }
  ck_assert_int_gt(other, 0);
  setpgid(other, other); /* whichever runs first, the group exists after */
  mproc__kill_worker_group(other, pidfd);
  int status;
  ck_assert_int_eq(waitpid(other, &status, WNOHANG), 0); /* still running */
  kill(other, SIGKILL);
  ck_assert_int_eq(waitpid(other, &status, 0), other);
  close(pidfd);
}
END_TEST

/* ---- a chunk that dies blames the item it died in ------------------------------ */

enum { DIE_AT = 21, CHUNK = 8, NITEMS = 32 };

static int die_at_21(const void *in, void *out) {
  int x = *(const int *)in;
  if (x == DIE_AT)
    raise(SIGKILL);
  *(int *)out = x * 2;
  return 0;
}

static int hang_at_21(const void *in, void *out) {
  int x = *(const int *)in;
  while (x == DIE_AT)
    pause();
  *(int *)out = x * 2;
  return 0;
}

static void map_blames(mproc_map_fn fn, int code, int64_t task_timeout_ms) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .task_timeout_ms = task_timeout_ms};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int in[NITEMS], out[NITEMS];
  for (int i = 0; i < NITEMS; i++)
    in[i] = i;
  struct mproc_map_options mo = {.chunksize = CHUNK};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map(p, fn, in, NITEMS, sizeof(int), out, sizeof(int), &mo, &e, 30000),
                   code);
  ck_assert_int_eq(e.code, code);
  ck_assert_uint_eq(e.index, DIE_AT);
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_map_blames_the_item) {
  map_blames(die_at_21, MPROC_EWORKERDIED, 0);
  map_blames(hang_at_21, MPROC_ETIMEDOUT, 300);
}
END_TEST

static int gen_upto(void *ctx, void *item) {
  int *next = ctx;
  if (*next >= NITEMS)
    return 0;
  *(int *)item = (*next)++;
  return 1;
}

/* Items before the failed one keep their results, the failed one carries the
 * error, the rest of its chunk was not run (MPROC_ECANCELED), later chunks
 * run normally. */
static void imap_blames(mproc_map_fn fn, int code, int64_t task_timeout_ms) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .task_timeout_ms = task_timeout_ms};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int next = 0;
  mproc_imap *it;
  struct mproc_imap_options io = {.chunksize = CHUNK};
  mproc_assert_ok(mproc_pool_imap(p, fn, gen_upto, &next, sizeof(int), sizeof(int), &io, &it));
  for (int i = 0; i < NITEMS; i++) {
    int v = -1;
    size_t idx;
    struct mproc_task_error e;
    int r = mproc_imap_next(it, &v, &idx, &e, 30000);
    ck_assert_uint_eq(idx, (size_t)i);
    if (i == DIE_AT) {
      mproc_assert_err(r, code);
      ck_assert_uint_eq(e.index, DIE_AT);
    } else if (i > DIE_AT && i / CHUNK == DIE_AT / CHUNK) {
      mproc_assert_err(r, MPROC_ECANCELED);
    } else {
      mproc_assert_ok(r);
      ck_assert_int_eq(v, 2 * i);
    }
  }
  int v;
  mproc_assert_err(mproc_imap_next(it, &v, NULL, NULL, 30000), MPROC_EEOF);
  mproc_imap_free(it);
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_imap_blames_the_item) {
  imap_blames(die_at_21, MPROC_EWORKERDIED, 0);
  imap_blames(hang_at_21, MPROC_ETIMEDOUT, 300);
}
END_TEST

/* ---- exit after shutdown(wait=false) lets the work finish ---------------------- */

static int task_sleep_count(const void *arg, size_t len, mproc_task_ctx *ctx) {
  atomic_fetch_add(&S->running, 1);
  task_sleep(arg, len, ctx);
  atomic_fetch_add(&S->count, 1);
  return 0;
}

/* A child makes a pool of one worker, submits two tasks of 200 ms, shuts the
 * pool down without waiting (cancelling the queued one when asked) or not at
 * all, and calls exit(0).  Returns how many tasks ran to their end. */
static int tasks_finished_at_exit(bool shutdown, bool cancel_pending) {
  S = shared_new();
  pid_t c = fork();
  ck_assert_int_ge(c, 0);
  if (c == 0) {
    mproc_pool *p;
    struct mproc_pool_options o = {.workers = 1};
    if (mproc_pool_new(&p, &o) != 0)
      _exit(10);
    int ms = 200;
    static mproc_future *fs[2]; /* reachable at exit: no leak reported */
    for (int i = 0; i < 2; i++)
      if (mproc_pool_submit(p, task_sleep_count, &ms, sizeof ms, &fs[i]) != 0)
        _exit(11);
    int64_t dl = mproc_now_ms() + 10000;
    while (atomic_load(&S->running) == 0 && mproc_now_ms() < dl)
      sleep_ms(1); /* the first task has started: it is not cancellable */
    if (shutdown && mproc_pool_shutdown(p, false, cancel_pending) != 0)
      _exit(12);
    exit(0);
  }
  int st;
  ck_assert_int_eq(waitpid(c, &st, 0), c);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  int n = atomic_load(&S->count);
  shared_free(S);
  return n;
}

START_TEST(test_exit_after_shutdown_nowait_finishes_work) {
  ck_assert_int_eq(tasks_finished_at_exit(true, false), 2);
  ck_assert_int_eq(tasks_finished_at_exit(true, true), 1);
  /* An open pool at exit is terminated: its running task is killed. */
  ck_assert_int_eq(tasks_finished_at_exit(false, false), 0);
}
END_TEST

/* ---- mproc_imap_free never frees what a worker or the pool may still write --- */

static int hang_first(const void *in, void *out) {
  (void)in, (void)out;
  atomic_store(&S->pid, (int)getpid());
  while (atomic_load(&S->pid) != 0) /* forever: killed by the pool */
    pause();
  return 0;
}

static int gen_one(void *ctx, void *item) {
  int *left = ctx;
  if (*left == 0)
    return 0;
  (*left)--;
  *(int *)item = 1;
  return 1;
}

/* Returns once S->max_running is set. */
static int task_gate(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  while (!atomic_load(&S->max_running))
    sleep_ms(1);
  return 0;
}

/* Holds the manager thread until S->release. */
static void cb_block(mproc_future *f, void *ud) {
  (void)f, (void)ud;
  atomic_store(&S->grandchild, 1);
  while (!atomic_load(&S->release))
    sleep_ms(1);
}

START_TEST(test_imap_free_with_manager_held_up) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int left = 1, v;
  mproc_imap *it;
  mproc_assert_ok(
      mproc_pool_imap(p, hang_first, gen_one, &left, sizeof(int), sizeof(int), NULL, &it));
  mproc_assert_err(mproc_imap_next(it, &v, NULL, NULL, 0), MPROC_ETIMEDOUT);
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&S->pid) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  /* The manager runs a callback that does not return for a while: the
   * killed chunk's worker cannot be reaped, so the chunk stays in flight. */
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_gate, NULL, 0, &f));
  mproc_assert_ok(mproc_future_add_done_callback(f, cb_block, NULL));
  atomic_store(&S->max_running, 1); /* the task ends after the callback is in */
  while (atomic_load(&S->grandchild) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  int64_t saved = mproc__imap_free_wait_ms;
  mproc__imap_free_wait_ms = 100;
  mproc_imap_free(it); /* gives up waiting; the pool frees it later */
  mproc__imap_free_wait_ms = saved;
  atomic_store(&S->release, 1);
  mproc_future_free(f);
  /* The pool goes on; its free completes (and releases) the chunk. */
  int x = 4;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  wait_done(f);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* ---- descriptors dropped at the fd limit are reported ------------------------ */

static struct rlimit saved_nofile; /* in the worker's memory */

/* Leaves the worker able to open exactly one more descriptor. */
static int task_limit_fds(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l, (void)ctx;
  getrlimit(RLIMIT_NOFILE, &saved_nofile);
  int probe = dup(0);
  close(probe);
  struct rlimit low = saved_nofile;
  low.rlim_cur = (rlim_t)probe + 1;
  return setrlimit(RLIMIT_NOFILE, &low) == 0 ? 0 : 1;
}

static int task_restore_fds(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l, (void)ctx;
  return setrlimit(RLIMIT_NOFILE, &saved_nofile) == 0 ? 0 : 1;
}

static int task_count_fds(const void *a, size_t l, mproc_task_ctx *ctx) {
  (void)a, (void)l;
  const int *fds;
  int n = mproc_task_fds(ctx, &fds);
  return mproc_task_return(ctx, &n, sizeof n);
}

START_TEST(test_fds_dropped_at_limit_fail_the_task) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int fds[3];
  for (int i = 0; i < 3; i++)
    ck_assert_int_ge(fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
  run_ok(p, task_limit_fds);
  /* Three descriptors, room for one: the task must not run with one. */
  mproc_future *f;
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = 3};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_count_fds, NULL, 0, &so, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETASK);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.task_code, -EMFILE);
  mproc_future_free(f);
  run_ok(p, task_restore_fds);
  /* With room again, all three arrive. */
  mproc_assert_ok(mproc_pool_submit_ex(p, task_count_fds, NULL, 0, &so, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 3);
  mproc_future_free(f);
  for (int i = 0; i < 3; i++)
    close(fds[i]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* ---- descriptors stay in order across a worker's death ------------------- */

/* A worker that dies with argument descriptors still unread in its socket
 * leaves ECONNRESET pending on the pool's end, reported once before the
 * result descriptors it sent earlier.  Taking that for a failed receive
 * shifted every later result onto the wrong task. */
START_TEST(test_recv_fd_after_peer_died_with_unread) {
  for (int many = 0; many < 2; many++) {
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int fd = -1;
    mproc_assert_ok(mproc__memfd_create("fdorder", 4096, &fd));
    mproc_assert_ok(mproc__send_fd(sv[1], fd)); /* the "result", sent first */
    mproc_assert_ok(mproc__send_fd(sv[0], fd)); /* an "argument" never read */
    close(sv[1]);                               /* the peer dies */
    int got = -1;
    if (many) {
      size_t k = 0;
      mproc_assert_ok(mproc__recv_fds(sv[0], &got, 1, &k));
      ck_assert_uint_eq(k, 1);
    } else {
      mproc_assert_ok(mproc__recv_fd(sv[0], &got));
    }
    struct stat a, b;
    ck_assert_int_eq(fstat(fd, &a), 0);
    ck_assert_int_eq(fstat(got, &b), 0);
    ck_assert(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    mproc__close(got);
    /* Then the end of the stream, not a stale descriptor. */
    mproc_assert_err(mproc__recv_fd(sv[0], &got), -EIO);
    mproc__close(fd);
    close(sv[0]);
  }
}
END_TEST

enum { FDORDER_TASKS = 40, FDORDER_DIES = 25, FDORDER_ARG = 1024, FDORDER_RES = 300 };

/* Checks its (descriptor-borne) argument is whole, dies on FDORDER_DIES,
 * else returns its first FDORDER_RES ints (a descriptor-borne result). */
static int task_echo_big(const void *arg, size_t len, mproc_task_ctx *ctx) {
  const int *a = arg;
  if (len != FDORDER_ARG * sizeof(int))
    return 98;
  for (size_t k = 0; k < FDORDER_ARG; k++)
    if (a[k] != a[0])
      return 99;
  if (a[0] == FDORDER_DIES)
    _exit(3);
  return mproc_task_return(ctx, a, FDORDER_RES * sizeof(int));
}

/* Large arguments and results on two workers, one of which dies mid-run:
 * every other task gets its own result.  The death races the collection
 * of results, so the scenario is repeated. */
START_TEST(test_big_results_stay_matched_after_death) {
  static int buf[FDORDER_TASKS][FDORDER_ARG];
  for (int i = 0; i < FDORDER_TASKS; i++)
    for (int k = 0; k < FDORDER_ARG; k++)
      buf[i][k] = i;
  for (int round = 0; round < 12; round++) {
    mproc_pool *p;
    struct mproc_pool_options po = {.workers = 2};
    mproc_assert_ok(mproc_pool_new(&p, &po));
    mproc_future *f[FDORDER_TASKS];
    for (int i = 0; i < FDORDER_TASKS; i++)
      mproc_assert_ok(mproc_pool_submit(p, task_echo_big, buf[i], sizeof buf[i], &f[i]));
    for (int i = 0; i < FDORDER_TASKS; i++) {
      const void *d;
      size_t n;
      int r = mproc_future_result(f[i], &d, &n, 30000);
      if (i == FDORDER_DIES) {
        mproc_assert_err(r, MPROC_EWORKERDIED);
      } else {
        ck_assert_msg(r == 0, "round %d task %d: %s", round, i, mproc_strerror(r));
        ck_assert_uint_eq(n, FDORDER_RES * sizeof(int));
        for (int k = 0; k < FDORDER_RES; k++)
          ck_assert_msg(((const int *)d)[k] == i, "round %d: task %d got task %d's result", round,
                        i, ((const int *)d)[k]);
      }
      mproc_future_free(f[i]);
    }
    mproc_assert_ok(mproc_pool_free(p));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-faults");
  TCase *tc = mproc_test_tcase(s, "faults", 60);
  tcase_add_test(tc, test_failed_result_is_not_success);
  tcase_add_test(tc, test_no_task_waits_behind_long_task);
  tcase_add_test(tc, test_fds_dropped_at_limit_fail_the_task);
  tcase_add_test(tc, test_imap_free_with_manager_held_up);
  tcase_add_test(tc, test_exit_after_shutdown_nowait_finishes_work);
  tcase_add_test(tc, test_map_blames_the_item);
  tcase_add_test(tc, test_imap_blames_the_item);
  tcase_add_test(tc, test_stopped_worker_queue_moves);
  tcase_add_test(tc, test_stopped_only_worker_with_timeout_is_replaced);
  tcase_add_test(tc, test_stopped_running_task_times_out);
  tcase_add_test(tc, test_long_idle_pool_moves_stopped_workers_queue);
  tcase_add_test(tc, test_long_idle_pool_replaces_stopped_only_worker);
  tcase_add_test(tc, test_long_idle_pool_times_out_hung_task);
  tcase_add_test(tc, test_round_trips_do_not_wake_manager);
  tcase_add_test(tc, test_worker_group_kill_spares_recycled_id);
  tcase_add_test(tc, test_task_runs_after_fork_outage);
  tcase_add_test(tc, test_no_worker_fails_queued_tasks);
  tcase_add_test(tc, test_new_fails_cleanly_when_fork_fails);
  tcase_add_test(tc, test_initializer_crash_breaks_pool);
  tcase_add_test(tc, test_initializer_exit_breaks_pool);
  tcase_add_test(tc, test_initializer_deadline);
  tcase_add_test(tc, test_recv_fd_after_peer_died_with_unread);
  tcase_add_test(tc, test_big_results_stay_matched_after_death);
  return mproc_test_run(s);
}
