/* A process-shared lock whose word names its owner thread, for the hot
 * paths that cannot afford a robust pthread mutex (the queue's two locks).
 *
 * Design notes.  A glibc robust mutex costs about four plain ones on the
 * uncontended path: it links itself into the thread's robust list under a
 * "pending" marker on every lock and unlock, so that the kernel can mark it
 * when the owner dies.  This lock is one compare-and-swap in and one
 * exchange out (or a store and a fence, for the queue, which shares that
 * fence with its own wake-up check), and finds a dead owner itself instead:
 *
 *   free (0) --CAS--> held by (tid, token) --exchange 0--> free
 *   held by a dead thread --a waiter's CAS--> held by the waiter
 *                                              (returns MPROC_EOWNERDEAD)
 *
 * The word is 64 bits: the owner's kernel tid (unique system-wide while the
 * thread lives) and in the high half a token, the low 32 bits of the owner
 * thread's start time (clock ticks after boot, as in /proc/<tid>/stat).  A
 * waiter that has slept a whole slice (SLICE_MS) on an unchanged word reads
 * /proc/<tid>/stat of the owner: no such thread, a zombie, or a thread of
 * another start time (the tid was recycled after the owner died) mean the
 * owner is gone, and the waiter takes the word over with a compare-and-swap
 * from exactly the value it judged, so two waiters cannot both take it and
 * a word that changed meanwhile is judged again.  When /proc cannot tell
 * (not mounted, no permission), the owner is taken to be alive: a live
 * owner never loses its lock.  A dead owner is thus noticed within one
 * slice, where a robust mutex is told at once; the critical sections this
 * lock guards are a few dozen instructions, so an owner dying inside one is
 * rare and a few milliseconds are no cost.  Limit: like the queue's
 * participant table, it judges liveness through this process's /proc, so
 * sharing across pid namespaces is unsupported.
 *
 * Sleeping: after a bounded spin a waiter counts itself in `sleepers`
 * (seq_cst), makes the heavy fence of futex.h, then looks at the word and
 * sleeps on its low half (the tid, which changes whenever the owner does;
 * the futex is 32 bits and the 64-bit ABIs mproc builds for are
 * little-endian, checked below).  Unlock frees the word, makes the light
 * fence (a compiler barrier once membarrier is registered, else the
 * exchange that frees the word is the fence) and makes the wake system call
 * only when `sleepers` is nonzero: a Dekker pair, so either the unlocker
 * sees the sleeper or the sleeper sees the free word (and the futex
 * re-checks the value in the kernel).  The token of the calling thread is
 * read from /proc once per thread and cached (reset in a forked child,
 * whose thread is a new one). */
#include "tidlock.h"
#include "futex.h"
#include "sync.h" /* mproc__gettid */

#include <pthread.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tidlock.c sleeps on the low half of a 64-bit word: little-endian only"
#endif

/* Rounds of spinning before a contended lock goes to sleep: a holder on
 * another CPU leaves within a few hundred cycles. */
#define SPINS 100
/* Longest sleep before a waiter checks whether the owner still lives. */
#define SLICE_MS 10

#define TID_MASK ((uint64_t)0xffffffff)
/* The kernel's PID_MAX_LIMIT on 64-bit systems: no tid is larger. */
#define TID_MAX (4 * 1024 * 1024)

/* ---- who we are ----------------------------------------------------------- */

/* Initial-exec: one %fs-relative load on every lock, not a __tls_get_addr
 * call; eight bytes of the static TLS surplus when the library is dlopened. */
_Thread_local uint64_t mproc__tidlock_me __attribute__((tls_model("initial-exec")));
_Thread_local const mproc__tidlock *mproc__tidlock_held __attribute__((tls_model("initial-exec")));
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

/* The child's thread is a new one: it has no identity yet, and holds no
 * lock (the words its parent's thread held still name that thread). */
static void self_after_fork(void) {
  mproc__tidlock_me = 0;
  mproc__tidlock_held = NULL;
}
static void self_register(void) { pthread_atfork(NULL, NULL, self_after_fork); }

static uint32_t token_of(uint64_t start_time) {
  return (uint32_t)start_time | 1u; /* nonzero: a valid word is never 0 */
}

uint64_t mproc__tidlock_self(void) {
  if (mproc__tidlock_me != 0)
    return mproc__tidlock_me;
  pthread_once(&self_once, self_register);
  pid_t tid = mproc__gettid();
  struct mproc__pstat ps;
  /* Without /proc the token is a constant: waiters cannot read ours either,
   * and then take us for alive. */
  uint32_t token = mproc__proc_stat(NULL, tid, &ps) == 0 ? token_of(ps.start_time) : 1u;
  mproc__tidlock_me = (uint64_t)token << 32 | ((uint64_t)tid & TID_MASK);
  return mproc__tidlock_me;
}

/* Whether the owner named by `word` is certainly gone. */
static bool owner_dead(uint64_t word) {
  pid_t tid = (pid_t)(word & TID_MASK & ~MPROC__TIDLOCK_PARK);
  /* A held word naming no possible thread (0, negative, past the kernel's
   * PID_MAX_LIMIT) was written over by some process mapping it: its "owner"
   * can never unlock, so it is taken over as a dead one's, not waited for. */
  if (tid <= 0 || tid > TID_MAX)
    return true;
  struct mproc__pstat ps;
  int r = mproc__proc_stat(NULL, tid, &ps);
  if (r == -ENOENT)
    return true;
  if (r != 0)
    return false; /* cannot tell: never steal from a live owner */
  return ps.state == 'Z' || ps.state == 'X' || token_of(ps.start_time) != (uint32_t)(word >> 32);
}

bool mproc__tidlock_gone(uint64_t word) { return owner_dead(word); }

static _Atomic uint32_t *futex_half(mproc__tidlock *w) {
  return (_Atomic uint32_t *)(void *)&w->word;
}

/* ---- lock and unlock -------------------------------------------------------- */

static bool cas(mproc__tidlock *w, uint64_t *expect, uint64_t want) {
  return atomic_compare_exchange_strong_explicit(&w->word, expect, want, memory_order_acquire,
                                                 memory_order_relaxed);
}

int mproc__tidlock_trylock(mproc__tidlock *w) {
  uint64_t cur = 0;
  if (MPROC__LIKELY(cas(w, &cur, mproc__tidlock_self())))
    return 0;
  if (owner_dead(cur) && cas(w, &cur, mproc__tidlock_self()))
    return MPROC_EOWNERDEAD;
  return MPROC_EBUSY;
}

/* The sleeping part of a contended acquire; the caller counted itself in
 * w->sleepers (seq_cst) before it, so an unlock after our last look at the
 * word sees us and wakes us. */
static int lock_sleeping(mproc__tidlock *w, uint64_t me, int64_t deadline_ms) {
  uint64_t judged = 0; /* a word that outlived a whole slice */
  for (;;) {
    uint64_t cur = atomic_load(&w->word);
    if (cur == 0) {
      if (cas(w, &cur, me))
        return 0;
      continue;
    }
    if (cur & MPROC__TIDLOCK_PARK)
      return MPROC__TIDLOCK_PARKED; /* its owner is not waited for, but revoked */
    /* The caller's own word, met while it waits for the lock: no caller
     * of this function ever holds the lock it takes (Lock and RLock check
     * ownership first), so the word was written over and is no one's. */
    if (cur == judged && (cur == me || owner_dead(cur))) {
      if (cas(w, &cur, me))
        return MPROC_EOWNERDEAD;
      continue;
    }
    int64_t now = mproc_now_ms();
    if (deadline_ms >= 0 && now >= deadline_ms) {
      /* A last look at the owner: a deadline shorter than a slice (a poll)
       * still finds a dead one. */
      if (cur != judged && owner_dead(cur) && cas(w, &cur, me))
        return MPROC_EOWNERDEAD;
      return MPROC_ETIMEDOUT;
    }
    int64_t until = deadline_ms >= 0 && deadline_ms < now + SLICE_MS ? deadline_ms : now + SLICE_MS;
    /* The low half holds the tid: it changes whenever the owner does. */
    int r = mproc__futex_wait(futex_half(w), (uint32_t)cur, until, true);
    if (r == MPROC_ETIMEDOUT)
      judged = cur; /* a whole slice unchanged: judge its owner next round */
    else if (r != 0)
      return r;
  }
}

int mproc__tidlock_lock_slow(mproc__tidlock *w, int64_t deadline_ms) {
  uint64_t me = mproc__tidlock_self(), cur = 0;
  for (int i = 0; i < SPINS; i++) {
    mproc__cpu_relax();
    cur = atomic_load_explicit(&w->word, memory_order_relaxed);
    if (cur == 0 && cas(w, &cur, me))
      return 0;
    if (cur & MPROC__TIDLOCK_PARK)
      return MPROC__TIDLOCK_PARKED;
  }
  atomic_fetch_add(&w->sleepers, 1);
  mproc__fence_heavy(); /* the unlocker's side of the pair is light */
  int r = lock_sleeping(w, me, deadline_ms);
  atomic_fetch_sub(&w->sleepers, 1);
  return r;
}

void mproc__tidlock_wake_slow(mproc__tidlock *w) { mproc__futex_wake(futex_half(w), 1, true); }
