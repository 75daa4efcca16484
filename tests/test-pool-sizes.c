/* Task arguments and results across every change of mechanism: inline in
 * the future itself (up to 16 bytes, parent side), the ring entry (up to
 * 200 bytes), the entry's arena area (up to 64 KiB),
 * a memfd above; both sides of each bound, empty ones, many in flight at
 * once, and a worker dying with a medium argument in flight.
 * ctest-labels: threads */
#include "pool-helpers.h"
#include "pool.h"
#include "shm_layout.h"

#include <fcntl.h>

#define INLINE_MAX 200
#define MEDIUM_MAX ((size_t)64 << 10)
/* Arguments up to this size live in the future itself (no allocation). */
#define ARG_SMALL sizeof(((struct mproc_future *)0)->arg_small)

/* Byte i of a test argument of `len` bytes, for seed k. */
static unsigned char arg_byte(size_t i, size_t len, unsigned k) {
  return (unsigned char)(i * 13 + len + k);
}

/* Result: the argument's bytes, each complemented, then `extra` (the first
 * 8 bytes of the argument, as a size_t) further bytes of 0x5a. */
static int task_echo(const void *a, size_t len, mproc_task_ctx *c) {
  size_t extra = 0;
  if (len >= sizeof extra)
    memcpy(&extra, a, sizeof extra);
  extra = extra > (4u << 20) ? 0 : extra;
  unsigned char *out = mproc_task_result_buf(c, len + extra);
  if (out == NULL && len + extra > 0)
    return MPROC_ENOMEM;
  const unsigned char *in = a;
  for (size_t i = 0; i < len; i++)
    out[i] = (unsigned char)~in[i];
  memset(out + len, 0x5a, extra);
  return 0;
}

/* An argument of len bytes asking for `extra` more result bytes. */
static unsigned char *make_arg(size_t len, size_t extra, unsigned k) {
  unsigned char *a = malloc(len > 0 ? len : 1);
  for (size_t i = 0; i < len; i++)
    a[i] = arg_byte(i, len, k);
  if (len >= sizeof extra)
    memcpy(a, &extra, sizeof extra);
  return a;
}

static void check_result(mproc_future *f, const unsigned char *a, size_t len, size_t extra) {
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_uint_eq(n, len + extra);
  const unsigned char *out = d;
  size_t bad = 0;
  for (size_t i = 0; i < len; i++)
    bad += (out[i] ^ a[i]) != 0xff;
  for (size_t i = len; i < n; i++)
    bad += out[i] != 0x5a;
  ck_assert_msg(bad == 0, "%zu wrong bytes of a %zu-byte result", bad, n);
}

static const size_t sizes[] = {0,
                               1,
                               8,
                               ARG_SMALL,
                               ARG_SMALL + 1,
                               INLINE_MAX - 1,
                               INLINE_MAX,
                               INLINE_MAX + 1,
                               1024,
                               MEDIUM_MAX - 1,
                               MEDIUM_MAX,
                               MEDIUM_MAX + 1,
                               (size_t)1 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

START_TEST(test_boundary_sizes_in_flight_together) {
  mproc_pool *p = make_pool(2);
  /* Arguments up to the medium bound are copied, not handed over as files. */
  ck_assert_uint_eq(MPROC__ARG_INLINE, MEDIUM_MAX);
  /* Three rounds of every size submitted before any is collected: many ring
   * entries (and their areas) hold arguments and results at once. */
  enum { ROUNDS = 3 };
  mproc_future *fs[ROUNDS][NSIZES];
  unsigned char *args[ROUNDS][NSIZES];
  for (unsigned k = 0; k < ROUNDS; k++)
    for (size_t s = 0; s < NSIZES; s++) {
      args[k][s] = make_arg(sizes[s], 0, k);
      mproc_assert_ok(mproc_pool_submit(p, task_echo, args[k][s], sizes[s], &fs[k][s]));
    }
  for (unsigned k = 0; k < ROUNDS; k++)
    for (size_t s = 0; s < NSIZES; s++) {
      check_result(fs[k][s], args[k][s], sizes[s], 0);
      mproc_future_free(fs[k][s]);
      free(args[k][s]);
    }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Writes the argument's length to its one descriptor, then echoes. */
static int task_echo_to_fd(const void *a, size_t len, mproc_task_ctx *c) {
  const int *fds;
  if (mproc_task_fds(c, &fds) != 1 || write(fds[0], &len, sizeof len) != (ssize_t)sizeof len)
    return 5;
  return task_echo(a, len, c);
}

/* Descriptors handed with a task travel beside an argument of every size
 * (one message on the worker's socket, with or without an argument file). */
START_TEST(test_descriptors_beside_every_size) {
  mproc_pool *p = make_pool(1);
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  for (size_t s = 0; s < NSIZES; s++) {
    unsigned char *a = make_arg(sizes[s], 0, 3);
    struct mproc_submit_options o = {.retries = -1, .fds = &pfd[1], .nfds = 1};
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit_ex(p, task_echo_to_fd, a, sizes[s], &o, &f));
    check_result(f, a, sizes[s], 0);
    size_t got = 0;
    ck_assert_int_eq(read(pfd[0], &got, sizeof got), (ssize_t)sizeof got);
    ck_assert_uint_eq(got, sizes[s]);
    mproc_future_free(f);
    free(a);
  }
  close(pfd[0]);
  close(pfd[1]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A pool with no room for the entries' areas carries the same sizes in
 * memory files, both ways. */
START_TEST(test_sizes_without_areas) {
  mproc__shm_areas_max = 0;
  mproc_pool *p = make_pool(1);
  for (size_t s = 0; s < NSIZES; s++) {
    unsigned char *a = make_arg(sizes[s], 0, 7);
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(p, task_echo, a, sizes[s], &f));
    check_result(f, a, sizes[s], 0);
    mproc_future_free(f);
    free(a);
  }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Results on the other side of a bound than their arguments: a small
 * argument with a medium or large result, a medium one with a large one. */
START_TEST(test_result_crosses_the_bounds) {
  mproc_pool *p = make_pool(2);
  static const size_t cases[][2] = {
      {8, INLINE_MAX - 8}, {8, INLINE_MAX - 7}, {8, MEDIUM_MAX - 8},
      {8, MEDIUM_MAX - 7}, {1024, MEDIUM_MAX},  {MEDIUM_MAX, 1},
      {INLINE_MAX + 1, 0}, {MEDIUM_MAX - 1, 2}, {8, (size_t)3 << 20},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned char *a = make_arg(cases[c][0], cases[c][1], (unsigned)c);
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(p, task_echo, a, cases[c][0], &f));
    check_result(f, a, cases[c][0], cases[c][1]);
    mproc_future_free(f);
    free(a);
  }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Kills its worker the first time it runs (S->count counts runs), else
 * echoes. */
static int task_die_once(const void *a, size_t len, mproc_task_ctx *c) {
  if (atomic_fetch_add(&S->count, 1) == 0)
    raise(SIGKILL);
  return task_echo(a, len, c);
}

START_TEST(test_worker_dies_with_a_medium_argument) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  unsigned char *a = make_arg(4096, 0, 1);
  /* With a retry the argument travels again, to the replacement worker. */
  struct mproc_submit_options o = {.retries = 1};
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit_ex(p, task_die_once, a, 4096, &o, &f));
  check_result(f, a, 4096, 0);
  mproc_future_free(f);
  ck_assert_int_eq(atomic_load(&S->count), 2);
  /* Without one the task fails, and the next medium task, in the ring
   * entry the dead worker left, comes back whole. */
  atomic_store(&S->count, 0);
  unsigned char *b = make_arg(MEDIUM_MAX - 1, 0, 2);
  mproc_future *g;
  mproc_assert_ok(mproc_pool_submit(p, task_die_once, a, 4096, &f));
  mproc_assert_ok(mproc_pool_submit(p, task_echo, b, MEDIUM_MAX - 1, &g));
  mproc_assert_ok(mproc_future_wait(f, 30000));
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.code, MPROC_EWORKERDIED);
  ck_assert_int_eq(e.signo, SIGKILL);
  mproc_future_free(f);
  check_result(g, b, MEDIUM_MAX - 1, 0);
  mproc_future_free(g);
  free(a);
  free(b);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-sizes");
  TCase *tc = mproc_test_tcase(s, "pool-sizes", 120);
  tcase_add_test(tc, test_boundary_sizes_in_flight_together);
  tcase_add_test(tc, test_result_crosses_the_bounds);
  tcase_add_test(tc, test_sizes_without_areas);
  tcase_add_test(tc, test_descriptors_beside_every_size);
  tcase_add_test(tc, test_worker_dies_with_a_medium_argument);
  return mproc_test_run(s);
}
