/* Helpers shared by the C benchmarks.
 *
 * Each measurement is repeated (at least 5 times) and reported as its median
 * on one line:  BENCH <metric> <impl> <median> <unit>
 * where impl is mproc, python, openmp or os.  bench/run.sh collects the lines
 * of every benchmark into build/bench/results.txt and prints the ratios. */
#ifndef MPROC_BENCH_H
#define MPROC_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_REPS 7

static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts v in place and returns its median. */
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline void bench_report(const char *metric, const char *impl, double *v, int n,
                                const char *unit) {
  printf("BENCH %s %s %.6g %s\n", metric, impl, bench_median(v, n), unit);
  fflush(stdout);
}

/* x*x over a contiguous run of ints: the range function of the map_shm
 * benchmarks (mproc_map_range_fn). */
static inline int bench_squares(const void *in, void *out, size_t n, size_t *failed) {
  (void)failed;
  const int *a = in;
  int *b = out;
  for (size_t i = 0; i < n; i++)
    b[i] = a[i] * a[i];
  return 0;
}

#endif /* MPROC_BENCH_H */
