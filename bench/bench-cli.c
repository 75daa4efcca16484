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

/* One runner's command line and its timings. */
struct runner {
  const char *metric, *impl;
  char cmd[256];
  double v[BENCH_REPS];
  double median;
};

/* Times every runner of rs `reps` times, round-robin: on a shared machine
 * the load drifts, and alternating the runners exposes them to the same
 * drift, where timing one after the other would not.  Then reports each
 * median. */
static void measure(struct runner *rs, int nr, const char *input, int jobs, int reps) {
  for (int i = 0; i < reps; i++)
    for (int k = 0; k < nr; k++)
      rs[k].v[i] = run_ms(rs[k].cmd, input, jobs);
  for (int k = 0; k < nr; k++) {
    bench_report(rs[k].metric, rs[k].impl, rs[k].v, reps, "ms");
    rs[k].median = bench_median(rs[k].v, reps);
  }
}

int main(void) {
  bool quick = getenv("MPROC_BENCH_QUICK") && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  int n = quick ? 100 : 10000, reps = quick ? 3 : 5, preps = 1;
  int cpus = mproc_cpu_count();
  bool have_parallel = system("parallel --version 2>/dev/null | grep -q 'GNU parallel'") == 0;
  write_input(input_true, NULL, n);
  write_input(input_sleep, "0.001", n);
  printf("# cli: %d jobs per run, -j %d\n", n, cpus);

  /* Round-robin within each group; GNU parallel, at milliseconds a job,
   * gets one run of its own. */
  struct runner t[3] = {{.metric = "cli_true", .impl = "mproc"},
                        {.metric = "cli_true", .impl = "os"},
                        {.metric = "cli_true_keep_order", .impl = "mproc"}};
  snprintf(t[0].cmd, sizeof t[0].cmd, "%s run -j %d true", MPROC_TOOL, cpus);
  snprintf(t[1].cmd, sizeof t[1].cmd, "xargs -P %d -n 1 true", cpus);
  snprintf(t[2].cmd, sizeof t[2].cmd, "%s run -k -j %d true", MPROC_TOOL, cpus);
  measure(t, 3, input_true, n, reps);
  struct runner m[2] = {{.metric = "cli_1ms", .impl = "mproc"},
                        {.metric = "cli_1ms", .impl = "os"}};
  snprintf(m[0].cmd, sizeof m[0].cmd, "%s run -j %d sleep", MPROC_TOOL, cpus);
  snprintf(m[1].cmd, sizeof m[1].cmd, "xargs -P %d -n 1 sleep", cpus);
  measure(m, 2, input_sleep, n, reps);

  /* The targets: no slower than xargs -P, at least 4x faster than GNU
   * parallel, -k within 1.2x of the unordered run. */
  printf("# ratio cli_true: mproc/xargs %.2f (target <= 1), -k/unordered %.2f (target <= 1.2)\n",
         t[0].median / t[1].median, t[2].median / t[0].median);
  printf("# ratio cli_1ms: mproc/xargs %.2f (target <= 1)\n", m[0].median / m[1].median);
  if (have_parallel) {
    struct runner p[2] = {{.metric = "cli_true", .impl = "parallel"},
                          {.metric = "cli_1ms", .impl = "parallel"}};
    snprintf(p[0].cmd, sizeof p[0].cmd, "parallel --will-cite -j %d true", cpus);
    snprintf(p[1].cmd, sizeof p[1].cmd, "parallel --will-cite -j %d sleep", cpus);
    measure(&p[0], 1, input_true, n, preps);
    measure(&p[1], 1, input_sleep, n, preps);
    printf("# ratio parallel/mproc: cli_true %.2f, cli_1ms %.2f (target >= 4)\n",
           p[0].median / t[0].median, p[1].median / m[0].median);
  } else {
    printf("# GNU parallel not installed: its figures are skipped (make bench installs it)\n");
  }
  unlink(input_true);
  unlink(input_sleep);
  return 0;
}
