/* mproc_pool_map_buf: variable-size items in, variable-size results out,
 * in chunks; the failed item is blamed exactly; bad arguments are refused
 * and nothing leaks on any path (the harness counts fds, maps, children). */
#include "map_buf.h"
#include "map-buf-items.h"
#include "pool-helpers.h"
#include "pool.h"

/* Items starting with '!' fail with a plain positive code; "?" with a
 * negative one; "x" returns twice (the second result counts). */
static int picky(const void *in, size_t len, mproc_item_ctx *ctx) {
  const char *s = in;
  if (len > 0 && s[0] == '!')
    return 5;
  if (len > 0 && s[0] == '?')
    return MPROC_EIO;
  if (len == 1 && s[0] == 'x') {
    /* No Check call here: under spawn the worker is not the test's process. */
    if (mproc_item_return(ctx, "first", 5) != 0)
      return 99;
    return mproc_item_return(ctx, "2", 1);
  }
  return 0; /* empty result */
}

static int die_on_bang(const void *in, size_t len, mproc_item_ctx *ctx) {
  (void)ctx;
  if (len > 0 && *(const char *)in == '!')
    _exit(3);
  return 0;
}

START_TEST(test_strings_of_any_length) {
  mproc_pool *p = make_pool(2);
  size_t n = 1000;
  struct mproc_buf *in = calloc(n, sizeof *in);
  char **strs = calloc(n, sizeof *strs);
  ck_assert(in != NULL && strs != NULL);
  for (size_t i = 0; i < n; i++) {
    size_t len = (i * 37) % 3000; /* 0 .. 2999 bytes, empty items too */
    strs[i] = malloc(len + 1);
    ck_assert(strs[i] != NULL);
    for (size_t j = 0; j < len; j++)
      strs[i][j] = (char)('a' + (i + j) % 26);
    in[i] = (struct mproc_buf){len > 0 ? strs[i] : NULL, len};
  }
  size_t chunks[] = {0, 1, 7, 5000};
  for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
    struct mproc_map_options o = {.chunksize = chunks[c]};
    struct mproc_buf *out = NULL;
    struct mproc_task_error e;
    mproc_assert_ok(mproc_pool_map_buf(p, reverse_len, in, n, &out, &o, &e, 60000));
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < n; i++) {
      size_t len = in[i].len;
      char want[32];
      int k = snprintf(want, sizeof want, ":%zu", len);
      ck_assert_uint_eq(out[i].len, len + (size_t)k);
      const char *r = out[i].data;
      ck_assert_uint_eq((uintptr_t)r % 16, 0);
      for (size_t j = 0; j < len; j++)
        ck_assert_int_eq(r[j], strs[i][len - 1 - j]);
      ck_assert_str_eq(r + len, want); /* NUL-terminated */
    }
    mproc_bufs_free(out);
  }
  for (size_t i = 0; i < n; i++)
    free(strs[i]);
  free(strs);
  free(in);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_empty_and_replaced_results) {
  mproc_pool *p = make_pool(2);
  struct mproc_buf in[3] = {{"a", 1}, {"x", 1}, {NULL, 0}}, *out = NULL;
  mproc_assert_ok(mproc_pool_map_buf(p, picky, in, 3, &out, NULL, NULL, 30000));
  ck_assert_uint_eq(out[0].len, 0);
  ck_assert_str_eq(out[0].data, "");
  ck_assert_uint_eq(out[1].len, 1);
  ck_assert_str_eq(out[1].data, "2");
  ck_assert_uint_eq(out[2].len, 0);
  mproc_bufs_free(out);
  /* Nothing to map: success, no results. */
  out = (struct mproc_buf *)in;
  mproc_assert_ok(mproc_pool_map_buf(p, picky, NULL, 0, &out, NULL, NULL, 30000));
  ck_assert_ptr_null(out);
  mproc_bufs_free(NULL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_failed_item_is_blamed) {
  mproc_pool *p = make_pool(2);
  size_t n = 100;
  struct mproc_buf in[100];
  for (size_t i = 0; i < n; i++)
    in[i] = (struct mproc_buf){"ok", 2};
  in[63] = (struct mproc_buf){"!bad", 4};
  in[80] = (struct mproc_buf){"!later", 6};
  struct mproc_map_options o = {.chunksize = 10};
  struct mproc_buf *out = (struct mproc_buf *)in;
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, n, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_ptr_null(out);
  ck_assert_int_eq(e.code, MPROC_ETASK);
  ck_assert_int_eq(e.task_code, 5);
  ck_assert_uint_eq(e.index, 63);
  ck_assert_str_eq(e.message, "task returned 5");
  /* A negative code reads as its error; a message of the item's own wins. */
  in[63] = (struct mproc_buf){"?", 1};
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, n, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_int_eq(e.task_code, MPROC_EIO);
  ck_assert_uint_eq(e.index, 63);
  ck_assert_str_eq(e.message, mproc_strerror(MPROC_EIO));
  char big[5000];
  memset(big, 'b', sizeof big);
  in[63] = (struct mproc_buf){"ok", 2};
  in[80] = (struct mproc_buf){big, sizeof big};
  mproc_assert_err(mproc_pool_map_buf(p, reverse_len, in, n, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_int_eq(e.task_code, 7);
  ck_assert_uint_eq(e.index, 80);
  ck_assert_str_eq(e.message, "item of 5000 bytes is too long");
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_worker_death_fails_the_chunk) {
  mproc_pool *p = make_pool(2);
  struct mproc_buf in[40];
  for (size_t i = 0; i < 40; i++)
    in[i] = (struct mproc_buf){"ok", 2};
  in[25] = (struct mproc_buf){"!", 1};
  struct mproc_map_options o = {.chunksize = 1};
  struct mproc_buf *out;
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_buf(p, die_on_bang, in, 40, &out, &o, &e, 30000),
                   MPROC_EWORKERDIED);
  ck_assert_ptr_null(out);
  ck_assert_int_eq(e.code, MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 25);
  ck_assert_int_eq(e.exit_status, 3);
  /* The pool still works afterwards. */
  in[25] = (struct mproc_buf){"x", 1};
  mproc_assert_ok(mproc_pool_map_buf(p, picky, in, 40, &out, &o, &e, 30000));
  ck_assert_str_eq(out[25].data, "2");
  mproc_bufs_free(out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_deadline_cancels) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  struct mproc_buf in[3] = {{"a", 1}, {"b", 1}, {"c", 1}}, *out;
  struct mproc_map_options o = {.chunksize = 1};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_buf(p, block_item, in, 3, &out, &o, &e, 200), MPROC_ETIMEDOUT);
  ck_assert_ptr_null(out);
  ck_assert_int_eq(e.code, MPROC_ETIMEDOUT);
  /* The blocked worker was killed and replaced: the pool still maps. */
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_pool_map_buf(p, picky, in, 3, &out, &o, &e, 30000));
  mproc_bufs_free(out);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* Yields "s<i>" padded to i % 50 + 2 bytes, up to gen_n items; item
 * gen_bad is "!" (fails); at gen_err_at the generator fails with -EIO. */
struct gen_state {
  size_t i, n, bad, err_at;
  char buf[64];
};

static int gen_strings(void *ctx, struct mproc_buf *item) {
  struct gen_state *g = ctx;
  if (g->i == g->err_at)
    return -EIO;
  if (g->i == g->n)
    return 0;
  size_t len = g->i % 50 + 2;
  memset(g->buf, 'a' + (int)(g->i % 26), len);
  g->buf[0] = g->i == g->bad ? '!' : 's';
  *item = (struct mproc_buf){g->buf, len};
  g->i++;
  return 1;
}

/* Item "!" kills its worker; the items before it in its chunk finished. */
START_TEST(test_death_blames_the_item_inside_its_chunk) {
  mproc_pool *p = make_pool(2);
  struct mproc_buf in[40];
  for (size_t i = 0; i < 40; i++)
    in[i] = (struct mproc_buf){"ok", 2};
  in[25] = (struct mproc_buf){"!", 1};
  struct mproc_map_options o = {.chunksize = 40}; /* one chunk */
  struct mproc_buf *out;
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_buf(p, die_on_bang, in, 40, &out, &o, &e, 30000),
                   MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 25);
  ck_assert_int_eq(e.exit_status, 3);
  /* imap_buf: the items before it in its chunk still yield, the ones after
   * it were not run. */
  struct gen_state g = {.n = 30, .bad = 13, .err_at = SIZE_MAX};
  struct mproc_imap_options io = {.chunksize = 10};
  mproc_imap_buf *it;
  mproc_assert_ok(mproc_pool_imap_buf(p, die_on_bang, gen_strings, &g, &io, &it));
  struct mproc_buf r;
  size_t idx, ok = 0;
  int rc;
  while ((rc = mproc_imap_buf_next(it, &r, &idx, &e, 30000)) != MPROC_EEOF) {
    if (idx == 13) {
      mproc_assert_err(rc, MPROC_EWORKERDIED);
      ck_assert_uint_eq(e.index, 13);
      ck_assert_int_eq(e.exit_status, 3);
    } else if (idx > 13 && idx < 20) {
      mproc_assert_err(rc, MPROC_ECANCELED);
    } else {
      mproc_assert_ok(rc);
      ok++;
    }
  }
  ck_assert_uint_eq(ok, 30 - 7);
  mproc_imap_buf_free(it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Item "5" waits for S->release, which the progress callback sets once it
 * sees the five items before it done: only per-item progress gets there. */
static int wait_at_five(const void *in, size_t len, mproc_item_ctx *ctx) {
  (void)ctx;
  if (len == 1 && *(const char *)in == '5')
    while (!atomic_load(&S->release))
      sleep_ms(1);
  return 0;
}

static void release_at_five(const struct mproc_progress *pr, void *ud) {
  size_t *seen = ud;
  if (pr->done > *seen)
    *seen = pr->done;
  if (!pr->finished && pr->done >= 5)
    atomic_store(&S->release, 1);
}

START_TEST(test_progress_moves_per_item) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  static const char digits[] = "0123456789";
  struct mproc_buf in[10];
  for (size_t i = 0; i < 10; i++)
    in[i] = (struct mproc_buf){&digits[i], 1};
  size_t seen = 0;
  struct mproc_map_options o = {
      .chunksize = 10, .progress_cb = release_at_five, .progress_ud = &seen};
  struct mproc_buf *out;
  struct mproc_task_error e;
  mproc_assert_ok(
      mproc_pool_map_buf(p, wait_at_five, in, 10, &out, &o, &e, mproc_test_scaled_ms(20000)));
  ck_assert_uint_eq(seen, 10);
  mproc_bufs_free(out);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static void check_big(const struct mproc_buf *r) {
  check_big_bytes(r);
  ck_assert_int_eq(((const char *)r->data)[BIG], '\0');
}

static int gen_with_big(void *ctx, struct mproc_buf *item) {
  size_t *i = ctx;
  if (*i == 6)
    return 0;
  *item = *i == 2 ? (struct mproc_buf){"big", 3} : (struct mproc_buf){"small", 5};
  ++*i;
  return 1;
}

START_TEST(test_results_larger_than_the_area) {
  S = shared_new(); /* counts the calls for "big" */
  mproc_pool *p = make_pool(2);
  struct mproc_buf in[6] = {{"a", 1}, {"bb", 2}, {"big", 3}, {"d", 1}, {"big", 3}, {"", 0}}, *out;
  const char *second = "bb";
  struct mproc_map_options o = {.chunksize = 6};
  struct mproc_task_error e;
  /* Twice: the second results array reuses the first one's pages. */
  for (int round = 0; round < 2; round++) {
    mproc_assert_ok(mproc_pool_map_buf(p, big_result, in, 6, &out, &o, &e, 60000));
    ck_assert_str_eq(out[0].data, "a");
    ck_assert_str_eq(out[1].data, second);
    check_big(&out[2]);
    ck_assert_str_eq(out[3].data, "d");
    check_big(&out[4]);
    ck_assert_uint_eq(out[5].len, 0);
    ck_assert_str_eq(out[5].data, "");
    mproc_bufs_free(out);
    in[1] = (struct mproc_buf){"cc", 2};
    second = "cc";
  }
  /* map_buf's large results went to its overflow area: each item ran once. */
  ck_assert_int_eq(atomic_load(&S->count), 4);
  size_t i = 0;
  struct mproc_imap_options io = {.chunksize = 3};
  mproc_imap_buf *it;
  mproc_assert_ok(mproc_pool_imap_buf(p, big_result, gen_with_big, &i, &io, &it));
  struct mproc_buf r;
  size_t idx;
  for (size_t k = 0; k < 6; k++) {
    mproc_assert_ok(mproc_imap_buf_next(it, &r, &idx, &e, 60000));
    ck_assert_uint_eq(idx, k);
    if (k == 2)
      check_big(&r);
    else
      ck_assert_str_eq(r.data, "small");
  }
  mproc_assert_err(mproc_imap_buf_next(it, &r, &idx, &e, 60000), MPROC_EEOF);
  mproc_imap_buf_free(it);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* A second mproc_item_return replaces the first across the two areas: a
 * large result then a small one ("gib"), a small one then a large one
 * ("bag"), between results of the chunk's own area. */
START_TEST(test_replaced_results_across_areas) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  struct mproc_buf in[5] = {{"a", 1}, {"gib", 3}, {"bag", 3}, {"dd", 2}, {"", 0}}, *out;
  struct mproc_map_options o = {.chunksize = 5};
  mproc_assert_ok(mproc_pool_map_buf(p, big_result, in, 5, &out, &o, NULL, 60000));
  ck_assert_str_eq(out[0].data, "a");
  ck_assert_uint_eq(out[1].len, 3);
  ck_assert_str_eq(out[1].data, "gib");
  check_big(&out[2]);
  ck_assert_uint_eq(out[3].len, 2);
  ck_assert_str_eq(out[3].data, "dd");
  ck_assert_uint_eq(out[4].len, 0);
  ck_assert_str_eq(out[4].data, "");
  for (size_t i = 0; i < 5; i++)
    ck_assert_uint_eq((uintptr_t)out[i].data % 16, 0);
  mproc_bufs_free(out);
  ck_assert_int_eq(atomic_load(&S->count), 2);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* Checks a reverse_len result set over items "<i>-<round>" (see
 * held_items). */
static void check_reversed(const struct mproc_buf *out, const struct mproc_buf *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char want[256];
    size_t len = in[i].len;
    for (size_t j = 0; j < len; j++)
      want[j] = ((const char *)in[i].data)[len - 1 - j];
    snprintf(want + len, sizeof want - len, ":%zu", len);
    ck_assert_uint_eq((uintptr_t)out[i].data % 16, 0);
    ck_assert_str_eq(out[i].data, want);
    ck_assert_uint_eq(out[i].len, strlen(want));
  }
}

/* Items "<i>-<round>" in text[i * 32], so each round's results differ. */
static void held_items(struct mproc_buf *in, char *text, size_t n, int round) {
  for (size_t i = 0; i < n; i++) {
    int k = snprintf(text + i * 32, 32, "%zu-%d", i, round);
    in[i] = (struct mproc_buf){text + i * 32, (size_t)k};
  }
}

/* The results of a map_buf are written where the caller reads them, in the
 * pool's arena: several sets held at once never share memory, each is
 * freed on its own in any order, and a set outlives the pool that made it
 * (it keeps only what it shows mapped: nothing is left once it is freed). */
START_TEST(test_result_sets_outlive_the_pool) {
  S = shared_new(); /* before the pool: its workers see it */
  int maps = mproc_test_count_shared_maps();
  mproc_pool *p = make_pool(2);
  enum { N = 3000, SETS = 6 };
  struct mproc_buf *in[SETS], *out[SETS];
  char *text[SETS];
  for (int r = 0; r < SETS; r++) {
    in[r] = calloc(N, sizeof *in[r]);
    text[r] = malloc(N * 32);
    ck_assert(in[r] != NULL && text[r] != NULL);
    held_items(in[r], text[r], N, r);
    struct mproc_map_options o = {.chunksize = (size_t)(r + 1) * 100};
    mproc_assert_ok(mproc_pool_map_buf(p, reverse_len, in[r], N, &out[r], &o, NULL, 60000));
  }
  for (int r = 0; r < SETS; r++)
    check_reversed(out[r], in[r], N);
  mproc_bufs_free(out[2]);
  mproc_bufs_free(out[0]);
  /* The arena space they held is used again, and the others stay intact. */
  mproc_assert_ok(mproc_pool_map_buf(p, reverse_len, in[2], N, &out[2], NULL, NULL, 60000));
  /* A large result goes to the job's overflow area: the set holds that too. */
  struct mproc_buf big_in[3] = {{"a", 1}, {"big", 3}, {"c", 1}}, *big_out;
  struct mproc_map_options one = {.chunksize = 3};
  mproc_assert_ok(mproc_pool_map_buf(p, big_result, big_in, 3, &big_out, &one, NULL, 60000));
  mproc_assert_ok(mproc_pool_free(p));
  check_big(&big_out[1]);
  ck_assert_str_eq(big_out[0].data, "a");
  ck_assert_str_eq(big_out[2].data, "c");
  ck_assert_int_eq(atomic_load(&S->count), 1);
  mproc_bufs_free(big_out);
  for (int r = 1; r < SETS; r++)
    check_reversed(out[r], in[r], N);
  for (int r = SETS - 1; r >= 1; r--) {
    ck_assert_int_gt(mproc_test_count_shared_maps(), maps);
    mproc_bufs_free(out[r]);
  }
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
  shared_free(S);
  for (int r = 0; r < SETS; r++) {
    free(in[r]);
    free(text[r]);
  }
}
END_TEST

/* map_buf copies the items in one pass into one extent when they and their
 * results fit in it, else (here forced by a smaller limit) it takes the
 * general way: no extent at all, the items running out of room part way,
 * or the results not fitting after them.  The same results every way, and
 * nothing left behind by an abandoned pass. */
START_TEST(test_one_pass_and_general_ways_agree) {
  mproc_pool *p = make_pool(2);
  enum { N = 2000, W = 200 };
  struct mproc_buf *in = calloc(N, sizeof *in);
  char *text = malloc(N * W);
  ck_assert(in != NULL && text != NULL);
  /* 400 kB of items: with the limits below the one pass is refused at once
   * (up to 90 kB), runs out of room for the items (128 and 256 kB) or for
   * their results (512 kB), or holds everything. */
  for (size_t i = 0; i < N; i++) {
    char num[24];
    int k = snprintf(num, sizeof num, "%zu", i);
    memset(text + i * W, 'a' + (int)(i % 26), W);
    memcpy(text + i * W, num, (size_t)k); /* no NUL inside an item */
    in[i] = (struct mproc_buf){text + i * W, W - i % 3};
  }
  size_t limits[] = {0, 16 << 10, 90 << 10, 128 << 10, 256 << 10, 512 << 10, 4 << 20};
  size_t saved = mproc__map_buf_in_max;
  for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
    mproc__map_buf_in_max = limits[l];
    struct mproc_map_options o = {.chunksize = 150};
    struct mproc_buf *out;
    mproc_assert_ok(mproc_pool_map_buf(p, reverse_len, in, N, &out, &o, NULL, 60000));
    check_reversed(out, in, N);
    mproc_bufs_free(out);
    /* A bad item refused either way, with nothing run. */
    struct mproc_buf last = in[N - 1];
    in[N - 1] = (struct mproc_buf){NULL, 4};
    mproc_assert_err(mproc_pool_map_buf(p, reverse_len, in, N, &out, &o, NULL, 60000),
                     MPROC_EINVAL);
    ck_assert_ptr_null(out);
    in[N - 1] = last;
  }
  mproc__map_buf_in_max = saved;
  free(in);
  free(text);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A pool whose workers do not share its memory (any transport but shm:
 * here a copy of it under another name, as MPI would be) runs every chunk
 * as an ordinary task: the same results, failures blamed on their items. */
static struct mproc__transport_ops shm_copy;

START_TEST(test_transport_without_shared_arena) {
  shm_copy = mproc__transport_shm;
  shm_copy.name = "map-buf-shm-copy";
  mproc_assert_ok(mproc__transport_register(&shm_copy));
  struct mproc_pool_options po = {.workers = 2, .transport = shm_copy.name};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  struct mproc_buf in[30];
  char text[30][8];
  for (size_t i = 0; i < 30; i++) {
    int k = snprintf(text[i], sizeof text[i], "w%zu", i);
    in[i] = (struct mproc_buf){text[i], (size_t)k};
  }
  struct mproc_map_options o = {.chunksize = 4};
  struct mproc_buf *out;
  struct mproc_task_error e;
  mproc_assert_ok(mproc_pool_map_buf(p, reverse_len, in, 30, &out, &o, &e, 30000));
  for (size_t i = 0; i < 30; i++) {
    char want[16];
    size_t len = in[i].len;
    for (size_t j = 0; j < len; j++)
      want[j] = text[i][len - 1 - j];
    snprintf(want + len, sizeof want - len, ":%zu", len);
    ck_assert_str_eq(out[i].data, want);
  }
  mproc_bufs_free(out);
  in[13] = (struct mproc_buf){"!x", 2};
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 30, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_uint_eq(e.index, 13);
  ck_assert_int_eq(e.task_code, 5);
  struct gen_state g = {.n = 20, .bad = 7, .err_at = SIZE_MAX};
  struct mproc_imap_options io = {.chunksize = 3};
  mproc_imap_buf *it;
  mproc_assert_ok(mproc_pool_imap_buf(p, picky, gen_strings, &g, &io, &it));
  struct mproc_buf r;
  size_t idx, ok = 0;
  int rc;
  while ((rc = mproc_imap_buf_next(it, &r, &idx, &e, 30000)) != MPROC_EEOF) {
    if (idx == 7)
      mproc_assert_err(rc, MPROC_ETASK);
    else if (idx == 8)
      mproc_assert_err(rc, MPROC_ECANCELED); /* same chunk (6..8), after it */
    else
      ok += rc == 0;
  }
  ck_assert_uint_eq(ok, 18);
  mproc_imap_buf_free(it);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc__transport_unregister(&shm_copy));
}
END_TEST

START_TEST(test_bad_arguments) {
  mproc_pool *p = make_pool(1);
  struct mproc_buf in[2] = {{"a", 1}, {NULL, 3}}, *out = (struct mproc_buf *)in;
  mproc_assert_err(mproc_pool_map_buf(NULL, picky, in, 1, &out, NULL, NULL, 1000), MPROC_EINVAL);
  ck_assert_ptr_null(out);
  mproc_assert_err(mproc_pool_map_buf(p, NULL, in, 1, &out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 1, NULL, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_buf(p, picky, NULL, 1, &out, NULL, NULL, 1000), MPROC_EINVAL);
  /* NULL data with a length */
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 2, &out, NULL, NULL, 1000), MPROC_EINVAL);
  /* sizes adding up past SIZE_MAX */
  struct mproc_buf huge[2] = {{"a", SIZE_MAX / 2}, {"b", SIZE_MAX / 2}};
  mproc_assert_err(mproc_pool_map_buf(p, picky, huge, 2, &out, NULL, NULL, 1000), MPROC_EINVAL);
  struct mproc_map_options bad = {.flags = 1};
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 1, &out, &bad, NULL, 1000), MPROC_EINVAL);
  bad = (struct mproc_map_options){.progress = 99};
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 1, &out, &bad, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 1, &out, NULL, NULL, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_item_return(NULL, "a", 1), MPROC_EINVAL);
  ck_assert_int_eq(mproc_item_fail(NULL, 0, NULL), MPROC_ETASK);
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_err(mproc_pool_map_buf(p, picky, in, 1, &out, NULL, NULL, 1000), MPROC_ECLOSED);
  ck_assert_ptr_null(out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_imap_buf_streams_in_order) {
  mproc_pool *p = make_pool(2);
  struct gen_state g = {.n = 500, .bad = SIZE_MAX, .err_at = SIZE_MAX};
  struct mproc_imap_options o = {.chunksize = 7, .max_inflight = 30};
  mproc_imap_buf *it;
  mproc_assert_ok(mproc_pool_imap_buf(p, reverse_len, gen_strings, &g, &o, &it));
  struct mproc_buf r;
  size_t idx, got = 0;
  int rc;
  while ((rc = mproc_imap_buf_next(it, &r, &idx, NULL, 30000)) == 0) {
    ck_assert_uint_eq(idx, got);
    size_t len = got % 50 + 2;
    char want[32];
    snprintf(want, sizeof want, ":%zu", len);
    ck_assert_uint_eq(r.len, len + strlen(want));
    ck_assert_str_eq((const char *)r.data + len, want);
    ck_assert_int_eq(((const char *)r.data)[len - 1], 's'); /* reversed: first byte last */
    /* Never more generated than yielded plus the in-flight bound. */
    ck_assert_uint_le(g.i, got + 1 + 30 + 7);
    got++;
  }
  mproc_assert_err(rc, MPROC_EEOF);
  ck_assert_uint_eq(got, 500);
  mproc_assert_err(mproc_imap_buf_next(it, &r, &idx, NULL, 0), MPROC_EEOF);
  mproc_imap_buf_free(it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_imap_buf_failures) {
  S = shared_new(); /* before the pool: its workers see it */
  mproc_pool *p = make_pool(2);
  /* Item 23 fails; 24 and 25 share its chunk (21..27) and are not run; the
   * generator fails at item 40; iteration goes on through all of it. */
  struct gen_state g = {.n = 100, .bad = 23, .err_at = 40};
  struct mproc_imap_options o = {.chunksize = 7};
  mproc_imap_buf *it;
  mproc_assert_ok(mproc_pool_imap_buf(p, picky, gen_strings, &g, &o, &it));
  struct mproc_buf r;
  struct mproc_task_error e;
  size_t idx, ok = 0;
  int rc;
  while ((rc = mproc_imap_buf_next(it, &r, &idx, &e, 30000)) != MPROC_EEOF) {
    if (idx == 23) {
      mproc_assert_err(rc, MPROC_ETASK);
      ck_assert_int_eq(e.task_code, 5);
      ck_assert_uint_eq(e.index, 23);
    } else if (idx > 23 && idx < 28) {
      mproc_assert_err(rc, MPROC_ECANCELED);
      ck_assert_uint_eq(e.index, idx);
    } else if (idx == 40) {
      mproc_assert_err(rc, -EIO);
    } else {
      mproc_assert_ok(rc);
      ck_assert_uint_eq(r.len, 0);
      ok++;
    }
  }
  ck_assert_uint_eq(ok, 40 - 5);
  mproc_imap_buf_free(it);
  /* Freed with chunks in flight: cancelled, nothing left behind. */
  g = (struct gen_state){.n = 100, .bad = SIZE_MAX, .err_at = SIZE_MAX};
  o.chunksize = 1;
  mproc_assert_ok(mproc_pool_imap_buf(p, block_item, gen_strings, &g, &o, &it));
  mproc_assert_err(mproc_imap_buf_next(it, &r, &idx, &e, 50), MPROC_ETIMEDOUT);
  mproc_imap_buf_free(it);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_imap_buf_bad_arguments) {
  mproc_pool *p = make_pool(1);
  struct gen_state g = {.n = 3, .bad = SIZE_MAX, .err_at = SIZE_MAX};
  mproc_imap_buf *it = (mproc_imap_buf *)&g;
  mproc_assert_err(mproc_pool_imap_buf(NULL, picky, gen_strings, &g, NULL, &it), MPROC_EINVAL);
  ck_assert_ptr_null(it);
  mproc_assert_err(mproc_pool_imap_buf(p, NULL, gen_strings, &g, NULL, &it), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_imap_buf(p, picky, NULL, &g, NULL, &it), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_imap_buf(p, picky, gen_strings, &g, NULL, NULL), MPROC_EINVAL);
  struct mproc_imap_options bad = {.flags = MPROC_IMAP_UNORDERED};
  mproc_assert_err(mproc_pool_imap_buf(p, picky, gen_strings, &g, &bad, &it), MPROC_EINVAL);
  struct mproc_buf r;
  mproc_assert_err(mproc_imap_buf_next(NULL, &r, NULL, NULL, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_imap_buf(p, picky, gen_strings, &g, NULL, &it));
  mproc_assert_err(mproc_imap_buf_next(it, NULL, NULL, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_imap_buf_next(it, &r, NULL, NULL, -5), MPROC_EINVAL);
  mproc_imap_buf_free(it);
  mproc_imap_buf_free(NULL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("map-buf");
  TCase *tc = mproc_test_tcase(s, "map-buf", 120);
  tcase_add_test(tc, test_strings_of_any_length);
  tcase_add_test(tc, test_empty_and_replaced_results);
  tcase_add_test(tc, test_replaced_results_across_areas);
  tcase_add_test(tc, test_failed_item_is_blamed);
  tcase_add_test(tc, test_worker_death_fails_the_chunk);
  tcase_add_test(tc, test_deadline_cancels);
  tcase_add_test(tc, test_death_blames_the_item_inside_its_chunk);
  tcase_add_test(tc, test_progress_moves_per_item);
  tcase_add_test(tc, test_results_larger_than_the_area);
  tcase_add_test(tc, test_result_sets_outlive_the_pool);
  tcase_add_test(tc, test_one_pass_and_general_ways_agree);
  tcase_add_test(tc, test_transport_without_shared_arena);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_imap_buf_streams_in_order);
  tcase_add_test(tc, test_imap_buf_failures);
  tcase_add_test(tc, test_imap_buf_bad_arguments);
  return mproc_test_run(s);
}
