/* process_start_join: microseconds to start a child running an empty
 * function and join it, through mproc and through raw fork + waitpid.
 * The raw child leaves through _exit called by a pointer taken in the
 * parent: a direct call of a function the parent never called is resolved
 * lazily in every child (about ten page faults of the dynamic linker's, a
 * third of a bare start), a cost of this binary's link flags (-z now or a
 * distribution's default removes it) rather than of fork + waitpid, and
 * one mproc's own child does not pay (spawn.c binds its calls in the
 * parent).  Taking the address binds it once, at load.
 * process_start_join_spawn and process_start_join_forkserver: the same under
 * the other start methods (Python's figures come from the spawn and
 * forkserver contexts in bench/py/bench_process.py). */
#include "bench.h"

#include <mproc.h>
#include <sys/wait.h>
#include <unistd.h>

static int empty(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  return 0;
}

static double mproc_once(int method, int n) {
  mproc_process_options o = {.start_method = method};
  double t0 = bench_now_s();
  for (int i = 0; i < n; i++) {
    mproc_process *p;
    if (mproc_process_new(&p, empty, NULL, 0, &o) != 0 || mproc_process_start(p) != 0 ||
        mproc_process_join(p, -1) != 0) {
      fprintf(stderr, "bench-process: mproc start/join failed\n");
      exit(1);
    }
    mproc_process_free(p);
  }
  return (bench_now_s() - t0) / n * 1e6;
}

/* Bound at load (an address is resolved eagerly); volatile, so the
 * compiler cannot turn the calls back into direct lazily bound ones. */
static void (*volatile exit_now)(int) = _exit;

static double os_once(int n) {
  double t0 = bench_now_s();
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid == 0)
      exit_now(0);
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
  double m[BENCH_REPS], o[BENCH_REPS], s[BENCH_REPS], f[BENCH_REPS];
  mproc_once(MPROC_START_FORK, n / 10 + 1); /* warm up page tables and caches */
  os_once(n / 10 + 1);
  /* The forkserver is started by its first use, outside the timing. */
  mproc_once(MPROC_START_FORKSERVER, n / 10 + 1);
  mproc_once(MPROC_START_SPAWN, n / 40 + 1);
  /* Interleaved, so drifting machine load hits every side alike.  A spawn
   * costs an exec: a quarter of the rounds keeps the run short. */
  for (int r = 0; r < BENCH_REPS; r++) {
    m[r] = mproc_once(MPROC_START_FORK, n);
    o[r] = os_once(n);
    f[r] = mproc_once(MPROC_START_FORKSERVER, n);
    s[r] = mproc_once(MPROC_START_SPAWN, n / 4 + 1);
  }
  bench_report("process_start_join", "mproc", m, BENCH_REPS, "us");
  bench_report("process_start_join", "os", o, BENCH_REPS, "us");
  bench_report("process_start_join_spawn", "mproc", s, BENCH_REPS, "us");
  bench_report("process_start_join_forkserver", "mproc", f, BENCH_REPS, "us");
  mproc_forkserver_stop();
  return 0;
}
