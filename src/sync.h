/* Internal helpers shared by the process-shared synchronization primitives
 * (sync_lock.c, sync_semaphore.c, sync_event.c, sync_condition.c, sync_barrier.c) and
 * shared_value.c: the object header and life cycle (sync_core.c), robust mutexes and RLock
 * internals (sync_lock.c).  Dependencies run one way: every primitive uses
 * sync_core.c; sync_condition.c, sync_barrier.c and shared_value.c use sync_lock.c. */
#ifndef MPROC_SYNC_INTERNAL_H
#define MPROC_SYNC_INTERNAL_H

#include "internal.h"
#include "tidlock.h"

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

/* Bytes of an RLock that a Value keeps on the cache line of its data
 * (value.c): the RLock structure must fit them (checked in lock.c). */
#define MPROC__RLOCK_HOT_SIZE 48

/* The object at p is an initialised `magic` (checks NULL and alignment too). */
static inline bool mproc__sync_ok(const void *p, uint32_t magic) {
  if (p == NULL || ((uintptr_t)p & 7u) != 0)
    return false;
  const struct mproc__sync_hdr *h = p;
  return atomic_load_explicit(&h->magic, memory_order_acquire) == magic;
}

/* Marks the object gone: every later call on it fails the magic check. */
static inline void mproc__sync_clear(void *p) {
  struct mproc__sync_hdr *h = p;
  atomic_store_explicit(&h->magic, 0, memory_order_release);
}

/* ---- the shared life cycle (sync_core.c) -------------------------------- */

/* What one kind of object tells the shared life cycle. */
struct mproc__sync_kind {
  uint32_t magic; /* MPROC__MAGIC_* */
  size_t size;    /* bytes _free unmaps, unless size_of is set */
  /* The size of a live object whose size varies (barrier, value). */
  size_t (*size_of)(const void *obj);
  /* Fills the object from `arg` on zeroed storage whose hdr.flags are set
   * (it may add flags of its own).  A failure leaves nothing to undo.  NULL:
   * nothing beyond zeroes. */
  int (*setup)(void *obj, const void *arg);
  /* Checks that the object may go (nonzero refuses, nothing changed) and
   * releases what setup made.  The magic is cleared after it; a retire that
   * must stop users earlier clears it itself (mproc__sync_clear).  NULL:
   * nothing to do. */
  int (*retire)(void *obj);
  /* Checks the fields of an object mapped from an fd (its magic, flags and
   * size already checked): false is MPROC_ECORRUPT.  NULL: nothing more. */
  bool (*valid)(const void *obj);
  /* Whether _free still unmaps an object that fails `valid` (MPROC_ECORRUPT
   * either way): not for one whose robust mutexes may sit on this
   * process's threads' robust lists, which must never point at unmapped
   * memory. */
  bool unmap_damaged;
  /* Lets the calling process stop using an object it mapped from an fd,
   * which lives on for the others: nonzero refuses (e.g. a Lock the caller
   * holds).  NULL: nothing to do. */
  int (*detach)(void *obj);
};

/* _init on caller storage (`have` bytes, 8-aligned, at least `need`, not a
 * live object of the kind: else MPROC_EINVAL / MPROC_EBUSY); `out` is the
 * caller's `T **`, set on success only. */
int mproc__sync_init(const struct mproc__sync_kind *k, void *out, void *storage, size_t have,
                     size_t need, const void *arg);
/* _new: `size` bytes of anonymous shared mapping, shared with children
 * forked afterwards; nothing is left behind on failure. */
int mproc__sync_new(const struct mproc__sync_kind *k, void *out, size_t size, const void *arg);
/* _destroy (allocated false) or _free (true): MPROC_EINVAL unless obj is a
 * live object of the kind released the matching way; else retire's refusal,
 * or 0 once the object is gone (and unmapped, for _free). */
int mproc__sync_teardown(const struct mproc__sync_kind *k, void *obj, bool allocated);

/* ---- handing objects to other processes (handoff.c) --------------------- */

/* `size` zeroed bytes of shared memory for a _new: a memfd kept for
 * mproc_object_fd (an anonymous mapping if no memfd can be made). */
int mproc__obj_map_new(size_t size, void **addr_out);
/* _from_fd: map the object of kind k in `fd` (the caller keeps the fd) and
 * check it; `out` is the caller's `T **`. */
int mproc__obj_attach(const struct mproc__sync_kind *k, int fd, void *out);
/* The size addr was mapped with by a _new or _from_fd of this process;
 * false if the table has no entry for it (an object inherited by fork). */
bool mproc__obj_size(const void *addr, size_t *size);
/* Whether addr was mapped by mproc__obj_attach in this process. */
bool mproc__obj_attached(const void *addr);
/* Drops addr's entry (closing its fd); false if it had none.  *attached
 * tells whether it was mapped by mproc__obj_attach. */
bool mproc__obj_forget(void *addr, bool *attached);

/* Whether some mapping of this process covers p (one system call): a
 * foreign address, e.g. of an object made after this process was forked,
 * gives MPROC_EINVAL instead of a fault where a call can afford the check. */
bool mproc__obj_mapped(const void *p);

/* The sleeping side of Event.wait and Semaphore.acquire: registered in
 * *waiters (wakers make the wake system call only when it is nonzero), sleep
 * on `word` while it reads 0 until ready(obj) holds, re-checking every
 * recheck_ms (a waker that died between its change and its wake-up is then
 * noticed) and timing out only at the absolute deadline.  Returns 0 once
 * ready, MPROC_ETIMEDOUT, or -errno. */
int mproc__sync_sleep(_Atomic uint32_t *word, _Atomic uint32_t *waiters, bool (*ready)(void *obj),
                      void *obj, int64_t deadline_ms, int64_t recheck_ms);

/* The public `type`_destroy and `type`_free of a kind, and with them
 * `type`_init and `type`_new for a kind that needs nothing beyond its
 * storage: each is one call of the life cycle above, so they are written
 * once here. */
#define MPROC__SYNC_RELEASE(type, kind)                                                            \
  MPROC_EXTERN int type##_destroy(type *obj) { return mproc__sync_teardown(&(kind), obj, false); } \
  MPROC_EXTERN int type##_free(type *obj) { return mproc__sync_teardown(&(kind), obj, true); }     \
  MPROC__SYNC_FROM_FD(type, kind)
#define MPROC__SYNC_FROM_FD(type, kind)                                                            \
  MPROC_EXTERN int type##_from_fd(type **out, int fd) {                                            \
    return mproc__obj_attach(&(kind), fd, out);                                                    \
  }
#define MPROC__SYNC_LIFECYCLE(type, kind, size)                                                    \
  MPROC_EXTERN int type##_init(type **out, void *storage, size_t have) {                           \
    return mproc__sync_init(&(kind), out, storage, have, (size), NULL);                            \
  }                                                                                                \
  MPROC_EXTERN int type##_new(type **out) { return mproc__sync_new(&(kind), out, (size), NULL); }  \
  MPROC__SYNC_RELEASE(type, kind)

/* ---- robust process-shared mutexes (sync_lock.c; used by sync_barrier.c) - */

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

/* Whether the calling thread holds the robust mutex m, by its futex word:
 * the kernel clears a dead owner's tid there, so a recycled tid never
 * matches (unlike a tid recorded beside the mutex). */
bool mproc__rmutex_mine(const pthread_mutex_t *m);
/* Whether m's futex word says "held" but names no thread that exists: a
 * word damaged by some process mapping it, which no unlock will ever free. */
bool mproc__rmutex_owner_gone(const pthread_mutex_t *m);
/* Whether m's type word is still the one mproc__rmutex_init(m, false)
 * wrote: libc aborts the process on a mutex of an unknown type, so a word
 * written over by hand is caught before any lock call sees it. */
bool mproc__rmutex_plain_intact(const pthread_mutex_t *m);

/* The kernel thread id of the caller (cached per thread). */
pid_t mproc__gettid(void);

/* ---- parking a Lock (sync_lock_park.c) ----------------------------------
 *
 * A Lock used by one thread stays "parked" in that thread between its
 * critical sections: the word keeps the thread's id
 * with the park bit (tidlock.h), and the thread enters and leaves by an
 * asymmetric Dekker pair on `busy` and `revoke` (futex.h) instead of a
 * compare-and-swap.  Anyone else meets the parked word in its acquire and
 * revokes: counts itself in `revoke`, makes the heavy fence, waits for busy
 * to read 0 (judging the parker's death after each sleep slice), and takes
 * the word with a compare-and-swap from the parked value.
 *
 * Only one thread may ever park a given lock: the one named in `parker`,
 * claimed by the first thread that parks it and handed on only once that
 * thread is gone.  `busy` is a single word, written only by the parker's
 * thread; a second parker could otherwise be hurt by the first one's late
 * store (a parker preempted between its look at the word and its store to
 * busy, back-off included, after a revoker took the lock and the second
 * parker entered).  So the parker's process may have other threads: they
 * revoke like other processes (membarrier reaches every thread of a
 * registered process), and never write busy.  A thread parks only where
 * membarrier is registered (else the light fence is a full one and parking
 * saves nothing). */
struct mproc__lockpark {
  _Atomic uint32_t busy;   /* 1 while the parker is inside; the parker's thread writes it */
  _Atomic uint32_t revoke; /* revokers at work now */
  _Atomic uint64_t parker; /* the thread that may park (mproc__tidlock_who), 0: none yet */
  _Atomic uint32_t skip;   /* normal releases to make before parking again (holder only) */
  _Atomic uint32_t pause;  /* skip set by the last revocation, doubling (holder only) */
};

/* Whether the calling thread holds the lock through its parking. */
static inline bool mproc__lockpark_held(const struct mproc__lockpark *pk, uint64_t word,
                                        uint64_t me) {
  return me != 0 && word == (me | MPROC__TIDLOCK_PARK) &&
         atomic_load_explicit(&pk->busy, memory_order_relaxed) != 0;
}
/* Parks the word the caller holds if this thread may (it is ours, held
 * normally, the lock in a good state); else releases it as usual. */
void mproc__lockpark_release(mproc__tidlock *m, struct mproc__lockpark *pk);
/* Leaves a parked critical section after a revoker showed up: wakes it and
 * gives the parking up. */
void mproc__lockpark_yield(mproc__tidlock *m, struct mproc__lockpark *pk);
/* Gives up the parking if it is the calling thread's and it is outside:
 * the word is free after. */
void mproc__lockpark_unpark_mine(mproc__tidlock *m, struct mproc__lockpark *pk);
/* Takes the lock from its parker (the word read parked): 0 or
 * MPROC_EOWNERDEAD when held now, 1 to start the acquire again,
 * MPROC_ETIMEDOUT at the absolute deadline, MPROC_EBUSY when the caller's
 * own thread holds it parked, or -errno. */
int mproc__lockpark_revoke(mproc__tidlock *m, struct mproc__lockpark *pk, int64_t deadline_ms);

/* For tests: whether the Lock is parked now, and how many revoke it. */
bool mproc__lock_parked(const mproc_lock *l, uint32_t *revokers);

/* RLock internals used by sync_condition.c and shared_value.c: full release returning the
 * depth, and re-acquisition at a given depth. */
int mproc__rlock_release_all(mproc_rlock *r, int *depth);
int mproc__rlock_reacquire(mproc_rlock *r, int depth, int64_t deadline_ms);
/* The detach step of an RLock mapped from an fd (also of the Condition and
 * Value holding one): MPROC_EBUSY while the caller holds it. */
int mproc__rlock_detach(void *rlock);
/* Condition support: mark an RLock as a Condition's, whose sleepers wait on
 * the futex words of the array `words` (in the same mapping: the RLock
 * records its offset, not a pointer), and record wake-ups to make when the
 * holder finally releases the lock (holder only): bit i of `mask` wakes
 * every sleeper on words[i] (i < 32).  The RLock makes them itself, so
 * sync_lock.c needs nothing from sync_condition.c. */
void mproc__rlock_mark_cond(mproc_rlock *r, _Atomic uint32_t *words);
void mproc__rlock_defer_wake(mproc_rlock *r, uint32_t mask);

#endif /* MPROC_SYNC_INTERNAL_H */
