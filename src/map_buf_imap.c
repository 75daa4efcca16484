/* mproc_pool_imap_buf: imap over variable-size items, results in input
 * order, on the chunks of map_buf.c (map_buf_job.h).
 *
 * Design notes.  The iterator keeps a ring of at most max_inflight items'
 * chunks, filled from the generator as results are taken.  A chunk's items
 * are staged (copied as the generator yields them: its bytes need stay
 * valid only until its next call) and started together, each chunk with its
 * results area and entries in its own arena extent (no overflow area: a
 * stream could never reset one, so a result that outgrows its chunk's area
 * sends the rest of that chunk the call way).  Results are yielded in order
 * straight from the arena; a result stays valid until the next call, so a
 * chunk whose last item was yielded is released one call later (`retired`).
 * A chunk that could not start ends generation with its cause, reported
 * once at its index. */
#include "map_buf_job.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mproc_imap_buf {
  struct mproc__mb_job *job;
  mproc_buf_gen_fn gen;
  void *gen_ctx;
  size_t chunk, max_chunks;
  struct mproc__mb_jchunk *q; /* ring of max_chunks chunks in flight, oldest at head */
  size_t head, n;
  size_t pos;        /* the next item of the head chunk to yield */
  size_t next_index; /* index of the next item generated */
  bool gen_done;
  int gen_err; /* the generator's error, reported once */
  size_t gen_err_index;
  unsigned char *stage; /* the items of the chunk being generated */
  size_t stage_used, stage_cap;
  struct mproc_buf *items;          /* (offset into stage, len) until the chunk starts */
  struct mproc__mb_jchunk *retired; /* holds the result last yielded */
  size_t roomy;
  struct mproc__progress pr;
  size_t yielded;
};

MPROC_EXTERN int mproc_pool_imap_buf(mproc_pool *p, mproc_map_buf_fn fn, mproc_buf_gen_fn gen,
                                     void *gen_ctx, const struct mproc_imap_options *o,
                                     mproc_imap_buf **out) {
  if (out != NULL)
    *out = NULL;
  if (p == NULL || fn == NULL || gen == NULL || out == NULL ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))))
    return MPROC_EINVAL;
  struct mproc_imap_buf *it = calloc(1, sizeof *it);
  if (it == NULL)
    return MPROC_ENOMEM;
  it->gen = gen;
  it->gen_ctx = gen_ctx;
  it->chunk = o != NULL && o->chunksize != 0 ? o->chunksize : 1;
  size_t inflight =
      o != NULL && o->max_inflight != 0 ? o->max_inflight : 64 * it->chunk * (size_t)p->nworkers;
  it->max_chunks = inflight / it->chunk != 0 ? inflight / it->chunk : 1;
  it->roomy = MPROC__MB_ROOMY_TOTAL / it->max_chunks < MPROC__MB_ROOMY_MAX
                  ? MPROC__MB_ROOMY_TOTAL / it->max_chunks
                  : MPROC__MB_ROOMY_MAX;
  it->job = malloc(sizeof *it->job);
  it->q = calloc(it->max_chunks, sizeof *it->q);
  it->items =
      it->chunk <= SIZE_MAX / sizeof *it->items ? malloc(it->chunk * sizeof *it->items) : NULL;
  int r = it->job != NULL && it->q != NULL && it->items != NULL
              ? mproc__mb_job_init(it->job, p, fn, false, 0)
              : MPROC_ENOMEM;
  if (r != 0) {
    free(it->items);
    free(it->q);
    free(it->job);
    free(it);
    return r;
  }
  static const struct mproc_imap_options none;
  const struct mproc_imap_options *po = o != NULL ? o : &none;
  mproc__progress_begin(&it->pr, po->progress, po->progress_cb, po->progress_ud,
                        po->progress_total);
  atomic_fetch_add(&p->refs, 1); /* the pool outlives the chunks in flight */
  *out = it;
  return 0;
}

/* Adds one generated item to the stage. */
static int stage_add(struct mproc_imap_buf *it, size_t k, const struct mproc_buf *item) {
  if (item->len > SIZE_MAX / 4 - it->stage_used)
    return MPROC_ENOMEM;
  size_t need = it->stage_used + item->len;
  if (need > it->stage_cap && mproc__mb_grow(&it->stage, &it->stage_cap, need) != 0)
    return MPROC_ENOMEM;
  if (item->len > 0)
    memcpy(it->stage + it->stage_used, item->data, item->len);
  it->items[k] = (struct mproc_buf){(const void *)(uintptr_t)it->stage_used, item->len};
  it->stage_used = need;
  return 0;
}

/* Generates and starts chunks while there is room. */
static void fill(struct mproc_imap_buf *it) {
  while (!it->gen_done && it->n < it->max_chunks) {
    size_t start = it->next_index, k = 0;
    it->stage_used = 0;
    while (!it->gen_done && k < it->chunk) {
      struct mproc_buf item = {0};
      int g = it->gen(it->gen_ctx, &item);
      if (g == 1 && item.data == NULL && item.len > 0)
        g = MPROC_EINVAL;
      if (g == 1 && (g = stage_add(it, k, &item)) == 0) {
        k++;
        it->next_index++;
        continue;
      }
      it->gen_done = true; /* the end (a positive answer other than 1 too) */
      if (g < 0) {
        it->gen_err = g;
        it->gen_err_index = it->next_index;
      }
    }
    if (k == 0)
      break;
    for (size_t i = 0; i < k; i++)
      it->items[i].data = it->stage + (uintptr_t)it->items[i].data;
    struct mproc__mb_jchunk *c = &it->q[(it->head + it->n) % it->max_chunks];
    memset(c, 0, sizeof *c);
    c->job = it->job;
    c->start = start;
    c->count = k;
    mproc__mb_chunk_size(c, it->stage_used);
    int r = mproc__mb_chunks_start(it->job, c, 1, it->items, start, it->roomy);
    if (r != 0 && !c->queued && c->rest == NULL) {
      /* Its items are lost: stop generating and report the cause. */
      memset(c, 0, sizeof *c);
      it->gen_done = true;
      it->gen_err = r;
      it->gen_err_index = start;
      it->next_index = start;
      return;
    }
    it->n++;
  }
}

/* Releases a chunk whose items were all yielded. */
static void chunk_release(struct mproc__mb_jchunk *c) {
  struct mproc_pool *p = c->job->p;
  if (c->ext_len != 0) {
    pthread_mutex_lock(&p->mu);
    mproc__arena_free(p, c->ext, c->ext_len);
    pthread_mutex_unlock(&p->mu);
  }
  mproc_future_free(c->rest);
  memset(c, 0, sizeof *c);
}

MPROC_EXTERN int mproc_imap_buf_next(mproc_imap_buf *it, struct mproc_buf *out, size_t *index,
                                     struct mproc_task_error *err, int64_t timeout_ms) {
  if (it == NULL || out == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(it->job->p))
    return MPROC_ESTATE;
  if (err != NULL)
    memset(err, 0, sizeof *err);
  *out = (struct mproc_buf){NULL, 0};
  if (it->retired != NULL) {
    chunk_release(it->retired);
    it->retired = NULL;
  }
  fill(it);
  if (it->n == 0) {
    if (it->gen_err != 0) {
      int r = it->gen_err;
      it->gen_err = 0;
      if (index != NULL)
        *index = it->gen_err_index;
      return r;
    }
    mproc__progress_update(&it->pr, it->yielded, true);
    return MPROC_EEOF;
  }
  struct mproc__mb_jchunk *c = &it->q[it->head];
  int r = mproc__mb_chunk_wait(c, mproc__deadline(timeout_ms));
  if (r != 0)
    return r;
  size_t k = it->pos++;
  if (index != NULL)
    *index = c->start + k;
  if (k < c->ok + c->rest_ok) {
    *out = mproc__mb_chunk_item(c, mproc__mb_chunk_outs(c), k, &c->cur);
  } else {
    r = k == c->ok + c->rest_ok ? c->fail : MPROC_ECANCELED;
    if (err != NULL && r == MPROC_ECANCELED) {
      err->code = r;
      err->exit_status = -1;
      err->index = c->start + k;
      snprintf(err->message, sizeof err->message, "not run: item %zu of its chunk failed",
               c->start + c->ok + c->rest_ok);
    } else if (err != NULL) {
      *err = c->err;
    }
  }
  if (it->pos == c->count) {
    it->retired = c; /* *out borrows from it until the next call */
    it->head = (it->head + 1) % it->max_chunks;
    it->n--;
    it->pos = 0;
  }
  it->yielded++;
  mproc__progress_update(&it->pr, it->yielded, false);
  return r;
}

MPROC_EXTERN void mproc_imap_buf_free(mproc_imap_buf *it) {
  if (it == NULL || mproc__pool_foreign(it->job->p))
    return; /* a forked copy's is left alone (mproc__pool_foreign) */
  struct mproc_pool *p = it->job->p;
  mproc__progress_update(&it->pr, it->yielded, true);
  mproc__mb_chunks_end(it->job, it->q, it->max_chunks, it->q);
  free(it->stage);
  free(it->items);
  free(it);
  mproc__pool_unref(p);
}
