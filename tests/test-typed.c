/* Typed map/imap macros (include/mproc/typed.h): sizes come from the types
 * and the results are those of the byte-level calls.  The compile-time
 * rejections are checked by check-typed-compile-fail.sh. */
#include "pool-helpers.h"

static long square(long x) { return x * x; }
MPROC_ELEMENT_FN(square_elem, square, long, long)

struct point {
  int x, y;
};
/* Fails (code 3) for a point left of the axis. */
static int manhattan(const struct point *p, long *out) {
  if (p->x < 0)
    return 3;
  *out = (long)p->x + p->y;
  return 0;
}
MPROC_ELEMENT_FN_CHECKED(manhattan_elem, manhattan, struct point, long)

START_TEST(test_map_array) {
  mproc_pool *p = make_pool(2);
  const long in[100] = {[0] = 3, [50] = -7, [99] = 100000};
  long out[120]; /* more room than needed is fine */
  for (size_t i = 0; i < 120; i++)
    out[i] = -1;
  ck_assert_uint_eq(MPROC_COUNTOF(in), 100);
  struct mproc_task_error e;
  mproc_assert_ok(MPROC_MAP_ARRAY(p, square_elem, in, out, NULL, &e, 30000));
  for (size_t i = 0; i < 100; i++)
    ck_assert_int_eq(out[i], in[i] * in[i]);
  for (size_t i = 100; i < 120; i++)
    ck_assert_int_eq(out[i], -1); /* written only as far as the input goes */
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_map_pointer_and_async) {
  mproc_pool *p = make_pool(2);
  size_t n = 1000;
  long *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  ck_assert(in != NULL && out != NULL);
  for (size_t i = 0; i < n; i++)
    in[i] = (long)i - 500;
  mproc_assert_ok(MPROC_MAP(p, square_elem, in, n, out, NULL, NULL, 30000));
  for (size_t i = 0; i < n; i++)
    ck_assert_int_eq(out[i], in[i] * in[i]);
  memset(out, 0, n * sizeof *out);
  mproc_future *f;
  mproc_assert_ok(MPROC_MAP_ASYNC(p, square_elem, in, n, out, NULL, &f));
  mproc_assert_ok(mproc_future_wait(f, 30000));
  const void *d;
  size_t len;
  mproc_assert_ok(mproc_future_result(f, &d, &len, 0));
  mproc_future_free(f);
  ck_assert_int_eq(out[n - 1], in[n - 1] * in[n - 1]);
  free(in);
  free(out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_checked_function_fails_with_index) {
  mproc_pool *p = make_pool(2);
  struct point pts[4] = {{1, 2}, {3, 4}, {-1, 0}, {5, 6}};
  long out[4];
  struct mproc_task_error e;
  mproc_assert_err(MPROC_MAP_ARRAY(p, manhattan_elem, pts, out, NULL, &e, 30000), MPROC_ETASK);
  ck_assert_int_eq(e.task_code, 3);
  ck_assert_uint_eq(e.index, 2);
  pts[2].x = 7;
  mproc_assert_ok(MPROC_MAP_ARRAY(p, manhattan_elem, pts, out, NULL, &e, 30000));
  ck_assert_int_eq(out[0], 3);
  ck_assert_int_eq(out[2], 7);
  ck_assert_int_eq(out[3], 11);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Yields 1..*ctx as longs. */
static int gen_longs(void *ctx, void *item) {
  long *left = ctx;
  if (*left == 0)
    return 0;
  *(long *)item = (*left)--;
  return 1;
}

START_TEST(test_imap) {
  mproc_pool *p = make_pool(2);
  long left = 50, sum = 0, v;
  mproc_imap *it;
  mproc_assert_ok(MPROC_IMAP(p, square_elem, gen_longs, &left, NULL, &it));
  size_t index;
  int r, got = 0;
  while ((r = MPROC_IMAP_NEXT(it, square_elem, &v, &index, NULL, 30000)) == 0) {
    ck_assert_int_eq(v, (long)(50 - index) * (long)(50 - index));
    sum += v;
    got++;
  }
  mproc_assert_err(r, MPROC_EEOF);
  ck_assert_int_eq(got, 50);
  ck_assert_int_eq(sum, 50L * 51 * 101 / 6);
  mproc_imap_free(it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A string's vowels; "?" in a string makes no difference to the type. */
static long vowels(const char *s, size_t len) {
  long k = 0;
  for (size_t i = 0; i < len; i++)
    k += strchr("aeiou", s[i]) != NULL && s[i] != '\0';
  return k;
}
MPROC_STRING_FN(vowels_fn, vowels, long)

START_TEST(test_map_strings) {
  mproc_pool *p = make_pool(2);
  const char text[] = "spamhameggsaeiou";
  size_t ends[] = {4, 7, 11, 11, 16}; /* spam, ham, eggs, "", aeiou */
  struct mproc_packed in = {text, ends, 5};
  long out[5] = {-1, -1, -1, -1, -1};
  struct mproc_task_error e;
  mproc_assert_ok(MPROC_MAP_STRINGS(p, vowels_fn, &in, out, NULL, &e, 30000));
  const long want[5] = {1, 1, 1, 0, 5};
  for (size_t i = 0; i < 5; i++)
    ck_assert_int_eq(out[i], want[i]);
  /* The byte-level call's checks answer, and nothing is written. */
  size_t bad_ends[] = {4, 3};
  struct mproc_packed bad = {text, bad_ends, 2};
  out[0] = -1;
  mproc_assert_err(MPROC_MAP_STRINGS(p, vowels_fn, &bad, out, NULL, &e, 30000), MPROC_EINVAL);
  ck_assert_int_eq(out[0], -1);
  mproc_assert_err(MPROC_MAP_STRINGS(NULL, vowels_fn, &in, out, NULL, &e, 30000), MPROC_EINVAL);
  struct mproc_packed none = {NULL, NULL, 0};
  mproc_assert_ok(MPROC_MAP_STRINGS(p, vowels_fn, &none, out, NULL, &e, 30000));
  ck_assert_int_eq(out[0], -1);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_errors_pass_through) {
  /* The macros add no checks of their own at run time: the byte-level
   * call's argument validation answers. */
  long in[4] = {1, 2, 3, 4}, out[4];
  mproc_assert_err(MPROC_MAP_ARRAY(NULL, square_elem, in, out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_assert_err(MPROC_MAP(NULL, square_elem, in, 4, out, NULL, NULL, 1000), MPROC_EINVAL);
  mproc_imap *it;
  mproc_assert_err(MPROC_IMAP(NULL, square_elem, gen_longs, NULL, NULL, &it), MPROC_EINVAL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("typed");
  TCase *tc = mproc_test_tcase(s, "typed", 60);
  tcase_add_test(tc, test_map_array);
  tcase_add_test(tc, test_map_pointer_and_async);
  tcase_add_test(tc, test_checked_function_fails_with_index);
  tcase_add_test(tc, test_imap);
  tcase_add_test(tc, test_map_strings);
  tcase_add_test(tc, test_errors_pass_through);
  return mproc_test_run(s);
}
