/* mproc — the process pool and futures (Python's Pool and ProcessPoolExecutor).
 *
 * A pool owns a fixed number of forked worker processes.  Work goes in as
 * tasks (a function and argument bytes) and comes back through futures, or
 * through map/imap calls over arrays of fixed-size elements.  A worker that
 * dies, exits or hangs past its timeout fails only the task it was running;
 * it is replaced at once and every other task completes.
 *
 * Threads: every pool runs one manager thread.  It forks every worker (Linux
 * delivers a worker's parent-death signal when the *thread* that forked it
 * exits, so workers are always forked by that long-lived thread), reaps dead
 * workers, enforces timeouts, and runs every done-callback -- unless the pool
 * was created with MPROC_POOL_LOOP: then callbacks run in the thread calling
 * mproc_pool_loop_run (mproc/loop.h).  All functions here are thread-safe.
 *
 * Errors: submit after close/shutdown/terminate returns MPROC_ECLOSED; submit
 * to a pool whose initializer failed returns MPROC_EBROKEN. */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "common.h"

#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_pool mproc_pool;
typedef struct mproc_future mproc_future;
/* Worker-side handle through which a task hands back its result or error. */
typedef struct mproc_task_ctx mproc_task_ctx;

/* ---- tasks (run in a worker process) -------------------------------------- */

/* A task: reads `len` bytes at `arg` (valid for the call only), optionally
 * hands back result bytes through `ctx`, and returns 0 on success or any
 * non-zero code on failure (the future then fails with MPROC_ETASK and the
 * code in mproc_task_error.task_code). */
typedef int (*mproc_task_fn)(const void *arg, size_t len, mproc_task_ctx *ctx);

/* Copy `len` bytes as the task's result (any size; large results travel in a
 * sealed-off memory file, never through a pipe).  Returns 0, MPROC_EINVAL,
 * or -errno when memory for a large result cannot be made. */
MPROC_EXTERN int mproc_task_return(mproc_task_ctx *ctx, const void *data, size_t len);
/* A writable result buffer of `len` bytes to fill in place (avoids a copy for
 * large results); valid until the task returns.  NULL on failure. */
MPROC_EXTERN void *mproc_task_result_buf(mproc_task_ctx *ctx, size_t len);
/* Record a failure: `code` and a printf-style message (truncated to 199
 * bytes; fmt may be NULL).  A code of 0 means "failed, with no code of its
 * own" and becomes MPROC_ETASK.  Returns the code recorded (never 0), so a
 * task can `return mproc_task_fail(...)`. */
MPROC_EXTERN int mproc_task_fail(mproc_task_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An element function for map/imap: reads one input element, writes one
 * output element; returns 0 or a non-zero failure code. */
typedef int (*mproc_map_fn)(const void *in, void *out);
/* A range function for mproc_pool_map_shm_range: out[i] = f(in[i]) for
 * i < n over one contiguous run of elements (in and out point at its first
 * input and output element), the shape a compiler can vectorise.  Returns 0,
 * or a non-zero failure code after setting *failed to the position (from 0,
 * within this run) of the element that failed; *failed is 0 on entry. */
typedef int (*mproc_map_range_fn)(const void *in, void *out, size_t n, size_t *failed);
/* An element function for starmap: args[i] points at the i-th argument. */
typedef int (*mproc_starmap_fn)(const void *const *args, void *out);
/* A worker initializer: runs once in each worker before its first task; a
 * non-zero return (with an optional message set by mproc_task_fail) breaks
 * the pool. */
typedef int (*mproc_init_fn)(void *arg, mproc_task_ctx *ctx);

/* ---- the pool ------------------------------------------------------------- */

enum {
  /* Blocking calls of this pool (waits, map, imap, join) return
   * MPROC_EINTERRUPTED promptly when the process receives SIGINT.  The pool
   * installs a SIGINT handler for its lifetime (the previous disposition is
   * restored when the last such pool is freed).  Without this flag SIGINT
   * keeps its usual meaning: the program dies and its workers with it. */
  MPROC_POOL_SIGINT = 1u << 0,
  /* Done-callbacks (and apply_async callbacks) run in the thread that calls
   * mproc_pool_loop_run, not on the manager thread: the pool's loop fd
   * (mproc_pool_loop_fd) is readable while any are due.  See mproc/loop.h. */
  MPROC_POOL_LOOP = 1u << 1,
};

struct mproc_pool_options {
  unsigned flags;                /* MPROC_POOL_* */
  int workers;                   /* 0: number of usable CPUs */
  mproc_init_fn initializer;     /* NULL: none */
  void *initarg;                 /* passed to initializer (the worker's copy) */
  uint32_t max_tasks_per_worker; /* 0: unlimited; else replaced after N */
  int64_t task_timeout_ms;       /* 0: none; a task running longer is killed */
  uint32_t retries;              /* re-runs of a task whose worker died */
  size_t max_worker_rss;         /* bytes; 0: none; checked after each task */
  /* 0: none; an initializer still running this long after its worker was
   * forked is killed and fails like a failed initializer (pool broken). */
  int64_t init_timeout_ms;
  /* MPROC_START_* (mproc/process.h); 0: the program's default
   * (MPROC_START_METHOD, else fork).  Under spawn and forkserver a worker
   * is a fresh image of the program: the initializer and every task
   * function travel as function references (mproc/function.h) and initarg
   * as initarg_len bytes copied to each worker. */
  int start_method;
  /* Under spawn and forkserver: the size of what initarg points at (0 with
   * a non-NULL initarg is MPROC_EINVAL there, since a pointer means nothing
   * in another image).  Under fork it is ignored: the worker sees the
   * parent's memory as it was at fork. */
  size_t initarg_len;
  /* How tasks travel to the workers, by name: NULL means the program's
   * default, the environment variable MPROC_TRANSPORT, else "shm" (local
   * shared memory, the built-in one).  Other transports register
   * themselves at run time, from their own libraries.  An unknown name is
   * MPROC_EINVAL. */
  const char *transport;
};

/* Create a pool.  Blocks until the workers are forked.  *out owns the pool;
 * release it with mproc_pool_free().  Errors: MPROC_EINVAL (NULL out,
 * unknown flag, negative workers or timeouts, an unknown start_method or
 * MPROC_START_METHOD value, a non-NULL initarg without initarg_len under spawn
 * or forkserver, an unknown transport or MPROC_TRANSPORT value),
 * MPROC_ENOFUNC (spawn/forkserver: the initializer cannot be referenced, or
 * a worker cannot find it), -errno (fork, exec, memory, thread).  A failed
 * mproc_pool_new leaves nothing behind. */
MPROC_EXTERN int mproc_pool_new(mproc_pool **out, const struct mproc_pool_options *opts);
/* Number of workers (>= 1), or MPROC_EINVAL. */
MPROC_EXTERN int mproc_pool_workers(const mproc_pool *pool);
/* Current worker pids into pids[0..n); returns how many were written (a slot
 * being replaced, or whose worker is not a local process, is skipped), or
 * MPROC_EINVAL. */
MPROC_EXTERN int mproc_pool_worker_pids(mproc_pool *pool, pid_t *pids, size_t n);

/* Per-task options for mproc_pool_submit_ex (NULL or zero: pool defaults). */
struct mproc_submit_options {
  unsigned flags;     /* none defined yet: must be 0 */
  int64_t timeout_ms; /* 0: pool default; > 0: this task's timeout */
  int32_t retries;    /* -1: pool default; >= 0: this task's retries */
  /* apply_async callbacks, run on the manager thread (with MPROC_POOL_LOOP:
   * in mproc_pool_loop_run's thread): `callback` when the task succeeded,
   * `error_callback` when it failed or was cancelled. */
  void (*callback)(mproc_future *f, void *ud);
  void (*error_callback)(mproc_future *f, void *ud);
  void *ud;
  /* Descriptors handed to the worker with the task (at most
   * MPROC_TASK_MAX_FDS): duplicated at submit, so the caller may close its
   * own at once; the task reads them with mproc_task_fds(). */
  const int *fds;
  size_t nfds;
};
#define MPROC_TASK_MAX_FDS 16

/* Submit fn(arg) (the `len` bytes are copied; arg may be freed on return).
 * *out receives a future the caller owns (release with mproc_future_free).
 * Never blocks.  Errors: MPROC_EINVAL, MPROC_ECLOSED, MPROC_EBROKEN, -ENOMEM. */
MPROC_EXTERN int mproc_pool_submit(mproc_pool *pool, mproc_task_fn fn, const void *arg, size_t len,
                                   mproc_future **out);
MPROC_EXTERN int mproc_pool_submit_ex(mproc_pool *pool, mproc_task_fn fn, const void *arg,
                                      size_t len, const struct mproc_submit_options *opts,
                                      mproc_future **out);
/* Python's apply_async: submit with a success callback and an error
 * callback (either may be NULL). */
MPROC_EXTERN int mproc_pool_apply_async(mproc_pool *pool, mproc_task_fn fn, const void *arg,
                                        size_t len, void (*callback)(mproc_future *, void *),
                                        void (*error_callback)(mproc_future *, void *), void *ud,
                                        mproc_future **out);
/* Python's apply: run fn(arg) and wait.  On success *result is a malloc'd copy
 * of the result (caller frees; NULL when empty) and *result_len its size.
 * Returns 0, a task failure (MPROC_ETASK, MPROC_EWORKERDIED...; with `err`,
 * if non-NULL, filled), MPROC_ETIMEDOUT (the task is then cancelled), or the
 * submit errors. */
struct mproc_task_error;
MPROC_EXTERN int mproc_pool_apply(mproc_pool *pool, mproc_task_fn fn, const void *arg, size_t len,
                                  void **result, size_t *result_len, struct mproc_task_error *err,
                                  int64_t timeout_ms);

/* Lifecycle.
 *  close:     no more submits; queued work still runs.
 *  join:      after close or terminate, wait until every task finished and
 *             every worker exited (MPROC_ESTATE if the pool is still open).
 *  terminate: kill every worker now; unfinished futures complete with
 *             MPROC_ECANCELED.  Waits (bounded) for the workers to be reaped.
 *  shutdown:  the executor's shutdown: close; with cancel_pending, cancel
 *             every task not yet started; with wait, join.  Idempotent, from
 *             any thread; from a callback (the manager thread) wait is ignored.
 *  free:      terminate if still running, join, release.  Futures stay valid
 *             until freed.  MPROC_ESTATE if called from a callback. */
MPROC_EXTERN int mproc_pool_close(mproc_pool *pool);
MPROC_EXTERN int mproc_pool_join(mproc_pool *pool, int64_t timeout_ms);
MPROC_EXTERN int mproc_pool_terminate(mproc_pool *pool);
MPROC_EXTERN int mproc_pool_shutdown(mproc_pool *pool, bool wait, bool cancel_pending);
MPROC_EXTERN int mproc_pool_free(mproc_pool *pool);

/* ---- futures -------------------------------------------------------------- */

typedef enum {
  MPROC_FUTURE_PENDING = 0, /* queued, not started */
  MPROC_FUTURE_RUNNING,     /* a worker is running it */
  MPROC_FUTURE_DONE,        /* finished with a result */
  MPROC_FUTURE_FAILED,      /* finished with an error */
  MPROC_FUTURE_CANCELED,    /* cancelled (never ran, or its worker was killed) */
} mproc_future_status;

/* Why a task failed. */
struct mproc_task_error {
  int code;        /* MPROC_ETASK, MPROC_EWORKERDIED, MPROC_ETIMEDOUT (task
                      timeout), MPROC_ECANCELED, MPROC_EINITFAILED */
  int task_code;   /* MPROC_ETASK: the task's non-zero return code; a
                      positive one without a message of its own reads
                      "task returned N" in `message` */
  pid_t pid;       /* worker that ran it (0 if it never ran) */
  int signo;       /* signal that killed the worker, 0 if none */
  int exit_status; /* exit status of a worker that exited, -1 if none */
  size_t index;    /* map/imap: index of the failed item */
  char message[200];
};

/* State now (one of mproc_future_status), or MPROC_EINVAL. */
MPROC_EXTERN int mproc_future_state(mproc_future *f);
/* Whether the future has finished (done, failed or cancelled). */
MPROC_EXTERN bool mproc_future_done(mproc_future *f);
/* Wait until finished: 0, MPROC_ETIMEDOUT, MPROC_EINTERRUPTED (SIGINT with
 * MPROC_POOL_SIGINT), MPROC_EINVAL. */
MPROC_EXTERN int mproc_future_wait(mproc_future *f, int64_t timeout_ms);
/* Wait, then: 0 with *data and *len set to the result, BORROWED from the future
 * (valid until mproc_future_free; NULL/0 for an empty result); or the failure
 * code (see mproc_task_error.code); or MPROC_ETIMEDOUT when the wait deadline
 * passed first (the future is then still pending or running).  data and len
 * may each be NULL when the caller does not want them (a task run for its
 * effect: the call then only waits and reports how the task ended). */
MPROC_EXTERN int mproc_future_result(mproc_future *f, const void **data, size_t *len,
                                     int64_t timeout_ms);
/* Failure details: 0 and *err filled when the future failed or was
 * cancelled, MPROC_ESTATE otherwise. */
MPROC_EXTERN int mproc_future_error(mproc_future *f, struct mproc_task_error *err);
/* Cancel: a pending task never runs and completes now; a running task's
 * worker is killed (and replaced) and the future completes with
 * MPROC_ECANCELED shortly.  Returns 0, or MPROC_ESTATE if already finished. */
MPROC_EXTERN int mproc_future_cancel(mproc_future *f);
/* Run cb(f, ud) once the future finishes: on the manager thread (with
 * MPROC_POOL_LOOP: in mproc_pool_loop_run's thread), or at once on the
 * calling thread when it already has.  Callbacks may submit, cancel,
 * shut down, and free f.  Returns 0, MPROC_EINVAL, -ENOMEM. */
MPROC_EXTERN int mproc_future_add_done_callback(mproc_future *f,
                                                void (*cb)(mproc_future *f, void *ud), void *ud);
/* A pointer of the caller's, kept with the future and never read by mproc
 * (e.g. the input a future was submitted for, found again from
 * as_completed or a callback).  set: 0 or MPROC_EINVAL; data: NULL when
 * none was set or f is NULL.  Safe from any thread. */
MPROC_EXTERN int mproc_future_set_data(mproc_future *f, void *data);
MPROC_EXTERN void *mproc_future_data(const mproc_future *f);
/* Release the caller's reference.  An unfinished task still runs; its
 * result is discarded.  Safe from inside the future's own callback. */
MPROC_EXTERN void mproc_future_free(mproc_future *f);

enum {
  MPROC_FIRST_COMPLETED = 1, /* return when any future finished */
  MPROC_FIRST_EXCEPTION = 2, /* ... when any failed/cancelled, or all finished */
  MPROC_ALL_COMPLETED = 3,   /* ... when all finished */
};
/* concurrent.futures.wait: returns the number of finished futures once the
 * condition holds, MPROC_ETIMEDOUT, MPROC_EINTERRUPTED or MPROC_EINVAL. */
MPROC_EXTERN int mproc_futures_wait(mproc_future *const *fs, size_t n, int mode,
                                    int64_t timeout_ms);

/* concurrent.futures.as_completed: an iterator yielding each future once, in
 * completion order.  The iterator borrows fs (the futures must outlive it). */
typedef struct mproc_as_completed mproc_as_completed;
MPROC_EXTERN int mproc_as_completed_new(mproc_as_completed **out, mproc_future *const *fs,
                                        size_t n);
/* 0 and *f the next finished future; MPROC_EEOF when all were yielded;
 * MPROC_ETIMEDOUT; MPROC_EINTERRUPTED; MPROC_EINVAL. */
MPROC_EXTERN int mproc_as_completed_next(mproc_as_completed *it, mproc_future **f,
                                         int64_t timeout_ms);
MPROC_EXTERN void mproc_as_completed_free(mproc_as_completed *it);

/* ---- map, starmap --------------------------------------------------------- */

/* Progress of a map/imap, reported to a progress callback. */
struct mproc_progress {
  size_t done;      /* items finished */
  size_t total;     /* items in all; 0 when unknown (imap without a total) */
  double elapsed_s; /* since the call started */
  double rate;      /* items per second so far */
  double eta_s;     /* seconds left at that rate; -1 when unknown */
  bool finished;    /* the last report */
};
typedef void (*mproc_progress_fn)(const struct mproc_progress *pr, void *ud);
enum {
  MPROC_PROGRESS_OFF = 0,  /* no bar (the default) */
  MPROC_PROGRESS_ON = 1,   /* a bar on a terminal stderr; one summary line otherwise */
  MPROC_PROGRESS_AUTO = 2, /* a bar only if stderr is a terminal and TERM is not dumb */
};

struct mproc_map_options {
  unsigned flags;   /* none defined yet: must be 0 */
  size_t chunksize; /* items per task; 0: ceil(n / (4 * workers)),
                       ceil(n / (2 * workers)) for mproc_pool_map_shm, or
                       ceil(n / workers) for mproc_pool_map_shm_range */
  /* MPROC_PROGRESS_*; the environment variable MPROC_PROGRESS=0|1 overrides
   * it (a bar on stderr, redrawn at most 10 times a second; map and
   * starmap count items done inside a running chunk too). */
  int progress;
  mproc_progress_fn progress_cb; /* NULL: none; called at most 10x/s, on the
                                    calling thread, and once with finished */
  void *progress_ud;
};

/* out[i] = fn(in[i]) for i < n, elements of in_size and out_size bytes, run in
 * chunks on the workers.  Blocks until done or the deadline.  Returns 0;
 * MPROC_ETASK / MPROC_EWORKERDIED / MPROC_ETIMEDOUT (a task timeout) for the
 * first failed item, with `err` (if non-NULL) giving its index and cause;
 * MPROC_ETIMEDOUT when the wait deadline passed (remaining chunks are
 * cancelled); MPROC_EINTERRUPTED; MPROC_EINVAL; MPROC_ECLOSED; -ENOMEM. */
MPROC_EXTERN int mproc_pool_map(mproc_pool *pool, mproc_map_fn fn, const void *in, size_t n,
                                size_t in_size, void *out, size_t out_size,
                                const struct mproc_map_options *opts, struct mproc_task_error *err,
                                int64_t timeout_ms);
/* map_async: the same, returning at once with a future that completes when
 * every item is done (its result is empty; its error as mproc_pool_map's).
 * `in` is copied before the call returns; `out` must stay valid until the
 * future finishes, and is written only by then. */
MPROC_EXTERN int mproc_pool_map_async(mproc_pool *pool, mproc_map_fn fn, const void *in, size_t n,
                                      size_t in_size, void *out, size_t out_size,
                                      const struct mproc_map_options *opts, mproc_future **f);

/* ---- zero-copy map over a shared block ------------------------------------ */

typedef struct mproc_shm mproc_shm; /* mproc/shm.h */
/* out[i] = fn(in[i]) for i < n where the input and output arrays live in a
 * shared block (mproc_shm_new or mproc_shm_create): in[] at byte offset
 * in_off of the block (elements of in_size bytes), out[] at out_off
 * (elements of out_size bytes; 0: no output).  The workers read and write
 * the block in place: nothing is copied into the pool or back, so the call
 * costs the same for 1 K and 100 M items bar the work itself.  Each worker
 * maps a block once, on its first chunk, and keeps the mapping until the
 * block is freed with mproc_shm_free (the block may be created after the
 * pool).  Elements are as aligned as their offsets make them.  Chunks are
 * few and large by default (opts->chunksize 0: ceil(n / (2 * workers))).  Blocks
 * until done or the deadline and returns as mproc_pool_map (the first
 * failed item's index in err->index; a worker that dies blames the item it
 * was in, whose output may be half written).  Errors also: MPROC_ERANGE (a
 * range leaves the block), MPROC_EINVAL (NULL shm or fn, in_size 0 with
 * n > 0, input and output overlapping other than exactly in place),
 * MPROC_ENOTSUP (a pool whose transport cannot hand over a block). */
MPROC_EXTERN int mproc_pool_map_shm(mproc_pool *pool, mproc_map_fn fn, mproc_shm *shm,
                                    size_t in_off, size_t in_size, size_t out_off, size_t out_size,
                                    size_t n, const struct mproc_map_options *opts,
                                    struct mproc_task_error *err, int64_t timeout_ms);
/* The same, returning at once with a future that completes when every item
 * is done (its result is empty; its error as mproc_pool_map_shm's).  The
 * block may be freed before the future finishes: the pool holds its own
 * reference until then. */
MPROC_EXTERN int mproc_pool_map_shm_async(mproc_pool *pool, mproc_map_fn fn, mproc_shm *shm,
                                          size_t in_off, size_t in_size, size_t out_off,
                                          size_t out_size, size_t n,
                                          const struct mproc_map_options *opts, mproc_future **f);
/* mproc_pool_map_shm with a range function: each chunk is one call
 * fn(in + k, out + k, count, &failed) over a contiguous run of elements, so
 * the per-element cost is the function's own loop, not an indirect call.
 * By default the items are split statically into one run per worker
 * (opts->chunksize 0: ceil(n / workers)), as OpenMP's `parallel for`.  A
 * failure blames the element the function names in *failed; a worker that
 * dies blames its run's first element (the pool cannot see inside a run),
 * and a progress bar moves per run.  Arguments, block rules and errors as
 * mproc_pool_map_shm. */
MPROC_EXTERN int mproc_pool_map_shm_range(mproc_pool *pool, mproc_map_range_fn fn, mproc_shm *shm,
                                          size_t in_off, size_t in_size, size_t out_off,
                                          size_t out_size, size_t n,
                                          const struct mproc_map_options *opts,
                                          struct mproc_task_error *err, int64_t timeout_ms);
/* The same, returning at once with a future, as mproc_pool_map_shm_async. */
MPROC_EXTERN int mproc_pool_map_shm_range_async(mproc_pool *pool, mproc_map_range_fn fn,
                                                mproc_shm *shm, size_t in_off, size_t in_size,
                                                size_t out_off, size_t out_size, size_t n,
                                                const struct mproc_map_options *opts,
                                                mproc_future **f);

#define MPROC_STARMAP_MAX_ARGS 8
/* starmap: out[i] = fn(args0[i], args1[i], ...): nargs parallel arrays (at
 * most MPROC_STARMAP_MAX_ARGS), args[j] with elements of arg_sizes[j] bytes.
 * Returns as mproc_pool_map. */
MPROC_EXTERN int mproc_pool_starmap(mproc_pool *pool, mproc_starmap_fn fn, size_t nargs,
                                    const void *const *args, const size_t *arg_sizes, size_t n,
                                    void *out, size_t out_size,
                                    const struct mproc_map_options *opts,
                                    struct mproc_task_error *err, int64_t timeout_ms);

/* ---- map over variable-size items ----------------------------------------- */

/* A byte string of any length: an input item, or a result. */
struct mproc_buf {
  const void *data; /* may be NULL only when len is 0 */
  size_t len;
};
/* Worker-side handle through which an item function hands back its result. */
typedef struct mproc_item_ctx mproc_item_ctx;
/* An element function over variable-size items: reads `len` bytes at `in`
 * (valid for the call only, not aligned), hands back its result with mproc_item_return
 * (none: an empty result), and returns 0 or a non-zero failure code. */
typedef int (*mproc_map_buf_fn)(const void *in, size_t len, mproc_item_ctx *ctx);
/* Set the item's result to a copy of `len` bytes (a second call replaces
 * the first).  Returns 0, MPROC_EINVAL, or MPROC_ENOMEM (also when the
 * result outgrows the room the pool's arena has for it: the item then runs
 * again with the rest of its chunk as an ordinary task, see
 * mproc_pool_map_buf). */
MPROC_EXTERN int mproc_item_return(mproc_item_ctx *ctx, const void *data, size_t len);
/* Record the item's failure: `code` (0 becomes MPROC_ETASK) and a
 * printf-style message (truncated to 199 bytes; fmt may be NULL).  Returns
 * the code recorded, so an item function can `return mproc_item_fail(...)`. */
MPROC_EXTERN int mproc_item_fail(mproc_item_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* out[i] = fn(in[i]) for i < n over items of any size, in chunks of many
 * items per task (opts->chunksize, default as mproc_pool_map), each chunk in
 * the pool's shared data arena as for mproc_pool_map: progress moves and a
 * dead worker is blamed per item.  Results too large for their chunk's
 * area go to an overflow area of up to 1 GiB; an item whose result finds
 * that full too is run once more, with the rest of its chunk, as an
 * ordinary task with no size limit.  On success
 * *out is a new array of n results, each NUL-terminated past its len (so
 * text results are C strings) and 16-byte aligned, all in one block owned
 * by the caller (the workers write it in the pool's arena, so nothing is
 * copied; it stays valid after mproc_pool_free): release it with
 * mproc_bufs_free (NULL when n is 0).
 * Returns as mproc_pool_map (the first failed item's index in err->index),
 * with *out NULL on any failure; MPROC_EINVAL also for an item with NULL
 * data and a non-zero len, or items whose sizes add up past SIZE_MAX / 4. */
MPROC_EXTERN int mproc_pool_map_buf(mproc_pool *pool, mproc_map_buf_fn fn,
                                    const struct mproc_buf *in, size_t n, struct mproc_buf **out,
                                    const struct mproc_map_options *opts,
                                    struct mproc_task_error *err, int64_t timeout_ms);
/* Release the results of mproc_pool_map_buf (NULL is fine), before or after
 * the pool that made them is freed. */
MPROC_EXTERN void mproc_bufs_free(struct mproc_buf *bufs);

/* n byte strings packed back to back in one buffer: item i is the bytes
 * [i > 0 ? ends[i - 1] : 0, ends[i]) of data (ends never decrease).  Two
 * flat arrays instead of an mproc_buf an item: the layout that makes a map
 * over many small items as cheap as a fixed-size one. */
struct mproc_packed {
  const void *data;   /* may be NULL only when every item is empty */
  const size_t *ends; /* n ends, each counted from data */
  size_t n;
};
/* mproc_pool_map_buf over packed items with packed results: on success *out
 * holds in->n results back to back (no alignment, no NUL), owned by the
 * caller until mproc_packed_free.  The item function, chunking, progress,
 * failures and errors as mproc_pool_map_buf; *out is all zero on any
 * failure; MPROC_EINVAL also for NULL in or out, NULL in->ends with n > 0,
 * or ends that decrease. */
MPROC_EXTERN int mproc_pool_map_packed(mproc_pool *pool, mproc_map_buf_fn fn,
                                       const struct mproc_packed *in, struct mproc_packed *out,
                                       const struct mproc_map_options *opts,
                                       struct mproc_task_error *err, int64_t timeout_ms);
/* Release the results of mproc_pool_map_packed and zero *packed (NULL, or
 * one already released or all zero, is fine). */
MPROC_EXTERN void mproc_packed_free(struct mproc_packed *packed);

/* An item function that writes its result in place, the fast way for small
 * items: reads `len` bytes at `in` (valid for the call only, not aligned),
 * writes its result to `out`, which has room for `room` bytes (not aligned;
 * room may be 0), and returns the result's length, 0 .. room.  A result
 * that does not fit: return the length it needs (> room) having written
 * nothing past room, and the item is run again (it may be more than once)
 * until it is given that much room.  A failure: return a negative code (-errno or an MPROC_E*
 * code), with a message through mproc_map_bytes_fail. */
typedef ssize_t (*mproc_map_bytes_fn)(const void *in, size_t len, void *out, size_t room);
/* mproc_pool_map_packed with an in-place item function: one call an item
 * and nothing else, its result written where the pool keeps it.  Results,
 * chunking, progress, arguments and failures as mproc_pool_map_packed; a
 * failed item reports its code in err->task_code, and its message (or the
 * code's) in err->message; a function that asks for more room again after
 * being given what it asked for fails its item with MPROC_ERANGE.  Release
 * *out with mproc_packed_free. */
MPROC_EXTERN int mproc_pool_map_bytes(mproc_pool *pool, mproc_map_bytes_fn fn,
                                      const struct mproc_packed *in, struct mproc_packed *out,
                                      const struct mproc_map_options *opts,
                                      struct mproc_task_error *err, int64_t timeout_ms);
/* For a mproc_map_bytes_fn: records the message (printf-style, truncated to
 * 199 bytes; fmt may be NULL) of the item that returns the code this
 * returns, `code` if it is negative and MPROC_ETASK otherwise, so an item
 * function can `return mproc_map_bytes_fail(...)`. */
MPROC_EXTERN ssize_t mproc_map_bytes_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- imap, imap_unordered ------------------------------------------------- */

/* Generator: write the next input element into *item and return 1, return 0
 * at the end, or a negative code to stop with an error.  Runs on the thread
 * calling mproc_imap_next. */
typedef int (*mproc_gen_fn)(void *ctx, void *item);

enum {
  MPROC_IMAP_UNORDERED = 1u << 0, /* yield items in completion order */
};
struct mproc_imap_options {
  unsigned flags;                /* MPROC_IMAP_* */
  size_t chunksize;              /* items per task; 0: 1 */
  size_t max_inflight;           /* items generated but not yet yielded; 0: 64 chunks
                                    per worker */
  int progress;                  /* as mproc_map_options.progress */
  mproc_progress_fn progress_cb; /* as mproc_map_options.progress_cb */
  void *progress_ud;
  size_t progress_total; /* items the generator will yield, 0: unknown */
};
typedef struct mproc_imap mproc_imap;
/* A lazy iterator applying fn to the generator's items, with at most
 * max_inflight items in memory at once. */
MPROC_EXTERN int mproc_pool_imap(mproc_pool *pool, mproc_map_fn fn, mproc_gen_fn gen, void *gen_ctx,
                                 size_t in_size, size_t out_size,
                                 const struct mproc_imap_options *opts, mproc_imap **out);
/* Next result into out (out_size bytes) and its item index into *index (may
 * be NULL).  Returns 0; MPROC_EEOF at the end; for a failed item k its code
 * (MPROC_ETASK, MPROC_EWORKERDIED...) with *index = k and `err` filled —
 * iteration may continue after it; a generator error; MPROC_ETIMEDOUT;
 * MPROC_EINTERRUPTED; MPROC_EINVAL. */
MPROC_EXTERN int mproc_imap_next(mproc_imap *it, void *out, size_t *index,
                                 struct mproc_task_error *err, int64_t timeout_ms);
/* Release; items still in flight are cancelled (waits for them, bounded). */
MPROC_EXTERN void mproc_imap_free(mproc_imap *it);

/* Generator of variable-size items: set *item (its bytes need stay valid
 * only until the next call) and return 1, return 0 at the end, or a
 * negative code to stop with an error.  Runs on the thread calling
 * mproc_imap_buf_next. */
typedef int (*mproc_buf_gen_fn)(void *ctx, struct mproc_buf *item);
typedef struct mproc_imap_buf mproc_imap_buf;
/* imap over variable-size items, results in input order: at most
 * opts->max_inflight items (0: 64 chunks per worker) generated and not yet
 * yielded.  opts->chunksize as mproc_pool_imap; flags must be 0; progress
 * fields as mproc_pool_imap.  Does not block. */
MPROC_EXTERN int mproc_pool_imap_buf(mproc_pool *pool, mproc_map_buf_fn fn, mproc_buf_gen_fn gen,
                                     void *gen_ctx, const struct mproc_imap_options *opts,
                                     mproc_imap_buf **out);
/* The next result into *out (borrowed: valid until the next call or free;
 * NUL-terminated past its len) and its index into *index (may be NULL).
 * Returns as mproc_imap_next. */
MPROC_EXTERN int mproc_imap_buf_next(mproc_imap_buf *it, struct mproc_buf *out, size_t *index,
                                     struct mproc_task_error *err, int64_t timeout_ms);
/* Release; chunks still in flight are cancelled (NULL is fine). */
MPROC_EXTERN void mproc_imap_buf_free(mproc_imap_buf *it);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_POOL_H */
