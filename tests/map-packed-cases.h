/* Cases the map_packed and map_bytes suites share: both maps take packed
 * items and give packed results, so the checks of their results, their
 * arguments and the corrupt-ring defence are the same, run through a
 * wrapper that binds each suite's map and item function. */
#ifndef MPROC_TEST_MAP_PACKED_CASES_H
#define MPROC_TEST_MAP_PACKED_CASES_H

#include "map-buf-items.h"
#include "map_buf.h"
#include "pool.h"
#include "shm_layout.h"

/* A map over packed items with its item function bound. */
typedef int (*packed_map_fn)(mproc_pool *p, const struct mproc_packed *in, struct mproc_packed *out,
                             const struct mproc_map_options *o, struct mproc_task_error *e,
                             int64_t timeout_ms);

/* Defines `name`, a packed_map_fn calling `map` with item function `fn`. */
#define PACKED_MAP_OF(name, map, fn)                                                               \
  static int name(mproc_pool *p, const struct mproc_packed *in, struct mproc_packed *out,          \
                  const struct mproc_map_options *o, struct mproc_task_error *e,                   \
                  int64_t timeout_ms) {                                                            \
    return map(p, fn, in, out, o, e, timeout_ms);                                                  \
  }

/* `rev` (a map whose results are reverse_len's) over strings of any length,
 * on a pool of `method`: every chunking under fork; the other start methods
 * (slower to start, above all under the sanitizers) differ only in how the
 * function travels. */
static inline void strings_by(int method, packed_map_fn rev) {
  struct mproc_pool_options po = {.workers = 2, .start_method = method};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  struct items it = {0};
  strings_of_any_length(&it, 1000);
  struct mproc_packed in = items_packed(&it);
  size_t chunks[] = {7, 0, 1, 5000};
  for (size_t c = 0; c < (method == MPROC_START_FORK ? 4 : 1); c++) {
    struct mproc_map_options o = {.chunksize = chunks[c]};
    struct mproc_packed out;
    struct mproc_task_error e;
    mproc_assert_ok(rev(p, &in, &out, &o, &e, 60000));
    check_reversed_packed(&out, &in);
    mproc_packed_free(&out);
    ck_assert_ptr_null(out.data);
    ck_assert_ptr_null(out.ends);
    mproc_packed_free(&out); /* released once: a second call does nothing */
  }
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
}

static inline void strings_every_start_method(packed_map_fn rev) {
  strings_by(MPROC_START_FORK, rev);
  strings_by(MPROC_START_SPAWN, rev);
  strings_by(MPROC_START_FORKSERVER, rev);
}

/* `map` over the n `words` gives the n `want` (chunks of 3), and the
 * results stay valid after the pool is freed. */
static inline void results_outlive_the_pool(packed_map_fn map, const char *const *words,
                                            const char *const *want, size_t n) {
  mproc_pool *p = make_pool(2);
  struct items it = {0};
  for (size_t i = 0; i < n; i++)
    items_add_str(&it, words[i]);
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 3};
  mproc_assert_ok(map(p, &in, &out, &o, NULL, 30000));
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_uint_eq(out.n, n);
  for (size_t i = 0; i < n; i++)
    assert_item_eq(&out, i, want[i]);
  mproc_packed_free(&out);
  items_free(&it);
}

/* `big` (a map whose item function gives "big" a BIG result, counting its
 * calls for it in S->count, and every other item as it is) over items two of
 * which are "big", in one chunk: the results are right, and the item
 * function ran `calls` times for them. */
static inline void results_larger_than_the_area(packed_map_fn big, int calls) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  struct items it = {0};
  const char *words[] = {"a", "bb", "big", "d", "big", ""};
  for (size_t i = 0; i < 6; i++)
    items_add_str(&it, words[i]);
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 6};
  mproc_assert_ok(big(p, &in, &out, &o, NULL, 60000));
  ck_assert_uint_eq(out.n, 6);
  assert_item_eq(&out, 0, "a");
  assert_item_eq(&out, 1, "bb");
  assert_item_eq(&out, 3, "d");
  assert_item_eq(&out, 5, "");
  for (size_t k = 2; k <= 4; k += 2) {
    struct mproc_buf b = packed_item(&out, k);
    check_big_bytes(&b);
  }
  ck_assert_int_eq(atomic_load(&S->count), calls);
  mproc_packed_free(&out);
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}

/* The one pass, the general way (here forced by smaller limits: every
 * chunk the call way) give the same results; a decreasing end is refused
 * every way with nothing run. */
static inline void every_way_on(mproc_pool *p, struct items *it, packed_map_fn rev) {
  struct mproc_packed in = items_packed(it), out;
  size_t limits[] = {0, 16 << 10, 90 << 10, 4 << 20, mproc__map_buf_in_max};
  size_t saved = mproc__map_buf_in_max;
  for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
    mproc__map_buf_in_max = limits[l];
    struct mproc_map_options o = {.chunksize = 70};
    mproc_assert_ok(rev(p, &in, &out, &o, NULL, 60000));
    check_reversed_packed(&out, &in);
    mproc_packed_free(&out);
    size_t keep = it->ends[it->n / 2];
    it->ends[it->n / 2] = it->ends[it->n / 2 - 1] - 1;
    mproc_assert_err(rev(p, &in, &out, &o, NULL, 60000), MPROC_EINVAL);
    ck_assert_ptr_null(out.ends);
    it->ends[it->n / 2] = keep;
  }
  mproc__map_buf_in_max = saved;
}

/* every_way_on on a pool of the shared-memory transport, then on one of a
 * copy of it under another name, whose workers do not share the pool's
 * arena (every chunk the call way), where `more` runs too. */
static inline void every_way_agrees(packed_map_fn rev, void (*more)(mproc_pool *p)) {
  struct items it = {0};
  strings_of_any_length(&it, 300);
  mproc_pool *p = make_pool(2);
  every_way_on(p, &it, rev);
  mproc_assert_ok(mproc_pool_free(p));
  static struct mproc__transport_ops shm_copy;
  shm_copy = mproc__transport_shm;
  shm_copy.name = "map-packed-shm-copy";
  mproc_assert_ok(mproc__transport_register(&shm_copy));
  struct mproc_pool_options po = {.workers = 2, .transport = shm_copy.name};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  every_way_on(p, &it, rev);
  more(p);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc__transport_unregister(&shm_copy));
  items_free(&it);
}

/* Bad arguments, through `picky` (a map of an item function that returns
 * the empty items it is given as they are) and `counting` (one that counts
 * its calls in S->count): refused with nothing run. */
static inline void bad_arguments(packed_map_fn picky, packed_map_fn counting) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  size_t ends[3] = {1, 3, 2};
  struct mproc_packed in = {"abc", ends, 2}, out = {"junk", ends, 9};
  mproc_assert_err(picky(NULL, &in, &out, NULL, NULL, 1000), MPROC_EINVAL);
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  mproc_assert_err(picky(p, NULL, &out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(picky(p, &in, NULL, NULL, NULL, 1000), MPROC_EINVAL);
  /* ends NULL with items; data NULL with bytes */
  struct mproc_packed bad = {"abc", NULL, 2};
  mproc_assert_err(picky(p, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  bad = (struct mproc_packed){NULL, ends, 2};
  mproc_assert_err(picky(p, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  /* an end that decreases (3 then 2): nothing runs */
  in.n = 3;
  struct mproc_map_options one = {.chunksize = 1};
  mproc_assert_err(counting(p, &in, &out, &one, NULL, 1000), MPROC_EINVAL);
  ck_assert_int_eq(atomic_load(&S->count), 0);
  /* One that wraps: the difference 3 - (SIZE_MAX - 1) is small. */
  size_t wraps[3] = {2, SIZE_MAX - 1, 3};
  bad = (struct mproc_packed){"abc", wraps, 3};
  mproc_assert_err(counting(p, &bad, &out, &one, NULL, 1000), MPROC_EINVAL);
  ck_assert_int_eq(atomic_load(&S->count), 0);
  in.n = 2;
  /* sizes past SIZE_MAX / 4 */
  size_t huge_ends[2] = {1, SIZE_MAX / 2};
  bad = (struct mproc_packed){"abc", huge_ends, 2};
  mproc_assert_err(picky(p, &bad, &out, NULL, NULL, 1000), MPROC_EINVAL);
  struct mproc_map_options o = {.flags = 1};
  mproc_assert_err(picky(p, &in, &out, &o, NULL, 1000), MPROC_EINVAL);
  o = (struct mproc_map_options){.progress = 99};
  mproc_assert_err(picky(p, &in, &out, &o, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(picky(p, &in, &out, NULL, NULL, -2), MPROC_EINVAL);
  /* No items: nothing to release. */
  struct mproc_packed none = {NULL, NULL, 0};
  mproc_assert_ok(picky(p, &none, &out, NULL, NULL, 1000));
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  mproc_packed_free(&out);
  mproc_packed_free(NULL);
  /* Empty items need no data. */
  size_t zero[2] = {0, 0};
  struct mproc_packed empties = {NULL, zero, 2};
  mproc_assert_ok(picky(p, &empties, &out, NULL, NULL, 10000));
  ck_assert_uint_eq(out.n, 2);
  ck_assert_uint_eq(out.ends[1], 0);
  mproc_packed_free(&out);
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_err(picky(p, &in, &out, NULL, NULL, 1000), MPROC_ECLOSED);
  ck_assert_ptr_null(out.ends);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}

/* In a worker running a packed arena chunk: writes over the end of the
 * chunk's item 2 (written already when a later item runs), as a task that
 * scribbles over its own result area would. */
static inline void scribble_end_2(void) {
  struct mproc__slot_shm *s = mproc__worker_slot;
  struct mproc__entry *e = &s->ring[(atomic_load(&s->cur) - 1) % MPROC__RING];
  unsigned char *h = mproc__worker_arena + e->in_off - MPROC__MB_HDR;
  mproc__mb_end *ends = (mproc__mb_end *)(h + ((struct mproc__mb_hdr *)h)->outs_at);
  ends[2] = UINT32_MAX;
}

/* SCRIBBLE_ITEMS int items; the map `sq` squares each and calls
 * scribble_end_2 in item SCRIBBLE_ITEMS - 1: an end past the area, which
 * the parent must refuse with MPROC_ECORRUPT, not hand to the caller. */
#define SCRIBBLE_ITEMS 8
static inline void scribbled_end_is_refused(packed_map_fn sq) {
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
  mproc_assert_err(sq(p, &in, &out, &o, &e, 30000), MPROC_ECORRUPT);
  ck_assert_uint_eq(e.index, 2);
  ck_assert_ptr_null(out.ends);
  /* The pool carries on. */
  for (int i = 0; i < SCRIBBLE_ITEMS; i++)
    v[i] = SCRIBBLE_ITEMS - 2 - i; /* no item scribbles now */
  mproc_assert_ok(sq(p, &in, &out, &o, &e, 30000));
  for (int i = 0; i < SCRIBBLE_ITEMS; i++) {
    int r;
    memcpy(&r, (const char *)out.data + (size_t)i * sizeof r, sizeof r);
    ck_assert_int_eq(r, v[i] * v[i]);
  }
  mproc_packed_free(&out);
  mproc_assert_ok(mproc_pool_free(p));
}

#endif /* MPROC_TEST_MAP_PACKED_CASES_H */
