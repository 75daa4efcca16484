/* mproc_pool_map_packed: packed items in, packed results out; every way a
 * chunk runs (the one pass, the general way, the call way for results that
 * outgrow their area and for a pool without a shared arena) gives the same
 * results; failures are blamed on their items; bad arguments are refused
 * with nothing run, and nothing leaks on any path (the harness counts fds,
 * maps, children). */
#include "map_buf.h"
#include "map-buf-items.h"
#include "pool-helpers.h"
#include "pool.h"
#include "shm_layout.h"

/* "!..." fails with 5, "?" with MPROC_EIO, "x" returns twice (the second
 * result counts), "e" returns nothing (an empty result), "#" kills its
 * worker; anything else comes back as it is. */
static int picky(const void *in, size_t len, mproc_item_ctx *ctx) {
  const char *s = in;
  if (len > 0 && s[0] == '!')
    return 5;
  if (len > 0 && s[0] == '?')
    return MPROC_EIO;
  if (len > 0 && s[0] == '#')
    _exit(3);
  if (len == 1 && s[0] == 'x') {
    if (mproc_item_return(ctx, "first", 5) != 0)
      return 99;
    return mproc_item_return(ctx, "2", 1);
  }
  if (len == 1 && s[0] == 'e')
    return 0;
  return mproc_item_return(ctx, in, len);
}

/* Packed items built one by one. */
struct items {
  char *data;
  size_t *ends, n, used, cap;
};

static void items_add(struct items *it, const void *bytes, size_t len) {
  if (it->used + len > it->cap) {
    it->cap = (it->used + len) * 2 + 64;
    it->data = realloc(it->data, it->cap);
    ck_assert_ptr_nonnull(it->data);
  }
  it->ends = realloc(it->ends, (it->n + 1) * sizeof *it->ends);
  ck_assert_ptr_nonnull(it->ends);
  if (len > 0)
    memcpy(it->data + it->used, bytes, len);
  it->used += len;
  it->ends[it->n++] = it->used;
}

static void items_add_str(struct items *it, const char *s) { items_add(it, s, strlen(s)); }

static struct mproc_packed items_packed(const struct items *it) {
  return (struct mproc_packed){it->data, it->ends, it->n};
}

static void items_free(struct items *it) {
  free(it->data);
  free(it->ends);
  *it = (struct items){0};
}

/* Item i of a packed set. */
static struct mproc_buf packed_item(const struct mproc_packed *p, size_t i) {
  size_t from = i > 0 ? p->ends[i - 1] : 0;
  return (struct mproc_buf){(const char *)p->data + from, p->ends[i] - from};
}

static void assert_item_eq(const struct mproc_packed *p, size_t i, const char *want) {
  struct mproc_buf b = packed_item(p, i);
  ck_assert_msg(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0,
                "item %zu: \"%.*s\", want \"%s\"", i, (int)b.len, (const char *)b.data, want);
}

/* reverse_len's result set over `in`. */
static void check_reversed(const struct mproc_packed *out, const struct mproc_packed *in) {
  ck_assert_uint_eq(out->n, in->n);
  for (size_t i = 0; i < in->n; i++) {
    struct mproc_buf a = packed_item(in, i), r = packed_item(out, i);
    char tail[32];
    int k = snprintf(tail, sizeof tail, ":%zu", a.len);
    ck_assert_uint_eq(r.len, a.len + (size_t)k);
    const char *s = a.data, *t = r.data;
    for (size_t j = 0; j < a.len; j++)
      ck_assert_int_eq(t[j], s[a.len - 1 - j]);
    ck_assert(memcmp(t + a.len, tail, (size_t)k) == 0);
  }
}

/* Items of 0 .. 2999 bytes, empty ones too. */
static void strings_of_any_length(struct items *it, size_t n) {
  char buf[3000];
  for (size_t i = 0; i < n; i++) {
    size_t len = (i * 37) % 3000;
    for (size_t j = 0; j < len; j++)
      buf[j] = (char)('a' + (i + j) % 26);
    items_add(it, buf, len);
  }
}

static void strings_by(int method) {
  struct mproc_pool_options po = {.workers = 2, .start_method = method};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  struct items it = {0};
  strings_of_any_length(&it, 1000);
  struct mproc_packed in = items_packed(&it);
  /* Every chunking under fork; the other start methods (slower to start,
   * above all under the sanitizers) differ only in how the function travels. */
  size_t chunks[] = {7, 0, 1, 5000};
  for (size_t c = 0; c < (method == MPROC_START_FORK ? 4 : 1); c++) {
    struct mproc_map_options o = {.chunksize = chunks[c]};
    struct mproc_packed out;
    struct mproc_task_error e;
    mproc_assert_ok(mproc_pool_map_packed(p, reverse_len, &in, &out, &o, &e, 60000));
    check_reversed(&out, &in);
    mproc_packed_free(&out);
    ck_assert_ptr_null(out.data);
    ck_assert_ptr_null(out.ends);
    mproc_packed_free(&out); /* released once: a second call does nothing */
  }
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_strings_of_any_length_every_start_method) {
  strings_by(MPROC_START_FORK);
  strings_by(MPROC_START_SPAWN);
  strings_by(MPROC_START_FORKSERVER);
}
END_TEST

/* Empty items and results, a result replaced, no result at all; the results
 * stay valid after the pool is freed. */
START_TEST(test_empty_and_replaced_results_outlive_the_pool) {
  mproc_pool *p = make_pool(2);
  struct items it = {0};
  const char *words[] = {"", "x", "e", "abc", "", "x", "tail"};
  const char *want[] = {"", "2", "", "abc", "", "2", "tail"};
  for (size_t i = 0; i < 7; i++)
    items_add_str(&it, words[i]);
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 3};
  mproc_assert_ok(mproc_pool_map_packed(p, picky, &in, &out, &o, NULL, 30000));
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_uint_eq(out.n, 7);
  for (size_t i = 0; i < 7; i++)
    assert_item_eq(&out, i, want[i]);
  mproc_packed_free(&out);
  items_free(&it);
}
END_TEST

START_TEST(test_failures_are_blamed_on_their_items) {
  mproc_pool *p = make_pool(2);
  struct items it = {0};
  for (size_t i = 0; i < 100; i++)
    items_add_str(&it, i == 63 ? "!bad" : i == 80 ? "!later" : "ok");
  struct mproc_packed in = items_packed(&it), out = {"junk", NULL, 3};
  struct mproc_map_options o = {.chunksize = 10};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  ck_assert_int_eq(e.task_code, 5);
  ck_assert_uint_eq(e.index, 63);
  ck_assert_str_eq(e.message, "task returned 5");
  /* The item's own message. */
  items_free(&it);
  char big[5000];
  memset(big, 'b', sizeof big);
  for (size_t i = 0; i < 100; i++)
    items_add(&it, i == 80 ? big : "ok", i == 80 ? sizeof big : 2);
  in = items_packed(&it);
  mproc_assert_err(mproc_pool_map_packed(p, reverse_len, &in, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_int_eq(e.task_code, 7);
  ck_assert_uint_eq(e.index, 80);
  ck_assert_str_eq(e.message, "item of 5000 bytes is too long");
  /* A worker that dies is blamed on the item it was in, inside its chunk. */
  items_free(&it);
  for (size_t i = 0; i < 40; i++)
    items_add_str(&it, i == 25 ? "#" : "ok");
  in = items_packed(&it);
  o.chunksize = 40;
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000), MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 25);
  ck_assert_int_eq(e.exit_status, 3);
  ck_assert_ptr_null(out.ends);
  /* The pool still works afterwards. */
  items_free(&it);
  for (size_t i = 0; i < 40; i++)
    items_add_str(&it, "ok");
  in = items_packed(&it);
  mproc_assert_ok(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000));
  assert_item_eq(&out, 39, "ok");
  mproc_packed_free(&out);
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_deadline_cancels) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  struct items it = {0};
  items_add_str(&it, "a");
  items_add_str(&it, "b");
  items_add_str(&it, "c");
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 1};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_packed(p, block_item, &in, &out, &o, &e, 200), MPROC_ETIMEDOUT);
  ck_assert_int_eq(e.code, MPROC_ETIMEDOUT);
  ck_assert_ptr_null(out.ends);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000));
  assert_item_eq(&out, 2, "c");
  mproc_packed_free(&out);
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_results_larger_than_the_area) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  struct items it = {0};
  const char *words[] = {"a", "bb", "big", "d", "big", ""};
  for (size_t i = 0; i < 6; i++)
    items_add_str(&it, words[i]);
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 6};
  mproc_assert_ok(mproc_pool_map_packed(p, big_result, &in, &out, &o, NULL, 60000));
  assert_item_eq(&out, 0, "a");
  assert_item_eq(&out, 1, "bb");
  assert_item_eq(&out, 3, "d");
  assert_item_eq(&out, 5, "");
  for (size_t k = 2; k <= 4; k += 2) {
    struct mproc_buf b = packed_item(&out, k);
    check_big_bytes(&b);
  }
  /* A packed call has no overflow area: the first "big" found its chunk's
   * area too small, and ran again in the rest of its chunk. */
  ck_assert_int_eq(atomic_load(&S->count), 3);
  mproc_packed_free(&out);
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* The one pass, the general way (here forced by smaller limits: every
 * chunk the call way) and a pool whose workers do not share its memory
 * give the same results; a decreasing end is refused every way with
 * nothing run. */
static struct mproc__transport_ops shm_copy;

static void every_way_on(mproc_pool *p, struct items *it) {
  struct mproc_packed in = items_packed(it), out;
  size_t limits[] = {0, 16 << 10, 90 << 10, 4 << 20, mproc__map_buf_in_max};
  size_t saved = mproc__map_buf_in_max;
  for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
    mproc__map_buf_in_max = limits[l];
    struct mproc_map_options o = {.chunksize = 70};
    mproc_assert_ok(mproc_pool_map_packed(p, reverse_len, &in, &out, &o, NULL, 60000));
    check_reversed(&out, &in);
    mproc_packed_free(&out);
    S->count = 0;
    size_t keep = it->ends[it->n / 2];
    it->ends[it->n / 2] = it->ends[it->n / 2 - 1] - 1;
    mproc_assert_err(mproc_pool_map_packed(p, reverse_len, &in, &out, &o, NULL, 60000),
                     MPROC_EINVAL);
    ck_assert_ptr_null(out.ends);
    it->ends[it->n / 2] = keep;
  }
  mproc__map_buf_in_max = saved;
}

START_TEST(test_every_way_agrees) {
  S = shared_new();
  struct items it = {0};
  strings_of_any_length(&it, 300);
  mproc_pool *p = make_pool(2);
  every_way_on(p, &it);
  mproc_assert_ok(mproc_pool_free(p));
  shm_copy = mproc__transport_shm;
  shm_copy.name = "map-packed-shm-copy";
  mproc_assert_ok(mproc__transport_register(&shm_copy));
  struct mproc_pool_options po = {.workers = 2, .transport = shm_copy.name};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  every_way_on(p, &it);
  /* Failures are blamed on their items there too. */
  items_free(&it);
  for (size_t i = 0; i < 30; i++)
    items_add_str(&it, i == 13 ? "!x" : "w");
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 4};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_uint_eq(e.index, 13);
  ck_assert_int_eq(e.task_code, 5);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc__transport_unregister(&shm_copy));
  items_free(&it);
  shared_free(S);
}
END_TEST

/* A bad end runs nothing: the item function counts its calls. */
static int counting(const void *in, size_t len, mproc_item_ctx *ctx) {
  atomic_fetch_add(&S->count, 1);
  return mproc_item_return(ctx, in, len);
}

START_TEST(test_bad_arguments) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  size_t ends[3] = {1, 3, 2};
  struct mproc_packed in = {"abc", ends, 2}, out = {"junk", ends, 9};
  mproc_assert_err(mproc_pool_map_packed(NULL, picky, &in, &out, NULL, NULL, 1000), MPROC_EINVAL);
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  mproc_assert_err(mproc_pool_map_packed(p, NULL, &in, &out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_packed(p, picky, NULL, &out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, NULL, NULL, NULL, 1000), MPROC_EINVAL);
  /* ends NULL with items; data NULL with bytes */
  struct mproc_packed bad = {"abc", NULL, 2};
  mproc_assert_err(mproc_pool_map_packed(p, picky, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  bad = (struct mproc_packed){NULL, ends, 2};
  mproc_assert_err(mproc_pool_map_packed(p, picky, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  /* an end that decreases (3 then 2): nothing runs */
  in.n = 3;
  struct mproc_map_options one = {.chunksize = 1};
  mproc_assert_err(mproc_pool_map_packed(p, counting, &in, &out, &one, NULL, 1000), MPROC_EINVAL);
  ck_assert_int_eq(atomic_load(&S->count), 0);
  /* One that wraps: the difference 3 - (SIZE_MAX - 1) is small. */
  size_t wraps[3] = {2, SIZE_MAX - 1, 3};
  bad = (struct mproc_packed){"abc", wraps, 3};
  mproc_assert_err(mproc_pool_map_packed(p, counting, &bad, &out, &one, NULL, 1000), MPROC_EINVAL);
  ck_assert_int_eq(atomic_load(&S->count), 0);
  in.n = 2;
  /* sizes past SIZE_MAX / 4 */
  size_t huge_ends[2] = {1, SIZE_MAX / 2};
  bad = (struct mproc_packed){"abc", huge_ends, 2};
  mproc_assert_err(mproc_pool_map_packed(p, picky, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  struct mproc_map_options o = {.flags = 1};
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, NULL, 1000), MPROC_EINVAL);
  o = (struct mproc_map_options){.progress = 99};
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, NULL, NULL, -2), MPROC_EINVAL);
  /* No items: nothing to release. */
  struct mproc_packed none = {NULL, NULL, 0};
  mproc_assert_ok(mproc_pool_map_packed(p, picky, &none, &out, NULL, NULL, 1000));
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  mproc_packed_free(&out);
  mproc_packed_free(NULL);
  /* Empty items need no data. */
  size_t zero[2] = {0, 0};
  struct mproc_packed empties = {NULL, zero, 2};
  mproc_assert_ok(mproc_pool_map_packed(p, picky, &empties, &out, NULL, NULL, 10000));
  ck_assert_uint_eq(out.n, 2);
  ck_assert_uint_eq(out.ends[1], 0);
  mproc_packed_free(&out);
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, NULL, NULL, 1000), MPROC_ECLOSED);
  ck_assert_ptr_null(out.ends);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* An element function that writes over the end of an item before it in
 * its chunk (the worker has written that end already): an end past the
 * area, which the parent must not hand to the caller. */
#define SCRIBBLE_ITEMS 8
static int end_scribble(const void *in, size_t len, mproc_item_ctx *ctx) {
  int k;
  memcpy(&k, in, sizeof k);
  if (len == sizeof k && k == SCRIBBLE_ITEMS - 1) {
    struct mproc__slot_shm *s = mproc__worker_slot;
    struct mproc__entry *e = &s->ring[(atomic_load(&s->cur) - 1) % MPROC__RING];
    unsigned char *h = mproc__worker_arena + e->in_off - MPROC__MB_HDR;
    mproc__mb_end *ends = (mproc__mb_end *)(h + ((struct mproc__mb_hdr *)h)->outs_at);
    ends[2] = UINT32_MAX;
  }
  int r = k * k;
  return mproc_item_return(ctx, &r, sizeof r);
}

START_TEST(test_scribbled_end_is_refused) {
  mproc_pool *p = make_pool(1);
  int v[SCRIBBLE_ITEMS];
  size_t ends[SCRIBBLE_ITEMS];
  for (int i = 0; i < SCRIBBLE_ITEMS; i++) {
    v[i] = i;
    ends[i] = (size_t)(i + 1) * sizeof v[i];
  }
  struct mproc_packed in = {v, ends, SCRIBBLE_ITEMS}, out;
  struct mproc_map_options o = {.chunksize = SCRIBBLE_ITEMS};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_packed(p, end_scribble, &in, &out, &o, &e, 30000),
                   MPROC_ECORRUPT);
  ck_assert_uint_eq(e.index, 2);
  ck_assert_ptr_null(out.ends);
  /* The pool carries on. */
  for (int i = 0; i < SCRIBBLE_ITEMS; i++)
    v[i] = SCRIBBLE_ITEMS - 2 - i; /* no item scribbles now */
  mproc_assert_ok(mproc_pool_map_packed(p, end_scribble, &in, &out, &o, &e, 30000));
  mproc_packed_free(&out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("map-packed");
  TCase *tc = mproc_test_tcase(s, "map-packed", 120);
  tcase_add_test(tc, test_strings_of_any_length_every_start_method);
  tcase_add_test(tc, test_empty_and_replaced_results_outlive_the_pool);
  tcase_add_test(tc, test_failures_are_blamed_on_their_items);
  tcase_add_test(tc, test_deadline_cancels);
  tcase_add_test(tc, test_results_larger_than_the_area);
  tcase_add_test(tc, test_every_way_agrees);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_scribbled_end_is_refused);
  return mproc_test_run(s);
}
