/* Condition (src/sync_condition.c) across processes: notify(n), notify_all,
 * wait_for, timeouts, and a waiter or notifier killed. */
#include "sync-util.h"

#include <string.h>

struct shared {
  mproc_cond *cond;
  int ready;  /* children registered as waiting */
  int tokens; /* notifications handed out by the parent */
  int woken;  /* children that consumed a token */
  int pipe_w;
};

static int ready_is(void *arg) {
  struct shared *s = ((void **)arg)[0];
  return s->ready == (int)(intptr_t)((void **)arg)[1];
}

static int woken_is(void *arg) {
  struct shared *s = ((void **)arg)[0];
  return s->woken == (int)(intptr_t)((void **)arg)[1];
}

/* Parent side: wait (lock held) until pred(s, n). */
static void wait_until(struct shared *s, int (*pred)(void *), int n) {
  void *arg[2] = {s, (void *)(intptr_t)n};
  mproc_assert_ok(mproc_cond_wait_for(s->cond, pred, arg, 30000));
}

static int has_token(void *arg) { return ((struct shared *)arg)->tokens > 0; }

/* Registers, then waits for a token (practically forever). */
static int token_waiter(void *arg) {
  struct shared *s = arg;
  if (mproc_cond_acquire(s->cond, 30000) != 0)
    return 10;
  s->ready++;
  mproc_cond_notify_all(s->cond); /* tell the parent */
  int r = mproc_cond_wait_for(s->cond, has_token, s, 600000);
  if (r == MPROC_EOWNERDEAD) {
    if (mproc_rlock_consistent(mproc_cond_lock(s->cond)) != 0)
      return 11;
  } else if (r != 0) {
    return 12;
  }
  s->tokens--;
  s->woken++;
  mproc_cond_notify_all(s->cond);
  if (mproc_cond_release(s->cond) != 0)
    return 13;
  return r == MPROC_EOWNERDEAD ? 3 : 0;
}

START_TEST(test_cond_notify_n) {
  struct shared *s = anon_new(sizeof *s);
  mproc_assert_ok(mproc_cond_new(&s->cond));
  struct child c[3];
  for (int i = 0; i < 3; i++)
    c[i] = child_start(token_waiter, s);
  mproc_assert_ok(mproc_cond_acquire(s->cond, 30000));
  wait_until(s, ready_is, 3);
  s->tokens = 1;
  mproc_assert_ok(mproc_cond_notify(s->cond, 1));
  wait_until(s, woken_is, 1);
  ck_assert_int_eq(s->woken, 1);
  s->tokens = 2;
  mproc_assert_ok(mproc_cond_notify_all(s->cond));
  wait_until(s, woken_is, 3);
  mproc_assert_ok(mproc_cond_release(s->cond));
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  ck_assert_int_eq(s->tokens, 0);
  mproc_assert_ok(mproc_cond_free(s->cond));
  munmap(s, sizeof *s);
}
END_TEST

static int never(void *arg) {
  (void)arg;
  return 0;
}

static int always(void *arg) {
  (void)arg;
  return 1;
}

START_TEST(test_cond_timeout_and_depth) {
  mproc_cond *c;
  mproc_assert_ok(mproc_cond_new(&c));
  mproc_assert_err(mproc_cond_wait(c, 0), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_cond_notify(c, 1), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_cond_notify_all(c), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_cond_wait_for(c, always, NULL, 0), MPROC_ENOTOWNER);
  mproc_assert_ok(mproc_cond_acquire(c, 0));
  mproc_assert_ok(mproc_cond_acquire(c, 0));
  ck_assert_int_eq(mproc_rlock_depth(mproc_cond_lock(c)), 2);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_cond_wait(c, 50), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  ck_assert_int_eq(mproc_rlock_depth(mproc_cond_lock(c)), 2); /* restored */
  mproc_assert_err(mproc_cond_wait(c, 0), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_cond_wait_for(c, never, NULL, 20), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_cond_wait_for(c, always, NULL, 0));
  mproc_assert_ok(mproc_cond_notify(c, 0));
  mproc_assert_ok(mproc_cond_notify(c, 5)); /* nobody waiting: nothing happens */
  mproc_assert_err(mproc_cond_notify(c, -1), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_free(c), MPROC_EBUSY); /* its lock is held */
  mproc_assert_ok(mproc_cond_release(c));
  mproc_assert_ok(mproc_cond_release(c));
  mproc_assert_err(mproc_cond_release(c), MPROC_ENOTOWNER);
  mproc_assert_ok(mproc_cond_free(c));
}
END_TEST

START_TEST(test_cond_errors) {
  mproc_cond *c;
  _Alignas(64) char store[MPROC_COND_SIZE];
  memset(store, 0, sizeof store);
  mproc_assert_err(mproc_cond_new(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_init(&c, store, sizeof store - 1), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_init(&c, store + 4, sizeof store - 4), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_init(NULL, store, sizeof store), MPROC_EINVAL);
  mproc_cond *bogus = (mproc_cond *)(void *)store;
  mproc_assert_err(mproc_cond_wait(bogus, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_notify(bogus, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_acquire(bogus, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_release(bogus), MPROC_EINVAL);
  ck_assert_ptr_null(mproc_cond_lock(bogus));
  mproc_assert_ok(mproc_cond_init(&c, store, sizeof store));
  mproc_assert_err(mproc_cond_init(&c, store, sizeof store), MPROC_EBUSY);
  mproc_assert_ok(mproc_cond_acquire(c, 0));
  mproc_assert_err(mproc_cond_wait(c, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_cond_wait_for(c, NULL, NULL, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_cond_release(c));
  mproc_assert_err(mproc_cond_free(c), MPROC_EINVAL);
  mproc_assert_ok(mproc_cond_destroy(c));
  mproc_assert_err(mproc_cond_destroy(c), MPROC_EINVAL);
}
END_TEST

START_TEST(test_cond_waiter_killed) {
  struct shared *s = anon_new(sizeof *s);
  mproc_assert_ok(mproc_cond_new(&s->cond));
  struct child a = child_start(token_waiter, s);
  struct child b = child_start(token_waiter, s);
  mproc_assert_ok(mproc_cond_acquire(s->cond, 30000));
  wait_until(s, ready_is, 2);
  /* Both are asleep in wait (they released the lock we now hold).  Kill one:
   * a single notification must still reach the other. */
  child_kill(&a);
  s->tokens = 1;
  mproc_assert_ok(mproc_cond_notify(s->cond, 1));
  wait_until(s, woken_is, 1);
  mproc_assert_ok(mproc_cond_release(s->cond));
  ck_assert_int_eq(child_wait(&b), 0);
  ck_assert_int_eq(s->tokens, 0);
  mproc_assert_ok(mproc_cond_free(s->cond));
  munmap(s, sizeof *s);
}
END_TEST

/* Notifies one waiter, then dies holding the lock. */
static int notify_and_hang(void *arg) {
  struct shared *s = arg;
  if (mproc_cond_acquire(s->cond, 30000) != 0)
    return 10;
  s->tokens = 1;
  if (mproc_cond_notify(s->cond, 1) != 0)
    return 11;
  say_ready(s->pipe_w);
  for (;;)
    pause();
}

START_TEST(test_cond_notifier_killed) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->pipe_w = p[1];
  mproc_assert_ok(mproc_cond_new(&s->cond));
  struct child w = child_start(token_waiter, s);
  mproc_assert_ok(mproc_cond_acquire(s->cond, 30000));
  wait_until(s, ready_is, 1);
  mproc_assert_ok(mproc_cond_release(s->cond));
  struct child n = child_start(notify_and_hang, s);
  wait_byte(p[0]);
  child_kill(&n);
  /* The notification stands; the waiter gets the lock back from the dead
   * notifier with MPROC_EOWNERDEAD, repairs it and finishes. */
  ck_assert_int_eq(child_wait(&w), 3);
  ck_assert_int_eq(s->woken, 1);
  mproc_assert_ok(mproc_cond_acquire(s->cond, 0));
  mproc_assert_ok(mproc_cond_release(s->cond));
  mproc_assert_ok(mproc_cond_free(s->cond));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

START_TEST(test_cond_cycles) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps();
  _Alignas(64) static char store[MPROC_COND_SIZE];
  for (int i = 0; i < 10000; i++) {
    mproc_cond *c;
    mproc_assert_ok(mproc_cond_new(&c));
    mproc_assert_ok(mproc_cond_acquire(c, 0));
    mproc_assert_ok(mproc_cond_notify_all(c));
    mproc_assert_ok(mproc_cond_release(c));
    mproc_assert_ok(mproc_cond_free(c));
    mproc_assert_ok(mproc_cond_init(&c, store, sizeof store));
    mproc_assert_ok(mproc_cond_destroy(c));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-cond");
  TCase *tc = mproc_test_tcase(s, "condition", 60);
  tcase_add_test(tc, test_cond_notify_n);
  tcase_add_test(tc, test_cond_timeout_and_depth);
  tcase_add_test(tc, test_cond_errors);
  tcase_add_test(tc, test_cond_waiter_killed);
  tcase_add_test(tc, test_cond_notifier_killed);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_cond_cycles);
  return mproc_test_run(s);
}
