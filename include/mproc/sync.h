/* mproc — process-shared synchronization (Python's Lock, RLock, Semaphore, Event, Condition,
 * Barrier). */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every primitive here works across processes.  Each can be placed in memory
 * the caller provides (any shared mapping: an mproc_shm block, a Value...):
 *
 *     _Alignas(64) static char store[MPROC_LOCK_SIZE];  // or inside a block
 *     mproc_lock *lock;
 *     mproc_lock_init(&lock, store, sizeof store);   ... mproc_lock_destroy(lock);
 *
 * or allocated by the library in a shared mapping (of a memfd), shared with
 * every child forked afterwards and handed to others by fd (below):
 *
 *     mproc_lock_new(&lock);   ...   mproc_lock_free(lock);
 *
 * The handle is the object's address: any process that maps the storage uses
 * `(mproc_lock *)addr` directly.  Storage must be 8-byte aligned and at least
 * the published size; the object holds no pointers, so the storage may be
 * mapped at different addresses in different processes.  Every call checks
 * the object's magic and fails with MPROC_EINVAL on memory that does not hold
 * an initialised object of that kind.  Destroy/free only when no process uses
 * the object any more.
 *
 * Objects made after a pool (or a process) started are not mapped in its
 * workers: hand them over by fd.  mproc_object_fd(obj) gives the fd of an
 * object made by a _new of this process (a Value/Array too); send it with a
 * task (mproc_submit_options.fds) or over a Unix socket, and map it on the
 * other side with the kind's _from_fd, which checks that the fd holds an
 * object of that kind (MPROC_EINVAL: another kind or no object;
 * MPROC_ECORRUPT: a damaged header).  The handle _from_fd returns is
 * released with the kind's _free, which then only unmaps it in the calling
 * process (the object lives on for the others); MPROC_EBUSY while the caller
 * holds it (Lock, RLock, Condition, Value), and a barrier's parties of the
 * process leave.  Objects made with _init travel with the memory that holds
 * them (e.g. an mproc_shm block: mproc_shm_fd / mproc_shm_from_fd).
 *
 * Ownership of Lock and RLock belongs to a thread (as with pthread robust
 * mutexes): only the acquiring thread may release, and the death of that
 * thread or its process is detected by the next acquirer (at once by a
 * poll, within about 10 ms by a waiter already asleep). */

/* Storage sizes (compile-time constants, checked against the real layouts).
 * They are the same on every 64-bit Linux ABI: they fit the largest
 * pthread_mutex_t among them (glibc's 48 bytes on aarch64; 40 on x86-64,
 * ppc64, s390x, riscv64), so a program's shared-memory layout does not
 * depend on the architecture it is built for.  They are part of the ABI:
 * a change is a release note in CHANGES. */
#define MPROC_LOCK_SIZE 64
#define MPROC_RLOCK_SIZE 128
#define MPROC_SEM_SIZE 64
#define MPROC_EVENT_SIZE 64
#define MPROC_COND_SIZE 192
#define MPROC_BARRIER_SIZE(parties) (128 + 64 * (size_t)(parties))
/* Most parties a barrier accepts. */
#define MPROC_BARRIER_MAX_PARTIES 1024

/* The fd of an object made by mproc_<kind>_new (any kind here, and
 * mproc_value_new / mproc_array_new) in the calling process: valid until the
 * object is freed; the caller must not close it.  Errors: MPROC_EINVAL (NULL
 * or misaligned), MPROC_ESTATE (not made by a _new of this process: made
 * with _init, inherited through fork, mapped with _from_fd, or made while
 * no descriptor was available). */
MPROC_EXTERN int mproc_object_fd(const void *obj);

/* ---- Lock --------------------------------------------------------------- */
typedef struct mproc_lock mproc_lock;

MPROC_EXTERN int mproc_lock_init(mproc_lock **out, void *storage, size_t size);
MPROC_EXTERN int mproc_lock_destroy(mproc_lock *lock);
MPROC_EXTERN int mproc_lock_new(mproc_lock **out);
MPROC_EXTERN int mproc_lock_free(mproc_lock *lock);
MPROC_EXTERN int mproc_lock_from_fd(mproc_lock **out, int fd);
/* Acquire within timeout_ms.  Returns 0; MPROC_ETIMEDOUT; MPROC_EOWNERDEAD
 * (the previous owner died holding it: the caller now holds the lock and
 * should repair the protected state, then call mproc_lock_consistent);
 * MPROC_ENOTRECOVERABLE (an earlier owner died and the next one released
 * without marking it consistent: the lock is permanently unusable);
 * MPROC_EBUSY if the calling thread already holds it (a Lock is not
 * recursive: this would deadlock). */
MPROC_EXTERN int mproc_lock_acquire(mproc_lock *lock, int64_t timeout_ms);
/* MPROC_ENOTOWNER if the calling thread does not hold the lock. */
MPROC_EXTERN int mproc_lock_release(mproc_lock *lock);
/* After MPROC_EOWNERDEAD: the protected state is repaired. */
MPROC_EXTERN int mproc_lock_consistent(mproc_lock *lock);

/* ---- RLock (recursive; owner = thread) ------------------------------------ */
typedef struct mproc_rlock mproc_rlock;

MPROC_EXTERN int mproc_rlock_init(mproc_rlock **out, void *storage, size_t size);
MPROC_EXTERN int mproc_rlock_destroy(mproc_rlock *rlock);
MPROC_EXTERN int mproc_rlock_new(mproc_rlock **out);
MPROC_EXTERN int mproc_rlock_free(mproc_rlock *rlock);
MPROC_EXTERN int mproc_rlock_from_fd(mproc_rlock **out, int fd);
/* As mproc_lock_acquire, except that the owner may acquire again (depth+1).
 * After MPROC_EOWNERDEAD the depth is 1, whatever the dead owner's was. */
MPROC_EXTERN int mproc_rlock_acquire(mproc_rlock *rlock, int64_t timeout_ms);
MPROC_EXTERN int mproc_rlock_release(mproc_rlock *rlock);
MPROC_EXTERN int mproc_rlock_consistent(mproc_rlock *rlock);
/* The calling thread's recursion depth (0 if it does not hold it). */
MPROC_EXTERN int mproc_rlock_depth(const mproc_rlock *rlock);

/* ---- Semaphore, BoundedSemaphore ------------------------------------------ */
typedef struct mproc_sem mproc_sem;

/* BoundedSemaphore: releasing above the initial value fails. */
#define MPROC_SEM_BOUNDED (1u << 0)
struct mproc_sem_options {
  unsigned flags; /* MPROC_SEM_* */
};
/* Maximum value of a semaphore. */
#define MPROC_SEM_VALUE_MAX 0x7fffffffu

MPROC_EXTERN int mproc_sem_init(mproc_sem **out, void *storage, size_t size, unsigned value,
                                const struct mproc_sem_options *opts);
MPROC_EXTERN int mproc_sem_destroy(mproc_sem *sem);
MPROC_EXTERN int mproc_sem_new(mproc_sem **out, unsigned value,
                               const struct mproc_sem_options *opts);
MPROC_EXTERN int mproc_sem_free(mproc_sem *sem);
MPROC_EXTERN int mproc_sem_from_fd(mproc_sem **out, int fd);
/* Take one unit within timeout_ms: 0 or MPROC_ETIMEDOUT. */
MPROC_EXTERN int mproc_sem_acquire(mproc_sem *sem, int64_t timeout_ms);
/* Give one unit back: 0, MPROC_EOVERRELEASE (bounded, already at its bound),
 * MPROC_EOVERFLOW (at MPROC_SEM_VALUE_MAX). */
MPROC_EXTERN int mproc_sem_release(mproc_sem *sem);
/* The current value (>= 0). */
MPROC_EXTERN int mproc_sem_value(const mproc_sem *sem);

/* ---- Event ---------------------------------------------------------------- */
typedef struct mproc_event mproc_event;

MPROC_EXTERN int mproc_event_init(mproc_event **out, void *storage, size_t size);
MPROC_EXTERN int mproc_event_destroy(mproc_event *ev);
MPROC_EXTERN int mproc_event_new(mproc_event **out);
MPROC_EXTERN int mproc_event_free(mproc_event *ev);
MPROC_EXTERN int mproc_event_from_fd(mproc_event **out, int fd);
MPROC_EXTERN int mproc_event_set(mproc_event *ev);
MPROC_EXTERN int mproc_event_clear(mproc_event *ev);
/* 1 if set, 0 if not, or MPROC_EINVAL. */
MPROC_EXTERN int mproc_event_is_set(const mproc_event *ev);
/* Wait until set: 0, or MPROC_ETIMEDOUT. */
MPROC_EXTERN int mproc_event_wait(mproc_event *ev, int64_t timeout_ms);

/* ---- Condition (with its own RLock, like Python's Condition()) ------------ */
typedef struct mproc_cond mproc_cond;

MPROC_EXTERN int mproc_cond_init(mproc_cond **out, void *storage, size_t size);
MPROC_EXTERN int mproc_cond_destroy(mproc_cond *cond);
MPROC_EXTERN int mproc_cond_new(mproc_cond **out);
MPROC_EXTERN int mproc_cond_free(mproc_cond *cond);
MPROC_EXTERN int mproc_cond_from_fd(mproc_cond **out, int fd);
/* The condition's lock; acquire/release below are shorthands for it. */
MPROC_EXTERN mproc_rlock *mproc_cond_lock(mproc_cond *cond);
MPROC_EXTERN int mproc_cond_acquire(mproc_cond *cond, int64_t timeout_ms);
MPROC_EXTERN int mproc_cond_release(mproc_cond *cond);
/* Release the lock (whatever its depth), sleep until notified or timeout_ms
 * passes, re-acquire it at the same depth.  The caller must hold the lock
 * (else MPROC_ENOTOWNER).  Returns 0 (notified), MPROC_ETIMEDOUT, or
 * MPROC_EOWNERDEAD (the lock came back from a dead holder: the caller holds
 * it, as after mproc_rlock_acquire).  The timeout bounds the sleep; taking the
 * lock back waits for its holder like pthread_cond_timedwait (a dead holder
 * never makes it hang).  Wake-ups may be spurious: loop on your predicate, or
 * use mproc_cond_wait_for. */
MPROC_EXTERN int mproc_cond_wait(mproc_cond *cond, int64_t timeout_ms);
/* Wait until pred(arg) returns nonzero (checked first, with the lock held),
 * or the timeout passes: 0 when the predicate holds, MPROC_ETIMEDOUT, or
 * MPROC_EOWNERDEAD as above. */
MPROC_EXTERN int mproc_cond_wait_for(mproc_cond *cond, int (*pred)(void *arg), void *arg,
                                     int64_t timeout_ms);
/* Wake n waiters / all waiters.  The caller must hold the lock.  Waiters
 * beyond n that were waiting at the time may also return (within about
 * 100 ms): as with any spurious wake-up, re-check the predicate. */
MPROC_EXTERN int mproc_cond_notify(mproc_cond *cond, int n);
MPROC_EXTERN int mproc_cond_notify_all(mproc_cond *cond);

/* ---- Barrier --------------------------------------------------------------- */
typedef struct mproc_barrier mproc_barrier;

/* Storage needed for `parties` parties (0 if out of range). */
MPROC_EXTERN size_t mproc_barrier_size(unsigned parties);
MPROC_EXTERN int mproc_barrier_init(mproc_barrier **out, void *storage, size_t size,
                                    unsigned parties);
MPROC_EXTERN int mproc_barrier_destroy(mproc_barrier *b);
MPROC_EXTERN int mproc_barrier_new(mproc_barrier **out, unsigned parties);
MPROC_EXTERN int mproc_barrier_free(mproc_barrier *b);
MPROC_EXTERN int mproc_barrier_from_fd(mproc_barrier **out, int fd);
/* Register the calling thread as a party now, so that its death is detected
 * even before its first wait (otherwise it registers at its first wait).
 * MPROC_EFULL if `parties` threads are registered and alive. */
MPROC_EXTERN int mproc_barrier_join(mproc_barrier *b);
/* Unregister the calling thread (a party that will not wait again). */
MPROC_EXTERN int mproc_barrier_leave(mproc_barrier *b);
/* Wait for all parties.  Returns the arrival index in [0, parties) (the last
 * to arrive gets parties-1, and runs `action(arg)` first when action is not
 * NULL; a nonzero return breaks the barrier), MPROC_EBROKEN (broken by abort,
 * reset, a failed action, a timed-out or dead party), or MPROC_ETIMEDOUT (this
 * caller's deadline passed: the barrier is now broken for the others). */
MPROC_EXTERN int mproc_barrier_wait_action(mproc_barrier *b, int (*action)(void *arg), void *arg,
                                           int64_t timeout_ms);
MPROC_EXTERN int mproc_barrier_wait(mproc_barrier *b, int64_t timeout_ms);
/* Break the barrier: current and future waiters get MPROC_EBROKEN until reset. */
MPROC_EXTERN int mproc_barrier_abort(mproc_barrier *b);
/* Back to the empty state; current waiters get MPROC_EBROKEN. */
MPROC_EXTERN int mproc_barrier_reset(mproc_barrier *b);
MPROC_EXTERN int mproc_barrier_parties(const mproc_barrier *b);
MPROC_EXTERN int mproc_barrier_n_waiting(mproc_barrier *b);
/* 1 if broken, 0 if not. */
MPROC_EXTERN int mproc_barrier_broken(mproc_barrier *b);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_SYNC_H */
