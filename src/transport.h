/* The seam between the pool and how tasks travel to workers.
 *
 * Design notes.  A transport is one file implementing struct
 * mproc__transport_ops: local shared memory (transport_shm.c, built in),
 * MPI ranks (transport_mpi.c, in libmproc_mpi), and a socketpair one that
 * lives in tests/test-pool-transport.c.  The transport owns everything
 * about how tasks sit with a worker (ring positions, the task table, its
 * sockets, its ring depth and message sizes: its tp_state, opaque to the
 * pool, and a task's tp_ref); the pool and manager see only slots, tasks and
 * these operations, and keep their own counts (tasks handed over, per-slot
 * statistics).  The task-side API (task.c) reaches a transport's worker
 * side only through its task context (task_ctx.h).
 *
 * The table is narrow on purpose, 13 entries where it once had 18: "is
 * there room" is send_task's -EAGAIN, taking back one task or all of a
 * slot's is one revoke, where a worker is with its initializer is part of
 * activity, ending a task, ending a worker and letting it finish are one
 * stop, and the data arena is one optional sub-table.  What a transport
 * needs only for itself (the shm one's announce-then-poll handshake and
 * futex wake-ups) stays in its file; `helping` is a hint it may ignore.
 * sleep is the manager's one blocking point, so a transport polls there
 * whatever it must (the remote-flavoured test transport its sockets, MPI
 * its requests).
 *
 * Slots are not processes.  A worker that is a local process hands the
 * pool its pid and pidfd, and the manager watches and reaps it; one that is
 * not (an MPI rank) has neither, and its transport reports its end through
 * poll_results.  Either way the pool empties the slot (reset_slot) and
 * starts another worker.  Map data travels by arena offsets: a transport
 * whose workers share the arena sends the offsets, one whose workers
 * cannot see it copies each chunk's ranges (mproc__task_ranges) by value.
 *
 * The transport is chosen by name at pool creation (the pool option
 * `transport`, else MPROC_TRANSPORT, else "shm") from a registry
 * (transport.c) that other transports join at run time: adding one touches
 * no file but its own and the line that names it.
 *
 * Function references go through struct mproc__taskfn for the same reason:
 * under fork a code address is valid in the worker, elsewhere it is not. */
#ifndef MPROC_TRANSPORT_H
#define MPROC_TRANSPORT_H

#include "internal.h"

#include <poll.h>
#include <stdatomic.h>

struct mproc_pool;
struct mproc__task;

/* A reference to task code.  kind MPROC__FN_ADDR: `addr` is the address of
 * the function in the parent, valid in a forked worker. */
enum { MPROC__FN_ADDR = 1 };
struct mproc__taskfn {
  uint32_t kind;
  uint64_t addr;
};
static inline struct mproc__taskfn mproc__taskfn_of(void (*fn)(void)) {
  struct mproc__taskfn r = {MPROC__FN_ADDR, (uint64_t)(uintptr_t)fn};
  return r;
}
/* The callable for a reference, or NULL when it cannot be resolved here. */
static inline void (*mproc__taskfn_addr(struct mproc__taskfn r))(void) {
  return r.kind == MPROC__FN_ADDR ? (void (*)(void))(uintptr_t)r.addr : NULL;
}

/* Task kinds. */
enum {
  MPROC__K_CALL = 1, /* fn(arg bytes) -> result bytes */
  MPROC__K_MAP,      /* element function over an arena range */
  MPROC__K_STARMAP,  /* element function over several arena columns */
  /* Element function over a caller's shared block (map_shm.c): the block's
   * fd (arg_fd) travels with the chunk, in_off/out_off are file offsets. */
  MPROC__K_MAP_SHM,
  /* The same with a range function (mproc_map_range_fn): the worker calls it
   * once for the whole chunk instead of once per element. */
  MPROC__K_MAP_SHM_RANGE,
};
/* Whether a task kind's data is a caller's shared block (map_shm.c). */
static inline bool mproc__kind_block(uint32_t kind) {
  return kind == MPROC__K_MAP_SHM || kind == MPROC__K_MAP_SHM_RANGE;
}

/* K_CALL arguments up to this many bytes are kept in memory (t->arg);
 * larger ones in a memfd (t->arg_fd), written once at submit.  The pool's
 * choice, the same for every transport: each one carries both.  Below this
 * bound a memfd per task costs more than copying the bytes (its creation,
 * hand-over and mapping take hundreds of microseconds; the shm transport
 * copies a medium argument into the ring entry's arena area instead). */
#define MPROC__ARG_INLINE ((size_t)64 << 10)

/* How one task ended, as seen by the parent -- or, handed over with no
 * task (see poll_results), how a worker ended. */
struct mproc__outcome {
  int code;        /* 0, MPROC_ETASK, MPROC_EWORKERDIED, ... */
  int task_code;   /* the task's own non-zero return code */
  pid_t pid;       /* worker pid, 0 when the worker is not a local process */
  int signo;       /* killing signal or 0 */
  int exit_status; /* exit status or -1 */
  uint64_t index;  /* item index within a chunk (map) */
  const char *msg; /* message (borrowed, may be empty) */
  void *res;       /* K_CALL result: inline copy (malloc) or mapping */
  size_t res_len;
  size_t res_map_len; /* non-zero when res is an mmap()ed mapping */
};

enum { MPROC__INIT_READY = 0, MPROC__INIT_RUNNING, MPROC__INIT_FAILED };

/* What a worker is doing, as the transport sees it.  Zeroed by the caller:
 * a transport fills in what it knows. */
struct mproc__activity {
  struct mproc__task *running; /* the task it runs, or NULL */
  int64_t since;               /* since when (mproc_now_ms) */
  /* Optional (NULL when the transport cannot tell): the task it would
   * start next while it runs nothing, and its position, which moves
   * whenever the worker makes progress (stall detection). */
  struct mproc__task *waiting;
  uint64_t pos;
  /* Optional (0 when the transport cannot tell): items of the running
   * chunk already finished, so progress can move per item. */
  uint64_t items_done;
  /* Where it is with the pool's initializer: MPROC__INIT_READY (also when
   * there is none), _RUNNING, or _FAILED with the initializer's code and
   * message (borrowed). */
  int init;
  int init_code;
  const char *init_msg;
};

/* The arena ranges of a map chunk (K_MAP, K_STARMAP): what it reads, one
 * range per input column, and what it writes.  A transport whose workers
 * share the arena sends offsets; one whose workers cannot see it copies
 * the inputs out in send_task and writes the output back before it
 * reports the outcome.  mproc__task_ranges (pool.h) lists them. */
struct mproc__range {
  uint64_t off, len;
};

/* The data arena of map and imap: extents (offsets, never pointers) that the
 * parent fills and reads, allocated under the pool mutex.  For a transport
 * whose workers share it, shared memory; for one that copies chunks by
 * value (mproc__task_ranges), any memory of the parent's. */
struct mproc__arena_ops {
  /* `len` bytes: 0 and the offset, or MPROC_ENOMEM. */
  int (*alloc)(struct mproc_pool *p, size_t len, uint64_t *off);
  void (*free)(struct mproc_pool *p, uint64_t off, size_t len);
  /* The address of an offset in this process. */
  void *(*at)(struct mproc_pool *p, uint64_t off);
};

/* An arena in the parent's own memory (arena_local.c), for a transport that
 * copies chunks by value: its `arena` may simply point here.  Exported for
 * sibling libraries, like the registry; not API. */
MPROC_EXTERN extern const struct mproc__arena_ops mproc__arena_local;

/* The phases of start_worker. */
enum { MPROC__PHASE_LAUNCH = 1, MPROC__PHASE_READY };

/* How stop() ends work on a slot. */
enum {
  /* The worker exits once it has nothing left to run; its end must then be
   * seen (pidfd) or reported (poll_results): the pool's manager waits for
   * every slot's worker to end before it leaves. */
  MPROC__STOP_IDLE = 1,
  MPROC__STOP_TASK, /* the task it runs must end now (timeout, cancel) */
  MPROC__STOP_NOW,  /* the worker must end now, with all it holds */
};

struct mproc__transport_ops {
  const char *name; /* what the pool option and MPROC_TRANSPORT say */
  /* Whether a task sent while the manager sleeps with a deadline may wait
   * for that deadline: its workers wake the manager for what needs it
   * (shm).  False: the manager's sleep must be woken for a task sent while
   * none was out (MPI: with nothing out its sleep watches only the fds,
   * and nobody else may be driving progress). */
  bool idle_watch;
  /* Create the pool's transport state (before any worker starts). */
  int (*init)(struct mproc_pool *p);
  /* Release everything (workers already gone). */
  void (*fini)(struct mproc_pool *p);
  /* Start a worker in slot `slot`, in two phases so that the manager can
   * start several side by side (every slot launched, then each made ready:
   * their execs overlap).  MPROC__PHASE_LAUNCH begins the start; 0, or an
   * error with nothing left behind.  MPROC__PHASE_READY, called once after
   * every launch that returned 0 and before any other operation on the slot,
   * completes it: 0, or the start's error with nothing left behind.  A
   * transport that starts a worker in one step does it all at launch and
   * returns 0 at ready.  Once ready, a worker that is a local process has
   * set the slot's pid and pidfd: the manager then learns of its death from
   * the pidfd and reaps it.  One that is not (a remote rank) leaves pid 0
   * and pidfd -1 and reports its end through poll_results. */
  int (*start_worker)(struct mproc_pool *p, int slot, int phase);
  /* Hand a task to the worker of `slot`: 0 (the transport then sets
   * t->slot and may use t->tp_ref), -EAGAIN when the slot has no room now
   * (the pool tries it again after its next poll_results), -EPIPE /
   * -ECONNRESET / -ENOTCONN when the worker is gone (the task is re-queued),
   * or another error that fails the task. */
  int (*send_task)(struct mproc_pool *p, int slot, struct mproc__task *t);
  /* Optional (NULL: nothing to do).  Called after a round of send_task calls
   * that handed over at least one task: a transport that holds tasks back to
   * send several in one message sends them now, so none waits for a batch
   * to fill. */
  void (*flush)(struct mproc_pool *p);
  /* Collect finished tasks of `slot` in order, calling done(p, t, outcome)
   * for each (t->slot = -1 first); returns how many.  A worker that ended
   * and that the pool cannot watch through a pidfd is reported here as
   * done(p, NULL, outcome): code MPROC_EWORKERDIED, its pid or 0, signo or
   * exit_status, and a message naming it (say, a rank and its host); the
   * pool then calls reset_slot and starts another worker. */
  int (*poll_results)(struct mproc_pool *p, int slot,
                      void (*done)(struct mproc_pool *, struct mproc__task *,
                                   struct mproc__outcome *));
  /* Take back tasks that have not started.  t != NULL: that task of
   * `slot` (1 if it was taken back, else 0).  t == NULL: every such task of
   * the slot, in the order it would have run them, each handed to each(p, t);
   * returns how many.  A transport that cannot take a task back returns 0. */
  int (*revoke)(struct mproc_pool *p, int slot, struct mproc__task *t,
                void (*each)(struct mproc_pool *, struct mproc__task *));
  /* What the slot's worker is doing (see struct mproc__activity). */
  void (*activity)(struct mproc_pool *p, int slot, struct mproc__activity *a);
  /* End work on a slot (MPROC__STOP_*).  _TASK names the running task `t`:
   * the transport either ends the whole worker (its death then hands `t`
   * to reset_slot as started) or only the task (its outcome, with any
   * failure code, comes through poll_results; the pool reports it as
   * cancelled or timed out).  The shm transport kills the worker through
   * its pidfd for both _TASK and _NOW. */
  void (*stop)(struct mproc_pool *p, int slot, int how, struct mproc__task *t);
  /* After the worker ended: hand every task still with it to
   * left(p, t, started) in order (a started chunk's t->progress holds the
   * item the worker was in), then reset the transport's side of the slot for
   * a new worker. */
  void (*reset_slot)(struct mproc_pool *p, int slot,
                     void (*left)(struct mproc_pool *, struct mproc__task *, bool started));
  /* The manager sleeps: poll(pfd, n, timeout_ms) -- or return 0 at once
   * when the transport knows results are waiting.  Returns poll's result.
   * The only operation called without the pool mutex (other threads may
   * collect meanwhile): what it reads of the transport's state it reads
   * atomically or under p->mu, which it may take. */
  int (*sleep)(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms);
  /* Optional (NULL: nothing to do).  A parent thread starts (+1) or stops
   * (-1) spinning to collect results: a transport may then spare its workers
   * the cost of waking the manager. */
  void (*helping)(struct mproc_pool *p, int delta);
  /* Optional (NULL: tasks marked `quiet` are treated like the others).  On:
   * the results of tasks marked `quiet` will be collected by the thread
   * that set it, which calls again with off (a store, then a full fence)
   * and then collects once more before it ever sleeps; the transport may
   * spare its workers waking the manager for them meanwhile.  No lock
   * needed: only that thread calls it. */
  void (*quiet)(struct mproc_pool *p, bool on);
  /* Optional (NULL: map and imap return MPROC_ENOTSUP). */
  const struct mproc__arena_ops *arena;
  /* Optional: tells the workers that the caller freed the shared block
   * (dev, ino), so a worker drops its cached mapping of it (under mu).  A
   * transport without it cannot carry MPROC__K_MAP_SHM chunks: map_shm then
   * returns MPROC_ENOTSUP. */
  void (*forget_block)(struct mproc_pool *p, uint64_t dev, uint64_t ino);
};

extern const struct mproc__transport_ops mproc__transport_shm;

/* The registry (transport.c).  Not API: exported from libmproc.so only so
 * that a sibling library of this tree (libmproc_mpi) and the tests can add
 * a transport; the ops table changes with the library.
 * Register: 0 (also when `ops` is registered already), MPROC_EINVAL (no
 * name, a required operation missing), -EEXIST (another transport has the
 * name), -ENOSPC (the table is full).  Unregister: 0, MPROC_EINVAL (the
 * built-in one), -ENOENT.  Pools already created keep their transport. */
MPROC_EXTERN int mproc__transport_register(const struct mproc__transport_ops *ops);
MPROC_EXTERN int mproc__transport_unregister(const struct mproc__transport_ops *ops);
/* The transport named `name`; NULL: MPROC_TRANSPORT, else "shm".  An
 * unknown name is MPROC_EINVAL, with the reason on stderr.  Exported too:
 * libmproc_mpi registers a copy of "shm" under its own name for programs
 * started without mpiexec. */
MPROC_EXTERN int mproc__transport_find(const char *name, const struct mproc__transport_ops **out);

#endif /* MPROC_TRANSPORT_H */
