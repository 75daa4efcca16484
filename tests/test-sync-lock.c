/* Lock and RLock (src/sync_lock.c) across processes, including holders killed
 * while holding them. */
#include "sync-util.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Shared scratch for the children of a test. */
struct shared {
  mproc_lock *lock;
  mproc_rlock *rlock;
  long counter;
  int ready; /* write end of a pipe: a child writes one byte when ready */
  int depth;
};

static struct shared *shared_new(void) {
  void *p;
  mproc_assert_ok(mproc__map_anon_shared(sizeof(struct shared), &p));
  return p;
}

static void shared_free(struct shared *s) { munmap(s, sizeof *s); }

/* ---- Lock ------------------------------------------------------------------- */

START_TEST(test_lock_basics) {
  mproc_lock *l;
  mproc_assert_ok(mproc_lock_new(&l));
  mproc_assert_ok(mproc_lock_acquire(l, -1));
  mproc_assert_err(mproc_lock_acquire(l, 0), MPROC_EBUSY);  /* not recursive */
  mproc_assert_err(mproc_lock_consistent(l), MPROC_ESTATE); /* nothing to repair */
  mproc_assert_err(mproc_lock_free(l), MPROC_EBUSY);        /* held */
  mproc_assert_ok(mproc_lock_release(l));
  mproc_assert_err(mproc_lock_release(l), MPROC_ENOTOWNER);
  mproc_assert_ok(mproc_lock_acquire(l, 0));
  mproc_assert_ok(mproc_lock_release(l));
  mproc_assert_ok(mproc_lock_free(l));
}
END_TEST

START_TEST(test_lock_errors) {
  mproc_lock *l;
  _Alignas(64) char store[MPROC_LOCK_SIZE + 8];
  memset(store, 0, sizeof store);
  mproc_assert_err(mproc_lock_new(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_init(&l, NULL, MPROC_LOCK_SIZE), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_init(&l, store, MPROC_LOCK_SIZE - 1), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_init(&l, store + 4, MPROC_LOCK_SIZE), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_init(NULL, store, MPROC_LOCK_SIZE), MPROC_EINVAL);
  /* Not initialised yet. */
  mproc_assert_err(mproc_lock_acquire((mproc_lock *)(void *)store, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_release((mproc_lock *)(void *)store), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_destroy((mproc_lock *)(void *)store), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_acquire(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_release(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_consistent(NULL), MPROC_EINVAL);
  mproc_assert_ok(mproc_lock_init(&l, store, sizeof store));
  ck_assert_ptr_eq(l, (void *)store);
  mproc_assert_err(mproc_lock_init(&l, store, sizeof store), MPROC_EBUSY); /* live */
  mproc_assert_err(mproc_lock_acquire(l, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_free(l), MPROC_EINVAL); /* caller storage: destroy */
  /* Another kind of object is rejected. */
  mproc_assert_err(mproc_rlock_acquire((mproc_rlock *)(void *)l, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_lock_destroy(l));
  mproc_assert_err(mproc_lock_acquire(l, 0), MPROC_EINVAL); /* destroyed */
  mproc_lock *n;
  mproc_assert_ok(mproc_lock_new(&n));
  mproc_assert_err(mproc_lock_destroy(n), MPROC_EINVAL); /* library storage: free */
  mproc_assert_ok(mproc_lock_free(n));
}
END_TEST

static int hold_lock(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_acquire(s->lock, 0) != 0)
    return 10;
  say_ready(s->ready);
  for (;;)
    pause();
}

static int try_lock(void *arg) {
  struct shared *s = arg;
  int r = mproc_lock_acquire(s->lock, 0);
  if (r != MPROC_ETIMEDOUT)
    return 10;
  int64_t t0 = mproc_now_ms();
  if (mproc_lock_acquire(s->lock, 100) != MPROC_ETIMEDOUT || mproc_now_ms() - t0 < 100)
    return 11;
  /* A non-owner may not release it. */
  return mproc_lock_release(s->lock) == MPROC_ENOTOWNER ? 0 : 12;
}

/* Waits (practically forever) for the lock and reports what it got. */
static int wait_lock(void *arg) {
  struct shared *s = arg;
  say_ready(s->ready);
  int r = mproc_lock_acquire(s->lock, 600000);
  if (r == MPROC_EOWNERDEAD) {
    s->counter = 42; /* repair */
    if (mproc_lock_consistent(s->lock) != 0)
      return 11;
    return mproc_lock_release(s->lock) == 0 ? 3 : 12;
  }
  return r == 0 ? 0 : 10;
}

START_TEST(test_lock_timeout_and_owner) {
  struct shared *s = shared_new();
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_lock_new(&s->lock));
  struct child holder = child_start(hold_lock, s);
  wait_byte(p[0]);
  struct child other = child_start(try_lock, s);
  ck_assert_int_eq(child_wait(&other), 0);
  child_kill(&holder);
  mproc_assert_ok(mproc_lock_free(s->lock));
  close(p[0]);
  close(p[1]);
  shared_free(s);
}
END_TEST

static int count_locked(void *arg) {
  struct shared *s = arg;
  for (int i = 0; i < 20000; i++) {
    if (mproc_lock_acquire(s->lock, 30000) != 0)
      return 10;
    long v = s->counter; /* a deliberately non-atomic read-modify-write */
    s->counter = v + 1;
    if (mproc_lock_release(s->lock) != 0)
      return 11;
  }
  return 0;
}

START_TEST(test_lock_mutual_exclusion) {
  struct shared *s = shared_new();
  mproc_assert_ok(mproc_lock_new(&s->lock));
  struct child c[4];
  for (int i = 0; i < 4; i++)
    c[i] = child_start(count_locked, s);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  ck_assert_int_eq(s->counter, 80000);
  mproc_assert_ok(mproc_lock_free(s->lock));
  shared_free(s);
}
END_TEST

START_TEST(test_lock_holder_killed) {
  struct shared *s = shared_new();
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  /* On caller storage inside an anonymous block, this time. */
  mproc_shm *blk;
  mproc_assert_ok(mproc_shm_new(&blk, 4096));
  mproc_assert_ok(mproc_lock_init(&s->lock, mproc_shm_addr(blk), mproc_shm_size(blk)));
  struct child holder = child_start(hold_lock, s);
  wait_byte(p[0]);
  /* A waiter blocked (deadline 10 minutes) when the holder dies must learn it
   * at once: its reap below is bounded by 30 s. */
  struct child waiter = child_start(wait_lock, s);
  wait_byte(p[0]);
  child_kill(&holder);
  ck_assert_int_eq(child_wait(&waiter), 3); /* got MPROC_EOWNERDEAD, repaired */
  ck_assert_int_eq(s->counter, 42);
  /* Marked consistent: a normal lock again. */
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc_lock_destroy(s->lock));
  mproc_assert_ok(mproc_shm_free(blk));
  close(p[0]);
  close(p[1]);
  shared_free(s);
}
END_TEST

START_TEST(test_lock_not_recoverable) {
  struct shared *s = shared_new();
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_lock_new(&s->lock));
  struct child holder = child_start(hold_lock, s);
  wait_byte(p[0]);
  child_kill(&holder);
  mproc_assert_err(mproc_lock_acquire(s->lock, 30000), MPROC_EOWNERDEAD);
  /* Released without marking it consistent: unusable from now on. */
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_err(mproc_lock_acquire(s->lock, 0), MPROC_ENOTRECOVERABLE);
  mproc_assert_err(mproc_lock_acquire(s->lock, -1), MPROC_ENOTRECOVERABLE);
  mproc_assert_ok(mproc_lock_free(s->lock));
  close(p[0]);
  close(p[1]);
  shared_free(s);
}
END_TEST

/* A release knows its caller is the owner from a per-thread note of the
 * lock taken last (tidlock.h): every way that note could go stale must
 * still give MPROC_ENOTOWNER. */
START_TEST(test_lock_owner_after_other_releases) {
  mproc_lock *a, *b;
  mproc_assert_ok(mproc_lock_new(&a));
  mproc_assert_ok(mproc_lock_new(&b));
  /* Nested, released outer first. */
  mproc_assert_ok(mproc_lock_acquire(a, 0));
  mproc_assert_ok(mproc_lock_acquire(b, 0));
  mproc_assert_ok(mproc_lock_release(a));
  mproc_assert_err(mproc_lock_release(a), MPROC_ENOTOWNER);
  mproc_assert_ok(mproc_lock_release(b));
  mproc_assert_err(mproc_lock_release(b), MPROC_ENOTOWNER);
  /* Taken and released, then another taken. */
  mproc_assert_ok(mproc_lock_acquire(a, 0));
  mproc_assert_ok(mproc_lock_release(a));
  mproc_assert_ok(mproc_lock_acquire(b, 0));
  mproc_assert_err(mproc_lock_release(a), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_lock_acquire(b, 0), MPROC_EBUSY);
  mproc_assert_ok(mproc_lock_release(b));
  /* One lock mapped at two addresses: released through the second, it is
   * no longer ours through the first. */
  int fd = mproc_object_fd(a);
  ck_assert_int_ge(fd, 0);
  mproc_lock *alias;
  mproc_assert_ok(mproc_lock_from_fd(&alias, fd));
  ck_assert_ptr_ne(alias, a);
  mproc_assert_ok(mproc_lock_acquire(a, 0));
  mproc_assert_err(mproc_lock_acquire(alias, 0), MPROC_EBUSY); /* ours through a */
  mproc_assert_ok(mproc_lock_release(alias));
  mproc_assert_err(mproc_lock_release(a), MPROC_ENOTOWNER);
  /* Taken through the second, it is ours through the first too. */
  mproc_assert_ok(mproc_lock_acquire(alias, 0));
  mproc_assert_ok(mproc_lock_release(a));
  mproc_assert_err(mproc_lock_release(alias), MPROC_ENOTOWNER);
  mproc_assert_ok(mproc_lock_free(alias));
  mproc_assert_ok(mproc_lock_free(b));
  mproc_assert_ok(mproc_lock_free(a));
}
END_TEST

/* The child of a process whose thread took the lock last holds nothing. */
static int not_owner_in_child(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_release(s->lock) != MPROC_ENOTOWNER)
    return 10;
  if (mproc_lock_acquire(s->lock, 0) != MPROC_ETIMEDOUT)
    return 11;
  if (mproc_lock_consistent(s->lock) != MPROC_ESTATE)
    return 12;
  if (mproc_rlock_release(s->rlock) != MPROC_ENOTOWNER || mproc_rlock_depth(s->rlock) != 0)
    return 13;
  return mproc_rlock_acquire(s->rlock, 0) == MPROC_ETIMEDOUT ? 0 : 14;
}

START_TEST(test_lock_owner_in_forked_child) {
  struct shared *s = shared_new();
  mproc_assert_ok(mproc_lock_new(&s->lock));
  mproc_assert_ok(mproc_rlock_new(&s->rlock));
  mproc_assert_ok(mproc_rlock_acquire(s->rlock, 0));
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0)); /* taken last */
  struct child c = child_start(not_owner_in_child, s);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc_rlock_release(s->rlock));
  /* And the other way round: the RLock taken last. */
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_ok(mproc_rlock_acquire(s->rlock, 0));
  c = child_start(not_owner_in_child, s);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_ok(mproc_rlock_release(s->rlock));
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc_lock_free(s->lock));
  mproc_assert_ok(mproc_rlock_free(s->rlock));
  shared_free(s);
}
END_TEST

/* ---- RLock ------------------------------------------------------------------ */

START_TEST(test_rlock_recursion) {
  mproc_rlock *r;
  mproc_assert_ok(mproc_rlock_new(&r));
  ck_assert_int_eq(mproc_rlock_depth(r), 0);
  mproc_assert_err(mproc_rlock_release(r), MPROC_ENOTOWNER);
  for (int i = 1; i <= 3; i++) {
    mproc_assert_ok(mproc_rlock_acquire(r, 0));
    ck_assert_int_eq(mproc_rlock_depth(r), i);
  }
  mproc_assert_err(mproc_rlock_free(r), MPROC_EBUSY);
  for (int i = 2; i >= 0; i--) {
    mproc_assert_ok(mproc_rlock_release(r));
    ck_assert_int_eq(mproc_rlock_depth(r), i);
  }
  mproc_assert_err(mproc_rlock_release(r), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_rlock_consistent(r), MPROC_ESTATE);
  mproc_assert_ok(mproc_rlock_free(r));
}
END_TEST

START_TEST(test_rlock_errors) {
  mproc_rlock *r;
  _Alignas(64) char store[MPROC_RLOCK_SIZE];
  memset(store, 0, sizeof store);
  mproc_assert_err(mproc_rlock_new(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_init(&r, store, MPROC_RLOCK_SIZE - 8), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_init(&r, store + 1, MPROC_RLOCK_SIZE - 1), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_init(NULL, store, sizeof store), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_acquire((mproc_rlock *)(void *)store, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_depth(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_release(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_consistent(NULL), MPROC_EINVAL);
  mproc_assert_ok(mproc_rlock_init(&r, store, sizeof store));
  mproc_assert_err(mproc_rlock_init(&r, store, sizeof store), MPROC_EBUSY);
  mproc_assert_err(mproc_rlock_acquire(r, -7), MPROC_EINVAL);
  mproc_assert_err(mproc_rlock_free(r), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_acquire((mproc_lock *)(void *)r, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_rlock_destroy(r));
  mproc_assert_err(mproc_rlock_destroy(r), MPROC_EINVAL);
}
END_TEST

static int hold_rlock_depth3(void *arg) {
  struct shared *s = arg;
  for (int i = 0; i < 3; i++)
    if (mproc_rlock_acquire(s->rlock, 0) != 0)
      return 10;
  s->depth = mproc_rlock_depth(s->rlock);
  say_ready(s->ready);
  for (;;)
    pause();
}

static int rlock_other(void *arg) {
  struct shared *s = arg;
  if (mproc_rlock_acquire(s->rlock, 0) != MPROC_ETIMEDOUT)
    return 10;
  if (mproc_rlock_depth(s->rlock) != 0)
    return 11;
  return mproc_rlock_release(s->rlock) == MPROC_ENOTOWNER ? 0 : 12;
}

static int rlock_waiter(void *arg) {
  struct shared *s = arg;
  say_ready(s->ready);
  int r = mproc_rlock_acquire(s->rlock, 600000);
  if (r != MPROC_EOWNERDEAD)
    return 10;
  if (mproc_rlock_depth(s->rlock) != 1)
    return 11; /* the dead owner's depth 3 does not carry over */
  if (mproc_rlock_consistent(s->rlock) != 0 || mproc_rlock_release(s->rlock) != 0)
    return 12;
  return mproc_rlock_depth(s->rlock) == 0 ? 3 : 13;
}

START_TEST(test_rlock_killed_at_depth_3) {
  struct shared *s = shared_new();
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_rlock_new(&s->rlock));
  struct child holder = child_start(hold_rlock_depth3, s);
  wait_byte(p[0]);
  ck_assert_int_eq(s->depth, 3);
  struct child other = child_start(rlock_other, s);
  ck_assert_int_eq(child_wait(&other), 0);
  struct child waiter = child_start(rlock_waiter, s);
  wait_byte(p[0]);
  child_kill(&holder);
  ck_assert_int_eq(child_wait(&waiter), 3);
  /* Free again, for anyone. */
  mproc_assert_ok(mproc_rlock_acquire(s->rlock, 0));
  ck_assert_int_eq(mproc_rlock_depth(s->rlock), 1);
  mproc_assert_ok(mproc_rlock_release(s->rlock));
  mproc_assert_ok(mproc_rlock_free(s->rlock));
  close(p[0]);
  close(p[1]);
  shared_free(s);
}
END_TEST

START_TEST(test_rlock_not_recoverable) {
  struct shared *s = shared_new();
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_rlock_new(&s->rlock));
  struct child holder = child_start(hold_rlock_depth3, s);
  wait_byte(p[0]);
  child_kill(&holder);
  mproc_assert_err(mproc_rlock_acquire(s->rlock, 30000), MPROC_EOWNERDEAD);
  mproc_assert_ok(mproc_rlock_release(s->rlock));
  mproc_assert_err(mproc_rlock_acquire(s->rlock, 0), MPROC_ENOTRECOVERABLE);
  ck_assert_int_eq(mproc_rlock_depth(s->rlock), 0);
  mproc_assert_ok(mproc_rlock_free(s->rlock));
  close(p[0]);
  close(p[1]);
  shared_free(s);
}
END_TEST

START_TEST(test_lock_cycles) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps();
  _Alignas(64) static char store[MPROC_RLOCK_SIZE];
  for (int i = 0; i < 10000; i++) {
    mproc_lock *l;
    mproc_rlock *r;
    mproc_assert_ok(mproc_lock_new(&l));
    mproc_assert_ok(mproc_lock_acquire(l, 0));
    mproc_assert_ok(mproc_lock_release(l));
    mproc_assert_ok(mproc_lock_free(l));
    mproc_assert_ok(mproc_rlock_new(&r));
    mproc_assert_ok(mproc_rlock_acquire(r, 0));
    mproc_assert_ok(mproc_rlock_release(r));
    mproc_assert_ok(mproc_rlock_free(r));
    mproc_assert_ok(mproc_lock_init(&l, store, sizeof store));
    mproc_assert_ok(mproc_lock_destroy(l));
    mproc_assert_ok(mproc_rlock_init(&r, store, sizeof store));
    mproc_assert_ok(mproc_rlock_destroy(r));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

/* ---- a recycled tid is not the owner -------------------------------------- */

/* Takes both locks (the RLock three times) and dies holding them. */
static int hold_both_and_die(void *arg) {
  struct shared *s = arg;
  if (mproc_lock_acquire(s->lock, 0) != 0)
    return 1;
  for (int i = 0; i < 3; i++)
    if (mproc_rlock_acquire(s->rlock, 0) != 0)
      return 2;
  _exit(0);
}

/* The owner died; this process now has the tid the owner had (faked by
 * rewriting the recorded ids, as after a pid wrap or in another pid
 * namespace).  It must learn of the death, not be taken for the owner. */
START_TEST(test_recycled_tid_is_not_owner) {
  struct shared *s = shared_new();
  void *lmem, *rmem;
  mproc_assert_ok(mproc__map_anon_shared(MPROC_LOCK_SIZE, &lmem));
  mproc_assert_ok(mproc__map_anon_shared(MPROC_RLOCK_SIZE, &rmem));
  mproc_assert_ok(mproc_lock_init(&s->lock, lmem, MPROC_LOCK_SIZE));
  mproc_assert_ok(mproc_rlock_init(&s->rlock, rmem, MPROC_RLOCK_SIZE));
  start_after_own_tick();
  struct child c = child_start(hold_both_and_die, s);
  pid_t dead = c.pid;
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_int_ge(recycle_id(lmem, MPROC_LOCK_SIZE, dead, gettid()), 1);
  ck_assert_int_ge(recycle_id(rmem, MPROC_RLOCK_SIZE, dead, gettid()), 1);

  /* RLock: not ours at depth 3; acquiring reports the death, at depth 1. */
  ck_assert_int_eq(mproc_rlock_depth(s->rlock), 0);
  mproc_assert_err(mproc_rlock_release(s->rlock), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_rlock_consistent(s->rlock), MPROC_ESTATE);
  mproc_assert_err(mproc_rlock_acquire(s->rlock, 0), MPROC_EOWNERDEAD);
  ck_assert_int_eq(mproc_rlock_depth(s->rlock), 1);
  mproc_assert_ok(mproc_rlock_consistent(s->rlock));
  mproc_assert_ok(mproc_rlock_release(s->rlock));
  ck_assert_int_eq(mproc_rlock_depth(s->rlock), 0);

  /* Lock: not "already held by the caller" (MPROC_EBUSY), but owner-dead. */
  mproc_assert_err(mproc_lock_release(s->lock), MPROC_ENOTOWNER);
  mproc_assert_err(mproc_lock_consistent(s->lock), MPROC_ESTATE);
  mproc_assert_err(mproc_lock_acquire(s->lock, 0), MPROC_EOWNERDEAD);
  mproc_assert_ok(mproc_lock_consistent(s->lock));
  mproc_assert_ok(mproc_lock_release(s->lock));
  mproc_assert_ok(mproc_lock_acquire(s->lock, 0));
  mproc_assert_ok(mproc_lock_release(s->lock));

  mproc_assert_ok(mproc_lock_destroy(s->lock));
  mproc_assert_ok(mproc_rlock_destroy(s->rlock));
  munmap(lmem, MPROC_LOCK_SIZE);
  munmap(rmem, MPROC_RLOCK_SIZE);
  shared_free(s);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-lock");
  TCase *tc = mproc_test_tcase(s, "lock", 60);
  tcase_add_test(tc, test_lock_basics);
  tcase_add_test(tc, test_lock_errors);
  tcase_add_test(tc, test_lock_timeout_and_owner);
  tcase_add_test(tc, test_lock_mutual_exclusion);
  tcase_add_test(tc, test_lock_holder_killed);
  tcase_add_test(tc, test_lock_not_recoverable);
  tcase_add_test(tc, test_lock_owner_after_other_releases);
  tcase_add_test(tc, test_lock_owner_in_forked_child);
  tc = mproc_test_tcase(s, "rlock", 60);
  tcase_add_test(tc, test_rlock_recursion);
  tcase_add_test(tc, test_rlock_errors);
  tcase_add_test(tc, test_rlock_killed_at_depth_3);
  tcase_add_test(tc, test_rlock_not_recoverable);
  tcase_add_test(tc, test_recycled_tid_is_not_owner);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_lock_cycles);
  return mproc_test_run(s);
}
