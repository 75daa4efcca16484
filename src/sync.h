/* Internal helpers shared by the process-shared synchronization primitives
 * (lock.c, semaphore.c, event.c, condition.c, barrier.c) and value.c. */
#ifndef MPROC_SYNC_INTERNAL_H
#define MPROC_SYNC_INTERNAL_H

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

/* Every primitive starts with this header.  `magic` identifies the kind (a
 * stale or foreign pointer fails the check with MPROC_EINVAL instead of being
 * used); `flags` records who allocated the storage, so that destroy/free are
 * each only accepted for their own kind of object. */
struct mproc__sync_hdr {
  _Atomic uint32_t magic;
  uint32_t flags;
};

#define MPROC__SYNC_ALLOCATED 1u    /* storage is a library mapping (_new/_free) */
#define MPROC__RLOCK_IN_COND 0x100u /* an RLock embedded in a Condition */

#define MPROC__MAGIC_LOCK 0x4b434f4cu    /* "LOCK" */
#define MPROC__MAGIC_RLOCK 0x4b434c52u   /* "RLCK" */
#define MPROC__MAGIC_SEM 0x204d4553u     /* "SEM " */
#define MPROC__MAGIC_EVENT 0x544e5645u   /* "EVNT" */
#define MPROC__MAGIC_COND 0x444e4f43u    /* "COND" */
#define MPROC__MAGIC_BARRIER 0x52524142u /* "BARR" */

/* The public storage sizes (MPROC_*_SIZE) hold for every 64-bit Linux ABI,
 * not only the one being built: layouts are checked as if each of their
 * `nmutex` pthread_mutex_t had the largest size any of those ABIs gives it
 * (glibc on aarch64: 48 bytes).  Mutexes are 8-aligned everywhere, so only
 * their size differs. */
#define MPROC__MUTEX_MAX_SIZE 48
#define MPROC__ANY_ABI_SIZE(type, nmutex)                                                          \
  (sizeof(type) + (nmutex) * (MPROC__MUTEX_MAX_SIZE - sizeof(pthread_mutex_t)))
_Static_assert(sizeof(pthread_mutex_t) <= MPROC__MUTEX_MAX_SIZE, "pthread_mutex_t larger than 48");

/* The object at p is an initialised `magic` (checks NULL and alignment too). */
static inline bool mproc__sync_ok(const void *p, uint32_t magic) {
  if (p == NULL || ((uintptr_t)p & 7u) != 0)
    return false;
  const struct mproc__sync_hdr *h = p;
  return atomic_load_explicit(&h->magic, memory_order_acquire) == magic;
}

/* Validates caller storage for an _init: non-NULL, 8-aligned, large enough,
 * and not already holding a live object of the same kind. */
int mproc__sync_check_storage(const void *storage, size_t size, size_t need, uint32_t magic);
/* One anonymous shared mapping for a library-allocated object; released with
 * mproc__sync_unmap. */
int mproc__sync_map(size_t size, void **out);
void mproc__sync_unmap(void *p, size_t size);

/* ---- robust process-shared mutexes (lock.c) ----------------------------- */

/* A PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST mutex; `recursive` picks
 * PTHREAD_MUTEX_RECURSIVE, otherwise PTHREAD_MUTEX_ERRORCHECK. */
int mproc__rmutex_init(pthread_mutex_t *m, bool recursive);
/* Lock with an absolute mproc_now_ms() deadline (-1 forever, already passed =
 * try once).  Maps pthread results to library codes: 0, MPROC_ETIMEDOUT,
 * MPROC_EOWNERDEAD (held now), MPROC_ENOTRECOVERABLE, MPROC_EBUSY (errorcheck
 * relock by the owner). */
int mproc__rmutex_lock(pthread_mutex_t *m, int64_t deadline_ms);
/* 0 or MPROC_ENOTOWNER. */
int mproc__rmutex_unlock(pthread_mutex_t *m);

/* The kernel thread id of the caller (cached per thread). */
pid_t mproc__gettid(void);

/* RLock internals used by condition.c and value.c: full release returning the
 * depth, and re-acquisition at a given depth. */
int mproc__rlock_release_all(mproc_rlock *r, int *depth);
int mproc__rlock_reacquire(mproc_rlock *r, int depth, int64_t deadline_ms);
/* Condition support: mark an RLock as a Condition's, record wake-ups to make
 * when its holder finally releases it (holder only), and make them
 * (condition.c: wakes up to n sleepers of the Condition owning `r`). */
void mproc__rlock_mark_cond(mproc_rlock *r);
void mproc__rlock_defer_wake(mproc_rlock *r, int n);
void mproc__cond_wake(mproc_rlock *r, int n);

#endif /* MPROC_SYNC_INTERNAL_H */
