/* Pool benchmarks (see the speed table); bench/py/bench_pool.py
 * measures the same metrics with Python's multiprocessing.
 *
 * MPROC_BENCH_ONLY=metric[,metric...] runs only the benchmarks whose metric
 * names begin with one of the listed words (e.g. "submit_throughput,imap" or
 * "pool_startup"), so an A/B comparison of two builds can alternate a few
 * metrics without the whole run.  Unset or empty, everything runs. */
#include "bench.h"

#include <mproc.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef MPROC_BENCH_OPENMP
#include <omp.h>
#endif

static int quick;

/* Whether MPROC_BENCH_ONLY (a comma-separated list of metric-name prefixes)
 * selects the metric `name`; without the variable every metric is selected. */
static int wanted(const char *name) {
  const char *only = getenv("MPROC_BENCH_ONLY");
  if (only == NULL || *only == '\0')
    return 1;
  for (const char *w = only; *w != '\0';) {
    size_t len = strcspn(w, ",");
    if (len > 0 && strncmp(name, w, len) == 0)
      return 1;
    w += len + (w[len] == ',');
  }
  return 0;
}

static int trivial(const void *arg, size_t len, mproc_task_ctx *ctx) {
  return mproc_task_return(ctx, arg, len);
}

static int square(const void *in, void *out) {
  int x = *(const int *)in;
  *(int *)out = x * x;
  return 0;
}

static double burn(double ms) {
  /* CPU work of about `ms` milliseconds (calibrated by time, not count). */
  double t0 = bench_now_s(), x = 1.0;
  while ((bench_now_s() - t0) * 1000 < ms)
    for (int i = 0; i < 1000; i++)
      x = x * 1.0000001 + 1e-9;
  return x;
}

static int cpu_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  double x = burn(*(const double *)arg);
  return mproc_task_return(ctx, &x, sizeof x);
}

/* The busy task's pid, on a page shared through a memfd kept inheritable at
 * VICTIM_FD: a spawned or forkserver worker (a fresh image) maps it there. */
#define VICTIM_FD 900
static _Atomic int *victim_pid;
static _Atomic int *victim_page(void) {
  if (victim_pid == NULL) {
    void *m = mmap(NULL, sizeof *victim_pid, PROT_READ | PROT_WRITE, MAP_SHARED, VICTIM_FD, 0);
    victim_pid = m != MAP_FAILED ? m : NULL;
  }
  return victim_pid;
}

static int busy_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  _Atomic int *v = victim_page();
  if (v == NULL)
    return 1;
  atomic_store(v, (int)getpid());
  for (;;)
    burn(1000);
  return 0;
}

/* The start methods compared; "" names fork (the metric's plain name). */
static const struct {
  int method;
  const char *suffix;
} methods[] = {
    {MPROC_START_FORK, ""}, {MPROC_START_SPAWN, "_spawn"}, {MPROC_START_FORKSERVER, "_forkserver"}};
#define NMETHODS (sizeof methods / sizeof *methods)

static mproc_pool *pool_by(int workers, int method) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = workers, .start_method = method};
  if (mproc_pool_new(&p, &o) != 0) {
    fprintf(stderr, "pool create failed\n");
    exit(1);
  }
  return p;
}

static mproc_pool *pool_of(int workers) { return pool_by(workers, MPROC_START_FORK); }

static void bench_roundtrip(mproc_pool *p) {
  int n = quick ? 200 : 20000, x = 1;
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
      mproc_future *f;
      mproc_pool_submit(p, trivial, &x, sizeof x, &f);
      mproc_future_wait(f, -1);
      mproc_future_free(f);
    }
    v[r] = (bench_now_s() - t0) / n * 1e6;
  }
  bench_report("task_roundtrip", "mproc", v, BENCH_REPS, "us");
}

static void bench_submit(mproc_pool *p) {
  int n = quick ? 2000 : 100000, x = 1;
  mproc_future **fs = malloc((size_t)n * sizeof *fs);
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++)
      mproc_pool_submit(p, trivial, &x, sizeof x, &fs[i]);
    mproc_futures_wait(fs, (size_t)n, MPROC_ALL_COMPLETED, -1);
    v[r] = n / (bench_now_s() - t0);
    for (int i = 0; i < n; i++)
      mproc_future_free(fs[i]);
  }
  free(fs);
  bench_report("submit_throughput", "mproc", v, BENCH_REPS, "tasks/s");
}

/* The OpenMP baseline of a map of square over n ints. */
static void openmp_squares(const char *metric, const int *in, int *out, size_t n) {
#ifdef MPROC_BENCH_OPENMP
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
#pragma omp parallel for
    for (size_t i = 0; i < n; i++)
      square(&in[i], &out[i]);
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report(metric, "openmp", v, BENCH_REPS, "items/s");
#else
  (void)metric, (void)in, (void)out, (void)n;
#endif
}

static void bench_map_tiny(mproc_pool *p) {
  size_t n = quick ? 10000 : 1000000;
  int *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int)i;
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    mproc_pool_map(p, square, in, n, sizeof *in, out, sizeof *out, NULL, NULL, -1);
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report("map_tiny", "mproc", v, BENCH_REPS, "items/s");
  openmp_squares("map_tiny", in, out, n);
  free(in);
  free(out);
}

/* The same with the range form, one contiguous run per worker (the shape
 * of OpenMP's loop): map_shm_tiny; the element form: map_shm_elem_tiny. */
static void bench_map_shm_range(mproc_pool *p, mproc_shm *b, size_t n) {
  int *in = mproc_shm_addr(b), *out = in + n;
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    mproc_pool_map_shm_range(p, bench_squares, b, 0, sizeof *in, n * sizeof *in, sizeof *out, n,
                             NULL, NULL, -1);
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report("map_shm_tiny", "mproc", v, BENCH_REPS, "items/s");
  openmp_squares("map_shm_tiny", in, out, n);
}

/* map_tiny's work over ints already in a shared block, run in place by
 * mproc_pool_map_shm_range and mproc_pool_map_shm; OpenMP runs over the
 * same pages. */
static void bench_map_shm(mproc_pool *p) {
  size_t n = quick ? 10000 : 1000000;
  mproc_shm *b;
  if (mproc_shm_new(&b, 2 * n * sizeof(int)) != 0)
    return;
  int *in = mproc_shm_addr(b), *out = in + n;
  for (size_t i = 0; i < n; i++)
    in[i] = (int)i;
  double v[BENCH_REPS];
  /* The first call maps the block in each worker and faults its pages in. */
  mproc_pool_map_shm(p, square, b, 0, sizeof *in, n * sizeof *in, sizeof *out, n, NULL, NULL, -1);
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    mproc_pool_map_shm(p, square, b, 0, sizeof *in, n * sizeof *in, sizeof *out, n, NULL, NULL, -1);
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report("map_shm_elem_tiny", "mproc", v, BENCH_REPS, "items/s");
  bench_map_shm_range(p, b, n);
  mproc_shm_free(b);
}

/* The length of a string item, as text: a small item of any size in, a
 * small result of any size out (Python: pool.map(len, strings)). */
static int str_len(const void *in, size_t len, mproc_item_ctx *ctx) {
  (void)in;
  char buf[24];
  int k = snprintf(buf, sizeof buf, "%zu", len);
  return mproc_item_return(ctx, buf, (size_t)k);
}

/* The fixed-size map's work over variable-size items: a 4-byte item in, its
 * square as a 4-byte result out (Python: pool.map over bytes objects).  The
 * item is read with a fixed-size copy: a copy of a variable length compiles
 * to byte stores, and reading x back right after them stalls the store
 * forwarding, which cost more than the rest of the item's work. */
static int square_buf(const void *in, size_t len, mproc_item_ctx *ctx) {
  int x;
  if (len != sizeof x)
    return mproc_item_fail(ctx, MPROC_EINVAL, "square_buf: item of %zu bytes", len);
  memcpy(&x, in, sizeof x);
  x *= x;
  return mproc_item_return(ctx, &x, sizeof x);
}

/* square_buf written in place (mproc_pool_map_bytes): the result goes
 * straight where the pool keeps it, and the length is the return value. */
static ssize_t square_bytes(const void *in, size_t len, void *out, size_t room) {
  int x;
  if (len != sizeof x)
    return mproc_map_bytes_fail(MPROC_EINVAL, "square_bytes: item of %zu bytes", len);
  if (room < sizeof x)
    return sizeof x;
  memcpy(&x, in, sizeof x);
  x *= x;
  memcpy(out, &x, sizeof x);
  return sizeof x;
}

/* map_tiny's work over variable-size items, the fastest documented way:
 * packed items and results, each result written in place
 * (mproc_pool_map_bytes); map_buf_tiny_packed: the same through
 * mproc_item_return (mproc_pool_map_packed); map_buf_tiny_bufs: through
 * arrays of mproc_buf (mproc_pool_map_buf). */
static void bench_map_buf_tiny(mproc_pool *p) {
  size_t n = quick ? 10000 : 1000000;
  struct mproc_buf *in = malloc(n * sizeof *in);
  int *vals = malloc(n * sizeof *vals);
  size_t *ends = malloc(n * sizeof *ends);
  for (size_t i = 0; i < n; i++) {
    vals[i] = (int)i;
    in[i] = (struct mproc_buf){&vals[i], sizeof vals[i]};
    ends[i] = (i + 1) * sizeof vals[i];
  }
  double v[BENCH_REPS], u[BENCH_REPS], w[BENCH_REPS];
  struct mproc_packed packed = {vals, ends, n};
  for (int r = 0; r < BENCH_REPS; r++) {
    struct mproc_packed pout;
    double t0 = bench_now_s();
    mproc_pool_map_bytes(p, square_bytes, &packed, &pout, NULL, NULL, -1);
    v[r] = n / (bench_now_s() - t0);
    mproc_packed_free(&pout);
    t0 = bench_now_s();
    mproc_pool_map_packed(p, square_buf, &packed, &pout, NULL, NULL, -1);
    u[r] = n / (bench_now_s() - t0);
    mproc_packed_free(&pout);
    struct mproc_buf *out = NULL;
    t0 = bench_now_s();
    mproc_pool_map_buf(p, square_buf, in, n, &out, NULL, NULL, -1);
    w[r] = n / (bench_now_s() - t0);
    mproc_bufs_free(out);
  }
  bench_report("map_buf_tiny", "mproc", v, BENCH_REPS, "items/s");
  bench_report("map_buf_tiny_packed", "mproc", u, BENCH_REPS, "items/s");
  bench_report("map_buf_tiny_bufs", "mproc", w, BENCH_REPS, "items/s");
  free(in);
  free(vals);
  free(ends);
}

static void bench_map_strings(mproc_pool *p) {
  size_t n = quick ? 10000 : 1000000;
  struct mproc_buf *in = malloc(n * sizeof *in);
  char *text = malloc(n * 16);
  for (size_t i = 0; i < n; i++) {
    int k = snprintf(text + i * 16, 16, "item-%zu", i); /* 6 to 12 bytes */
    in[i] = (struct mproc_buf){text + i * 16, (size_t)k};
  }
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    struct mproc_buf *out = NULL;
    double t0 = bench_now_s();
    mproc_pool_map_buf(p, str_len, in, n, &out, NULL, NULL, -1);
    v[r] = n / (bench_now_s() - t0);
    mproc_bufs_free(out);
  }
  bench_report("map_strings", "mproc", v, BENCH_REPS, "items/s");
  free(in);
  free(text);
}

struct counter {
  int next, n;
};
static int gen(void *ctx, void *item) {
  struct counter *c = ctx;
  if (c->next == c->n)
    return 0;
  *(int *)item = c->next++;
  return 1;
}

static void bench_imap(mproc_pool *p) {
  int n = quick ? 2000 : 100000;
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    struct counter c = {0, n};
    struct mproc_imap_options o = {.flags = MPROC_IMAP_UNORDERED, .chunksize = 1};
    mproc_imap *it;
    double t0 = bench_now_s();
    mproc_pool_imap(p, square, gen, &c, sizeof(int), sizeof(int), &o, &it);
    int out, got = 0;
    while (mproc_imap_next(it, &out, NULL, NULL, -1) == 0)
      got++;
    mproc_imap_free(it);
    v[r] = got / (bench_now_s() - t0);
  }
  bench_report("imap_unordered_c1", "mproc", v, BENCH_REPS, "items/s");
}

static void report_by(const char *metric, size_t m, double *v, const char *unit) {
  char name[64];
  snprintf(name, sizeof name, "%s%s", metric, methods[m].suffix);
  bench_report(name, "mproc", v, BENCH_REPS, unit);
}

static void bench_startup(size_t m) {
  double v[BENCH_REPS];
  int x = 1;
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    mproc_pool *p = pool_by(2, methods[m].method);
    mproc_future *f;
    mproc_pool_submit(p, trivial, &x, sizeof x, &f);
    mproc_future_wait(f, -1);
    mproc_future_free(f);
    mproc_pool_free(p);
    v[r] = (bench_now_s() - t0) * 1000;
  }
  report_by("pool_startup", m, v, "ms");
}

static void bench_scaling(mproc_pool *p) {
  int n = quick ? 8 : 40;
  double ms = quick ? 5 : 50;
  int reps = quick ? 5 : 5;
  double v[BENCH_REPS];
  mproc_future *fs[40];
  for (int r = 0; r < reps; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++)
      burn(ms);
    double serial = bench_now_s() - t0;
    t0 = bench_now_s();
    for (int i = 0; i < n; i++)
      mproc_pool_submit(p, cpu_task, &ms, sizeof ms, &fs[i]);
    mproc_futures_wait(fs, (size_t)n, MPROC_ALL_COMPLETED, -1);
    double par = bench_now_s() - t0;
    for (int i = 0; i < n; i++)
      mproc_future_free(fs[i]);
    v[r] = serial / par;
  }
  bench_report("cpu_scaling", "mproc", v, reps, "speedup");
}

static int has_pid(const pid_t *pids, int n, pid_t pid) {
  for (int i = 0; i < n; i++)
    if (pids[i] == pid)
      return 1;
  return 0;
}

static void bench_crash(size_t m) {
  mproc_pool *p = pool_by(2, methods[m].method);
  double v[BENCH_REPS];
  int workers = mproc_pool_workers(p);
  for (int r = 0; r < BENCH_REPS; r++) {
    atomic_store(victim_pid, 0);
    mproc_future *f;
    mproc_pool_submit(p, busy_task, NULL, 0, &f);
    while (atomic_load(victim_pid) == 0) {
    }
    pid_t victim = atomic_load(victim_pid);
    double t0 = bench_now_s();
    kill(victim, SIGKILL);
    mproc_future_wait(f, -1);
    pid_t pids[64];
    int k;
    while ((k = mproc_pool_worker_pids(p, pids, 64)) != workers || has_pid(pids, k, victim)) {
    }
    v[r] = (bench_now_s() - t0) * 1000;
    mproc_future_free(f);
  }
  mproc_pool_free(p);
  report_by("crash_recovery", m, v, "ms");
}

int main(void) {
  quick = getenv("MPROC_BENCH_QUICK") != NULL && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  int vfd = memfd_create("bench-victim", MFD_CLOEXEC);
  if (vfd < 0 || ftruncate(vfd, sizeof *victim_pid) != 0 || dup2(vfd, VICTIM_FD) != VICTIM_FD ||
      victim_page() == NULL) {
    perror("victim page");
    return 1;
  }
  close(vfd);
  /* Startup first, from a small fresh process (fork cost grows with the
   * parent's memory, and later benchmarks grow the heap). */
  for (size_t m = 0; m < NMETHODS; m++)
    if (wanted("pool_startup"))
      bench_startup(m);
  mproc_pool *p = pool_of(2);
  if (wanted("task_roundtrip"))
    bench_roundtrip(p);
  if (wanted("submit_throughput"))
    bench_submit(p);
  if (wanted("map_tiny"))
    bench_map_tiny(p);
  if (wanted("map_buf_tiny"))
    bench_map_buf_tiny(p);
  if (wanted("map_shm_tiny") || wanted("map_shm_elem_tiny"))
    bench_map_shm(p);
  if (wanted("map_strings"))
    bench_map_strings(p);
  if (wanted("imap_unordered_c1"))
    bench_imap(p);
  if (wanted("cpu_scaling"))
    bench_scaling(p);
  mproc_pool_free(p);
  for (size_t m = 0; m < NMETHODS; m++)
    if (wanted("crash_recovery"))
      bench_crash(m);
  munmap((void *)victim_pid, sizeof *victim_pid);
  close(VICTIM_FD);
  return 0;
}
