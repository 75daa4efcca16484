/* What the MPI test programs share (mpi-cases.c, mpi-pool.c): checks that
 * end the rank with a message, the deadline scale, and the task and element
 * functions both send to worker ranks. */
#ifndef MPROC_TEST_MPI_TEST_H
#define MPROC_TEST_MPI_TEST_H

#include <mproc.h>
#include <mproc/mpi.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)
#define CHECK_ERR(call, want)                                                                      \
  do {                                                                                             \
    int r_ = (call), w_ = (want);                                                                  \
    CHECK(r_ == w_, "got %d (%s), want %d (%s)", r_, mproc_err_name(r_), w_, mproc_err_name(w_));  \
  } while (0)

/* A hang-detection deadline, stretched by MPROC_TEST_TIMEOUT_SCALE. */
static inline int64_t scaled(int64_t ms) {
  const char *s = getenv("MPROC_TEST_TIMEOUT_SCALE");
  double k = s ? atof(s) : 1.0;
  return (int64_t)(ms * (k > 1 ? k : 1));
}

static inline int square_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  if (len != sizeof(int64_t))
    return mproc_task_fail(ctx, 7, "bad length %zu", len);
  int64_t v;
  memcpy(&v, arg, sizeof v);
  v *= v;
  return mproc_task_return(ctx, &v, sizeof v);
}

static inline int segv_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  raise(SIGSEGV);
  return 0;
}

/* Runs until it is killed (a timeout, a cancel, the job's end). */
static inline int sleep_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  for (;;)
    pause();
  return 0;
}

/* Kills the rank process itself (the local worker's parent). */
static inline int kill_rank_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  kill(getppid(), SIGKILL);
  for (;;)
    pause();
  return 0;
}

/* out = 3 * in (int32 -> int64); the element -1 fails with 5. */
static inline int triple(const void *in, void *out) {
  int32_t v;
  memcpy(&v, in, sizeof v);
  if (v == -1)
    return 5;
  int64_t r = 3 * (int64_t)v;
  memcpy(out, &r, sizeof r);
  return 0;
}

struct mpi_case {
  const char *name;
  void (*fn)(void);
};

/* Rank 0: run the case called `name` of cases[0..n), leave MPI and say
 * PASS; 2 when there is no such case. */
static inline int run_case(const struct mpi_case *cases, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(name, cases[i].name) == 0) {
      cases[i].fn();
      CHECK_ERR(mproc_mpi_finalize(scaled(30000)), 0);
      printf("PASS %s\n", name);
      return 0;
    }
  }
  fprintf(stderr, "unknown case '%s'\n", name);
  return 2;
}

#endif /* MPROC_TEST_MPI_TEST_H */
