/* Condition: a sequence-counter condition variable over a robust RLock.
 *
 * Design notes.  The condition embeds its RLock (Python's Condition() default)
 * so it holds no pointer.  `seq` is the futex word.
 *
 *   wait:    [lock held] s = seq; waiters++; release lock fully (remember the
 *            depth) -> sleep while seq == s (until the deadline) -> waiters--
 *            -> re-acquire at the same depth
 *   notify:  [lock held] if waiters > 0: seq += 1, and record n wake-ups on
 *            the lock
 *   release: [final release of the lock] unlock, then FUTEX_WAKE(seq, n)
 *
 * A waiter reads `s` while holding the lock and the notifier changes seq
 * while holding it, so a notify that follows the waiter's registration always
 * changes seq after the waiter's snapshot: the waiter either sees seq != s
 * before it sleeps or is on the futex queue when the wake comes.
 *
 * The converse is not exact: seq is one word for every waiter, so any
 * waiter whose snapshot predates a notify sees seq changed as soon as it
 * looks again -- one that had released the lock but was not yet asleep,
 * and every sleeper at the end of its MPROC__COND_RECHECK_MS slice.  So
 * notify(n) wakes n waiters at once and lets every other waiter of that
 * moment return within MPROC__COND_RECHECK_MS as if notified (spurious
 * wake-ups, which Condition allows: loop on a predicate or use wait_for).
 * Waking exactly n would need per-waiter tickets instead of one word.
 *
 * The wake-up is deferred to the notifier's final release of the lock (wait
 * releases it too) so that woken waiters find the lock free instead of
 * colliding with the notifier that still holds it: a round trip then costs
 * what a raw futex ping-pong costs.  Every release path of the lock makes
 * the deferred wake-ups, including mproc_rlock_release on mproc_cond_lock().
 *
 * Deaths, exactly:
 *  - waiter killed while asleep: it leaves the futex queue with its process;
 *    `waiters` stays one too high, which only costs later notifies a wake
 *    syscall.  notify(1) wakes a live waiter.
 *  - waiter killed after being woken, before re-acquiring the lock: it
 *    received that notification, exactly as if it had returned and then died.
 *  - notifier (or any lock holder) killed while holding the lock: the next
 *    acquirer finds the owner dead and takes the lock over (tidlock.c,
 *    within one slice), and a waiter re-acquiring it returns
 *    MPROC_EOWNERDEAD holding it.  Notifications already made stand:
 *    seq has changed, and since the dead notifier never made its deferred
 *    wake-up, sleepers re-check seq every MPROC__COND_RECHECK_MS and so
 *    return within that bound.  No notification is lost.
 *  - waiter killed while holding the lock (before or after wait): as for a
 *    notifier. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

#define MPROC__COND_RECHECK_MS 100

struct mproc_cond {
  struct mproc__sync_hdr hdr;
  _Atomic uint32_t seq;     /* bumped by every notify; the futex word */
  _Atomic uint32_t waiters; /* registered waiters (upper bound: dead ones stay) */
  char pad[48];
  /* The RLock, 8-aligned at offset 64. */
  _Alignas(8) char lock[MPROC_RLOCK_SIZE];
};

_Static_assert(sizeof(struct mproc_cond) <= MPROC_COND_SIZE, "MPROC_COND_SIZE too small");

static mproc_rlock *lock_of(mproc_cond *c) { return (mproc_rlock *)(void *)c->lock; }

static int cond_setup(void *obj, const void *arg) {
  (void)arg;
  struct mproc_cond *c = obj;
  mproc_rlock *l;
  int r = mproc_rlock_init(&l, c->lock, sizeof c->lock);
  if (r == 0)
    mproc__rlock_mark_cond(l, &c->seq);
  return r;
}

/* Refused while the lock is held (MPROC_EBUSY). */
static int cond_retire(void *obj) { return mproc_rlock_destroy(lock_of(obj)); }

/* Mapped from an fd, refused while the caller holds the lock. */
static int cond_detach(void *obj) { return mproc__rlock_detach(lock_of(obj)); }

static const struct mproc__sync_kind cond_kind = {.magic = MPROC__MAGIC_COND,
                                                  .size = MPROC_COND_SIZE,
                                                  .setup = cond_setup,
                                                  .retire = cond_retire,
                                                  .detach = cond_detach};

/* mproc_cond_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_cond, cond_kind, MPROC_COND_SIZE)

MPROC_EXTERN mproc_rlock *mproc_cond_lock(mproc_cond *c) {
  return mproc__sync_ok(c, MPROC__MAGIC_COND) ? lock_of(c) : NULL;
}

MPROC_EXTERN int mproc_cond_acquire(mproc_cond *c, int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND))
    return MPROC_EINVAL;
  return mproc_rlock_acquire(lock_of(c), timeout_ms);
}

MPROC_EXTERN int mproc_cond_release(mproc_cond *c) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND))
    return MPROC_EINVAL;
  return mproc_rlock_release(lock_of(c));
}

/* One wait against an absolute deadline; the lock is held on entry and on
 * every return except a failed re-acquisition (MPROC_ENOTRECOVERABLE). */
static int cond_wait_until(mproc_cond *c, int64_t deadline) {
  mproc_rlock *l = lock_of(c);
  uint32_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->waiters, 1, memory_order_relaxed);
  int depth;
  int r = mproc__rlock_release_all(l, &depth);
  if (r != 0) {
    atomic_fetch_sub_explicit(&c->waiters, 1, memory_order_relaxed);
    return r;
  }
  bool notified = false;
  for (;;) {
    if (atomic_load_explicit(&c->seq, memory_order_acquire) != s) {
      notified = true;
      break;
    }
    /* Sleep in slices: a notifier that dies between notify and its final
     * release never makes the deferred wake-up (see the design notes). */
    r = mproc__futex_wait_capped(&c->seq, s, deadline, MPROC__COND_RECHECK_MS, true);
    if (r != 0)
      break;
  }
  atomic_fetch_sub_explicit(&c->waiters, 1, memory_order_relaxed);
  int err = r;
  r = mproc__rlock_reacquire(l, depth, -1);
  if (r != 0)
    return r; /* MPROC_EOWNERDEAD (held) or MPROC_ENOTRECOVERABLE */
  if (notified)
    return 0;
  return err != 0 ? err : MPROC_ETIMEDOUT;
}

MPROC_EXTERN int mproc_cond_wait(mproc_cond *c, int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  return cond_wait_until(c, mproc__deadline(timeout_ms));
}

MPROC_EXTERN int mproc_cond_wait_for(mproc_cond *c, int (*pred)(void *arg), void *arg,
                                     int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || pred == NULL ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  int64_t deadline = mproc__deadline(timeout_ms);
  while (!pred(arg)) {
    if (deadline >= 0 && mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    int r = cond_wait_until(c, deadline);
    if (r != 0 && r != MPROC_ETIMEDOUT)
      return r;
  }
  return 0;
}

MPROC_EXTERN int mproc_cond_notify(mproc_cond *c, int n) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || n < 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  if (n == 0 || atomic_load_explicit(&c->waiters, memory_order_relaxed) == 0)
    return 0;
  /* The notification itself happens now (under the lock); the wake-up is
   * made by the final release of the lock. */
  atomic_fetch_add_explicit(&c->seq, 1, memory_order_release);
  mproc__rlock_defer_wake(lock_of(c), n);
  return 0;
}

MPROC_EXTERN int mproc_cond_notify_all(mproc_cond *c) { return mproc_cond_notify(c, INT_MAX); }
