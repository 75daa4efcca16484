/* A lock word that names its owner thread (src/tidlock.c). */
#ifndef MPROC_TIDLOCK_H
#define MPROC_TIDLOCK_H

#include "futex.h"
#include "internal.h"

#include <stdatomic.h>

/* Zero-initialised storage is a free lock. */
typedef struct mproc__tidlock {
  /* 0 when free, else the owner's kernel tid in the low 32 bits and the
   * owner thread's birth token in the high 32 bits. */
  _Atomic uint64_t word;
  _Atomic uint32_t sleepers; /* waiters asleep (or about to be) on the word */
  uint32_t pad;
} mproc__tidlock;

/* A holder may "park" a held word (the queue's side locks, queue.h): the
 * word keeps its owner with this bit of the tid half set, which no tid has
 * (they stay below 2^22), and the owner goes in and out of its critical
 * sections by a protocol of its own, without touching the word.  The
 * sleeping half of the word changes, so sleepers wake; every acquire that
 * meets a parked word returns MPROC__TIDLOCK_PARKED instead of waiting, and
 * its caller revokes the parking (queue.c, sync_lock_park.c for a Lock).
 * RLock never parks. */
#define MPROC__TIDLOCK_PARK ((uint64_t)1 << 31)
#define MPROC__TIDLOCK_PARKED 1 /* a return of the acquires below, positive */

/* The calling thread's word (tid and token), 0 until mproc__tidlock_self
 * computed it in this thread (and again in a forked child). */
extern _Thread_local uint64_t mproc__tidlock_me __attribute__((tls_model("initial-exec")));
uint64_t mproc__tidlock_self(void);
static inline uint64_t mproc__tidlock_who(void) {
  uint64_t me = mproc__tidlock_me;
  return MPROC__LIKELY(me != 0) ? me : mproc__tidlock_self();
}

/* Acquires with an absolute mproc_now_ms() deadline (-1 forever; passed:
 * try once).  Returns 0, MPROC_EOWNERDEAD (held now; the previous owner
 * died holding it), MPROC_ETIMEDOUT, MPROC__TIDLOCK_PARKED (a parked word:
 * not taken), or -errno.  The uncontended case is one compare-and-swap,
 * inline. */
int mproc__tidlock_lock_slow(mproc__tidlock *w, int64_t deadline_ms);
static inline int mproc__tidlock_lock(mproc__tidlock *w, int64_t deadline_ms) {
  uint64_t free_word = 0;
  if (MPROC__LIKELY(atomic_compare_exchange_strong_explicit(
          &w->word, &free_word, mproc__tidlock_who(), memory_order_acquire, memory_order_relaxed)))
    return 0;
  return mproc__tidlock_lock_slow(w, deadline_ms);
}
/* One attempt: 0, MPROC_EOWNERDEAD (held now) or MPROC_EBUSY. */
int mproc__tidlock_trylock(mproc__tidlock *w);
/* Releases (the caller holds it), then looks at the sleepers' count: a
 * store and a compiler barrier where membarrier pays for the fence on the
 * sleepers' side (futex.h), else a sequentially consistent exchange (a
 * full barrier); a wake-up system call only when a waiter went to sleep. */
void mproc__tidlock_wake_slow(mproc__tidlock *w);
static inline void mproc__tidlock_unlock(mproc__tidlock *w) {
  if (mproc__fence_asym()) {
    atomic_store_explicit(&w->word, 0, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
  } else {
    atomic_exchange(&w->word, 0);
  }
  if (MPROC__UNLIKELY(atomic_load(&w->sleepers) != 0))
    mproc__tidlock_wake_slow(w);
}
/* The same in two steps, for a caller that has a fence of its own to make
 * right after releasing (the queue's wake-up check): _release stores the
 * free word; after mproc__fence_light(), _wake wakes a sleeper if there is
 * one.  _wake must not be skipped. */
static inline void mproc__tidlock_release(mproc__tidlock *w) {
  atomic_store_explicit(&w->word, 0, memory_order_release);
}
static inline void mproc__tidlock_wake(mproc__tidlock *w) {
  if (MPROC__UNLIKELY(atomic_load_explicit(&w->sleepers, memory_order_relaxed) != 0))
    mproc__tidlock_wake_slow(w);
}
/* Whether the thread named by a word (as mproc__tidlock_who returns it) is
 * certainly gone: exited, a zombie, or its tid now names another thread.
 * Reads /proc; when it cannot tell, the thread counts as alive. */
bool mproc__tidlock_gone(uint64_t word);
/* Whether the calling thread holds it. */
static inline bool mproc__tidlock_mine(const mproc__tidlock *w) {
  return atomic_load_explicit(&w->word, memory_order_relaxed) == mproc__tidlock_who();
}

/* The word the calling thread took last through a Lock or RLock acquire,
 * or NULL: cleared by every release the thread makes (of any lock, through
 * any address), and in a forked child, whose thread holds nothing.  Why: on
 * x86 a load of the word right after the compare-and-swap that took it
 * costs about as much as the swap itself (5 ns, measured), and a release
 * must know that its caller is the owner; a thread-local pointer answers
 * that for the common case of releasing the lock taken last, and only a
 * nested or foreign release reads the word.  The hint is exact: set only
 * right after this thread's own compare-and-swap took the word at that
 * address, cleared before the thread frees any word, and nobody else frees
 * a word held by a live thread (waiters take over only a dead owner's word,
 * destroy refuses a held one).  Clearing it on every release, not only the
 * named lock's, keeps it exact when one lock is mapped at two addresses:
 * a release through the other address must not leave this one ours. */
extern _Thread_local const mproc__tidlock *mproc__tidlock_held
    __attribute__((tls_model("initial-exec")));
/* mproc__tidlock_mine, answered by the hint when it names w. */
static inline bool mproc__tidlock_mine_hinted(const mproc__tidlock *w) {
  return MPROC__LIKELY(mproc__tidlock_held == w) || mproc__tidlock_mine(w);
}

#endif /* MPROC_TIDLOCK_H */
