/* Condition (src/sync_condition.c) across processes: notify(n), notify_all,
 * wait_for, timeouts, and a waiter or notifier killed. */
#include "sync-util.h"

#include <limits.h>
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

/* ---- notify(n) wakes exactly n ------------------------------------------- */

struct exact {
  mproc_cond *cond;
  int ready[2];    /* a child says "I hold the lock and am about to wait" */
  int woke[2];     /* a child says "my wait returned 0" */
  int64_t wait_ms; /* the children's wait timeout */
  int woken;       /* waits that returned 0 */
  int timed_out;   /* waits that returned MPROC_ETIMEDOUT */
};

/* Takes the lock, says so, waits once: exit 0 when notified, 1 on timeout. */
static int exact_waiter(void *arg) {
  struct exact *e = arg;
  if (mproc_cond_acquire(e->cond, 30000) != 0)
    return 10;
  if (say_ready(e->ready[1]) != 0)
    return 11;
  int r = mproc_cond_wait(e->cond, e->wait_ms);
  if (r == 0)
    e->woken++;
  else if (r == MPROC_ETIMEDOUT)
    e->timed_out++;
  if (mproc_cond_release(e->cond) != 0)
    return 12;
  if (r == 0)
    return say_ready(e->woke[1]) == 0 ? 0 : 13;
  return r == MPROC_ETIMEDOUT ? 1 : 14;
}

static struct exact *exact_new(void) {
  struct exact *e = anon_new(sizeof *e);
  mproc_assert_ok(mproc_cond_new(&e->cond));
  pipe_new(e->ready);
  pipe_new(e->woke);
  e->wait_ms = mproc_test_scaled_ms(600000);
  return e;
}

static void exact_free(struct exact *e) {
  mproc_assert_ok(mproc_cond_free(e->cond));
  pipe_close(e->ready);
  pipe_close(e->woke);
  munmap(e, sizeof *e);
}

/* Starts a waiter and returns once it is asleep in its wait: it said it
 * holds the lock, and the lock can be taken only after its wait released it
 * (so waiters started one after another wait in that order). */
static struct child exact_start(struct exact *e) {
  struct child c = child_start(exact_waiter, e);
  wait_byte(e->ready[0]);
  mproc_assert_ok(mproc_cond_acquire(e->cond, 30000));
  mproc_assert_ok(mproc_cond_release(e->cond));
  return c;
}

/* Notifies n (lock taken and released around it). */
static void exact_notify(struct exact *e, int n) {
  mproc_assert_ok(mproc_cond_acquire(e->cond, 30000));
  mproc_assert_ok(n == INT_MAX ? mproc_cond_notify_all(e->cond) : mproc_cond_notify(e->cond, n));
  mproc_assert_ok(mproc_cond_release(e->cond));
}

/* Expects `n` waiters to report their wake-up (bounded wait on each), then
 * no other for a while: several of the condition's internal re-check slices
 * (100 ms), after which a waiter that shared the notification would have
 * returned.  A pass under load is a weaker check, never a false failure. */
static void expect_woken(struct exact *e, int n, int total) {
  for (int i = 0; i < n; i++)
    wait_byte(e->woke[0]);
  ck_assert_int_eq(mproc__poll1(e->woke[0], POLLIN, mproc__deadline(350)), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_cond_acquire(e->cond, 30000));
  ck_assert_int_eq(e->woken, total);
  ck_assert_int_eq(e->timed_out, 0);
  mproc_assert_ok(mproc_cond_release(e->cond));
}

START_TEST(test_cond_notify_exact) {
  struct exact *e = exact_new();
  struct child c[6];
  for (int i = 0; i < 6; i++)
    c[i] = exact_start(e);
  exact_notify(e, 1);
  expect_woken(e, 1, 1);
  exact_notify(e, 2);
  expect_woken(e, 2, 3);
  exact_notify(e, 0);
  expect_woken(e, 0, 3);
  exact_notify(e, 1);
  expect_woken(e, 1, 4);
  exact_notify(e, 5); /* more than the two left: wakes both */
  expect_woken(e, 2, 6);
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  exact_free(e);
}
END_TEST

/* More waiters than the condition has slots (10): exact while the slot
 * holders are counted, and notify_all reaches the rest too. */
START_TEST(test_cond_notify_many) {
  enum { K = 14 };
  struct exact *e = exact_new();
  struct child c[K];
  for (int i = 0; i < K; i++)
    c[i] = exact_start(e);
  exact_notify(e, 1);
  expect_woken(e, 1, 1);
  exact_notify(e, 3);
  expect_woken(e, 3, 4);
  exact_notify(e, INT_MAX);
  expect_woken(e, K - 4, K);
  for (int i = 0; i < K; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  exact_free(e);
}
END_TEST

START_TEST(test_cond_notify_all_wakes_all) {
  struct exact *e = exact_new();
  struct child c[4];
  for (int i = 0; i < 4; i++)
    c[i] = exact_start(e);
  exact_notify(e, INT_MAX);
  expect_woken(e, 4, 4);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  exact_free(e);
}
END_TEST

/* The oldest waiter dies (killed and reaped, or left a zombie): its ticket
 * must not swallow notify(1), which goes to the live waiter behind it. */
static void dead_oldest(bool reap) {
  struct exact *e = exact_new();
  struct child dead = exact_start(e);
  struct child live = exact_start(e);
  struct child last = exact_start(e);
  if (reap) {
    child_kill(&dead);
  } else {
    mproc_assert_ok(mproc__pidfd_kill(dead.pidfd, SIGKILL));
    ck_assert_int_gt(mproc__poll1(dead.pidfd, POLLIN, mproc__deadline(30000)), 0);
  }
  exact_notify(e, 1);
  expect_woken(e, 1, 1);
  ck_assert_int_eq(child_wait(&live), 0);
  ck_assert(child_running(&last)); /* the third one was not notified */
  exact_notify(e, 1);
  expect_woken(e, 1, 2);
  ck_assert_int_eq(child_wait(&last), 0);
  if (!reap)
    ck_assert_int_eq(child_wait(&dead), -SIGKILL);
  exact_free(e);
}

START_TEST(test_cond_dead_waiter_ticket) { dead_oldest(true); }
END_TEST

START_TEST(test_cond_zombie_waiter_ticket) { dead_oldest(false); }
END_TEST

/* A waiter that timed out gives its ticket back: notify(1) then reaches a
 * waiter that is still waiting, not the one that left. */
START_TEST(test_cond_timeout_ticket) {
  struct exact *e = exact_new();
  e->wait_ms = 30;
  struct child quick = exact_start(e);
  e->wait_ms = mproc_test_scaled_ms(600000);
  struct child slow = exact_start(e);
  ck_assert_int_eq(child_wait(&quick), 1); /* it timed out */
  mproc_assert_ok(mproc_cond_acquire(e->cond, 30000));
  ck_assert_int_eq(e->timed_out, 1);
  e->timed_out = 0;
  mproc_assert_ok(mproc_cond_release(e->cond));
  struct child after = exact_start(e);
  exact_notify(e, 1);
  expect_woken(e, 1, 1);
  ck_assert_int_eq(child_wait(&slow), 0); /* the older live waiter first */
  exact_notify(e, 1);
  expect_woken(e, 1, 2);
  ck_assert_int_eq(child_wait(&after), 0);
  exact_free(e);
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
  tcase_add_test(tc, test_cond_notify_exact);
  tcase_add_test(tc, test_cond_notify_many);
  tcase_add_test(tc, test_cond_notify_all_wakes_all);
  tcase_add_test(tc, test_cond_dead_waiter_ticket);
  tcase_add_test(tc, test_cond_zombie_waiter_ticket);
  tcase_add_test(tc, test_cond_timeout_ticket);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_cond_cycles);
  return mproc_test_run(s);
}
