/* A Lock parked in the thread that uses it (src/sync_lock_park.c): taken
 * from its parker by other processes while free and while held, and the
 * parker killed or stopped with and without the lock. */
#include "sync-util.h"
#include "sync.h"

#include <signal.h>

struct shared {
  mproc_lock *lock;
  int ready[2]; /* a pipe: the child writes a byte once parked or ready */
  long counter;
};

static struct shared *shared_new(void) {
  struct shared *s = anon_new(sizeof *s);
  mproc_assert_ok(mproc_lock_new(&s->lock));
  pipe_new(s->ready);
  return s;
}

static void shared_free(struct shared *s) {
  mproc_assert_ok(mproc_lock_free(s->lock));
  pipe_close(s->ready);
  munmap(s, sizeof *s);
}

static bool parked(mproc_lock *l) {
  uint32_t revokers;
  return mproc__lock_parked(l, &revokers);
}

/* One round trip: the calling thread parks the lock on its release. */
static void park_here(mproc_lock *l) {
  mproc_assert_ok(mproc_lock_acquire(l, 0));
  mproc_assert_ok(mproc_lock_release(l));
  ck_assert_msg(parked(l), "the lock did not park (membarrier refused?)");
}

/* Waits (30 s bound) until someone is revoking the parking. */
static void wait_revoker(mproc_lock *l) {
  int64_t deadline = mproc__deadline(30000);
  uint32_t revokers = 0;
  while (mproc__lock_parked(l, &revokers) && revokers == 0) {
    ck_assert_int_lt(mproc_now_ms(), deadline);
    mproc__cpu_relax(); /* polling a shared word another process changes */
  }
}

/* ---- revoked by another process --------------------------------------- */

static int take_and_count(void *arg) {
  struct shared *s = arg;
  int r = mproc_lock_acquire(s->lock, 30000);
  if (r != 0)
    return 10;
  s->counter++;
  return mproc_lock_release(s->lock) == 0 ? 0 : 11;
}

START_TEST(test_parked_revoked_while_free) {
  struct shared *s = shared_new();
  park_here(s->lock);
  struct child c = child_start(take_and_count, s);
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_int_eq(s->counter, 1);
  /* Ours again, the normal way, and in and out many times. */
  for (int i = 0; i < 1000; i++) {
    mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
    s->counter++;
    mproc_assert_ok(mproc_lock_release(s->lock));
  }
  ck_assert_int_eq(s->counter, 1001);
  shared_free(s);
}
END_TEST

static int poll_then_wait(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_acquire(s->lock, 0) != MPROC_ETIMEDOUT)
    return 10; /* held by its parker */
  if (mproc_lock_release(s->lock) != MPROC_ENOTOWNER)
    return 11;
  say_ready(s->ready[1]);
  return take_and_count(arg);
}

START_TEST(test_parked_revoked_while_held) {
  struct shared *s = shared_new();
  park_here(s->lock);
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0)); /* through the parking */
  ck_assert(parked(s->lock));
  mproc_assert_err(mproc_lock_acquire(s->lock, 0), MPROC_EBUSY);
  struct child c = child_start(poll_then_wait, s);
  wait_byte(s->ready[0]);
  wait_revoker(s->lock);
  s->counter = 41; /* inside the critical section while it waits */
  mproc_assert_ok(mproc_lock_release(s->lock));
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_int_eq(s->counter, 42);
  shared_free(s);
}
END_TEST

/* ---- the parker killed or stopped --------------------------------------- */

/* Parks the lock, takes it again through the parking if `hold`, says so,
 * and waits to be killed. */
static int park_and_stay(void *arg, bool hold) {
  struct shared *s = arg;
  if (mproc_lock_acquire(s->lock, 0) != 0 || mproc_lock_release(s->lock) != 0 || !parked(s->lock))
    return 10;
  if (hold && mproc_lock_acquire(s->lock, 0) != 0)
    return 11;
  say_ready(s->ready[1]);
  for (;;)
    pause();
}
static int park_holding(void *arg) { return park_and_stay(arg, true); }
static int park_free(void *arg) { return park_and_stay(arg, false); }

/* A child that parked the lock (and holds it, for park_holding), once it
 * said so. */
static struct child parker_start(struct shared *s, mproc__child_fn fn) {
  struct child c = child_start(fn, s);
  wait_byte(s->ready[0]);
  ck_assert(parked(s->lock));
  return c;
}

/* The lock of a parker that died inside: taken over, repaired, usable. */
static void take_over(struct shared *s) {
  mproc_assert_err(mproc_lock_acquire(s->lock, 30000), MPROC_EOWNERDEAD);
  mproc_assert_ok(mproc_lock_consistent(s->lock));
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_ok(mproc_lock_release(s->lock));
}

START_TEST(test_parker_killed_holding) {
  struct shared *s = shared_new();
  struct child c = parker_start(s, park_holding);
  mproc_assert_err(mproc_lock_acquire(s->lock, 0), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_lock_free(s->lock), MPROC_EBUSY); /* held by a live parker */
  child_kill(&c);
  take_over(s);
  shared_free(s);
}
END_TEST

START_TEST(test_parker_killed_not_holding) {
  struct shared *s = shared_new();
  struct child c = parker_start(s, park_free);
  child_kill(&c);
  /* Free: taken at once, not reported as an owner's death. */
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_err(mproc_lock_consistent(s->lock), MPROC_ESTATE);
  mproc_assert_ok(mproc_lock_release(s->lock));
  shared_free(s);
}
END_TEST

START_TEST(test_parker_stopped) {
  struct shared *s = shared_new();
  /* Stopped outside: holds nothing. */
  struct child c = parker_start(s, park_free);
  mproc_assert_ok(mproc__pidfd_kill(c.pidfd, SIGSTOP));
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc__pidfd_kill(c.pidfd, SIGCONT));
  child_kill(&c);
  /* Stopped inside: a holder, waited for up to the deadline. */
  mproc_assert_ok(mproc_lock_free(s->lock));
  mproc_assert_ok(mproc_lock_new(&s->lock));
  c = parker_start(s, park_holding);
  mproc_assert_ok(mproc__pidfd_kill(c.pidfd, SIGSTOP));
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_lock_acquire(s->lock, 100), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 100);
  mproc_assert_err(mproc_lock_acquire(s->lock, 0), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc__pidfd_kill(c.pidfd, SIGCONT));
  child_kill(&c);
  take_over(s);
  shared_free(s);
}
END_TEST

/* ---- ownership checks of a parked lock ---------------------------------- */

static int not_owner_of_parked(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_release(s->lock) != MPROC_ENOTOWNER)
    return 10;
  if (mproc_lock_consistent(s->lock) != MPROC_ESTATE)
    return 11;
  return mproc_lock_acquire(s->lock, 0) == MPROC_ETIMEDOUT ? 0 : 12;
}

START_TEST(test_parked_owner_checks) {
  struct shared *s = shared_new();
  park_here(s->lock);
  /* Parked here but not held. */
  mproc_assert_err(mproc_lock_release(s->lock), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_lock_consistent(s->lock), MPROC_ESTATE);
  /* Held through the parking: a forked child (a new thread) holds nothing. */
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_err(mproc_lock_free(s->lock), MPROC_EBUSY);
  struct child c = child_start(not_owner_of_parked, s);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_err(mproc_lock_release(s->lock), MPROC_ENOTOWNER);
  ck_assert(parked(s->lock));
  /* A parked lock on caller storage can be destroyed by its parker. */
  _Alignas(64) char store[MPROC_LOCK_SIZE];
  mproc_lock *l;
  mproc_assert_ok(mproc_lock_init(&l, store, sizeof store));
  park_here(l);
  mproc_assert_ok(mproc_lock_destroy(l));
  shared_free(s);
}
END_TEST

/* Destroyed by another process while parked outside: taken over first. */
static int destroy_parked(void *arg) {
  struct shared *s = arg;
  return mproc_lock_destroy((mproc_lock *)(void *)(s + 1)) == 0 ? 0 : 10;
}

START_TEST(test_parked_destroyed_elsewhere) {
  struct shared *s = anon_new(sizeof *s + MPROC_LOCK_SIZE);
  mproc_lock *l;
  mproc_assert_ok(mproc_lock_init(&l, s + 1, MPROC_LOCK_SIZE));
  park_here(l);
  struct child c = child_start(destroy_parked, s);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_err(mproc_lock_acquire(l, 0), MPROC_EINVAL); /* gone */
  munmap(s, sizeof *s + MPROC_LOCK_SIZE);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-lock-park");
  TCase *tc = mproc_test_tcase(s, "park", 60);
  tcase_add_test(tc, test_parked_revoked_while_free);
  tcase_add_test(tc, test_parked_revoked_while_held);
  tcase_add_test(tc, test_parker_killed_holding);
  tcase_add_test(tc, test_parker_killed_not_holding);
  tcase_add_test(tc, test_parker_stopped);
  tcase_add_test(tc, test_parked_owner_checks);
  tcase_add_test(tc, test_parked_destroyed_elsewhere);
  return mproc_test_run(s);
}
