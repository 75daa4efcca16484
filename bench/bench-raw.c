/* The raw mechanisms every mproc hot path is measured against, printed as
 * impl "raw" under the metric names of the mproc benchmarks, so that
 * bench/run.sh and bench/report.py show each metric as a ratio to its limit
 * (the queue's two limits, an SPSC ring and a ring under one mutex, are
 * measured by bench-queue.c, alternately with the queue: bench-raw.h):
 *
 *   lock_uncontended        ns per acquire+release of a robust,
 *                           process-shared pthread mutex
 *   value_locked_inc_2proc  increments/s by two processes on one int64
 *                           under a robust, process-shared pthread mutex
 *   process_start_join      us: vfork + _exit + waitpid
 *
 * These are what a C programmer would write by hand without mproc's
 * guarantees (no close, no crash detection, no record validation), so they
 * are the ceiling, not a competitor.  MPROC_BENCH_QUICK=1 shrinks sizes. */
#include "bench-raw.h"

#include <string.h>

/* ---- robust process-shared mutex ----------------------------------------- */

struct counter {
  pthread_mutex_t m;
  int64_t x;
};

static void robust_init(pthread_mutex_t *m) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
}

static double robust_uncontended_ns(long n) {
  struct counter *c = shared_map(sizeof *c);
  robust_init(&c->m);
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++) {
    pthread_mutex_lock(&c->m);
    pthread_mutex_unlock(&c->m);
  }
  double t = bench_now_s() - t0;
  pthread_mutex_destroy(&c->m);
  munmap(c, sizeof *c);
  return t * 1e9 / (double)n;
}

static double robust_inc_rate(long n) {
  struct counter *c = shared_map(sizeof *c);
  robust_init(&c->m);
  double t0 = bench_now_s();
  pid_t pid[2];
  for (int k = 0; k < 2; k++) {
    if ((pid[k] = fork()) == 0) {
      for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&c->m);
        c->x++;
        pthread_mutex_unlock(&c->m);
      }
      _exit(0);
    }
  }
  for (int k = 0; k < 2; k++)
    wait_child(pid[k]);
  double t = bench_now_s() - t0;
  if (c->x != 2 * n) {
    fprintf(stderr, "bench-raw: lost increments\n");
    exit(1);
  }
  pthread_mutex_destroy(&c->m);
  munmap(c, sizeof *c);
  return (double)(2 * n) / t;
}

/* ---- process start ------------------------------------------------------- */

static void vfork_once(void) {
  pid_t pid = vfork();
  if (pid == 0)
    _exit(0);
  wait_child(pid);
}

static double vfork_us(int n) {
  double t0 = bench_now_s();
  for (int i = 0; i < n; i++)
    vfork_once();
  return (bench_now_s() - t0) / n * 1e6;
}

int main(void) {
  const char *q = getenv("MPROC_BENCH_QUICK");
  bool quick = q != NULL && strcmp(q, "1") == 0;
  double v[BENCH_REPS];

  for (int r = 0; r < BENCH_REPS; r++)
    v[r] = robust_uncontended_ns(quick ? 10000 : 5000000);
  bench_report("lock_uncontended", "raw", v, BENCH_REPS, "ns");
  for (int r = 0; r < BENCH_REPS; r++)
    v[r] = robust_inc_rate(quick ? 10000 : 2000000);
  bench_report("value_locked_inc_2proc", "raw", v, BENCH_REPS, "inc/s");

  int starts = quick ? 20 : 1000;
  vfork_us(starts / 10 + 1);
  for (int r = 0; r < BENCH_REPS; r++)
    v[r] = vfork_us(starts);
  bench_report("process_start_join", "raw", v, BENCH_REPS, "us");
  return 0;
}
