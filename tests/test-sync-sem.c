/* Semaphore, BoundedSemaphore and Event (src/sync_semaphore.c, src/sync_event.c)
 * across processes, including participants killed while using them. */
#include "sync-util.h"

#include <stdatomic.h>
#include <string.h>

struct shared {
  mproc_sem *sem;
  mproc_event *ev;
  _Atomic int inside; /* processes inside the semaphore right now */
  _Atomic int max_inside;
  int ready;
};

START_TEST(test_sem_counts) {
  mproc_sem *s;
  mproc_assert_ok(mproc_sem_new(&s, 2, NULL));
  ck_assert_int_eq(mproc_sem_value(s), 2);
  mproc_assert_ok(mproc_sem_acquire(s, 0));
  mproc_assert_ok(mproc_sem_acquire(s, -1));
  ck_assert_int_eq(mproc_sem_value(s), 0);
  mproc_assert_err(mproc_sem_acquire(s, 0), MPROC_ETIMEDOUT);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_sem_acquire(s, 50), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  /* An unbounded semaphore may go above its initial value. */
  for (int i = 0; i < 5; i++)
    mproc_assert_ok(mproc_sem_release(s));
  ck_assert_int_eq(mproc_sem_value(s), 5);
  mproc_assert_ok(mproc_sem_free(s));

  mproc_assert_ok(mproc_sem_new(&s, MPROC_SEM_VALUE_MAX, NULL));
  mproc_assert_err(mproc_sem_release(s), MPROC_EOVERFLOW);
  mproc_assert_ok(mproc_sem_free(s));
}
END_TEST

START_TEST(test_bounded) {
  struct mproc_sem_options o = {.flags = MPROC_SEM_BOUNDED};
  mproc_sem *s;
  mproc_assert_ok(mproc_sem_new(&s, 1, &o));
  mproc_assert_err(mproc_sem_release(s), MPROC_EOVERRELEASE);
  mproc_assert_ok(mproc_sem_acquire(s, 0));
  mproc_assert_ok(mproc_sem_release(s));
  mproc_assert_err(mproc_sem_release(s), MPROC_EOVERRELEASE);
  ck_assert_int_eq(mproc_sem_value(s), 1);
  mproc_assert_ok(mproc_sem_free(s));
}
END_TEST

START_TEST(test_sem_errors) {
  mproc_sem *s;
  _Alignas(64) char store[MPROC_SEM_SIZE];
  memset(store, 0, sizeof store);
  struct mproc_sem_options bad = {.flags = 1u << 7};
  mproc_assert_err(mproc_sem_new(NULL, 1, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_new(&s, 1, &bad), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_new(&s, MPROC_SEM_VALUE_MAX + 1u, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_init(&s, store, sizeof store - 1, 1, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_init(&s, store + 2, sizeof store - 2, 1, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_init(&s, NULL, sizeof store, 1, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_acquire((mproc_sem *)(void *)store, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_release(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_value(NULL), MPROC_EINVAL);
  mproc_assert_ok(mproc_sem_init(&s, store, sizeof store, 3, NULL));
  mproc_assert_err(mproc_sem_init(&s, store, sizeof store, 3, NULL), MPROC_EBUSY);
  mproc_assert_err(mproc_sem_acquire(s, -3), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_free(s), MPROC_EINVAL);
  mproc_assert_ok(mproc_sem_destroy(s));
  mproc_assert_err(mproc_sem_destroy(s), MPROC_EINVAL);
}
END_TEST

static int limited_worker(void *arg) {
  struct shared *s = arg;
  for (int i = 0; i < 200; i++) {
    if (mproc_sem_acquire(s->sem, 30000) != 0)
      return 10;
    int now = atomic_fetch_add(&s->inside, 1) + 1;
    int m = atomic_load(&s->max_inside);
    while (now > m && !atomic_compare_exchange_weak(&s->max_inside, &m, now)) {
    }
    atomic_fetch_sub(&s->inside, 1);
    if (mproc_sem_release(s->sem) != 0)
      return 11;
  }
  return 0;
}

START_TEST(test_sem_limits_concurrency) {
  struct shared *s = anon_new(sizeof *s);
  mproc_assert_ok(mproc_sem_new(&s->sem, 2, NULL));
  struct child c[6];
  for (int i = 0; i < 6; i++)
    c[i] = child_start(limited_worker, s);
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  ck_assert_int_le(atomic_load(&s->max_inside), 2);
  ck_assert_int_ge(atomic_load(&s->max_inside), 1);
  ck_assert_int_eq(mproc_sem_value(s->sem), 2);
  mproc_assert_ok(mproc_sem_free(s->sem));
  munmap(s, sizeof *s);
}
END_TEST

static int sem_waiter(void *arg) {
  struct shared *s = arg;
  say_ready(s->ready);
  return mproc_sem_acquire(s->sem, 600000) == 0 ? 0 : 10;
}

static int sem_taker(void *arg) {
  struct shared *s = arg;
  if (mproc_sem_acquire(s->sem, 0) != 0)
    return 10;
  say_ready(s->ready);
  for (;;)
    pause();
}

START_TEST(test_sem_deaths) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_sem_new(&s->sem, 1, NULL));
  /* A process that dies holding a unit keeps it (no owner, as in Python). */
  struct child taker = child_start(sem_taker, s);
  wait_byte(p[0]);
  child_kill(&taker);
  ck_assert_int_eq(mproc_sem_value(s->sem), 0);
  mproc_assert_err(mproc_sem_acquire(s->sem, 0), MPROC_ETIMEDOUT);
  /* Two waiters; one is killed while asleep: a release still reaches the
   * live one (its 10-minute wait is bounded here by the 30 s reap). */
  struct child w1 = child_start(sem_waiter, s);
  wait_byte(p[0]);
  struct child w2 = child_start(sem_waiter, s);
  wait_byte(p[0]);
  child_kill(&w1);
  mproc_assert_ok(mproc_sem_release(s->sem));
  ck_assert_int_eq(child_wait(&w2), 0);
  ck_assert_int_eq(mproc_sem_value(s->sem), 0);
  mproc_assert_ok(mproc_sem_free(s->sem));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

START_TEST(test_sem_wakes_every_waiter) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_sem_new(&s->sem, 0, NULL));
  struct child c[4];
  for (int i = 0; i < 4; i++) {
    c[i] = child_start(sem_waiter, s);
    wait_byte(p[0]);
  }
  for (int i = 0; i < 4; i++)
    mproc_assert_ok(mproc_sem_release(s->sem));
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  ck_assert_int_eq(mproc_sem_value(s->sem), 0);
  mproc_assert_ok(mproc_sem_free(s->sem));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

/* ---- Event -------------------------------------------------------------------- */

static int event_waiter(void *arg) {
  struct shared *s = arg;
  say_ready(s->ready);
  return mproc_event_wait(s->ev, 600000) == 0 ? 0 : 10;
}

START_TEST(test_event) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_event_new(&s->ev));
  ck_assert_int_eq(mproc_event_is_set(s->ev), 0);
  mproc_assert_err(mproc_event_wait(s->ev, 0), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_event_wait(s->ev, 30), MPROC_ETIMEDOUT);
  struct child c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = child_start(event_waiter, s);
    wait_byte(p[0]);
  }
  /* A waiter killed while waiting takes nothing from the others. */
  child_kill(&c[0]);
  mproc_assert_ok(mproc_event_set(s->ev));
  ck_assert_int_eq(mproc_event_is_set(s->ev), 1);
  for (int i = 1; i < 3; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  mproc_assert_ok(mproc_event_wait(s->ev, 0)); /* stays set */
  mproc_assert_ok(mproc_event_set(s->ev));
  mproc_assert_ok(mproc_event_clear(s->ev));
  ck_assert_int_eq(mproc_event_is_set(s->ev), 0);
  mproc_assert_err(mproc_event_wait(s->ev, 0), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_event_free(s->ev));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

START_TEST(test_event_errors) {
  mproc_event *e;
  _Alignas(64) char store[MPROC_EVENT_SIZE];
  memset(store, 0, sizeof store);
  mproc_assert_err(mproc_event_new(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_event_init(&e, store, sizeof store - 1), MPROC_EINVAL);
  mproc_assert_err(mproc_event_init(NULL, store, sizeof store), MPROC_EINVAL);
  mproc_assert_err(mproc_event_set(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_event_clear(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_event_is_set(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_event_wait((mproc_event *)(void *)store, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_event_init(&e, store, sizeof store));
  mproc_assert_err(mproc_event_init(&e, store, sizeof store), MPROC_EBUSY);
  mproc_assert_err(mproc_event_wait(e, -9), MPROC_EINVAL);
  mproc_assert_err(mproc_event_free(e), MPROC_EINVAL);
  mproc_assert_ok(mproc_event_destroy(e));
  mproc_assert_err(mproc_event_set(e), MPROC_EINVAL);
}
END_TEST

START_TEST(test_cycles) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps();
  _Alignas(64) static char store[64];
  for (int i = 0; i < 10000; i++) {
    mproc_sem *s;
    mproc_event *e;
    mproc_assert_ok(mproc_sem_new(&s, 1, NULL));
    mproc_assert_ok(mproc_sem_acquire(s, 0));
    mproc_assert_ok(mproc_sem_release(s));
    mproc_assert_ok(mproc_sem_free(s));
    mproc_assert_ok(mproc_event_new(&e));
    mproc_assert_ok(mproc_event_set(e));
    mproc_assert_ok(mproc_event_free(e));
    mproc_assert_ok(mproc_sem_init(&s, store, sizeof store, 0, NULL));
    mproc_assert_ok(mproc_sem_destroy(s));
    mproc_assert_ok(mproc_event_init(&e, store, sizeof store));
    mproc_assert_ok(mproc_event_destroy(e));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-sem");
  TCase *tc = mproc_test_tcase(s, "semaphore", 60);
  tcase_add_test(tc, test_sem_counts);
  tcase_add_test(tc, test_bounded);
  tcase_add_test(tc, test_sem_errors);
  tcase_add_test(tc, test_sem_limits_concurrency);
  tcase_add_test(tc, test_sem_deaths);
  tcase_add_test(tc, test_sem_wakes_every_waiter);
  tc = mproc_test_tcase(s, "event", 60);
  tcase_add_test(tc, test_event);
  tcase_add_test(tc, test_event_errors);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_cycles);
  return mproc_test_run(s);
}
