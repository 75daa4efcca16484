/* process_start_join: microseconds to start a child running an empty
 * function and join it, through mproc and through raw fork + waitpid. */
#include "bench.h"

#include <mproc.h>
#include <sys/wait.h>
#include <unistd.h>

static int empty(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  return 0;
}

static double mproc_once(int n) {
  double t0 = bench_now_s();
  for (int i = 0; i < n; i++) {
    mproc_process *p;
    if (mproc_process_new(&p, empty, NULL, 0, NULL) != 0 || mproc_process_start(p) != 0 ||
        mproc_process_join(p, -1) != 0) {
      fprintf(stderr, "bench-process: mproc start/join failed\n");
      exit(1);
    }
    mproc_process_free(p);
  }
  return (bench_now_s() - t0) / n * 1e6;
}

static double os_once(int n) {
  double t0 = bench_now_s();
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) {
      fprintf(stderr, "bench-process: fork/waitpid failed\n");
      exit(1);
    }
  }
  return (bench_now_s() - t0) / n * 1e6;
}

int main(void) {
  const char *q = getenv("MPROC_BENCH_QUICK");
  int n = q != NULL && q[0] == '1' ? 20 : 1000;
  double m[BENCH_REPS], o[BENCH_REPS];
  mproc_once(n / 10 + 1); /* warm up page tables and caches */
  os_once(n / 10 + 1);
  /* Interleaved, so drifting machine load hits both sides alike. */
  for (int r = 0; r < BENCH_REPS; r++) {
    m[r] = mproc_once(n);
    o[r] = os_once(n);
  }
  bench_report("process_start_join", "mproc", m, BENCH_REPS, "us");
  bench_report("process_start_join", "os", o, BENCH_REPS, "us");
  return 0;
}
