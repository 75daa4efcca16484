/* Futex helpers (src/futex.c). */
#ifndef MPROC_FUTEX_H
#define MPROC_FUTEX_H

#include "internal.h"

#include <stdatomic.h>

/* Sleep while *addr == expected, until woken or the absolute deadline
 * (mproc_now_ms() clock, -1 forever).  Returns 0 when woken, when the value
 * already differed, or on a signal (callers loop and re-check), or
 * MPROC_ETIMEDOUT, or -errno. */
int mproc__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline_ms, bool shared);
/* One sleep of a wait loop that must not trust its waker: sleep while
 * *addr == expected, but at most `recheck_ms` at a time (a waker that dies
 * between changing its state and waking, or a condition the word does not
 * track, is then noticed within that bound) and never past the absolute
 * deadline.  Returns MPROC_ETIMEDOUT only when called with the deadline
 * already passed, never early: a sleep that ends at the deadline returns 0,
 * so the caller re-checks its condition once more before timing out.  Else 0
 * (woken, value differed, signal or slice over: re-check and call again) or
 * -errno.  The loop it serves:
 *
 *     for (;;) {
 *       uint32_t seen = load(word);
 *       if (condition holds) break;
 *       r = mproc__futex_wait_capped(&word, seen, deadline, RECHECK_MS, true);
 *       if (r != 0) break;   // MPROC_ETIMEDOUT or an error
 *     } */
int mproc__futex_wait_capped(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline_ms,
                             int64_t recheck_ms, bool shared);
/* Wake up to n waiters (INT_MAX for all).  Returns how many were woken, or
 * -errno. */
int mproc__futex_wake(_Atomic uint32_t *addr, int n, bool shared);

/* An asymmetric Dekker pair for the hot paths' wake-up checks ("did a
 * waiter go to sleep?").  The common side (a lock release, a queue put or
 * get) stores its word, calls mproc__fence_light(), then loads the waiter
 * count; the rare side (a waiter about to sleep) stores the count, calls
 * mproc__fence_heavy(), then loads the word.  Once this process registered
 * for membarrier(2) (MEMBARRIER_CMD_GLOBAL_EXPEDITED), the light fence is
 * only a compiler barrier and the heavy one makes every CPU running a
 * registered process execute a full barrier; without membarrier both are
 * full fences.  A process whose registration failed (seccomp) while its
 * peers' succeeded can miss a wake-up: every sleeper of the library caps its
 * sleeps (futex.c's capped waits), so that costs a sleep slice, never a
 * hang. */
extern _Atomic int mproc__fence_mode; /* 0: unknown, 1: full fences, 2: membarrier */
int mproc__fence_setup(void);
/* Whether the light fence is only a compiler barrier in this process. */
static inline bool mproc__fence_asym(void) {
  int mode = atomic_load_explicit(&mproc__fence_mode, memory_order_relaxed);
  if (MPROC__UNLIKELY(mode == 0))
    mode = mproc__fence_setup();
  return mode == 2;
}
static inline void mproc__fence_light(void) {
  if (mproc__fence_asym())
    atomic_signal_fence(memory_order_seq_cst);
  else
    atomic_thread_fence(memory_order_seq_cst);
}
void mproc__fence_heavy(void);

#endif /* MPROC_FUTEX_H */
