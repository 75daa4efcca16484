/* map over variable-size items with variable-size results (mproc_pool_map_buf).
 *
 * Design notes.  Items of any length cannot live in the fixed-stride arena
 * map uses, so a chunk of items travels as one ordinary task argument and
 * comes back as one ordinary task result; the pool's internals are not
 * touched.  Many items per task keep small items as cheap as the
 * fixed-size path: one ring entry, one copy in and one copy out per chunk.
 *
 *   argument: struct chunk_hdr | (uint64_t len, bytes) per item, packed
 *   result:   struct result_hdr | uint64_t len[ok] | (bytes, NUL) per item
 *
 * The worker-side wrapper (chunk_task) resolves the element function, runs
 * it per item, and appends each item's result to a growing buffer; the
 * first item that fails ends the chunk, and its position, code and message
 * travel in the result header while the task itself succeeds, so the
 * caller can blame that exact item.  A worker that dies or times out in a
 * chunk fails the whole task: the item blamed is then the chunk's first
 * (exact with chunksize 1).
 *
 * The caller waits for the chunks in order: the first failed chunk holds
 * the lowest failed item, so the chunks after it are cancelled at once.
 * All results are copied into one allocation (array of mproc_buf followed
 * by the bytes), so the caller frees them with one call.
 *
 * imap_buf streams: the generator's items are packed as they come (the
 * same chunk format), at most max_inflight items' chunks are in flight,
 * and results are yielded in order straight from each chunk's future (a
 * result stays valid until the next call, so the future of a chunk whose
 * last item was yielded is released one call later). */
#include "fnref.h"
#include "pool.h"
#include "progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)

/* The element function travels as its address when the pool's workers are
 * forks of the caller, and as a reference (object + offset, checked by
 * build-id: fnref.h, following the header) when they are fresh images of the
 * program (spawn, forkserver), where an address means nothing.  The address
 * form keeps a fork pool's small chunks inside a ring entry. */
struct chunk_hdr {
  uint64_t addr;   /* the function's address (by_ref == 0) */
  uint64_t count;  /* items that follow */
  uint32_t by_ref; /* a struct mproc__fnref follows the header */
  uint32_t pad;
};

/* The worker's last resolved reference: every chunk of a map names the same
 * function, and resolving reads the object's notes. */
static struct mproc__fnref last_ref;
static mproc_function last_fn;

/* The element function of a chunk; *hdr gets the size of what precedes the
 * items.  0, or MPROC_ENOFUNC with the reason in why. */
static int chunk_fn(const struct chunk_hdr *h, size_t len, mproc_map_buf_fn *fn, size_t *hdr,
                    char *why, size_t whylen) {
  *hdr = sizeof *h;
  if (!h->by_ref) {
    *fn = (mproc_map_buf_fn)(uintptr_t)h->addr;
    return 0;
  }
  struct mproc__fnref ref;
  if (len < sizeof *h + sizeof ref) {
    snprintf(why, whylen, "reference cut short");
    return MPROC_ENOFUNC;
  }
  memcpy(&ref, h + 1, sizeof ref); /* the argument bytes need not be aligned */
  *hdr += sizeof ref;
  if (last_fn == NULL || memcmp(&last_ref, &ref, sizeof ref) != 0) {
    mproc_function f;
    if (mproc__fnref_resolve(&ref, &f, why, whylen) < 0)
      return MPROC_ENOFUNC;
    last_ref = ref;
    last_fn = f;
  }
  *fn = (mproc_map_buf_fn)last_fn;
  return 0;
}

struct result_hdr {
  uint64_t ok;  /* items with a result */
  int32_t code; /* the item at index `ok` failed with it; 0: none failed */
  uint32_t pad;
  char msg[200]; /* its message, NUL-terminated ("" when none) */
};

struct mproc_item_ctx {
  unsigned char *buf; /* results so far */
  size_t used, cap;
  size_t start; /* where the current item's result begins */
  int code;     /* mproc_item_fail's code, 0 if not called */
  char msg[200];
};

/* Grows *buf (doubling from 4 KiB) to hold at least `need` bytes (at most
 * SIZE_MAX / 4, checked by the callers).  0, or MPROC_ENOMEM leaving it as is. */
static int grow(unsigned char **buf, size_t *cap, size_t need) {
  size_t c = *cap != 0 ? *cap : 4096;
  while (c < need)
    c *= 2;
  unsigned char *nb = realloc(*buf, c);
  if (nb == NULL)
    return MPROC_ENOMEM;
  *buf = nb;
  *cap = c;
  return 0;
}

MPROC_EXTERN int mproc_item_return(mproc_item_ctx *c, const void *data, size_t len) {
  if (c == NULL || (data == NULL && len > 0))
    return MPROC_EINVAL;
  c->used = c->start; /* a second call replaces the first */
  if (len > c->cap - c->used) {
    if (len > SIZE_MAX / 4 - c->used || grow(&c->buf, &c->cap, c->used + len) != 0)
      return MPROC_ENOMEM;
  }
  if (len > 0)
    memcpy(c->buf + c->used, data, len);
  c->used += len;
  return 0;
}

MPROC_EXTERN int mproc_item_fail(mproc_item_ctx *c, int code, const char *fmt, ...) {
  if (code == 0)
    code = MPROC_ETASK;
  if (c == NULL)
    return code;
  c->msg[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
  }
  c->code = code;
  return code;
}

/* Runs in the worker: one chunk of items. */
static int chunk_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  const struct chunk_hdr *h = arg;
  if (len < sizeof *h)
    return mproc_task_fail(ctx, MPROC_EINVAL, "map_buf: malformed chunk");
  mproc_map_buf_fn fn;
  size_t hdr;
  char why[160];
  if (chunk_fn(h, len, &fn, &hdr, why, sizeof why) != 0)
    return mproc_task_fail(ctx, MPROC_ENOFUNC, "map_buf: element function %s", why);
  if (h->count > (len - hdr) / sizeof(uint64_t))
    return mproc_task_fail(ctx, MPROC_EINVAL, "map_buf: malformed chunk");
  size_t count = (size_t)h->count;
  const unsigned char *in = (const unsigned char *)arg + hdr,
                      *end = (const unsigned char *)arg + len;
  uint64_t *rlens = malloc((count != 0 ? count : 1) * sizeof *rlens);
  if (rlens == NULL)
    return mproc_task_fail(ctx, MPROC_ENOMEM, "map_buf: no memory for %zu results", count);
  struct mproc_item_ctx c = {0};
  struct result_hdr rh = {0};
  for (size_t i = 0; i < count; i++) {
    uint64_t ilen;
    if ((size_t)(end - in) < sizeof ilen)
      break;
    memcpy(&ilen, in, sizeof ilen);
    in += sizeof ilen;
    if (ilen > (uint64_t)(end - in))
      break;
    c.start = c.used;
    c.code = 0;
    int r = fn(in, (size_t)ilen, &c);
    if (r == 0 && c.code != 0)
      r = c.code;
    if (r != 0) {
      rh.code = r;
      if (c.code != 0)
        snprintf(rh.msg, sizeof rh.msg, "%s", c.msg);
      c.used = c.start;
      break;
    }
    rlens[i] = c.used - c.start;
    rh.ok++;
    in += ilen;
  }
  size_t total = sizeof rh + rh.ok * sizeof *rlens + c.used + rh.ok;
  unsigned char *out = mproc_task_result_buf(ctx, total);
  if (out != NULL) {
    memcpy(out, &rh, sizeof rh);
    memcpy(out + sizeof rh, rlens, rh.ok * sizeof *rlens);
    unsigned char *w = out + sizeof rh + rh.ok * sizeof *rlens;
    const unsigned char *src = c.buf;
    for (size_t i = 0; i < rh.ok; i++) {
      if (rlens[i] > 0) { /* src is NULL while every result so far is empty */
        memcpy(w, src, rlens[i]);
        src += rlens[i];
      }
      w[rlens[i]] = '\0';
      w += rlens[i] + 1;
    }
  }
  free(rlens);
  free(c.buf);
  return 0; /* a failed result buffer fails the task by itself */
}

struct chunk {
  mproc_future *f;
  size_t start, count;
};

/* A chunk argument being packed: header, then (len, bytes) per item. */
struct pack {
  unsigned char *buf;
  size_t used, cap;
  uint64_t count;
  size_t hdr;              /* header bytes before the items (pack_begin) */
  struct mproc__fnref ref; /* the element function's, when the workers exec */
};

/* Sets up a pack for the chunks of `fn` on pool p: how its function travels. */
static int pack_begin(struct pack *pk, mproc_pool *p, mproc_map_buf_fn fn) {
  pk->hdr = sizeof(struct chunk_hdr);
  if (p->opts.start_method == MPROC_START_FORK)
    return 0;
  pk->hdr += sizeof pk->ref;
  return mproc__fnref_make(MPROC_FUNCTION(fn), &pk->ref);
}

static int pack_add(struct pack *pk, const void *data, size_t len) {
  uint64_t l = len;
  if (pk->used == 0)
    pk->used = pk->hdr;
  if (len > SIZE_MAX / 4 - sizeof l - pk->used)
    return MPROC_ENOMEM;
  size_t need = pk->used + sizeof l + len;
  if (need > pk->cap && grow(&pk->buf, &pk->cap, need) != 0)
    return MPROC_ENOMEM;
  memcpy(pk->buf + pk->used, &l, sizeof l);
  if (len > 0)
    memcpy(pk->buf + pk->used + sizeof l, data, len);
  pk->used = need;
  pk->count++;
  return 0;
}

/* Submits the packed items as one task and empties the pack for reuse. */
static int pack_submit(mproc_pool *p, mproc_map_buf_fn fn, struct pack *pk, mproc_future **f) {
  bool by_ref = pk->hdr > sizeof(struct chunk_hdr);
  struct chunk_hdr h = {(uint64_t)(uintptr_t)fn, pk->count, by_ref, 0};
  memcpy(pk->buf, &h, sizeof h);
  if (by_ref)
    memcpy(pk->buf + sizeof h, &pk->ref, sizeof pk->ref);
  int r = mproc_pool_submit(p, chunk_task, pk->buf, pk->used, f);
  pk->used = 0;
  pk->count = 0;
  return r;
}

/* Packs in[start..start+count) as a chunk argument and submits it. */
static int submit_chunk(mproc_pool *p, mproc_map_buf_fn fn, const struct mproc_buf *in,
                        struct chunk *ck, struct pack *pk) {
  int r = 0;
  for (size_t i = 0; i < ck->count && r == 0; i++)
    r = pack_add(pk, in[ck->start + i].data, in[ck->start + i].len);
  if (r != 0) {
    pk->used = 0;
    pk->count = 0;
    return r;
  }
  return pack_submit(p, fn, pk, &ck->f);
}

/* The result of a finished chunk: 0 with *rh, *rlens and *data pointing
 * into the future's result, or MPROC_ETASK for a malformed one. */
static int chunk_parts(mproc_future *f, size_t count, struct result_hdr *rh, const uint64_t **rlens,
                       const unsigned char **data, size_t *data_len) {
  const void *res;
  size_t len;
  int r = mproc_future_result(f, &res, &len, 0);
  if (r != 0)
    return r;
  if (len < sizeof *rh)
    return MPROC_ETASK;
  memcpy(rh, res, sizeof *rh);
  if (rh->ok > count || (rh->code == 0 && rh->ok != count) ||
      rh->ok > (len - sizeof *rh) / sizeof(uint64_t))
    return MPROC_ETASK;
  *rlens = (const uint64_t *)((const unsigned char *)res + sizeof *rh);
  *data = (const unsigned char *)(*rlens + rh->ok);
  *data_len = len - sizeof *rh - (size_t)rh->ok * sizeof(uint64_t);
  rh->msg[sizeof rh->msg - 1] = '\0';
  return 0;
}

static void set_item_error(struct mproc_task_error *err, size_t index, int code, const char *msg) {
  memset(err, 0, sizeof *err);
  err->code = MPROC_ETASK;
  err->task_code = code;
  err->exit_status = -1;
  err->index = index;
  if (msg[0] != '\0')
    snprintf(err->message, sizeof err->message, "%s", msg);
  else if (code > 0)
    snprintf(err->message, sizeof err->message, "task returned %d", code);
  else
    snprintf(err->message, sizeof err->message, "%s", mproc_strerror(code));
}

/* Waits for chunk ck, reporting progress (done counts finished items). */
static int wait_chunk(struct chunk *cks, size_t nchunks, size_t k, struct mproc__progress *pr,
                      int64_t dl) {
  for (;;) {
    int64_t slice = mproc__progress_active(pr) ? 100 : -1;
    if (dl >= 0) {
      int64_t left = dl - mproc_now_ms();
      left = left < 0 ? 0 : left;
      slice = slice < 0 || left < slice ? left : slice;
    }
    int r = mproc_future_wait(cks[k].f, slice);
    if (mproc__progress_active(pr)) {
      size_t done = 0;
      for (size_t i = 0; i < nchunks; i++)
        if (mproc_future_done(cks[i].f))
          done += cks[i].count;
      mproc__progress_update(pr, done, false);
    }
    if (r != MPROC_ETIMEDOUT || (dl >= 0 && mproc_now_ms() >= dl))
      return r;
  }
}

/* Copies every chunk's results into one allocation. */
static int gather(struct chunk *cks, size_t nchunks, size_t n, struct mproc_buf **out) {
  size_t bytes = ALIGN16(n * sizeof(struct mproc_buf));
  for (size_t k = 0; k < nchunks; k++) {
    struct result_hdr rh;
    const uint64_t *rl;
    const unsigned char *d;
    size_t dl;
    if (chunk_parts(cks[k].f, cks[k].count, &rh, &rl, &d, &dl) != 0)
      return MPROC_ETASK;
    for (size_t i = 0; i < cks[k].count; i++) {
      if (rl[i] > SIZE_MAX / 2 - bytes)
        return MPROC_ENOMEM;
      bytes += ALIGN16((size_t)rl[i] + 1);
    }
  }
  struct mproc_buf *bufs = malloc(bytes);
  if (bufs == NULL)
    return MPROC_ENOMEM;
  unsigned char *w = (unsigned char *)bufs + ALIGN16(n * sizeof(struct mproc_buf));
  size_t idx = 0;
  for (size_t k = 0; k < nchunks; k++) {
    struct result_hdr rh;
    const uint64_t *rl;
    const unsigned char *d;
    size_t dl;
    chunk_parts(cks[k].f, cks[k].count, &rh, &rl, &d, &dl);
    for (size_t i = 0; i < cks[k].count; i++, idx++) {
      size_t len = (size_t)rl[i];
      if (len > 0)
        memcpy(w, d, len);
      w[len] = '\0';
      bufs[idx] = (struct mproc_buf){w, len};
      w += ALIGN16(len + 1);
      d += len + 1;
    }
  }
  *out = bufs;
  return 0;
}

MPROC_EXTERN void mproc_bufs_free(struct mproc_buf *bufs) { free(bufs); }

static int check_items(const struct mproc_buf *in, size_t n) {
  if (n > 0 && in == NULL)
    return MPROC_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if ((in[i].data == NULL && in[i].len > 0) || in[i].len > SIZE_MAX / 2 - total)
      return MPROC_EINVAL;
    total += in[i].len;
  }
  return n > SIZE_MAX / 2 / sizeof(struct mproc_buf) ? MPROC_EINVAL : 0;
}

MPROC_EXTERN int mproc_pool_map_buf(mproc_pool *p, mproc_map_buf_fn fn, const struct mproc_buf *in,
                                    size_t n, struct mproc_buf **out,
                                    const struct mproc_map_options *o, struct mproc_task_error *err,
                                    int64_t timeout_ms) {
  struct mproc_task_error scratch;
  if (err == NULL)
    err = &scratch;
  memset(err, 0, sizeof *err);
  if (out != NULL)
    *out = NULL;
  if (p == NULL || fn == NULL || out == NULL || mproc__check_timeout(timeout_ms) != 0 ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))) ||
      check_items(in, n) != 0)
    return MPROC_EINVAL;
  int workers = mproc_pool_workers(p);
  if (workers < 0)
    return workers;
  size_t chunk = o != NULL ? o->chunksize : 0;
  if (chunk == 0) {
    size_t div = 4 * (size_t)workers;
    chunk = n / div + (n % div != 0);
    chunk = chunk == 0 ? 1 : chunk;
  }
  size_t nchunks = n == 0 ? 0 : (n - 1) / chunk + 1;
  if (nchunks == 0)
    return 0;
  struct chunk *cks = calloc(nchunks, sizeof *cks);
  if (cks == NULL)
    return MPROC_ENOMEM;
  int64_t dl = mproc__deadline(timeout_ms);
  struct pack pk = {0};
  size_t submitted = 0;
  int r = pack_begin(&pk, p, fn);
  if (r != 0) {
    free(cks);
    return r;
  }
  for (; submitted < nchunks && r == 0; submitted++) {
    struct chunk *ck = &cks[submitted];
    ck->start = submitted * chunk;
    ck->count = n - ck->start < chunk ? n - ck->start : chunk;
    r = submit_chunk(p, fn, in, ck, &pk);
  }
  free(pk.buf);
  if (r != 0)
    submitted--; /* the failed one has no future */
  struct mproc__progress pr;
  static const struct mproc_map_options none;
  const struct mproc_map_options *po = o != NULL ? o : &none;
  mproc__progress_begin(&pr, po->progress, po->progress_cb, po->progress_ud, n);
  size_t k = 0;
  for (; r == 0 && k < submitted; k++) {
    r = wait_chunk(cks, submitted, k, &pr, dl);
    if (r != 0) {
      err->code = r; /* the wait's deadline, or SIGINT: no item to blame */
      break;
    }
    struct result_hdr rh;
    const uint64_t *rl;
    const unsigned char *d;
    size_t dlen;
    int c = chunk_parts(cks[k].f, cks[k].count, &rh, &rl, &d, &dlen);
    if (c == 0 && rh.code != 0) {
      set_item_error(err, cks[k].start + (size_t)rh.ok, rh.code, rh.msg);
      r = MPROC_ETASK;
    } else if (c != 0) {
      /* The task itself failed (worker died, timed out, result lost). */
      if (mproc_future_error(cks[k].f, err) != 0)
        set_item_error(err, cks[k].start, c, "map_buf: malformed chunk result");
      else
        err->index = cks[k].start;
      r = err->code != 0 ? err->code : c;
    }
  }
  if (r != 0) {
    /* Cancel what is left, then wait for it (bounded: running chunks have
     * their workers killed). */
    for (size_t i = 0; i < submitted; i++)
      mproc_future_cancel(cks[i].f);
    for (size_t i = 0; i < submitted; i++)
      mproc_future_wait(cks[i].f, 30000);
  } else {
    r = gather(cks, submitted, n, out);
    if (r == MPROC_ETASK)
      set_item_error(err, 0, r, "map_buf: malformed chunk result");
  }
  if (mproc__progress_active(&pr)) {
    size_t done = 0;
    for (size_t i = 0; i < submitted; i++)
      if (mproc_future_state(cks[i].f) == MPROC_FUTURE_DONE)
        done += cks[i].count;
    mproc__progress_update(&pr, done, true);
  }
  for (size_t i = 0; i < submitted; i++)
    mproc_future_free(cks[i].f);
  free(cks);
  return r;
}

/* ---- imap_buf -------------------------------------------------------------- */

struct ichunk {
  mproc_future *f;
  size_t start, count, pos; /* pos: the next item of the chunk to yield */
  bool parsed;
  int fail; /* 0, or the failure of item `ok` (later items: cancelled) */
  struct result_hdr rh;
  const uint64_t *rl;
  const unsigned char *d;
  struct mproc_task_error err;
};

struct mproc_imap_buf {
  mproc_pool *p;
  mproc_map_buf_fn fn;
  mproc_buf_gen_fn gen;
  void *gen_ctx;
  size_t chunk, max_chunks;
  struct ichunk *q; /* ring of max_chunks chunks in flight, oldest at head */
  size_t head, n;
  size_t next_index; /* index of the next item generated */
  bool gen_done;
  int gen_err; /* the generator's error, reported once */
  size_t gen_err_index;
  struct pack pk;
  mproc_future *retired; /* holds the result last yielded */
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
  int workers = mproc_pool_workers(p);
  if (workers < 0)
    return workers;
  struct mproc_imap_buf *it = calloc(1, sizeof *it);
  if (it == NULL)
    return MPROC_ENOMEM;
  *it = (struct mproc_imap_buf){.p = p, .fn = fn, .gen = gen, .gen_ctx = gen_ctx};
  it->chunk = o != NULL && o->chunksize != 0 ? o->chunksize : 1;
  size_t inflight =
      o != NULL && o->max_inflight != 0 ? o->max_inflight : 64 * it->chunk * (size_t)workers;
  it->max_chunks = inflight / it->chunk != 0 ? inflight / it->chunk : 1;
  it->q = calloc(it->max_chunks, sizeof *it->q);
  int r = it->q != NULL ? pack_begin(&it->pk, p, fn) : MPROC_ENOMEM;
  if (r != 0) {
    free(it->q);
    free(it);
    return r;
  }
  static const struct mproc_imap_options none;
  const struct mproc_imap_options *po = o != NULL ? o : &none;
  mproc__progress_begin(&it->pr, po->progress, po->progress_cb, po->progress_ud,
                        po->progress_total);
  *out = it;
  return 0;
}

/* Generates and submits chunks while there is room. */
static void fill(struct mproc_imap_buf *it) {
  while (!it->gen_done && it->n < it->max_chunks) {
    size_t start = it->next_index;
    while (!it->gen_done && it->pk.count < it->chunk) {
      struct mproc_buf item = {0};
      int g = it->gen(it->gen_ctx, &item);
      if (g == 1 && item.data == NULL && item.len > 0)
        g = MPROC_EINVAL;
      if (g == 1 && (g = pack_add(&it->pk, item.data, item.len)) == 0)
        it->next_index++;
      else if (g == 0 || g > 1)
        it->gen_done = true; /* the end (a positive answer other than 1 too) */
      if (g < 0) {
        it->gen_done = true;
        it->gen_err = g;
        it->gen_err_index = it->next_index;
      }
    }
    if (it->pk.count == 0)
      break;
    struct ichunk *c = &it->q[(it->head + it->n) % it->max_chunks];
    memset(c, 0, sizeof *c);
    c->start = start;
    c->count = (size_t)it->pk.count;
    int r = pack_submit(it->p, it->fn, &it->pk, &c->f);
    if (r != 0) {
      /* Its items are lost: stop generating and report the cause. */
      it->gen_done = true;
      it->gen_err = r;
      it->gen_err_index = start;
      it->next_index = start;
      return;
    }
    it->n++;
  }
}

/* Parses a finished chunk's result (or its failure) once. */
static void parse(struct ichunk *c) {
  c->parsed = true;
  size_t dlen;
  int r = chunk_parts(c->f, c->count, &c->rh, &c->rl, &c->d, &dlen);
  if (r == 0 && c->rh.code != 0) {
    set_item_error(&c->err, c->start + (size_t)c->rh.ok, c->rh.code, c->rh.msg);
    c->fail = MPROC_ETASK;
  } else if (r != 0) {
    /* The task failed as a whole: its first item is blamed. */
    c->rh.ok = 0;
    if (mproc_future_error(c->f, &c->err) != 0)
      set_item_error(&c->err, c->start, r, "map_buf: malformed chunk result");
    c->err.index = c->start;
    c->fail = c->err.code != 0 ? c->err.code : r;
  }
}

MPROC_EXTERN int mproc_imap_buf_next(mproc_imap_buf *it, struct mproc_buf *out, size_t *index,
                                     struct mproc_task_error *err, int64_t timeout_ms) {
  if (it == NULL || out == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (err != NULL)
    memset(err, 0, sizeof *err);
  *out = (struct mproc_buf){NULL, 0};
  if (it->retired != NULL) {
    mproc_future_free(it->retired);
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
  struct ichunk *c = &it->q[it->head];
  if (!c->parsed) {
    int r = mproc_future_wait(c->f, timeout_ms);
    if (r != 0)
      return r;
    parse(c);
  }
  size_t k = c->pos++;
  int r = 0;
  if (index != NULL)
    *index = c->start + k;
  if (k < c->rh.ok) {
    *out = (struct mproc_buf){c->d, (size_t)c->rl[k]};
    c->d += c->rl[k] + 1;
  } else {
    r = k == c->rh.ok ? c->fail : MPROC_ECANCELED;
    if (err != NULL) {
      if (r == MPROC_ECANCELED) {
        err->code = r;
        err->exit_status = -1;
        err->index = c->start + k;
        snprintf(err->message, sizeof err->message, "not run: item %zu of its chunk failed",
                 c->start + (size_t)c->rh.ok);
      } else {
        *err = c->err;
      }
    }
  }
  if (c->pos == c->count) {
    it->retired = c->f; /* *out borrows from it until the next call */
    it->head = (it->head + 1) % it->max_chunks;
    it->n--;
  }
  it->yielded++;
  mproc__progress_update(&it->pr, it->yielded, false);
  return r;
}

MPROC_EXTERN void mproc_imap_buf_free(mproc_imap_buf *it) {
  if (it == NULL)
    return;
  for (size_t i = 0; i < it->n; i++)
    mproc_future_cancel(it->q[(it->head + i) % it->max_chunks].f);
  for (size_t i = 0; i < it->n; i++) {
    mproc_future *f = it->q[(it->head + i) % it->max_chunks].f;
    mproc_future_wait(f, 30000);
    mproc_future_free(f);
  }
  if (it->retired != NULL)
    mproc_future_free(it->retired);
  mproc__progress_update(&it->pr, it->yielded, true);
  free(it->pk.buf);
  free(it->q);
  free(it);
}
