/* Task error ergonomics: what a failing task's future reports (positive
 * codes, mproc_task_fail with code 0) and the caller's pointer on a future.
 * ctest-labels: threads */
#include "pool-helpers.h"

/* Returns the int it is given, as a plain task return code. */
static int task_return_code(const void *a, size_t l, mproc_task_ctx *c) {
  (void)l, (void)c;
  return *(const int *)a;
}

/* mproc_task_fail with the code it is given and a message naming it. */
static int task_fail_code(const void *a, size_t l, mproc_task_ctx *c) {
  (void)l;
  int code = *(const int *)a;
  return mproc_task_fail(c, code, "failed with %d", code);
}

/* mproc_task_fail with a positive code and no message. */
static int task_fail_no_message(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  return mproc_task_fail(c, 7, NULL);
}

/* Runs fn(arg) on p and returns its failure details (the future must fail). */
static struct mproc_task_error run_failing(mproc_pool *p, mproc_task_fn fn, int arg) {
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, fn, &arg, sizeof arg, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETASK);
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  mproc_future_free(f);
  ck_assert_int_eq(e.code, MPROC_ETASK);
  return e;
}

START_TEST(test_positive_code_message) {
  mproc_pool *p = make_pool(1);
  /* `return 1;` and `return EIO;` say what happened, not "unknown error". */
  struct mproc_task_error e = run_failing(p, task_return_code, 1);
  ck_assert_int_eq(e.task_code, 1);
  ck_assert_str_eq(e.message, "task returned 1");
  e = run_failing(p, task_return_code, EIO);
  ck_assert_int_eq(e.task_code, EIO);
  ck_assert_str_eq(e.message, "task returned 5");
  /* A negative code keeps the table's message. */
  e = run_failing(p, task_return_code, -EIO);
  ck_assert_int_eq(e.task_code, -EIO);
  ck_assert_str_eq(e.message, mproc_strerror(-EIO));
  /* A message of the task's own is kept; without one, the rule applies. */
  e = run_failing(p, task_fail_code, 3);
  ck_assert_int_eq(e.task_code, 3);
  ck_assert_str_eq(e.message, "failed with 3");
  e = run_failing(p, task_fail_no_message, 0);
  ck_assert_int_eq(e.task_code, 7);
  ck_assert_str_eq(e.message, "task returned 7");
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_fail_with_code_zero) {
  /* Outside a task (NULL ctx) the return value follows the same rule. */
  ck_assert_int_eq(mproc_task_fail(NULL, 0, "x"), MPROC_ETASK);
  ck_assert_int_eq(mproc_task_fail(NULL, 4, NULL), 4);
  mproc_pool *p = make_pool(1);
  /* 0 means "failed, no code of its own": MPROC_ETASK, never success. */
  struct mproc_task_error e = run_failing(p, task_fail_code, 0);
  ck_assert_int_eq(e.task_code, MPROC_ETASK);
  ck_assert_str_eq(e.message, "failed with 0");
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

static _Atomic(void *) seen_in_callback;
static void record_data(mproc_future *f, void *ud) {
  (void)ud;
  atomic_store(&seen_in_callback, mproc_future_data(f));
}

START_TEST(test_future_data) {
  mproc_assert_err(mproc_future_set_data(NULL, &seen_in_callback), MPROC_EINVAL);
  ck_assert_ptr_null(mproc_future_data(NULL));
  mproc_pool *p = make_pool(1);
  int inputs[3] = {10, 20, 30};
  mproc_future *fs[3];
  for (int i = 0; i < 3; i++) {
    mproc_assert_ok(mproc_pool_submit(p, task_square, &inputs[i], sizeof inputs[i], &fs[i]));
    ck_assert_ptr_null(mproc_future_data(fs[i])); /* none set yet */
    mproc_assert_ok(mproc_future_set_data(fs[i], &inputs[i]));
  }
  /* Each future leads back to its own input, in whatever order they end. */
  mproc_as_completed *it;
  mproc_assert_ok(mproc_as_completed_new(&it, fs, 3));
  for (int k = 0; k < 3; k++) {
    mproc_future *f;
    mproc_assert_ok(mproc_as_completed_next(it, &f, 30000));
    const int *in = mproc_future_data(f);
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f, &d, &n, 0));
    ck_assert_int_eq(*(const int *)d, *in * *in);
  }
  mproc_as_completed_free(it);
  /* A done callback sees it too (here: already finished, runs at once). */
  mproc_assert_ok(mproc_future_add_done_callback(fs[1], record_data, NULL));
  ck_assert_ptr_eq(atomic_load(&seen_in_callback), &inputs[1]);
  /* Set again: replaced; NULL clears it. */
  mproc_assert_ok(mproc_future_set_data(fs[0], &inputs[2]));
  ck_assert_ptr_eq(mproc_future_data(fs[0]), &inputs[2]);
  mproc_assert_ok(mproc_future_set_data(fs[0], NULL));
  ck_assert_ptr_null(mproc_future_data(fs[0]));
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("task-errors");
  TCase *tc = mproc_test_tcase(s, "task-errors", 60);
  tcase_add_test(tc, test_positive_code_message);
  tcase_add_test(tc, test_fail_with_code_zero);
  tcase_add_test(tc, test_future_data);
  return mproc_test_run(s);
}
