/* mproc_pool_map_shm: zero-copy map over arrays in a shared block made
 * after the pool; workers map a block once and let it go when it is closed;
 * failures and deaths blame the exact item; bad arguments are refused (by
 * mproc_pool_map_shm_range too) and nothing leaks (the harness counts fds, maps, /dev/shm and
 * children). ctest-labels: threads */
#include "pool-helpers.h"

#include <sys/wait.h>

static int sq(const void *in, void *out) {
  int v = *(const int *)in;
  *(int *)out = v * v;
  return 0;
}

/* Fails at value 1234 with code 11; its worker exits with status 4 at
 * value -7. */
static int picky(const void *in, void *out) {
  int v = *(const int *)in;
  if (v == 1234)
    return 11;
  if (v == -7)
    _exit(4);
  *(int *)out = v + 1;
  return 0;
}

static int slow(const void *in, void *out) {
  (void)out;
  sleep_ms(*(const int *)in);
  return 0;
}

START_TEST(test_squares_in_place_of_the_block) {
  mproc_pool *p = make_pool(3);
  enum { N = 100003 };
  mproc_shm *b = ints_block(N);
  int *in = mproc_shm_addr(b), *out = in + N;
  static const size_t chunks[] = {0, 1000, 7, N, 2 * N};
  for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
    memset(out, 0, N * sizeof *out);
    struct mproc_map_options o = {.chunksize = chunks[c]};
    mproc_assert_ok(mproc_pool_map_shm(p, sq, b, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                       &o, NULL, 30000));
    ck_assert_uint_eq(bad_squares(in, out, N), 0);
  }
  /* Exactly in place: out[i] is in[i]. */
  mproc_assert_ok(
      mproc_pool_map_shm(p, sq, b, 0, sizeof(int), 0, sizeof(int), 4, NULL, NULL, 30000));
  ck_assert_int_eq(in[0], 100 * 100);
  ck_assert_int_eq(in[3], 97 * 97);
  /* No items, and no output at all. */
  mproc_assert_ok(mproc_pool_map_shm(p, sq, b, 0, sizeof(int), 0, 0, 0, NULL, NULL, 0));
  mproc_assert_ok(mproc_pool_map_shm(p, slow, b, 100 * sizeof(int), sizeof(int), 0, 0, 3, NULL,
                                     NULL, 30000)); /* in[100..102]: sleeps of 0..2 ms */
  mproc_assert_ok(mproc_shm_free(b));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_named_block_and_async) {
  mproc_pool *p = make_pool(2);
  char name[64];
  mproc_shm *b;
  enum { N = 5000 };
  mproc_assert_ok(
      mproc_shm_create(&b, mproc_test_shm_name(name, sizeof name, "mapshm"), 2 * N * sizeof(int)));
  int *in = mproc_shm_addr(b), *out = in + N;
  for (int i = 0; i < N; i++)
    in[i] = i;
  mproc_future *f;
  mproc_assert_ok(mproc_pool_map_shm_async(p, sq, b, 0, sizeof(int), N * sizeof(int), sizeof(int),
                                           N, NULL, &f));
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  mproc_future_free(f);
  ck_assert_uint_eq(bad_squares(in, out, N), 0);
  /* Closing the block lets the workers drop it: the name goes (the
   * harness checks /dev/shm), and the pool maps a new block as well. */
  mproc_assert_ok(mproc_shm_free(b));
  mproc_shm *b2 = ints_block(N);
  in = mproc_shm_addr(b2);
  mproc_assert_ok(mproc_pool_map_shm(p, sq, b2, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                     NULL, NULL, 30000));
  ck_assert_uint_eq(bad_squares(in, in + N, N), 0);
  mproc_assert_ok(mproc_shm_free(b2));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Mappings of anonymous blocks in process pid (their memfds are named
 * "mproc-shm"). */
static int block_maps(pid_t pid) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *fp = fopen(path, "re");
  ck_assert_ptr_nonnull(fp);
  int n = 0;
  while (fgets(line, sizeof line, fp) != NULL)
    n += strstr(line, "memfd:mproc-shm") != NULL;
  fclose(fp);
  return n;
}

/* Waits (bounded) until the worker maps no block; returns its count then. */
static int wait_no_block_maps(pid_t pid) {
  int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(10000);
  int n;
  while ((n = block_maps(pid)) != 0 && mproc_now_ms() < dl)
    sleep_ms(5);
  return n;
}

/* A pool of one worker, whose pid goes to *pid. */
static mproc_pool *one_worker(pid_t *pid) {
  mproc_pool *p = make_pool(1);
  ck_assert_int_eq(mproc_pool_worker_pids(p, pid, 1), 1);
  return p;
}

START_TEST(test_worker_maps_once_and_lets_go) {
  pid_t pid;
  mproc_pool *p = one_worker(&pid);
  enum { N = 4096 };
  mproc_shm *b = ints_block(N);
  struct mproc_map_options o = {.chunksize = 64};
  for (int k = 0; k < 3; k++)
    mproc_assert_ok(mproc_pool_map_shm(p, sq, b, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                       &o, NULL, 30000));
  /* 192 chunks over three calls: one mapping. */
  ck_assert_int_eq(block_maps(pid), 1);
  mproc_assert_ok(mproc_shm_free(b));
  ck_assert_int_eq(wait_no_block_maps(pid), 0);
  /* More blocks than the cache holds, each closed after use: never more
   * than the cache's worth at once, none once all are closed. */
  mproc_shm *bs[20];
  for (int k = 0; k < 20; k++) {
    bs[k] = ints_block(16);
    mproc_assert_ok(mproc_pool_map_shm(p, sq, bs[k], 0, sizeof(int), 16 * sizeof(int), sizeof(int),
                                       16, NULL, NULL, 30000));
    ck_assert_int_le(block_maps(pid), 8);
  }
  for (int k = 0; k < 20; k++)
    mproc_assert_ok(mproc_shm_free(bs[k]));
  ck_assert_int_eq(wait_no_block_maps(pid), 0);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Sleeps in[i] milliseconds, then squares. */
static int slow_sq(const void *in, void *out) {
  sleep_ms((int)((unsigned)*(const int *)in % 8));
  return sq(in, out);
}

START_TEST(test_block_freed_while_its_map_runs) {
  pid_t pid;
  mproc_pool *p = one_worker(&pid);
  enum { N = 64 };
  mproc_shm *b = ints_block(N);
  struct mproc_map_options o = {.chunksize = 4};
  mproc_future *f;
  mproc_assert_ok(mproc_pool_map_shm_async(p, slow_sq, b, 0, sizeof(int), N * sizeof(int),
                                           sizeof(int), N, &o, &f));
  /* Freed while chunks still wait: later chunks map it again. */
  mproc_assert_ok(mproc_shm_free(b));
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  mproc_future_free(f);
  /* The last handle is gone with the map: the worker lets go too. */
  ck_assert_int_eq(wait_no_block_maps(pid), 0);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_failure_and_death_blame_the_item) {
  mproc_pool *p = make_pool(2);
  enum { N = 2000 };
  mproc_shm *b = ints_block(N); /* in[i] = i - 100 */
  int *in = mproc_shm_addr(b), *out = in + N;
  struct mproc_task_error e;
  struct mproc_map_options o = {.chunksize = 100};
  in[93] = 0; /* no death yet */
  mproc_assert_err(mproc_pool_map_shm(p, picky, b, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                      &o, &e, 30000),
                   MPROC_ETASK);
  ck_assert_uint_eq(e.index, 1334);
  ck_assert_int_eq(e.task_code, 11);
  in[1334] = 0;
  in[93] = -7;
  mproc_assert_err(mproc_pool_map_shm(p, picky, b, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                      &o, &e, 30000),
                   MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 93);
  ck_assert_int_eq(e.exit_status, 4);
  /* The replaced worker maps the block afresh. */
  in[93] = 0;
  mproc_assert_ok(mproc_pool_map_shm(p, picky, b, 0, sizeof(int), N * sizeof(int), sizeof(int), N,
                                     &o, &e, 30000));
  ck_assert_int_eq(out[N - 1], N - 100);
  ck_assert_int_eq(e.code, 0);
  /* A deadline passing cancels the rest; the pool stays usable. */
  for (int i = 0; i < 8; i++)
    in[i] = 2000;
  struct mproc_map_options one = {.chunksize = 1};
  mproc_assert_err(mproc_pool_map_shm(p, slow, b, 0, sizeof(int), 0, 0, 8, &one, NULL, 30),
                   MPROC_ETIMEDOUT);
  in[0] = 3;
  mproc_assert_ok(
      mproc_pool_map_shm(p, sq, b, 0, sizeof(int), 0, sizeof(int), 1, NULL, NULL, 30000));
  ck_assert_int_eq(in[0], 9);
  mproc_assert_ok(mproc_shm_free(b));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static void free_block_cb(mproc_future *f, void *ud) {
  (void)f;
  mproc_shm_free(ud);
}

/* The program exits with a closed pool still working: exit's join holds the
 * pools' lock while a done-callback frees a block the pool was handed. */
static void exit_with_block_freed_in_callback(void) {
  mproc_pool *p = make_pool(1);
  mproc_shm *b = ints_block(16);
  if (mproc_pool_map_shm(p, sq, b, 0, sizeof(int), 16 * sizeof(int), sizeof(int), 16, NULL, NULL,
                         30000) != 0)
    _exit(2);
  int ms = 50;
  mproc_future *f;
  if (mproc_pool_submit(p, task_sleep, &ms, sizeof ms, &f) != 0 ||
      mproc_future_add_done_callback(f, free_block_cb, b) != 0 || mproc_pool_close(p) != 0)
    _exit(3);
  exit(0);
}

START_TEST(test_block_freed_in_a_callback_at_exit) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    exit_with_block_freed_in_callback();
  int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(20000);
  int status = 0;
  pid_t w;
  while ((w = waitpid(pid, &status, WNOHANG)) == 0 && mproc_now_ms() < dl)
    sleep_ms(5);
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ck_assert_msg(w == pid, "the program hung at exit");
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}
END_TEST

static int sq_run(const void *in, void *out, size_t n, size_t *failed) {
  (void)failed;
  for (size_t i = 0; i < n; i++)
    sq((const int *)in + i, (int *)out + i);
  return 0;
}

/* Both zero-copy maps behind one signature: the element form (range 0,
 * fn sq) or the range form (range 1, fn sq_run); `nofn` passes a NULL fn. */
static int map_by(int range, bool nofn, mproc_pool *p, mproc_shm *b, size_t in_off, size_t in_size,
                  size_t out_off, size_t out_size, size_t n, const struct mproc_map_options *o,
                  int64_t timeout_ms) {
  if (range)
    return mproc_pool_map_shm_range(p, nofn ? NULL : sq_run, b, in_off, in_size, out_off, out_size,
                                    n, o, NULL, timeout_ms);
  return mproc_pool_map_shm(p, nofn ? NULL : sq, b, in_off, in_size, out_off, out_size, n, o, NULL,
                            timeout_ms);
}

static int map_async_by(int range, mproc_pool *p, mproc_shm *b, size_t out_off, size_t n,
                        mproc_future **f) {
  const size_t I = sizeof(int);
  if (range)
    return mproc_pool_map_shm_range_async(p, sq_run, b, 0, I, out_off, I, n, NULL, f);
  return mproc_pool_map_shm_async(p, sq, b, 0, I, out_off, I, n, NULL, f);
}

/* The same refusals from mproc_pool_map_shm and mproc_pool_map_shm_range. */
START_TEST(test_bad_arguments) {
  for (int range = 0; range < 2; range++) {
    mproc_pool *p = make_pool(1);
    mproc_shm *b;
    mproc_assert_ok(mproc_shm_new(&b, 1000));
    const size_t I = sizeof(int);
    mproc_assert_err(map_by(range, false, NULL, b, 0, I, 500, I, 10, NULL, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, true, p, b, 0, I, 500, I, 10, NULL, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, false, p, NULL, 0, I, 500, I, 10, NULL, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, false, p, b, 0, 0, 500, I, 10, NULL, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, false, p, b, 0, I, 500, I, 10, NULL, -2), MPROC_EINVAL);
    struct mproc_map_options flags = {.flags = 1}, prog = {.progress = 7};
    mproc_assert_err(map_by(range, false, p, b, 0, I, 500, I, 10, &flags, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, false, p, b, 0, I, 500, I, 10, &prog, 0), MPROC_EINVAL);
    /* Ranges leaving the block, by an element, by offset, by overflow. */
    mproc_assert_err(map_by(range, false, p, b, 0, I, 500, I, 126, NULL, 0), MPROC_ERANGE);
    mproc_assert_err(map_by(range, false, p, b, 997, I, 0, 0, 1, NULL, 0), MPROC_ERANGE);
    mproc_assert_err(map_by(range, false, p, b, 1001, I, 0, 0, 0, NULL, 0), MPROC_ERANGE);
    mproc_assert_err(map_by(range, false, p, b, 0, I, SIZE_MAX, I, 1, NULL, 0), MPROC_ERANGE);
    mproc_assert_err(map_by(range, false, p, b, 0, SIZE_MAX / 2, 0, 0, 4, NULL, 0), MPROC_ERANGE);
    /* Output overlapping the input other than exactly in place. */
    mproc_assert_err(map_by(range, false, p, b, 0, I, 4, I, 10, NULL, 0), MPROC_EINVAL);
    mproc_assert_err(map_by(range, false, p, b, 0, 8, 0, 4, 10, NULL, 0), MPROC_EINVAL);
    mproc_future *f = (mproc_future *)b;
    mproc_assert_err(map_async_by(range, p, b, 500, 10, NULL), MPROC_EINVAL);
    mproc_assert_err(map_async_by(range, NULL, b, 500, 10, &f), MPROC_EINVAL);
    mproc_assert_err(map_async_by(range, p, b, 500, 126, &f), MPROC_ERANGE);
    ck_assert_ptr_eq(f, (mproc_future *)b); /* untouched on failure */
    /* The block at its very end, and a closed pool. */
    mproc_assert_ok(map_by(range, false, p, b, 0, I, 500, I, 125, NULL, 30000));
    mproc_assert_ok(mproc_pool_close(p));
    mproc_assert_err(map_by(range, false, p, b, 0, I, 500, I, 10, NULL, 0), MPROC_ECLOSED);
    mproc_assert_ok(mproc_shm_free(b));
    mproc_assert_ok(mproc_pool_free(p));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("map-shm");
  TCase *tc = mproc_test_tcase(s, "map-shm", 120);
  tcase_add_test(tc, test_squares_in_place_of_the_block);
  tcase_add_test(tc, test_named_block_and_async);
  tcase_add_test(tc, test_worker_maps_once_and_lets_go);
  tcase_add_test(tc, test_block_freed_while_its_map_runs);
  tcase_add_test(tc, test_failure_and_death_blame_the_item);
  tcase_add_test(tc, test_block_freed_in_a_callback_at_exit);
  tcase_add_test(tc, test_bad_arguments);
  return mproc_test_run(s);
}
