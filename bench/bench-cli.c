/* cli_true, cli_1ms: milliseconds per job when `mproc run` runs 10,000 jobs
 * of `true` (and of `sleep 0.001`) with -j = CPUs, side by side with
 * `xargs -P` (impl "os", the raw baseline) and GNU parallel (impl
 * "parallel"); cli_true_keep_order is `mproc run -k`.  The three read the
 * same input file and run the same program per line, so the difference is
 * each runner's own cost per job.  GNU parallel is slow enough (milliseconds
 * per job) that it runs fewer repetitions.  MPROC_BENCH_QUICK=1: 100 jobs. */
#include "bench.h"

#include <mproc.h>
#include <string.h>
#include <unistd.h>

#ifndef MPROC_TOOL
#error "MPROC_TOOL: path of the mproc executable (set by bench/CMakeLists.txt)"
#endif

static char input_true[64], input_sleep[64];

/* n lines: the line number, or `fixed` on every line. */
static void write_input(char *path, const char *fixed, int n) {
  strcpy(path, "/tmp/mproc-bench-cli-XXXXXX");
  char num[16];
  int fd = mkstemp(path);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL) {
    perror("bench-cli: input file");
    exit(1);
  }
  for (int i = 0; i < n; i++)
    fprintf(f, "%s\n", fixed ? fixed : (snprintf(num, sizeof num, "%d", i), num));
  fclose(f);
}

/* Wall milliseconds per job of one shell command line (stdin: input). */
static double run_ms(const char *cmd, const char *input, int jobs) {
  char line[512];
  snprintf(line, sizeof line, "%s < %s > /dev/null", cmd, input);
  double t0 = bench_now_s();
  int st = system(line);
  double t = (bench_now_s() - t0) * 1e3 / jobs;
  if (st != 0) {
    fprintf(stderr, "bench-cli: '%s' failed (status %d)\n", line, st);
    exit(1);
  }
  return t;
}

/* Reports the median of `reps` runs and returns it. */
static double measure(const char *metric, const char *impl, const char *cmd, const char *input,
                      int jobs, int reps) {
  double v[BENCH_REPS];
  for (int i = 0; i < reps; i++)
    v[i] = run_ms(cmd, input, jobs);
  bench_report(metric, impl, v, reps, "ms");
  return bench_median(v, reps);
}

int main(void) {
  bool quick = getenv("MPROC_BENCH_QUICK") && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  int n = quick ? 100 : 10000, reps = quick ? 3 : 5, preps = 1;
  int cpus = mproc_cpu_count();
  bool have_parallel = system("parallel --version 2>/dev/null | grep -q 'GNU parallel'") == 0;
  write_input(input_true, NULL, n);
  write_input(input_sleep, "0.001", n);
  char cmd[512];
  printf("# cli: %d jobs per run, -j %d\n", n, cpus);

  snprintf(cmd, sizeof cmd, "%s run -j %d true", MPROC_TOOL, cpus);
  double m_true = measure("cli_true", "mproc", cmd, input_true, n, reps);
  snprintf(cmd, sizeof cmd, "xargs -P %d -n 1 true", cpus);
  double x_true = measure("cli_true", "os", cmd, input_true, n, reps);
  snprintf(cmd, sizeof cmd, "%s run -k -j %d true", MPROC_TOOL, cpus);
  double k_true = measure("cli_true_keep_order", "mproc", cmd, input_true, n, reps);

  snprintf(cmd, sizeof cmd, "%s run -j %d sleep", MPROC_TOOL, cpus);
  double m_1ms = measure("cli_1ms", "mproc", cmd, input_sleep, n, reps);
  snprintf(cmd, sizeof cmd, "xargs -P %d -n 1 sleep", cpus);
  double x_1ms = measure("cli_1ms", "os", cmd, input_sleep, n, reps);

  /* The targets: no slower than xargs -P, at least 4x faster than GNU
   * parallel, -k within 1.2x of the unordered run. */
  printf("# ratio cli_true: mproc/xargs %.2f (target <= 1), -k/unordered %.2f (target <= 1.2)\n",
         m_true / x_true, k_true / m_true);
  printf("# ratio cli_1ms: mproc/xargs %.2f (target <= 1)\n", m_1ms / x_1ms);
  if (have_parallel) {
    snprintf(cmd, sizeof cmd, "parallel --will-cite -j %d true", cpus);
    double p_true = measure("cli_true", "parallel", cmd, input_true, n, preps);
    snprintf(cmd, sizeof cmd, "parallel --will-cite -j %d sleep", cpus);
    double p_1ms = measure("cli_1ms", "parallel", cmd, input_sleep, n, preps);
    printf("# ratio parallel/mproc: cli_true %.2f, cli_1ms %.2f (target >= 4)\n", p_true / m_true,
           p_1ms / m_1ms);
  } else {
    printf("# GNU parallel not installed: its figures are skipped (make bench installs it)\n");
  }
  unlink(input_true);
  unlink(input_sleep);
  return 0;
}
