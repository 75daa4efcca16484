/* Parking a Lock in the one process that uses it (sync.h, "parking a
 * Lock"): the decision to park, and the revoking of a parking.
 *
 * Design notes.  A Lock's uncontended round trip is one compare-and-swap
 * and a store, and the locked instruction is most of it (7 of 12 ns on the
 * bench machine).  A process that is alone with a lock can skip it, as the
 * queue's sides do (queue.h): states of the word, from the parker's side,
 *
 *   held by T --T releases, may park--> parked by T (busy 0)
 *   parked (busy 0) --T acquires: busy = 1, light fence, revoke 0?--> parked (busy 1)
 *   parked (busy 1) --T releases: busy = 0, light fence--> parked (busy 0)
 *   parked --a revoker: revoke++, heavy fence, busy 0?, CAS--> held by the revoker
 *   parked (busy 1), T dead --a revoker judges it after a slice, CAS-->
 *          held by the revoker, MPROC_EOWNERDEAD
 *
 * and T backs off (busy = 0, unpark, the normal path) whenever it sees a
 * revoker counted.  Either T sees the revoker's count or the revoker sees
 * T's busy (membarrier makes T's compiler barrier a full fence for that
 * moment), so they are never both inside.  A stopped T blocks a revoker only
 * while inside, like any holder; a dead T outside leaves busy 0 and the
 * lock is simply free.  Who may park (`parker`, one thread per lock) and
 * why is in sync.h.  After a revocation the holder waits `skip` releases
 * before parking again, doubling each time: two processes taking turns
 * would otherwise pay a membarrier per hand-over.
 *
 * A revoker whose membarrier is refused (a seccomp filter) cannot trust
 * busy: it sleeps on the word until T gives the parking up, which T does at
 * its next acquire or release once it sees `revoke`, or until T is found
 * gone; a live T that makes no further call keeps it waiting up to its
 * deadline. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Rounds a revoker spins on a busy parker before it sleeps; its longest
 * sleep before it judges whether the parker still lives (as tidlock.c). */
#define SPINS 100
#define SLICE_MS 10
/* Longest wait, in releases, before parking again after a revocation. */
#define PAUSE_MAX (1u << 20)

static void wake_word(mproc__tidlock *m) {
  mproc__fence_light();
  mproc__tidlock_wake(m);
}

void mproc__lockpark_unpark_mine(mproc__tidlock *m, struct mproc__lockpark *pk) {
  uint64_t parked = mproc__tidlock_who() | MPROC__TIDLOCK_PARK;
  if (atomic_load_explicit(&m->word, memory_order_relaxed) == parked &&
      atomic_load_explicit(&pk->busy, memory_order_relaxed) == 0 &&
      atomic_compare_exchange_strong(&m->word, &parked, 0))
    wake_word(m);
}

/* The next parking waits `skip` normal releases, twice as many as the
 * last time: a revoker that keeps coming back would otherwise pay a
 * membarrier per hand-over.  Written by the holder, or by a parker giving
 * its parking up (a hint either way: a lost update only moves the next
 * parking). */
static void pause_parking(struct mproc__lockpark *pk) {
  uint32_t pause = atomic_load_explicit(&pk->pause, memory_order_relaxed);
  pause = pause == 0 ? 64 : pause < PAUSE_MAX ? pause * 2 : PAUSE_MAX;
  atomic_store_explicit(&pk->pause, pause, memory_order_relaxed);
  atomic_store_explicit(&pk->skip, pause, memory_order_relaxed);
}

void mproc__lockpark_yield(mproc__tidlock *m, struct mproc__lockpark *pk) {
  mproc__futex_wake(&pk->busy, INT_MAX, true);
  pause_parking(pk);
  mproc__lockpark_unpark_mine(m, pk);
}

/* Whether the calling thread may be the lock's parker: it is, or it claims
 * the place (free, or its thread gone; judged through /proc only when the
 * skip count allows, as that read costs a system call). */
static bool claim(struct mproc__lockpark *pk, uint64_t me) {
  uint64_t p = atomic_load_explicit(&pk->parker, memory_order_relaxed);
  if (MPROC__LIKELY(p == me))
    return true;
  if (p != 0) {
    pause_parking(pk);
    if (!mproc__tidlock_gone(p))
      return false;
  }
  return atomic_compare_exchange_strong(&pk->parker, &p, me);
}

void mproc__lockpark_release(mproc__tidlock *m, struct mproc__lockpark *pk) {
  uint64_t me = mproc__tidlock_who();
  uint32_t skip = atomic_load_explicit(&pk->skip, memory_order_relaxed);
  bool park = false;
  if (skip > 0)
    atomic_store_explicit(&pk->skip, skip - 1, memory_order_relaxed);
  else
    park = mproc__fence_asym() && atomic_load_explicit(&m->sleepers, memory_order_relaxed) == 0 &&
           atomic_load_explicit(&pk->revoke, memory_order_relaxed) == 0 && claim(pk, me);
  mproc__tidlock_held = NULL;
  if (!park) {
    mproc__tidlock_unlock(m);
    return;
  }
  atomic_store_explicit(&m->word, me | MPROC__TIDLOCK_PARK, memory_order_release);
  /* A waiter that came meanwhile finds the word parked and revokes. */
  wake_word(m);
}

/* Waits, counted in `revoke` after the heavy fence, until the parker of the
 * word `cur` is outside: 0, MPROC_EOWNERDEAD (it died inside), 1 (the word
 * changed), MPROC_ETIMEDOUT or -errno. */
static int await_unbusy(mproc__tidlock *m, struct mproc__lockpark *pk, uint64_t cur,
                        int64_t deadline_ms) {
  for (int i = 0;; i++) {
    uint32_t b = atomic_load_explicit(&pk->busy, memory_order_acquire);
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
    int64_t until = deadline_ms >= 0 && deadline_ms < now + SLICE_MS ? deadline_ms : now + SLICE_MS;
    int r = mproc__futex_wait(&pk->busy, b, until, true);
    if (r == MPROC_ETIMEDOUT && mproc__tidlock_gone(cur))
      return MPROC_EOWNERDEAD;
    if (r != 0 && r != MPROC_ETIMEDOUT)
      return r;
  }
}

/* The same without a working membarrier: waits, counted as a sleeper of
 * the word, for the parker to give it up or to be found gone. */
static int await_handover(mproc__tidlock *m, struct mproc__lockpark *pk, uint64_t cur,
                          int64_t deadline_ms) {
  _Atomic uint32_t *low = (_Atomic uint32_t *)(void *)&m->word; /* as tidlock.c sleeps */
  atomic_fetch_add(&m->sleepers, 1);
  int r = 1;
  while (atomic_load(&m->word) == cur) {
    int64_t now = mproc_now_ms();
    bool last = deadline_ms >= 0 && now >= deadline_ms;
    int w =
        last ? MPROC_ETIMEDOUT
             : mproc__futex_wait(low, (uint32_t)cur,
                                 deadline_ms >= 0 && deadline_ms < now + SLICE_MS ? deadline_ms
                                                                                  : now + SLICE_MS,
                                 true);
    if (w == MPROC_ETIMEDOUT && mproc__tidlock_gone(cur)) {
      r = atomic_load_explicit(&pk->busy, memory_order_acquire) == 0 ? 0 : MPROC_EOWNERDEAD;
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

int mproc__lockpark_revoke(mproc__tidlock *m, struct mproc__lockpark *pk, int64_t deadline_ms) {
  uint64_t me = mproc__tidlock_who();
  uint64_t cur = atomic_load(&m->word);
  if (!(cur & MPROC__TIDLOCK_PARK))
    return 1;
  if (cur == (me | MPROC__TIDLOCK_PARK)) {
    /* Our own parking: held by us, or we are outside and take it back. */
    if (atomic_load_explicit(&pk->busy, memory_order_relaxed) != 0)
      return MPROC_EBUSY;
    return atomic_compare_exchange_strong(&m->word, &cur, me) ? 0 : 1;
  }
  atomic_fetch_add(&pk->revoke, 1);
  /* The heavy fence (futex.h), whose membarrier we must know succeeded:
   * without it the parker's busy word cannot be trusted. */
  atomic_thread_fence(memory_order_seq_cst);
  bool fenced = syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
  int r = fenced ? await_unbusy(m, pk, cur, deadline_ms) : await_handover(m, pk, cur, deadline_ms);
  /* From exactly the parked word we judged: if it changed, start again. */
  if ((r == 0 || r == MPROC_EOWNERDEAD) && !atomic_compare_exchange_strong(&m->word, &cur, me))
    r = 1;
  atomic_fetch_sub(&pk->revoke, 1);
  if (r == 0 || r == MPROC_EOWNERDEAD)
    pause_parking(pk); /* held now */
  return r;
}
