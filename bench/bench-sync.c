/* Benchmarks of the process-shared synchronization primitives.
 *
 *   lock_uncontended        ns per acquire+release: mproc Lock, os = a plain
 *                           pthread mutex
 *   value_locked_inc_2proc  increments/s by two processes on one Value under
 *                           its lock
 *   condition_pingpong      us per round trip between two processes through a
 *                           Condition; os = a raw futex ping-pong */
#include "bench.h"
#include "futex.h"

#include <limits.h>
#include <mproc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int quick(void) {
  const char *q = getenv("MPROC_BENCH_QUICK");
  return q != NULL && q[0] == '1';
}

static void check(int r, const char *what) {
  if (r != 0) {
    fprintf(stderr, "bench-sync: %s: %s\n", what, mproc_strerror(r));
    exit(1);
  }
}

static void *shared_page(void) {
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  return p;
}

static void bench_lock_uncontended(long n) {
  double v[BENCH_REPS];
  mproc_lock *l;
  check(mproc_lock_new(&l), "lock_new");
  for (int rep = 0; rep < BENCH_REPS; rep++) {
    double t0 = bench_now_s();
    for (long i = 0; i < n; i++) {
      mproc_lock_acquire(l, MPROC_FOREVER);
      mproc_lock_release(l);
    }
    v[rep] = (bench_now_s() - t0) * 1e9 / (double)n;
  }
  bench_report("lock_uncontended", "mproc", v, BENCH_REPS, "ns");
  mproc_lock_free(l);

  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  for (int rep = 0; rep < BENCH_REPS; rep++) {
    double t0 = bench_now_s();
    for (long i = 0; i < n; i++) {
      pthread_mutex_lock(&m);
      pthread_mutex_unlock(&m);
    }
    v[rep] = (bench_now_s() - t0) * 1e9 / (double)n;
  }
  bench_report("lock_uncontended", "os", v, BENCH_REPS, "ns");
}

static void bench_value_inc(long n) {
  double v[BENCH_REPS];
  for (int rep = 0; rep < BENCH_REPS; rep++) {
    mproc_value *val;
    mproc_rlock *lock;
    check(mproc_value_new(&val, MPROC_TYPE_INT64, NULL, NULL), "value_new");
    check(mproc_value_get_lock(val, &lock), "get_lock");
    int64_t *x = mproc_value_ptr(val);
    double t0 = bench_now_s();
    pid_t pid[2];
    for (int k = 0; k < 2; k++) {
      if ((pid[k] = fork()) == 0) {
        for (long i = 0; i < n; i++) {
          mproc_rlock_acquire(lock, MPROC_FOREVER);
          (*x)++;
          mproc_rlock_release(lock);
        }
        _exit(0);
      }
    }
    for (int k = 0; k < 2; k++)
      waitpid(pid[k], NULL, 0);
    double dt = bench_now_s() - t0;
    if (*x != 2 * n) {
      fprintf(stderr, "bench-sync: lost increments: %lld != %ld\n", (long long)*x, 2 * n);
      exit(1);
    }
    v[rep] = (double)(2 * n) / dt;
    mproc_value_free(val);
  }
  bench_report("value_locked_inc_2proc", "mproc", v, BENCH_REPS, "inc/s");
}

struct pingpong {
  mproc_cond *cond;
  int turn; /* 0: the parent's, 1: the child's; guarded by cond's lock */
  _Atomic uint32_t word;
};

static int child_turn(void *arg) { return ((struct pingpong *)arg)->turn == 1; }

static void bench_condition(long n) {
  double v[BENCH_REPS];
  struct pingpong *pp = shared_page();
  check(mproc_cond_new(&pp->cond), "cond_new");
  for (int rep = 0; rep < BENCH_REPS; rep++) {
    pp->turn = 0;
    pid_t pid = fork();
    if (pid == 0) {
      mproc_cond_acquire(pp->cond, MPROC_FOREVER);
      for (long i = 0; i < n; i++) {
        mproc_cond_wait_for(pp->cond, child_turn, pp, MPROC_FOREVER);
        pp->turn = 0;
        mproc_cond_notify(pp->cond, 1);
      }
      mproc_cond_release(pp->cond);
      _exit(0);
    }
    double t0 = bench_now_s();
    mproc_cond_acquire(pp->cond, MPROC_FOREVER);
    for (long i = 0; i < n; i++) {
      pp->turn = 1;
      mproc_cond_notify(pp->cond, 1);
      while (pp->turn != 0)
        mproc_cond_wait(pp->cond, MPROC_FOREVER);
    }
    mproc_cond_release(pp->cond);
    v[rep] = (bench_now_s() - t0) * 1e6 / (double)n;
    waitpid(pid, NULL, 0);
  }
  bench_report("condition_pingpong", "mproc", v, BENCH_REPS, "us");
  mproc_cond_free(pp->cond);

  /* The floor: two processes handing a futex word back and forth. */
  for (int rep = 0; rep < BENCH_REPS; rep++) {
    atomic_store(&pp->word, 0);
    pid_t pid = fork();
    if (pid == 0) {
      for (long i = 0; i < n; i++) {
        while (atomic_load(&pp->word) != 1)
          mproc__futex_wait(&pp->word, 0, -1, true);
        atomic_store(&pp->word, 0);
        mproc__futex_wake(&pp->word, 1, true);
      }
      _exit(0);
    }
    double t0 = bench_now_s();
    for (long i = 0; i < n; i++) {
      atomic_store(&pp->word, 1);
      mproc__futex_wake(&pp->word, 1, true);
      while (atomic_load(&pp->word) != 0)
        mproc__futex_wait(&pp->word, 1, -1, true);
    }
    v[rep] = (bench_now_s() - t0) * 1e6 / (double)n;
    waitpid(pid, NULL, 0);
  }
  bench_report("condition_pingpong", "os", v, BENCH_REPS, "us");
  munmap(pp, 4096);
}

int main(void) {
  int q = quick();
  bench_lock_uncontended(q ? 10000 : 5000000);
  bench_value_inc(q ? 10000 : 2000000);
  bench_condition(q ? 1000 : 50000);
  return 0;
}
