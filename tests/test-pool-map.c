/* map, map_async, starmap, imap and imap_unordered.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"

static int sq(const void *in, void *out) {
  long v = *(const int *)in;
  *(long *)out = v * v;
  return 0;
}

/* Fails at item value 777 with code 9; crashes at value 555 if asked. */
static int picky(const void *in, void *out) {
  int v = *(const int *)in;
  if (v == 777)
    return 9;
  if (v == -555)
    raise(SIGKILL);
  *(int *)out = v + 1;
  return 0;
}

static int add3(const void *const *args, void *out) {
  *(double *)out = *(const int *)args[0] + *(const double *)args[1] + *(const char *)args[2];
  return 0;
}

START_TEST(test_map_chunk_sizes) {
  mproc_pool *p = make_pool(3);
  enum { N = 10007 };
  int *in = malloc(N * sizeof *in);
  long *out = malloc(N * sizeof *out);
  for (int i = 0; i < N; i++)
    in[i] = i - 5000;
  static const size_t chunks[] = {0, 1, 7, 1000, N, 2 * N};
  for (size_t c = 0; c < 6; c++) {
    memset(out, 0, N * sizeof *out);
    struct mproc_map_options o = {.chunksize = chunks[c]};
    mproc_assert_ok(mproc_pool_map(p, sq, in, N, sizeof *in, out, sizeof *out, &o, NULL, 30000));
    int bad = 0;
    for (int i = 0; i < N; i++)
      bad += out[i] != (long)in[i] * in[i];
    ck_assert_int_eq(bad, 0);
  }
  /* Empty input. */
  mproc_assert_ok(mproc_pool_map(p, sq, NULL, 0, sizeof *in, NULL, sizeof *out, NULL, NULL, 0));
  free(in);
  free(out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_map_failure_reports_item) {
  mproc_pool *p = make_pool(2);
  enum { N = 2000 };
  int in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  struct mproc_task_error e;
  struct mproc_map_options o = {.chunksize = 100};
  mproc_assert_err(mproc_pool_map(p, picky, in, N, sizeof *in, out, sizeof *out, &o, &e, 30000),
                   MPROC_ETASK);
  ck_assert_uint_eq(e.index, 777);
  ck_assert_int_eq(e.task_code, 9);
  /* A crash in item 1500: the worker dies, the item is named. */
  in[1500] = -555;
  mproc_assert_err(mproc_pool_map(p, picky, in, N, sizeof *in, out, sizeof *out, &o, &e, 30000),
                   MPROC_ETASK); /* 777 still comes first */
  in[777] = 0;
  mproc_assert_err(mproc_pool_map(p, picky, in, N, sizeof *in, out, sizeof *out, &o, &e, 30000),
                   MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 1500);
  ck_assert_int_eq(e.signo, SIGKILL);
  in[1500] = 0;
  mproc_assert_ok(mproc_pool_map(p, picky, in, N, sizeof *in, out, sizeof *out, &o, &e, 30000));
  ck_assert_int_eq(out[N - 1], N);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static int slow(const void *in, void *out) {
  (void)out;
  sleep_ms(*(const int *)in);
  return 0;
}

START_TEST(test_map_async_and_deadline) {
  mproc_pool *p = make_pool(2);
  int in[64];
  long out[64];
  for (int i = 0; i < 64; i++)
    in[i] = i;
  mproc_future *f;
  mproc_assert_ok(mproc_pool_map_async(p, sq, in, 64, sizeof *in, out, sizeof *out, NULL, &f));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(out[63], 63 * 63);
  mproc_future_free(f);
  /* The wait deadline passes: the rest is cancelled, the pool stays usable. */
  int sl[8] = {2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000};
  struct mproc_map_options o = {.chunksize = 1};
  mproc_assert_err(mproc_pool_map(p, slow, sl, 8, sizeof *sl, NULL, 0, &o, NULL, 30),
                   MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_pool_map(p, sq, in, 64, sizeof *in, out, sizeof *out, NULL, NULL, 30000));
  mproc_assert_err(mproc_pool_map(p, NULL, in, 64, sizeof *in, out, sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map(p, sq, NULL, 64, sizeof *in, out, sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map(p, sq, in, 64, 0, out, sizeof *out, NULL, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map(p, sq, in, 64, sizeof *in, NULL, sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  struct mproc_map_options bad = {.flags = 4};
  mproc_assert_err(mproc_pool_map(p, sq, in, 64, sizeof *in, out, sizeof *out, &bad, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map(p, sq, in, 64, sizeof *in, out, sizeof *out, NULL, NULL, -2),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_async(p, sq, in, 64, sizeof *in, out, sizeof *out, NULL, NULL),
                   MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_err(mproc_pool_map(p, sq, in, 64, sizeof *in, out, sizeof *out, NULL, NULL, 0),
                   MPROC_ECLOSED);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_starmap) {
  mproc_pool *p = make_pool(2);
  enum { N = 1000 };
  int a[N];
  double b[N], out[N];
  char c[N];
  for (int i = 0; i < N; i++) {
    a[i] = i;
    b[i] = i * 0.5;
    c[i] = (char)(i % 100);
  }
  const void *args[3] = {a, b, c};
  size_t sizes[3] = {sizeof *a, sizeof *b, sizeof *c};
  mproc_assert_ok(
      mproc_pool_starmap(p, add3, 3, args, sizes, N, out, sizeof *out, NULL, NULL, 30000));
  int bad = 0;
  for (int i = 0; i < N; i++)
    bad += out[i] != a[i] + b[i] + c[i];
  ck_assert_int_eq(bad, 0);
  mproc_assert_err(mproc_pool_starmap(p, add3, 0, args, sizes, N, out, sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_starmap(p, add3, MPROC_STARMAP_MAX_ARGS + 1, args, sizes, N, out,
                                      sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_starmap(p, add3, 3, NULL, sizes, N, out, sizeof *out, NULL, NULL, 0),
                   MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

struct gen {
  long next, n;
  long live, max_live; /* generated and not yet consumed */
  long fail_at;        /* generator error at this index, -1 none */
};

static int gen_ints(void *ctx, void *item) {
  struct gen *g = ctx;
  if (g->next == g->fail_at)
    return -EIO;
  if (g->next >= g->n)
    return 0;
  *(int *)item = (int)g->next++;
  if (++g->live > g->max_live)
    g->max_live = g->live;
  return 1;
}

static void imap_run(mproc_pool *p, unsigned flags, size_t chunk, long n, size_t max_inflight) {
  struct gen g = {.n = n, .fail_at = -1};
  mproc_imap *it;
  struct mproc_imap_options o = {.flags = flags, .chunksize = chunk, .max_inflight = max_inflight};
  mproc_assert_ok(mproc_pool_imap(p, sq, gen_ints, &g, sizeof(int), sizeof(long), &o, &it));
  long count = 0, sum = 0, expect_sum = 0, bad = 0;
  size_t idx;
  long v;
  int r;
  /* Per-item checks are counted, not asserted: an assertion per item would
   * cost the test runner a system call each. */
  while ((r = mproc_imap_next(it, &v, &idx, NULL, 30000)) == 0) {
    bad += v != (long)idx * (long)idx;
    bad += !(flags & MPROC_IMAP_UNORDERED) && idx != (size_t)count;
    count++;
    g.live--;
    sum += (long)idx;
  }
  mproc_assert_err(r, MPROC_EEOF);
  mproc_assert_err(mproc_imap_next(it, &v, &idx, NULL, 0), MPROC_EEOF);
  for (long i = 0; i < n; i++)
    expect_sum += i;
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(count, n);
  ck_assert_int_eq(sum, expect_sum);
  if (max_inflight > 0)
    ck_assert_int_le(g.max_live, (long)max_inflight);
  mproc_imap_free(it);
}

START_TEST(test_imap_ordered_and_unordered) {
  mproc_pool *p = make_pool(2);
  imap_run(p, 0, 0, 20000, 0);
  imap_run(p, MPROC_IMAP_UNORDERED, 0, 20000, 0);
  imap_run(p, 0, 64, 100000, 0);
  imap_run(p, MPROC_IMAP_UNORDERED, 100, 100000, 0);
  imap_run(p, 0, 1, 0, 0);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_imap_bounded_memory) {
  mproc_pool *p = make_pool(2);
  /* A generator of 10 M items with a small window: never more than 40000
   * items live at once. */
  imap_run(p, 0, 10000, 10000000, 40000);
  imap_run(p, MPROC_IMAP_UNORDERED, 1000, 1000000, 4000);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* sq, counting the items run in S->count. */
static int sq_counted(const void *in, void *out) {
  atomic_fetch_add(&S->count, 1);
  return sq(in, out);
}

/* Reads up to n items of it, checking each; returns how many. */
static long imap_take(mproc_imap *it, long n) {
  long got = 0, v;
  size_t idx;
  while (got < n && mproc_imap_next(it, &v, &idx, NULL, 30000) == 0) {
    ck_assert_int_eq(v, (long)idx * (long)idx);
    got++;
  }
  return got;
}

/* The iterator that owns the pool's quiet word collects its own chunks:
 * while its caller is away (here until every chunk has run), their results
 * wait in the rings, and are all there when it comes back. */
START_TEST(test_imap_caller_away_collects_all) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  for (int flags = 0; flags <= 1; flags++) {
    atomic_store(&S->count, 0);
    struct gen g = {.n = 100, .fail_at = -1};
    mproc_imap *it;
    struct mproc_imap_options o = {.flags = flags ? MPROC_IMAP_UNORDERED : 0};
    mproc_assert_ok(
        mproc_pool_imap(p, sq_counted, gen_ints, &g, sizeof(int), sizeof(long), &o, &it));
    ck_assert_int_eq(imap_take(it, 1), 1);
    int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(15000);
    while (atomic_load(&S->count) < 100) {
      ck_assert(mproc_now_ms() < dl);
      sleep_ms(1);
    }
    ck_assert_int_eq(imap_take(it, 1000), 99);
    mproc_imap_free(it);
  }
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* Several iterators on one pool: one owns the quiet word at a time, the
 * others leave their chunks to the manager; freeing the owner hands the
 * word to a later one; a future submitted meanwhile still completes. */
START_TEST(test_imap_iterators_share_the_pool) {
  mproc_pool *p = make_pool(2);
  struct gen ga = {.n = 3000, .fail_at = -1}, gb = ga, gc = ga;
  struct mproc_imap_options o = {.flags = MPROC_IMAP_UNORDERED};
  mproc_imap *a, *b, *c;
  mproc_assert_ok(mproc_pool_imap(p, sq, gen_ints, &ga, sizeof(int), sizeof(long), &o, &a));
  mproc_assert_ok(mproc_pool_imap(p, sq, gen_ints, &gb, sizeof(int), sizeof(long), NULL, &b));
  ck_assert_ptr_eq(p->quiet_owner, a);
  long na = 0, nb = 0;
  for (int round = 0; round < 10; round++) {
    na += imap_take(a, 100);
    nb += imap_take(b, 100);
  }
  mproc_future *f;
  int x = 7;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_imap_free(a); /* stopped early: the word is free again */
  mproc_assert_ok(mproc_pool_imap(p, sq, gen_ints, &gc, sizeof(int), sizeof(long), &o, &c));
  ck_assert_ptr_eq(p->quiet_owner, c);
  long nc = imap_take(c, 3000);
  nb += imap_take(b, 3000);
  ck_assert_int_eq(na, 1000);
  ck_assert_int_eq(nb, 3000);
  ck_assert_int_eq(nc, 3000);
  const void *d;
  size_t len;
  mproc_assert_ok(mproc_future_result(f, &d, &len, 30000));
  ck_assert_int_eq(*(const int *)d, 49);
  mproc_future_free(f);
  mproc_imap_free(b);
  mproc_imap_free(c);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_imap_failure_at_item) {
  mproc_pool *p = make_pool(2);
  struct gen g = {.n = 1000, .fail_at = -1};
  mproc_imap *it;
  mproc_assert_ok(mproc_pool_imap(p, picky, gen_ints, &g, sizeof(int), sizeof(int), NULL, &it));
  int v;
  size_t idx;
  struct mproc_task_error e;
  for (size_t k = 0; k < 1000; k++) {
    int r = mproc_imap_next(it, &v, &idx, &e, 30000);
    ck_assert_uint_eq(idx, k);
    if (k == 777) {
      mproc_assert_err(r, MPROC_ETASK);
      ck_assert_uint_eq(e.index, 777);
      ck_assert_int_eq(e.task_code, 9);
    } else {
      mproc_assert_ok(r);
      ck_assert_int_eq(v, (int)k + 1);
    }
  }
  mproc_assert_err(mproc_imap_next(it, &v, &idx, &e, 0), MPROC_EEOF);
  mproc_imap_free(it);
  /* A generator error ends the iteration at its index. */
  g = (struct gen){.n = 100, .fail_at = 50};
  mproc_assert_ok(mproc_pool_imap(p, picky, gen_ints, &g, sizeof(int), sizeof(int), NULL, &it));
  int r;
  size_t got = 0;
  while ((r = mproc_imap_next(it, &v, &idx, &e, 30000)) == 0)
    got++;
  ck_assert_uint_eq(got, 50);
  mproc_assert_err(r, -EIO);
  ck_assert_uint_eq(idx, 50);
  mproc_assert_err(mproc_imap_next(it, &v, &idx, &e, 0), MPROC_EEOF);
  mproc_imap_free(it);
  /* Freed early: items in flight are cancelled. */
  g = (struct gen){.n = 100000, .fail_at = -1};
  mproc_assert_ok(mproc_pool_imap(p, picky, gen_ints, &g, sizeof(int), sizeof(int), NULL, &it));
  mproc_assert_ok(mproc_imap_next(it, &v, &idx, &e, 30000));
  mproc_imap_free(it);
  mproc_assert_err(mproc_pool_imap(p, NULL, gen_ints, &g, 4, 4, NULL, &it), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_imap(p, picky, NULL, &g, 4, 4, NULL, &it), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_imap(p, picky, gen_ints, &g, 0, 4, NULL, &it), MPROC_EINVAL);
  struct mproc_imap_options bad = {.flags = 8};
  mproc_assert_err(mproc_pool_imap(p, picky, gen_ints, &g, 4, 4, &bad, &it), MPROC_EINVAL);
  mproc_assert_err(mproc_imap_next(NULL, &v, &idx, &e, 0), MPROC_EINVAL);
  mproc_imap_free(NULL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-map");
  TCase *tc = mproc_test_tcase(s, "map", 60);
  tcase_add_test(tc, test_map_chunk_sizes);
  tcase_add_test(tc, test_map_failure_reports_item);
  tcase_add_test(tc, test_map_async_and_deadline);
  tcase_add_test(tc, test_starmap);
  tcase_add_test(tc, test_imap_ordered_and_unordered);
  tcase_add_test(tc, test_imap_bounded_memory);
  tcase_add_test(tc, test_imap_failure_at_item);
  tcase_add_test(tc, test_imap_caller_away_collects_all);
  tcase_add_test(tc, test_imap_iterators_share_the_pool);
  return mproc_test_run(s);
}
