/* mproc_pool_map_packed: packed items in, packed results out; every way a
 * chunk runs (the one pass, the general way, the call way for results that
 * outgrow their area and for a pool without a shared arena) gives the same
 * results; failures are blamed on their items; bad arguments are refused
 * with nothing run, and nothing leaks on any path (the harness counts fds,
 * maps, children). */
#include "map-packed-cases.h"
#include "pool-helpers.h"
#include "pool.h"

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

PACKED_MAP_OF(map_reverse_len, mproc_pool_map_packed, reverse_len)
PACKED_MAP_OF(map_picky, mproc_pool_map_packed, picky)

START_TEST(test_strings_of_any_length_every_start_method) {
  strings_every_start_method(map_reverse_len);
}
END_TEST

/* Empty items and results, a result replaced, no result at all; the results
 * stay valid after the pool is freed. */
START_TEST(test_empty_and_replaced_results_outlive_the_pool) {
  const char *words[] = {"", "x", "e", "abc", "", "x", "tail"};
  const char *want[] = {"", "2", "", "abc", "", "2", "tail"};
  results_outlive_the_pool(map_picky, words, want, 7);
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

PACKED_MAP_OF(map_big_result, mproc_pool_map_packed, big_result)

START_TEST(test_results_larger_than_the_area) {
  /* A packed call has no overflow area: the first "big" found its chunk's
   * area too small, and ran again in the rest of its chunk. */
  results_larger_than_the_area(map_big_result, 3);
}
END_TEST

/* Failures on a pool whose workers do not share its memory are blamed on
 * their items too. */
static void failures_without_arena(mproc_pool *p) {
  struct items it = {0};
  for (size_t i = 0; i < 30; i++)
    items_add_str(&it, i == 13 ? "!x" : "w");
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 4};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_packed(p, picky, &in, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert_uint_eq(e.index, 13);
  ck_assert_int_eq(e.task_code, 5);
  items_free(&it);
}

START_TEST(test_every_way_agrees) {
  S = shared_new();
  every_way_agrees(map_reverse_len, failures_without_arena);
  shared_free(S);
}
END_TEST

/* A bad end runs nothing: the item function counts its calls. */
static int counting(const void *in, size_t len, mproc_item_ctx *ctx) {
  atomic_fetch_add(&S->count, 1);
  return mproc_item_return(ctx, in, len);
}

PACKED_MAP_OF(map_counting, mproc_pool_map_packed, counting)

START_TEST(test_bad_arguments) { bad_arguments(map_picky, map_counting); }
END_TEST

/* Squares int items; item SCRIBBLE_ITEMS - 1 first writes over the end of
 * an item before it in its chunk. */
static int end_scribble(const void *in, size_t len, mproc_item_ctx *ctx) {
  int k;
  memcpy(&k, in, sizeof k);
  if (len == sizeof k && k == SCRIBBLE_ITEMS - 1)
    scribble_end_2();
  int r = k * k;
  return mproc_item_return(ctx, &r, sizeof r);
}
PACKED_MAP_OF(map_end_scribble, mproc_pool_map_packed, end_scribble)

START_TEST(test_scribbled_end_is_refused) { scribbled_end_is_refused(map_end_scribble); }
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
