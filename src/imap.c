/* imap and imap_unordered: lazy iterators over a caller's generator.
 *
 * Design notes.  The iterator owns a window of `nslots` chunk slots in the
 * pool's arena, each with room for `chunksize` inputs and outputs, so at most
 * nslots * chunksize items exist at once however long the generator runs.
 * A slot cycles:
 *
 *   FREE --next(): generator fills it, chunk queued--> INFLIGHT
 *   INFLIGHT --chunk finished (under the pool mutex)--> DONE
 *   DONE --next() yields its items one by one--> FREE
 *
 * Ordered iteration yields slots in generation order (a ring of slot
 * indices); unordered iteration yields them in completion order (a FIFO
 * filled by the completion).  The generator runs on the caller's thread,
 * outside the pool mutex, so it may itself use the pool.
 *
 * Failures are reported at their item: a chunk that failed at item k yields
 * its items before k normally, then the error for k; items after k in the
 * same chunk were not run and yield MPROC_ECANCELED (with chunksize 1, the
 * default, every item is its own chunk).
 *
 * Who collects: one iterator per pool (the first made while none does)
 * owns the transport's `quiet` word and marks its chunks quiet.  While its
 * caller keeps calling next() the word is set: workers finishing its chunks
 * do not wake the manager, and next() collects them itself, under the one
 * lock it takes per call, when none is ready.  Before next() waits, and in
 * free, the word is cleared (a store, then a full fence) and the wait's own
 * collections see every result published before; later ones wake the
 * manager as any other.  Without this, a caller that found results ready
 * never spun, so the workers woke the manager for every chunk, and it then
 * fought the caller for the pool lock item by item. */
#include "pool.h"
#include "list.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_FREE, S_INFLIGHT, S_DONE };

struct islot {
  struct mproc__task t;
  uint64_t in_off, out_off;
  size_t count, base, next; /* items, first index, next item to yield */
  int state;
  int code; /* outcome of the chunk */
  size_t fail_at;
  struct mproc__outcome out;
  char msg[200];
  struct islot *dq_next; /* completion FIFO (unordered) */
};

struct mproc_imap {
  struct mproc_pool *p;
  mproc_map_fn fn;
  mproc_gen_fn gen;
  void *gen_ctx;
  size_t in_size, out_size, chunksize, nslots;
  bool unordered;
  uint64_t region;
  size_t region_len;
  struct islot *slots;
  size_t gen_index;  /* index of the next item to generate */
  bool gen_done;     /* generator returned 0 or failed */
  int gen_err;       /* its failure, reported once */
  size_t order_head; /* ordered: oldest slot */
  size_t order_tail; /* ordered: next slot to fill */
  size_t inflight;   /* slots not FREE */
  struct islot *dq_head, *dq_tail;
  struct islot *cur;    /* slot being yielded */
  size_t *free_stack;   /* unordered: free slot indices */
  struct islot **batch; /* slots filled by one refill */
  size_t nfree;
  struct mproc__progress prog; /* progress of the items yielded */
  size_t yielded;
  bool orphaned;  /* freed by its owner while chunks were in flight (under mu) */
  bool quiet;     /* it owns the pool's quiet word (p->quiet_owner): see imap_next */
  bool quiet_on;  /* ... and has it set */
  uint64_t waits; /* calls of next() that had to wait (tests read it) */
};

/* How long mproc_imap_free waits for chunks in flight before it leaves the
 * iterator to the pool (ms; a variable so tests can shorten it). */
int64_t mproc__imap_free_wait_ms = 30000;

/* Release the iterator's memory and arena extent (under mu, or with no
 * chunk in flight). */
static void imap_release(struct mproc_imap *it) {
  if (it->p->tp_state != NULL)
    mproc__arena_free(it->p, it->region, it->region_len);
  free(it->slots);
  free(it->free_stack);
  free(it->batch);
  free(it);
}

static bool any_inflight(const struct mproc_imap *it) {
  for (size_t i = 0; i < it->nslots; i++)
    if (it->slots[i].state == S_INFLIGHT)
      return true;
  return false;
}

static void islot_complete(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  (void)p;
  struct islot *s = (struct islot *)t;
  struct mproc_imap *it = t->owner;
  if (it->orphaned) {
    /* Its owner is gone: the last chunk to land frees it. */
    s->state = S_DONE;
    if (!any_inflight(it))
      imap_release(it);
    return;
  }
  s->code = o->code;
  if (o->code != 0) {
    s->out = *o;
    snprintf(s->msg, sizeof s->msg, "%s", o->msg != NULL ? o->msg : "");
    s->out.msg = s->msg;
    s->fail_at = o->index >= s->base && o->index < s->base + s->count ? o->index : s->base;
  }
  s->state = S_DONE;
  if (it->unordered)
    MPROC__LIST_PUSH(it->dq_head, it->dq_tail, s, dq_next);
  mproc__epoch_bump();
}

MPROC_EXTERN int mproc_pool_imap(mproc_pool *p, mproc_map_fn fn, mproc_gen_fn gen, void *gen_ctx,
                                 size_t in_size, size_t out_size,
                                 const struct mproc_imap_options *o, mproc_imap **out) {
  if (p == NULL || fn == NULL || gen == NULL || out == NULL || in_size == 0 ||
      (o != NULL &&
       ((o->flags & ~(unsigned)MPROC_IMAP_UNORDERED) || !mproc__progress_valid(o->progress))))
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  struct mproc_imap *it = calloc(1, sizeof *it);
  if (it == NULL)
    return MPROC_ENOMEM;
  *it = (struct mproc_imap){
      .p = p,
      .fn = fn,
      .gen = gen,
      .gen_ctx = gen_ctx,
      .in_size = in_size,
      .out_size = out_size,
      .unordered = o != NULL && (o->flags & MPROC_IMAP_UNORDERED),
      .chunksize = o != NULL && o->chunksize > 0 ? o->chunksize : 1,
  };
  size_t maxin = o != NULL ? o->max_inflight : 0;
  it->nslots = maxin > 0 ? maxin / it->chunksize : (size_t)MPROC__IMAP_WINDOW * (size_t)p->nworkers;
  if (it->nslots == 0)
    it->nslots = 1;
  size_t in_area = (it->nslots * it->chunksize * in_size + 63) & ~(size_t)63;
  it->region_len = in_area + it->nslots * it->chunksize * out_size;
  it->slots = calloc(it->nslots, sizeof *it->slots);
  it->free_stack = malloc(it->nslots * sizeof *it->free_stack);
  it->batch = malloc(it->nslots * sizeof *it->batch);
  int r = it->slots != NULL && it->free_stack != NULL && it->batch != NULL ? 0 : MPROC_ENOMEM;
  if (r == 0) {
    pthread_mutex_lock(&p->mu);
    int state = atomic_load(&p->state);
    r = state == MPROC__P_RUNNING ? mproc__arena_alloc(p, it->region_len, &it->region)
                                  : (state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED);
    /* One iterator per pool collects its own chunks quietly (the word is
     * the pool's); others leave theirs to the manager as before. */
    if (r == 0 && p->quiet_owner == NULL && p->tp->quiet != NULL) {
      p->quiet_owner = it;
      it->quiet = true;
    }
    pthread_mutex_unlock(&p->mu);
  }
  if (r != 0) {
    free(it->slots);
    free(it->free_stack);
    free(it->batch);
    free(it);
    return r;
  }
  for (size_t i = 0; i < it->nslots; i++) {
    struct islot *s = &it->slots[i];
    s->in_off = it->region + i * it->chunksize * in_size;
    s->out_off = it->region + in_area + i * it->chunksize * out_size;
    it->free_stack[it->nslots - 1 - i] = i;
  }
  it->nfree = it->nslots;
  if (o != NULL)
    mproc__progress_begin(&it->prog, o->progress, o->progress_cb, o->progress_ud,
                          o->progress_total);
  else
    mproc__progress_begin(&it->prog, MPROC_PROGRESS_OFF, NULL, NULL, 0);
  atomic_fetch_add(&p->refs, 1);
  *out = it;
  return 0;
}

static struct islot *take_free(struct mproc_imap *it) {
  if (it->unordered)
    return it->nfree > 0 ? &it->slots[it->free_stack[--it->nfree]] : NULL;
  if (it->inflight == it->nslots)
    return NULL;
  struct islot *s = &it->slots[it->order_tail];
  it->order_tail = (it->order_tail + 1) % it->nslots;
  return s;
}

static void give_back(struct mproc_imap *it, struct islot *s) {
  s->state = S_FREE;
  it->inflight--;
  if (it->unordered)
    it->free_stack[it->nfree++] = (size_t)(s - it->slots);
  else
    it->order_head = (it->order_head + 1) % it->nslots;
}

/* Fail a chunk that could not be queued (under mu). */
static void islot_refused(struct mproc_imap *it, struct islot *s, int state) {
  s->state = S_DONE;
  s->code = state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED;
  s->fail_at = s->base;
  memset(&s->out, 0, sizeof s->out);
  s->out.code = s->code;
  s->out.exit_status = -1;
  s->out.index = s->base;
  snprintf(s->msg, sizeof s->msg, "the pool no longer accepts work");
  s->out.msg = s->msg;
  if (it->unordered)
    MPROC__LIST_PUSH(it->dq_head, it->dq_tail, s, dq_next);
}

/* Generate chunks into every free slot (outside the mutex: the generator is
 * the caller's code); returns how many are in it->batch, to be queued. */
static size_t generate(struct mproc_imap *it) {
  struct mproc_pool *p = it->p;
  size_t nb = 0;
  while (!it->gen_done) {
    struct islot *s = take_free(it);
    if (s == NULL)
      break;
    unsigned char *in = mproc__arena_at(p, s->in_off);
    size_t n = 0;
    while (n < it->chunksize) {
      int g = it->gen(it->gen_ctx, in + n * it->in_size);
      if (g <= 0) {
        it->gen_done = true;
        it->gen_err = g < 0 ? g : 0;
        break;
      }
      n++;
    }
    it->inflight++;
    if (n == 0) {
      /* Nothing generated: hand the slot straight back. */
      if (it->unordered)
        it->free_stack[it->nfree++] = (size_t)(s - it->slots);
      else
        it->order_tail = (it->order_tail + it->nslots - 1) % it->nslots;
      it->inflight--;
      break;
    }
    memset(&s->t, 0, sizeof s->t);
    s->t.kind = MPROC__K_MAP;
    s->t.fn = mproc__taskfn_of((void (*)(void))it->fn);
    s->t.arg_fd = -1;
    s->t.slot = -1;
    s->t.in_off = s->in_off;
    s->t.out_off = s->out_off;
    s->t.count = n;
    s->t.in_size = it->in_size;
    s->t.out_size = it->out_size;
    s->t.base_index = it->gen_index;
    s->t.timeout_ms = p->opts.task_timeout_ms;
    s->t.retries_left = (int32_t)p->opts.retries;
    s->t.complete = islot_complete;
    s->t.owner = it;
    s->t.quiet = it->quiet;
    s->count = n;
    s->base = it->gen_index;
    s->next = 0;
    s->code = 0;
    s->state = S_INFLIGHT;
    it->gen_index += n;
    it->batch[nb++] = s;
  }
  return nb;
}

/* Queue the generated chunks (under mu). */
static void queue_batch(struct mproc_imap *it, size_t nb) {
  struct mproc_pool *p = it->p;
  int state = atomic_load(&p->state);
  for (size_t i = 0; i < nb; i++) {
    struct mproc__task *t = &it->batch[i]->t;
    if (state != MPROC__P_RUNNING) {
      islot_refused(it, it->batch[i], state);
      continue;
    }
    mproc__pool_queue(p, t);
  }
  if (nb > 0 && state == MPROC__P_RUNNING)
    mproc__pool_dispatch(p);
}

/* The caller is about to wait: its chunks' ends wake the manager again,
 * and the wait's own collections see every one published before. */
static void quiet_off(struct mproc_imap *it) {
  if (it->quiet_on) {
    it->p->tp->quiet(it->p, false);
    it->quiet_on = false;
  }
}

/* Under mu: a finished slot ready to yield, or NULL. */
static struct islot *ready(struct mproc_imap *it) {
  if (it->unordered) {
    struct islot *s = it->dq_head;
    if (s != NULL) {
      it->dq_head = s->dq_next;
      if (it->dq_head == NULL)
        it->dq_tail = NULL;
    }
    return s;
  }
  if (it->inflight == 0)
    return NULL;
  struct islot *s = &it->slots[it->order_head];
  return s->state == S_DONE ? s : NULL;
}

static bool ready_cond(void *arg) {
  struct mproc_imap *it = arg;
  pthread_mutex_lock(&it->p->mu);
  it->cur = ready(it);
  pthread_mutex_unlock(&it->p->mu);
  return it->cur != NULL;
}

/* Yield one item of it->cur. */
static int yield(struct mproc_imap *it, void *out, size_t *index, struct mproc_task_error *err) {
  struct islot *s = it->cur;
  size_t k = s->base + s->next;
  int r = 0;
  it->yielded++;
  if (index != NULL)
    *index = k;
  if (s->code != 0 && k >= s->fail_at) {
    if (k == s->fail_at) {
      r = s->code;
      if (err != NULL) {
        mproc__error_from_outcome(err, &s->out);
        err->index = k;
      }
    } else {
      r = MPROC_ECANCELED;
      if (err != NULL) {
        memset(err, 0, sizeof *err);
        err->code = r;
        err->exit_status = -1;
        err->index = k;
        snprintf(err->message, sizeof err->message, "not run: item %zu of its chunk failed",
                 s->fail_at);
      }
    }
  } else {
    if (out != NULL && it->out_size > 0)
      memcpy(out, (unsigned char *)mproc__arena_at(it->p, s->out_off) + s->next * it->out_size,
             it->out_size);
    if (err != NULL)
      memset(err, 0, sizeof *err);
  }
  if (++s->next == s->count) {
    /* No lock: once DONE, only this thread touches the slot. */
    give_back(it, s);
    it->cur = NULL;
  }
  return r;
}

static int imap_next(mproc_imap *it, void *out, size_t *index, struct mproc_task_error *err,
                     int64_t timeout_ms);

MPROC_EXTERN int mproc_imap_next(mproc_imap *it, void *out, size_t *index,
                                 struct mproc_task_error *err, int64_t timeout_ms) {
  if (it == NULL || (out == NULL && it->out_size > 0) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(it->p))
    return MPROC_ESTATE;
  size_t before = it->yielded;
  int r = imap_next(it, out, index, err, timeout_ms);
  /* Every item yielded counts, failed ones too; the end closes the bar. */
  if (r == MPROC_EEOF)
    mproc__progress_update(&it->prog, it->yielded, true);
  else if (it->yielded != before)
    mproc__progress_update(&it->prog, it->yielded, false);
  return r;
}

/* One lock per call: the new chunks are queued, and a finished one taken,
 * together.  The iterator that owns the pool's quiet word collects its
 * chunks itself, here when none is ready: while the caller keeps calling,
 * the workers do not wake the manager for them (which would then fight the
 * caller for the lock, item by item); before the caller waits, the word is
 * cleared (quiet_off) and the wait collects or is woken as any other. */
static int imap_next(mproc_imap *it, void *out, size_t *index, struct mproc_task_error *err,
                     int64_t timeout_ms) {
  int64_t dl = mproc__deadline(timeout_ms);
  if (it->cur != NULL)
    return yield(it, out, index, err);
  struct mproc_pool *p = it->p;
  size_t nb = generate(it);
  if (it->quiet && !it->quiet_on) {
    p->tp->quiet(p, true);
    it->quiet_on = true;
  }
  bool idle, kick = false;
  pthread_mutex_lock(&p->mu);
  queue_batch(it, nb);
  it->cur = ready(it);
  if (it->cur == NULL && it->quiet && it->inflight > 0) {
    kick = mproc__pool_help_locked(p);
    it->cur = ready(it);
  }
  idle = it->inflight == 0;
  pthread_mutex_unlock(&p->mu);
  if (kick)
    mproc__pool_kick(p);
  if (it->cur == NULL && idle) {
    if (it->gen_err != 0) {
      int r = it->gen_err;
      it->gen_err = 0;
      if (index != NULL)
        *index = it->gen_index;
      if (err != NULL) {
        memset(err, 0, sizeof *err);
        err->code = r;
        err->exit_status = -1;
        err->index = it->gen_index;
        snprintf(err->message, sizeof err->message, "the generator failed");
      }
      return r;
    }
    return MPROC_EEOF;
  }
  if (it->cur == NULL) {
    quiet_off(it);
    it->waits++;
    int r = mproc__wait_until(ready_cond, it, &it->p, 1,
                              (it->p->opts.flags & MPROC_POOL_SIGINT) != 0, dl);
    if (r != 0)
      return r;
  }
  return yield(it, out, index, err);
}

static bool all_landed(void *arg) {
  struct mproc_imap *it = arg;
  pthread_mutex_lock(&it->p->mu);
  bool done = !any_inflight(it);
  pthread_mutex_unlock(&it->p->mu);
  return done;
}

MPROC_EXTERN void mproc_imap_free(mproc_imap *it) {
  if (it == NULL || mproc__pool_foreign(it->p))
    return; /* a forked copy's is left alone (mproc__pool_foreign) */
  mproc__progress_update(&it->prog, it->yielded, true); /* stopped early: close the bar */
  struct mproc_pool *p = it->p;
  quiet_off(it);
  pthread_mutex_lock(&p->mu);
  if (p->quiet_owner == it)
    p->quiet_owner = NULL;
  for (size_t i = 0; i < it->nslots; i++)
    if (it->slots[i].state == S_INFLIGHT && p->slots != NULL)
      mproc__pool_cancel_task(p, &it->slots[i].t);
  pthread_mutex_unlock(&p->mu);
  /* Running chunks complete once their killed workers are reaped.  If that
   * takes too long (the manager is held up, a worker will not die), the
   * chunks may still be written by a worker and completed by the pool: the
   * iterator is then left to the pool, and the last chunk to land frees it.
   * The pool completes every chunk before its manager exits, so nothing
   * outlives mproc_pool_free. */
  mproc__wait_until(all_landed, it, &p, 1, false, mproc__deadline(mproc__imap_free_wait_ms));
  pthread_mutex_lock(&p->mu);
  if (any_inflight(it))
    it->orphaned = true;
  else
    imap_release(it);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_unref(p);
}
