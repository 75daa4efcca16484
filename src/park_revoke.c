/* Revoking a parked lock word: what a thread does that needs a lock some
 * other thread keeps parked between its calls (a queue's side, queue.h; a
 * Lock, sync.h).
 *
 * Design notes.  The parker enters a critical section by storing busy = 1,
 * a light fence (a compiler barrier once membarrier is registered) and a
 * look at `revoke` and the word; it backs off when it sees a revoker.  The
 * revoker counts itself in `revoke`, makes the heavy fence (membarrier:
 * every CPU running a registered process executes a full barrier), then
 * waits for busy to read 0: either the parker saw the count or the revoker
 * sees busy, never both inside.  States of one revocation:
 *
 *   counted --busy 0--> CAS from cur: held (0), or the word moved (1)
 *   counted --busy 1, spins over--> asleep on busy, one slice at a time
 *   asleep --a slice passes, the parker's thread gone--> CAS: held,
 *            MPROC_EOWNERDEAD (its data is as it left it)
 *   asleep --the deadline passes--> MPROC_ETIMEDOUT (or EOWNERDEAD, gone)
 *
 * A stopped parker blocks a revoker only while inside, like any holder.
 * The slices are why a parker that died inside is found: nobody wakes a
 * revoker for a death, so it judges the parker through /proc (tidlock.c)
 * after each.  A revoker whose membarrier is refused (a seccomp filter)
 * cannot trust busy: it sleeps on the word itself, counted as one of its
 * sleepers, until the parker gives the parking up (which it does at its
 * next call once it sees `revoke`) or is found gone. */
#include "park_revoke.h"
#include "futex.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Rounds a revoker spins on a busy parker before it sleeps; its longest
 * sleep before it judges whether the parker still lives (as tidlock.c). */
#define SPINS 100
#define SLICE_MS 10

/* The end of the next sleep slice: SLICE_MS from now, or the deadline. */
static int64_t slice_end(int64_t now, int64_t deadline_ms) {
  return deadline_ms >= 0 && deadline_ms < now + SLICE_MS ? deadline_ms : now + SLICE_MS;
}

/* Waits until the parker of the word `cur` is outside: 0, MPROC_EOWNERDEAD
 * (it died inside), 1 (the word changed), MPROC_ETIMEDOUT or -errno. */
static int await_unbusy(mproc__tidlock *m, uint64_t cur, _Atomic uint32_t *busy,
                        int64_t deadline_ms) {
  for (int i = 0;; i++) {
    uint32_t b = atomic_load_explicit(busy, memory_order_acquire);
    if (b == 0)
      return 0;
    if (atomic_load_explicit(&m->word, memory_order_relaxed) != cur)
      return 1;
    if (i < SPINS) {
      mproc__cpu_relax();
      continue;
    }
    int64_t now = mproc_now_ms();
    if (deadline_ms >= 0 && now >= deadline_ms)
      return mproc__tidlock_gone(cur) ? MPROC_EOWNERDEAD : MPROC_ETIMEDOUT;
    int r = mproc__futex_wait(busy, b, slice_end(now, deadline_ms), true);
    if (r == MPROC_ETIMEDOUT && mproc__tidlock_gone(cur))
      return MPROC_EOWNERDEAD;
    if (r != 0 && r != MPROC_ETIMEDOUT)
      return r;
  }
}

/* The same without a working membarrier: waits, counted as a sleeper of
 * the word, for the parker to give it up or to be found gone (its stores
 * are all done then): 0 or MPROC_EOWNERDEAD (gone inside) to take the
 * word, 1 when the word changed, MPROC_ETIMEDOUT or -errno. */
static int await_handover(mproc__tidlock *m, uint64_t cur, _Atomic uint32_t *busy,
                          int64_t deadline_ms) {
  _Atomic uint32_t *low = (_Atomic uint32_t *)(void *)&m->word; /* as tidlock.c sleeps */
  atomic_fetch_add(&m->sleepers, 1);
  int r = 1;
  while (atomic_load(&m->word) == cur) {
    int64_t now = mproc_now_ms();
    bool last = deadline_ms >= 0 && now >= deadline_ms;
    int w = last ? MPROC_ETIMEDOUT
                 : mproc__futex_wait(low, (uint32_t)cur, slice_end(now, deadline_ms), true);
    if (w == MPROC_ETIMEDOUT && mproc__tidlock_gone(cur)) {
      r = atomic_load_explicit(busy, memory_order_acquire) == 0 ? 0 : MPROC_EOWNERDEAD;
      break;
    }
    if (last || (w != 0 && w != MPROC_ETIMEDOUT)) {
      r = last ? MPROC_ETIMEDOUT : w;
      break;
    }
  }
  atomic_fetch_sub(&m->sleepers, 1);
  return r;
}

int mproc__park_revoke(mproc__tidlock *m, uint64_t cur, _Atomic uint32_t *revoke,
                       _Atomic uint32_t *busy, int64_t deadline_ms) {
  atomic_fetch_add(revoke, 1);
  /* The heavy fence (futex.h), whose membarrier we must know succeeded:
   * without it the parker's busy word cannot be trusted. */
  atomic_thread_fence(memory_order_seq_cst);
  bool fenced = syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
  int r =
      fenced ? await_unbusy(m, cur, busy, deadline_ms) : await_handover(m, cur, busy, deadline_ms);
  /* From exactly the parked word we judged: if it changed, start again. */
  if ((r == 0 || r == MPROC_EOWNERDEAD) &&
      !atomic_compare_exchange_strong(&m->word, &cur, mproc__tidlock_who()))
    r = 1;
  atomic_fetch_sub(revoke, 1);
  return r;
}
