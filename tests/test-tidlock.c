/* The owner-checked lock of the queue's hot paths (src/tidlock.c): mutual
 * exclusion, deadlines, and a dead owner found by its waiters, whether the
 * owner was a thread, a process, or a tid recycled since.
 * ctest-labels: threads */
#include "harness.h"
#include "child.h"
#include "internal.h"
#include "futex.h"
#include "tidlock.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

static mproc__tidlock *shared_lock(void) {
  void *p =
      mmap(NULL, sizeof(mproc__tidlock), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(p, MAP_FAILED);
  return p;
}

static void unmap_lock(mproc__tidlock *l) { ck_assert_int_eq(munmap(l, sizeof *l), 0); }

START_TEST(test_uncontended) {
  mproc__tidlock *l = shared_lock();
  ck_assert(!mproc__tidlock_mine(l));
  mproc_assert_ok(mproc__tidlock_lock(l, -1));
  ck_assert(mproc__tidlock_mine(l));
  ck_assert_uint_ne(atomic_load(&l->word), 0);
  mproc__tidlock_unlock(l);
  ck_assert(!mproc__tidlock_mine(l));
  ck_assert_uint_eq(atomic_load(&l->word), 0);
  mproc_assert_ok(mproc__tidlock_trylock(l));
  mproc__tidlock_release(l);
  atomic_thread_fence(memory_order_seq_cst);
  mproc__tidlock_wake(l);
  ck_assert_uint_eq(atomic_load(&l->word), 0);
  unmap_lock(l);
}
END_TEST

/* ---- a live owner keeps its lock -------------------------------------- */

struct holder {
  mproc__tidlock *l;
  _Atomic int state; /* 1: holding; 2: told to release */
};

static void *hold_until_told(void *arg) {
  struct holder *h = arg;
  if (mproc__tidlock_lock(h->l, -1) != 0)
    return NULL;
  atomic_store(&h->state, 1);
  mproc__futex_wake((_Atomic uint32_t *)&h->state, 1, true);
  while (atomic_load(&h->state) != 2)
    mproc__futex_wait((_Atomic uint32_t *)&h->state, 1, mproc__deadline(1000), true);
  mproc__tidlock_unlock(h->l);
  return NULL;
}

static int hold_until_killed(void *arg) {
  hold_until_told(arg);
  return 99;
}

static void await_state(_Atomic int *s, int want) {
  int64_t deadline = mproc__deadline(mproc_test_scaled_ms(30000));
  int v;
  while ((v = atomic_load(s)) != want) {
    ck_assert_int_ne(mproc__futex_wait((_Atomic uint32_t *)s, (uint32_t)v, deadline, true),
                     MPROC_ETIMEDOUT);
  }
}

/* Held by a live thread: trylock is refused, a bounded lock times out (after
 * slices long enough to judge the owner alive), and a sleeping waiter gets
 * the lock once the owner releases it. */
START_TEST(test_live_owner_times_out_then_hands_over) {
  mproc__tidlock *l = shared_lock();
  struct holder h = {l, 0};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, hold_until_told, &h), 0);
  await_state(&h.state, 1);
  ck_assert(!mproc__tidlock_mine(l));
  mproc_assert_err(mproc__tidlock_trylock(l), MPROC_EBUSY);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(60)), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 59);
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(0)), MPROC_ETIMEDOUT);
  atomic_store(&h.state, 2);
  mproc__futex_wake((_Atomic uint32_t *)&h.state, 1, true);
  mproc_assert_ok(mproc__tidlock_lock(l, mproc__deadline(mproc_test_scaled_ms(30000))));
  mproc__tidlock_unlock(l);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  unmap_lock(l);
}
END_TEST

/* ---- mutual exclusion under contention -------------------------------- */

#define ROUNDS 20000

struct counter {
  mproc__tidlock l;
  long n; /* guarded by l */
};

static void *count_up(void *arg) {
  struct counter *c = arg;
  for (int i = 0; i < ROUNDS; i++) {
    if (mproc__tidlock_lock(&c->l, -1) != 0)
      return NULL;
    long v = c->n;
    if (i % 64 == 0)
      sched_yield(); /* inside the section: make waiters sleep, not only spin */
    c->n = v + 1;
    mproc__tidlock_unlock(&c->l);
  }
  return NULL;
}

static int count_up_child(void *arg) {
  count_up(arg);
  return 0;
}

/* The same with this process on full fences (as where membarrier is
 * refused) while its forked child registers for membarrier: both sides of
 * every wake-up pair stay ordered. */
static void exclusion_rounds(void);

START_TEST(test_threads_and_processes_exclude_each_other) { exclusion_rounds(); }
END_TEST

START_TEST(test_exclusion_with_full_fences_here) {
  atomic_store(&mproc__fence_mode, 1);
  exclusion_rounds();
}
END_TEST

static void exclusion_rounds(void) {
  struct counter *c =
      mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(c, MAP_FAILED);
  pthread_t t[3];
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, count_up, c), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
  ck_assert_int_eq(c->n, 3 * ROUNDS);
  struct child ch = child_start(count_up_child, c);
  count_up(c);
  ck_assert_int_eq(child_wait(&ch), 0);
  ck_assert_int_eq(c->n, 5 * ROUNDS);
  ck_assert_uint_eq(atomic_load(&c->l.sleepers), 0);
  ck_assert_int_eq(munmap(c, sizeof *c), 0);
}

/* ---- dead owners -------------------------------------------------------- */

static void *lock_and_exit(void *arg) {
  mproc__tidlock_lock(arg, -1);
  return NULL; /* the thread ends holding it */
}

/* A thread that ended holding the lock: a waiter already asleep takes it
 * over with MPROC_EOWNERDEAD, within a bounded time. */
START_TEST(test_thread_exits_holding) {
  mproc__tidlock *l = shared_lock();
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, lock_and_exit, l), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_uint_ne(atomic_load(&l->word), 0);
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(mproc_test_scaled_ms(30000))),
                   MPROC_EOWNERDEAD);
  ck_assert(mproc__tidlock_mine(l));
  mproc__tidlock_unlock(l);
  mproc_assert_ok(mproc__tidlock_lock(l, 0));
  mproc__tidlock_unlock(l);
  unmap_lock(l);
}
END_TEST

static int lock_and_die(void *arg) {
  mproc__tidlock_lock(arg, -1);
  raise(SIGKILL);
  return 99;
}

/* A process killed holding it: trylock takes it over at once, and so does a
 * waiter that was asleep when the owner died. */
START_TEST(test_process_killed_holding) {
  mproc__tidlock *l = shared_lock();
  struct child ch = child_start(lock_and_die, l);
  ck_assert_int_eq(child_wait(&ch), -SIGKILL);
  mproc_assert_err(mproc__tidlock_trylock(l), MPROC_EOWNERDEAD);
  mproc__tidlock_unlock(l);

  /* Held by a live child first, which is then killed while we wait. */
  struct holder *h =
      mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(h, MAP_FAILED);
  h->l = l;
  atomic_store(&h->state, 0);
  ch = child_start(hold_until_killed, h);
  await_state(&h->state, 1);
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(30)), MPROC_ETIMEDOUT);
  child_kill(&ch);
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(mproc_test_scaled_ms(30000))),
                   MPROC_EOWNERDEAD);
  mproc__tidlock_unlock(l);
  ck_assert_int_eq(munmap(h, sizeof *h), 0);
  unmap_lock(l);
}
END_TEST

static int sleep_until_killed(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0;
}

/* A word naming a live thread under another start time is a dead owner
 * whose tid was given again: taken over.  Under its own start time, the
 * same thread keeps the lock. */
START_TEST(test_recycled_tid_is_not_the_owner) {
  mproc__tidlock *l = shared_lock();
  struct child ch = child_start(sleep_until_killed, NULL);
  struct mproc__pstat ps;
  mproc_assert_ok(mproc__proc_stat(NULL, ch.pid, &ps));
  uint64_t token = (uint32_t)ps.start_time | 1u;
  atomic_store(&l->word, (token ^ 2u) << 32 | (uint32_t)ch.pid);
  mproc_assert_err(mproc__tidlock_trylock(l), MPROC_EOWNERDEAD);
  mproc__tidlock_unlock(l);
  atomic_store(&l->word, token << 32 | (uint32_t)ch.pid);
  mproc_assert_err(mproc__tidlock_trylock(l), MPROC_EBUSY);
  mproc_assert_err(mproc__tidlock_lock(l, mproc__deadline(30)), MPROC_ETIMEDOUT);
  child_kill(&ch);
  mproc_assert_err(mproc__tidlock_trylock(l), MPROC_EOWNERDEAD);
  mproc__tidlock_unlock(l);
  unmap_lock(l);
}
END_TEST

int main(void) {
  Suite *s = suite_create("tidlock");
  TCase *tc = mproc_test_tcase(s, "tidlock", 120);
  tcase_add_test(tc, test_uncontended);
  tcase_add_test(tc, test_live_owner_times_out_then_hands_over);
  tcase_add_test(tc, test_threads_and_processes_exclude_each_other);
  tcase_add_test(tc, test_exclusion_with_full_fences_here);
  tcase_add_test(tc, test_thread_exits_holding);
  tcase_add_test(tc, test_process_killed_holding);
  tcase_add_test(tc, test_recycled_tid_is_not_the_owner);
  return mproc_test_run(s);
}
