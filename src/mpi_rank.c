/* A worker rank: receive tasks from rank 0, run each in a local supervised
 * worker, send the results back.
 *
 * Design notes.  The rank process itself never runs task code: every task
 * goes to a local mproc pool -- the one opened for the rank-0 pool it
 * belongs to (OPEN: that pool's share of workers and its initializer), or,
 * for the internal calls, a one-worker pool made before MPI_Init -- the
 * same crash containment as on one machine.  A task that segfaults, calls exit() or
 * overruns its timeout kills only that local worker; the pool replaces it,
 * the task fails with the pool's code (MPROC_EWORKERDIED, MPROC_ETIMEDOUT)
 * and a message naming this rank and host, and the rank carries on.  Rank 0
 * keeps a few tasks in flight per rank, so the local pool's queue already
 * holds the next task when one finishes.  Calls without a timeout that
 * became complete in one pass go to the pool in units (one pool task for
 * several of them, mpi_unit.c; form_units below).  The one exception to
 * "never runs task code": tasks flagged in-rank (rank 0 chose
 * MPROC_MPI_INRANK) run on this thread, trading crash containment for the
 * hop.
 *
 * One loop, one thread (MPI_THREAD_FUNNELED): take in headers and their
 * payloads (task, control: one probe of any tag finds either, see
 * mproc__mpi_waiting), hand complete tasks to the pool, turn finished
 * futures into result messages, retire completed sends.  When nothing moved
 * it polls its futures and MPI in turn for a short while, then waits on its
 * futures for up to 1 ms (a finished task wakes it at once), or backs off
 * when it has none.
 *
 * Per job: arriving (payload pieces still coming) -> [forming: a call
 * waiting for the end of the pass to join a unit] -> running (a future of
 * the local pool, or a task of a running unit) -> sending (result message in flight, the future
 * kept until then because the message points into its result) -> freed. */
#include "mpi_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct job {
  struct job *next;
  uint64_t id;
  uint32_t kind;
  mproc_future *f;          /* running: the local pool's future */
  void *out;                /* MAP without a block: the output elements (owned) */
  const void *mapped;       /* MAP: where the output elements are */
  size_t out_len;           /* ... how many bytes */
  struct blk *blk;          /* MAP: the shared block it runs in, NULL: none */
  struct mproc__mpi_op *op; /* arriving: the task; sending: the result */
  struct mproc__mpi_result res;
  const void *rdata; /* ready: the result payload (res.len bytes) */
  bool cancelled;    /* cancelled while its payload was arriving */
  /* forming: a call bound for a unit (see form_units) */
  mproc_pool *lpool;
  mproc_task_fn fn;
};

/* A unit on its way through a local worker (mpi_unit.c): area k, its jobs
 * (NULL once answered). */
struct unit {
  struct unit *next;
  int k;
  uint32_t n;
  mproc_pool *pool; /* NULL once its pool was closed */
  mproc_future *f;
  struct job *jobs[MPROC__MPI_UNIT_MAX];
};

static mproc_pool *g_pool;
static struct job *g_arriving, *g_running, *g_ready, *g_sending, *g_forming;
static struct unit *g_units;

int mproc__mpi_rank_prepare(void) {
  /* The units' areas first, so every local worker inherits them.  Local
   * workers whatever MPROC_TRANSPORT says: it names how rank 0's pools
   * reach the ranks, not how a rank runs its tasks; by fork whatever
   * MPROC_START_METHOD says: units and starmap chunks carry this process's
   * function addresses. */
  int rc = mproc__mpi_units_prepare();
  struct mproc_pool_options po = {
      .workers = 1, .transport = "shm", .start_method = MPROC_START_FORK};
  if (rc == 0 && (rc = mproc_pool_new(&g_pool, &po)) != 0)
    mproc__mpi_units_discard();
  return rc;
}

void mproc__mpi_rank_discard(void) {
  if (g_pool)
    mproc_pool_free(g_pool);
  g_pool = NULL;
  mproc__mpi_units_discard();
}

/* ---- blocks map chunks run in -------------------------------------------------
 *
 * A map chunk's input is received straight into a shared block, the local
 * pool maps over it in place (mproc_pool_map_shm: its workers map a block
 * once and keep the mapping), and the output is sent straight from the
 * block: no copy on this rank besides MPI's own.  Blocks are kept for the
 * next chunks (a chunk of a map is usually the size of the one before), a
 * few at most and none above 64 MiB, so a huge map does not leave its
 * memory held by an idle rank; without a block (no memory for one) a chunk
 * takes the copying path, mproc_pool_map_async. */
struct blk {
  struct blk *next; /* idle list */
  mproc_shm *shm;
  size_t size;
};
enum { IDLE_BLOCKS = 4 };
#define IDLE_BLOCK_MAX ((size_t)64 << 20)
static struct blk *g_idle;
static int g_nidle;

/* Where a chunk's output starts in its block: after its input, aligned. */
static size_t out_off(size_t in_len) { return (in_len + 63) & ~(size_t)63; }

static struct blk *blk_get(size_t need) {
  for (struct blk **pp = &g_idle; *pp; pp = &(*pp)->next) {
    struct blk *b = *pp;
    if (b->size >= need) {
      *pp = b->next;
      g_nidle--;
      return b;
    }
  }
  struct blk *b = calloc(1, sizeof *b);
  if (!b || mproc_shm_new(&b->shm, need) != 0) {
    free(b);
    return NULL;
  }
  b->size = need;
  return b;
}

static void blk_put(struct blk *b) {
  if (!b)
    return;
  if (g_nidle < IDLE_BLOCKS && b->size <= IDLE_BLOCK_MAX) {
    b->next = g_idle;
    g_idle = b;
    g_nidle++;
    return;
  }
  mproc_shm_free(b->shm);
  free(b);
}

/* mproc__mpi_irecv's placement of a task's payload: a map chunk's input
 * goes into a block with room for its output after it. */
static void *place_chunk(void *ctx, int source, const void *hdr, size_t len, void **user) {
  (void)ctx, (void)source;
  const struct mproc__mpi_task *t = hdr;
  if (t->kind != MPROC__MPI_MAP || t->count == 0 || t->in_size == 0 ||
      t->in_size > SIZE_MAX / t->count || t->count * t->in_size != len ||
      t->out_size > (SIZE_MAX - out_off(len)) / t->count)
    return NULL;
  struct blk *b = blk_get(out_off(len) + (size_t)(t->count * t->out_size));
  if (!b)
    return NULL;
  *user = b;
  return mproc_shm_addr(b->shm);
}

static void job_free(struct job *j) {
  if (j->f)
    mproc_future_free(j->f);
  mproc__mpi_op_free(j->op);
  blk_put(j->blk);
  free(j->out);
  free(j);
}

static void push(struct job **list, struct job *j) {
  j->next = *list;
  *list = j;
}

static void append(struct job **list, struct job *j) {
  while (*list)
    list = &(*list)->next;
  j->next = NULL;
  *list = j;
}

/* Fail a job that never reached the pool: it goes straight to sending. */
static void fail_early(struct job *j, int code, const char *why) {
  memset(&j->res, 0, sizeof j->res);
  j->res.id = j->id;
  j->res.code = code;
  j->res.exit_status = -1;
  snprintf(j->res.message, sizeof j->res.message, "rank %d on %.50s: %.130s", mproc__mpi.rank,
           mproc__mpi.host, why);
}

/* The job's result is ready: it goes out at the end of this pass, with the
 * others ready by then (send_ready). */
static void send_result(struct job *j, const void *data, size_t len) {
  j->res.len = len;
  j->rdata = data;
  mproc__mpi_op_free(j->op);
  j->op = NULL;
  push(&g_ready, j);
}

static void send_alone(struct job *j) {
  if (mproc__mpi_isend(mproc__mpi.comm, 0, MPROC__MPI_TAG_RESULT, &j->res, sizeof j->res,
                       (void *)j->rdata, j->res.len, false, &j->op) != 0)
    mproc__mpi_abort("cannot send a result to rank 0");
  push(&g_sending, j);
}

/* Send a batch of results; its message is kept, as a job of its own, until
 * its send completed. */
static void send_batch(struct mproc__mpi_batch *b) {
  struct job *carrier = calloc(1, sizeof *carrier);
  struct mproc__mpi_result hdr = {.batch = (int32_t)b->n};
  if (!carrier || mproc__mpi_batch_send(mproc__mpi.comm, 0, MPROC__MPI_TAG_RESULT, &hdr, sizeof hdr,
                                        b, &carrier->op) != 0)
    mproc__mpi_abort("cannot send results to rank 0");
  push(&g_sending, carrier);
}

/* Send the results that became ready in this pass: one alone as it is,
 * several small ones in batches (copied in, so their jobs go at once),
 * large ones alone. */
static void send_ready(void) {
  struct job *ready = NULL;
  while (g_ready) { /* in the order they finished */
    struct job *j = g_ready;
    g_ready = j->next;
    push(&ready, j);
  }
  int small = 0;
  for (struct job *j = ready; j; j = j->next)
    small += mproc__mpi_batchable(sizeof j->res, j->res.len);
  struct mproc__mpi_batch b = {0};
  for (struct job *j = ready, *next; j; j = next) {
    next = j->next;
    if (small < 2 || !mproc__mpi_batchable(sizeof j->res, j->res.len)) {
      send_alone(j);
      continue;
    }
    if (b.used + mproc__mpi_frame_size(sizeof j->res, j->res.len) > MPROC__MPI_INLINE)
      send_batch(&b);
    if (mproc__mpi_batch_add(&b, &j->res, sizeof j->res, j->rdata, j->res.len) != 0)
      mproc__mpi_abort("out of memory");
    job_free(j);
  }
  if (b.n)
    send_batch(&b);
}

/* A starmap chunk runs as one task of the local pool (the pool's own
 * starmap has no asynchronous form): its argument is this header, then the
 * columns one after the other; its result the output elements, then a
 * struct starmap_end saying how many succeeded and why the next failed.
 * The local worker is a fork of this rank, so the function's address holds
 * there. */
struct starmap_arg {
  uint64_t fn; /* mproc_starmap_fn, resolved on this rank */
  uint64_t count, nargs, out_size;
  uint64_t col_size[MPROC_STARMAP_MAX_ARGS];
};
struct starmap_end {
  uint64_t ok;  /* items done; item `ok` failed when code != 0 */
  int32_t code; /* the element function's non-zero return, or 0 */
  uint32_t pad_;
};

static int starmap_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  struct starmap_arg a;
  if (len < sizeof a)
    return mproc_task_fail(ctx, MPROC_EINVAL, "malformed starmap chunk");
  memcpy(&a, arg, sizeof a); /* the argument bytes need not be aligned */
  const unsigned char *col[MPROC_STARMAP_MAX_ARGS];
  const unsigned char *at = (const unsigned char *)arg + sizeof a;
  for (uint64_t k = 0; k < a.nargs; k++) {
    col[k] = at;
    at += a.count * a.col_size[k];
  }
  size_t out_len = (size_t)(a.count * a.out_size);
  unsigned char *out = mproc_task_result_buf(ctx, out_len + sizeof(struct starmap_end));
  if (!out)
    return mproc_task_fail(ctx, MPROC_ENOMEM, "no memory for a %zu-byte result", out_len);
  struct starmap_end end = {0};
  const void *args[MPROC_STARMAP_MAX_ARGS];
  mproc_starmap_fn fn = (mproc_starmap_fn)(uintptr_t)a.fn;
  for (; end.ok < a.count; end.ok++) {
    for (uint64_t k = 0; k < a.nargs; k++)
      args[k] = col[k] + end.ok * a.col_size[k];
    if ((end.code = fn(args, out + end.ok * a.out_size)) != 0)
      break;
  }
  memcpy(out + out_len, &end, sizeof end);
  return 0;
}

/* The argument of starmap_task for chunk j (malloc'd into *buf). */
static int starmap_arg(struct job *j, const struct mproc__mpi_task *t, void (*fn)(void),
                       unsigned char **buf_out, size_t *len) {
  size_t cols = 0;
  bool ok = t->nargs >= 1 && t->nargs <= MPROC_STARMAP_MAX_ARGS;
  for (uint64_t k = 0; ok && k < t->nargs; k++)
    cols += (size_t)(t->count * t->col_size[k]);
  if (!ok || cols != j->op->len)
    return MPROC_EINVAL;
  struct starmap_arg a = {
      .fn = (uint64_t)(uintptr_t)fn, .count = t->count, .nargs = t->nargs, .out_size = t->out_size};
  memcpy(a.col_size, t->col_size, sizeof a.col_size);
  unsigned char *buf = malloc(sizeof a + cols);
  if (!buf)
    return MPROC_ENOMEM;
  memcpy(buf, &a, sizeof a);
  if (cols)
    memcpy(buf + sizeof a, j->op->data, cols);
  *buf_out = buf;
  *len = sizeof a + cols;
  return 0;
}

static int start_starmap(mproc_pool *pool, struct job *j, const struct mproc__mpi_task *t,
                         void (*fn)(void)) {
  unsigned char *buf;
  size_t len;
  int rc = starmap_arg(j, t, fn, &buf, &len);
  if (rc == 0) {
    rc = mproc_pool_submit(pool, starmap_task, buf, len, &j->f);
    free(buf); /* the pool copied it */
  }
  return rc;
}

/* A map chunk: in place in its block, or copied into the local pool.  One
 * local chunk per local worker: the chunk came already cut to this rank's
 * share, cutting it finer only adds hops. */
static int start_map(mproc_pool *pool, struct job *j, const struct mproc__mpi_task *t,
                     mproc_map_fn fn) {
  size_t n = (size_t)t->count, w = (size_t)mproc_pool_workers(pool);
  struct mproc_map_options mo = {.chunksize = w > 1 ? (n + w - 1) / w : n};
  j->out_len = (size_t)(t->count * t->out_size);
  if (j->blk) {
    size_t at = out_off(j->op->len);
    j->mapped = (char *)mproc_shm_addr(j->blk->shm) + at;
    return mproc_pool_map_shm_async(pool, fn, j->blk->shm, 0, (size_t)t->in_size, at,
                                    (size_t)t->out_size, n, &mo, &j->f);
  }
  j->mapped = j->out = malloc(j->out_len ? j->out_len : 1);
  return j->out ? mproc_pool_map_async(pool, fn, j->op->data, n, (size_t)t->in_size, j->out,
                                       (size_t)t->out_size, &mo, &j->f)
                : MPROC_ENOMEM;
}

/* The function a task names.  Every chunk of a map and every call of one
 * function names the same one: the last reference resolved is kept, so
 * tiny tasks do not walk the loaded objects each. */
static void (*resolve(const struct mproc__mpi_fn *r, char *why, size_t cap))(void) {
  static struct mproc__mpi_fn last;
  static void (*last_fn)(void);
  if (last_fn && memcmp(&last, r, sizeof last) == 0)
    return last_fn;
  void (*fn)(void) = mproc__mpi_fn_resolve(r, why, cap);
  if (fn) {
    last = *r;
    last_fn = fn;
  }
  return fn;
}

/* ---- local pools of rank 0's pools -----------------------------------------
 *
 * A pool of rank 0 over this rank gets a local pool of its own (OPEN): as
 * many workers as the share of that pool's workers this rank holds, and its
 * initializer, so several pools with different initializers share the rank.
 * Tasks name their local pool; CLOSE drops it, with whatever it still runs
 * (rank 0 has dropped those tasks already).  These pools fork after
 * MPI_Init: their workers never call MPI (see mpi_init.c on fork). */
struct lpool {
  struct lpool *next;
  uint64_t id;
  mproc_pool *pool;
  void *initarg; /* the initializer's argument, which the workers read */
  bool has_init; /* in-rank tasks of this pool still run in its workers */
};
static struct lpool *g_pools;

static mproc_pool *pool_of(uint64_t id) {
  if (id == 0)
    return g_pool;
  for (struct lpool *l = g_pools; l; l = l->next)
    if (l->id == id)
      return l->pool;
  return NULL;
}

static void close_pool(uint64_t id) {
  for (struct lpool **pp = &g_pools; *pp; pp = &(*pp)->next) {
    struct lpool *l = *pp;
    if (l->id != id)
      continue;
    *pp = l->next;
    for (struct unit *u = g_units; u; u = u->next)
      if (u->pool == l->pool)
        u->pool = NULL; /* its tasks are not run again */
    mproc_pool_terminate(l->pool);
    mproc_pool_free(l->pool); /* running jobs' futures keep what they need */
    free(l->initarg);
    free(l);
    return;
  }
}

/* The probe behind an initializer: it runs once the worker is ready. */
static int ready_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  return 0;
}

/* OPEN: make the local pool; with an initializer the job's outcome is a
 * probe's, so it answers once the initializer ran (or failed). */
static int open_pool(struct job *j, const struct mproc__mpi_task *t, char *why, size_t cap) {
  mproc_init_fn init = NULL;
  if (t->flags & MPROC__MPI_HAS_INIT) {
    init = (mproc_init_fn)(uintptr_t)resolve(&t->fn, why, cap);
    if (!init)
      return MPROC_ENOFUNC;
  }
  if (t->count < 1 || t->count > 4096 || t->pool == 0 || t->timeout_ms < 0)
    return MPROC_EINVAL;
  close_pool(t->pool); /* a slot started again: its old pool goes */
  struct lpool *l = calloc(1, sizeof *l);
  if (!l || (j->op->len && !(l->initarg = malloc(j->op->len)))) {
    free(l);
    return MPROC_ENOMEM;
  }
  if (j->op->len)
    memcpy(l->initarg, j->op->data, j->op->len);
  l->id = t->pool;
  l->has_init = init != NULL;
  struct mproc_pool_options po = {.workers = (int)t->count,
                                  .transport = "shm",
                                  .start_method = MPROC_START_FORK,
                                  .initializer = init,
                                  .initarg = l->initarg,
                                  .initarg_len = j->op->len,
                                  .init_timeout_ms = t->timeout_ms};
  int rc = mproc_pool_new(&l->pool, &po);
  if (rc) {
    free(l->initarg);
    free(l);
    return rc;
  }
  l->next = g_pools;
  g_pools = l;
  return init ? mproc_pool_submit(l->pool, ready_task, NULL, 0, &j->f) : 0;
}

/* Whether j is a task for a pool whose OPEN has not started yet: rank 0
 * sends the OPEN first, but a large initializer argument may still be
 * arriving when a small task behind it is complete. */
static bool waits_for_open(const struct job *j) {
  const struct mproc__mpi_task *t = j->op->hdr;
  if (t->kind == MPROC__MPI_OPEN || t->pool == 0 || pool_of(t->pool))
    return false;
  for (const struct job *o = g_arriving; o; o = o->next) {
    const struct mproc__mpi_task *ot = o->op->hdr;
    if (o != j && ot->kind == MPROC__MPI_OPEN && ot->pool == t->pool)
      return true;
  }
  return false;
}

/* A job's outcome: rc 0 with its result (data, len), or the failure err. */
static void conclude(struct job *j, int rc, const void *data, size_t len,
                     const struct mproc_task_error *err) {
  memset(&j->res, 0, sizeof j->res);
  j->res.id = j->id;
  struct starmap_end end = {0};
  if (rc == 0 && j->kind == MPROC__MPI_STARMAP) {
    if (len < sizeof end) {
      rc = MPROC_ECORRUPT;
    } else {
      len -= sizeof end;
      memcpy(&end, (const char *)data + len, sizeof end);
    }
  }
  if (rc == 0 && end.code == 0) {
    if (j->kind == MPROC__MPI_MAP) {
      data = j->mapped;
      len = j->out_len;
    }
    send_result(j, data, len);
    return;
  }
  if (rc == 0) { /* a starmap element failed: as the pool reports a map's */
    j->res.code = MPROC_ETASK;
    j->res.task_code = end.code;
    j->res.exit_status = -1;
    j->res.index = end.ok;
    snprintf(j->res.message, sizeof j->res.message, "%s", mproc_strerror(end.code));
    send_result(j, NULL, 0);
    return;
  }
  struct mproc_task_error none = {.code = rc, .exit_status = -1};
  if (!err)
    err = &none;
  j->res.code = err->code;
  j->res.task_code = err->task_code;
  j->res.signo = err->signo;
  j->res.exit_status = err->exit_status;
  j->res.pid = err->pid;
  j->res.index = err->index;
  /* The pool's own failures (the worker died, a timeout) say where they
   * happened; a task's message is the task's. */
  if (err->code == MPROC_ETASK)
    memcpy(j->res.message, err->message, sizeof j->res.message);
  else
    snprintf(j->res.message, sizeof j->res.message, "rank %d on %.50s: %.130s", mproc__mpi.rank,
             mproc__mpi.host, err->message);
  send_result(j, NULL, 0);
}

/* A task's own failure (it returned code, or called mproc_task_fail), as
 * the local pool reports one. */
static struct mproc_task_error task_failed(int code, const char *msg, int pid, uint64_t index) {
  struct mproc_task_error e = {
      .code = MPROC_ETASK, .task_code = code, .exit_status = -1, .pid = pid, .index = index};
  snprintf(e.message, sizeof e.message, "%s", msg ? msg : mproc_strerror(code));
  return e;
}

/* ---- in-rank mode ----------------------------------------------------------
 *
 * A task flagged MPROC__MPI_INRANK (rank 0's option MPROC_MPI_INRANK) runs on
 * this thread, as a raw MPI farm or mpi4py.futures run theirs: no local
 * worker, no hop.  A crash takes the rank down, and the job ends through
 * the whole-rank-death path; rank 0 refuses timeouts for such tasks.  A
 * pool with an initializer keeps its tasks in its local workers, where the
 * initializer ran. */
static bool runs_here(const struct mproc__mpi_task *t) {
  if (!(t->flags & MPROC__MPI_INRANK))
    return false;
  for (struct lpool *l = g_pools; t->pool != 0 && l; l = l->next)
    if (l->id == t->pool)
      return !l->has_init;
  return true;
}

static void run_here(struct job *j, const struct mproc__mpi_task *t, void (*fn)(void)) {
  char msg[MPROC__MPI_MSG];
  bool has_msg = false;
  void *res = NULL;
  size_t len = 0;
  int rc = 0;
  if (t->kind == MPROC__MPI_MAP) {
    /* Output into the block the input came in (room was made after it),
     * as the local pool's map does: no fresh pages per chunk. */
    const unsigned char *in = j->op->data;
    size_t n = (size_t)t->count;
    j->out_len = (size_t)(t->count * t->out_size);
    unsigned char *out;
    if (j->blk) {
      in = mproc_shm_addr(j->blk->shm);
      out = (unsigned char *)mproc_shm_addr(j->blk->shm) + out_off(j->op->len);
    } else if (!(out = j->out = malloc(j->out_len ? j->out_len : 1))) {
      conclude(j, MPROC_ENOMEM, NULL, 0, NULL);
      return;
    }
    j->mapped = out;
    mproc_map_fn f = (mproc_map_fn)fn;
    for (size_t i = 0; i < n; i++) {
      if ((rc = f(in + i * t->in_size, out + i * t->out_size)) != 0) {
        struct mproc_task_error e = task_failed(rc, NULL, (int)getpid(), i);
        conclude(j, MPROC_ETASK, NULL, 0, &e);
        return;
      }
    }
    conclude(j, 0, NULL, 0, NULL);
    return;
  }
  if (t->kind == MPROC__MPI_STARMAP) {
    unsigned char *buf;
    size_t blen;
    rc = starmap_arg(j, t, fn, &buf, &blen);
    if (rc == 0) {
      rc = mproc__mpi_inrank_call(starmap_task, buf, blen, &res, &len, msg, &has_msg);
      free(buf);
    } else {
      conclude(j, rc, NULL, 0, NULL);
      return;
    }
  } else {
    rc = mproc__mpi_inrank_call((mproc_task_fn)fn, j->op->data, j->op->len, &res, &len, msg,
                                &has_msg);
  }
  if (rc != 0) {
    struct mproc_task_error e = task_failed(rc, has_msg ? msg : NULL, (int)getpid(), 0);
    conclude(j, MPROC_ETASK, NULL, 0, &e);
    return;
  }
  j->out = res;
  conclude(j, 0, res, len, NULL);
}

/* The job was handed to its local pool (j->f), or failed (rc). */
static void launched(struct job *j, int rc) {
  if (rc) {
    char msg[120];
    snprintf(msg, sizeof msg, "could not start the task: %s", mproc_strerror(rc));
    fail_early(j, rc, msg);
  }
  if (j->f) {
    mproc__mpi_op_free(j->op); /* the pool copied the argument */
    j->op = NULL;
    push(&g_running, j);
  } else {
    send_result(j, NULL, 0);
  }
}

static void start_alone(struct job *j) {
  const struct mproc__mpi_task *t = j->op->hdr;
  struct mproc_submit_options so = {.timeout_ms = t->timeout_ms, .retries = 0};
  launched(j, mproc_pool_submit_ex(j->lpool, j->fn, j->op->data, j->op->len, &so, &j->f));
}

/* A task whose payload is complete: resolve its function and start it. */
static void start(struct job *j) {
  const struct mproc__mpi_task *t = j->op->hdr;
  char why[160] = "";
  memset(&j->res, 0, sizeof j->res);
  j->res.id = j->id;
  mproc_pool *pool = t->kind == MPROC__MPI_OPEN ? NULL : pool_of(t->pool);
  void (*fn)(void) = pool ? resolve(&t->fn, why, sizeof why) : NULL;
  int rc = 0;
  if (j->cancelled) {
    fail_early(j, MPROC_ECANCELED, "cancelled before it started");
  } else if (t->kind == MPROC__MPI_OPEN) {
    rc = open_pool(j, t, why, sizeof why);
    if (rc == MPROC_ENOFUNC) {
      fail_early(j, rc, why);
      rc = 0;
    }
  } else if (!pool) {
    fail_early(j, MPROC_ESTATE, "its pool is not open on this rank");
  } else if (!fn) {
    fail_early(j, MPROC_ENOFUNC, why);
  } else if (!((t->kind == MPROC__MPI_CALL && t->fn.type == MPROC__MPI_FN_TASK) ||
               (t->kind == MPROC__MPI_MAP && t->fn.type == MPROC__MPI_FN_MAP &&
                t->count * t->in_size == j->op->len) ||
               (t->kind == MPROC__MPI_STARMAP && t->fn.type == MPROC__MPI_FN_MAP))) {
    fail_early(j, MPROC_EINVAL, "malformed task message");
  } else if (runs_here(t)) {
    run_here(j, t, fn);
    return;
  } else if (t->kind == MPROC__MPI_CALL) {
    j->lpool = pool;
    j->fn = (mproc_task_fn)fn;
    if (t->timeout_ms == 0) {
      append(&g_forming, j); /* form_units, at the end of this pass */
      return;
    }
    start_alone(j);
    return;
  } else if (t->kind == MPROC__MPI_MAP) {
    rc = start_map(pool, j, t, (mproc_map_fn)fn);
  } else {
    rc = start_starmap(pool, j, t, fn);
  }
  launched(j, rc);
}

/* ---- units -----------------------------------------------------------------
 *
 * The calls without a timeout that became complete in one pass (most often
 * a batch rank 0 sent) go to their local pool in units (mpi_unit.c): a unit
 * per half of a worker's share, so each worker has the next unit queued
 * while it runs one (rank 0 keeps tasks_per_rank tasks per worker here:
 * they arrive in halves as results go back).  A unit of one, or no free
 * area, is a task of its own as before. */
static bool form_unit(mproc_pool *pool, struct job **grp, size_t per) {
  int k = mproc__mpi_unit_new();
  if (k < 0)
    return false;
  struct unit *u = calloc(1, sizeof *u);
  struct job *j = *grp;
  for (; u && j && u->n < per; j = j->next) {
    if (mproc__mpi_unit_add(k, j->fn, j->op->data, j->op->len) != 0)
      break;
    u->jobs[u->n++] = j;
  }
  if (!u || u->n < 2 || mproc__mpi_unit_start(k, pool, &u->f) != 0) {
    mproc__mpi_unit_release(k);
    free(u);
    return false;
  }
  *grp = j;
  u->k = k;
  u->pool = pool;
  for (uint32_t i = 0; i < u->n; i++) {
    mproc__mpi_op_free(u->jobs[i]->op);
    u->jobs[i]->op = NULL;
    u->jobs[i]->next = NULL;
  }
  u->next = g_units;
  g_units = u;
  return true;
}

static void form_units(void) {
  while (g_forming) {
    mproc_pool *pool = g_forming->lpool;
    struct job *grp = NULL, **tail = &grp;
    size_t n = 0;
    for (struct job **pp = &g_forming; *pp;) {
      struct job *j = *pp;
      if (j->lpool != pool) {
        pp = &j->next;
        continue;
      }
      *pp = j->next;
      j->next = NULL;
      *tail = j;
      tail = &j->next;
      n++;
    }
    size_t w = (size_t)mproc_pool_workers(pool);
    size_t per = (n + 2 * w - 1) / (2 * w);
    if (per > MPROC__MPI_UNIT_MAX)
      per = MPROC__MPI_UNIT_MAX;
    while (grp) {
      if (per >= 2 && form_unit(pool, &grp, per))
        continue;
      struct job *j = grp;
      grp = j->next;
      start_alone(j);
    }
  }
}

/* Task i of unit u: its outcome, read once the unit's future finished
 * (frc, err its failure).  Returns false when it never started and runs
 * again. */
static bool unit_answer(struct unit *u, uint32_t i, int frc, const void *fdata, size_t flen,
                        const struct mproc_task_error *err) {
  struct job *j = u->jobs[i];
  uint32_t st = mproc__mpi_unit_state(u->k, i);
  if (st == MPROC__MPI_U_PENDING && u->pool &&
      (frc == 0 || err->code == MPROC_EWORKERDIED || err->code == MPROC_ECANCELED))
    return false;
  if (st == MPROC__MPI_U_DONE || (st == MPROC__MPI_U_IN_FUTURE && frc == 0)) {
    const void *data = fdata;
    size_t len = flen;
    const char *msg = NULL;
    int pid = 0;
    int code = mproc__mpi_unit_outcome(u->k, i, &data, &len, &msg, &pid);
    if (st == MPROC__MPI_U_IN_FUTURE) {
      data = fdata;
      len = flen;
    }
    if (code != 0) {
      struct mproc_task_error e = task_failed(code, msg, pid, 0);
      conclude(j, MPROC_ETASK, NULL, 0, &e);
    } else if (len && !(j->out = malloc(len))) {
      conclude(j, MPROC_ENOMEM, NULL, 0, NULL);
    } else {
      if (len)
        memcpy(j->out, data, len);
      conclude(j, 0, j->out, len, NULL);
    }
  } else if (st == MPROC__MPI_U_CANCELLED || st == MPROC__MPI_U_CANCEL_REQ) {
    fail_early(j, MPROC_ECANCELED, "cancelled");
    send_result(j, NULL, 0);
  } else if (st == MPROC__MPI_U_PENDING && !u->pool) {
    fail_early(j, MPROC_ESTATE, "its pool was closed on this rank");
    send_result(j, NULL, 0);
  } else if (frc != 0) {
    /* RUNNING: its worker died; PENDING: its pool failed; IN_FUTURE: the
     * unit's result could not be had */
    conclude(j, frc, NULL, 0, err);
  } else {
    fail_early(j, MPROC_ECORRUPT, "the unit's worker left a task in an unknown state");
    send_result(j, NULL, 0);
  }
  mproc__mpi_unit_take(u->k, i);
  u->jobs[i] = NULL;
  return true;
}

/* Unit u's future finished: answer its tasks; true when it runs again for
 * the tasks that never started. */
static bool unit_finish(struct unit *u) {
  const void *fdata = NULL;
  size_t flen = 0;
  int frc = mproc_future_result(u->f, &fdata, &flen, 0);
  struct mproc_task_error err = {.code = frc, .exit_status = -1};
  if (frc != 0 && mproc_future_error(u->f, &err) != 0) {
    memset(&err, 0, sizeof err);
    err.code = frc;
    err.exit_status = -1;
  }
  bool again = false;
  for (uint32_t i = 0; i < u->n; i++)
    if (u->jobs[i] && !unit_answer(u, i, frc, fdata, flen, &err))
      again = true;
  mproc_future_free(u->f);
  u->f = NULL;
  if (again) {
    int rc = mproc__mpi_unit_start(u->k, u->pool, &u->f);
    if (rc == 0)
      return true;
    for (uint32_t i = 0; i < u->n; i++) {
      if (u->jobs[i]) {
        fail_early(u->jobs[i], rc, "could not start the task again after its unit's worker ended");
        send_result(u->jobs[i], NULL, 0);
        u->jobs[i] = NULL;
      }
    }
  }
  mproc__mpi_unit_release(u->k);
  return false;
}

static bool advance_units(void) {
  bool moved = false;
  for (struct unit **pp = &g_units; *pp;) {
    struct unit *u = *pp;
    if (!mproc_future_done(u->f) || (moved = true, unit_finish(u))) {
      pp = &u->next;
      continue;
    }
    *pp = u->next;
    free(u);
  }
  return moved;
}

/* The tasks of running units that finished (or were cancelled before they
 * started) are answered now, not with their unit: a long task must not
 * hold back the results of the tiny ones before it.  Called once the loop
 * went idle, so a unit of tiny tasks still answers as one. */
static bool answer_early(void) {
  bool any = false;
  for (struct unit *u = g_units; u; u = u->next) {
    for (uint32_t i = 0; i < u->n; i++) {
      if (!u->jobs[i])
        continue;
      uint32_t st = mproc__mpi_unit_state(u->k, i);
      if (st == MPROC__MPI_U_DONE || st == MPROC__MPI_U_CANCELLED)
        any |= unit_answer(u, i, 0, NULL, 0, NULL);
    }
  }
  if (any)
    send_ready();
  return any;
}

/* A finished future becomes a result message. */
static void finish(struct job *j) {
  const void *data = NULL;
  size_t len = 0;
  int rc = mproc_future_result(j->f, &data, &len, 0);
  struct mproc_task_error err;
  if (rc != 0 && mproc_future_error(j->f, &err) != 0) {
    memset(&err, 0, sizeof err);
    err.code = rc;
    err.exit_status = -1;
  }
  conclude(j, rc, data, len, &err);
}

enum { STAGE_ARRIVING, STAGE_RUNNING, STAGE_SENDING };

/* Whether job j is through its stage: its payload arrived, its future
 * finished, or its result was sent. */
static bool stage_done(struct job *j, int stage) {
  if (stage == STAGE_RUNNING)
    return mproc_future_done(j->f);
  int rc = mproc__mpi_test(j->op);
  if (rc < 0)
    mproc__mpi_abort("lost contact with rank 0 while %s",
                     stage == STAGE_ARRIVING ? "receiving a task" : "sending a result");
  return rc == 1 && (stage != STAGE_ARRIVING || !waits_for_open(j));
}

/* Move every job of a stage's list that is through it on to the next
 * stage; returns whether any moved. */
static bool advance(struct job **list, int stage) {
  bool moved = false;
  for (struct job **pp = list; *pp;) {
    struct job *j = *pp;
    if (!stage_done(j, stage)) {
      pp = &j->next;
      continue;
    }
    *pp = j->next;
    moved = true;
    if (stage == STAGE_ARRIVING)
      start(j);
    else if (stage == STAGE_RUNNING)
      finish(j);
    else
      job_free(j);
  }
  return moved;
}

/* Cancel job id: a running task's local worker is killed (the pool
 * completes its future with MPROC_ECANCELED); one still arriving never
 * starts.  In a unit: a task not started yet never runs; a running one has
 * its unit's worker killed, and the tasks after it run again on the
 * replacement (mpi_unit.c).  Either way it fails with MPROC_ECANCELED.  A
 * job already answered is not found: nothing to do. */
static void cancel(uint64_t id) {
  for (struct job *j = g_running; j; j = j->next)
    if (j->id == id)
      mproc_future_cancel(j->f);
  for (struct unit *u = g_units; u; u = u->next)
    for (uint32_t i = 0; i < u->n; i++)
      if (u->jobs[i] && u->jobs[i]->id == id && mproc__mpi_unit_cancel(u->k, i))
        mproc_future_cancel(u->f);
  for (struct job *j = g_arriving; j; j = j->next)
    if (j->id == id)
      j->cancelled = true;
}

/* A task message (complete, or its payload still arriving). */
static void take(struct mproc__mpi_op *op) {
  const struct mproc__mpi_task *t = op->hdr;
  if (t->kind == MPROC__MPI_CLOSE || t->kind == MPROC__MPI_CANCEL) {
    if (t->kind == MPROC__MPI_CLOSE)
      close_pool(t->pool);
    else
      cancel(t->id);
    mproc__mpi_op_free(op);
    return;
  }
  if (t->kind == MPROC__MPI_BATCH)
    mproc__mpi_abort("rank 0 sent a batch inside a batch");
  struct job *j = calloc(1, sizeof *j);
  if (!j)
    mproc__mpi_abort("out of memory");
  j->id = t->id;
  j->kind = t->kind;
  j->op = op;
  j->blk = op->user; /* a map chunk arriving into a block */
  op->user = NULL;
  append(&g_arriving, j); /* in arrival order: an OPEN before its pool's tasks */
}

/* One pass over everything; returns whether anything moved, and sets
 * *stop when rank 0 asked this rank to stop. */
static bool pass(bool *stop) {
  bool moved = false;
  struct mproc__mpi_op *op;
  int rc, tag;
  static const struct mproc__mpi_place placed = {place_chunk, NULL};
  /* One probe of any tag per message, and one that finds nothing per pass
   * (mproc__mpi_waiting: an empty probe yields the CPU). */
  while ((rc = mproc__mpi_waiting(mproc__mpi.comm, &tag)) == 1) {
    moved = true;
    if (tag == MPROC__MPI_TAG_CTRL) {
      if ((rc = mproc__mpi_irecv(mproc__mpi.comm, MPROC__MPI_TAG_CTRL,
                                 sizeof(struct mproc__mpi_ctrl), NULL, &op)) != 0)
        break;
      const struct mproc__mpi_ctrl *c = op->hdr;
      if (c->what == MPROC__MPI_STOP)
        *stop = true;
      mproc__mpi_op_free(op);
      continue;
    }
    if (tag != MPROC__MPI_TAG_TASK)
      mproc__mpi_abort("rank 0 sent a message of unknown tag %d", tag);
    if ((rc = mproc__mpi_irecv(mproc__mpi.comm, MPROC__MPI_TAG_TASK, sizeof(struct mproc__mpi_task),
                               &placed, &op)) != 0)
      break;
    const struct mproc__mpi_task *t = op->hdr;
    if (t->kind != MPROC__MPI_BATCH) {
      take(op);
      continue;
    }
    /* Tasks rank 0 sent together: each frame is a whole task message. */
    size_t at = 0;
    int k;
    uint64_t n = 0;
    struct mproc__mpi_op *f;
    while ((k = mproc__mpi_batch_next(op, &at, &f)) == 1 && ++n)
      take(f);
    if (k < 0 || n != t->count)
      mproc__mpi_abort("rank 0 sent a malformed batch of tasks");
    mproc__mpi_op_free(op);
  }
  if (rc < 0)
    mproc__mpi_abort("lost contact with rank 0 (%s)", mproc_strerror(rc));
  moved |= advance(&g_arriving, STAGE_ARRIVING);
  if (g_forming)
    form_units();
  moved |= advance_units();
  moved |= advance(&g_running, STAGE_RUNNING);
  if (g_ready)
    send_ready();
  moved |= advance(&g_sending, STAGE_SENDING);
  return moved;
}

/* Idle: with tasks running, wait for one to finish -- a waiting thread
 * collects its pool's results itself, so a short task's answer does not
 * wait for the local pool's manager thread to be scheduled (measured:
 * steadier round trips on a loaded machine).  For MPROC__MPI_SPIN_US after
 * the last progress that wait only polls (it still helps the pool collect),
 * so the next pass also sees the tasks rank 0 sent meanwhile and hands them
 * to the local pool while the running one is still busy: its workers find
 * the next task queued the moment they finish.  After that, the wait lasts
 * up to 1 ms (a finished task still wakes it at once) so new messages are
 * seen soon.  With no task running, back off. */
static void idle(struct mproc__mpi_idle *w) {
  mproc_future *fs[64];
  size_t n = 0;
  for (struct job *j = g_running; j && n < 64; j = j->next)
    fs[n++] = j->f;
  for (struct unit *u = g_units; u && n < 64; u = u->next)
    fs[n++] = u->f;
  if (!n) {
    mproc__mpi_backoff(w);
    return;
  }
  int64_t now = mproc__mpi_now_us();
  if (w->since_us == 0)
    w->since_us = now;
  bool spin = now - w->since_us < MPROC__MPI_SPIN_US;
  if (!spin && g_units && answer_early())
    return;
  mproc_futures_wait(fs, n, MPROC_FIRST_COMPLETED, spin ? 0 : 1);
}

int mproc__mpi_rank_serve(void) {
  bool stop = false;
  struct mproc__mpi_idle w = {0};
  while (!stop) {
    if (pass(&stop))
      w = (struct mproc__mpi_idle){0};
    else
      idle(&w);
  }
  /* Rank 0 is done: whatever still runs is of no interest to anyone. */
  mproc_pool_terminate(g_pool);
  while (g_pools)
    close_pool(g_pools->id);
  while (g_units) {
    struct unit *u = g_units;
    g_units = u->next;
    for (uint32_t i = 0; i < u->n; i++)
      if (u->jobs[i])
        job_free(u->jobs[i]);
    mproc_future_free(u->f);
    mproc__mpi_unit_release(u->k);
    free(u);
  }
  int64_t deadline = mproc_now_ms() + 10000;
  struct job **lists[] = {&g_arriving, &g_running, &g_sending};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
    while (*lists[i]) {
      struct job *j = *lists[i];
      *lists[i] = j->next;
      if (j->op && mproc__mpi_wait_op(j->op, deadline) != 0) {
        mproc__mpi_op_abandon(j->op);
        j->op = NULL;
      }
      job_free(j);
    }
  }
  while (g_idle) {
    struct blk *b = g_idle;
    g_idle = b->next;
    mproc_shm_free(b->shm);
    free(b);
  }
  g_nidle = 0;
  struct mproc__mpi_ctrl c = {.what = MPROC__MPI_STOPPED};
  struct mproc__mpi_op *op;
  if (mproc__mpi_isend(mproc__mpi.comm, 0, MPROC__MPI_TAG_CTRL, &c, sizeof c, NULL, 0, false,
                       &op) == 0) {
    if (mproc__mpi_wait_op(op, deadline) != 0)
      mproc__mpi_op_abandon(op);
    else
      mproc__mpi_op_free(op);
  }
  return 0;
}
