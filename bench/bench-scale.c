/* How cost grows with the work: the scaling curves of BENCHMARKS.md.
 *
 * Prints one line per point:  CURVE <chart> <impl> <x> <y>
 * (impl mproc, openmp or raw; bench/py/bench_scale.py prints the python
 * points of the same charts), and the memory figures as BENCH lines.
 * bench/report.py draws each chart (log-log where it fits) from one run.
 *
 *   map_items        items/s of map x*x over 10^2..10^8 ints (openmp: the
 *                    same loop as a parallel for)
 *   map_item_size    MB/s of map copying items of 8 B..1 MiB, 64 MiB per
 *                    point (openmp: the same copies as a parallel for)
 *   task_size        us per round trip of one task whose argument and result
 *                    are 8 B..1 GiB (raw: the two memcpy a copy-based
 *                    hand-off cannot avoid)
 *   pool_start       ms to create a pool of 1..256 workers, get one result
 *                    from each, and free it
 *   pool_pss         KiB of PSS per idle worker of such a pool
 *   queue_msg_size   MB/s through a queue, one producer and one consumer
 *                    process, 8 B..1 MiB messages (raw: one memcpy of the
 *                    bytes into a 16 MiB ring buffer)
 *   queue_procs      M msgs/s of 8-byte messages with k producer and k
 *                    consumer processes, k = 1..8 (raw: a ring under one
 *                    process-shared mutex, spin then futex)
 *
 * Memory (BENCH lines, KiB): mem_idle<N>_{parent,worker}_{rss,pss} for idle
 * pools of 2 and 16 workers; mem_imap10m_{parent,worker}_{rss,pss} after a
 * 10 M-item imap (parent: peak RSS; worker: the mean at the end).
 *
 * Sizes are capped for a 2-CPU, 24 GiB machine; MPROC_BENCH_QUICK=1 keeps
 * only the smallest points (a smoke run). */
#include "bench-raw.h"

#include <mproc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int quick;

/* Item and message sizes of the size sweeps: 8 B to 1 MiB. */
static const size_t msg_sizes[] = {8, 64, 512, 4096, 32768, 262144, 1048576};
#define NSIZES (sizeof msg_sizes / sizeof msg_sizes[0])

static void die(const char *what, int r) {
  fprintf(stderr, "bench-scale: %s: %s\n", what, mproc_strerror(r));
  exit(1);
}

static void curve(const char *chart, const char *impl, double x, double *v, int n) {
  printf("CURVE %s %s %.6g %.6g\n", chart, impl, x, bench_median(v, n));
  fflush(stdout);
}

static mproc_pool *pool_of(int workers) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = workers};
  int r = mproc_pool_new(&p, &o);
  if (r != 0)
    die("pool_new", r);
  return p;
}

/* Rss and Pss of a process in KiB, from /proc/<pid>/smaps_rollup. */
static void mem_of(pid_t pid, double *rss, double *pss) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
  *rss = *pss = 0;
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "Rss:", 4) == 0)
      *rss = atof(line + 4);
    else if (strncmp(line, "Pss:", 4) == 0)
      *pss = atof(line + 4);
  }
  fclose(f);
}

/* Mean Rss/Pss over the pool's workers. */
static void worker_mem(mproc_pool *p, double *rss, double *pss) {
  pid_t pids[256];
  int n = mproc_pool_worker_pids(p, pids, 256);
  *rss = *pss = 0;
  for (int i = 0; i < n; i++) {
    double r, s;
    mem_of(pids[i], &r, &s);
    *rss += r / n;
    *pss += s / n;
  }
}

static void report1(const char *metric, double x, const char *unit) {
  printf("BENCH %s mproc %.6g %s\n", metric, x, unit);
}

/* ---- map ------------------------------------------------------------------ */

static int square(const void *in, void *out) {
  int x = *(const int *)in;
  *(int *)out = x * x;
  return 0;
}

static size_t item_size; /* set before the pool forks: the workers inherit it */

static int copy_item(const void *in, void *out) {
  memcpy(out, in, item_size);
  return 0;
}

/* The arrays live in a shared block, so the same pages serve map (which
 * copies them through the pool's arena), map_shm and map_shm_range (in
 * place) and OpenMP. */
static void map_items(mproc_pool *p) {
  size_t top = quick ? 10000 : 100000000;
  mproc_shm *b;
  int e = mproc_shm_new(&b, 2 * top * sizeof(int));
  if (e != 0)
    die("shm", e);
  int *in = mproc_shm_addr(b), *out = in + top;
  for (size_t i = 0; i < top; i++)
    in[i] = (int)i;
  /* Each worker maps the block and faults its pages in once. */
  e = mproc_pool_map_shm(p, square, b, 0, sizeof *in, top * sizeof *in, sizeof *out, top, NULL,
                         NULL, -1);
  if (e != 0)
    die("map_shm", e);
  for (size_t n = 100; n <= top; n *= 10) {
    int reps = n >= 10000000 ? 3 : 5;
    double v[5];
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
      e = mproc_pool_map(p, square, in, n, sizeof *in, out, sizeof *out, NULL, NULL, -1);
      if (e != 0)
        die("map", e);
      v[r] = (double)n / (bench_now_s() - t0);
    }
    curve("map_items", "mproc", (double)n, v, reps);
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
      e = mproc_pool_map_shm(p, square, b, 0, sizeof *in, top * sizeof *in, sizeof *out, n, NULL,
                             NULL, -1);
      if (e != 0)
        die("map_shm", e);
      v[r] = (double)n / (bench_now_s() - t0);
    }
    curve("map_items", "mproc_shm", (double)n, v, reps);
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
      e = mproc_pool_map_shm_range(p, bench_squares, b, 0, sizeof *in, top * sizeof *in,
                                   sizeof *out, n, NULL, NULL, -1);
      if (e != 0)
        die("map_shm_range", e);
      v[r] = (double)n / (bench_now_s() - t0);
    }
    curve("map_items", "mproc_shm_range", (double)n, v, reps);
#ifdef MPROC_BENCH_OPENMP
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
#pragma omp parallel for
      for (size_t i = 0; i < n; i++)
        out[i] = in[i] * in[i];
      __asm__ volatile("" : : "r"(out) : "memory");
      v[r] = (double)n / (bench_now_s() - t0);
    }
    curve("map_items", "openmp", (double)n, v, reps);
#endif
  }
  mproc_shm_free(b);
}

static void map_item_sizes(void) {
  size_t total = quick ? (size_t)1 << 20 : (size_t)64 << 20;
  char *in = malloc(total), *out = malloc(total);
  memset(in, 7, total);
  memset(out, 0, total);
  for (size_t k = 0; k < NSIZES && msg_sizes[k] <= total / 4; k++) {
    size_t sz = msg_sizes[k], n = total / sz;
    item_size = sz;
    mproc_pool *p = pool_of(2); /* forked after item_size is set */
    double v[5];
    for (int r = 0; r < 5; r++) {
      double t0 = bench_now_s();
      int e = mproc_pool_map(p, copy_item, in, n, sz, out, sz, NULL, NULL, -1);
      if (e != 0)
        die("map", e);
      v[r] = (double)total / (bench_now_s() - t0) / 1e6;
    }
    mproc_pool_free(p);
    curve("map_item_size", "mproc", (double)sz, v, 5);
#ifdef MPROC_BENCH_OPENMP
    for (int r = 0; r < 5; r++) {
      double t0 = bench_now_s();
#pragma omp parallel for
      for (size_t i = 0; i < n; i++)
        memcpy(out + i * sz, in + i * sz, sz);
      __asm__ volatile("" : : "r"(out) : "memory");
      v[r] = (double)total / (bench_now_s() - t0) / 1e6;
    }
    curve("map_item_size", "openmp", (double)sz, v, 5);
#endif
  }
  free(in);
  free(out);
}

/* ---- task round trip vs size ---------------------------------------------- */

static int echo(const void *arg, size_t len, mproc_task_ctx *ctx) {
  return mproc_task_return(ctx, arg, len);
}

static void task_sizes(mproc_pool *p) {
  size_t top = quick ? (size_t)1 << 16 : (size_t)1 << 30;
  char *arg = malloc(top), *back = malloc(top);
  memset(arg, 3, top);
  /* Around each change of mechanism too: inside the ring entry up to 200
   * bytes, the pool's shared arena up to 64 KiB, a memfd above. */
  static const size_t sizes[] = {
      8,         200,     201,      1024,      4096,   16 << 10, 64 << 10, (64 << 10) + 1,
      256 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && sizes[i] <= top; i++) {
    size_t sz = sizes[i];
    int reps = sz >= ((size_t)1 << 30)     ? 1
               : sz >= ((size_t)256 << 20) ? 3
               : sz >= ((size_t)1 << 20)   ? 5
                                           : 7;
    int inner = sz <= ((size_t)64 << 10) + 1 ? 200 : 1;
    double v[7], raw[7];
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
      for (int k = 0; k < inner; k++) {
        mproc_future *f;
        const void *data;
        size_t len;
        int e = mproc_pool_submit(p, echo, arg, sz, &f);
        if (e != 0 || (e = mproc_future_result(f, &data, &len, -1)) != 0 || len != sz)
          die("task", e);
        mproc_future_free(f);
      }
      v[r] = (bench_now_s() - t0) * 1e6 / inner;
      t0 = bench_now_s();
      for (int k = 0; k < inner; k++) {
        memcpy(back, arg, sz);
        __asm__ volatile("" : : "r"(back) : "memory");
        memcpy(arg, back, sz);
        __asm__ volatile("" : : "r"(arg) : "memory");
      }
      raw[r] = (bench_now_s() - t0) * 1e6 / inner;
    }
    curve("task_size", "mproc", (double)sz, v, reps);
    curve("task_size", "raw", (double)sz, raw, reps);
  }
  free(arg);
  free(back);
}

/* ---- pool start-up and memory vs workers ----------------------------------- */

static int whoami(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  pid_t me = getpid();
  return mproc_task_return(ctx, &me, sizeof me);
}

static void pool_sizes(void) {
  int top = quick ? 4 : 256;
  for (int w = 1; w <= top; w *= 2) {
    int reps = w >= 64 ? 3 : 5;
    double v[5], pss[5];
    for (int r = 0; r < reps; r++) {
      double t0 = bench_now_s();
      mproc_pool *p = pool_of(w);
      /* One result from each worker's start-up (not from the first only). */
      mproc_future *f;
      int e = mproc_pool_submit(p, whoami, NULL, 0, &f);
      if (e != 0 || (e = mproc_future_wait(f, -1)) != 0)
        die("first task", e);
      mproc_future_free(f);
      v[r] = (bench_now_s() - t0) * 1e3;
      double rss;
      worker_mem(p, &rss, &pss[r]);
      if (r == 0 && (w == 2 || w == 16)) {
        char name[64];
        double prss, ppss;
        mem_of(getpid(), &prss, &ppss);
        snprintf(name, sizeof name, "mem_idle%d_parent_rss", w);
        report1(name, prss, "KiB");
        snprintf(name, sizeof name, "mem_idle%d_parent_pss", w);
        report1(name, ppss, "KiB");
        snprintf(name, sizeof name, "mem_idle%d_worker_rss", w);
        report1(name, rss, "KiB");
        snprintf(name, sizeof name, "mem_idle%d_worker_pss", w);
        report1(name, pss[r], "KiB");
      }
      mproc_pool_free(p);
    }
    curve("pool_start", "mproc", w, v, reps);
    curve("pool_pss", "mproc", w, pss, reps);
  }
}

struct gen10m {
  int next, n;
};

static int gen_ints(void *ctx, void *item) {
  struct gen10m *g = ctx;
  if (g->next >= g->n)
    return 0;
  *(int *)item = g->next++;
  return 1;
}

static void imap_memory(void) {
  /* Peak RSS of this run only: "5" resets VmHWM (Linux >= 4.0); it runs
   * first anyway, before the big maps. */
  FILE *cr = fopen("/proc/self/clear_refs", "we");
  if (cr != NULL) {
    fputs("5", cr);
    fclose(cr);
  }
  mproc_pool *p = pool_of(2);
  struct gen10m g = {0, quick ? 100000 : 10000000};
  struct mproc_imap_options o = {.chunksize = 1000};
  mproc_imap *it;
  int e = mproc_pool_imap(p, square, gen_ints, &g, sizeof(int), sizeof(int), &o, &it);
  if (e != 0)
    die("imap", e);
  int out;
  long got = 0;
  while ((e = mproc_imap_next(it, &out, NULL, NULL, -1)) == 0)
    got++;
  if (e != MPROC_EEOF || got != g.n)
    die("imap end", e);
  mproc_imap_free(it);
  double rss, pss, hwm = 0;
  worker_mem(p, &rss, &pss);
  FILE *f = fopen("/proc/self/status", "re");
  char line[256];
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmHWM:", 6) == 0)
      hwm = atof(line + 6);
  if (f != NULL)
    fclose(f);
  double prss, ppss;
  mem_of(getpid(), &prss, &ppss);
  report1("mem_imap10m_parent_peak_rss", hwm, "KiB");
  report1("mem_imap10m_parent_pss", ppss, "KiB");
  report1("mem_imap10m_worker_rss", rss, "KiB");
  report1("mem_imap10m_worker_pss", pss, "KiB");
  mproc_pool_free(p);
}

/* ---- queues ----------------------------------------------------------------- */

struct qjob {
  mproc_queue *q;
  long n;
  size_t size;
};

static pid_t spawn_child(mproc__child_fn fn, void *arg, int *pidfd) {
  struct mproc__spawn_opts o = {.fn = fn, .arg = arg, .flags = MPROC__SPAWN_NOFLUSH};
  pid_t pid;
  int r = mproc__spawn(&o, &pid, pidfd);
  if (r != 0)
    die("spawn", r);
  return pid;
}

static void reap(int pidfd) {
  int code = -1;
  mproc__reap(pidfd, &code, -1);
  mproc__close(pidfd);
  if (code != 0)
    die("child", MPROC_ETASK);
}

static int produce(void *arg) {
  struct qjob *j = arg;
  mproc_queue_detach(j->q, MPROC_QUEUE_CONSUMER);
  char *buf = calloc(1, j->size);
  for (long i = 0; i < j->n; i++)
    if (mproc_queue_put(j->q, buf, j->size, -1) != 0)
      return 1;
  mproc_queue_detach(j->q, MPROC_QUEUE_PRODUCER);
  free(buf);
  return 0;
}

static int consume(void *arg) {
  struct qjob *j = arg;
  mproc_queue_detach(j->q, MPROC_QUEUE_PRODUCER);
  char *buf = malloc(j->size);
  size_t len;
  for (long i = 0; i < j->n; i++)
    if (mproc_queue_get(j->q, buf, j->size, &len, -1) != 0)
      return 1;
  free(buf);
  return 0;
}

/* k producers and k consumers, all child processes: messages per second. */
static double queue_rate(int k, long n, size_t size, size_t cap) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = cap};
  int e = mproc_queue_new(&q, &o);
  if (e != 0)
    die("queue_new", e);
  struct qjob j = {q, n / k, size};
  int pf[16];
  double t0 = bench_now_s();
  for (int i = 0; i < k; i++)
    spawn_child(consume, &j, &pf[i]);
  for (int i = 0; i < k; i++)
    spawn_child(produce, &j, &pf[k + i]);
  mproc_queue_detach(q, MPROC_QUEUE_BOTH);
  for (int i = 0; i < 2 * k; i++)
    reap(pf[i]);
  double t = bench_now_s() - t0;
  mproc_queue_free(q);
  return (double)(n / k * k) / t;
}

/* The copying limit for a message size: the bytes copied once into a
 * ring-sized (16 MiB) buffer, as a queue's producer must. */
static double memcpy_mbs(size_t size, size_t total) {
  size_t ring = (size_t)16 << 20;
  char *a = malloc(size), *b = malloc(ring);
  memset(a, 1, size);
  memset(b, 2, ring);
  size_t off = 0;
  double t0 = bench_now_s();
  for (size_t done = 0; done < total; done += size) {
    if (off + size > ring)
      off = 0;
    memcpy(b + off, a, size);
    off += size;
    __asm__ volatile("" : : "r"(b) : "memory");
  }
  double t = bench_now_s() - t0;
  free(a);
  free(b);
  return (double)total / t / 1e6;
}

static void queue_sizes(void) {
  size_t total = quick ? (size_t)4 << 20 : (size_t)256 << 20;
  for (size_t i = 0; i < NSIZES; i++) {
    size_t sz = msg_sizes[i];
    long n = (long)(total / sz);
    if (n > (quick ? 20000 : 2000000))
      n = quick ? 20000 : 2000000;
    double v[5], raw[5];
    for (int r = 0; r < 5; r++) {
      v[r] = queue_rate(1, n, sz, (size_t)16 << 20) * (double)sz / 1e6;
      raw[r] = memcpy_mbs(sz, (size_t)n * sz);
    }
    curve("queue_msg_size", "mproc", (double)sz, v, 5);
    curve("queue_msg_size", "raw", (double)sz, raw, 5);
  }
}

static void queue_procs(void) {
  long n = quick ? 20000 : 2000000;
  for (int k = 1; k <= (quick ? 2 : 8); k *= 2) {
    double v[5], raw[5];
    for (int r = 0; r < 5; r++) {
      v[r] = queue_rate(k, n, 8, (size_t)1 << 20) / 1e6;
      raw[r] = raw_mpmc_rate(k, n) / 1e6;
    }
    curve("queue_procs", "mproc", k, v, 5);
    curve("queue_procs", "raw", k, raw, 5);
  }
}

int main(void) {
  const char *q = getenv("MPROC_BENCH_QUICK");
  quick = q != NULL && strcmp(q, "1") == 0;
  imap_memory();
  map_item_sizes();
  mproc_pool *p = pool_of(2);
  map_items(p);
  task_sizes(p);
  mproc_pool_free(p);
  pool_sizes();
  queue_sizes();
  queue_procs();
  return 0;
}
