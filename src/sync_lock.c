/* Lock and RLock: robust, process-shared mutexes.
 *
 * Design notes.  Both are glibc PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST
 * mutexes.  A robust mutex is on its owner thread's kernel robust list; when
 * that thread or its process dies, the kernel marks the futex word
 * OWNER_DIED and wakes one waiter at once, so the next acquirer learns of the
 * death promptly (not at its deadline).  States of one lock:
 *
 *   free --acquire--> held --release--> free
 *   held --owner dies--> owner-died --acquire: MPROC_EOWNERDEAD--> held*
 *   held* --consistent--> held --release--> free
 *   held* --release without consistent--> not-recoverable (every later
 *         acquire: MPROC_ENOTRECOVERABLE; destroy and re-init to reuse)
 *
 * Beside the mutex each lock records its owner (kernel tid) and its state
 * (ok / owner-died / not-recoverable).  A tid is unique only while its
 * thread lives: after the owner died, another process may get the same
 * number (pid wrap, or a process in another pid namespace), and a check of
 * the recorded owner alone would take the newcomer for the owner (RLock
 * "re-acquiring" while another process gets MPROC_EOWNERDEAD: two holders).
 * So "the caller holds it" (held_by_me) also requires the mutex's futex
 * word to carry the caller's tid: the kernel clears that tid (and sets
 * OWNER_DIED) when the owner dies, so a dead owner's number never matches.
 * Ownership checks:
 * relock of a Lock by its owner is MPROC_EBUSY instead of a self-deadlock,
 * release by a non-owner is MPROC_ENOTOWNER (where Python's Lock would allow
 * it: robustness needs an owner).  RLock counts its depth itself and holds
 * the glibc mutex once, so Condition.wait can release it fully and take it
 * back at the same depth; after an owner died the new owner starts at
 * depth 1.
 *
 * Deadlines: pthread_mutex_clocklock on CLOCK_MONOTONIC, the clock of
 * mproc_now_ms(), so the absolute deadline is used as is.  A contended
 * acquire spins a bounded number of rounds (MPROC__SPIN_LIMIT) before it
 * sleeps on the futex. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Our side of a robust mutex.  glibc's own not-recoverable handling is not
 * relied upon: after pthread_mutex_trylock reports ENOTRECOVERABLE, glibc
 * 2.36 can leave the futex word owned by the caller, so later calls would
 * see EDEADLK (errorcheck) or silently recurse (recursive).  `state` makes
 * the lifecycle explicit and is checked before glibc is asked at all. */
enum { ST_OK = 0, ST_OWNER_DIED = 1, ST_NOTRECOVERABLE = 2 };

struct mproc_lock {
  struct mproc__sync_hdr hdr;
  pthread_mutex_t m;
  /* Written only by the holder, under m: the holding thread's kernel tid
   * (unique across processes while it lives), 0 when free. */
  _Atomic pid_t owner;
  _Atomic uint32_t state; /* ST_* */
};

struct mproc_rlock {
  struct mproc__sync_hdr hdr;
  pthread_mutex_t m;
  _Atomic pid_t owner;    /* as for mproc_lock */
  _Atomic uint32_t state; /* ST_* */
  int depth;              /* recursion depth, written by the holder */
  /* For the RLock of a Condition (MPROC__RLOCK_IN_COND): wake-ups that
   * notify deferred until the lock is released, so that the woken waiters
   * find the lock free instead of colliding with the notifier, and where the
   * Condition's futex word is, as an offset from this lock (same mapping,
   * any address). */
  _Atomic uint32_t wake_n;
  int32_t wake_off;
};

_Static_assert(MPROC__ANY_ABI_SIZE(struct mproc_lock, 1) <= MPROC_LOCK_SIZE,
               "MPROC_LOCK_SIZE too small");
_Static_assert(MPROC__ANY_ABI_SIZE(struct mproc_rlock, 1) <= MPROC_RLOCK_SIZE,
               "MPROC_RLOCK_SIZE too small");

/* ---- robust mutexes --------------------------------------------------------- */

int mproc__rmutex_init(pthread_mutex_t *m, bool recursive) {
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r != 0)
    return -r;
  r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (r == 0)
    r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (r == 0)
    r = pthread_mutexattr_settype(&a,
                                  recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
  if (r == 0)
    r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return -r;
}

/* Bounded spinning before sleeping.  A holder on another CPU usually
 * releases within a few hundred cycles; catching the lock then avoids both
 * the sleep and, more importantly, the FUTEX_WAITERS bit that would make
 * every later unlock a futex_wake system call.  The spin only reads the lock
 * word (glibc's public __data.__lock field) and gives up after
 * MPROC__SPIN_LIMIT rounds: with more processes than CPUs the holder may not
 * be running at all, and then sleeping is the only right thing. */
#define MPROC__SPIN_LIMIT 200

static int spin_trylock(pthread_mutex_t *m) {
  int r = pthread_mutex_trylock(m);
  for (int i = 0; r == EBUSY && i < MPROC__SPIN_LIMIT; i++) {
    mproc__cpu_relax();
    if (__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) == 0)
      r = pthread_mutex_trylock(m);
  }
  return r;
}

int mproc__rmutex_lock(pthread_mutex_t *m, int64_t deadline_ms) {
  int r;
  if (deadline_ms < 0) {
    r = spin_trylock(m);
    if (r == EBUSY)
      r = pthread_mutex_lock(m);
  } else {
    r = mproc_timeout_until(deadline_ms) > 0 ? spin_trylock(m) : pthread_mutex_trylock(m);
    if (r == EBUSY && mproc_timeout_until(deadline_ms) > 0) {
      struct timespec ts = {.tv_sec = deadline_ms / 1000,
                            .tv_nsec = (long)(deadline_ms % 1000) * 1000000};
      r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    } else if (r == EBUSY) {
      r = ETIMEDOUT;
    }
  }
  switch (r) {
  case 0:
    return 0;
  case ETIMEDOUT:
    return MPROC_ETIMEDOUT;
  case EOWNERDEAD:
    return MPROC_EOWNERDEAD;
  case ENOTRECOVERABLE:
    return MPROC_ENOTRECOVERABLE;
  case EDEADLK:
    return MPROC_EBUSY;
  case EBUSY: /* trylock on an errorcheck mutex the caller holds */
    return MPROC_EBUSY;
  default:
    return -r;
  }
}

int mproc__rmutex_unlock(pthread_mutex_t *m) {
  int r = pthread_mutex_unlock(m);
  return r == 0 ? 0 : r == EPERM ? MPROC_ENOTOWNER : -r;
}

/* Whether the calling thread holds m, whose recorded owner is *owner: the
 * recorded tid is the caller's and the kernel still sees the caller as the
 * futex word's owner (see the design notes: a recycled tid of a dead owner
 * fails the second test).  The futex word is glibc's public __data.__lock. */
static bool held_by_me(const pthread_mutex_t *m, const _Atomic pid_t *owner) {
  return atomic_load_explicit(owner, memory_order_relaxed) == mproc__gettid() &&
         mproc__rmutex_mine(m);
}

bool mproc__rmutex_mine(const pthread_mutex_t *m) {
  unsigned word = (unsigned)__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
  return (pid_t)(word & FUTEX_TID_MASK) == mproc__gettid();
}

/* ---- Lock ------------------------------------------------------------------ */

static int lock_setup(void *obj, const void *arg) {
  (void)arg;
  return mproc__rmutex_init(&((struct mproc_lock *)obj)->m, false);
}

/* Common to Lock and RLock: a held mutex may not be destroyed (its holder
 * would be left with freed memory); one left by a dead owner can be. */
static int mutex_retire(void *obj, pthread_mutex_t *m) {
  int r = pthread_mutex_trylock(m);
  if (r == EBUSY || r == EDEADLK)
    return MPROC_EBUSY;
  if (r == 0 || r == EOWNERDEAD) {
    if (r == EOWNERDEAD)
      pthread_mutex_consistent(m);
    pthread_mutex_unlock(m);
  }
  mproc__sync_clear(obj); /* before the mutex goes */
  pthread_mutex_destroy(m);
  return 0;
}

static int lock_retire(void *obj) { return mutex_retire(obj, &((struct mproc_lock *)obj)->m); }

/* A process that mapped the lock from an fd may not unmap it while it
 * holds it: the mutex is on the holding thread's robust list. */
static int lock_detach(void *obj) {
  struct mproc_lock *l = obj;
  return held_by_me(&l->m, &l->owner) ? MPROC_EBUSY : 0;
}

static const struct mproc__sync_kind lock_kind = {.magic = MPROC__MAGIC_LOCK,
                                                  .size = MPROC_LOCK_SIZE,
                                                  .setup = lock_setup,
                                                  .retire = lock_retire,
                                                  .detach = lock_detach};

/* mproc_lock_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_lock, lock_kind, MPROC_LOCK_SIZE)

/* Common to Lock and RLock: the result of locking m, with our state. */
static int took(pthread_mutex_t *m, _Atomic pid_t *owner, _Atomic uint32_t *state, int r) {
  if (r == MPROC_EOWNERDEAD) {
    atomic_store_explicit(state, ST_OWNER_DIED, memory_order_relaxed);
  } else if (r == MPROC_ENOTRECOVERABLE) {
    atomic_store_explicit(state, ST_NOTRECOVERABLE, memory_order_relaxed);
    return r;
  } else if (r != 0) {
    return r;
  }
  if (atomic_load_explicit(state, memory_order_relaxed) == ST_NOTRECOVERABLE) {
    /* Made unrecoverable while we were being handed the mutex. */
    pthread_mutex_unlock(m);
    return MPROC_ENOTRECOVERABLE;
  }
  atomic_store_explicit(owner, mproc__gettid(), memory_order_relaxed);
  return r;
}

/* Release by the owner; an owner-died state not marked consistent becomes
 * not-recoverable (glibc does the same to the mutex and wakes its waiters). */
static int give(pthread_mutex_t *m, _Atomic pid_t *owner, _Atomic uint32_t *state) {
  if (atomic_load_explicit(state, memory_order_relaxed) == ST_OWNER_DIED)
    atomic_store_explicit(state, ST_NOTRECOVERABLE, memory_order_relaxed);
  atomic_store_explicit(owner, 0, memory_order_relaxed);
  return mproc__rmutex_unlock(m);
}

static int mark_consistent(pthread_mutex_t *m, _Atomic pid_t *owner, _Atomic uint32_t *state) {
  if (!held_by_me(m, owner) || atomic_load_explicit(state, memory_order_relaxed) != ST_OWNER_DIED)
    return MPROC_ESTATE;
  if (pthread_mutex_consistent(m) != 0)
    return MPROC_ESTATE;
  atomic_store_explicit(state, ST_OK, memory_order_relaxed);
  return 0;
}

MPROC_EXTERN int mproc_lock_acquire(mproc_lock *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (atomic_load_explicit(&l->state, memory_order_relaxed) == ST_NOTRECOVERABLE)
    return MPROC_ENOTRECOVERABLE;
  if (held_by_me(&l->m, &l->owner))
    return MPROC_EBUSY; /* not recursive: this would deadlock */
  return took(&l->m, &l->owner, &l->state, mproc__rmutex_lock(&l->m, mproc__deadline(timeout_ms)));
}

MPROC_EXTERN int mproc_lock_release(mproc_lock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  if (!held_by_me(&l->m, &l->owner))
    return MPROC_ENOTOWNER;
  return give(&l->m, &l->owner, &l->state);
}

MPROC_EXTERN int mproc_lock_consistent(mproc_lock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  return mark_consistent(&l->m, &l->owner, &l->state);
}

/* ---- RLock ------------------------------------------------------------------ */

static int rlock_setup(void *obj, const void *arg) {
  (void)arg;
  return mproc__rmutex_init(&((struct mproc_rlock *)obj)->m, true);
}

static int rlock_retire(void *obj) {
  struct mproc_rlock *l = obj;
  if (held_by_me(&l->m, &l->owner))
    return MPROC_EBUSY; /* held by the caller itself: a recursive trylock would succeed */
  return mutex_retire(obj, &l->m);
}

int mproc__rlock_detach(void *obj) {
  struct mproc_rlock *l = obj;
  return held_by_me(&l->m, &l->owner) ? MPROC_EBUSY : 0;
}

static const struct mproc__sync_kind rlock_kind = {.magic = MPROC__MAGIC_RLOCK,
                                                   .size = MPROC_RLOCK_SIZE,
                                                   .setup = rlock_setup,
                                                   .retire = rlock_retire,
                                                   .detach = mproc__rlock_detach};

/* mproc_rlock_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_rlock, rlock_kind, MPROC_RLOCK_SIZE)

MPROC_EXTERN int mproc_rlock_acquire(mproc_rlock *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (held_by_me(&l->m, &l->owner) && l->depth > 0) {
    l->depth++; /* ours already: no need to ask glibc */
    return 0;
  }
  return mproc__rlock_reacquire(l, 1, mproc__deadline(timeout_ms));
}

/* Final release of an RLock, then the wake-ups a Condition deferred. */
static int rlock_give(mproc_rlock *l) {
  uint32_t n = 0;
  if (l->hdr.flags & MPROC__RLOCK_IN_COND)
    n = atomic_exchange_explicit(&l->wake_n, 0, memory_order_relaxed);
  int r = give(&l->m, &l->owner, &l->state);
  if (n > 0)
    mproc__futex_wake((_Atomic uint32_t *)(void *)((char *)l + l->wake_off),
                      n > INT_MAX ? INT_MAX : (int)n, true);
  return r;
}

void mproc__rlock_defer_wake(mproc_rlock *l, int n) {
  uint32_t cur = atomic_load_explicit(&l->wake_n, memory_order_relaxed);
  uint32_t want = (uint64_t)cur + (uint64_t)n > INT_MAX ? INT_MAX : cur + (uint32_t)n;
  atomic_store_explicit(&l->wake_n, want, memory_order_relaxed); /* holder only */
}

void mproc__rlock_mark_cond(mproc_rlock *l, _Atomic uint32_t *seq) {
  l->wake_off = (int32_t)((char *)seq - (char *)l);
  l->hdr.flags |= MPROC__RLOCK_IN_COND;
}

MPROC_EXTERN int mproc_rlock_release(mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  if (!held_by_me(&l->m, &l->owner) || l->depth <= 0)
    return MPROC_ENOTOWNER;
  if (--l->depth > 0)
    return 0;
  return rlock_give(l);
}

MPROC_EXTERN int mproc_rlock_consistent(mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return mark_consistent(&l->m, &l->owner, &l->state);
}

MPROC_EXTERN int mproc_rlock_depth(const mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return held_by_me(&l->m, &l->owner) ? l->depth : 0;
}

/* The glibc mutex is only ever held once by us (depth is ours), so a full
 * release is one unlock. */
int mproc__rlock_release_all(mproc_rlock *l, int *depth) {
  if (!held_by_me(&l->m, &l->owner) || l->depth <= 0)
    return MPROC_ENOTOWNER;
  *depth = l->depth;
  l->depth = 0;
  return rlock_give(l);
}

int mproc__rlock_reacquire(mproc_rlock *l, int depth, int64_t deadline_ms) {
  if (atomic_load_explicit(&l->state, memory_order_relaxed) == ST_NOTRECOVERABLE)
    return MPROC_ENOTRECOVERABLE;
  int r = took(&l->m, &l->owner, &l->state, mproc__rmutex_lock(&l->m, deadline_ms));
  if (r == 0 || r == MPROC_EOWNERDEAD)
    l->depth = depth; /* the caller's depth; a dead owner's does not carry over */
  return r;
}
