/* Event-loop integration, statistics and fd passing of the pool.
 * ctest-labels: threads */
#include "pool-helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

static pid_t tid(void) { return (pid_t)syscall(SYS_gettid); }

struct seen {
  int ok, failed;
  pid_t thread;
  int values;
};

static void on_ok(mproc_future *f, void *ud) {
  struct seen *s = ud;
  const void *d;
  size_t n;
  ck_assert_int_eq(mproc_future_result(f, &d, &n, 0), 0);
  s->values += *(const int *)d;
  s->ok++;
  s->thread = tid();
}

static void on_err(mproc_future *f, void *ud) {
  (void)f;
  struct seen *s = ud;
  s->failed++;
  s->thread = tid();
}

static int task_fail(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  return mproc_task_fail(ctx, 7, "failed on purpose");
}

static int el_double(const void *in, void *out) {
  *(int *)out = 2 * *(const int *)in;
  return 0;
}

static bool readable(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

START_TEST(test_loop_runs_callbacks_in_caller) {
  struct mproc_pool_options o = {.workers = 2, .flags = MPROC_POOL_LOOP};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int fd = mproc_pool_loop_fd(p);
  ck_assert_int_ge(fd, 0);
  ck_assert(!readable(fd, 0));
  struct seen s = {0};
  mproc_future *fs[10];
  for (int i = 0; i < 10; i++) {
    int x = i;
    mproc_assert_ok(mproc_pool_apply_async(p, i == 9 ? task_fail : task_square, &x, sizeof x, on_ok,
                                           on_err, &s, &fs[i]));
  }
  int handled = 0;
  while (handled < 10) {
    ck_assert_msg(readable(fd, 30000), "loop fd never became readable (%d handled)", handled);
    int n = mproc_pool_loop_run(p, 0, NULL);
    ck_assert_int_ge(n, 0);
    handled += n;
  }
  ck_assert_int_eq(handled, 10);
  ck_assert_int_eq(s.ok, 9);
  ck_assert_int_eq(s.failed, 1);
  ck_assert_int_eq(s.values, 0 + 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64);
  ck_assert_int_eq(s.thread, tid());
  ck_assert(!readable(fd, 0)); /* nothing left: not readable */
  mproc_assert_ok(mproc_pool_loop_run(p, 0, NULL));
  for (int i = 0; i < 10; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_loop_level_triggered_with_epoll) {
  struct mproc_pool_options o = {.workers = 2, .flags = MPROC_POOL_LOOP};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  struct seen s = {0};
  mproc_future *fs[3];
  for (int i = 0; i < 3; i++) {
    int x = 2;
    mproc_assert_ok(mproc_pool_apply_async(p, task_square, &x, sizeof x, on_ok, NULL, &s, &fs[i]));
  }
  for (int i = 0; i < 3; i++)
    wait_done(fs[i]);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ck_assert_int_ge(ep, 0);
  struct epoll_event ev = {.events = EPOLLIN};
  ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, mproc_pool_loop_fd(p), &ev), 0);
  /* One at a time: the fd stays ready until the last one is collected. */
  for (int i = 0; i < 3; i++) {
    struct epoll_event out;
    ck_assert_int_eq(epoll_wait(ep, &out, 1, 30000), 1);
    ck_assert_int_eq(mproc_pool_loop_run(p, 1, NULL), 1);
  }
  struct epoll_event out;
  ck_assert_int_eq(epoll_wait(ep, &out, 1, 0), 0);
  ck_assert_int_eq(s.ok, 3);
  close(ep);
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static void *waker(void *arg) {
  mproc_assert_ok(mproc_pool_loop_wake(arg));
  return NULL;
}

START_TEST(test_loop_wake_from_thread) {
  struct mproc_pool_options o = {.workers = 1, .flags = MPROC_POOL_LOOP};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int fd = mproc_pool_loop_fd(p);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, waker, p), 0);
  ck_assert(readable(fd, 30000));
  pthread_join(t, NULL);
  bool woken = false;
  mproc_assert_ok(mproc_pool_loop_run(p, 0, &woken));
  ck_assert(woken);
  ck_assert(!readable(fd, 0));
  mproc_assert_ok(mproc_pool_loop_run(p, 0, &woken));
  ck_assert(!woken);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static void destroy_in_cb(mproc_future *f, void *ud) {
  mproc_assert_err(mproc_pool_free(ud), MPROC_ESTATE);
  mproc_future_free(f);
}

START_TEST(test_loop_destroy_runs_leftovers) {
  S = shared_new(); /* before the workers fork: they inherit it */
  struct mproc_pool_options o = {.workers = 1, .flags = MPROC_POOL_LOOP};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  struct seen s = {0};
  mproc_future *f, *g;
  int x = 3;
  mproc_assert_ok(mproc_pool_apply_async(p, task_square, &x, sizeof x, on_ok, NULL, &s, &f));
  /* g cannot finish before its callback is attached (it would then run at
   * once, in this thread, and really free the pool). */
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &g));
  mproc_assert_ok(mproc_future_add_done_callback(g, destroy_in_cb, p));
  atomic_store(&S->release, 1);
  wait_done(f);
  wait_done(g);
  /* g's callback runs in the loop and may not free the pool from there. */
  while (mproc_pool_loop_run(p, 0, NULL) == 0)
    ck_assert(readable(mproc_pool_loop_fd(p), 30000));
  mproc_future_free(f);
  /* Submitted, never collected by a loop: mproc_pool_free runs the callback. */
  s.ok = 0;
  mproc_assert_ok(mproc_pool_apply_async(p, task_square, &x, sizeof x, on_ok, NULL, &s, &f));
  wait_done(f);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_eq(s.ok, 1);
  ck_assert_int_eq(s.thread, tid());
  shared_free(S);
}
END_TEST

struct chain {
  mproc_pool *pool;
  int steps;
  pid_t thread;
  int last;
};

/* Each completion submits the next step from inside the loop. */
static void chain_step(mproc_future *f, void *ud) {
  struct chain *c = ud;
  const void *d;
  size_t n;
  ck_assert_int_eq(mproc_future_result(f, &d, &n, 0), 0);
  c->last = *(const int *)d;
  c->thread = tid();
  mproc_future_free(f);
  if (++c->steps < 5) {
    int x = c->steps;
    mproc_future *g;
    mproc_assert_ok(
        mproc_pool_apply_async(c->pool, task_square, &x, sizeof x, chain_step, NULL, c, &g));
  }
}

static void map_done(mproc_future *f, void *ud) {
  *(int *)ud = mproc_future_state(f);
  mproc_future_free(f);
}

START_TEST(test_loop_chained_submits_and_map_async) {
  struct mproc_pool_options o = {.workers = 2, .flags = MPROC_POOL_LOOP};
  struct chain c = {0};
  mproc_assert_ok(mproc_pool_new(&c.pool, &o));
  int x = 0;
  mproc_future *f;
  mproc_assert_ok(
      mproc_pool_apply_async(c.pool, task_square, &x, sizeof x, chain_step, NULL, &c, &f));
  int in[100], out[100], map_state = -1;
  for (int i = 0; i < 100; i++)
    in[i] = i;
  mproc_future *m;
  mproc_assert_ok(
      mproc_pool_map_async(c.pool, el_double, in, 100, sizeof in[0], out, sizeof out[0], NULL, &m));
  mproc_assert_ok(mproc_future_add_done_callback(m, map_done, &map_state));
  int fd = mproc_pool_loop_fd(c.pool);
  while (c.steps < 5 || map_state < 0) {
    ck_assert_msg(readable(fd, 30000), "stuck after %d steps", c.steps);
    ck_assert_int_ge(mproc_pool_loop_run(c.pool, 0, NULL), 0);
  }
  ck_assert_int_eq(c.last, 16);
  ck_assert_int_eq(c.thread, tid());
  ck_assert_int_eq(map_state, MPROC_FUTURE_DONE);
  ck_assert_int_eq(out[99], 198);
  mproc_assert_ok(mproc_pool_free(c.pool));
}
END_TEST

START_TEST(test_loop_errors) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_assert_err(mproc_pool_loop_fd(p), MPROC_ESTATE);
  mproc_assert_err(mproc_pool_loop_run(p, 0, NULL), MPROC_ESTATE);
  mproc_assert_err(mproc_pool_loop_wake(p), MPROC_ESTATE);
  mproc_assert_err(mproc_pool_loop_fd(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_loop_run(NULL, 0, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_loop_wake(NULL), MPROC_EINVAL);
  /* Without the flag callbacks still run on the manager thread. */
  struct seen s = {0};
  mproc_future *f;
  int x = 1;
  mproc_assert_ok(mproc_pool_apply_async(p, task_square, &x, sizeof x, on_ok, NULL, &s, &f));
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_ok(mproc_pool_join(p, 30000));
  ck_assert_int_eq(s.ok, 1);
  ck_assert_int_ne(s.thread, tid());
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  o.flags = 1u << 20;
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
}
END_TEST

/* ---- statistics ------------------------------------------------------------ */

static int task_touch(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  (void)ctx;
  size_t n = *(const size_t *)arg;
  char *m = malloc(n);
  if (m == NULL)
    return 1;
  memset(m, 1, n);
  int r = m[n / 2] == 1 ? 0 : 1;
  free(m);
  return r;
}

START_TEST(test_stats_counts_and_workers) {
  S = shared_new();
  struct mproc_pool_options o = {.workers = 2};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f;
  for (int i = 0; i < 6; i++) {
    size_t n = 8u << 20;
    mproc_assert_ok(mproc_pool_submit(p, task_touch, &n, sizeof n, &f));
    wait_done(f);
    mproc_future_free(f);
  }
  int x = 0;
  mproc_assert_ok(mproc_pool_submit(p, task_fail, &x, sizeof x, &f));
  wait_done(f);
  mproc_future_free(f);
  /* A blocked task: the worker running it is busy with its id. */
  mproc_future *b;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &b));
  while (atomic_load(&S->pid) == 0)
    sleep_ms(1);
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws[4];
  int64_t dl = mproc_now_ms() + 30000;
  int k;
  for (;;) {
    k = mproc_pool_stats(p, &st, ws, 4);
    ck_assert_int_eq(k, 2);
    if (st.running == 1 || mproc_now_ms() > dl)
      break;
    sleep_ms(1);
  }
  ck_assert_int_eq(st.workers, 2);
  ck_assert_uint_eq(st.running, 1);
  ck_assert_uint_eq(st.queued, 0);
  ck_assert_uint_eq(st.done, 6);
  ck_assert_uint_eq(st.failed, 1);
  ck_assert_uint_eq(st.cancelled, 0);
  ck_assert(st.throughput_avg > 0);
  ck_assert_int_ge(st.uptime_ms, 0);
  pid_t pids[2];
  ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
  int busy = 0;
  uint64_t done = 0, failed = 0;
  for (int i = 0; i < 2; i++) {
    ck_assert(ws[i].pid == pids[0] || ws[i].pid == pids[1]);
    done += ws[i].tasks_done;
    failed += ws[i].tasks_failed;
    ck_assert_uint_eq(ws[i].replaced, 0);
    ck_assert(ws[i].rss > 0);
    ck_assert(ws[i].peak_rss >= ws[i].rss);
    ck_assert(ws[i].cpu_user_s >= 0 && ws[i].cpu_system_s >= 0);
    if (ws[i].state == MPROC_WORKER_BUSY) {
      busy++;
      ck_assert_int_eq(ws[i].pid, atomic_load(&S->pid));
      ck_assert_uint_eq(ws[i].task_id, 8);
      ck_assert_int_ge(ws[i].task_ms, 0);
    } else {
      ck_assert_int_eq(ws[i].state, MPROC_WORKER_IDLE);
      ck_assert_uint_eq(ws[i].task_id, 0);
    }
  }
  ck_assert_int_eq(busy, 1);
  ck_assert_uint_eq(done, 6);
  ck_assert_uint_eq(failed, 1);
  /* The workers that touched 8 MiB remember it as their peak. */
  ck_assert(ws[0].peak_rss >= (8u << 20) || ws[1].peak_rss >= (8u << 20));
  /* Kill the busy worker: the slot counts a replacement and a failure. */
  kill(atomic_load(&S->pid), SIGKILL);
  wait_done(b);
  mproc_future_free(b);
  ck_assert_int_eq(mproc_pool_stats(p, &st, ws, 1), 1);
  ck_assert_uint_eq(st.failed, 2);
  mproc_assert_ok(mproc_pool_stats(p, NULL, NULL, 0));
  uint64_t replaced = 0;
  ck_assert_int_eq(mproc_pool_stats(p, NULL, ws, 2), 2);
  replaced = ws[0].replaced + ws[1].replaced;
  ck_assert_uint_eq(replaced, 1);
  mproc_assert_err(mproc_pool_stats(NULL, &st, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_stats(p, &st, NULL, 2), MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int task_retry_once(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  (void)ctx;
  if (atomic_fetch_add(&S->count, 1) == 0)
    raise(SIGKILL);
  return 0;
}

START_TEST(test_stats_retried_and_cancelled) {
  S = shared_new();
  struct mproc_pool_options o = {.workers = 1, .retries = 1};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f, *b, *q;
  mproc_assert_ok(mproc_pool_submit(p, task_retry_once, NULL, 0, &f));
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &b));
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &q));
  struct mproc_pool_stats st;
  mproc_assert_ok(mproc_pool_stats(p, &st, NULL, 0));
  ck_assert_uint_eq(st.retried, 1);
  ck_assert_uint_eq(st.running + st.queued, 2);
  mproc_assert_ok(mproc_future_cancel(q));
  wait_done(q);
  atomic_store(&S->release, 1);
  wait_done(b);
  mproc_assert_ok(mproc_pool_stats(p, &st, NULL, 0));
  ck_assert_uint_eq(st.cancelled, 1);
  ck_assert_uint_eq(st.done, 2);
  ck_assert_uint_eq(st.running + st.queued, 0);
  mproc_future_free(b);
  mproc_future_free(q);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int init_wait(void *arg, mproc_task_ctx *ctx) {
  (void)arg;
  (void)ctx;
  atomic_fetch_add(&S->count, 1);
  while (!atomic_load(&S->release))
    sleep_ms(1);
  return 0;
}

START_TEST(test_stats_starting_then_idle) {
  S = shared_new();
  struct mproc_pool_options o = {.workers = 2, .initializer = init_wait};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  while (atomic_load(&S->count) < 2)
    sleep_ms(1);
  struct mproc_worker_stats ws[2];
  ck_assert_int_eq(mproc_pool_stats(p, NULL, ws, 2), 2);
  ck_assert_int_eq(ws[0].state, MPROC_WORKER_STARTING);
  ck_assert_int_eq(ws[1].state, MPROC_WORKER_STARTING);
  atomic_store(&S->release, 1);
  int x = 4;
  void *res;
  size_t n;
  mproc_assert_ok(mproc_pool_apply(p, task_square, &x, sizeof x, &res, &n, NULL, 30000));
  free(res);
  int64_t dl = mproc_now_ms() + 30000;
  for (;;) {
    ck_assert_int_eq(mproc_pool_stats(p, NULL, ws, 2), 2);
    bool idle = ws[0].state == MPROC_WORKER_IDLE && ws[1].state == MPROC_WORKER_IDLE;
    if (idle || mproc_now_ms() > dl)
      break;
    sleep_ms(1);
  }
  ck_assert_int_eq(ws[0].state, MPROC_WORKER_IDLE);
  ck_assert_int_eq(ws[1].state, MPROC_WORKER_IDLE);
  /* After terminate (before mproc_pool_free) the slots report no process. */
  mproc_assert_ok(mproc_pool_terminate(p));
  ck_assert_int_eq(mproc_pool_stats(p, NULL, ws, 2), 2);
  ck_assert_int_eq(ws[0].state, MPROC_WORKER_NONE);
  ck_assert_int_eq(ws[0].pid, 0);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* ---- fd passing ------------------------------------------------------------- */

static int task_write_fds(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  const int *fds;
  int n = mproc_task_fds(ctx, &fds);
  for (int i = 0; i < n; i++) {
    char c = (char)('a' + i);
    if (write(fds[i], &c, 1) != 1)
      return 1;
  }
  return mproc_task_return(ctx, &n, sizeof n);
}

START_TEST(test_fds_travel_with_task) {
  struct mproc_pool_options o = {.workers = 2};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int a[2], b[2];
  ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(b, O_CLOEXEC), 0);
  int fds[2] = {a[1], b[1]};
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = 2};
  /* A large argument travels as an fd too: both kinds in one task. */
  static char big[100000];
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit_ex(p, task_write_fds, big, sizeof big, &so, &f));
  close(a[1]); /* the pool holds its own duplicates */
  close(b[1]);
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 2);
  mproc_future_free(f);
  char c;
  ck_assert_int_eq(read(a[0], &c, 1), 1);
  ck_assert_int_eq(c, 'a');
  ck_assert_int_eq(read(b[0], &c, 1), 1);
  ck_assert_int_eq(c, 'b');
  /* Once the task is final every copy is closed: the pipes read EOF. */
  ck_assert_int_eq(read(a[0], &c, 1), 0);
  ck_assert_int_eq(read(b[0], &c, 1), 0);
  /* No fds: the getter reports none. */
  mproc_assert_ok(mproc_pool_submit(p, task_write_fds, NULL, 0, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 0);
  mproc_future_free(f);
  /* Errors. */
  int many[MPROC_TASK_MAX_FDS + 1] = {0};
  so.fds = many;
  so.nfds = MPROC_TASK_MAX_FDS + 1;
  mproc_assert_err(mproc_pool_submit_ex(p, task_write_fds, NULL, 0, &so, &f), MPROC_EINVAL);
  so.fds = NULL;
  so.nfds = 1;
  mproc_assert_err(mproc_pool_submit_ex(p, task_write_fds, NULL, 0, &so, &f), MPROC_EINVAL);
  int bad = a[1]; /* closed above */
  so.fds = &bad;
  mproc_assert_err(mproc_pool_submit_ex(p, task_write_fds, NULL, 0, &so, &f), MPROC_EINVAL);
  mproc_assert_err(mproc_task_fds(NULL, NULL), MPROC_EINVAL);
  close(a[0]);
  close(b[0]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Cancelled before it ran, or queued behind a worker that died: the fds are
 * consumed in order and never leak into the next task. */
START_TEST(test_fds_revoked_and_requeued) {
  S = shared_new();
  struct mproc_pool_options o = {.workers = 1};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *b, *q, *r;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &b));
  int a[2];
  ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
  struct mproc_submit_options so = {.retries = -1, .fds = &a[1], .nfds = 1};
  /* q also carries a large argument: its memfd and the fds share one message. */
  static char big[100000];
  mproc_assert_ok(mproc_pool_submit_ex(p, task_write_fds, big, sizeof big, &so, &q));
  mproc_assert_ok(mproc_pool_submit_ex(p, task_write_fds, big, sizeof big, &so, &r));
  close(a[1]);
  mproc_assert_ok(mproc_future_cancel(q));
  wait_done(q);
  while (atomic_load(&S->pid) == 0)
    sleep_ms(1);
  kill(atomic_load(&S->pid), SIGKILL); /* r goes back to the queue */
  wait_done(b);
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(r, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 1);
  mproc_future_free(b);
  mproc_future_free(q);
  mproc_future_free(r);
  char c;
  ck_assert_int_eq(read(a[0], &c, 1), 1);
  ck_assert_int_eq(read(a[0], &c, 1), 0);
  close(a[0]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-loop");
  TCase *tc = mproc_test_tcase(s, "loop", 60);
  tcase_add_test(tc, test_loop_runs_callbacks_in_caller);
  tcase_add_test(tc, test_loop_level_triggered_with_epoll);
  tcase_add_test(tc, test_loop_wake_from_thread);
  tcase_add_test(tc, test_loop_destroy_runs_leftovers);
  tcase_add_test(tc, test_loop_chained_submits_and_map_async);
  tcase_add_test(tc, test_loop_errors);
  tc = mproc_test_tcase(s, "stats", 60);
  tcase_add_test(tc, test_stats_counts_and_workers);
  tcase_add_test(tc, test_stats_retried_and_cancelled);
  tcase_add_test(tc, test_stats_starting_then_idle);
  tc = mproc_test_tcase(s, "fds", 60);
  tcase_add_test(tc, test_fds_travel_with_task);
  tcase_add_test(tc, test_fds_revoked_and_requeued);
  return mproc_test_run(s);
}
