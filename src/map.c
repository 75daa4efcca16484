/* map, map_async and starmap over arrays of fixed-size elements.
 *
 * Design notes.  The input is copied once into the pool's shared arena and
 * the workers write their outputs into the arena too, so a chunk travels as
 * a ring entry holding offsets: no per-item message, no per-call mapping
 * (the arena's pages stay mapped and are reused).  A job:
 *
 *   alloc arena -> copy input -> enqueue chunks (one lock hold) ->
 *   each chunk finishes (under mu): remember the lowest failed index ->
 *   last chunk: copy outputs to the caller's array, free the arena extent,
 *   finish the job's future (the error of the lowest failed item, if any)
 *
 * The caller's `out` is written only when the last chunk is in, so an
 * asynchronous caller must keep it valid until the future finishes.  A
 * worker dying in a chunk fails the item it was processing (the worker
 * publishes its progress per item; the same position moves a progress bar
 * per item, not per chunk).  Cancelling the future cancels every
 * chunk: queued ones never run, running ones have their worker killed.
 *
 * A job over a caller's shared block (map_shm.c) runs through the same
 * engine without the arena: its chunks carry the block's fd and file
 * offsets, the workers read and write the block in place, and nothing is
 * copied in or out; the job keeps its own duplicate of the fd until the last
 * chunk is in, so a re-run after a worker death can hand it over again. */
#include "pool.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

struct map_job {
  struct mproc_future *f;
  size_t n, out_size;
  void *out;
  uint64_t region, region_len, out_off;
  int block_fd;         /* map_shm: the job's duplicate of the block's fd, else -1 */
  uint64_t block_since; /* map_shm: map_shm.c's freed-block count at the start */
  size_t nchunks, left;
  bool failed;
  struct mproc__outcome err; /* lowest-index failure; msg points at errmsg */
  char errmsg[200];
  struct mproc__task chunks[];
};

/* Releases what the job holds besides its memory: the arena extent, or
 * the block's fd. */
static void job_release(struct mproc_pool *p, struct map_job *j) {
  if (j->block_fd >= 0) {
    mproc__map_shm_job_end(p, j->block_fd, j->block_since);
    mproc__close(j->block_fd);
  } else
    mproc__arena_free(p, j->region, j->region_len);
}

static void job_finish(struct mproc_pool *p, struct map_job *j) {
  if (j->out != NULL && j->n > 0)
    memcpy(j->out, mproc__arena_at(p, j->out_off), j->n * j->out_size);
  job_release(p, j);
  struct mproc__outcome ok = {.exit_status = -1, .msg = ""};
  struct mproc_future *f = j->f;
  struct mproc__outcome o = j->failed ? j->err : ok;
  char msg[200];
  memcpy(msg, j->errmsg, sizeof msg);
  o.msg = msg;
  f->done_extra = NULL;
  f->cancel_hook = NULL;
  free(j);
  mproc__future_finish(p, f, &o);
}

static void chunk_complete(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  struct map_job *j = t->owner;
  t->done = true;
  if (o->code != 0 && (!j->failed || o->index < j->err.index)) {
    j->failed = true;
    j->err = *o;
    snprintf(j->errmsg, sizeof j->errmsg, "%s", o->msg != NULL ? o->msg : "");
    j->err.msg = j->errmsg;
    j->err.res = NULL;
    j->err.res_len = 0;
  }
  atomic_fetch_add_explicit(&j->f->items_done, t->count, memory_order_relaxed);
  if (--j->left == 0)
    job_finish(p, j);
}

static void job_cancel(struct mproc_pool *p, struct mproc_future *f) {
  struct map_job *j = f->done_extra;
  size_t n = j->nchunks;
  /* Cancelling the last unfinished chunk finishes and frees the job: test
   * that the future still points at it before touching it again. */
  for (size_t i = 0; i < n && f->done_extra == j; i++)
    if (!j->chunks[i].done)
      mproc__pool_cancel_task(p, &j->chunks[i]);
}

struct col {
  const void *base;
  size_t size;
};

/* The common engine: ncols input columns (1 for map); with `blk`, the one
 * column and the output are in the caller's block (owned fd: the job closes
 * it, on failure too). */
static int map_start(struct mproc_pool *p, void (*fn)(void), uint32_t kind, size_t ncols,
                     const struct col *cols, size_t n, void *out, size_t out_size,
                     const struct mproc__map_block *blk, const struct mproc_map_options *o,
                     mproc_future **fout) {
  if (mproc__pool_foreign(p)) {
    if (blk != NULL)
      mproc__close(blk->fd);
    return MPROC_ESTATE;
  }
  size_t chunk = o != NULL ? o->chunksize : 0;
  if (chunk == 0) {
    /* Over a block the work is memory-bound and each chunk costs a
     * descriptor hand-off: two chunks per worker balance the load enough. */
    size_t div = (blk != NULL ? 2 : 4) * (size_t)p->nworkers;
    chunk = n / div + (n % div != 0);
    if (chunk == 0)
      chunk = 1;
  }
  size_t nchunks = n == 0 ? 0 : (n + chunk - 1) / chunk;
  /* Each column and the output start 64-byte aligned, so every element is
   * as aligned as in an ordinary array. */
  size_t in_bytes = 0;
  for (size_t k = 0; blk == NULL && k < ncols; k++) {
    if (cols[k].size != 0 && n > SIZE_MAX / 4 / MPROC_STARMAP_MAX_ARGS / cols[k].size)
      return MPROC_ENOMEM;
    in_bytes += ALIGN64(n * cols[k].size);
  }
  if (blk == NULL && out_size != 0 && n > SIZE_MAX / 4 / out_size)
    return MPROC_ENOMEM;
  /* A block's ranges were checked against its size by the caller. */
  size_t total = blk != NULL ? 0 : in_bytes + ALIGN64(n * out_size);
  struct map_job *j = calloc(1, sizeof *j + nchunks * sizeof(struct mproc__task));
  struct mproc_future *f = j != NULL ? mproc__future_new(p) : NULL;
  if (f == NULL) {
    free(j);
    if (blk != NULL)
      mproc__close(blk->fd);
    return MPROC_ENOMEM;
  }
  j->f = f;
  j->block_fd = blk != NULL ? blk->fd : -1;
  j->block_since = blk != NULL ? blk->freed_since : 0;
  j->n = n;
  j->out = out;
  j->out_size = out_size;
  j->nchunks = j->left = nchunks;
  j->region_len = total;
  f->task.kind = 0; /* not a task of its own: its chunks are */
  f->done_extra = j;
  f->cancel_hook = job_cancel;
  pthread_mutex_lock(&p->mu);
  int state = atomic_load(&p->state);
  int r = state != MPROC__P_RUNNING ? (state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED)
          : blk != NULL             ? 0
                                    : mproc__arena_alloc(p, total, &j->region);
  pthread_mutex_unlock(&p->mu);
  if (r != 0) {
    mproc__close(j->block_fd);
    free(j);
    f->done_extra = NULL;
    mproc__future_unref(f);
    mproc__future_unref(f);
    return r;
  }
  /* The extent is ours: fill it without the lock. */
  uint64_t off = j->region, col_off[MPROC_STARMAP_MAX_ARGS] = {0};
  for (size_t k = 0; blk == NULL && k < ncols; k++) {
    col_off[k] = off;
    if (n > 0)
      memcpy(mproc__arena_at(p, off), cols[k].base, n * cols[k].size);
    off += ALIGN64(n * cols[k].size);
  }
  if (blk != NULL) {
    col_off[0] = blk->in_off;
    off = blk->out_off;
  }
  j->out_off = off;
  for (size_t c = 0; c < nchunks; c++) {
    struct mproc__task *t = &j->chunks[c];
    size_t start = c * chunk, cnt = n - start < chunk ? n - start : chunk;
    t->kind = kind;
    t->fn = mproc__taskfn_of(fn);
    t->arg_fd = j->block_fd; /* borrowed from the job */
    t->slot = -1;
    t->count = cnt;
    t->base_index = start;
    t->in_size = cols[0].size;
    t->in_off = col_off[0] + start * cols[0].size;
    t->out_size = out_size;
    t->out_off = j->out_off + start * out_size;
    t->nargs = (uint32_t)ncols;
    for (size_t k = 0; k < ncols; k++) {
      t->col_off[k] = col_off[k] + start * cols[k].size;
      t->col_size[k] = cols[k].size;
    }
    t->timeout_ms = p->opts.task_timeout_ms;
    t->retries_left = (int32_t)p->opts.retries;
    t->complete = chunk_complete;
    t->owner = j;
  }
  pthread_mutex_lock(&p->mu);
  state = atomic_load(&p->state);
  if (state != MPROC__P_RUNNING) {
    r = state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED;
    job_release(p, j);
    pthread_mutex_unlock(&p->mu);
    free(j);
    f->done_extra = NULL;
    mproc__future_unref(f);
    mproc__future_unref(f);
    return r;
  }
  if (nchunks == 0) {
    j->out = NULL;
    job_finish(p, j);
  } else {
    /* Queue every chunk, then dispatch once. */
    for (size_t c = 0; c < nchunks; c++) {
      mproc__pool_queue(p, &j->chunks[c]);
    }
    mproc__pool_dispatch(p);
  }
  pthread_mutex_unlock(&p->mu);
  *fout = f;
  return 0;
}

/* Items of the map finished so far: whole chunks, plus the items finished
 * inside the chunks running now (their workers publish their position), so
 * a bar moves per item even when each task is one big chunk. */
static size_t items_done(mproc_future *f) {
  struct mproc_pool *p = f->pool;
  pthread_mutex_lock(&p->mu);
  size_t done = (size_t)atomic_load_explicit(&f->items_done, memory_order_relaxed);
  const struct map_job *j = f->done_extra;
  for (int i = 0; j != NULL && i < p->nworkers; i++) {
    struct mproc__activity a = {0};
    if (p->slots[i].alive)
      p->tp->activity(p, i, &a);
    if (a.running != NULL && a.running->owner == j && a.running->complete == chunk_complete)
      done += (size_t)(a.items_done < a.running->count ? a.items_done : a.running->count);
  }
  pthread_mutex_unlock(&p->mu);
  return done;
}

/* Wait for the map's future, reporting progress every 100 ms when asked. */
static int wait_progress(mproc_future *f, size_t n, const struct mproc_map_options *o,
                         int64_t timeout_ms) {
  static const struct mproc_map_options none;
  struct mproc__progress pr;
  if (o == NULL)
    o = &none; /* the environment may still ask for a bar */
  if ((o->progress == MPROC_PROGRESS_OFF && o->progress_cb == NULL &&
       getenv("MPROC_PROGRESS") == NULL))
    return mproc_future_wait(f, timeout_ms);
  mproc__progress_begin(&pr, o->progress, o->progress_cb, o->progress_ud, n);
  if (!mproc__progress_active(&pr))
    return mproc_future_wait(f, timeout_ms);
  int64_t dl = mproc__deadline(timeout_ms);
  int r;
  size_t last = 0;
  for (;;) {
    int64_t slice = 100;
    if (dl >= 0) {
      int64_t left = dl - mproc_now_ms();
      slice = left < 0 ? 0 : (left < slice ? left : slice);
    }
    r = mproc_future_wait(f, slice);
    size_t done = items_done(f);
    /* A chunk between its worker's last item and its collection counts in
     * neither sum for a moment: never report less than before. */
    last = done > last ? done : last;
    done = last;
    if (r == 0) {
      mproc__progress_update(&pr, done, true);
      return 0;
    }
    if (r != MPROC_ETIMEDOUT || (dl >= 0 && mproc_now_ms() >= dl))
      break;
    mproc__progress_update(&pr, done, false);
  }
  /* Stopped early: end the bar where it is, so the terminal line is closed. */
  size_t done = items_done(f);
  mproc__progress_update(&pr, done > last ? done : last, true);
  return r;
}

int mproc__map_wait(mproc_future *f, size_t n, const struct mproc_map_options *o,
                    struct mproc_task_error *err, int64_t timeout_ms) {
  int r = wait_progress(f, n, o, timeout_ms);
  if (r != 0) {
    /* Deadline or SIGINT: cancel what is left and wait for it (bounded by
     * the kernel killing the workers of running chunks). */
    mproc_future_cancel(f);
    mproc_future_wait(f, 30000);
  } else if (atomic_load(&f->state) != MPROC_FUTURE_DONE) {
    r = f->err.code;
  }
  if (err != NULL) {
    if (r != 0 && mproc_future_error(f, err) == 0)
      err->code = r;
    else
      memset(err, 0, sizeof *err);
  }
  mproc_future_free(f);
  return r;
}

MPROC_EXTERN int mproc_pool_map_async(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                                      size_t in_size, void *out, size_t out_size,
                                      const struct mproc_map_options *o, mproc_future **f) {
  if (p == NULL || fn == NULL || f == NULL || (n > 0 && (in == NULL || in_size == 0)) ||
      (n > 0 && out_size > 0 && out == NULL) ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))))
    return MPROC_EINVAL;
  struct col c = {in, in_size};
  return map_start(p, (void (*)(void))fn, MPROC__K_MAP, 1, &c, n, out, out_size, NULL, o, f);
}

int mproc__map_block_start(struct mproc_pool *p, uint32_t kind, void (*fn)(void), size_t n,
                           size_t in_size, size_t out_size, const struct mproc__map_block *blk,
                           const struct mproc_map_options *o, mproc_future **f) {
  struct col c = {NULL, in_size};
  return map_start(p, fn, kind, 1, &c, n, NULL, out_size, blk, o, f);
}

MPROC_EXTERN int mproc_pool_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                                size_t in_size, void *out, size_t out_size,
                                const struct mproc_map_options *o, struct mproc_task_error *err,
                                int64_t timeout_ms) {
  if (mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  mproc_future *f;
  int r = mproc_pool_map_async(p, fn, in, n, in_size, out, out_size, o, &f);
  return r != 0 ? r : mproc__map_wait(f, n, o, err, timeout_ms);
}

MPROC_EXTERN int mproc_pool_starmap(mproc_pool *p, mproc_starmap_fn fn, size_t nargs,
                                    const void *const *args, const size_t *arg_sizes, size_t n,
                                    void *out, size_t out_size, const struct mproc_map_options *o,
                                    struct mproc_task_error *err, int64_t timeout_ms) {
  if (p == NULL || fn == NULL || nargs == 0 || nargs > MPROC_STARMAP_MAX_ARGS || args == NULL ||
      arg_sizes == NULL || (n > 0 && out_size > 0 && out == NULL) ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))) ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  struct col cols[MPROC_STARMAP_MAX_ARGS];
  for (size_t k = 0; k < nargs; k++) {
    if (n > 0 && (args[k] == NULL || arg_sizes[k] == 0))
      return MPROC_EINVAL;
    cols[k] = (struct col){args[k], arg_sizes[k]};
  }
  mproc_future *f;
  int r = map_start(p, (void (*)(void))fn, MPROC__K_STARMAP, nargs, cols, n, out, out_size, NULL, o,
                    &f);
  return r != 0 ? r : mproc__map_wait(f, n, o, err, timeout_ms);
}
