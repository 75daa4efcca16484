/* Internal state of pools, tasks and futures (pool.c, pool_manager.c,
 * future.c, map.c, imap.c, transport_shm.c, transport_shm_worker.c). */
#ifndef MPROC_POOL_INTERNAL_H
#define MPROC_POOL_INTERNAL_H

#include "internal.h"
#include "transport.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

/* One unit of work in the parent.  Futures embed one; map and imap chunks
 * are tasks without a future.  Protected by the pool mutex. */
struct mproc__task {
  struct mproc__task *next; /* pending queue link */
  uint32_t kind;            /* MPROC__K_* */
  struct mproc__taskfn fn;
  /* K_CALL: the argument, owned (malloc), or a memfd for large ones. */
  void *arg;
  size_t arg_len;
  int arg_fd;
  /* K_MAP / K_STARMAP: arena offsets and sizes. */
  uint64_t in_off, out_off, count, in_size, out_size, base_index;
  uint32_t nargs;
  uint64_t col_off[MPROC_STARMAP_MAX_ARGS], col_size[MPROC_STARMAP_MAX_ARGS];
  int64_t timeout_ms; /* 0: none */
  int32_t retries_left;
  bool cancel_req;   /* kill the worker: cancelled */
  bool timed_out;    /* kill the worker: timed out */
  bool done;         /* chunks: finished */
  int slot;          /* worker slot it sits in, -1 when not dispatched */
  uint64_t tp_ref;   /* the transport's own note of where it sits in that slot */
  uint64_t progress; /* chunks: item (from 0) its worker was in when it died */
  /* Called once, under the pool mutex, when the task finished. */
  void (*complete)(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o);
  void *owner; /* map job / imap iterator */
  uint64_t id; /* 1, 2, ... in submit order within the pool (stats) */
  int *fds;    /* K_CALL: descriptors handed to the worker (owned dups) */
  uint32_t nfds;
  bool quiet; /* its owner collects its result (transport op `quiet`) */
};

/* The arena ranges of a map chunk (see struct mproc__range): fills in[] (up
 * to MPROC_STARMAP_MAX_ARGS) and *out, returns how many input ranges, 0
 * for a task that is not a chunk. */
static inline unsigned mproc__task_ranges(const struct mproc__task *t, struct mproc__range in[],
                                          struct mproc__range *out) {
  if (t->kind == MPROC__K_CALL || mproc__kind_block(t->kind))
    return 0; /* a map_shm chunk's data is the caller's block, not the arena */
  *out = (struct mproc__range){t->out_off, t->count * t->out_size};
  if (t->kind == MPROC__K_MAP) {
    in[0] = (struct mproc__range){t->in_off, t->count * t->in_size};
    return 1;
  }
  for (uint32_t j = 0; j < t->nargs; j++)
    in[j] = (struct mproc__range){t->col_off[j], t->count * t->col_size[j]};
  return t->nargs;
}

struct mproc__cb {
  struct mproc__cb *next;
  void (*fn)(mproc_future *f, void *ud);
  void *ud;
};

struct mproc_future {
  struct mproc__task task; /* first: a future is a task */
  struct mproc_pool *pool; /* holds a pool reference until freed */
  _Atomic int state;       /* mproc_future_status; final once >= DONE */
  _Atomic int refs;        /* user 1 + pool 1 while unfinished/callbacks */
  void *result;
  size_t result_len, result_map_len;
  struct mproc_task_error err;
  struct mproc__cb *cbs; /* done-callbacks, run on the manager thread */
  struct mproc__cb *cbs_tail;
  struct mproc_future *cbq_next; /* manager's callback queue link */
  void (*apply_cb)(mproc_future *f, void *ud);
  void (*apply_errcb)(mproc_future *f, void *ud);
  void *apply_ud;
  void *done_extra; /* map_async: the job to release */
  /* map futures: cancels every chunk (under mu) instead of one task. */
  void (*cancel_hook)(struct mproc_pool *p, struct mproc_future *f);
  _Atomic uint64_t items_done;     /* map futures: items finished (progress) */
  struct mproc_future *loopq_next; /* the event loop's queue link */
  _Atomic(void *) user_data;       /* mproc_future_set_data: the caller's, never read */
  /* task.arg points here for arguments this small: no malloc per task. */
  _Alignas(max_align_t) unsigned char arg_small[16];
};

/* Parent-side state of one worker slot. */
struct mproc__slot {
  bool alive;                /* a worker occupies the slot (started, its end not handled) */
  pid_t pid;                 /* a local worker's pid, else 0 */
  int pidfd;                 /* a local worker's pidfd, else -1 */
  bool full;                 /* its transport had no room: skipped until results are collected */
  bool gone;                 /* its transport reported the worker's end (gone_*) */
  pid_t gone_pid;            /* ... its pid or 0 */
  int gone_code;             /* ... Python-style: status, or -signo */
  char gone_msg[160];        /* ... and what the transport said */
  uint32_t assigned;         /* tasks handed to this worker generation (max_tasks) */
  uint32_t live;             /* tasks handed over, not revoked, not yet collected */
  bool donor;                /* dispatch skips it: its queued tasks were just taken back */
  bool stalled;              /* dispatch skips it: it left queued work unstarted */
  uint64_t wait_pos;         /* worker position when a task was first seen waiting */
  int64_t wait_since;        /* since when (ms), 0: no task waiting */
  bool stopping;             /* asked to exit when idle */
  int64_t started_ms;        /* when this worker was forked (initializer deadline) */
  bool init_timed_out;       /* the pool killed it: initializer past its deadline */
  uint64_t n_done, n_failed; /* tasks this slot's workers finished (stats) */
  uint64_t n_replaced;       /* workers of this slot that died and were replaced */
};

enum { MPROC__P_RUNNING, MPROC__P_CLOSED, MPROC__P_TERMINATING, MPROC__P_BROKEN };

struct mproc_pool {
  pthread_mutex_t mu;
  _Atomic int refs;  /* user + one per future */
  _Atomic int state; /* MPROC__P_* */
  uint32_t forks;    /* mproc__pool_forks when made: another value, a forked copy */
  int nworkers;
  struct mproc_pool_options opts;
  const struct mproc__transport_ops *tp;
  void *tp_state;                         /* the transport's own state */
  struct mproc__local_arena *local_arena; /* mproc__arena_local's blocks, or NULL */
  struct mproc__slot *slots;
  struct mproc__task *pend_head, *pend_tail; /* not yet dispatched */
  size_t outstanding;                        /* tasks not yet completed (pending + in rings) */
  struct mproc_future *cbq_head, *cbq_tail;  /* futures whose callbacks are due */
  int efd;                                   /* eventfd waking the manager (workers write it too) */
  pthread_t mgr;                             /* the manager thread */
  pid_t mgr_tid;                             /* its tid: calls from callbacks are detected */
  bool mgr_started;                          /* create made the thread */
  bool mgr_joined;
  _Atomic int mgr_exited; /* futex word: 1 once the manager has left */
  /* Set under mu: the next task dispatched must wake the manager (it sleeps
   * with no deadline, or its transport has no idle_watch). */
  _Atomic int mgr_untimed;
  uint64_t idle_kicks; /* under mu: wake-ups of an untimed manager by a dispatch */
  int start_err;       /* first spawn error during create */
  _Atomic int started; /* futex word: initial workers forked */
  bool broken_init;
  int init_code;
  pid_t init_pid;  /* the worker whose initializer failed */
  int init_signo;  /* the signal that killed it there, or 0 */
  int init_status; /* its exit status when it exited there, or -1 */
  char init_msg[200];
  struct mproc_pool *live_next; /* process-wide list of live pools */
  /* map_shm.c: pools that were handed a block, told when one is freed. */
  struct mproc_pool *block_next;
  bool block_user;
  /* Manager-only scratch while a dead worker's ring is emptied. */
  pid_t dying_pid;
  int dying_code;        /* Python-style: status, or -signo */
  const char *dying_msg; /* its transport's words for its end, or NULL */
  struct mproc__task *requeue_head, *requeue_tail;
  bool respawn_pending;     /* a respawn failed: retry at respawn_at */
  int64_t respawn_at;       /* when to retry (mproc_now_ms) */
  int64_t respawn_delay_ms; /* current back-off, doubling up to a ceiling */
  int64_t no_worker_since;  /* ms since no worker lives and none can start, 0 */
  /* Pidfds of dead workers not reapable yet (a debugger holds the zombie),
   * retried by the manager every MPROC__LINGER_MS until reaped, and handed
   * to mproc__reap_later when the manager leaves. */
  int *linger;
  int nlinger, linger_cap;
  struct pollfd *pfd;          /* manager's poll set: eventfd + one pidfd per worker */
  int *slot_of;                /* pfd index -> worker slot */
  _Atomic int64_t wait_ema_us; /* moving average of how long waits took */
  int dying_slot;              /* slot of dying_pid */
  void *quiet_owner;           /* the imap that sets the transport's `quiet`, or NULL */
  _Atomic uint64_t efd_wakes;  /* the manager's sleeps its eventfd ended */
  int collecting;              /* slot whose results are being collected */
  /* Statistics (under mu): tasks (a map chunk counts as one) by outcome. */
  uint64_t next_id, n_done, n_failed, n_cancelled, n_retried;
  int64_t created_ms;
  int64_t rate_ms; /* mproc_pool_stats: when the recent rate was sampled */
  uint64_t rate_n; /* finished tasks then */
  double rate;     /* the recent rate */
  /* MPROC_POOL_LOOP (pool_loop.c): futures whose completion the event loop
   * has not collected yet, and the eventfd readable while any wait. */
  int loop_efd;
  struct mproc_future *loopq_head, *loopq_tail;
  _Atomic int loop_woken; /* mproc_pool_loop_wake since the last run */
  _Atomic pid_t loop_tid; /* thread inside mproc_pool_loop_run, 0 none */
};

/* Whether the worker of slot i finished its initializer (under mu). */
static inline bool mproc__worker_ready(struct mproc_pool *p, int i) {
  struct mproc__activity a = {0};
  p->tp->activity(p, i, &a);
  return a.init == MPROC__INIT_READY;
}

/* The task the worker of slot i is running and since when, or NULL. */
static inline struct mproc__task *mproc__worker_running(struct mproc_pool *p, int i,
                                                        int64_t *since) {
  struct mproc__activity a = {0};
  p->tp->activity(p, i, &a);
  *since = a.since;
  return a.running;
}

/* Kill a local worker and its process group.  The group is signalled only
 * while the worker exists (signal 0 through its pidfd): a worker the kernel
 * reaped already (the program ignores SIGCHLD) no longer keeps its group's
 * id from reuse, which may then name another program's group.  The worker
 * itself is killed through its pidfd: it may have left its group. */
static inline void mproc__kill_worker_group(pid_t pid, int pidfd) {
  if (mproc__pidfd_kill(pidfd, 0) == 0)
    kill(-pid, SIGKILL);
  mproc__pidfd_kill(pidfd, SIGKILL);
}

/* ---- pool.c --------------------------------------------------------------- */
void mproc__pool_unref(struct mproc_pool *p);
/* Wake the manager (any thread, async-signal-safe). */
void mproc__pool_kick(struct mproc_pool *p);
/* Queue a task (under mu) without dispatching: a caller queueing many
 * (map's chunks) dispatches once after the last. */
void mproc__pool_queue(struct mproc_pool *p, struct mproc__task *t);
/* Queue a task (under mu): dispatched at once when a worker has room. */
void mproc__pool_enqueue(struct mproc_pool *p, struct mproc__task *t);
/* Cancel a task (under mu): true if it will never run (completed now by the
 * caller), false if it is running (its worker is being killed). */
bool mproc__pool_cancel_task(struct mproc_pool *p, struct mproc__task *t);
/* Whether SIGINT arrived since `mark` (MPROC_POOL_SIGINT pools only). */
bool mproc__sigint_since(uint32_t mark);
uint32_t mproc__sigint_mark(void);

/* Take back a task that has not started from its worker (under mu): true
 * on success, with the slot's counts adjusted. */
bool mproc__pool_revoke(struct mproc_pool *p, struct mproc__task *t);

/* Close and free a task's submitted fds. */
void mproc__task_close_fds(struct mproc__task *t);

/* ---- pool_manager.c ------------------------------------------------------- */
/* Fault injection for tests: while non-zero, starting a worker fails with
 * -EAGAIN (a positive value counts down once per attempt; -1 fails all). */
extern _Atomic int mproc__test_fail_spawn;
/* How long the pool tolerates having no live worker while forking fails
 * before it fails the queued tasks (ms). */
#define MPROC__NO_WORKER_MS 2000
/* A worker that leaves a queued task unstarted this long while running
 * nothing is stalled (SIGSTOP, stuck in the kernel): its queued tasks move to
 * other workers (ms). */
#define MPROC__STALL_MS 1000
/* While tasks are outstanding the manager looks at the workers at least this
 * often, so a stall is seen without any event to wake it (ms). */
#define MPROC__WATCH_MS 250
/* ... and for this long after the pool was last in use, so that a task
 * submitted to a pool in steady use is watched without waking the manager
 * (each such wake-up costs a round trip a context switch); only the first
 * task after a longer idle spell wakes it (ms). */
#define MPROC__IDLE_WATCH_MS 1000
/* How long the manager waits to reap a dead worker it has killed (ms): an
 * exited one is reaped at once; one still not reapable then is kept and
 * retried every MPROC__LINGER_MS until it is. */
#define MPROC__REAP_MS 1000
#define MPROC__LINGER_MS 100
int mproc__manager_start(struct mproc_pool *p);
/* Collect results and dispatch (under mu); any thread may help.  Returns
 * how many tasks finished. */
int mproc__pool_drain(struct mproc_pool *p);
/* Try to help without blocking: drains when the mutex is free. */
void mproc__pool_help(struct mproc_pool *p);
/* Help with mu held: drains unless the pool is terminating; returns whether
 * the manager must then be kicked (after unlocking). */
bool mproc__pool_help_locked(struct mproc_pool *p);
/* A thread starts (+1) or stops (-1) spinning to collect results; stopping
 * collects once more.  Takes mu. */
void mproc__pool_helping(struct mproc_pool *p, int delta);
/* Dispatch pending tasks to workers with room (under mu). */
void mproc__pool_dispatch(struct mproc_pool *p);
bool mproc__on_manager_thread(const struct mproc_pool *p);
/* A pool belongs to the process that made it.  A forked copy of that
 * process -- the program's own fork, or one of the pool's workers running a
 * task -- inherits the pool's memory but neither its manager thread nor its
 * workers (and maybe a mutex some other thread held at the fork): used
 * there, a call would steal the real pool's results from shared memory,
 * kill its workers through the inherited pidfds, or wait for ever.  Every
 * fork after the first pool counts in mproc__pool_forks (an atfork child
 * handler), so such a copy is told apart with one load, and its calls
 * return MPROC_ESTATE and touch nothing. */
extern _Atomic uint32_t mproc__pool_forks;
static inline bool mproc__pool_foreign(const struct mproc_pool *p) {
  return atomic_load_explicit(&mproc__pool_forks, memory_order_relaxed) != p->forks;
}
/* Cancel every task not yet started (under mu). */
void mproc__pool_cancel_pending(struct mproc_pool *p);
/* End the worker of slot i now, with all it holds (under mu). */
void mproc__kill_worker(struct mproc_pool *p, int i);
/* End the running task t now, for its timeout or cancel (under mu). */
void mproc__stop_task(struct mproc_pool *p, struct mproc__task *t);
/* Finish a task with a failure code (under mu). */
void mproc__task_fail(struct mproc_pool *p, struct mproc__task *t, int code, const char *msg);

/* ---- future.c ------------------------------------------------------------- */
/* Process-wide completion counter: bumped (and waiters woken) whenever a
 * future, map or imap chunk finishes, or SIGINT arrives. */
extern _Atomic uint32_t mproc__epoch;
extern _Atomic uint32_t mproc__epoch_waiters;
void mproc__epoch_bump(void);
/* Defer this thread's wake-ups of epoch sleepers to the matching release
 * (nestable; used around a drain that may finish many futures). */
void mproc__epoch_hold(void);
void mproc__epoch_release(void);
/* Sleep until the epoch moves from `seen` or the deadline. */
int mproc__epoch_wait(uint32_t seen, int64_t deadline_ms);
/* Wait until cond(ctx) holds, helping `pools` collect results while
 * spinning briefly, then sleeping on the epoch.  0, MPROC_ETIMEDOUT,
 * MPROC_EINTERRUPTED (when `sigint`). */
int mproc__wait_until(bool (*cond)(void *), void *ctx, struct mproc_pool *const *pools,
                      size_t npools, bool sigint, int64_t deadline_ms);
/* Spin budget for helping waits, in iterations. */
int mproc__spin_budget(void);
/* A new future for a K_CALL task (refs = 2: user + pool). */
struct mproc_future *mproc__future_new(struct mproc_pool *p);
/* Finish a future (under mu) with an outcome; queues its callbacks. */
void mproc__future_finish(struct mproc_pool *p, struct mproc_future *f, struct mproc__outcome *o);
/* Run the callbacks of one queued future (manager thread, no lock held). */
void mproc__future_run_callbacks(struct mproc_future *f);
void mproc__future_unref(struct mproc_future *f);
/* Fill a task error from an outcome. */
void mproc__error_from_outcome(struct mproc_task_error *e, const struct mproc__outcome *o);

/* An arena extent for map/imap (under mu): MPROC_ENOTSUP when the pool's
 * transport has no arena. */
static inline int mproc__arena_alloc(struct mproc_pool *p, size_t len, uint64_t *off) {
  return p->tp->arena != NULL ? p->tp->arena->alloc(p, len, off) : MPROC_ENOTSUP;
}
static inline void *mproc__arena_at(struct mproc_pool *p, uint64_t off) {
  return p->tp->arena->at(p, off);
}
static inline void mproc__arena_free(struct mproc_pool *p, uint64_t off, size_t len) {
  p->tp->arena->free(p, off, len);
}

/* ---- arena_local.c --------------------------------------------------------- */
/* Free what mproc__arena_local still holds for the pool. */
void mproc__arena_local_fini(struct mproc_pool *p);

/* ---- map.c, map_shm.c ------------------------------------------------------ */
/* Where a map_shm job's data lives: the caller's block, by its fd (a
 * duplicate the job owns) and the file offsets of the input and output. */
struct mproc__map_block {
  int fd;
  uint64_t in_off, out_off;
  uint64_t freed_since; /* map_shm.c's count of freed blocks at the start */
};
/* Start a map over a block (chunks of `kind`, K_MAP_SHM or K_MAP_SHM_RANGE,
 * whose function fn is); takes the fd, on failure too.  Returns as
 * mproc_pool_map_async. */
int mproc__map_block_start(struct mproc_pool *p, uint32_t kind, void (*fn)(void), size_t n,
                           size_t in_size, size_t out_size, const struct mproc__map_block *blk,
                           const struct mproc_map_options *o, mproc_future **f);
/* Wait for a map's future (progress, cancel at the deadline), fill err,
 * free the future. */
int mproc__map_wait(mproc_future *f, size_t n, const struct mproc_map_options *o,
                    struct mproc_task_error *err, int64_t timeout_ms);
/* Worker side: the mapping of the block behind fd (consumed), from the
 * worker's cache or made now: 0 with *base and *len, or -errno. */
int mproc__block_cache_map(int fd, unsigned char **base, size_t *len);
/* Worker side: drop the cached mapping of block (dev, ino), or all. */
void mproc__block_cache_forget(uint64_t dev, uint64_t ino);
void mproc__block_cache_clear(void);
/* Whether count elements of size bytes from off fit in len bytes. */
static inline bool mproc__block_range_ok(uint64_t len, uint64_t off, uint64_t count,
                                         uint64_t size) {
  return off <= len && (size == 0 || count <= (len - off) / size);
}
/* A map_shm job ends (under mu), before it closes its fd: if the caller
 * freed the block meanwhile, the workers are told again, since they may have
 * mapped it after they were first told. */
void mproc__map_shm_job_end(struct mproc_pool *p, int fd, uint64_t freed_since);
/* The pool is being freed: map_shm no longer tells it of freed blocks. */
void mproc__map_shm_pool_gone(struct mproc_pool *p);
/* The pool is being freed (before its arena is unmapped): map_buf's result
 * sets still held keep its view of the arena, not its extents (map_buf.c). */
void mproc__map_buf_pool_gone(struct mproc_pool *p);

/* ---- imap.c ----------------------------------------------------------------- */
extern int64_t mproc__imap_free_wait_ms;
/* Chunks an imap keeps in flight per worker unless told (max_inflight): a
 * deep enough window to keep every worker busy while results are read. */
#define MPROC__IMAP_WINDOW 64

/* ---- pool_loop.c ---------------------------------------------------------- */
int mproc__loop_init(struct mproc_pool *p);
/* Queue a finished future for the event loop (under mu). */
void mproc__loop_push(struct mproc_pool *p, struct mproc_future *f);
/* Run what the loop never collected (destroy, no lock held). */
void mproc__loop_fini(struct mproc_pool *p);
bool mproc__in_loop_run(const struct mproc_pool *p);

#endif /* MPROC_POOL_INTERNAL_H */
