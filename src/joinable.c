/* JoinableQueue: task_done() and join().
 *
 * Design notes.  `unfinished` counts messages put and not yet marked done;
 * put increments it in the same critical section that publishes the record,
 * task_done decrements it.  Python's JoinableQueue hangs join() forever when
 * a worker dies between get and task_done; here every consumer's slot counts
 * what it took and has not marked done (`outstanding`), and the liveness
 * sweep gives a dead consumer's share back, as it does for records a dead
 * producer never finished.  join() sleeps on join_seq, bumped when the
 * count reaches zero, with sleeps capped at the sweep period so a joiner
 * also notices deaths itself. */
#include "queue.h"
#include "futex.h"

#include <limits.h>

MPROC_EXTERN int mproc_queue_task_done(mproc_queue *q) {
  if (q == NULL)
    return MPROC_EINVAL;
  struct mproc__qhdr *h = q->h;
  if (!(h->flags & MPROC_QUEUE_JOINABLE))
    return MPROC_ESTATE;
  int err = mproc__q_lock(q);
  if (err != 0)
    return err;
  uint64_t left = atomic_load(&h->unfinished);
  if (left == 0) {
    mproc__q_unlock(q);
    return MPROC_EOVERRELEASE;
  }
  atomic_store(&h->unfinished, left - 1);
  if (q->part >= 0 && h->parts[q->part].outstanding > 0)
    h->parts[q->part].outstanding--;
  mproc__q_unlock(q);
  if (left == 1)
    mproc__q_wake(&h->join_seq, &h->njoin_wait, NULL);
  return 0;
}

MPROC_EXTERN int mproc_queue_join(mproc_queue *q, int64_t timeout_ms) {
  if (q == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  struct mproc__qhdr *h = q->h;
  if (!(h->flags & MPROC_QUEUE_JOINABLE))
    return MPROC_ESTATE;
  int64_t deadline = mproc__deadline(timeout_ms);
  atomic_fetch_add(&h->njoin_wait, 1);
  int err = 0;
  for (;;) {
    uint32_t seen = atomic_load(&h->join_seq);
    if (atomic_load(&h->unfinished) == 0)
      break;
    if (mproc__q_maybe_sweep(q))
      continue;
    err = mproc__futex_wait_capped(&h->join_seq, seen, deadline, MPROC__Q_SWEEP_MS, true);
    if (err != 0)
      break;
  }
  atomic_fetch_sub(&h->njoin_wait, 1);
  return err;
}
