/* Semaphore and BoundedSemaphore: a futex counter.
 *
 * Design notes.  `value` is the count and the futex word.  acquire takes a
 * unit with a compare-exchange when value > 0; otherwise it registers in
 * `waiters` and sleeps while value == 0 (the shared sleep loop,
 * mproc__sync_sleep in sync_core.c).  release adds a unit (refusing above the
 * bound for a bounded semaphore, MPROC_EOVERRELEASE, and above
 * MPROC_SEM_VALUE_MAX for any other, MPROC_EOVERFLOW) and wakes one sleeper
 * if any registered.
 *
 *   value > 0: acquire --CAS value-1--> done
 *   value == 0: acquire --waiters+1--> sleep(value==0) --> re-check
 *   release: value+1 --waiters > 0?--> wake 1
 *
 * Deaths.  A process that dies holding units keeps them, as with Python (a
 * semaphore has no owner).  A waiter that dies while asleep leaves `waiters`
 * one too high: releases then make a needless wake syscall, nothing else.
 * The one window that could lose a wake-up is a waiter killed after the
 * kernel woke it for a release and before it took the unit: the unit stays
 * in `value` but the other sleepers were not woken.  Sleepers therefore
 * re-check every MPROC__SEM_RECHECK_MS, so in that case the unit reaches a
 * live waiter within that bound; no wake-up is ever lost for good.
 *
 * No spinning: a failed compare-exchange retries only because the value
 * changed, i.e. another process made progress. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <string.h>

#define MPROC__SEM_RECHECK_MS 100

struct mproc_sem {
  struct mproc__sync_hdr hdr;
  _Atomic uint32_t value;   /* units available; the futex word */
  _Atomic uint32_t waiters; /* processes registered as sleeping (upper bound) */
  uint32_t bound;           /* MPROC_SEM_BOUNDED: largest allowed value */
};

_Static_assert(sizeof(struct mproc_sem) <= MPROC_SEM_SIZE, "MPROC_SEM_SIZE too small");

#define SEM_FLAG_BOUNDED 2u

struct sem_args {
  unsigned value;
  const struct mproc_sem_options *opts;
};

static int sem_setup(void *obj, const void *arg) {
  const struct sem_args *a = arg;
  struct mproc_sem *s = obj;
  if (a->opts != NULL && (a->opts->flags & MPROC_SEM_BOUNDED)) {
    s->hdr.flags |= SEM_FLAG_BOUNDED;
    s->bound = a->value;
  }
  atomic_store_explicit(&s->value, a->value, memory_order_relaxed);
  return 0;
}

static const struct mproc__sync_kind sem_kind = {
    .magic = MPROC__MAGIC_SEM, .size = MPROC_SEM_SIZE, .setup = sem_setup};

static int check_args(unsigned value, const struct mproc_sem_options *opts) {
  if (value > MPROC_SEM_VALUE_MAX)
    return MPROC_EINVAL;
  if (opts != NULL && (opts->flags & ~MPROC_SEM_BOUNDED) != 0)
    return MPROC_EINVAL;
  return 0;
}

MPROC_EXTERN int mproc_sem_init(mproc_sem **out, void *storage, size_t size, unsigned value,
                                const struct mproc_sem_options *opts) {
  struct sem_args a = {value, opts};
  int r = check_args(value, opts);
  return r != 0 ? r : mproc__sync_init(&sem_kind, out, storage, size, MPROC_SEM_SIZE, &a);
}

MPROC_EXTERN int mproc_sem_new(mproc_sem **out, unsigned value,
                               const struct mproc_sem_options *opts) {
  struct sem_args a = {value, opts};
  int r = check_args(value, opts);
  return r != 0 ? r : mproc__sync_new(&sem_kind, out, MPROC_SEM_SIZE, &a);
}

/* mproc_sem_destroy, mproc_sem_free, mproc_sem_from_fd */
MPROC__SYNC_RELEASE(mproc_sem, sem_kind)

static bool try_take(mproc_sem *s) {
  uint32_t v = atomic_load_explicit(&s->value, memory_order_seq_cst);
  while (v > 0)
    if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1, memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  return false;
}

static bool take_one(void *obj) { return try_take(obj); }

MPROC_EXTERN int mproc_sem_acquire(mproc_sem *s, int64_t timeout_ms) {
  if (!mproc__sync_ok(s, MPROC__MAGIC_SEM) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (try_take(s))
    return 0;
  return mproc__sync_sleep(&s->value, &s->waiters, take_one, s, mproc__deadline(timeout_ms),
                           MPROC__SEM_RECHECK_MS);
}

MPROC_EXTERN int mproc_sem_release(mproc_sem *s) {
  if (!mproc__sync_ok(s, MPROC__MAGIC_SEM))
    return MPROC_EINVAL;
  uint32_t max = (s->hdr.flags & SEM_FLAG_BOUNDED) ? s->bound : MPROC_SEM_VALUE_MAX;
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  do {
    if (v >= max)
      return (s->hdr.flags & SEM_FLAG_BOUNDED) ? MPROC_EOVERRELEASE : MPROC_EOVERFLOW;
  } while (!atomic_compare_exchange_weak_explicit(&s->value, &v, v + 1, memory_order_seq_cst,
                                                  memory_order_relaxed));
  /* seq_cst on both sides (waiters+1 before the value check in acquire, value+1
   * before this load) guarantees a sleeper is either seen here or sees the
   * new value before it sleeps. */
  if (atomic_load_explicit(&s->waiters, memory_order_seq_cst) > 0)
    mproc__futex_wake(&s->value, 1, true);
  return 0;
}

MPROC_EXTERN int mproc_sem_value(const mproc_sem *s) {
  if (!mproc__sync_ok(s, MPROC__MAGIC_SEM))
    return MPROC_EINVAL;
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  /* Releases stop at the maximum: more was written over the count by hand,
   * and as an int it would read as an error code. */
  return v <= MPROC_SEM_VALUE_MAX ? (int)v : MPROC_ECORRUPT;
}
