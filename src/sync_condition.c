/* Condition: a condition variable with a ticket per waiter, over a robust
 * RLock.
 *
 * Design notes.  The condition embeds its RLock (Python's Condition()
 * default) so it holds no pointer.  Python gives each waiter a lock of its
 * own, and notify(n) releases the first n of them: exactly n waiters wake.
 * Here each waiter takes one of COND_SLOTS slots, whose word is both its
 * ticket (FIFO order) with its state and the futex word it sleeps on; the
 * slot's owner records the waiting thread (tidlock.h's word: tid and birth
 * token).  One slot:
 *
 *   free --wait: take it, ticket = next_ticket++--> waiting
 *   waiting --notify (oldest tickets first, owner alive)--> notified
 *   waiting/notified --the waiter re-acquired the lock--> free
 *   waiting/notified --owner dead: notify skips it, wait takes it back--> free
 *
 *   wait:    [lock held] take a slot; release the lock fully (remember the
 *            depth) -> sleep while the word is not `notified` (until the
 *            deadline) -> re-acquire at the same depth -> [lock held] read
 *            the state (notified: return 0, even at the deadline) and free
 *            the slot
 *   notify:  [lock held] mark the n oldest waiting slots notified, and
 *            record a wake-up for each on the lock
 *   release: [final release of the lock] unlock, then FUTEX_WAKE the
 *            recorded words
 *
 * Every change of a slot is made under the lock, so a notify sees exactly
 * the waiters that registered before it and have not left: a waiter that
 * timed out freed its slot before anyone could notify it again, and one
 * that was notified as it timed out returns 0, so no notification is lost
 * or given to a waiter that is gone.  The waiter sleeps on its own word and
 * re-reads its state after every wake-up, so a spurious futex wake-up only
 * sends it back to sleep.  Before notifying a slot, notify checks through
 * /proc that its owner lives (a /proc read per notified waiter): a dead
 * waiter's slot is freed and the notification goes to the next one.
 *
 * More than COND_SLOTS waiters at once: the rest count themselves in
 * `overflow` and sleep on words[OVERFLOW], a sequence number.  A notify
 * picks slot holders first; if n is not used up and there are overflow
 * waiters, it bumps the sequence, which wakes every overflow waiter (more
 * than n: spurious wake-ups, which Condition allows).  The slot table is
 * bounded because it lives in the public MPROC_COND_SIZE storage.
 *
 * The wake-up is deferred to the notifier's final release of the lock (wait
 * releases it too) so that woken waiters find the lock free instead of
 * colliding with the notifier that still holds it: a round trip then costs
 * what a raw futex ping-pong costs.  Every release path of the lock makes
 * the deferred wake-ups, including mproc_rlock_release on mproc_cond_lock().
 *
 * Deaths, exactly:
 *  - waiter killed while asleep: it leaves the futex queue with its process;
 *    its slot stays taken until a notify skips it or a wait needing a slot
 *    takes it back.  notify(1) wakes a live waiter.
 *  - waiter killed after being notified, before re-acquiring the lock: it
 *    received that notification, exactly as if it had returned and then died.
 *  - notifier (or any lock holder) killed while holding the lock: the next
 *    acquirer finds the owner dead and takes the lock over (tidlock.c,
 *    within one slice), and a waiter re-acquiring it returns
 *    MPROC_EOWNERDEAD holding it.  Notifications already made stand: the
 *    slots read `notified`, and since the dead notifier never made its
 *    deferred wake-up, sleepers re-read their word every
 *    MPROC__COND_RECHECK_MS and so return within that bound.  No
 *    notification is lost.
 *  - waiter killed while holding the lock (before or after wait): as for a
 *    notifier. */
#include "futex.h"
#include "sync.h"
#include "tidlock.h"

#include <limits.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

#define MPROC__COND_RECHECK_MS 100

/* Waiter slots: each slot is one waiting thread's ticket and futex word. */
#define COND_SLOTS 10
#define OVERFLOW COND_SLOTS /* words[OVERFLOW]: the overflow waiters' sequence */

/* A slot word: the ticket (FIFO order, 30 bits, wrapping) above the state. */
enum { SLOT_FREE = 0, SLOT_WAITING = 1, SLOT_NOTIFIED = 2 };
#define SLOT_STATE(w) ((w)&3u)
#define SLOT_WORD(ticket, state) ((uint32_t)(ticket) << 2 | (state))
#define TICKET_MASK 0x3fffffffu

struct mproc_cond {
  struct mproc__sync_hdr hdr;
  /* The futex words: words[i] for slot i (written under the lock, except
   * by its own waiter leaving it), words[OVERFLOW] bumped by a notify that
   * reaches the overflow waiters. */
  _Atomic uint32_t words[COND_SLOTS + 1];
  uint32_t next_ticket;      /* the ticket of the next slot taken (lock held) */
  _Atomic uint32_t overflow; /* waiters without a slot (dead ones stay) */
  uint32_t pad;
  /* The RLock, 8-aligned at offset 64: it uses the first
   * MPROC__RLOCK_HOT_SIZE bytes of its storage (checked in sync_lock.c), and
   * the slot owners live in the rest. */
  union {
    _Alignas(8) char lock[MPROC_RLOCK_SIZE];
    struct {
      char used[MPROC__RLOCK_HOT_SIZE];
      uint64_t owner[COND_SLOTS]; /* slot i's waiter (mproc__tidlock_who), lock held */
    } tail;
  } l;
};

_Static_assert(sizeof(struct mproc_cond) <= MPROC_COND_SIZE, "MPROC_COND_SIZE too small");
_Static_assert(offsetof(struct mproc_cond, l) == 64, "the RLock moved");
_Static_assert(sizeof(((struct mproc_cond *)0)->l) == MPROC_RLOCK_SIZE, "slot owners overflow");
_Static_assert(COND_SLOTS + 1 <= 32, "a wake mask bit per futex word");

static mproc_rlock *lock_of(mproc_cond *c) { return (mproc_rlock *)(void *)c->l.lock; }

static int cond_setup(void *obj, const void *arg) {
  (void)arg;
  struct mproc_cond *c = obj;
  mproc_rlock *l;
  int r = mproc_rlock_init(&l, c->l.lock, sizeof c->l.lock);
  if (r == 0)
    mproc__rlock_mark_cond(l, c->words);
  return r;
}

/* Refused while the lock is held (MPROC_EBUSY). */
static int cond_retire(void *obj) { return mproc_rlock_destroy(lock_of(obj)); }

/* Mapped from an fd, refused while the caller holds the lock. */
static int cond_detach(void *obj) { return mproc__rlock_detach(lock_of(obj)); }

static const struct mproc__sync_kind cond_kind = {.magic = MPROC__MAGIC_COND,
                                                  .size = MPROC_COND_SIZE,
                                                  .setup = cond_setup,
                                                  .retire = cond_retire,
                                                  .detach = cond_detach};

/* mproc_cond_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_cond, cond_kind, MPROC_COND_SIZE)

MPROC_EXTERN mproc_rlock *mproc_cond_lock(mproc_cond *c) {
  return mproc__sync_ok(c, MPROC__MAGIC_COND) ? lock_of(c) : NULL;
}

MPROC_EXTERN int mproc_cond_acquire(mproc_cond *c, int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND))
    return MPROC_EINVAL;
  return mproc_rlock_acquire(lock_of(c), timeout_ms);
}

MPROC_EXTERN int mproc_cond_release(mproc_cond *c) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND))
    return MPROC_EINVAL;
  return mproc_rlock_release(lock_of(c));
}

/* A slot for the calling waiter (lock held), or -1 when all are taken by
 * live waiters.  A slot whose waiter died is taken back here, so dead
 * waiters never fill the table for good. */
static int slot_take(struct mproc_cond *c) {
  int dead = -1;
  for (int i = 0; i < COND_SLOTS; i++) {
    uint32_t w = atomic_load_explicit(&c->words[i], memory_order_relaxed);
    if (SLOT_STATE(w) == SLOT_FREE)
      return i;
  }
  for (int i = 0; i < COND_SLOTS && dead < 0; i++)
    if (mproc__tidlock_gone(c->l.tail.owner[i]))
      dead = i;
  return dead;
}

/* The waiting slot with the oldest ticket (lock held), or -1. */
static int slot_oldest(struct mproc_cond *c) {
  int best = -1;
  uint32_t best_age = 0;
  for (int i = 0; i < COND_SLOTS; i++) {
    uint32_t w = atomic_load_explicit(&c->words[i], memory_order_relaxed);
    uint32_t age = (c->next_ticket - (w >> 2)) & TICKET_MASK;
    if (SLOT_STATE(w) == SLOT_WAITING && (best < 0 || age > best_age)) {
      best = i;
      best_age = age;
    }
  }
  return best;
}

/* Sleeps on `word` until the waiter is notified: its slot word reads
 * SLOT_NOTIFIED (by_state), or the overflow sequence moved from `seen`.
 * Futex wake-ups that are not a notification (spurious, or for another
 * word's sleeper sharing its hash) only send it back to sleep. */
static int cond_sleep(_Atomic uint32_t *word, uint32_t seen, bool by_state, int64_t deadline) {
  for (;;) {
    uint32_t w = atomic_load_explicit(word, memory_order_acquire);
    if (by_state ? SLOT_STATE(w) == SLOT_NOTIFIED : w != seen)
      return 0;
    /* Sleep in slices: a notifier that dies between notify and its final
     * release never makes the deferred wake-up (see the design notes). */
    int r = mproc__futex_wait_capped(word, w, deadline, MPROC__COND_RECHECK_MS, true);
    if (r != 0)
      return r;
  }
}

/* One wait against an absolute deadline; the lock is held on entry and on
 * every return except a failed re-acquisition (MPROC_ENOTRECOVERABLE). */
static int cond_wait_until(mproc_cond *c, int64_t deadline) {
  mproc_rlock *l = lock_of(c);
  int slot = slot_take(c);
  _Atomic uint32_t *word = &c->words[slot >= 0 ? slot : OVERFLOW];
  uint32_t seen;
  if (slot >= 0) {
    c->l.tail.owner[slot] = mproc__tidlock_who();
    seen = SLOT_WORD(c->next_ticket, SLOT_WAITING);
    c->next_ticket = (c->next_ticket + 1) & TICKET_MASK;
    atomic_store_explicit(word, seen, memory_order_relaxed);
  } else {
    seen = atomic_load_explicit(word, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->overflow, 1, memory_order_relaxed);
  }
  int depth;
  int r = mproc__rlock_release_all(l, &depth);
  int err = r == 0 ? cond_sleep(word, seen, slot >= 0, deadline) : r;
  int back = r == 0 ? mproc__rlock_reacquire(l, depth, -1) : 0;
  /* The lock is held again (unless not recoverable): a notification that
   * came before this point counts, even when the sleep timed out, and the
   * slot goes back so that no later notify counts this waiter. */
  bool notified;
  if (slot >= 0) {
    notified = SLOT_STATE(atomic_load_explicit(word, memory_order_relaxed)) == SLOT_NOTIFIED;
    atomic_store_explicit(word, SLOT_FREE, memory_order_relaxed);
  } else {
    notified = atomic_load_explicit(word, memory_order_relaxed) != seen;
    atomic_fetch_sub_explicit(&c->overflow, 1, memory_order_relaxed);
  }
  if (r != 0)
    return r;
  if (back != 0)
    return back; /* MPROC_EOWNERDEAD (held) or MPROC_ENOTRECOVERABLE */
  if (notified)
    return 0;
  return err != 0 ? err : MPROC_ETIMEDOUT;
}

MPROC_EXTERN int mproc_cond_wait(mproc_cond *c, int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  return cond_wait_until(c, mproc__deadline(timeout_ms));
}

MPROC_EXTERN int mproc_cond_wait_for(mproc_cond *c, int (*pred)(void *arg), void *arg,
                                     int64_t timeout_ms) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || pred == NULL ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  int64_t deadline = mproc__deadline(timeout_ms);
  while (!pred(arg)) {
    if (deadline >= 0 && mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    int r = cond_wait_until(c, deadline);
    if (r != 0 && r != MPROC_ETIMEDOUT)
      return r;
  }
  return 0;
}

MPROC_EXTERN int mproc_cond_notify(mproc_cond *c, int n) {
  if (!mproc__sync_ok(c, MPROC__MAGIC_COND) || n < 0)
    return MPROC_EINVAL;
  if (mproc_rlock_depth(lock_of(c)) <= 0)
    return MPROC_ENOTOWNER;
  /* The notifications themselves happen now (under the lock), oldest
   * waiter first; the wake-ups are made by the final release of the lock. */
  uint32_t mask = 0;
  int i;
  /* Whether a waiter is alive matters only when some waiter is left out:
   * when n covers every waiter, a dead one's notification deprives nobody,
   * and the /proc look-up (microseconds) is skipped -- the common
   * one-waiter hand-off stays a few stores and one wake-up. */
  int waiting = 0;
  for (int k = 0; k < COND_SLOTS; k++)
    waiting += SLOT_STATE(atomic_load_explicit(&c->words[k], memory_order_relaxed)) == SLOT_WAITING;
  bool check = n < waiting || atomic_load_explicit(&c->overflow, memory_order_relaxed) > 0;
  while (n > 0 && (i = slot_oldest(c)) >= 0) {
    if (check && mproc__tidlock_gone(c->l.tail.owner[i])) {
      /* A dead waiter's ticket must not swallow the notification. */
      atomic_store_explicit(&c->words[i], SLOT_FREE, memory_order_relaxed);
      continue;
    }
    uint32_t w = atomic_load_explicit(&c->words[i], memory_order_relaxed);
    atomic_store_explicit(&c->words[i], (w & ~3u) | SLOT_NOTIFIED, memory_order_release);
    mask |= 1u << i;
    n--;
  }
  if (n > 0 && atomic_load_explicit(&c->overflow, memory_order_relaxed) > 0) {
    atomic_fetch_add_explicit(&c->words[OVERFLOW], 1, memory_order_release);
    mask |= 1u << OVERFLOW;
  }
  if (mask != 0)
    mproc__rlock_defer_wake(lock_of(c), mask);
  return 0;
}

MPROC_EXTERN int mproc_cond_notify_all(mproc_cond *c) { return mproc_cond_notify(c, INT_MAX); }
