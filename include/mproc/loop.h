/* mproc — the pool inside real programs: event loops, monitoring, fds.
 *
 * Event loops.  A pool created with MPROC_POOL_LOOP routes every
 * done-callback and apply_async callback to the program's own loop: the fd
 * from mproc_pool_loop_fd is readable (level-triggered) while callbacks are
 * due, and mproc_pool_loop_run runs them in the calling thread.  Without the
 * flag they run on the pool's manager thread.  Futures without callbacks are
 * waited for as usual.
 *
 * Monitoring.  mproc_pool_stats reads the pool's counters and each worker's
 * state, CPU time and memory (from /proc) without stopping the pool.
 *
 * Descriptors.  A task submitted with mproc_submit_options.fds receives
 * duplicates of them in its worker (SCM_RIGHTS), read with mproc_task_fds. */
#ifndef MPROC_LOOP_H
#define MPROC_LOOP_H

#include "common.h"
#include "pool.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- event loops ---------------------------------------------------------- */

/* The pool's loop fd (owned by the pool: never close it; valid until
 * mproc_pool_free).  Poll it for reading.  Returns the fd, MPROC_EINVAL,
 * or MPROC_ESTATE when the pool was created without MPROC_POOL_LOOP. */
MPROC_EXTERN int mproc_pool_loop_fd(const mproc_pool *pool);
/* Never blocks: runs, in the calling thread, the callbacks of at most `max`
 * finished futures (0: all that are due) and returns how many futures it
 * handled; *woken (if non-NULL) tells whether mproc_pool_loop_wake was called
 * since the last run.  The fd stays readable while more are due.  Callbacks
 * may submit, cancel, shut down and free futures, not free the pool.
 * Errors: MPROC_EINVAL, MPROC_ESTATE (no MPROC_POOL_LOOP). */
MPROC_EXTERN int mproc_pool_loop_run(mproc_pool *pool, size_t max, bool *woken);
/* Make the loop fd readable so the loop wakes (from any thread, or from a
 * signal handler).  Returns 0, MPROC_EINVAL or MPROC_ESTATE. */
MPROC_EXTERN int mproc_pool_loop_wake(mproc_pool *pool);

/* ---- monitoring ------------------------------------------------------------ */

typedef enum {
  MPROC_WORKER_NONE = 0, /* no process: being replaced */
  MPROC_WORKER_STARTING, /* forked, running its initializer */
  MPROC_WORKER_IDLE,     /* waiting for a task */
  MPROC_WORKER_BUSY,     /* running a task */
  MPROC_WORKER_EXITING,  /* asked to exit (pool closed, or recycled) */
} mproc_worker_state;

struct mproc_worker_stats {
  pid_t pid;             /* 0 when the slot has no process */
  int state;             /* mproc_worker_state */
  uint64_t task_id;      /* running task (1, 2, ... in submit order; a map
                            chunk is one task), 0 when none */
  int64_t task_ms;       /* how long it has run */
  uint64_t tasks_done;   /* finished by this slot's workers */
  uint64_t tasks_failed; /* failed in them (including the worker dying) */
  uint64_t replaced;     /* times this slot's worker died and was replaced */
  double cpu_user_s;     /* CPU time of the current worker process */
  double cpu_system_s;
  size_t rss;      /* resident memory now, bytes */
  size_t peak_rss; /* peak resident memory (VmHWM), bytes */
};

struct mproc_pool_stats {
  int workers;           /* worker slots */
  uint64_t queued;       /* tasks not started yet */
  uint64_t running;      /* tasks running now */
  uint64_t done;         /* tasks finished with a result */
  uint64_t failed;       /* tasks failed (task error, worker death, timeout) */
  uint64_t cancelled;    /* tasks cancelled */
  uint64_t retried;      /* re-runs after a worker died */
  double throughput;     /* finished tasks per second, recent (>= 0.25 s window) */
  double throughput_avg; /* finished tasks per second since creation */
  int64_t uptime_ms;     /* since creation */
};

/* Fill *st (if non-NULL) and ws[0..n) (one entry per worker slot, in slot
 * order) and return how many worker entries were written (min(n, workers)).
 * Holds the pool's lock only to copy counters; /proc is read afterwards, so
 * it is cheap enough to call 100 times a second.  A worker that exits
 * meanwhile reports zero CPU and memory.  Errors: MPROC_EINVAL (NULL pool,
 * ws NULL with n > 0). */
MPROC_EXTERN int mproc_pool_stats(mproc_pool *pool, struct mproc_pool_stats *st,
                                  struct mproc_worker_stats *ws, size_t n);

/* ---- descriptors ------------------------------------------------------------ */

/* In a task: the descriptors submitted with it (borrowed; the worker closes
 * them when the task returns -- dup one to keep it).  *fds may be NULL when
 * none.  Returns their number, or MPROC_EINVAL. */
MPROC_EXTERN int mproc_task_fds(mproc_task_ctx *ctx, const int **fds);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_LOOP_H */
