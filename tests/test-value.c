/* Value and Array (src/shared_value.c): types, locking, atomics, across processes. */
#include "sync-util.h"

#include <string.h>

START_TEST(test_types_and_sizes) {
  static const struct {
    mproc_type t;
    size_t size;
  } types[] = {
      {MPROC_TYPE_INT8, 1},   {MPROC_TYPE_UINT8, 1},  {MPROC_TYPE_INT16, 2},
      {MPROC_TYPE_UINT16, 2}, {MPROC_TYPE_INT32, 4},  {MPROC_TYPE_UINT32, 4},
      {MPROC_TYPE_INT64, 8},  {MPROC_TYPE_UINT64, 8}, {MPROC_TYPE_FLOAT, 4},
      {MPROC_TYPE_DOUBLE, 8}, {MPROC_TYPE_CHAR, 1},   {MPROC_TYPE_SIZE, sizeof(size_t)},
  };
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(types); i++) {
    mproc_value *v;
    mproc_assert_ok(mproc_value_new(&v, types[i].t, NULL, NULL));
    ck_assert_uint_eq(mproc_value_elem_size(v), types[i].size);
    ck_assert_uint_eq(mproc_value_count(v), 1);
    ck_assert_int_eq(((uintptr_t)mproc_value_ptr(v)) % 16, 0);
    unsigned char zero[8] = {0};
    ck_assert_int_eq(memcmp(mproc_value_ptr(v), zero, types[i].size), 0);
    mproc_assert_ok(mproc_value_free(v));
  }
  double d = 2.5;
  mproc_value *v;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_DOUBLE, &d, NULL));
  ck_assert(*(double *)mproc_value_ptr(v) == 2.5);
  double out = 0, in = -1.25;
  mproc_assert_ok(mproc_value_set(v, 0, 1, &in, 1000));
  mproc_assert_ok(mproc_value_get(v, 0, 1, &out, 1000));
  ck_assert(out == -1.25);
  mproc_assert_err(mproc_value_fetch_add(v, 0, 1, NULL), MPROC_ENOTSUP);
  mproc_assert_ok(mproc_value_free(v));

  /* Caller-sized elements. */
  struct point {
    int x, y, z;
  } pts[3] = {{1, 2, 3}, {4, 5, 6}, {7, 8, 9}};
  struct mproc_value_options o = {.elem_size = sizeof(struct point)};
  mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_BYTES, 3, pts, &o));
  ck_assert_uint_eq(mproc_value_elem_size(v), sizeof(struct point));
  struct point got[2];
  mproc_assert_ok(mproc_value_get(v, 1, 2, got, 1000));
  ck_assert_int_eq(got[0].x, 4);
  ck_assert_int_eq(got[1].z, 9);
  mproc_assert_err(mproc_value_compare_exchange(v, 0, &(int64_t){0}, 1), MPROC_ENOTSUP);
  mproc_assert_ok(mproc_value_free(v));
}
END_TEST

START_TEST(test_array_ranges_and_raw) {
  int32_t init[10];
  for (int i = 0; i < 10; i++)
    init[i] = i * i;
  struct mproc_value_options raw = {.flags = MPROC_VALUE_RAW};
  mproc_value *a;
  mproc_assert_ok(mproc_array_new(&a, MPROC_TYPE_INT32, 10, init, &raw));
  mproc_rlock *l;
  mproc_assert_err(mproc_value_get_lock(a, &l), MPROC_ESTATE);
  int32_t buf[10];
  mproc_assert_ok(mproc_value_get(a, 0, 10, buf, 0));
  ck_assert_int_eq(memcmp(buf, init, sizeof buf), 0);
  mproc_assert_err(mproc_value_get(a, 5, 6, buf, 0), MPROC_ERANGE);
  mproc_assert_err(mproc_value_get(a, 11, 0, buf, 0), MPROC_ERANGE);
  mproc_assert_err(mproc_value_set(a, SIZE_MAX, 2, buf, 0), MPROC_ERANGE);
  mproc_assert_ok(mproc_value_get(a, 10, 0, buf, 0));
  int32_t nine = 9;
  mproc_assert_ok(mproc_value_set(a, 9, 1, &nine, 0));
  ck_assert_int_eq(((int32_t *)mproc_value_ptr(a))[9], 9);
  mproc_assert_err(mproc_value_fetch_add(a, 10, 1, NULL), MPROC_ERANGE);
  mproc_assert_ok(mproc_value_free(a));
}
END_TEST

START_TEST(test_atomics) {
  mproc_value *v;
  int8_t i8 = 127;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT8, &i8, NULL));
  int64_t old = 0, cur = 0;
  mproc_assert_ok(mproc_value_fetch_add(v, 0, 1, &old));
  ck_assert_int_eq(old, 127);
  mproc_assert_ok(mproc_value_load(v, 0, &cur));
  ck_assert_int_eq(cur, -128); /* wraps as int8_t */
  mproc_assert_ok(mproc_value_free(v));

  uint8_t u8 = 255;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_UINT8, &u8, NULL));
  mproc_assert_ok(mproc_value_load(v, 0, &cur));
  ck_assert_int_eq(cur, 255);
  mproc_assert_ok(mproc_value_free(v));

  mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_UINT64, 2, NULL, NULL));
  mproc_assert_ok(mproc_value_store(v, 1, 40));
  int64_t expected = 41;
  ck_assert_int_eq(mproc_value_compare_exchange(v, 1, &expected, 50), 0);
  ck_assert_int_eq(expected, 40);
  ck_assert_int_eq(mproc_value_compare_exchange(v, 1, &expected, 50), 1);
  mproc_assert_ok(mproc_value_load(v, 1, &cur));
  ck_assert_int_eq(cur, 50);
  mproc_assert_ok(mproc_value_load(v, 0, &cur));
  ck_assert_int_eq(cur, 0);
  mproc_assert_ok(mproc_value_free(v));

  int16_t i16 = -5;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT16, &i16, NULL));
  mproc_assert_ok(mproc_value_fetch_add(v, 0, -1, &old));
  ck_assert_int_eq(old, -5);
  mproc_assert_ok(mproc_value_load(v, 0, &cur));
  ck_assert_int_eq(cur, -6);
  mproc_assert_ok(mproc_value_free(v));
}
END_TEST

START_TEST(test_value_errors) {
  mproc_value *v;
  struct mproc_value_options bad = {.flags = 1u << 9};
  struct mproc_value_options wrong_size = {.elem_size = 3};
  struct mproc_value_options no_size = {0};
  mproc_assert_err(mproc_value_new(NULL, MPROC_TYPE_INT32, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, (mproc_type)0, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, (mproc_type)99, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, &bad), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, &wrong_size), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, MPROC_TYPE_BYTES, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_value_new(&v, MPROC_TYPE_BYTES, NULL, &no_size), MPROC_EINVAL);
  mproc_assert_err(mproc_array_new(&v, MPROC_TYPE_INT32, 0, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_array_new(&v, MPROC_TYPE_INT64, SIZE_MAX / 4, NULL, NULL),
                   MPROC_EOVERFLOW);
  mproc_assert_err(mproc_value_free(NULL), MPROC_EINVAL);
  ck_assert_ptr_null(mproc_value_ptr(NULL));
  ck_assert_uint_eq(mproc_value_count(NULL), 0);
  ck_assert_uint_eq(mproc_value_elem_size(NULL), 0);
  mproc_rlock *l;
  mproc_assert_err(mproc_value_get_lock(NULL, &l), MPROC_EINVAL);
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, NULL));
  mproc_assert_err(mproc_value_get_lock(v, NULL), MPROC_EINVAL);
  int32_t x = 0;
  mproc_assert_err(mproc_value_get(v, 0, 1, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_value_set(v, 0, 1, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_value_get(v, 0, 1, &x, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_value_compare_exchange(v, 0, NULL, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_value_load(v, 0, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_value_load(NULL, 0, &(int64_t){0}), MPROC_EINVAL);
  mproc_assert_err(mproc_value_store(NULL, 0, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_value_fetch_add(NULL, 0, 1, NULL), MPROC_EINVAL);
  /* Freeing while holding its lock would pull the memory from under it. */
  mproc_assert_ok(mproc_value_get_lock(v, &l));
  mproc_assert_ok(mproc_rlock_acquire(l, 0));
  mproc_assert_err(mproc_value_free(v), MPROC_EBUSY);
  mproc_assert_ok(mproc_rlock_release(l));
  mproc_assert_ok(mproc_value_free(v));
}
END_TEST

/* Python's S6: increments under get_lock(). */
static int locked_increments(void *arg) {
  mproc_value *v = arg;
  mproc_rlock *l;
  if (mproc_value_get_lock(v, &l) != 0)
    return 10;
  for (int i = 0; i < 10000; i++) {
    if (mproc_rlock_acquire(l, 30000) != 0)
      return 11;
    (*(int32_t *)mproc_value_ptr(v))++;
    if (mproc_rlock_release(l) != 0)
      return 12;
  }
  return 0;
}

static int atomic_increments(void *arg) {
  mproc_value *v = arg;
  for (int i = 0; i < 10000; i++)
    if (mproc_value_fetch_add(v, 0, 1, NULL) != 0)
      return 10;
  return 0;
}

START_TEST(test_shared_counter) {
  mproc_value *v, *a;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, NULL));
  mproc_assert_ok(mproc_value_new(&a, MPROC_TYPE_INT64, NULL, NULL));
  struct child c[10];
  for (int i = 0; i < 5; i++) {
    c[i] = child_start(locked_increments, v);
    c[5 + i] = child_start(atomic_increments, a);
  }
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  int32_t n = 0;
  mproc_assert_ok(mproc_value_get(v, 0, 1, &n, 1000));
  ck_assert_int_eq(n, 50000);
  int64_t m = 0;
  mproc_assert_ok(mproc_value_load(a, 0, &m));
  ck_assert_int_eq(m, 50000);
  mproc_assert_ok(mproc_value_free(v));
  mproc_assert_ok(mproc_value_free(a));
}
END_TEST

static int hold_value_lock(void *arg) {
  mproc_value *v = ((void **)arg)[0];
  int fd = (int)(intptr_t)((void **)arg)[1];
  mproc_rlock *l;
  if (mproc_value_get_lock(v, &l) != 0 || mproc_rlock_acquire(l, 0) != 0)
    return 10;
  *(int32_t *)mproc_value_ptr(v) = 7; /* half-done update */
  say_ready(fd);
  for (;;)
    pause();
}

START_TEST(test_value_lock_holder_killed) {
  mproc_value *v;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, NULL));
  int p[2];
  pipe_new(p);
  void *arg[2] = {v, (void *)(intptr_t)p[1]};
  struct child c = child_start(hold_value_lock, arg);
  wait_byte(p[0]);
  child_kill(&c);
  int32_t x = 0;
  /* The copy is made and the death reported; the lock works afterwards. */
  mproc_assert_err(mproc_value_get(v, 0, 1, &x, 30000), MPROC_EOWNERDEAD);
  ck_assert_int_eq(x, 7);
  mproc_assert_ok(mproc_value_get(v, 0, 1, &x, 0));
  mproc_assert_ok(mproc_value_free(v));
  pipe_close(p);
}
END_TEST

/* A small locked value shares the cache line of its lock; larger ones and
 * raw ones keep their elements apart, 16-aligned.  A header whose data
 * offset disagrees with its shape is refused when mapped from an fd. */
START_TEST(test_small_value_beside_its_lock) {
  static const struct {
    mproc_type t;
    size_t count;
    unsigned flags;
    int near;
  } cases[] = {
      {MPROC_TYPE_INT64, 1, 0, 1}, {MPROC_TYPE_DOUBLE, 2, 0, 1},
      {MPROC_TYPE_INT8, 16, 0, 1}, {MPROC_TYPE_INT8, 17, 0, 0},
      {MPROC_TYPE_INT64, 3, 0, 0}, {MPROC_TYPE_INT64, 1, MPROC_VALUE_RAW, 0},
  };
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(cases); i++) {
    struct mproc_value_options o = {.flags = cases[i].flags};
    mproc_value *v;
    mproc_assert_ok(mproc_array_new(&v, cases[i].t, cases[i].count, NULL, &o));
    uintptr_t data = (uintptr_t)mproc_value_ptr(v);
    ck_assert_uint_eq(data % 16, 0);
    mproc_rlock *l = NULL;
    if (cases[i].flags == 0)
      mproc_assert_ok(mproc_value_get_lock(v, &l));
    int same_line = l != NULL && data / 64 == (uintptr_t)l / 64 &&
                    (data + cases[i].count * mproc_value_elem_size(v) - 1) / 64 == data / 64;
    ck_assert_int_eq(same_line, cases[i].near);
    /* The elements are the value's, not the lock's: locking leaves them. */
    memset((void *)data, 0x5a, cases[i].count * mproc_value_elem_size(v));
    if (l != NULL) {
      mproc_assert_ok(mproc_rlock_acquire(l, 0));
      mproc_assert_ok(mproc_rlock_acquire(l, 0));
      mproc_assert_ok(mproc_rlock_release(l));
      mproc_assert_ok(mproc_rlock_release(l));
    }
    for (size_t k = 0; k < cases[i].count * mproc_value_elem_size(v); k++)
      ck_assert_uint_eq(((unsigned char *)data)[k], 0x5a);
    /* data_off is the header's sixth 64-bit word; move it. */
    uint64_t *off = (uint64_t *)(void *)((char *)v + 40), saved = *off;
    *off = saved == 112 ? 192 : 112;
    mproc_value *v2;
    mproc_assert_err(mproc_value_from_fd(&v2, mproc_object_fd(v)), MPROC_ECORRUPT);
    *off = saved;
    mproc_assert_ok(mproc_value_from_fd(&v2, mproc_object_fd(v)));
    ck_assert_uint_eq(((unsigned char *)mproc_value_ptr(v2))[0], 0x5a);
    mproc_assert_ok(mproc_value_free(v2));
    mproc_assert_ok(mproc_value_free(v));
  }
}
END_TEST

START_TEST(test_value_cycles) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps();
  for (int i = 0; i < 10000; i++) {
    mproc_value *v;
    mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT32, &i, NULL));
    mproc_assert_ok(mproc_value_fetch_add(v, 0, 1, NULL));
    mproc_assert_ok(mproc_value_free(v));
    mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_DOUBLE, 100, NULL, NULL));
    mproc_assert_ok(mproc_value_free(v));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

int main(void) {
  Suite *s = suite_create("value");
  TCase *tc = mproc_test_tcase(s, "value", 60);
  tcase_add_test(tc, test_types_and_sizes);
  tcase_add_test(tc, test_array_ranges_and_raw);
  tcase_add_test(tc, test_atomics);
  tcase_add_test(tc, test_value_errors);
  tcase_add_test(tc, test_shared_counter);
  tcase_add_test(tc, test_value_lock_holder_killed);
  tcase_add_test(tc, test_small_value_beside_its_lock);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_value_cycles);
  return mproc_test_run(s);
}
