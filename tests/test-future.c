/* Futures: states, results, errors, cancel, callbacks, wait, as_completed.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"

#include <sys/syscall.h>

/* Waits until S->release reaches its argument. */
static int task_gate(const void *a, size_t l, mproc_task_ctx *c) {
  (void)l;
  int k = *(const int *)a;
  atomic_fetch_add(&S->running, 1);
  while (atomic_load(&S->release) < k)
    sleep_ms(1);
  return mproc_task_return(c, &k, sizeof k);
}

static int task_fail_msg(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  return mproc_task_fail(c, 42, "bad input %d", 7);
}

static int task_fail_plain(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  return MPROC_EINVAL;
}

static int task_empty(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  return 0;
}

START_TEST(test_states_and_results) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f, *g;
  int one = 1;
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &one, sizeof one, &f));
  mproc_assert_ok(mproc_pool_submit(p, task_empty, NULL, 0, &g));
  int64_t dl = mproc_now_ms() + 10000;
  while (mproc_future_state(f) != MPROC_FUTURE_RUNNING)
    ck_assert(mproc_now_ms() < dl);
  ck_assert_int_eq(mproc_future_state(g), MPROC_FUTURE_PENDING);
  ck_assert(!mproc_future_done(f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 0), MPROC_ETIMEDOUT);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_future_wait(f, 50), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  struct mproc_task_error e;
  mproc_assert_err(mproc_future_error(f, &e), MPROC_ESTATE);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_uint_eq(n, sizeof(int));
  ck_assert_int_eq(*(const int *)d, 1);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  mproc_assert_ok(mproc_future_result(g, &d, &n, 30000));
  ck_assert_uint_eq(n, 0);
  mproc_assert_err(mproc_future_error(g, &e), MPROC_ESTATE);
  mproc_future_free(f);
  mproc_future_free(g);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_task_errors) {
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  const void *d;
  size_t n;
  struct mproc_task_error e;
  mproc_assert_ok(mproc_pool_submit(p, task_fail_msg, NULL, 0, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETASK);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_FAILED);
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.code, MPROC_ETASK);
  ck_assert_int_eq(e.task_code, 42);
  ck_assert_str_eq(e.message, "bad input 7");
  ck_assert_int_gt(e.pid, 0);
  ck_assert_int_eq(e.signo, 0);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_submit(p, task_fail_plain, NULL, 0, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETASK);
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.task_code, MPROC_EINVAL);
  ck_assert_str_eq(e.message, mproc_strerror(MPROC_EINVAL));
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_cancel_pending_never_runs) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f, *g;
  int one = 1, two = 2;
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &one, sizeof one, &f));
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &two, sizeof two, &g));
  mproc_assert_ok(mproc_future_cancel(g));
  ck_assert_int_eq(mproc_future_state(g), MPROC_FUTURE_CANCELED);
  ck_assert(mproc_future_done(g));
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(g, &e));
  ck_assert_int_eq(e.code, MPROC_ECANCELED);
  atomic_store(&S->release, 5);
  wait_done(f);
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  /* Only the first task ever ran. */
  ck_assert_int_eq(atomic_load(&S->running), 1);
  mproc_future_free(f);
  mproc_future_free(g);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

struct cb_rec {
  _Atomic int calls;
  _Atomic pid_t tid;
  _Atomic int state;
  mproc_pool *pool;
  mproc_future *sub; /* submitted from the callback */
};

static void rec_cb(mproc_future *f, void *ud) {
  struct cb_rec *r = ud;
  atomic_store(&r->tid, (pid_t)syscall(SYS_gettid));
  atomic_store(&r->state, mproc_future_state(f));
  atomic_fetch_add(&r->calls, 1);
}

START_TEST(test_done_callbacks) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  int one = 1;
  struct cb_rec a = {0}, b = {0};
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &one, sizeof one, &f));
  mproc_assert_ok(mproc_future_add_done_callback(f, rec_cb, &a));
  atomic_store(&S->release, 1);
  wait_done(f);
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&a.calls) == 0)
    ck_assert(mproc_now_ms() < dl);
  ck_assert_int_eq(atomic_load(&a.calls), 1);
  ck_assert_int_eq(atomic_load(&a.state), MPROC_FUTURE_DONE);
  /* Run by the manager thread, not this one. */
  ck_assert_int_ne(atomic_load(&a.tid), (pid_t)syscall(SYS_gettid));
  /* On a finished future: at once, on this thread. */
  mproc_assert_ok(mproc_future_add_done_callback(f, rec_cb, &b));
  ck_assert_int_eq(atomic_load(&b.calls), 1);
  ck_assert_int_eq(atomic_load(&b.tid), (pid_t)syscall(SYS_gettid));
  mproc_assert_err(mproc_future_add_done_callback(f, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_future_add_done_callback(NULL, rec_cb, &b), MPROC_EINVAL);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static void ok_cb(mproc_future *f, void *ud) {
  (void)f;
  atomic_fetch_add(&((struct cb_rec *)ud)->calls, 1);
}
static void err_cb(mproc_future *f, void *ud) {
  (void)f;
  atomic_fetch_add(&((struct cb_rec *)ud)->calls, 100);
}

START_TEST(test_apply_async_callbacks) {
  mproc_pool *p = make_pool(2);
  struct cb_rec r = {0};
  mproc_future *f, *g;
  int x = 2;
  mproc_assert_ok(mproc_pool_apply_async(p, task_square, &x, sizeof x, ok_cb, err_cb, &r, &f));
  mproc_assert_ok(mproc_pool_apply_async(p, task_fail_msg, NULL, 0, ok_cb, err_cb, &r, &g));
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&r.calls) != 101)
    ck_assert_msg(mproc_now_ms() < dl, "calls %d", atomic_load(&r.calls));
  mproc_future_free(f);
  mproc_future_free(g);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A callback that frees its future, submits a new task and cancels it. */
static void busy_cb(mproc_future *f, void *ud) {
  struct cb_rec *r = ud;
  mproc_future_free(f);
  int x = 6;
  mproc_future *g;
  if (mproc_pool_submit(r->pool, task_square, &x, sizeof x, &g) == 0) {
    mproc_future_cancel(g);
    r->sub = g;
  }
  atomic_fetch_add(&r->calls, 1);
}

static void shutdown_cb(mproc_future *f, void *ud) {
  (void)f;
  struct cb_rec *r = ud;
  /* wait=true from the manager thread must not deadlock. */
  mproc_pool_shutdown(r->pool, true, true);
  mproc_pool_shutdown(r->pool, true, true);
  atomic_fetch_add(&r->calls, 1);
}

START_TEST(test_callback_may_free_submit_cancel_shutdown) {
  mproc_pool *p = make_pool(1);
  struct cb_rec r = {.pool = p};
  mproc_future *f, *g;
  int x = 2;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_add_done_callback(f, busy_cb, &r));
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&r.calls) == 0)
    ck_assert(mproc_now_ms() < dl);
  ck_assert_ptr_nonnull(r.sub);
  wait_done(r.sub);
  mproc_future_free(r.sub);
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &g));
  mproc_assert_ok(mproc_future_add_done_callback(g, shutdown_cb, &r));
  while (atomic_load(&r.calls) == 1)
    ck_assert(mproc_now_ms() < dl);
  mproc_future *h;
  mproc_assert_err(mproc_pool_submit(p, task_square, &x, sizeof x, &h), MPROC_ECLOSED);
  mproc_assert_ok(mproc_pool_join(p, 30000));
  mproc_future_free(g);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* The wait reads each finished future once (its state is final): a failure
 * or a completion before the first pending future still counts, and one
 * after it too. */
START_TEST(test_futures_wait_counts_around_pending) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  mproc_future *fs[3];
  int k1 = 1;
  mproc_assert_ok(mproc_pool_submit(p, task_fail_msg, NULL, 0, &fs[0]));
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &k1, sizeof k1, &fs[1]));
  mproc_assert_ok(mproc_pool_submit(p, task_empty, NULL, 0, &fs[2]));
  mproc_assert_ok(mproc_future_wait(fs[0], 30000));
  mproc_assert_ok(mproc_future_wait(fs[2], 30000));
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_FIRST_EXCEPTION, 30000), 2);
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_FIRST_COMPLETED, 30000), 2);
  ck_assert_int_eq(mproc_futures_wait(&fs[1], 2, MPROC_FIRST_COMPLETED, 30000), 1);
  mproc_assert_err(mproc_futures_wait(&fs[1], 1, MPROC_FIRST_EXCEPTION, 20), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_futures_wait(fs, 3, MPROC_ALL_COMPLETED, 20), MPROC_ETIMEDOUT);
  atomic_store(&S->release, 1);
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_ALL_COMPLETED, 30000), 3);
  /* All finished, none of fs[1..2] failed: first-exception returns at once. */
  ck_assert_int_eq(mproc_futures_wait(&fs[1], 2, MPROC_FIRST_EXCEPTION, 0), 2);
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_futures_wait_modes) {
  S = shared_new();
  mproc_pool *p = make_pool(3);
  mproc_future *fs[3];
  int k1 = 1, k2 = 2;
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &k1, sizeof k1, &fs[0]));
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &k2, sizeof k2, &fs[1]));
  mproc_assert_ok(mproc_pool_submit(p, task_fail_msg, NULL, 0, &fs[2]));
  /* The failure is the first thing to finish. */
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_FIRST_EXCEPTION, 30000), 1);
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_FIRST_COMPLETED, 30000), 1);
  mproc_assert_err(mproc_futures_wait(fs, 2, MPROC_FIRST_COMPLETED, 20), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_futures_wait(fs, 3, MPROC_ALL_COMPLETED, 20), MPROC_ETIMEDOUT);
  atomic_store(&S->release, 1);
  ck_assert_int_ge(mproc_futures_wait(fs, 2, MPROC_FIRST_COMPLETED, 30000), 1);
  ck_assert(mproc_future_done(fs[0]));
  atomic_store(&S->release, 2);
  ck_assert_int_eq(mproc_futures_wait(fs, 3, MPROC_ALL_COMPLETED, 30000), 3);
  mproc_assert_err(mproc_futures_wait(fs, 3, 0, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_futures_wait(NULL, 3, MPROC_ALL_COMPLETED, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_futures_wait(fs, 3, MPROC_ALL_COMPLETED, -2), MPROC_EINVAL);
  ck_assert_int_eq(mproc_futures_wait(NULL, 0, MPROC_ALL_COMPLETED, 0), 0);
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_as_completed_order) {
  S = shared_new();
  mproc_pool *p = make_pool(3);
  mproc_future *fs[3];
  int keys[3] = {3, 1, 2};
  for (int i = 0; i < 3; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_gate, &keys[i], sizeof keys[i], &fs[i]));
  mproc_as_completed *it;
  mproc_assert_ok(mproc_as_completed_new(&it, fs, 3));
  mproc_future *f;
  mproc_assert_err(mproc_as_completed_next(it, &f, 20), MPROC_ETIMEDOUT);
  /* Released 1, then 2, then 3: yielded in that order. */
  for (int want = 1; want <= 3; want++) {
    atomic_store(&S->release, want);
    mproc_assert_ok(mproc_as_completed_next(it, &f, 30000));
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f, &d, &n, 0));
    ck_assert_int_eq(*(const int *)d, want);
  }
  mproc_assert_err(mproc_as_completed_next(it, &f, 0), MPROC_EEOF);
  mproc_assert_err(mproc_as_completed_next(NULL, &f, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_as_completed_new(NULL, fs, 3), MPROC_EINVAL);
  mproc_as_completed_free(it);
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* The set's pools are found once, at creation: futures of a second pool
 * are still helped and yielded, each exactly once. */
START_TEST(test_as_completed_two_pools) {
  S = shared_new();
  mproc_pool *a = make_pool(1), *b = make_pool(1);
  mproc_future *fs[3];
  int k1 = 1, x = 3;
  mproc_assert_ok(mproc_pool_submit(a, task_gate, &k1, sizeof k1, &fs[0]));
  mproc_assert_ok(mproc_pool_submit(b, task_square, &x, sizeof x, &fs[1]));
  mproc_assert_ok(mproc_pool_submit(b, task_empty, NULL, 0, &fs[2]));
  mproc_as_completed *it;
  mproc_assert_ok(mproc_as_completed_new(&it, fs, 3));
  mproc_future *f, *got[2];
  for (int i = 0; i < 2; i++) {
    mproc_assert_ok(mproc_as_completed_next(it, &got[i], 30000));
    ck_assert(got[i] == fs[1] || got[i] == fs[2]);
  }
  ck_assert(got[0] != got[1]);
  mproc_assert_err(mproc_as_completed_next(it, &f, 20), MPROC_ETIMEDOUT);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_as_completed_next(it, &f, 30000));
  ck_assert(f == fs[0]);
  mproc_assert_err(mproc_as_completed_next(it, &f, 0), MPROC_EEOF);
  mproc_as_completed_free(it);
  for (int i = 0; i < 3; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(a));
  mproc_assert_ok(mproc_pool_free(b));
  shared_free(S);
}
END_TEST

START_TEST(test_future_outlives_pool) {
  S = shared_new();
  mproc_pool *p = make_pool(1);
  mproc_future *f, *g;
  int one = 1, x = 3;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &g));
  wait_done(g);
  mproc_assert_ok(mproc_pool_submit(p, task_gate, &one, sizeof one, &f));
  /* Destroyed with a running task: it is cancelled, never left pending. */
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_CANCELED);
  mproc_assert_ok(mproc_future_wait(f, 0));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(g, &d, &n, 0));
  ck_assert_int_eq(*(const int *)d, 9);
  mproc_future_free(f);
  mproc_future_free(g);
  shared_free(S);
}
END_TEST

START_TEST(test_bad_arguments) {
  const void *d;
  size_t n;
  struct mproc_task_error e;
  mproc_assert_err(mproc_future_state(NULL), MPROC_EINVAL);
  ck_assert(!mproc_future_done(NULL));
  mproc_assert_err(mproc_future_wait(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_future_result(NULL, &d, &n, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_future_error(NULL, &e), MPROC_EINVAL);
  mproc_assert_err(mproc_future_cancel(NULL), MPROC_EINVAL);
  mproc_future_free(NULL);
  mproc_as_completed_free(NULL);
  mproc_pool *p = make_pool(1);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_empty, NULL, 0, &f));
  mproc_assert_err(mproc_future_wait(f, -5), MPROC_EINVAL);
  mproc_assert_err(mproc_future_result(f, NULL, NULL, -5), MPROC_EINVAL);
  mproc_assert_err(mproc_future_error(f, NULL), MPROC_EINVAL);
  wait_done(f);
  /* A task run for its effect: data and len are optional. */
  mproc_assert_ok(mproc_future_result(f, NULL, NULL, 0));
  n = 99;
  mproc_assert_ok(mproc_future_result(f, NULL, &n, 0));
  ck_assert_uint_eq(n, 0);
  d = &n;
  mproc_assert_ok(mproc_future_result(f, &d, NULL, 0));
  ck_assert_ptr_null(d);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("future");
  TCase *tc = mproc_test_tcase(s, "future", 60);
  tcase_add_test(tc, test_states_and_results);
  tcase_add_test(tc, test_task_errors);
  tcase_add_test(tc, test_cancel_pending_never_runs);
  tcase_add_test(tc, test_done_callbacks);
  tcase_add_test(tc, test_apply_async_callbacks);
  tcase_add_test(tc, test_callback_may_free_submit_cancel_shutdown);
  tcase_add_test(tc, test_futures_wait_modes);
  tcase_add_test(tc, test_futures_wait_counts_around_pending);
  tcase_add_test(tc, test_as_completed_order);
  tcase_add_test(tc, test_as_completed_two_pools);
  tcase_add_test(tc, test_future_outlives_pool);
  tcase_add_test(tc, test_bad_arguments);
  return mproc_test_run(s);
}
