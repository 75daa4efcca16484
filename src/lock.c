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
 * Lock uses the ERRORCHECK type (relock by the owner is MPROC_EBUSY instead of
 * a self-deadlock; release by a non-owner is MPROC_ENOTOWNER, where Python's
 * Lock would allow it: robustness needs an owner).  RLock uses the RECURSIVE
 * type and keeps its own depth beside it so that the depth can be reported
 * and restored by Condition.wait; glibc resets the mutex count to 1 when it
 * hands over an owner-died mutex, and we reset our depth likewise.
 *
 * Deadlines: pthread_mutex_clocklock on CLOCK_MONOTONIC, the clock of
 * mproc_now_ms(), so the absolute deadline is used as is.  glibc does not
 * spin on these mutex types: contended waiters sleep on the futex. */
#include "sync.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct mproc_lock {
  struct mproc__sync_hdr hdr;
  pthread_mutex_t m;
};

struct mproc_rlock {
  struct mproc__sync_hdr hdr;
  pthread_mutex_t m;
  /* Written only by the holder, under m.  owner is the kernel tid (unique
   * across processes) of the holding thread, 0 when free; depth is the
   * recursion depth. */
  _Atomic pid_t owner;
  int depth;
};

_Static_assert(sizeof(struct mproc_lock) <= MPROC_LOCK_SIZE, "MPROC_LOCK_SIZE too small");
_Static_assert(sizeof(struct mproc_rlock) <= MPROC_RLOCK_SIZE, "MPROC_RLOCK_SIZE too small");

/* ---- shared helpers ------------------------------------------------------ */

pid_t mproc__gettid(void) {
  /* Cached per thread; a forked child starts with the parent's cache, so it
   * is keyed by pid too. */
  static _Thread_local pid_t tid, pid;
  pid_t p = getpid();
  if (tid == 0 || pid != p) {
    tid = gettid();
    pid = p;
  }
  return tid;
}

int mproc__sync_check_storage(const void *storage, size_t size, size_t need, uint32_t magic) {
  if (storage == NULL || ((uintptr_t)storage & 7u) != 0 || size < need)
    return MPROC_EINVAL;
  /* Re-initialising a live object would corrupt every process using it. */
  if (mproc__sync_ok(storage, magic))
    return MPROC_EBUSY;
  return 0;
}

int mproc__sync_map(size_t size, void **out) { return mproc__map_anon_shared(size, out); }

void mproc__sync_unmap(void *p, size_t size) { munmap(p, size); }

int mproc__rmutex_init(pthread_mutex_t *m, bool recursive) {
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r != 0)
    return -r;
  r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (r == 0)
    r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (r == 0)
    r = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                : PTHREAD_MUTEX_ERRORCHECK);
  if (r == 0)
    r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return -r;
}

int mproc__rmutex_lock(pthread_mutex_t *m, int64_t deadline_ms) {
  int r;
  if (deadline_ms < 0) {
    r = pthread_mutex_lock(m);
  } else {
    r = pthread_mutex_trylock(m);
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

/* ---- Lock ------------------------------------------------------------------ */

static int lock_setup(void *storage, uint32_t flags, mproc_lock_t **out) {
  struct mproc_lock *l = storage;
  memset(l, 0, sizeof *l);
  int r = mproc__rmutex_init(&l->m, false);
  if (r != 0)
    return r;
  l->hdr.flags = flags;
  atomic_store_explicit(&l->hdr.magic, MPROC__MAGIC_LOCK, memory_order_release);
  *out = l;
  return 0;
}

MPROC_EXTERN int mproc_lock_init(void *storage, size_t size, mproc_lock_t **out) {
  if (out == NULL)
    return MPROC_EINVAL;
  int r = mproc__sync_check_storage(storage, size, MPROC_LOCK_SIZE, MPROC__MAGIC_LOCK);
  return r != 0 ? r : lock_setup(storage, 0, out);
}

MPROC_EXTERN int mproc_lock_new(mproc_lock_t **out) {
  if (out == NULL)
    return MPROC_EINVAL;
  void *p;
  int r = mproc__sync_map(MPROC_LOCK_SIZE, &p);
  if (r != 0)
    return r;
  r = lock_setup(p, MPROC__SYNC_ALLOCATED, out);
  if (r != 0)
    mproc__sync_unmap(p, MPROC_LOCK_SIZE);
  return r;
}

static int lock_teardown(mproc_lock_t *l, bool allocated) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK) ||
      ((l->hdr.flags & MPROC__SYNC_ALLOCATED) != 0) != allocated)
    return MPROC_EINVAL;
  /* A held lock may not be destroyed (its holder would be left with freed
   * memory); a lock left by a dead owner can be. */
  int r = pthread_mutex_trylock(&l->m);
  if (r == EBUSY || r == EDEADLK)
    return MPROC_EBUSY;
  if (r == 0 || r == EOWNERDEAD) {
    if (r == EOWNERDEAD)
      pthread_mutex_consistent(&l->m);
    pthread_mutex_unlock(&l->m);
  }
  atomic_store_explicit(&l->hdr.magic, 0, memory_order_release);
  pthread_mutex_destroy(&l->m);
  if (allocated)
    mproc__sync_unmap(l, MPROC_LOCK_SIZE);
  return 0;
}

MPROC_EXTERN int mproc_lock_destroy(mproc_lock_t *l) { return lock_teardown(l, false); }
MPROC_EXTERN int mproc_lock_free(mproc_lock_t *l) { return lock_teardown(l, true); }

MPROC_EXTERN int mproc_lock_acquire(mproc_lock_t *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  return mproc__rmutex_lock(&l->m, mproc__deadline(timeout_ms));
}

MPROC_EXTERN int mproc_lock_release(mproc_lock_t *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  return mproc__rmutex_unlock(&l->m);
}

MPROC_EXTERN int mproc_lock_consistent(mproc_lock_t *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_LOCK))
    return MPROC_EINVAL;
  /* EINVAL from glibc: not in the owner-died state, or not ours. */
  return pthread_mutex_consistent(&l->m) == 0 ? 0 : MPROC_ESTATE;
}

/* ---- RLock ------------------------------------------------------------------ */

static int rlock_setup(void *storage, uint32_t flags, mproc_rlock_t **out) {
  struct mproc_rlock *l = storage;
  memset(l, 0, sizeof *l);
  int r = mproc__rmutex_init(&l->m, true);
  if (r != 0)
    return r;
  l->hdr.flags = flags;
  atomic_store_explicit(&l->hdr.magic, MPROC__MAGIC_RLOCK, memory_order_release);
  *out = l;
  return 0;
}

MPROC_EXTERN int mproc_rlock_init(void *storage, size_t size, mproc_rlock_t **out) {
  if (out == NULL)
    return MPROC_EINVAL;
  int r = mproc__sync_check_storage(storage, size, MPROC_RLOCK_SIZE, MPROC__MAGIC_RLOCK);
  return r != 0 ? r : rlock_setup(storage, 0, out);
}

MPROC_EXTERN int mproc_rlock_new(mproc_rlock_t **out) {
  if (out == NULL)
    return MPROC_EINVAL;
  void *p;
  int r = mproc__sync_map(MPROC_RLOCK_SIZE, &p);
  if (r != 0)
    return r;
  r = rlock_setup(p, MPROC__SYNC_ALLOCATED, out);
  if (r != 0)
    mproc__sync_unmap(p, MPROC_RLOCK_SIZE);
  return r;
}

static int rlock_teardown(mproc_rlock_t *l, bool allocated) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK) ||
      ((l->hdr.flags & MPROC__SYNC_ALLOCATED) != 0) != allocated)
    return MPROC_EINVAL;
  if (atomic_load_explicit(&l->owner, memory_order_relaxed) == mproc__gettid())
    return MPROC_EBUSY; /* held by the caller itself */
  int r = pthread_mutex_trylock(&l->m);
  if (r == EBUSY)
    return MPROC_EBUSY;
  if (r == 0 || r == EOWNERDEAD) {
    if (r == EOWNERDEAD)
      pthread_mutex_consistent(&l->m);
    pthread_mutex_unlock(&l->m);
  }
  atomic_store_explicit(&l->hdr.magic, 0, memory_order_release);
  pthread_mutex_destroy(&l->m);
  if (allocated)
    mproc__sync_unmap(l, MPROC_RLOCK_SIZE);
  return 0;
}

MPROC_EXTERN int mproc_rlock_destroy(mproc_rlock_t *l) { return rlock_teardown(l, false); }
MPROC_EXTERN int mproc_rlock_free(mproc_rlock_t *l) { return rlock_teardown(l, true); }

/* After the mutex is ours (at any depth): record ownership.  A fresh
 * acquisition (previous holder released, or died) starts at depth 1. */
static int rlock_took(mproc_rlock_t *l, int r) {
  pid_t self = mproc__gettid();
  if (r == 0 && atomic_load_explicit(&l->owner, memory_order_relaxed) == self && l->depth > 0) {
    l->depth++;
    return 0;
  }
  if (r == 0 || r == MPROC_EOWNERDEAD) {
    atomic_store_explicit(&l->owner, self, memory_order_relaxed);
    l->depth = 1;
  }
  return r;
}

MPROC_EXTERN int mproc_rlock_acquire(mproc_rlock_t *l, int64_t timeout_ms) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  return rlock_took(l, mproc__rmutex_lock(&l->m, mproc__deadline(timeout_ms)));
}

MPROC_EXTERN int mproc_rlock_release(mproc_rlock_t *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  if (atomic_load_explicit(&l->owner, memory_order_relaxed) != mproc__gettid() || l->depth <= 0)
    return MPROC_ENOTOWNER;
  if (--l->depth == 0)
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
  return mproc__rmutex_unlock(&l->m);
}

MPROC_EXTERN int mproc_rlock_consistent(mproc_rlock_t *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return pthread_mutex_consistent(&l->m) == 0 ? 0 : MPROC_ESTATE;
}

MPROC_EXTERN int mproc_rlock_depth(const mproc_rlock_t *l) {
  if (!mproc__sync_ok(l, MPROC__MAGIC_RLOCK))
    return MPROC_EINVAL;
  return atomic_load_explicit(&l->owner, memory_order_relaxed) == mproc__gettid() ? l->depth : 0;
}

int mproc__rlock_release_all(mproc_rlock_t *l, int *depth) {
  if (atomic_load_explicit(&l->owner, memory_order_relaxed) != mproc__gettid() || l->depth <= 0)
    return MPROC_ENOTOWNER;
  int d = l->depth;
  l->depth = 0;
  atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
  for (int i = 0; i < d; i++)
    pthread_mutex_unlock(&l->m);
  *depth = d;
  return 0;
}

int mproc__rlock_reacquire(mproc_rlock_t *l, int depth, int64_t deadline_ms) {
  int r = rlock_took(l, mproc__rmutex_lock(&l->m, deadline_ms));
  if (r != 0 && r != MPROC_EOWNERDEAD)
    return r;
  /* Restore the caller's depth; the extra levels cannot fail (we own it). */
  for (int i = 1; i < depth; i++) {
    pthread_mutex_lock(&l->m);
    l->depth++;
  }
  return r;
}
