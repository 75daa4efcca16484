/* Barrier: parties, action, abort/reset, broken state; a dead party breaks it.
 *
 * Design notes.  The state (count of arrivals, generation, broken flag) is
 * guarded by `m`, a robust mutex; `seq` is the futex word every waiter sleeps
 * on and is bumped whenever a round completes, breaks or is reset.
 *
 *   wait: lock -> broken? EBROKEN -> register -> idx = count++
 *         last (count == parties): action -> gen++, count = 0, wake all -> idx
 *               (an action returning non-zero breaks it instead: EBROKEN)
 *         else: sleep on seq, in slices of MPROC__BARRIER_CHECK_MS:
 *               round done (gen moved on) -> idx, or EBROKEN if it was reset
 *               broken -> EBROKEN;   own deadline passed -> break, ETIMEDOUT
 *               a registered party is dead and has not arrived -> break
 *   abort: broken = 1, wake all.   reset: waiters of the current round get
 *          EBROKEN (broken_gen), count = 0, broken = 0, wake all.
 *
 * Knowing that a party died needs to know the parties.  Each party thread
 * registers in a slot (explicitly with mproc_barrier_join, or at its first
 * wait) and holds the slot's robust mutex for as long as it is registered.
 * When it dies the kernel marks that mutex OWNER_DIED, and the trylock every
 * arriving party and every waiter (each MPROC__BARRIER_CHECK_MS) makes on the
 * slots sees it.  A registered party that is dead and has not arrived in the
 * current round can never arrive, so the barrier breaks: waiters learn it
 * within about MPROC__BARRIER_CHECK_MS, later arrivals at once.  A dead
 * party's slot stays marked (it keeps the barrier broken) until reset()
 * forgets dead parties.  So a party that is done for good must call
 * mproc_barrier_leave before it exits: exiting while registered is a death.
 * A process dying while it holds `m` (only ever briefly, or while running
 * the action) breaks the barrier too.  Without a free slot a caller still
 * waits, unregistered: its
 * own death is then only noticed by the others' deadlines. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <string.h>
#include <unistd.h>

#define MPROC__BARRIER_CHECK_MS 20

struct slot {
  pthread_mutex_t m; /* held by the registered party thread while registered */
  pid_t tid;         /* registered thread (kernel tid) */
  pid_t pid;         /* its process */
  uint32_t arrived;  /* generation of the party's last arrival (0: none) */
  uint32_t used;     /* 1 while registered */
};

struct mproc_barrier {
  struct mproc__sync_hdr hdr;
  uint32_t parties;
  _Atomic uint32_t seq; /* futex word: bumped on every release/break/reset */
  pthread_mutex_t m;    /* guards everything below and the slots */
  uint32_t count;       /* arrivals in the current round */
  uint32_t gen;         /* current round, from 1 */
  uint32_t broken;      /* 1 after abort, timeout, failed action, dead party */
  uint32_t broken_gen;  /* a round that reset() ended: its waiters get EBROKEN */
  uint32_t parties_inv; /* ~parties, written once: a damaged `parties` disagrees */
};

_Static_assert(MPROC__ANY_ABI_SIZE(struct slot, 1) <= 64, "barrier slot larger than 64 bytes");
_Static_assert(MPROC__ANY_ABI_SIZE(struct mproc_barrier, 1) <= MPROC_BARRIER_SIZE(0),
               "barrier header too big");

static struct slot *slot_at(mproc_barrier *b, unsigned i) {
  return (struct slot *)(void *)((char *)b + MPROC_BARRIER_SIZE(0) + 64 * (size_t)i);
}

MPROC_EXTERN size_t mproc_barrier_size(unsigned parties) {
  return parties == 0 || parties > MPROC_BARRIER_MAX_PARTIES ? 0 : MPROC_BARRIER_SIZE(parties);
}

static int barrier_setup(void *obj, const void *arg) {
  struct mproc_barrier *b = obj;
  unsigned parties = *(const unsigned *)arg;
  int r = mproc__rmutex_init(&b->m, false);
  for (unsigned i = 0; r == 0 && i < parties; i++)
    r = mproc__rmutex_init(&slot_at(b, i)->m, false);
  if (r != 0)
    return r;
  b->parties = parties;
  b->parties_inv = ~parties;
  b->gen = 1;
  return 0;
}

static size_t barrier_size_of(const void *obj) {
  return MPROC_BARRIER_SIZE(((const struct mproc_barrier *)obj)->parties);
}

/* `parties` bounds every walk over the slots and the object's size, and
 * any process mapping the barrier can overwrite it: it is believed only in
 * range and matching its complement, so a damaged one is MPROC_ECORRUPT
 * and never a walk past the mapping. */
static bool barrier_valid(const void *obj) {
  const struct mproc_barrier *b = obj;
  if (b->parties < 1 || b->parties > MPROC_BARRIER_MAX_PARTIES || b->parties_inv != ~b->parties ||
      !mproc__rmutex_plain_intact(&b->m))
    return false;
  /* The mutexes' type words too: libc aborts on a type it does not know. */
  for (unsigned i = 0; i < b->parties; i++)
    if (!mproc__rmutex_plain_intact(
            &((const struct slot *)(const void *)((const char *)b + MPROC_BARRIER_SIZE(0) +
                                                  64 * (size_t)i))
                 ->m))
      return false;
  return true;
}

/* 0, MPROC_EINVAL (not a barrier) or MPROC_ECORRUPT (a damaged one). */
static int barrier_check(const mproc_barrier *b) {
  if (!mproc__sync_ok(b, MPROC__MAGIC_BARRIER))
    return MPROC_EINVAL;
  return barrier_valid(b) ? 0 : MPROC_ECORRUPT;
}

static int barrier_retire(void *obj);
static int barrier_detach(void *obj);

static const struct mproc__sync_kind barrier_kind = {.magic = MPROC__MAGIC_BARRIER,
                                                     .size_of = barrier_size_of,
                                                     .setup = barrier_setup,
                                                     .retire = barrier_retire,
                                                     .valid = barrier_valid,
                                                     .detach = barrier_detach};

MPROC_EXTERN int mproc_barrier_init(mproc_barrier **out, void *storage, size_t size,
                                    unsigned parties) {
  size_t need = mproc_barrier_size(parties);
  if (need == 0)
    return MPROC_EINVAL;
  return mproc__sync_init(&barrier_kind, out, storage, size, need, &parties);
}

MPROC_EXTERN int mproc_barrier_new(mproc_barrier **out, unsigned parties) {
  size_t need = mproc_barrier_size(parties);
  if (need == 0)
    return MPROC_EINVAL;
  return mproc__sync_new(&barrier_kind, out, need, &parties);
}

/* Take the state lock by the absolute deadline (-1: none).  A holder that
 * died may have left the state half updated: the barrier is broken (reset
 * repairs it).  The lock is taken in slices: a word that stays held by no
 * existing thread was damaged by hand and would never be freed, so it is
 * MPROC_ECORRUPT instead of a wait for ever. */
#define STATE_SLICE_MS 100
#define STATE_GRACE_MS 1000
static int state_lock_by(mproc_barrier *b, int64_t deadline) {
  for (;;) {
    int64_t slice = mproc__deadline(STATE_SLICE_MS);
    bool last = deadline >= 0 && deadline <= slice;
    int r = mproc__rmutex_lock(&b->m, last ? deadline : slice);
    if (r == MPROC_EOWNERDEAD) {
      b->broken = 1;
      pthread_mutex_consistent(&b->m);
      return 0;
    }
    if (r != MPROC_ETIMEDOUT || last)
      return r;
    if (mproc__rmutex_owner_gone(&b->m))
      return MPROC_ECORRUPT;
  }
}

static int state_lock(mproc_barrier *b) { return state_lock_by(b, -1); }

static void state_unlock(mproc_barrier *b) { pthread_mutex_unlock(&b->m); }

static void wake_all(mproc_barrier *b) {
  atomic_fetch_add_explicit(&b->seq, 1, memory_order_release);
  mproc__futex_wake(&b->seq, INT_MAX, true);
}

static void set_broken(mproc_barrier *b) {
  b->broken = 1;
  wake_all(b);
}

/* The caller's slot: recorded ids alone are not enough, a dead party's tid
 * and pid may have been recycled for the caller (pid wrap, another pid
 * namespace), so the slot's mutex must be held by the caller too. */
static struct slot *own_slot(mproc_barrier *b) {
  pid_t tid = mproc__gettid(), pid = getpid();
  for (unsigned i = 0; i < b->parties; i++) {
    struct slot *s = slot_at(b, i);
    if (s->used && s->tid == tid && s->pid == pid && mproc__rmutex_mine(&s->m))
      return s;
  }
  return NULL;
}

/* Under the state lock: whether the slot's party died (its thread exited or
 * its process died without leaving).  The slot stays marked used: a dead
 * party keeps breaking the barrier until reset() clears it. */
static bool slot_dead(struct slot *s) {
  int r = pthread_mutex_trylock(&s->m);
  if (r == EBUSY)
    return false;
  if (r == EOWNERDEAD)
    pthread_mutex_consistent(&s->m);
  if (r == 0 || r == EOWNERDEAD)
    pthread_mutex_unlock(&s->m); /* free again; `used` records the death */
  return true;
}

/* Under the state lock: a registered party that died without arriving in the
 * current round can never arrive: the barrier is broken.  (One that arrived
 * and then died is noticed in the next round.) */
static void check_parties(mproc_barrier *b) {
  struct slot *mine = own_slot(b);
  for (unsigned i = 0; i < b->parties && !b->broken; i++) {
    struct slot *s = slot_at(b, i);
    if (s->used && s != mine && s->arrived != b->gen && slot_dead(s))
      set_broken(b);
  }
}

/* Under the state lock (reset): forget parties that died. */
static void reclaim_dead(mproc_barrier *b) {
  struct slot *mine = own_slot(b);
  for (unsigned i = 0; i < b->parties; i++) {
    struct slot *s = slot_at(b, i);
    if (s->used && s != mine && slot_dead(s))
      s->used = 0;
  }
}

/* Under the state lock: register the caller.  MPROC_EFULL without a slot. */
static int join_locked(mproc_barrier *b) {
  if (own_slot(b) != NULL)
    return 0;
  check_parties(b);
  for (unsigned i = 0; i < b->parties; i++) {
    struct slot *s = slot_at(b, i);
    if (s->used)
      continue;
    if (pthread_mutex_trylock(&s->m) != 0)
      continue;
    s->tid = mproc__gettid();
    s->pid = getpid();
    s->arrived = 0;
    s->used = 1;
    return 0;
  }
  return MPROC_EFULL;
}

static void leave_locked(mproc_barrier *b) {
  struct slot *s = own_slot(b);
  if (s != NULL) {
    s->used = 0;
    pthread_mutex_unlock(&s->m);
  }
}

/* Under the state lock: slot mutexes held by threads of this process sit on
 * those threads' robust lists, so the memory must not go away (or be
 * unmapped here) under them.  The caller's own slot is released; another
 * thread's refuses with MPROC_EBUSY. */
static int drop_own_slots(mproc_barrier *b) {
  leave_locked(b);
  pid_t pid = getpid();
  for (unsigned i = 0; i < b->parties; i++) {
    struct slot *s = slot_at(b, i);
    if (!s->used || s->pid != pid)
      continue;
    int t = pthread_mutex_trylock(&s->m);
    if (t == EBUSY)
      return MPROC_EBUSY;
    if (t == EOWNERDEAD)
      pthread_mutex_consistent(&s->m);
    if (t == 0 || t == EOWNERDEAD) {
      pthread_mutex_unlock(&s->m);
      s->used = 0;
    }
  }
  return 0;
}

/* A process that mapped the barrier from an fd stops using it: its parties
 * leave, the barrier stays for the others. */
static int leave(mproc_barrier *b, bool retire) {
  int r = state_lock(b);
  if (r != 0)
    return r;
  r = drop_own_slots(b);
  if (r == 0 && retire) {
    if (b->count > 0 && !b->broken) {
      r = MPROC_EBUSY; /* parties are waiting */
    } else {
      mproc__sync_clear(b); /* before the waiters woken here look again */
      wake_all(b);
    }
  }
  state_unlock(b);
  return r;
}

static int barrier_detach(void *obj) { return leave(obj, false); }

/* The last handle goes: refused while parties wait. */
static int barrier_retire(void *obj) { return leave(obj, true); }

/* mproc_barrier_destroy, mproc_barrier_free, mproc_barrier_from_fd */
MPROC__SYNC_RELEASE(mproc_barrier, barrier_kind)

/* Runs op(b) under the state lock, after the magic check. */
static int with_state(mproc_barrier *b, int (*op)(mproc_barrier *b)) {
  int r = barrier_check(b);
  if (r != 0)
    return r;
  r = state_lock(b);
  if (r != 0)
    return r;
  r = op(b);
  state_unlock(b);
  return r;
}

MPROC_EXTERN int mproc_barrier_join(mproc_barrier *b) { return with_state(b, join_locked); }

static int leave_op(mproc_barrier *b) {
  int r = own_slot(b) != NULL ? 0 : MPROC_ESTATE;
  leave_locked(b);
  return r;
}

MPROC_EXTERN int mproc_barrier_leave(mproc_barrier *b) { return with_state(b, leave_op); }

MPROC_EXTERN int mproc_barrier_wait_action(mproc_barrier *b, int (*action)(void *arg), void *arg,
                                           int64_t timeout_ms) {
  if (mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  int r = barrier_check(b);
  if (r != 0)
    return r;
  int64_t deadline = mproc__deadline(timeout_ms);
  r = state_lock_by(b, deadline);
  if (r != 0)
    return r;
  if (!b->broken) {
    join_locked(b); /* MPROC_EFULL: wait unregistered */
    check_parties(b);
  }
  if (b->broken) {
    state_unlock(b);
    return MPROC_EBROKEN;
  }
  if (b->count >= b->parties) {
    /* Damaged: this round could never fill, and every waiter would sleep
     * to its deadline (for ever without one). */
    set_broken(b);
    state_unlock(b);
    return MPROC_ECORRUPT;
  }
  uint32_t gen = b->gen;
  int idx = (int)b->count++;
  struct slot *mine = own_slot(b);
  if (mine != NULL)
    mine->arrived = gen;
  if (b->count == b->parties) {
    if (action != NULL && action(arg) != 0) {
      set_broken(b);
      state_unlock(b);
      return MPROC_EBROKEN;
    }
    b->count = 0;
    b->gen++;
    wake_all(b);
    state_unlock(b);
    return idx;
  }
  for (;;) {
    uint32_t s = atomic_load_explicit(&b->seq, memory_order_acquire);
    state_unlock(b);
    r = mproc__futex_wait_capped(&b->seq, s, deadline, MPROC__BARRIER_CHECK_MS, true);
    if (r != 0 && r != MPROC_ETIMEDOUT)
      return r;
    /* Past the deadline the lock is still waited for a while: a timed-out
     * wait breaks the barrier, which needs the lock; only a word held by a
     * thread that never lets go (damaged by hand) runs out the grace. */
    r = state_lock_by(b, deadline < 0 ? -1 : deadline + STATE_GRACE_MS);
    if (r != 0)
      return r;
    if (b->gen != gen) {
      r = b->broken_gen == gen ? MPROC_EBROKEN : idx;
      break;
    }
    if (!b->broken)
      check_parties(b);
    if (b->broken) {
      r = MPROC_EBROKEN;
      break;
    }
    if (deadline >= 0 && mproc_now_ms() >= deadline) {
      set_broken(b); /* Python: a timed-out wait breaks the barrier */
      r = MPROC_ETIMEDOUT;
      break;
    }
  }
  state_unlock(b);
  return r;
}

MPROC_EXTERN int mproc_barrier_wait(mproc_barrier *b, int64_t timeout_ms) {
  return mproc_barrier_wait_action(b, NULL, NULL, timeout_ms);
}

static int abort_op(mproc_barrier *b) {
  set_broken(b);
  return 0;
}

MPROC_EXTERN int mproc_barrier_abort(mproc_barrier *b) { return with_state(b, abort_op); }

static int reset_op(mproc_barrier *b) {
  if (b->count > 0) {
    b->broken_gen = b->gen;
    b->gen++;
  }
  reclaim_dead(b);
  b->count = 0;
  b->broken = 0;
  wake_all(b);
  return 0;
}

MPROC_EXTERN int mproc_barrier_reset(mproc_barrier *b) { return with_state(b, reset_op); }

MPROC_EXTERN int mproc_barrier_parties(const mproc_barrier *b) {
  int r = barrier_check(b);
  return r == 0 ? (int)b->parties : r;
}

/* A count past the parties is damage, never a negative "count". */
static int n_waiting_op(mproc_barrier *b) {
  return b->broken ? 0 : b->count < b->parties ? (int)b->count : MPROC_ECORRUPT;
}

MPROC_EXTERN int mproc_barrier_n_waiting(mproc_barrier *b) { return with_state(b, n_waiting_op); }

static int broken_op(mproc_barrier *b) { return (int)b->broken; }

MPROC_EXTERN int mproc_barrier_broken(mproc_barrier *b) { return with_state(b, broken_op); }
