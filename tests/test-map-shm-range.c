/* mproc_pool_map_shm_range: the zero-copy map with a range function, one
 * call per contiguous run of elements.  Runs are split one per worker by
 * default; results are exact for every chunking and start method;
 * failures blame the element the function names, deaths the run's first
 * element; nothing leaks (the harness counts fds, maps, /dev/shm and
 * children).  Its refusals of bad arguments are tested beside
 * mproc_pool_map_shm's, in test-map-shm.c.
 * ctest-labels: threads */
#include "pool-helpers.h"

/* Squares a run, counting its calls on the test's shared page. */
static int squares(const void *in, void *out, size_t n, size_t *failed) {
  (void)failed;
  const int *a = in;
  int *b = out;
  for (size_t i = 0; i < n; i++)
    b[i] = a[i] * a[i];
  atomic_fetch_add(&S->count, 1);
  return 0;
}

/* Fails at value 1234 with code 11, naming it; at value 4321 with code 12,
 * naming a position past its run; its worker exits with status 4 at value
 * -7. */
static int picky(const void *in, void *out, size_t n, size_t *failed) {
  const int *a = in;
  int *b = out;
  for (size_t i = 0; i < n; i++) {
    if (a[i] == 1234) {
      *failed = i;
      return 11;
    }
    if (a[i] == 4321) {
      *failed = n + 5;
      return 12;
    }
    if (a[i] == -7)
      _exit(4);
    b[i] = a[i] + 1;
  }
  return 0;
}

/* Sleeps in[0] milliseconds once per run (work of a known length). */
static int slow(const void *in, void *out, size_t n, size_t *failed) {
  (void)out, (void)n, (void)failed;
  sleep_ms(*(const int *)in);
  return 0;
}

/* Every chunking gives exact results; the default makes one run per worker. */
static void squares_by(int method) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options po = {.workers = 3, .start_method = method};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  enum { N = 100003 };
  mproc_shm *b = ints_block(N);
  int *in = mproc_shm_addr(b), *out = in + N;
  static const struct {
    size_t chunk, runs;
  } cases[] = {{0, 3}, {1000, 101}, {7, 14287}, {N, 1}, {2 * N, 1}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    memset(out, 0, N * sizeof *out);
    atomic_store(&S->count, 0);
    struct mproc_map_options o = {.chunksize = cases[c].chunk};
    mproc_assert_ok(mproc_pool_map_shm_range(p, squares, b, 0, sizeof(int), N * sizeof(int),
                                             sizeof(int), N, &o, NULL, 30000));
    ck_assert_uint_eq(bad_squares(in, out, N), 0);
    ck_assert_int_eq(atomic_load(&S->count), (int)cases[c].runs);
  }
  /* Exactly in place, fewer items than workers, no items, no output. */
  mproc_assert_ok(mproc_pool_map_shm_range(p, squares, b, 0, sizeof(int), 0, sizeof(int), 2, NULL,
                                           NULL, 30000));
  ck_assert_int_eq(in[0], 100 * 100);
  ck_assert_int_eq(in[1], 99 * 99);
  ck_assert_int_eq(in[2], -98);
  mproc_assert_ok(
      mproc_pool_map_shm_range(p, squares, b, 0, sizeof(int), 0, sizeof(int), 0, NULL, NULL, 0));
  mproc_assert_ok(mproc_pool_map_shm_range(p, slow, b, 100 * sizeof(int), sizeof(int), 0, 0, 3,
                                           NULL, NULL, 30000));
  mproc_assert_ok(mproc_shm_free(b));
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}

START_TEST(test_squares_by_every_start_method) {
  squares_by(MPROC_START_FORK);
  squares_by(MPROC_START_SPAWN);
  squares_by(MPROC_START_FORKSERVER);
}
END_TEST

START_TEST(test_async_with_the_block_freed_early) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  char name[64];
  mproc_shm *b;
  enum { N = 5000 };
  mproc_assert_ok(
      mproc_shm_create(&b, mproc_test_shm_name(name, sizeof name, "mapshmr"), 2 * N * sizeof(int)));
  int *in = mproc_shm_addr(b);
  for (int i = 0; i < N; i++)
    in[i] = i;
  /* The results are read through a mapping of our own, which outlives the
   * block's handle. */
  size_t maplen = mproc__shm_data_off(b) + 2 * N * sizeof(int);
  unsigned char *m = mmap(NULL, maplen, PROT_READ, MAP_SHARED, mproc_shm_fd(b), 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  const int *view = (const int *)(m + mproc__shm_data_off(b));
  mproc_future *f;
  mproc_assert_ok(mproc_pool_map_shm_range_async(p, squares, b, 0, sizeof(int), N * sizeof(int),
                                                 sizeof(int), N, NULL, &f));
  mproc_assert_ok(mproc_shm_free(b)); /* the pool holds its own reference */
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  mproc_future_free(f);
  ck_assert_uint_eq(bad_squares(view, view + N, N), 0);
  munmap(m, maplen);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_failure_and_death_blame) {
  mproc_pool *p = make_pool(2);
  enum { N = 2000 };
  mproc_shm *b = ints_block(N); /* in[i] = i - 100 */
  int *in = mproc_shm_addr(b), *out = in + N;
  struct mproc_task_error e;
  struct mproc_map_options o = {.chunksize = 100};
  in[93] = 0; /* -7: no death yet */
  /* The element the function names. */
  mproc_assert_err(mproc_pool_map_shm_range(p, picky, b, 0, sizeof(int), N * sizeof(int),
                                            sizeof(int), N, &o, &e, 30000),
                   MPROC_ETASK);
  ck_assert_uint_eq(e.index, 1334);
  ck_assert_int_eq(e.task_code, 11);
  /* A position past the run: its last element. */
  in[1334] = 4321;
  mproc_assert_err(mproc_pool_map_shm_range(p, picky, b, 0, sizeof(int), N * sizeof(int),
                                            sizeof(int), N, &o, &e, 30000),
                   MPROC_ETASK);
  ck_assert_uint_eq(e.index, 1399);
  ck_assert_int_eq(e.task_code, 12);
  /* A death: the first element of its run. */
  in[1334] = 0;
  in[1293] = -7;
  mproc_assert_err(mproc_pool_map_shm_range(p, picky, b, 0, sizeof(int), N * sizeof(int),
                                            sizeof(int), N, &o, &e, 30000),
                   MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 1200);
  ck_assert_int_eq(e.exit_status, 4);
  /* The replaced worker maps the block afresh. */
  in[1293] = 0;
  mproc_assert_ok(mproc_pool_map_shm_range(p, picky, b, 0, sizeof(int), N * sizeof(int),
                                           sizeof(int), N, NULL, &e, 30000));
  ck_assert_int_eq(out[N - 1], N - 100);
  ck_assert_int_eq(e.code, 0);
  /* A deadline passing cancels the rest; the pool stays usable. */
  in[0] = 2000;
  struct mproc_map_options one = {.chunksize = 1};
  mproc_assert_err(mproc_pool_map_shm_range(p, slow, b, 0, sizeof(int), 0, 0, 8, &one, NULL, 30),
                   MPROC_ETIMEDOUT);
  in[0] = 3;
  mproc_assert_ok(
      mproc_pool_map_shm_range(p, picky, b, 0, sizeof(int), 0, sizeof(int), 1, NULL, NULL, 30000));
  ck_assert_int_eq(in[0], 4);
  mproc_assert_ok(mproc_shm_free(b));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("map-shm-range");
  TCase *tc = mproc_test_tcase(s, "map-shm-range", 120);
  tcase_add_test(tc, test_squares_by_every_start_method);
  tcase_add_test(tc, test_async_with_the_block_freed_early);
  tcase_add_test(tc, test_failure_and_death_blame);
  return mproc_test_run(s);
}
