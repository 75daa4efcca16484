/* ctest-labels: threads */
/* Lock/RLock/Condition ownership by threads (src/sync_lock.c, src/sync_condition.c):
 * a thread's exit is an owner death, other threads are not owners, and the
 * per-thread owner id is right again in a forked child. */
#include "child.h"
#include "sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct shared {
  mproc_lock *lock;
  mproc_rlock *rlock;
  mproc_cond *cond;
  int turn;
  int rounds;
  int result;
  _Atomic int polled; /* test_thread_after_parking: the first acquire is over */
};

static void *take_lock_and_exit(void *arg) {
  struct shared *s = arg;
  s->result = mproc_lock_acquire(s->lock, -1);
  return NULL; /* exits holding it */
}

static void *release_not_owner(void *arg) {
  struct shared *s = arg;
  s->result = mproc_lock_release(s->lock);
  if (s->result == MPROC_ENOTOWNER)
    s->result =
        mproc_rlock_depth(s->rlock) == 0 && mproc_rlock_acquire(s->rlock, 0) == MPROC_ETIMEDOUT
            ? MPROC_ENOTOWNER
            : -1;
  return NULL;
}

START_TEST(test_thread_exit_is_owner_death) {
  struct shared s = {0};
  mproc_assert_ok(mproc_lock_new(&s.lock));
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, take_lock_and_exit, &s), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  mproc_assert_ok(s.result);
  mproc_assert_err(mproc_lock_acquire(s.lock, -1), MPROC_EOWNERDEAD);
  mproc_assert_ok(mproc_lock_consistent(s.lock));
  mproc_assert_ok(mproc_lock_release(s.lock));
  mproc_assert_ok(mproc_lock_free(s.lock));
}
END_TEST

START_TEST(test_other_thread_is_not_owner) {
  struct shared s = {0};
  mproc_assert_ok(mproc_lock_new(&s.lock));
  mproc_assert_ok(mproc_rlock_new(&s.rlock));
  mproc_assert_ok(mproc_lock_acquire(s.lock, 0));
  mproc_assert_ok(mproc_rlock_acquire(s.rlock, 0));
  mproc_assert_ok(mproc_rlock_acquire(s.rlock, 0));
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, release_not_owner, &s), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  mproc_assert_err(s.result, MPROC_ENOTOWNER);
  ck_assert_int_eq(mproc_rlock_depth(s.rlock), 2);
  mproc_assert_ok(mproc_rlock_release(s.rlock));
  mproc_assert_ok(mproc_rlock_release(s.rlock));
  mproc_assert_ok(mproc_lock_release(s.lock));
  mproc_assert_ok(mproc_rlock_free(s.rlock));
  mproc_assert_ok(mproc_lock_free(s.lock));
}
END_TEST

static int depth_in_child(void *arg) {
  /* The parent's thread holds it; this process's thread does not. */
  return mproc_rlock_depth(arg) == 0 && mproc_rlock_acquire(arg, 0) == MPROC_ETIMEDOUT ? 0 : 1;
}

START_TEST(test_owner_id_after_fork) {
  mproc_rlock *r;
  mproc_assert_ok(mproc_rlock_new(&r));
  mproc_assert_ok(mproc_rlock_acquire(r, 0));
  struct child c = child_start(depth_in_child, r);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_ok(mproc_rlock_release(r));
  mproc_assert_ok(mproc_rlock_free(r));
}
END_TEST

/* A thread made after the lock was parked in the main thread is one more
 * revoker (src/sync_lock_park.c). */
static void *poll_then_take(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_acquire(s->lock, 0) != MPROC_ETIMEDOUT) {
    s->result = -1;
    return NULL;
  }
  atomic_store(&s->polled, 1); /* now waiting */
  s->result = mproc_lock_acquire(s->lock, 30000);
  if (s->result == 0) {
    s->rounds++;
    s->result = mproc_lock_release(s->lock);
  }
  return NULL;
}

START_TEST(test_thread_after_parking) {
  struct shared s = {0};
  mproc_assert_ok(mproc_lock_new(&s.lock));
  mproc_assert_ok(mproc_lock_acquire(s.lock, 0));
  mproc_assert_ok(mproc_lock_release(s.lock));
  uint32_t revokers = 0;
  ck_assert(mproc__lock_parked(s.lock, &revokers));
  mproc_assert_ok(mproc_lock_acquire(s.lock, 0)); /* held through the parking */
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, poll_then_take, &s), 0);
  /* Released only once the thread's poll is over and its waiting acquire
   * revokes: released during the poll, the lock would be the poll's. */
  int64_t deadline = mproc__deadline(30000);
  while (atomic_load(&s.polled) == 0 || (mproc__lock_parked(s.lock, &revokers) && revokers == 0)) {
    ck_assert_int_lt(mproc_now_ms(), deadline);
    mproc__cpu_relax(); /* polling words the other thread changes */
  }
  s.rounds = 41;
  mproc_assert_ok(mproc_lock_release(s.lock));
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  mproc_assert_ok(s.result);
  ck_assert_int_eq(s.rounds, 42);
  /* Taken back the normal way. */
  mproc_assert_ok(mproc_lock_acquire(s.lock, 0));
  mproc_assert_ok(mproc_lock_release(s.lock));
  mproc_assert_ok(mproc_lock_free(s.lock));
}
END_TEST

static int is_turn(void *arg) {
  return ((struct shared *)((void **)arg)[0])->turn == (int)(intptr_t)((void **)arg)[1];
}

static void *pong(void *arg) {
  struct shared *s = arg;
  void *a[2] = {s, (void *)(intptr_t)1};
  if (mproc_cond_acquire(s->cond, -1) != 0)
    return NULL;
  for (int i = 0; i < s->rounds; i++) {
    if (mproc_cond_wait_for(s->cond, is_turn, a, 30000) != 0)
      break;
    s->turn = 0;
    mproc_cond_notify(s->cond, 1);
  }
  mproc_cond_release(s->cond);
  return NULL;
}

START_TEST(test_condition_between_threads) {
  struct shared s = {.rounds = 200};
  mproc_assert_ok(mproc_cond_new(&s.cond));
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, pong, &s), 0);
  void *a[2] = {&s, (void *)(intptr_t)0};
  mproc_assert_ok(mproc_cond_acquire(s.cond, -1));
  for (int i = 0; i < s.rounds; i++) {
    s.turn = 1;
    mproc_assert_ok(mproc_cond_notify(s.cond, 1));
    mproc_assert_ok(mproc_cond_wait_for(s.cond, is_turn, a, 30000));
  }
  mproc_assert_ok(mproc_cond_release(s.cond));
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  mproc_assert_ok(mproc_cond_free(s.cond));
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-threads");
  TCase *tc = mproc_test_tcase(s, "threads", 60);
  tcase_add_test(tc, test_thread_exit_is_owner_death);
  tcase_add_test(tc, test_other_thread_is_not_owner);
  tcase_add_test(tc, test_owner_id_after_fork);
  tcase_add_test(tc, test_thread_after_parking);
  tcase_add_test(tc, test_condition_between_threads);
  return mproc_test_run(s);
}
