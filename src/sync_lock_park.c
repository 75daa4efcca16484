/* Parking a Lock in the one process that uses it (sync.h, "parking a
 * Lock"): the decision to park, and the revoking of a parking (whose wait
 * for the parker, shared with the queue's sides, is park_revoke.c).
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
#include "park_revoke.h"
#include "sync.h"

#include <limits.h>
#include <unistd.h>

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
  int r = mproc__park_revoke(m, cur, &pk->revoke, &pk->busy, deadline_ms);
  if (r == 0 || r == MPROC_EOWNERDEAD)
    pause_parking(pk); /* held now */
  return r;
}
