/* The pool API: creation, submit/apply, large data, lifecycle, arguments.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"

static int task_gate(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  while (!atomic_load(&S->release))
    sleep_ms(1);
  return 0;
}

/* Returns 2 * len bytes: byte i is (i * 7) ^ arg[i % len]. */
static int task_big(const void *a, size_t l, mproc_task_ctx *c) {
  const unsigned char *in = a;
  unsigned char *out = mproc_task_result_buf(c, 2 * l);
  if (out == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < 2 * l; i++)
    out[i] = (unsigned char)((i * 7) ^ in[i % l]);
  return 0;
}

static int task_fail(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  return mproc_task_fail(c, 3, "no good");
}

/* Counts concurrent tasks in the shared page. */
static int task_concurrency(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  int now = atomic_fetch_add(&S->running, 1) + 1;
  int m = atomic_load(&S->max_running);
  while (now > m && !atomic_compare_exchange_weak(&S->max_running, &m, now)) {
  }
  sleep_ms(2);
  atomic_fetch_sub(&S->running, 1);
  return 0;
}

START_TEST(test_create_defaults) {
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, NULL));
  ck_assert_int_eq(mproc_pool_workers(p), mproc_cpu_count());
  pid_t pids[256];
  ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 256), mproc_cpu_count());
  for (int i = 0; i < mproc_pool_workers(p); i++)
    ck_assert(mproc_test_pid_exists(pids[i]));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_bad_arguments) {
  mproc_pool *p;
  struct mproc_pool_options o = {.flags = 1u << 7};
  mproc_assert_err(mproc_pool_new(NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  o = (struct mproc_pool_options){.workers = -1};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  o = (struct mproc_pool_options){.task_timeout_ms = -1};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_workers(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_worker_pids(NULL, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_close(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_join(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_terminate(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_shutdown(NULL, true, false), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_free(NULL), MPROC_EINVAL);
  p = make_pool(1);
  mproc_future *f;
  int x = 1;
  mproc_assert_err(mproc_pool_submit(NULL, task_square, &x, sizeof x, &f), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_submit(p, NULL, &x, sizeof x, &f), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_submit(p, task_square, NULL, 4, &f), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_submit(p, task_square, &x, sizeof x, NULL), MPROC_EINVAL);
  struct mproc_submit_options so = {.flags = 1};
  mproc_assert_err(mproc_pool_submit_ex(p, task_square, &x, sizeof x, &so, &f), MPROC_EINVAL);
  so = (struct mproc_submit_options){.timeout_ms = -3};
  mproc_assert_err(mproc_pool_submit_ex(p, task_square, &x, sizeof x, &so, &f), MPROC_EINVAL);
  so = (struct mproc_submit_options){.retries = -2};
  mproc_assert_err(mproc_pool_submit_ex(p, task_square, &x, sizeof x, &so, &f), MPROC_EINVAL);
  void *r;
  size_t n;
  mproc_assert_err(mproc_pool_apply(p, task_square, &x, sizeof x, NULL, &n, NULL, -1),
                   MPROC_EINVAL);
  mproc_assert_err(mproc_pool_apply(p, task_square, &x, sizeof x, &r, &n, NULL, -7), MPROC_EINVAL);
  mproc_assert_err(mproc_pool_join(p, 0), MPROC_ESTATE); /* still open */
  mproc_assert_err(mproc_pool_join(p, -9), MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_apply) {
  mproc_pool *p = make_pool(2);
  void *r;
  size_t n;
  int x = 5;
  mproc_assert_ok(mproc_pool_apply(p, task_square, &x, sizeof x, &r, &n, NULL, 30000));
  ck_assert_uint_eq(n, sizeof(int));
  ck_assert_int_eq(*(int *)r, 25);
  free(r);
  struct mproc_task_error e;
  mproc_assert_err(mproc_pool_apply(p, task_fail, NULL, 0, &r, &n, &e, 30000), MPROC_ETASK);
  ck_assert_ptr_null(r);
  ck_assert_int_eq(e.task_code, 3);
  ck_assert_str_eq(e.message, "no good");
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_large_argument_and_result) {
  mproc_pool *p = make_pool(2);
  size_t len = 8u << 20;
  unsigned char *in = malloc(len);
  for (size_t i = 0; i < len; i++)
    in[i] = (unsigned char)(i * 31 + 1);
  mproc_future *fs[3];
  for (int k = 0; k < 3; k++)
    mproc_assert_ok(mproc_pool_submit(p, task_big, in, len >> k, &fs[k]));
  for (int k = 0; k < 3; k++) {
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(fs[k], &d, &n, 30000));
    ck_assert_uint_eq(n, 2 * (len >> k));
    const unsigned char *out = d;
    for (size_t i = 0; i < n; i += 4093)
      ck_assert_uint_eq(out[i], (unsigned char)((i * 7) ^ in[i % (len >> k)]));
    mproc_future_free(fs[k]);
  }
  /* Small ones (inline in the ring entry) between big ones. */
  int x = 12;
  void *r;
  size_t n;
  mproc_assert_ok(mproc_pool_apply(p, task_square, &x, sizeof x, &r, &n, NULL, 30000));
  ck_assert_int_eq(*(int *)r, 144);
  free(r);
  free(in);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_many_tasks) {
  mproc_pool *p = make_pool(2);
  enum { N = 5000 };
  mproc_future **fs = calloc(N, sizeof *fs);
  for (int i = 0; i < N; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_square, &i, sizeof i, &fs[i]));
  for (int i = 0; i < N; i++) {
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(fs[i], &d, &n, 30000));
    ck_assert_int_eq(*(const int *)d, i * i);
    mproc_future_free(fs[i]);
  }
  free(fs);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_bounded_concurrency) {
  S = shared_new();
  mproc_pool *p = make_pool(4);
  mproc_future *fs[40];
  for (int i = 0; i < 40; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_concurrency, NULL, 0, &fs[i]));
  ck_assert_int_eq(mproc_futures_wait(fs, 40, MPROC_ALL_COMPLETED, 30000), 40);
  ck_assert_int_le(atomic_load(&S->max_running), 4);
  ck_assert_int_ge(atomic_load(&S->max_running), 1);
  for (int i = 0; i < 40; i++)
    mproc_future_free(fs[i]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static void shutdown_50(bool cancel) {
  mproc_pool *p = make_pool(2);
  mproc_future *fs[50];
  int ms = 2;
  for (int i = 0; i < 50; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_sleep, &ms, sizeof ms, &fs[i]));
  mproc_assert_ok(mproc_pool_shutdown(p, true, cancel));
  int done = 0, cancelled = 0;
  for (int i = 0; i < 50; i++) {
    ck_assert(mproc_future_done(fs[i]));
    int s = mproc_future_state(fs[i]);
    done += s == MPROC_FUTURE_DONE;
    cancelled += s == MPROC_FUTURE_CANCELED;
    mproc_future_free(fs[i]);
  }
  if (cancel) {
    ck_assert_int_eq(done + cancelled, 50);
    ck_assert_int_gt(cancelled, 0);
  } else {
    ck_assert_int_eq(done, 50);
  }
  mproc_future *f;
  mproc_assert_err(mproc_pool_submit(p, task_sleep, &ms, sizeof ms, &f), MPROC_ECLOSED);
  mproc_assert_ok(mproc_pool_shutdown(p, true, cancel)); /* idempotent */
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_shutdown_with_queue) {
  shutdown_50(false);
  shutdown_50(true);
}
END_TEST

START_TEST(test_close_join) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_gate, NULL, 0, &f));
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_ok(mproc_pool_close(p));
  mproc_future *g;
  mproc_assert_err(mproc_pool_submit(p, task_gate, NULL, 0, &g), MPROC_ECLOSED);
  mproc_assert_err(mproc_pool_join(p, 30), MPROC_ETIMEDOUT);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_pool_join(p, 30000));
  ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_DONE);
  ck_assert_int_eq(mproc_pool_worker_pids(p, NULL, 0), 0);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_terminate) {
  S = shared_new();
  mproc_pool *p = make_pool(2);
  mproc_future *fs[10];
  for (int i = 0; i < 10; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_gate, NULL, 0, &fs[i]));
  mproc_assert_ok(mproc_pool_terminate(p));
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(mproc_future_state(fs[i]), MPROC_FUTURE_CANCELED);
    mproc_future_free(fs[i]);
  }
  mproc_future *f;
  mproc_assert_err(mproc_pool_submit(p, task_gate, NULL, 0, &f), MPROC_ECLOSED);
  mproc_assert_ok(mproc_pool_join(p, 30000));
  mproc_assert_ok(mproc_pool_terminate(p));
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_destroy_busy_pool) {
  S = shared_new();
  mproc_pool *p = make_pool(3);
  mproc_future *f;
  for (int i = 0; i < 20; i++) {
    mproc_assert_ok(mproc_pool_submit(p, task_gate, NULL, 0, &f));
    mproc_future_free(f); /* dropped before it finishes */
  }
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool");
  TCase *tc = mproc_test_tcase(s, "pool", 60);
  tcase_add_test(tc, test_create_defaults);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_apply);
  tcase_add_test(tc, test_large_argument_and_result);
  tcase_add_test(tc, test_many_tasks);
  tcase_add_test(tc, test_bounded_concurrency);
  tcase_add_test(tc, test_shutdown_with_queue);
  tcase_add_test(tc, test_close_join);
  tcase_add_test(tc, test_terminate);
  tcase_add_test(tc, test_destroy_busy_pool);
  return mproc_test_run(s);
}
