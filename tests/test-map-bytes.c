/* mproc_pool_map_bytes: packed items in, packed results out, each written
 * in place by an item function that returns its length.  Every way a
 * chunk runs (the one pass, the call way for a result that asks for more
 * room than its chunk's area has, and for a pool without a shared arena)
 * gives the same results; failures are blamed on their items with their
 * messages; a task that writes over its chunk's ends is refused; bad
 * arguments run nothing, and nothing leaks on any path (the harness counts
 * fds, maps, children). */
#include "map-packed-cases.h"
#include "pool-helpers.h"
#include "pool.h"

#include <limits.h>

/* reverse_len's work in place: the item reversed, then ":<length>". */
static ssize_t rev_len(const void *in, size_t len, void *out, size_t room) {
  if (len > 4096)
    return mproc_map_bytes_fail(MPROC_E2BIG, "item of %zu bytes is too long", len);
  char tail[32];
  int k = snprintf(tail, sizeof tail, ":%zu", len);
  size_t need = len + (size_t)k;
  if (need > room)
    return (ssize_t)need;
  const char *s = in;
  char *o = out;
  for (size_t i = 0; i < len; i++)
    o[i] = s[len - 1 - i];
  memcpy(o + len, tail, (size_t)k);
  return (ssize_t)need;
}

/* "!" fails with MPROC_EIO and a message, "?" with -EPROTO and none, "+"
 * through mproc_map_bytes_fail with a positive code, "m" records a message
 * for -EPROTO and succeeds (comes back as it is), "#" kills its worker,
 * "e" has an empty result, "big" returns BIG bytes (its calls counted in
 * S->count), "greedy" always asks for more room than it gets; anything else
 * comes back as it is. */
static ssize_t picky(const void *in, size_t len, void *out, size_t room) {
  const char *s = in;
  if (len > 0 && s[0] == '!')
    return mproc_map_bytes_fail(MPROC_EIO, "cannot read \"%.*s\"", (int)len - 1, s + 1);
  if (len > 0 && s[0] == '?')
    return -EPROTO;
  if (len > 0 && s[0] == '+')
    return mproc_map_bytes_fail(5, "positive");
  if (len > 0 && s[0] == '#')
    _exit(3);
  if (len > 0 && s[0] == 'm')
    mproc_map_bytes_fail(-EPROTO, "not this item's");
  if (len == 1 && s[0] == 'e')
    return 0;
  if (len == 6 && memcmp(s, "greedy", 6) == 0)
    return room < SSIZE_MAX ? (ssize_t)room + 1 : -EOVERFLOW;
  if (len == 3 && memcmp(s, "big", 3) == 0) {
    atomic_fetch_add(&S->count, 1);
    if (room < BIG)
      return (ssize_t)BIG;
    char *o = out;
    for (size_t i = 0; i < BIG; i++)
      o[i] = (char)('a' + i % 23);
    return (ssize_t)BIG;
  }
  if (len > room)
    return (ssize_t)len;
  memcpy(out, in, len);
  return (ssize_t)len;
}

PACKED_MAP_OF(map_rev_len, mproc_pool_map_bytes, rev_len)
PACKED_MAP_OF(map_picky, mproc_pool_map_bytes, picky)

START_TEST(test_strings_of_any_length_every_start_method) {
  strings_every_start_method(map_rev_len);
}
END_TEST

/* Empty items and empty results; the results outlive the pool. */
START_TEST(test_empty_items_and_results_outlive_the_pool) {
  const char *words[] = {"", "e", "abc", "", "e", "tail", ""};
  const char *want[] = {"", "", "abc", "", "", "tail", ""};
  results_outlive_the_pool(map_picky, words, want, 7);
}
END_TEST

/* A failure of item `bad` among "ok" items (chunks of 10) and one before it
 * in its chunk that recorded a message and succeeded: its index, code and
 * message. */
static void check_failure(mproc_pool *p, const char *bad, int code, const char *msg) {
  struct items it = {0};
  for (size_t i = 0; i < 100; i++)
    items_add_str(&it, i == 63 ? bad : i == 61 ? "m" : i == 80 ? "!later" : "ok");
  struct mproc_packed in = items_packed(&it), out = {"junk", NULL, 3};
  struct mproc_map_options o = {.chunksize = 10};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_bytes(p, picky, &in, &out, &o, &e, 30000), MPROC_ETASK);
  ck_assert(out.data == NULL && out.ends == NULL && out.n == 0);
  ck_assert_int_eq(e.code, MPROC_ETASK);
  ck_assert_int_eq(e.task_code, code);
  ck_assert_uint_eq(e.index, 63);
  ck_assert_str_eq(e.message, msg);
  items_free(&it);
}

/* Every failure on pool p, then a map that succeeds. */
static void failures_on(mproc_pool *p) {
  check_failure(p, "!file", MPROC_EIO, "cannot read \"file\"");
  check_failure(p, "?", -EPROTO, mproc_strerror(-EPROTO));
  check_failure(p, "+", MPROC_ETASK, "positive");
  /* Asking for more room after being given what it asked for. */
  struct items it = {0};
  for (size_t i = 0; i < 12; i++)
    items_add_str(&it, i == 5 ? "greedy" : "ok");
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_bytes(p, picky, &in, &out, NULL, &e, 30000), MPROC_ETASK);
  ck_assert_int_eq(e.task_code, MPROC_ERANGE);
  ck_assert_uint_eq(e.index, 5);
  ck_assert_msg(strstr(e.message, "asked for") != NULL, "message: %s", e.message);
  items_free(&it);
  strings_of_any_length(&it, 200);
  in = items_packed(&it);
  mproc_assert_ok(mproc_pool_map_bytes(p, rev_len, &in, &out, NULL, &e, 30000));
  check_reversed_packed(&out, &in);
  mproc_packed_free(&out);
  items_free(&it);
}

START_TEST(test_failures_are_blamed_on_their_items) {
  mproc_pool *p = make_pool(2);
  failures_on(p);
  /* A worker that dies is blamed on the item it was in, inside its chunk. */
  struct items it = {0};
  for (size_t i = 0; i < 40; i++)
    items_add_str(&it, i == 25 ? "#" : "ok");
  struct mproc_packed in = items_packed(&it), out;
  struct mproc_map_options o = {.chunksize = 40};
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_map_bytes(p, picky, &in, &out, &o, &e, 30000), MPROC_EWORKERDIED);
  ck_assert_uint_eq(e.index, 25);
  ck_assert_int_eq(e.exit_status, 3);
  ck_assert_ptr_null(out.ends);
  items_free(&it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Results larger than their chunk's area: the function asks for the room,
 * and the rest of its chunk runs again the call way. */
START_TEST(test_results_larger_than_the_area) {
  /* The first "big" asked in the arena, then in the call way's first
   * buffer, then wrote; the second asked once and wrote. */
  results_larger_than_the_area(map_picky, 5);
}
END_TEST

/* The one pass, the general way and a pool without a shared arena agree,
 * and blame failures the same way, with the same messages. */
START_TEST(test_every_way_agrees) { every_way_agrees(map_rev_len, failures_on); }
END_TEST

static ssize_t counting(const void *in, size_t len, void *out, size_t room) {
  atomic_fetch_add(&S->count, 1);
  return picky(in, len, out, room);
}

PACKED_MAP_OF(map_counting, mproc_pool_map_bytes, counting)

START_TEST(test_bad_arguments) {
  bad_arguments(map_picky, map_counting);
  /* Outside a worker the failure helper only returns the code. */
  ck_assert_int_eq(mproc_map_bytes_fail(MPROC_EIO, NULL), MPROC_EIO);
  ck_assert_int_eq(mproc_map_bytes_fail(0, "%s", "zero"), MPROC_ETASK);
  ck_assert_int_eq(mproc_map_bytes_fail(7, NULL), MPROC_ETASK);
}
END_TEST

/* Squares int items; item SCRIBBLE_ITEMS - 1 first writes over the end of
 * an item before it in its chunk. */
static ssize_t end_scribble(const void *in, size_t len, void *out, size_t room) {
  int k;
  memcpy(&k, in, sizeof k);
  if (len == sizeof k && k == SCRIBBLE_ITEMS - 1)
    scribble_end_2();
  int r = k * k;
  if (room < sizeof r)
    return sizeof r;
  memcpy(out, &r, sizeof r);
  return sizeof r;
}
PACKED_MAP_OF(map_end_scribble, mproc_pool_map_bytes, end_scribble)

START_TEST(test_scribbled_end_is_refused) { scribbled_end_is_refused(map_end_scribble); }
END_TEST

int main(void) {
  Suite *s = suite_create("map-bytes");
  TCase *tc = mproc_test_tcase(s, "map-bytes", 120);
  tcase_add_test(tc, test_strings_of_any_length_every_start_method);
  tcase_add_test(tc, test_empty_items_and_results_outlive_the_pool);
  tcase_add_test(tc, test_failures_are_blamed_on_their_items);
  tcase_add_test(tc, test_results_larger_than_the_area);
  tcase_add_test(tc, test_every_way_agrees);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_scribbled_end_is_refused);
  return mproc_test_run(s);
}
