/* Lock and RLock: owner-checked process-shared locks (tidlock.c), and the
 * robust pthread mutexes Barrier still uses.
 *
 * Design notes.  Both are a tidlock word naming the holding thread (its
 * kernel tid and start time): one compare-and-swap to acquire, a store and
 * a fence to release, nothing else on the uncontended path.  A robust
 * pthread mutex would have the kernel mark the word when the owner dies,
 * but costs about four plain mutexes per acquire and release (it links
 * itself into the thread's robust list each time); here a waiter judges the
 * owner itself, through /proc, after each sleep slice of tidlock.c and once
 * more at its deadline, and takes a dead owner's word over.  States of one
 * lock:
 *
 *   free --acquire--> held --release--> free
 *   held --owner dies--> owner-died --acquire: MPROC_EOWNERDEAD--> held*
 *   held* --consistent--> held --release--> free
 *   held* --release without consistent--> not-recoverable (every later
 *         acquire: MPROC_ENOTRECOVERABLE; destroy and re-init to reuse)
 *
 * The word is the owner record: there is no tid stored beside it that a
 * dead owner could leave behind.  A tid recycled after the owner's death
 * (pid wrap) has another start time, so the newcomer is neither taken for
 * the owner ("the caller holds it" compares the whole word) nor for alive
 * (the waiters' judgement compares the start time).  `state` (ok /
 * owner-died / not-recoverable) is written by the holder only.
 * Ownership checks: relock of a Lock by its owner is MPROC_EBUSY instead of
 * a self-deadlock, release by a non-owner is MPROC_ENOTOWNER (where Python's
 * Lock would allow it: robustness needs an owner).  A release of the lock
 * the thread took last knows it is the owner from a thread-local note
 * (tidlock.h, mproc__tidlock_held) instead of reading the word: on x86 that
 * read, right after the acquire's compare-and-swap, cost as much as the
 * swap itself; any other release reads the word.  A Lock also parks in
 * the one thread that uses it (sync.h, sync_lock_park.c): that thread then
 * goes in and out with plain stores, and everyone else revokes the parking
 * first, with the same outcomes as above (a parker that dies inside leaves
 * an owner-died lock, one that dies outside a free one).  RLock counts its depth
 * itself and holds the word once, so Condition.wait can release it fully
 * and take it back at the same depth; after an owner died the new owner
 * starts at depth 1.
 *
 * Deadlines are absolute mproc_now_ms() times, passed down as they are.  A
 * contended acquire spins a bounded number of rounds before it sleeps on
 * the futex. */
#include "futex.h"
#include "sync.h"
#include "tidlock.h"

#include <limits.h>
#include <signal.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Our side of the lock's life cycle: the word (tidlock.c) says who holds
 * it, `state` whether it is usable. */
enum { ST_OK = 0, ST_OWNER_DIED = 1, ST_NOTRECOVERABLE = 2 };

struct mproc_lock {
  struct mproc__sync_hdr hdr;
  mproc__tidlock m;            /* the owner word: holder's tid and start time */
  _Atomic uint32_t state;      /* ST_*, written by the holder */
  struct mproc__lockpark park; /* parking in one process (sync.h) */
};

struct mproc_rlock {
  struct mproc__sync_hdr hdr;
  mproc__tidlock m;       /* as for mproc_lock */
  _Atomic uint32_t state; /* ST_* */
  int depth;              /* recursion depth, written by the holder */
  /* For the RLock of a Condition (MPROC__RLOCK_IN_COND): wake-ups that
   * notify deferred until the lock is released, so that the woken waiters
   * find the lock free instead of colliding with the notifier (a mask: bit
   * i for the Condition's futex word i), and where the Condition's array of
   * futex words is, as an offset from this lock (same mapping, any
   * address). */
  _Atomic uint32_t wake_n;
  int32_t wake_off;
};

_Static_assert(sizeof(struct mproc_lock) <= MPROC_LOCK_SIZE, "MPROC_LOCK_SIZE too small");
_Static_assert(sizeof(struct mproc_rlock) <= MPROC_RLOCK_SIZE, "MPROC_RLOCK_SIZE too small");
_Static_assert(sizeof(struct mproc_rlock) <= MPROC__RLOCK_HOT_SIZE,
               "an RLock no longer leaves room for a small Value on its cache line");

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

/* ThreadSanitizer (clang 14) does not intercept pthread_mutex_clocklock:
 * a lock taken through it is unknown to the tool, and its unlock is reported
 * as an unlock of an unlocked mutex.  Sanitized builds take the intercepted
 * pthread_mutex_timedlock with the remaining time on CLOCK_REALTIME (a wall
 * clock jump there only moves a test's deadline); every other build keeps
 * the monotonic deadline. */
#if defined(__SANITIZE_THREAD__)
#define MPROC__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPROC__TSAN 1
#endif
#endif

static int timed_lock(pthread_mutex_t *m, int64_t deadline_ms) {
#ifdef MPROC__TSAN
  int64_t left = mproc_timeout_until(deadline_ms);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = (int64_t)ts.tv_nsec + (left % 1000) * 1000000;
  ts.tv_sec += (time_t)(left / 1000 + ns / 1000000000);
  ts.tv_nsec = (long)(ns % 1000000000);
  return pthread_mutex_timedlock(m, &ts);
#else
  struct timespec ts = {.tv_sec = deadline_ms / 1000,
                        .tv_nsec = (long)(deadline_ms % 1000) * 1000000};
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
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
      r = timed_lock(m, deadline_ms);
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

bool mproc__rmutex_mine(const pthread_mutex_t *m) {
  unsigned word = (unsigned)__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
  return (pid_t)(word & FUTEX_TID_MASK) == mproc__gettid();
}

/* The type word (glibc's __data.__kind) of a robust mutex made by
 * mproc__rmutex_init without recursion, as this process's libc writes it. */
static int plain_kind;
static pthread_once_t plain_kind_once = PTHREAD_ONCE_INIT;
static void plain_kind_init(void) {
  pthread_mutex_t m;
  if (mproc__rmutex_init(&m, false) == 0) {
    plain_kind = m.__data.__kind;
    pthread_mutex_destroy(&m);
  } else {
    plain_kind = -1;
  }
}

bool mproc__rmutex_plain_intact(const pthread_mutex_t *m) {
  pthread_once(&plain_kind_once, plain_kind_init);
  return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) == plain_kind;
}

bool mproc__rmutex_owner_gone(const pthread_mutex_t *m) {
  unsigned word = (unsigned)__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
  pid_t tid = (pid_t)(word & FUTEX_TID_MASK);
  if (word == 0)
    return false; /* free now: worth another try */
  /* A live owner has a tid that exists; the kernel clears a dead owner's
   * (OWNER_DIED), so a held word naming no thread was written by hand. */
  return tid == 0 || (kill(tid, 0) != 0 && errno == ESRCH);
}

/* ---- Lock ------------------------------------------------------------------ */

/* Common to Lock and RLock: a held lock may not be destroyed (its holder
 * would be left with freed memory); one left by a dead owner can be. */
static int lock_retire_word(void *obj, mproc__tidlock *m) {
  int r = mproc__tidlock_trylock(m);
  if (r == MPROC_EBUSY)
    return MPROC_EBUSY;
  mproc__sync_clear(obj); /* before the word is freed */
  mproc__tidlock_unlock(m);
  return 0;
}

/* Whether the calling thread holds the Lock, normally or parked. */
static bool lock_mine(const struct mproc_lock *l) {
  uint64_t w = atomic_load_explicit(&l->m.word, memory_order_relaxed);
  return mproc__tidlock_held == &l->m || w == mproc__tidlock_who() ||
         mproc__lockpark_held(&l->park, w, mproc__tidlock_who());
}

/* A parked Lock is first taken from its parker, without waiting: a parker
 * outside holds nothing, one inside holds the lock. */
static int lock_retire(void *obj) {
  struct mproc_lock *l = obj;
  for (;;) {
    if (!(atomic_load(&l->m.word) & MPROC__TIDLOCK_PARK))
      return lock_retire_word(obj, &l->m);
    int r = mproc__lockpark_revoke(&l->m, &l->park, mproc_now_ms());
    if (r == 0 || r == MPROC_EOWNERDEAD) {
      mproc__tidlock_held = NULL;
      mproc__sync_clear(obj); /* before the word is freed */
      mproc__tidlock_unlock(&l->m);
      return 0;
    }
    if (r != 1)
      return MPROC_EBUSY;
  }
}

/* A process that mapped the lock from an fd may not unmap it while it
 * holds it; a parking of its own is given up first. */
static int lock_detach(void *obj) {
  struct mproc_lock *l = obj;
  if (lock_mine(l))
    return MPROC_EBUSY;
  mproc__lockpark_unpark_mine(&l->m, &l->park);
  return 0;
}

static const struct mproc__sync_kind lock_kind = {.magic = MPROC__MAGIC_LOCK,
                                                  .size = MPROC_LOCK_SIZE,
                                                  .retire = lock_retire,
                                                  .detach = lock_detach};

/* mproc_lock_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_lock, lock_kind, MPROC_LOCK_SIZE)

/* Common to Lock and RLock: what an acquire that got the word r (0 or
 * MPROC_EOWNERDEAD) makes of our state.  A lock made unrecoverable while
 * we waited for it is given back. */
__attribute__((noinline)) static int took(mproc__tidlock *m, _Atomic uint32_t *state, int r) {
  if (r == MPROC_EOWNERDEAD)
    atomic_store_explicit(state, ST_OWNER_DIED, memory_order_relaxed);
  if (atomic_load_explicit(state, memory_order_relaxed) == ST_NOTRECOVERABLE) {
    mproc__tidlock_unlock(m);
    return MPROC_ENOTRECOVERABLE;
  }
  mproc__tidlock_held = m;
  return r;
}

/* The uncontended acquire, inline: one compare-and-swap from the free
 * word, and the state check.  Returns 0 or MPROC_ENOTRECOVERABLE, or 1
 * when the word was not free (nothing done: the caller's slow path). */
static inline int take_free(mproc__tidlock *m, _Atomic uint32_t *state) {
  uint64_t free_word = 0;
  if (MPROC__UNLIKELY(!atomic_compare_exchange_strong_explicit(
          &m->word, &free_word, mproc__tidlock_who(), memory_order_acquire, memory_order_relaxed)))
    return 1;
  /* A word left free in the owner-died state still reports it through the
   * acquire that took it over, not through this one. */
  if (MPROC__UNLIKELY(atomic_load_explicit(state, memory_order_relaxed) == ST_NOTRECOVERABLE))
    return took(m, state, 0);
  mproc__tidlock_held = m;
  return 0;
}

/* Common to Lock and RLock: acquires m (contended or not) and applies our
 * state. */
static int take(mproc__tidlock *m, _Atomic uint32_t *state, int64_t deadline_ms) {
  int r = mproc__tidlock_lock(m, deadline_ms);
  return r == 0 || r == MPROC_EOWNERDEAD ? took(m, state, r) : r;
}

/* Release by the owner; an owner-died state not marked consistent becomes
 * not-recoverable. */
static inline int give(mproc__tidlock *m, _Atomic uint32_t *state) {
  if (MPROC__UNLIKELY(atomic_load_explicit(state, memory_order_relaxed) == ST_OWNER_DIED))
    atomic_store_explicit(state, ST_NOTRECOVERABLE, memory_order_relaxed);
  /* Whatever the hint names: the same lock may be mapped at two addresses
   * in this process, and a release through one must not leave a hint that
   * still calls the other ours. */
  mproc__tidlock_held = NULL;
  mproc__tidlock_unlock(m);
  return 0;
}

static int mark_consistent(mproc__tidlock *m, _Atomic uint32_t *state) {
  if (!mproc__tidlock_mine_hinted(m) ||
      atomic_load_explicit(state, memory_order_relaxed) != ST_OWNER_DIED)
    return MPROC_ESTATE;
  atomic_store_explicit(state, ST_OK, memory_order_relaxed);
  return 0;
}

/* Absolute deadline of a checked timeout, with no call for "forever". */
static inline int64_t deadline_of(int64_t timeout_ms) {
  return timeout_ms < 0 ? -1 : mproc__deadline(timeout_ms);
}

/* The acquire of a Lock found held; out of line, so that the uncontended
 * path saves no registers for it. */
__attribute__((noinline)) static int lock_acquire_held(mproc_lock *l, int64_t timeout_ms) {
  if (atomic_load_explicit(&l->state, memory_order_relaxed) == ST_NOTRECOVERABLE)
    return MPROC_ENOTRECOVERABLE;
  if (lock_mine(l))
    return MPROC_EBUSY; /* not recursive: this would deadlock */
  int64_t deadline = deadline_of(timeout_ms);
  for (;;) {
    int r = mproc__tidlock_lock(&l->m, deadline);
    if (r == MPROC__TIDLOCK_PARKED) {
      r = mproc__lockpark_revoke(&l->m, &l->park, deadline);
      if (r == 1)
        continue; /* the word changed meanwhile: from the start */
    }
    return r == 0 || r == MPROC_EOWNERDEAD ? took(&l->m, &l->state, r) : r;
  }
}

/* Leaves a parked critical section: busy back to 0, the light fence, and
 * a revoker that showed up meanwhile is woken and given the lock. */
static inline void park_leave(mproc_lock *l) {
  atomic_store_explicit(&l->park.busy, 0, memory_order_release);
  mproc__fence_light();
  if (MPROC__UNLIKELY(atomic_load_explicit(&l->park.revoke, memory_order_relaxed) != 0))
    mproc__lockpark_yield(&l->m, &l->park);
}

/* Enters a critical section through the calling thread's parking of the
 * word w (sync.h): false when it is not ours, held already, or revoked. */
static inline bool park_enter(mproc_lock *l, uint64_t w) {
  uint64_t me = mproc__tidlock_me;
  if (me == 0 || w != (me | MPROC__TIDLOCK_PARK) ||
      atomic_load_explicit(&l->park.busy, memory_order_relaxed) != 0)
    return false;
  atomic_store_explicit(&l->park.busy, 1, memory_order_relaxed);
  mproc__fence_light();
  /* The word again after `revoke`: a revoker that took it over has
   * uncounted itself already. */
  if (MPROC__LIKELY(atomic_load_explicit(&l->park.revoke, memory_order_acquire) == 0 &&
                    atomic_load_explicit(&l->m.word, memory_order_relaxed) == w))
    return true;
  park_leave(l); /* backs off; the slow path takes it the normal way */
  return false;
}

MPROC_EXTERN int mproc_lock_acquire(mproc_lock *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK) || timeout_ms < -1)
    return MPROC_EINVAL;
  /* A look at the word first (not after the compare-and-swap, where it
   * would cost as much, tidlock.h): free, take it; parked by us, enter. */
  uint64_t w = atomic_load_explicit(&l->m.word, memory_order_relaxed);
  if (MPROC__LIKELY(w == 0)) {
    int r = take_free(&l->m, &l->state);
    if (MPROC__LIKELY(r != 1))
      return r;
  } else if (MPROC__LIKELY(park_enter(l, w))) {
    return 0;
  }
  return lock_acquire_held(l, timeout_ms);
}

/* A normal release by the owner: parks the lock when this thread may. */
static int lock_give(mproc_lock *l) {
  if (MPROC__UNLIKELY(atomic_load_explicit(&l->state, memory_order_relaxed) != ST_OK))
    return give(&l->m, &l->state);
  mproc__lockpark_release(&l->m, &l->park);
  return 0;
}

MPROC_EXTERN int mproc_lock_release(mproc_lock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  if (MPROC__LIKELY(mproc__tidlock_held == &l->m))
    return lock_give(l);
  uint64_t w = atomic_load_explicit(&l->m.word, memory_order_relaxed);
  uint64_t me = mproc__tidlock_me;
  if (me != 0 && w == (me | MPROC__TIDLOCK_PARK)) {
    if (atomic_load_explicit(&l->park.busy, memory_order_relaxed) == 0)
      return MPROC_ENOTOWNER; /* parked here, but not held */
    park_leave(l);
    return 0;
  }
  if (!mproc__tidlock_mine(&l->m))
    return MPROC_ENOTOWNER;
  return lock_give(l);
}

MPROC_EXTERN int mproc_lock_consistent(mproc_lock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  return mark_consistent(&l->m, &l->state);
}

bool mproc__lock_parked(const mproc_lock *l, uint32_t *revokers) {
  *revokers = atomic_load(&l->park.revoke);
  return (atomic_load(&l->m.word) & MPROC__TIDLOCK_PARK) != 0;
}

/* ---- RLock ------------------------------------------------------------------ */

static int rlock_retire(void *obj) {
  return lock_retire_word(obj, &((struct mproc_rlock *)obj)->m);
}

int mproc__rlock_detach(void *obj) {
  return mproc__tidlock_mine(&((struct mproc_rlock *)obj)->m) ? MPROC_EBUSY : 0;
}

static const struct mproc__sync_kind rlock_kind = {.magic = MPROC__MAGIC_RLOCK,
                                                   .size = MPROC_RLOCK_SIZE,
                                                   .retire = rlock_retire,
                                                   .detach = mproc__rlock_detach};

/* mproc_rlock_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_rlock, rlock_kind, MPROC_RLOCK_SIZE)

MPROC_EXTERN int mproc_rlock_acquire(mproc_rlock *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK) || timeout_ms < -1)
    return MPROC_EINVAL;
  /* Free: ours now at depth 1, with no owner check (a free word is not
   * ours).  Else ours already, or someone else's. */
  int r = take_free(&l->m, &l->state);
  if (MPROC__LIKELY(r != 1)) {
    if (r == 0)
      l->depth = 1;
    return r;
  }
  if (mproc__tidlock_mine_hinted(&l->m) && l->depth > 0) {
    l->depth++;
    return 0;
  }
  return mproc__rlock_reacquire(l, 1, deadline_of(timeout_ms));
}

/* Final release of an RLock, then the wake-ups a Condition deferred: bit i
 * of the mask wakes every sleeper on word i of the Condition's array. */
static int rlock_give(mproc_rlock *l) {
  uint32_t mask = 0;
  if (l->hdr.flags & MPROC__RLOCK_IN_COND)
    mask = atomic_exchange_explicit(&l->wake_n, 0, memory_order_relaxed);
  int r = give(&l->m, &l->state);
  _Atomic uint32_t *words = (_Atomic uint32_t *)(void *)((char *)l + l->wake_off);
  for (; mask != 0; mask &= mask - 1)
    mproc__futex_wake(&words[__builtin_ctz(mask)], INT_MAX, true);
  return r;
}

void mproc__rlock_defer_wake(mproc_rlock *l, uint32_t mask) {
  uint32_t cur = atomic_load_explicit(&l->wake_n, memory_order_relaxed);
  atomic_store_explicit(&l->wake_n, cur | mask, memory_order_relaxed); /* holder only */
}

void mproc__rlock_mark_cond(mproc_rlock *l, _Atomic uint32_t *words) {
  l->wake_off = (int32_t)((char *)words - (char *)l);
  l->hdr.flags |= MPROC__RLOCK_IN_COND;
}

MPROC_EXTERN int mproc_rlock_release(mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  if (!mproc__tidlock_mine_hinted(&l->m) || l->depth <= 0)
    return MPROC_ENOTOWNER;
  if (--l->depth > 0)
    return 0;
  return rlock_give(l);
}

MPROC_EXTERN int mproc_rlock_consistent(mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return mark_consistent(&l->m, &l->state);
}

MPROC_EXTERN int mproc_rlock_depth(const mproc_rlock *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return mproc__tidlock_mine_hinted(&l->m) ? l->depth : 0;
}

/* The word is only ever held once by us (depth is ours), so a full release
 * is one unlock. */
int mproc__rlock_release_all(mproc_rlock *l, int *depth) {
  if (!mproc__tidlock_mine_hinted(&l->m) || l->depth <= 0)
    return MPROC_ENOTOWNER;
  *depth = l->depth;
  l->depth = 0;
  return rlock_give(l);
}

int mproc__rlock_reacquire(mproc_rlock *l, int depth, int64_t deadline_ms) {
  if (atomic_load_explicit(&l->state, memory_order_relaxed) == ST_NOTRECOVERABLE)
    return MPROC_ENOTRECOVERABLE;
  int r = take(&l->m, &l->state, deadline_ms);
  if (r == 0 || r == MPROC_EOWNERDEAD)
    l->depth = depth; /* the caller's depth; a dead owner's does not carry over */
  return r;
}
