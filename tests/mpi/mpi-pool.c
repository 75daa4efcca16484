/* The pool API over worker ranks: mpi-pool CASE, run by run-case.sh under
 * `mpiexec -n 3` (rank 0 + 2 worker ranks).  Only the public API: the
 * program calls mproc_mpi_init and then uses mproc_pool_* with the
 * transport option "mpi", as a user would.
 *   pool          every pool feature over ranks (calls, futures, callbacks,
 *                 as_completed, map, starmap, map_buf, imap, imap_unordered,
 *                 the loop fd, stats, progress) and the refusals
 *   pool-init     initializers (argument as bytes, failure breaks the pool)
 *                 and a pool's workers shared out over the ranks
 *   pool-segv     a task crashes on its rank: EWORKERDIED naming the rank
 *                 and its host; the rank carries on
 *   pool-timeout  a task overruns its timeout on its rank; the rank carries on
 *   pool-unresolvable  a task function in a plugin loaded on rank 0 only
 *   pool-atexit   exit with a pool still running a task: a clean end
 *   pool-killrank a task SIGKILLs its rank: the job ends (run-case.sh checks
 *                 the exit status and the time)
 *   pool-local    without mpiexec: "mpi" pools run on local workers
 *   pool-single   the program initialised MPI without thread support:
 *                 "mpi" pools stay local, the worker ranks still end cleanly */
#include <mproc.h>
#include <mproc/mpi.h>
#include <mpi.h>

#include "mpi-test.h"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- task and element functions ----------------------------------------- */

/* The pid of the process that ran it, and its parent's (the rank). */
/* triple over a run of elements (mproc_map_range_fn). */
static int triple_run(const void *in, void *out, size_t n, size_t *failed) {
  for (size_t i = 0; i < n; i++) {
    int r = triple((const int32_t *)in + i, (int64_t *)out + i);
    if (r != 0) {
      *failed = i;
      return r;
    }
  }
  return 0;
}

static int where_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  int64_t r[2] = {getpid(), getppid()};
  return mproc_task_return(ctx, r, sizeof r);
}

static int mul_add(const void *const *args, void *out) {
  int32_t a, b;
  int64_t c;
  memcpy(&a, args[0], sizeof a);
  memcpy(&b, args[1], sizeof b);
  memcpy(&c, args[2], sizeof c);
  if (a == -1)
    return 9;
  int64_t r = (int64_t)a * b + c;
  memcpy(out, &r, sizeof r);
  return 0;
}

/* map_buf: each item's bytes reversed. */
static int reverse(const void *in, size_t len, mproc_item_ctx *ctx) {
  char buf[64];
  if (len > sizeof buf)
    return mproc_item_fail(ctx, 1, "item too long");
  for (size_t i = 0; i < len; i++)
    buf[i] = ((const char *)in)[len - 1 - i];
  return mproc_item_return(ctx, buf, len);
}

struct gen {
  int32_t next, n;
};
static int gen_ints(void *ctx, void *item) {
  struct gen *g = ctx;
  if (g->next >= g->n)
    return 0;
  int32_t v = g->next++;
  memcpy(item, &v, sizeof v);
  return 1;
}

/* ---- helpers -------------------------------------------------------------- */

/* A finished future's outcome code. */
static int code_of(mproc_future *f) {
  const void *data;
  size_t len;
  return mproc_future_result(f, &data, &len, 0);
}

static mproc_pool *mpi_pool(unsigned flags) {
  mproc_pool *pool;
  struct mproc_pool_options o = {.transport = "mpi", .flags = flags};
  CHECK_ERR(mproc_pool_new(&pool, &o), 0);
  return pool;
}

static int64_t square_on(mproc_pool *pool, int64_t v) {
  int64_t *res = NULL;
  size_t len = 0;
  struct mproc_task_error err;
  int rc =
      mproc_pool_apply(pool, square_task, &v, sizeof v, (void **)&res, &len, &err, scaled(60000));
  CHECK(rc == 0 && len == sizeof *res, "apply: %s: %s", mproc_err_name(rc), err.message);
  int64_t r = *res;
  free(res);
  return r;
}

/* The message of a failure on a rank starts "rank N on HOST: ". */
static void expect_rank_prefix(const struct mproc_task_error *err) {
  char host[64] = "";
  gethostname(host, sizeof host - 1);
  int rank = 0;
  char at[80];
  snprintf(at, sizeof at, " on %s: ", host);
  CHECK(sscanf(err->message, "rank %d on ", &rank) == 1 && rank >= 1 &&
            rank <= mproc_mpi_worker_ranks() && strstr(err->message, at) != NULL,
        "message '%s' does not name a worker rank and host %s", err->message, host);
}

/* ---- the cases -------------------------------------------------------------- */

static int n_callbacks;
static void count_cb(mproc_future *f, void *ud) {
  (void)f, (void)ud;
  n_callbacks++;
}

static void case_pool(void) {
  CHECK(mproc_mpi_worker_ranks() == 2, "worker ranks %d", mproc_mpi_worker_ranks());
  mproc_pool *pool = mpi_pool(MPROC_POOL_LOOP);
  /* One slot per worker rank, whatever the default worker count. */
  CHECK(mproc_pool_workers(pool) == 2, "workers %d", mproc_pool_workers(pool));
  CHECK(square_on(pool, 12) == 144, "apply");
  /* The task ran on a worker rank, in a local worker of that rank: neither
   * is this process. */
  int64_t *where;
  size_t len;
  CHECK_ERR(mproc_pool_apply(pool, where_task, NULL, 0, (void **)&where, &len, NULL, scaled(60000)),
            0);
  CHECK(where[0] != getpid() && where[1] != getpid(), "ran in this process");
  free(where);

  /* Futures, callbacks (run by the loop fd's owner), as_completed. */
  enum { N = 64 };
  mproc_future *fs[N];
  for (int i = 0; i < N; i++) {
    int64_t v = i;
    CHECK_ERR(mproc_pool_submit(pool, square_task, &v, sizeof v, &fs[i]), 0);
    CHECK_ERR(mproc_future_add_done_callback(fs[i], count_cb, NULL), 0);
  }
  mproc_as_completed *ac;
  CHECK_ERR(mproc_as_completed_new(&ac, fs, N), 0);
  int seen = 0;
  mproc_future *f;
  while (mproc_as_completed_next(ac, &f, scaled(60000)) == 0) {
    CHECK_ERR(code_of(f), 0);
    seen++;
  }
  CHECK(seen == N, "as_completed yielded %d", seen);
  mproc_as_completed_free(ac);
  for (int i = 0; i < N; i++) {
    const void *data;
    CHECK_ERR(mproc_future_result(fs[i], &data, &len, 0), 0);
    CHECK(len == 8 && *(const int64_t *)data == (int64_t)i * i, "future %d", i);
  }
  int fd = mproc_pool_loop_fd(pool);
  CHECK(fd >= 0, "loop fd %d", fd);
  int64_t until = mproc_now_ms() + scaled(60000);
  while (n_callbacks < N && mproc_now_ms() < until) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) == 1)
      CHECK(mproc_pool_loop_run(pool, 0, NULL) >= 0, "loop_run");
  }
  CHECK(n_callbacks == N, "callbacks %d", n_callbacks);
  for (int i = 0; i < N; i++)
    mproc_future_free(fs[i]);

  /* map: chunks by value, results back in place; a failing item named. */
  enum { M = 10000 };
  static int32_t in[M];
  static int64_t out[M];
  for (int i = 0; i < M; i++)
    in[i] = i;
  struct mproc_task_error err;
  CHECK_ERR(mproc_pool_map(pool, triple, in, M, sizeof in[0], out, sizeof out[0], NULL, &err,
                           scaled(60000)),
            0);
  for (int i = 0; i < M; i++)
    CHECK(out[i] == 3 * (int64_t)i, "map item %d: %lld", i, (long long)out[i]);
  in[7777] = -1;
  CHECK_ERR(mproc_pool_map(pool, triple, in, M, sizeof in[0], out, sizeof out[0], NULL, &err,
                           scaled(60000)),
            MPROC_ETASK);
  CHECK(err.index == 7777 && err.task_code == 5, "index %zu code %d", err.index, err.task_code);
  in[7777] = 7777;

  /* starmap: three columns. */
  static int32_t a[M], b[M];
  static int64_t c[M];
  for (int i = 0; i < M; i++)
    a[i] = i, b[i] = 2, c[i] = 1;
  const void *cols[3] = {a, b, c};
  size_t sizes[3] = {sizeof a[0], sizeof b[0], sizeof c[0]};
  CHECK_ERR(mproc_pool_starmap(pool, mul_add, 3, cols, sizes, M, out, sizeof out[0], NULL, &err,
                               scaled(60000)),
            0);
  for (int i = 0; i < M; i++)
    CHECK(out[i] == 2 * (int64_t)i + 1, "starmap item %d: %lld", i, (long long)out[i]);
  a[4321] = -1;
  CHECK_ERR(mproc_pool_starmap(pool, mul_add, 3, cols, sizes, M, out, sizeof out[0], NULL, &err,
                               scaled(60000)),
            MPROC_ETASK);
  CHECK(err.index == 4321 && err.task_code == 9, "index %zu code %d", err.index, err.task_code);

  /* map_buf: variable-size items; its element function travels by
   * reference, as under spawn. */
  struct mproc_buf items[3] = {{"abc", 3}, {"", 0}, {"hello", 5}}, *res;
  CHECK_ERR(mproc_pool_map_buf(pool, reverse, items, 3, &res, NULL, &err, scaled(60000)), 0);
  CHECK(res[0].len == 3 && memcmp(res[0].data, "cba", 3) == 0 && res[1].len == 0 &&
            res[2].len == 5 && memcmp(res[2].data, "olleh", 5) == 0,
        "map_buf");
  mproc_bufs_free(res);

  /* imap, in order and unordered. */
  for (int unordered = 0; unordered < 2; unordered++) {
    struct gen g = {0, 5000};
    struct mproc_imap_options io = {.flags = unordered ? MPROC_IMAP_UNORDERED : 0u};
    mproc_imap *it;
    CHECK_ERR(
        mproc_pool_imap(pool, triple, gen_ints, &g, sizeof(int32_t), sizeof(int64_t), &io, &it), 0);
    static char got[5000];
    memset(got, 0, sizeof got);
    int64_t v;
    size_t idx, k = 0;
    int rc;
    while ((rc = mproc_imap_next(it, &v, &idx, &err, scaled(60000))) == 0) {
      CHECK(idx < 5000 && v == 3 * (int64_t)idx && !got[idx], "imap item %zu: %lld", idx,
            (long long)v);
      CHECK(unordered || idx == k, "imap order: %zu at %zu", idx, k);
      got[idx] = 1;
      k++;
    }
    CHECK_ERR(rc, MPROC_EEOF);
    CHECK(k == 5000, "imap yielded %zu", k);
    mproc_imap_free(it);
  }

  /* Stats count what the ranks did. */
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws[2];
  CHECK(mproc_pool_stats(pool, &st, ws, 2) == 2, "stats");
  /* A rank's slot has no local process; its counts are the rank's. */
  CHECK(ws[0].pid == 0 && ws[1].pid == 0 && ws[0].tasks_done + ws[1].tasks_done >= N,
        "worker stats: pids %d %d, done %llu + %llu", (int)ws[0].pid, (int)ws[1].pid,
        (unsigned long long)ws[0].tasks_done, (unsigned long long)ws[1].tasks_done);
  CHECK(st.workers == 2 && st.done >= N + 2 && st.failed >= 2,
        "stats: workers %d done %llu "
        "failed %llu",
        st.workers, (unsigned long long)st.done, (unsigned long long)st.failed);

  /* What cannot travel to another node is refused, clearly. */
  int pfd[2];
  CHECK(pipe(pfd) == 0, "pipe");
  struct mproc_submit_options so = {.fds = pfd, .nfds = 1};
  CHECK_ERR(mproc_pool_submit_ex(pool, square_task, &(int64_t){2}, sizeof(int64_t), &so, &f), 0);
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  CHECK_ERR(code_of(f), MPROC_ENOTSUP);
  mproc_future_free(f);
  close(pfd[0]);
  close(pfd[1]);

  /* Nor can a shared-memory block: map_shm needs workers on this node. */
  mproc_shm *shm;
  CHECK_ERR(mproc_shm_new(&shm, 4096), 0);
  CHECK_ERR(mproc_pool_map_shm(pool, triple, shm, 0, 4, 1024, 8, 10, NULL, &err, scaled(60000)),
            MPROC_ENOTSUP);
  CHECK_ERR(
      mproc_pool_map_shm_range(pool, triple_run, shm, 0, 4, 1024, 8, 10, NULL, &err, scaled(60000)),
      MPROC_ENOTSUP);
  mproc_shm_free(shm);

  /* A cancelled running task; the rank goes on. */
  CHECK_ERR(mproc_pool_submit(pool, sleep_task, NULL, 0, &f), 0);
  CHECK(square_on(pool, 3) == 9, "a task beside the sleeper");
  CHECK_ERR(mproc_future_cancel(f), 0);
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  CHECK_ERR(code_of(f), MPROC_ECANCELED);
  mproc_future_free(f);
  CHECK(square_on(pool, 5) == 25, "after the cancel");

  mproc_pool_close(pool);
  CHECK_ERR(mproc_pool_join(pool, scaled(60000)), 0);
  mproc_pool_free(pool);

  /* terminate: what runs on the ranks is cancelled there. */
  pool = mpi_pool(0);
  CHECK_ERR(mproc_pool_submit(pool, sleep_task, NULL, 0, &f), 0);
  CHECK(square_on(pool, 3) == 9, "a task beside the sleeper");
  CHECK_ERR(mproc_pool_terminate(pool), 0);
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  CHECK_ERR(code_of(f), MPROC_ECANCELED);
  mproc_future_free(f);
  mproc_pool_free(pool);

  /* Two pools over the same ranks at once. */
  mproc_pool *p1 = mpi_pool(0), *p2 = mpi_pool(0);
  CHECK(square_on(p1, 6) == 36 && square_on(p2, 7) == 49, "two pools");
  mproc_pool_free(p1);
  mproc_pool_free(p2);

  /* A pool asking for fewer workers than ranks uses that many. */
  mproc_pool *one;
  struct mproc_pool_options o = {.transport = "mpi", .workers = 1};
  CHECK_ERR(mproc_pool_new(&one, &o), 0);
  CHECK(mproc_pool_workers(one) == 1, "workers %d", mproc_pool_workers(one));
  CHECK(square_on(one, 9) == 81, "one rank");
  mproc_pool_free(one);
}

static void crash_or_timeout(bool crash) {
  mproc_pool *pool = mpi_pool(0);
  mproc_future *f;
  struct mproc_submit_options so = {.timeout_ms = crash ? 0 : 300};
  int64_t t0 = mproc_now_ms();
  CHECK_ERR(mproc_pool_submit_ex(pool, crash ? segv_task : sleep_task, NULL, 0, &so, &f), 0);
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  struct mproc_task_error err;
  CHECK_ERR(code_of(f), crash ? MPROC_EWORKERDIED : MPROC_ETIMEDOUT);
  CHECK_ERR(mproc_future_error(f, &err), 0);
  if (crash) {
    CHECK(err.signo == SIGSEGV, "signo %d", err.signo);
    expect_rank_prefix(&err);
  } else {
    int64_t took = mproc_now_ms() - t0;
    CHECK(took >= 300 && took < scaled(30000), "took %lld ms", (long long)took);
  }
  mproc_future_free(f);
  /* Every rank carries on. */
  for (int i = 0; i < 8; i++)
    CHECK(square_on(pool, i) == i * i, "after: %d", i);
  mproc_pool_free(pool);
}

static void case_segv(void) { crash_or_timeout(true); }
static void case_timeout(void) { crash_or_timeout(false); }

/* A plugin (tests/mpi/plugin.c) loaded on rank 0 from a copy that is gone
 * by the time the ranks look for it: its function cannot be found there. */
static void case_unresolvable(void) {
  const char *plugin = getenv("MPROC_TEST_PLUGIN");
  CHECK(plugin, "MPROC_TEST_PLUGIN not set");
  char dir[] = "/tmp/mproc-plugin-XXXXXX", copy[128], cmd[512];
  CHECK(mkdtemp(dir), "mkdtemp");
  snprintf(copy, sizeof copy, "%s/plugin.so", dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", plugin, copy);
  CHECK(system(cmd) == 0, "%s", cmd);
  void *h = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  CHECK(h, "dlopen: %s", dlerror());
  unlink(copy);
  rmdir(dir);
  mproc_task_fn fn = (mproc_task_fn)(uintptr_t)dlsym(h, "plugin_task");
  CHECK(fn, "dlsym");
  mproc_pool *pool = mpi_pool(0);
  mproc_future *f;
  CHECK_ERR(mproc_pool_submit(pool, fn, NULL, 0, &f), 0);
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  struct mproc_task_error err;
  CHECK_ERR(code_of(f), MPROC_ENOFUNC);
  CHECK_ERR(mproc_future_error(f, &err), 0);
  expect_rank_prefix(&err);
  CHECK(strstr(err.message, "task function ") && strstr(err.message, "plugin.so"), "message '%s'",
        err.message);
  mproc_future_free(f);
  CHECK(square_on(pool, 4) == 16, "the ranks go on");
  mproc_pool_free(pool);
  dlclose(h);
}

/* ---- initializers and concurrency --------------------------------------- */

static char g_greeting[32]; /* set by the initializer in each worker */

static int greet_init(void *arg, mproc_task_ctx *ctx) {
  (void)ctx;
  snprintf(g_greeting, sizeof g_greeting, "%s", (const char *)arg);
  return strcmp(g_greeting, "fail") == 0 ? 17 : 0;
}

static int greeting_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  return mproc_task_return(ctx, g_greeting, strlen(g_greeting) + 1);
}

/* Registers itself in the directory it is given, then waits (bounded) until
 * `n` tasks have: only tasks that run at the same time all get there. */
struct meet {
  char dir[64];
  int n;
};
static int meet_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  struct meet m;
  if (len != sizeof m)
    return mproc_task_fail(ctx, 1, "bad argument");
  memcpy(&m, arg, sizeof m);
  char path[128];
  snprintf(path, sizeof path, "%s/%d", m.dir, (int)getpid());
  FILE *f = fopen(path, "w");
  if (!f)
    return mproc_task_fail(ctx, 2, "cannot create %s", path);
  fclose(f);
  int64_t until = mproc_now_ms() + scaled(30000);
  for (;;) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -ge %d", m.dir, m.n);
    if (system(cmd) == 0)
      return 0;
    if (mproc_now_ms() > until)
      return mproc_task_fail(ctx, 3, "only some of the %d tasks ran at once", m.n);
    struct timespec ts = {0, 20 * 1000 * 1000}; /* polling a directory: no event to wait on */
    nanosleep(&ts, NULL);
  }
}

static void case_init(void) {
  /* The initializer and its argument (as bytes) reach every rank's workers. */
  struct mproc_pool_options o = {
      .transport = "mpi", .initializer = greet_init, .initarg = "hello", .initarg_len = 6};
  mproc_pool *pool;
  CHECK_ERR(mproc_pool_new(&pool, &o), 0);
  for (int i = 0; i < 6; i++) {
    char *g;
    size_t len;
    CHECK_ERR(
        mproc_pool_apply(pool, greeting_task, NULL, 0, (void **)&g, &len, NULL, scaled(60000)), 0);
    CHECK(strcmp(g, "hello") == 0, "greeting '%s'", g);
    free(g);
  }
  mproc_pool_free(pool);
  /* An argument without its length means a pointer: refused. */
  o.initarg_len = 0;
  CHECK_ERR(mproc_pool_new(&pool, &o), MPROC_EINVAL);
  /* An initializer that fails breaks the pool, as on one machine. */
  o.initarg = "fail";
  o.initarg_len = 5;
  CHECK_ERR(mproc_pool_new(&pool, &o), 0);
  char *g = NULL;
  size_t len;
  struct mproc_task_error err = {0};
  int rc = mproc_pool_apply(pool, greeting_task, NULL, 0, (void **)&g, &len, &err, scaled(60000));
  CHECK(rc == MPROC_EINITFAILED || rc == MPROC_EBROKEN, "got %s: %s", mproc_err_name(rc),
        err.message);
  mproc_pool_free(pool);

  /* A pool runs as many tasks at once as it has workers, shared out over
   * the ranks: 5 workers over 2 ranks. */
  struct meet m = {.n = 5};
  snprintf(m.dir, sizeof m.dir, "/tmp/mproc-meet-XXXXXX");
  CHECK(mkdtemp(m.dir), "mkdtemp");
  CHECK_ERR(mproc_pool_new(&pool, &(struct mproc_pool_options){.transport = "mpi", .workers = 5}),
            0);
  CHECK(mproc_pool_workers(pool) == 2, "slots %d", mproc_pool_workers(pool));
  mproc_future *fs[5];
  for (int i = 0; i < 5; i++)
    CHECK_ERR(mproc_pool_submit(pool, meet_task, &m, sizeof m, &fs[i]), 0);
  for (int i = 0; i < 5; i++) {
    CHECK_ERR(mproc_future_wait(fs[i], scaled(60000)), 0);
    struct mproc_task_error e;
    int r = code_of(fs[i]);
    if (r != 0)
      mproc_future_error(fs[i], &e);
    CHECK(r == 0, "task %d: %s %s", i, mproc_err_name(r), r ? e.message : "");
    mproc_future_free(fs[i]);
  }
  mproc_pool_free(pool);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", m.dir);
  CHECK(system(cmd) == 0, "%s", cmd);
}

/* A program that returns from main with a pool still running a task: exit
 * finalizes MPI while the pool's threads still drive it; the job ends
 * cleanly (the task is cancelled with the ranks). */
static void case_atexit(void) {
  mproc_pool *pool = mpi_pool(0);
  mproc_future *f;
  CHECK_ERR(mproc_pool_submit(pool, sleep_task, NULL, 0, &f), 0);
  CHECK(square_on(pool, 2) == 4, "a task beside the sleeper");
  printf("PASS pool-atexit\n");
  fflush(stdout);
  exit(0); /* no free, no finalize: exit's handlers do it */
}

static void case_killrank(void) {
  mproc_pool *pool = mpi_pool(0);
  mproc_future *f;
  CHECK_ERR(mproc_pool_submit(pool, kill_rank_task, NULL, 0, &f), 0);
  int rc = mproc_future_wait(f, scaled(120000));
  printf("UNEXPECTED: the job went on (%s)\n", mproc_err_name(rc));
  exit(1);
}

/* Whether the pool's tasks run in children of this process. */
static bool runs_here(mproc_pool *pool) {
  int64_t *where;
  size_t len;
  CHECK_ERR(mproc_pool_apply(pool, where_task, NULL, 0, (void **)&where, &len, NULL, scaled(60000)),
            0);
  bool here = where[1] == getpid();
  free(where);
  return here;
}

/* Not under MPI: the same pools, on local workers. */
static void case_local(void) {
  CHECK(mproc_mpi_worker_ranks() == 0, "ranks %d", mproc_mpi_worker_ranks());
  mproc_pool *pool = mpi_pool(0);
  CHECK(runs_here(pool), "a local worker is a child of this process");
  CHECK(square_on(pool, 8) == 64, "apply");
  mproc_pool_free(pool);
  /* An unknown transport is refused. */
  struct mproc_pool_options o = {.transport = "no-such"};
  CHECK_ERR(mproc_pool_new(&pool, &o), MPROC_EINVAL);
}

/* The program initialised MPI itself, without thread support: the ranks
 * still serve the internal calls, but "mpi" pools stay on local workers. */
static void case_single(void) {
  CHECK(mproc_mpi_worker_ranks() == 2, "worker ranks %d", mproc_mpi_worker_ranks());
  mproc_pool *pool = mpi_pool(0);
  CHECK(runs_here(pool), "a pool over ranks under MPI_THREAD_SINGLE");
  mproc_pool_free(pool);
}

int main(int argc, char **argv) {
  const char *c = argc > 1 ? argv[1] : "";
  bool single = strcmp(c, "pool-single") == 0;
  int level;
  if (single)
    CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_SINGLE, &level) == MPI_SUCCESS, "MPI_Init");
  CHECK_ERR(mproc_mpi_init(&argc, &argv, NULL), 0);
  /* Worker ranks never get here. */
  static const struct mpi_case cases[] = {
      {"pool", case_pool},
      {"pool-init", case_init},
      {"pool-segv", case_segv},
      {"pool-timeout", case_timeout},
      {"pool-unresolvable", case_unresolvable},
      {"pool-killrank", case_killrank},
      {"pool-atexit", case_atexit},
      {"pool-local", case_local},
      {"pool-single", case_single},
  };
  int rc = run_case(cases, sizeof cases / sizeof cases[0], c);
  if (single)
    MPI_Finalize(); /* the program's own: mproc_mpi_finalize leaves it */
  return rc;
}
