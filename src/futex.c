/* Futex wait/wake with absolute monotonic deadlines.
 *
 * Design notes: the cross-process primitives (locks -- tidlock.c --, events,
 * semaphores, conditions, barriers, queues, the pool's task rings) sleep on
 * 32-bit words in shared memory, and the pool's waiters on the process-wide
 * epoch word (future.c).  Waits use
 * FUTEX_WAIT_BITSET, whose timeout is absolute on CLOCK_MONOTONIC: the same
 * clock as mproc_now_ms(), so a retried wait (EINTR, spurious wake-up) never
 * stretches the caller's deadline.  `shared` selects the non-private futex
 * (needed when another process maps the word).  Waits that must not trust
 * their waker to be alive (a process may die between changing the word and
 * waking) sleep in capped slices through mproc__futex_wait_capped, the one
 * place that decides when such a wait has timed out.  The asymmetric fences
 * (futex.h) let the hot side of a wake-up check skip its fence by making
 * the sleeping side pay for both with membarrier(2). */
#include "futex.h"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int mproc__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline_ms, bool shared) {
  struct timespec ts, *tsp = NULL;
  if (deadline_ms >= 0) {
    ts.tv_sec = deadline_ms / 1000;
    ts.tv_nsec = (deadline_ms % 1000) * 1000000;
    tsp = &ts;
  }
  int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  long r = syscall(SYS_futex, addr, op, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
  if (r == 0)
    return 0;
  switch (errno) {
  case EAGAIN: /* the word no longer held `expected` */
  case EINTR:  /* a signal: the caller re-checks its condition */
    return 0;
  case ETIMEDOUT:
    return MPROC_ETIMEDOUT;
  default:
    return mproc__neg_errno();
  }
}

int mproc__futex_wait_capped(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline_ms,
                             int64_t recheck_ms, bool shared) {
  int64_t now = mproc_now_ms();
  if (deadline_ms >= 0 && now >= deadline_ms)
    return MPROC_ETIMEDOUT;
  int64_t until = now + recheck_ms;
  if (deadline_ms >= 0 && deadline_ms < until)
    until = deadline_ms;
  int r = mproc__futex_wait(addr, expected, until, shared);
  return r == MPROC_ETIMEDOUT ? 0 : r;
}

int mproc__futex_wake(_Atomic uint32_t *addr, int n, bool shared) {
  int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  long r = syscall(SYS_futex, addr, op, n, NULL, NULL, 0);
  return r < 0 ? mproc__neg_errno() : (int)r;
}

/* ---- asymmetric fences ---------------------------------------------------- */

_Atomic int mproc__fence_mode;
static pthread_once_t fence_once = PTHREAD_ONCE_INIT;

/* The child of a fork is a new mm: it registers again on first use. */
static void fence_after_fork(void) { atomic_store(&mproc__fence_mode, 0); }
static void fence_register_fork(void) { pthread_atfork(NULL, NULL, fence_after_fork); }

int mproc__fence_setup(void) {
  pthread_once(&fence_once, fence_register_fork);
  long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  int mode = 1;
  if (cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
      (cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
    mode = 2;
  /* Full fences until registered: a racing thread may still read 0 and
   * come here too, which is harmless. */
  atomic_store(&mproc__fence_mode, mode);
  return mode;
}

void mproc__fence_heavy(void) {
  atomic_thread_fence(memory_order_seq_cst);
  /* Registered peers rely on it whether or not this process could register
   * itself; where the kernel or a seccomp filter refuses, there is nothing
   * more to do (see futex.h). */
  (void)syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}
