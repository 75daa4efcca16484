/* Internal declarations of the MPI component (the src/mpi_ files, library
 * mproc_mpi).  The core library never includes this file: it has no MPI
 * dependency.  This component uses the public mproc API of the core, plus
 * the few internals libmproc exports to its sibling libraries (MPROC__SIBLING
 * in fnref.h: the function references' make/resolve pair) and, in
 * transport_mpi.c, the pool's transport seam.
 *
 * The files:
 *   mpi_fnref.c   the core's function references (fnref.h) on the wire
 *   mpi_wire.c    messages: fixed headers, payloads of any size in pieces,
 *                 non-blocking sends and receives polled against deadlines
 *   mpi_init.c    joining the job, the startup handshake, finalize
 *   mpi_rank.c    the worker-rank loop (tasks run in a local pool)
 *   mpi_unit.c    units: a rank's tasks handed to one local worker at once;
 *                 the context of a task run in the rank (in-rank mode)
 *   mpi_client.c  rank 0: jobs dispatched to ranks, results collected
 *   transport_mpi.c  the pool's transport ops over that dispatcher */
#ifndef MPROC_MPI_INTERNAL_H
#define MPROC_MPI_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mproc.h"
#include "mproc/mpi.h"
#include "fnref.h"     /* the core's function references, exported to siblings */
#include "transport.h" /* the pool's transport seam and its registry */

#include <mpi.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- mpi_fnref.c --------------------------------------------------------- */

enum { MPROC__MPI_FN_TASK = 1, MPROC__MPI_FN_MAP = 2, MPROC__MPI_FN_INIT = 3 };
/* A function reference as it travels: the core's reference (plain bytes, no
 * pointer), what kind of function it names, and whether only its name
 * counts. */
struct mproc__mpi_fn {
  uint32_t type;  /* MPROC__MPI_FN_TASK, _MAP or _INIT: what the pointer is */
  uint32_t named; /* 1: resolved by ref.name only (ranks may run other builds) */
  struct mproc__fnref ref;
};
/* Reference for fn by object + offset (and its registered name, if any):
 * MPROC_EINVAL, or MPROC_ENOFUNC when fn lies in no loaded object's code. */
int mproc__mpi_fn_of(struct mproc__mpi_fn *out, uint32_t type, void (*fn)(void));
/* Reference by a name of mproc_function_register: MPROC_EINVAL,
 * MPROC_ENAMETOOLONG, or MPROC_ENOENT when not registered here. */
int mproc__mpi_fn_named(struct mproc__mpi_fn *out, uint32_t type, const char *name);
/* The function a reference names on this process, or NULL with the reason
 * written to why. */
void (*mproc__mpi_fn_resolve(const struct mproc__mpi_fn *r, char *why, size_t cap))(void);
/* Build-id of the main program into id (cap bytes); its length, or
 * MPROC_ENOENT when the program has none. */
int mproc__mpi_program_build_id(uint8_t *id, size_t cap);

/* ---- mpi_wire.c ---------------------------------------------------------- */

enum {
  MPROC__MPI_TAG_TASK = 101,   /* rank 0 -> rank: struct mproc__mpi_task */
  MPROC__MPI_TAG_RESULT = 102, /* rank -> rank 0: struct mproc__mpi_result */
  MPROC__MPI_TAG_DATA = 103,   /* payload pieces following a header */
  MPROC__MPI_TAG_CTRL = 104,   /* struct mproc__mpi_ctrl, both ways */
};
/* Task header kinds.  A cancel travels on the task tag too: MPI keeps one
 * sender's messages of one tag in order, so it can never overtake the task
 * it cancels. */
enum {
  MPROC__MPI_CALL = 1,
  MPROC__MPI_MAP = 2,
  MPROC__MPI_CANCEL = 3,
  MPROC__MPI_STARMAP = 4,
  MPROC__MPI_OPEN = 5,  /* a local pool for one of rank 0's pools: count workers,
                           fn its initializer (flags HAS_INIT), payload its
                           argument, timeout_ms its deadline */
  MPROC__MPI_CLOSE = 6, /* that pool is done (pool); no answer */
  MPROC__MPI_BATCH = 7, /* count whole task messages as frames (see batches) */
};
enum {
  MPROC__MPI_HAS_INIT = 1, /* OPEN: the pool has an initializer */
  MPROC__MPI_INRANK = 2,   /* CALL, MAP, STARMAP: run in the rank itself
                              (mproc_mpi_options MPROC_MPI_INRANK) */
};
/* Bytes of a result's message (with its NUL). */
#define MPROC__MPI_MSG 200
enum { MPROC__MPI_STOP = 2, MPROC__MPI_STOPPED = 3 };

/* Every header starts with these two fields. */
struct mproc__mpi_task {
  uint64_t id;                       /* rank 0's job id */
  uint64_t len;                      /* payload bytes after the header */
  uint32_t kind;                     /* MPROC__MPI_CALL, _MAP, ... or _CANCEL (of job id) */
  uint32_t flags;                    /* OPEN: MPROC__MPI_HAS_INIT */
  uint64_t pool;                     /* the rank's local pool it is for: 0 its own, else OPENed */
  int64_t timeout_ms;                /* 0: none */
  uint64_t count, in_size, out_size; /* MAP, STARMAP: elements and their sizes */
  uint64_t nargs;                    /* STARMAP: columns, one after the other */
  uint64_t col_size[MPROC_STARMAP_MAX_ARGS]; /* STARMAP: element size of each */
  struct mproc__mpi_fn fn;
};
struct mproc__mpi_result {
  uint64_t id;
  uint64_t len;
  int32_t code, task_code, signo, exit_status, pid;
  int32_t batch;  /* > 0: this many result messages follow as frames */
  uint64_t index; /* MAP: the failed element */
  char message[MPROC__MPI_MSG];
};
struct mproc__mpi_ctrl {
  uint64_t id;   /* CANCEL: the job */
  uint64_t len;  /* always 0 */
  uint32_t what; /* MPROC__MPI_CANCEL, _STOP, _STOPPED */
  uint32_t pad_;
};

/* The wire's version: ranks check it in the startup handshake.  2: batches;
 * 3: the task flag MPROC__MPI_INRANK. */
#define MPROC__MPI_WIRE_VERSION 3

/* Payloads up to this size travel in the header's message; larger ones
 * follow it in pieces of at most mproc__mpi_piece bytes, so no MPI count
 * ever exceeds INT_MAX whatever the payload's size. */
#define MPROC__MPI_INLINE 16384
extern size_t mproc__mpi_piece; /* default 64 MiB; tests lower it */
/* Number of pieces for a payload of len bytes (0 when it travels inline). */
size_t mproc__mpi_pieces(size_t len, size_t piece);

/* A message in flight: its requests, and what to free when they complete. */
struct mproc__mpi_op {
  struct mproc__mpi_op *next;
  MPI_Request *reqs;
  int nreqs;
  void *hdr;      /* the header message (owned) */
  size_t hdr_len; /* of the header struct */
  void *data;     /* payload (owned when free_data) */
  size_t len;
  bool free_data;
  int source; /* receives: the sender */
  void *user; /* the owner's context */
};
/* Start sending header (hdr_len bytes, its `len` field already set) and
 * len payload bytes to dest.  With own_data the op frees data when done.
 * Returns 0 and *op, or MPROC_ENOMEM, MPROC_EIO (MPI error). */
int mproc__mpi_isend(MPI_Comm comm, int dest, int tag, const void *hdr, size_t hdr_len, void *data,
                     size_t len, bool own_data, struct mproc__mpi_op **op);
/* Where a receive puts a payload: at(ctx, source, hdr, len, &op->user)
 * returns a buffer of len bytes for the message whose header is hdr (it may
 * set op->user), or NULL for memory the op allocates and owns. */
struct mproc__mpi_place {
  void *(*at)(void *ctx, int source, const void *hdr, size_t len, void **user);
  void *ctx;
};
/* Receive a header that has arrived (per MPI_Iprobe on tag from any rank):
 * 0 and *op with op->hdr, op->source, and when a payload follows, its pieces
 * posted into op->data -- where place says (NULL: op-owned memory) --
 * complete once mproc__mpi_test says so; 1 when no message is waiting;
 * MPROC_ENOMEM, MPROC_EIO. */
int mproc__mpi_irecv(MPI_Comm comm, int tag, size_t hdr_len, const struct mproc__mpi_place *place,
                     struct mproc__mpi_op **op);
/* Whether a message of any tag waits on comm: 1 with its tag in *tag, 0
 * when none, MPROC_EIO.  A loop that takes several kinds of message probes
 * once per pass with this, not once per tag: Open MPI's probe that finds
 * nothing runs its progress engine, which on an oversubscribed node yields
 * the CPU -- each empty probe costs a turn of every other runnable process
 * (measured: 4-9 us each, 3 ranks on 2 CPUs, in a 37 us round trip). */
int mproc__mpi_waiting(MPI_Comm comm, int *tag);
/* 1 when every request of op completed, 0 if not yet, MPROC_EIO. */
int mproc__mpi_test(struct mproc__mpi_op *op);
/* Free op (its requests must have completed, or be cancelled first). */
void mproc__mpi_op_free(struct mproc__mpi_op *op);
/* Cancel and free an op whose peer is gone. */
void mproc__mpi_op_abandon(struct mproc__mpi_op *op);
/* Wait for op to complete, polling until deadline (absolute ms, -1 none):
 * 0, MPROC_ETIMEDOUT, MPROC_EIO. */
int mproc__mpi_wait_op(struct mproc__mpi_op *op, int64_t deadline);
/* Batches: several whole messages of one tag in one MPI message, so tasks
 * queued for a rank together, or results finished together, cost one
 * message and one match instead of one each.  A batch is a header of its
 * tag's kind (a task header of kind MPROC__MPI_BATCH with `count` frames, a
 * result header with `batch` frames) whose payload is the frames: each a
 * header of the same struct, its payload (its `len` field), padding to 8
 * bytes.  The whole batch travels inline (at most MPROC__MPI_INLINE
 * payload bytes), so only messages whose frame takes at most half of that
 * go in one (mproc__mpi_batchable); the others travel alone, in order. */
struct mproc__mpi_batch {
  unsigned char *buf; /* MPROC__MPI_INLINE bytes, once the first frame came */
  size_t used;        /* bytes of frames */
  uint32_t n;         /* frames */
};
/* Whether a message (hdr_len + len bytes) may travel in a batch. */
bool mproc__mpi_batchable(size_t hdr_len, size_t len);
/* Bytes such a message takes in a batch (its frame); frames add up to at
 * most MPROC__MPI_INLINE. */
size_t mproc__mpi_frame_size(size_t hdr_len, size_t len);
/* Append a frame (the caller made sure it fits): 0 or MPROC_ENOMEM. */
int mproc__mpi_batch_add(struct mproc__mpi_batch *b, const void *hdr, size_t hdr_len,
                         const void *data, size_t len);
/* Send b to dest behind hdr (its `len` field is set here; the caller set
 * the frame count in it) and empty b: 0 and *op, MPROC_ENOMEM, MPROC_EIO. */
int mproc__mpi_batch_send(MPI_Comm comm, int dest, int tag, void *hdr, size_t hdr_len,
                          struct mproc__mpi_batch *b, struct mproc__mpi_op **op);
/* Drop b's frames (nothing sent). */
void mproc__mpi_batch_clear(struct mproc__mpi_batch *b);
/* The frame at *at of a received batch (a complete op: frames are read from
 * batch->data from offset 0 on) as an op of its own, complete (no
 * requests), with batch's source; *at moves past it.  1 and *out, 0 when no
 * frame is left, MPROC_EIO (malformed), MPROC_ENOMEM. */
int mproc__mpi_batch_next(const struct mproc__mpi_op *batch, size_t *at,
                          struct mproc__mpi_op **out);

/* An idle polling loop's state: zero it when the loop made progress. */
struct mproc__mpi_idle {
  int64_t since_us; /* when the loop went idle (0: not yet) */
  unsigned naps;    /* sleeps since */
};
/* How long an idle loop keeps polling (yielding between polls) after its
 * last progress before it sleeps: an answer due within a round trip is
 * caught at once, and a loop with nothing to do stops using the CPU within
 * a fraction of a millisecond. */
#define MPROC__MPI_SPIN_US 200
/* The idle step of a polling loop: yield while within MPROC__MPI_SPIN_US of
 * going idle, then sleep growing from 16 us to 1 ms. */
void mproc__mpi_backoff(struct mproc__mpi_idle *w);
/* The monotonic clock in microseconds. */
int64_t mproc__mpi_now_us(void);

/* ---- mpi_init.c ---------------------------------------------------------- */

/* tasks_per_rank's default.  Enough tasks in flight per rank that a run of
 * tiny tasks travels in batches and the rank's local workers always find
 * the next one queued (measured, quick bench, 2 worker ranks on 2 CPUs:
 * 31 k tiny tasks/s with 2, 64 k with 8, 74 k with 16, 79 k with 32).  Since
 * a rank hands what arrives together to a worker in units of half a share,
 * a larger share makes larger units (2026-11-30, load 19, 100 k tasks x 7,
 * medians of 3 alternating runs: 86 k/s with 16, 142 k with 32, 154 k with
 * 64); 32 keeps what a long task holds back behind it on its rank (a sent
 * task is never taken back) to a few dozen. */
#define MPROC__MPI_TASKS_PER_RANK 32

/* The state of this process in the job. */
struct mproc__mpi_state {
  bool initialised;    /* mproc_mpi_init succeeded */
  bool we_init_mpi;    /* we called MPI_Init (and so MPI_Finalize) */
  bool finalized;      /* mproc_mpi_finalize ran */
  bool joined_at_load; /* MPROC_TRANSPORT=mpi: init ran before main */
  bool called_init;    /* ...and the program called it again since */
  int rank, size;      /* in comm */
  MPI_Comm comm;       /* our duplicate of MPI_COMM_WORLD */
  int tasks_per_rank;  /* options */
  bool inrank;         /* rank 0: options flag MPROC_MPI_INRANK */
  char host[64];       /* this process's host name */
  char (*hosts)[64];   /* rank 0: every rank's host name */
};
extern struct mproc__mpi_state mproc__mpi;
/* Whether this process was started by an MPI launcher (mpiexec, srun...),
 * and its rank per the launcher's environment (-1 when unknown). */
bool mproc__mpi_launched(int *rank);
/* Print a fatal error and abort the whole job (never returns). */
_Noreturn void mproc__mpi_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- mpi_rank.c ---------------------------------------------------------- */

/* The local pool a worker rank runs its tasks in, created before MPI_Init
 * so its first worker is never a fork of an MPI process. */
int mproc__mpi_rank_prepare(void);
/* Serve rank 0 until told to stop; returns the process exit status. */
int mproc__mpi_rank_serve(void);
/* Drop the local pool (a failed handshake). */
void mproc__mpi_rank_discard(void);

/* ---- mpi_unit.c ---------------------------------------------------------- */

/* Tasks in one unit at most. */
#define MPROC__MPI_UNIT_MAX 32
/* A task's state in its unit (see mpi_unit.c). */
enum {
  MPROC__MPI_U_PENDING,
  MPROC__MPI_U_RUNNING,
  MPROC__MPI_U_DONE,
  MPROC__MPI_U_CANCELLED,
  MPROC__MPI_U_CANCEL_REQ,
  MPROC__MPI_U_IN_FUTURE,
  MPROC__MPI_U_TAKEN, /* its outcome was read: a later run skips it */
};
/* The shared areas units live in: made before the local pools fork their
 * workers (0 or MPROC_ENOMEM); dropped at the end. */
int mproc__mpi_units_prepare(void);
void mproc__mpi_units_discard(void);
/* A free area for a unit: its index, or -1 when none is free. */
int mproc__mpi_unit_new(void);
void mproc__mpi_unit_release(int k);
/* Add fn(arg) as the unit's next task: 0, or 1 when it does not fit. */
int mproc__mpi_unit_add(int k, mproc_task_fn fn, const void *arg, size_t len);
/* Hand unit k to the local pool as one task (again after a crash: the
 * tasks still PENDING run): as mproc_pool_submit. */
int mproc__mpi_unit_start(int k, mproc_pool *pool, mproc_future **f);
/* Task i's state (MPROC__MPI_U_*). */
uint32_t mproc__mpi_unit_state(int k, uint32_t i);
/* Cancel task i: false when it will not run (it had not started, or it is
 * over already), true when it runs: the caller then cancels the unit's
 * future. */
bool mproc__mpi_unit_cancel(int k, uint32_t i);
/* Task i's outcome was read: MPROC__MPI_U_TAKEN. */
void mproc__mpi_unit_take(int k, uint32_t i);
/* A DONE task's outcome: its code (0: *data, *len its result in the area),
 * *msg its failure message or NULL, *pid the worker. */
int mproc__mpi_unit_outcome(int k, uint32_t i, const void **data, size_t *len, const char **msg,
                            int *pid);
/* Run fn(arg) on this thread (in-rank): 0 with *res (malloc'd, the caller
 * frees it) and *res_len, or the task's failure code with msg (and
 * *has_msg: mproc_task_fail set it). */
int mproc__mpi_inrank_call(mproc_task_fn fn, const void *arg, size_t len, void **res,
                           size_t *res_len, char msg[MPROC__MPI_MSG], bool *has_msg);

/* ---- mpi_client.c (rank 0) ------------------------------------------------ */

struct mproc__mpi_job;
/* Where a job goes: a worker rank (0: the least loaded one) and a local pool
 * there (0: the rank's own one-worker pool; else one mproc__mpi_open made). */
struct mproc__mpi_to {
  int rank;
  uint64_t pool;
};
/* Submit fn(arg) to a worker rank (arg is copied; the job goes out at the
 * next flush or progress step).  Returns 0 and *out, or
 * MPROC_EINVAL, MPROC_ESTATE (no worker ranks), MPROC_ENOMEM. */
int mproc__mpi_submit(const struct mproc__mpi_fn *fn, const void *arg, size_t len,
                      int64_t timeout_ms, struct mproc__mpi_job **out);
/* The same, bound for `to` (rank 1..size-1, 0: any). */
int mproc__mpi_submit_to(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn, const void *arg,
                         size_t len, int64_t timeout_ms, struct mproc__mpi_job **out);
/* Submit out[i] = fn(in[i]) for n elements to `to`; the result is the
 * n * out_size output bytes.  in is borrowed, not copied (MPI reads it in
 * place): it must stay as it is until the job finished or was freed.  res
 * (NULL: none) receives the output directly: the finished job's result is
 * then in res (mproc__mpi_job_take_result gives NULL and its length); it is
 * the caller's again under the same terms as in. */
int mproc__mpi_submit_map(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn, const void *in,
                          size_t n, size_t in_size, void *res, size_t out_size,
                          struct mproc__mpi_job **out);
/* Submit out[i] = fn(cols[0][i], cols[1][i], ...) for n elements to `to`:
 * nargs columns (copied), column k of n * col_size[k] bytes; the result is
 * the n * out_size output bytes. */
int mproc__mpi_submit_starmap(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn,
                              const void *const *cols, size_t n, size_t nargs,
                              const size_t *col_size, size_t out_size, struct mproc__mpi_job **out);
/* Open local pool to.pool (> 0) of `workers` workers on rank to.rank (a
 * slot started again replaces it there): with init (type _INIT, or NULL for
 * none), its argument arg[0..len) copied, and init_timeout_ms (0: none).
 * The job finishes once the rank's pool is ready: 0, or the initializer's
 * failure.  Jobs sent to to.pool after it run in that pool. */
int mproc__mpi_open(struct mproc__mpi_to to, int workers, const struct mproc__mpi_fn *init,
                    const void *arg, size_t len, int64_t init_timeout_ms,
                    struct mproc__mpi_job **out);
/* Local pool `pool` on `rank` is done: what still runs there is dropped. */
int mproc__mpi_close(int rank, uint64_t pool);
/* Send what was submitted since the last flush or progress step (submit
 * only queues, so that jobs queued together travel together). */
void mproc__mpi_flush(void);
/* Wait until the job finished: 0, MPROC_ETIMEDOUT. */
int mproc__mpi_wait(struct mproc__mpi_job *j, int64_t timeout_ms);
/* Whether the job finished (its result may be any code, MPROC_ESTATE too). */
bool mproc__mpi_job_done(const struct mproc__mpi_job *j);
/* A finished job's outcome: 0 with *data and *len borrowed from the job, or the
 * failure code with err filled; MPROC_ESTATE while unfinished (a job that
 * failed with MPROC_ESTATE on its rank says so too: ask mproc__mpi_job_done). */
int mproc__mpi_job_result(struct mproc__mpi_job *j, const void **data, size_t *len,
                          struct mproc_task_error *err);
/* Which rank ran (or runs) the job, 0 while queued on rank 0. */
int mproc__mpi_job_rank(const struct mproc__mpi_job *j);
/* When the job was sent to its rank (mproc_now_ms), -1 while queued. */
int64_t mproc__mpi_job_sent_ms(const struct mproc__mpi_job *j);
/* Take a finished job's result payload (malloc'd, the caller frees it); NULL
 * with *len > 0 when it was received into the map's res buffer. */
void *mproc__mpi_job_take_result(struct mproc__mpi_job *j, size_t *len);
/* Cancel: a queued job completes with MPROC_ECANCELED at once, a sent one
 * once its rank confirms.  0 or MPROC_ESTATE (finished). */
int mproc__mpi_cancel(struct mproc__mpi_job *j);
/* Release (an unfinished job's result is discarded when it arrives). */
void mproc__mpi_job_free(struct mproc__mpi_job *j);
/* Move every message along once; returns how many jobs finished. */
int mproc__mpi_progress(void);
/* How many batches of tasks were sent, and of results received, so far. */
void mproc__mpi_batch_counts(uint64_t *sent, uint64_t *received);
/* Rank 0's finalize: stop the ranks (0, MPROC_ETIMEDOUT). */
int mproc__mpi_client_stop(int64_t deadline);

/* ---- transport_mpi.c ------------------------------------------------------ */

extern const struct mproc__transport_ops mproc__transport_mpi;
/* Held by whichever thread calls into MPI (the dispatcher's calls from pool
 * threads, finalize): MPI_THREAD_SERIALIZED. */
extern pthread_mutex_t mproc__mpi_mu;

#endif /* MPROC_MPI_INTERNAL_H */
