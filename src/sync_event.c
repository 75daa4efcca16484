/* Event: a flag processes can wait on.
 *
 * Design notes.  `state` is the futex word: 0 clear, 1 set.  wait sleeps while
 * it is 0; set stores 1 and wakes every sleeper (when any registered in
 * `waiters`); clear stores 0.  A waiter reports success only if it sees the
 * flag set (a set immediately followed by a clear may pass unseen by a waiter
 * that was not yet running, as in Python).  Deaths cannot lose anything: a
 * dead waiter is not on the futex queue, a setter that dies after storing 1
 * but before waking leaves sleepers asleep for at most
 * MPROC__EVENT_RECHECK_MS, after which they re-read the flag. */
#include "futex.h"
#include "sync.h"

#include <limits.h>
#include <string.h>

#define MPROC__EVENT_RECHECK_MS 100

struct mproc_event {
  struct mproc__sync_hdr hdr;
  _Atomic uint32_t state;   /* 0 clear, 1 set; the futex word */
  _Atomic uint32_t waiters; /* registered sleepers (upper bound) */
};

_Static_assert(sizeof(struct mproc_event) <= MPROC_EVENT_SIZE, "MPROC_EVENT_SIZE too small");

/* An Event is all zeroes when clear: no setup, nothing to retire. */
static const struct mproc__sync_kind event_kind = {.magic = MPROC__MAGIC_EVENT,
                                                   .size = MPROC_EVENT_SIZE};

/* mproc_event_init, _new, _destroy, _free, _from_fd */
MPROC__SYNC_LIFECYCLE(mproc_event, event_kind, MPROC_EVENT_SIZE)

MPROC_EXTERN int mproc_event_set(mproc_event *e) {
  if (!mproc__sync_ok(e, MPROC__MAGIC_EVENT))
    return MPROC_EINVAL;
  atomic_store_explicit(&e->state, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&e->waiters, memory_order_seq_cst) > 0)
    mproc__futex_wake(&e->state, INT_MAX, true);
  return 0;
}

MPROC_EXTERN int mproc_event_clear(mproc_event *e) {
  if (!mproc__sync_ok(e, MPROC__MAGIC_EVENT))
    return MPROC_EINVAL;
  atomic_store_explicit(&e->state, 0, memory_order_seq_cst);
  return 0;
}

MPROC_EXTERN int mproc_event_is_set(const mproc_event *e) {
  if (!mproc__sync_ok(e, MPROC__MAGIC_EVENT))
    return MPROC_EINVAL;
  return (int)atomic_load_explicit(&e->state, memory_order_acquire);
}

static bool is_set(void *obj) {
  return atomic_load_explicit(&((mproc_event *)obj)->state, memory_order_seq_cst) != 0;
}

MPROC_EXTERN int mproc_event_wait(mproc_event *e, int64_t timeout_ms) {
  if (!mproc__sync_ok(e, MPROC__MAGIC_EVENT) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (atomic_load_explicit(&e->state, memory_order_acquire) != 0)
    return 0;
  return mproc__sync_sleep(&e->state, &e->waiters, is_set, e, mproc__deadline(timeout_ms),
                           MPROC__EVENT_RECHECK_MS);
}
