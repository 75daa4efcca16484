/* map over variable-size items with variable-size results
 * (mproc_pool_map_buf, mproc_pool_map_packed, mproc_pool_imap_buf): the
 * parent side.  Formats in map_buf.h, the worker side in map_buf_worker.c.
 *
 * Design notes.  A chunk of items is one extent of the pool's data arena,
 * filled once by the parent (descriptors and item bytes), and it travels as
 * a K_MAP task of offsets: no memfd, no mapping and no message per chunk,
 * and the worker publishes its position per item, so progress moves per
 * item and a dead worker is blamed on its item.
 *
 * A chunk's life in the parent:
 *
 *   alloc extent (under mu) -> fill (no lock: the extent is ours) ->
 *   queued (under mu) -> landed (completion, under mu: ok items, and a
 *   failure or `full`) -> [full: the rest of its items run the call way,
 *   as one K_CALL task with no size limit] -> results read -> extent freed
 *
 * Results are written once, by the worker, where the caller reads them:
 * each result's bytes in a results area and its struct mproc_buf in an
 * array of entries (map_buf.h).  map_buf takes one extent for the whole
 * job's results -- the array of n entries, then each chunk's area -- and on
 * success hands that extent to the caller as *out: the parent touches no
 * item after filling the chunks.  The caller must be able to keep it after
 * mproc_pool_free, so the entries point into a second mapping of the arena
 * in this process (a "view", one per pool, made by mremap): it stays mapped
 * while the pool or any result set needs it, and keeps the pages it shows
 * alive after the pool unmaps its arena.  A result set (struct rset) lives
 * in a registry that mproc_bufs_free searches by address; while its pool
 * lives, freeing it returns its extents to the arena.
 *
 * The results area of a chunk is sized from its input (at least the input's
 * size plus 16 bytes an item) and, since untouched arena pages cost only
 * address space, widened while the arena is roomy (a result set gives the
 * unused tail of each area back when it is handed over).  A map_buf also
 * reserves one overflow area (up to OVF_MAX) its chunks share for results
 * that do not fit their own area; imap_buf, which streams and so could never
 * reset it, has none.  Only an item whose result fits neither makes its
 * chunk finish the call way (its function then runs once more,
 * documented); such a map_buf, or one without a view, copies its results
 * into one allocation instead (gather), as does a pool whose workers do not
 * map the arena itself (any transport but shared memory), where every chunk
 * runs the call way.
 *
 * map_packed (mproc_pool_map_packed) is map_buf over packed items with
 * packed results (map_buf.h): half the bytes an item inside the workers.
 * Its ends tell where every item goes before a byte is copied, so the
 * parent checks and copies them as descriptors first, then queues each
 * chunk as soon as its bytes are in; it gathers each chunk's results into
 * the caller's ends as soon as that chunk is final, and copies the bytes,
 * one copy an area, at the end.  Its chunks run in the arena only in the
 * one pass (32-bit offsets); anything else runs the call way.
 *
 * map_buf waits for its chunks in order: the first chunk with a failure holds
 * the lowest failed item, so the chunks after it are cancelled at once.
 * imap_buf (map_buf_imap.c) streams through the same chunks; the job and
 * chunk structures they share are in map_buf_job.h.
 *
 * A chunk that will not land after being cancelled (a worker that cannot be
 * reaped within the bounded wait) is never freed under the worker: the job
 * is marked orphaned and the last chunk to land frees the extents, the chunk
 * array and the job (under mu; the pool completes every chunk before its
 * manager exits). */
#include "map_buf_job.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)
/* A map_buf's overflow area, for the results too large for their chunk's
 * area: reserved as address space, touched only by such results. */
#define OVF_MAX ((size_t)1 << 30)
#define OVF_MIN ((size_t)64 << 20)
/* map_buf's one-pass input extent (see one_pass_start), address space. */
#define IN_MAX ((size_t)1 << 30)
size_t mproc__map_buf_in_max = IN_MAX;
/* A packed job's chunks address their items and results in 32 bits. */
_Static_assert(IN_MAX <= UINT32_MAX, "one pass offsets fit 32 bits");

/* ---- the job ---------------------------------------------------------------- */

static _Atomic uint64_t job_ids;

/* A chunk's extent holds more than the ranges a K_MAP chunk declares
 * (mproc__task_ranges: the descriptors, not the header, the items' bytes or
 * the results), so it runs in the arena only where the workers map the
 * arena itself -- the shared-memory transport; a transport that copies
 * chunks by value (MPI) gets every chunk the call way. */
int mproc__mb_job_init(struct mproc__mb_job *j, struct mproc_pool *p, mproc_map_buf_fn fn,
                       bool is_map, unsigned mode) {
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  bool packed = mode != 0;
  *j = (struct mproc__mb_job){.p = p,
                              .fn = fn,
                              .arena = p->tp == &mproc__transport_shm,
                              .is_map = is_map,
                              .packed = packed,
                              .mode = mode};
  j->id = atomic_fetch_add(&job_ids, 1) + 1;
  j->by_ref = p->opts.start_method != MPROC_START_FORK;
  int r = j->by_ref ? mproc__fnref_make(MPROC_FUNCTION(fn), &j->ref) : 0;
  if (r != 0)
    return r;
  if (j->arena) {
    /* Packed results are always copied out: no view. */
    j->view = is_map && !packed ? mproc__mb_view(p) : NULL;
    j->ubase = j->view != NULL ? j->view : mproc__arena_at(p, 0);
  }
  return 0;
}

/* ---- the call way ------------------------------------------------------------- */

/* Packs items as a call-way argument and submits it. */
static int call_submit(struct mproc__mb_job *j, const struct mproc_buf *items, size_t count,
                       mproc_future **f) {
  size_t hdr = sizeof(struct mproc__mb_chunk) + (j->by_ref ? sizeof j->ref : 0), len = hdr;
  for (size_t i = 0; i < count; i++) {
    if (items[i].len > SIZE_MAX / 4 - sizeof(uint64_t) - len)
      return MPROC_ENOMEM;
    len += sizeof(uint64_t) + items[i].len;
  }
  unsigned char *buf = malloc(len);
  if (buf == NULL)
    return MPROC_ENOMEM;
  struct mproc__mb_chunk h = {(uint64_t)(uintptr_t)j->fn, count, j->by_ref,
                              j->mode == MPROC__MB_BYTES ? MPROC__MB_BYTES : 0};
  memcpy(buf, &h, sizeof h);
  if (j->by_ref)
    memcpy(buf + sizeof h, &j->ref, sizeof j->ref);
  unsigned char *w = buf + hdr;
  for (size_t i = 0; i < count; i++) {
    uint64_t l = items[i].len;
    memcpy(w, &l, sizeof l);
    if (l > 0)
      memcpy(w + sizeof l, items[i].data, items[i].len);
    w += sizeof l + items[i].len;
  }
  int r = mproc_pool_submit(j->p, mproc__map_buf_call, buf, len, f);
  free(buf);
  return r;
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

/* Reads the finished rest of chunk c: its results, or the failure of its
 * first unfinished item (the whole task failed: worker died, timed out). */
static void rest_parse(struct mproc__mb_jchunk *c) {
  size_t first = c->start + c->ok, count = c->count - c->ok;
  const void *res;
  size_t len;
  struct mproc__mb_res rh;
  int r = mproc_future_result(c->rest, &res, &len, 0);
  if (r == 0 && len >= sizeof rh) {
    memcpy(&rh, res, sizeof rh);
    rh.msg[sizeof rh.msg - 1] = '\0';
    if (rh.ok <= count && (rh.code != 0 || rh.ok == count) &&
        rh.ok <= (len - sizeof rh) / sizeof(uint64_t)) {
      c->rest_ok = (size_t)rh.ok;
      c->rlen = (const uint64_t *)((const unsigned char *)res + sizeof rh);
      c->rdata = (const unsigned char *)(c->rlen + rh.ok);
      c->cur = c->rdata;
      if (rh.code != 0) {
        c->fail = MPROC_ETASK;
        set_item_error(&c->err, first + c->rest_ok, rh.code, rh.msg);
      }
      return;
    }
  }
  c->rest_ok = 0;
  if (r != 0 && mproc_future_error(c->rest, &c->err) == 0) {
    c->fail = c->err.code != 0 ? c->err.code : r;
  } else {
    c->fail = MPROC_ETASK;
    set_item_error(&c->err, first, MPROC_ECORRUPT, "map_buf: malformed chunk result");
  }
  c->err.index = first;
}

/* ---- arena chunks ------------------------------------------------------------- */

/* Frees the job's own extents, the results extent and the overflow area,
 * when nobody took them (under mu). */
static void job_extents_free(struct mproc__mb_job *j) {
  if (j->ovf_len != 0)
    mproc__arena_free(j->p, j->ovf, j->ovf_len);
  if (j->res_len != 0 && !j->res_in_in)
    mproc__arena_free(j->p, j->res, j->res_len);
  if (j->in_len != 0)
    mproc__arena_free(j->p, j->in, j->in_len);
  j->ovf_len = 0;
  j->res_len = 0;
  j->in_len = 0;
}

/* Whether [data, data + len] (the result and its NUL) lies in the region of
 * `cap` bytes at `base`: the comparisons never overflow. */
static bool in_region(uintptr_t data, uint64_t len, const unsigned char *base, uint64_t cap) {
  uintptr_t b = (uintptr_t)base;
  return data >= b && len < cap && data - b < cap - len;
}

/* The first of chunk c's n arena results whose entry points outside the
 * chunk's own results area and the job's overflow area, or n.  The worker
 * writes those entries, in the arena, where the caller will read them: its
 * task (the element function) can write over them, and the parent reads or
 * hands out none it has not checked.  Two compares an item, in the pass that
 * lands the chunk. */
static size_t first_stray(const struct mproc__mb_job *j, const struct mproc__mb_jchunk *c,
                          size_t n) {
  if (n == 0)
    return 0;
  const struct mproc_buf *outs = mproc__arena_at(j->p, c->outs);
  const unsigned char *area = j->ubase + c->area;
  const unsigned char *ovf = j->ovf_len != 0 ? j->ubase + j->ovf + MPROC__MB_OVF : NULL;
  uint64_t ovf_cap = j->ovf_len != 0 ? j->ovf_len - MPROC__MB_OVF : 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t d = (uintptr_t)outs[i].data;
    uint64_t len = outs[i].len;
    if (MPROC__LIKELY(in_region(d, len, area, c->area_len)))
      continue;
    if (ovf == NULL || !in_region(d, len, ovf, ovf_cap))
      return i;
  }
  return n;
}

static void chunk_landed(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  struct mproc__mb_jchunk *c = (struct mproc__mb_jchunk *)t;
  struct mproc__mb_job *j = c->job;
  j->live--;
  if (j->orphaned) {
    if (c->ext_len != 0)
      mproc__arena_free(p, c->ext, c->ext_len);
    c->ext_len = 0;
    if (j->live == 0) {
      job_extents_free(j);
      free(j->mem);
      free(j);
    }
    return;
  }
  c->ok = c->count;
  const struct mproc__mb_hdr *h = mproc__arena_at(p, c->ext);
  if (o->code != 0) {
    bool in = o->index >= c->start && o->index - c->start < c->count;
    c->ok = in ? (size_t)(o->index - c->start) : 0;
    if (o->code == MPROC_ETASK && h->full) {
      c->full = true;
    } else {
      struct mproc__outcome mine = *o;
      char msg[sizeof h->msg];
      if (o->code == MPROC_ETASK && h->has_msg) {
        memcpy(msg, h->msg, sizeof msg);
        msg[sizeof msg - 1] = '\0';
        mine.msg = msg;
      }
      mproc__error_from_outcome(&c->err, &mine);
      c->err.index = c->start + c->ok;
      c->fail = o->code;
    }
  }
  /* A packed chunk's ends are checked as they are gathered (packed_ends):
   * one pass over them, not two. */
  size_t stray = j->packed ? c->ok : first_stray(j, c, c->ok);
  if (stray < c->ok) {
    c->ok = stray;
    c->full = false;
    c->fail = MPROC_ECORRUPT;
    set_item_error(&c->err, c->start + stray, MPROC_ECORRUPT,
                   "map_buf: the worker wrote a result entry outside the results area");
    c->err.code = MPROC_ECORRUPT;
  }
  atomic_store_explicit(&c->landed, true, memory_order_release);
  mproc__epoch_bump();
}

/* The least results area of a chunk: its input's size plus 16 bytes an item,
 * so results no larger than their items always fit (each takes its bytes and
 * NUL rounded up to 16). */
static size_t area_least(const struct mproc__mb_jchunk *c) {
  return MPROC__MB_ALIGN(c->bytes + 16 * c->count);
}

/* The size of one item's descriptor (map_buf.h). */
static size_t desc_size(const struct mproc__mb_job *j) {
  return j->packed ? sizeof(mproc__mb_in32) : sizeof(mproc__mb_in);
}

/* The size of one result's entry: an mproc_buf, or a packed result's end. */
static size_t ent_size(const struct mproc__mb_job *j) {
  return j->packed ? sizeof(mproc__mb_end) : sizeof(struct mproc_buf);
}

/* The size of a results extent for chunks cs[0..n) (all of map_buf's) with
 * areas at least `roomy` wide: the n entries, then each chunk's area. */
static size_t res_size(const struct mproc__mb_jchunk *cs, size_t n, size_t roomy) {
  size_t len = MPROC__MB_ALIGN((cs[n - 1].start + cs[n - 1].count) * ent_size(cs[0].job));
  for (size_t k = 0; k < n && len <= SIZE_MAX / 4; k++) {
    size_t least = area_least(&cs[k]);
    len += roomy > least ? roomy : least;
  }
  return len;
}

/* Lays the chunks' entries and areas out in the results extent at j->res. */
static void res_place(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                      size_t roomy) {
  size_t ent = ent_size(j);
  uint64_t at = j->res + MPROC__MB_ALIGN((cs[n - 1].start + cs[n - 1].count) * ent);
  for (size_t k = 0; k < n; k++) {
    size_t least = area_least(&cs[k]);
    cs[k].outs = j->res + cs[k].start * ent;
    cs[k].area = at;
    cs[k].area_len = roomy > least ? roomy : least;
    at += cs[k].area_len;
  }
}

/* The next narrower width to try for the areas: 0 is the least. */
static size_t roomy_less(size_t roomy) {
  return roomy / 2 >= 4096 ? MPROC__MB_ALIGN(roomy / 2) : 0;
}

/* The job's results extent (map_buf's general way, under mu), its areas as
 * wide as `roomy` allows while the arena has room.  Leaves res_len 0 (every
 * chunk runs the call way) when even the least fails. */
static void res_alloc(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                      size_t roomy) {
  for (;;) {
    size_t len = res_size(cs, n, roomy);
    if (len <= SIZE_MAX / 4 && mproc__arena_alloc(j->p, len, &j->res) == 0) {
      j->res_len = len;
      res_place(j, cs, n, roomy);
      return;
    }
    if (roomy == 0)
      return;
    roomy = roomy_less(roomy);
  }
}

/* Takes an extent for chunk c (under mu): its fixed part, and for imap_buf
 * its entries and a results area of at least area_least, widened up to
 * `roomy` while the arena has room.  Leaves ext_len 0 (the call way) when
 * the arena cannot hold it, or map_buf has no results extent. */
static void chunk_alloc(struct mproc__mb_job *j, struct mproc__mb_jchunk *c, size_t roomy) {
  c->ext = 0; /* nothing left of an abandoned one pass */
  c->ext_len = 0;
  /* A packed job's chunks fit 32-bit offsets only inside the one pass. */
  if (!j->arena || j->packed || (j->is_map && j->res_len == 0))
    return;
  if (j->is_map) {
    if (mproc__arena_alloc(j->p, c->fixed, &c->ext) == 0)
      c->ext_len = c->fixed;
    return;
  }
  size_t least = area_least(c), outs = MPROC__MB_ALIGN(c->count * sizeof(struct mproc_buf));
  if (c->fixed > SIZE_MAX / 4 || least > SIZE_MAX / 4 - c->fixed - outs)
    return;
  size_t want = roomy > least ? roomy : least;
  for (;;) {
    if (mproc__arena_alloc(j->p, c->fixed + outs + want, &c->ext) == 0) {
      c->ext_len = c->fixed + outs + want;
      c->outs = c->ext + c->fixed;
      c->area = c->outs + outs;
      c->area_len = want;
      return;
    }
    if (want == least)
      return;
    want = want / 2 > least ? MPROC__MB_ALIGN(want / 2) : least;
  }
}

/* Reserves the job's overflow area (under mu): as large as the arena allows
 * up to OVF_MAX, none below OVF_MIN.  Untouched, it is address space only. */
static void ovf_reserve(struct mproc__mb_job *j) {
  for (size_t len = OVF_MAX; len >= OVF_MIN; len /= 2) {
    if (mproc__arena_alloc(j->p, len, &j->ovf) == 0) {
      struct mproc__mb_ovf *o = mproc__arena_at(j->p, j->ovf);
      atomic_store(&o->used, 0);
      o->cap = len - MPROC__MB_OVF;
      j->ovf_len = len;
      return;
    }
  }
}

/* Sizes chunk c's fixed part (header, descriptors, item bytes) from its
 * items, with c->bytes. */
void mproc__mb_chunk_size(struct mproc__mb_jchunk *c, size_t bytes) {
  c->bytes = bytes;
  c->fixed = MPROC__MB_ALIGN(MPROC__MB_HDR + c->count * sizeof(mproc__mb_in) + bytes);
}

/* Sets up chunk c's header (at c->ext, its descriptors after it, already
 * written) and its task: its items at c->items, its results at c->outs
 * and c->area (the header is ours: no lock). */
static void chunk_setup(struct mproc__mb_job *j, struct mproc__mb_jchunk *c) {
  struct mproc_pool *p = j->p;
  struct mproc__mb_hdr *h = mproc__arena_at(p, c->ext);
  memset(h, 0, sizeof *h);
  h->job = j->id;
  h->addr = (uint64_t)(uintptr_t)j->fn;
  h->by_ref = j->by_ref;
  h->packed = j->mode;
  if (j->by_ref)
    h->ref = j->ref;
  h->outs_at = (int64_t)c->outs - (int64_t)c->ext;
  h->area_at = (int64_t)c->area - (int64_t)c->ext;
  h->out_cap = c->area_len;
  h->area_ub = (uint64_t)(uintptr_t)(j->ubase + c->area);
  if (j->ovf_len != 0) {
    h->ovf = (int64_t)j->ovf - (int64_t)c->ext;
    h->ovf_ub = (uint64_t)(uintptr_t)(j->ubase + j->ovf + MPROC__MB_OVF);
  }
  h->items_at = c->items - c->ext;
  struct mproc__task *t = &c->t;
  memset(t, 0, sizeof *t);
  t->kind = MPROC__K_MAP;
  t->fn = mproc__taskfn_of((void (*)(void))mproc__map_buf_item);
  t->arg_fd = -1;
  t->slot = -1;
  t->count = c->count;
  t->base_index = c->start;
  t->in_size = desc_size(j);
  t->in_off = c->ext + MPROC__MB_HDR;
  t->out_size = ent_size(j);
  t->out_off = c->outs;
  t->nargs = 1;
  t->col_off[0] = t->in_off;
  t->col_size[0] = t->in_size;
  t->timeout_ms = p->opts.task_timeout_ms;
  t->retries_left = (int32_t)p->opts.retries;
  t->complete = chunk_landed;
  t->owner = j;
}

/* Fills chunk c's own extent (header, descriptors, item bytes) and sets it
 * up (the extent is ours: no lock). */
static void chunk_fill(struct mproc__mb_job *j, struct mproc__mb_jchunk *c,
                       const struct mproc_buf *items) {
  unsigned char *b = mproc__arena_at(j->p, c->ext);
  mproc__mb_in *d = (mproc__mb_in *)(b + MPROC__MB_HDR);
  c->items = c->ext + MPROC__MB_HDR + c->count * sizeof *d;
  unsigned char *w = b + (c->items - c->ext);
  uint64_t at = 0;
  for (size_t i = 0; i < c->count; i++) {
    mproc__mb_copy(w + at, items[i].data, items[i].len);
    at += items[i].len;
    d[i] = at;
  }
  chunk_setup(j, c);
}

static int closed_code(struct mproc_pool *p) {
  int state = atomic_load(&p->state);
  if (state == MPROC__P_RUNNING)
    return 0;
  return state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED;
}

/* Starts chunks cs[0..n): items[i] is the item of index base + i.  Each runs
 * in the arena when it fits, else the call way.  0, or the failure of the
 * first chunk that could not start (the ones before it run). */
int mproc__mb_chunks_start(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                           const struct mproc_buf *items, size_t base, size_t roomy) {
  struct mproc_pool *p = j->p;
  roomy = MPROC__MB_ALIGN(roomy); /* every area a whole number of arena units */
  pthread_mutex_lock(&p->mu);
  int r = closed_code(p);
  if (r == 0 && j->is_map && j->arena)
    res_alloc(j, cs, n, roomy);
  for (size_t k = 0; r == 0 && k < n; k++)
    chunk_alloc(j, &cs[k], roomy);
  /* After the chunks: they take the arena's low, warm pages. */
  if (r == 0 && j->is_map && !j->packed && j->res_len != 0 && j->ovf_len == 0)
    ovf_reserve(j);
  pthread_mutex_unlock(&p->mu);
  if (r != 0)
    return r;
  /* Each chunk is queued as soon as it is filled: the workers start on it
   * while the next one is filled. */
  for (size_t k = 0; k < n; k++) {
    struct mproc__mb_jchunk *c = &cs[k];
    if (c->ext_len == 0)
      continue;
    if (r == 0)
      chunk_fill(j, c, items + (c->start - base));
    pthread_mutex_lock(&p->mu);
    if (r == 0)
      r = closed_code(p);
    if (r != 0) {
      mproc__arena_free(p, c->ext, c->ext_len);
      c->ext_len = 0;
    } else {
      c->queued = true;
      j->live++;
      mproc__pool_enqueue(p, &c->t);
    }
    pthread_mutex_unlock(&p->mu);
  }
  for (size_t k = 0; r == 0 && k < n; k++) {
    struct mproc__mb_jchunk *c = &cs[k];
    if (c->queued)
      continue;
    c->ok = 0;
    c->full = true; /* every item runs the call way */
    atomic_store(&c->landed, true);
    r = call_submit(j, items + (c->start - base), c->count, &c->rest);
  }
  return r;
}

/* Copies the items of chunk c, in[c->start ..), checking them: its
 * descriptors at d, its bytes at w + *pos (of cap).  0, MPROC_EINVAL (a bad
 * item) or 1 (they do not fit). */
static int copy_bufs(struct mproc__mb_jchunk *c, const struct mproc_buf *in, mproc__mb_in *d,
                     unsigned char *w, size_t cap, size_t *pos) {
  size_t from = *pos, at = from;
  for (const struct mproc_buf *it = in + c->start, *e = it + c->count; it < e; it++, d++) {
    if (it->data == NULL && it->len > 0)
      return MPROC_EINVAL;
    if (it->len > cap - at)
      return 1;
    mproc__mb_copy(w + at, it->data, it->len);
    at += it->len;
    *d = at - from;
  }
  *pos = at;
  return 0;
}

/* The bytes of chunk c's packed items begin at *base (in the caller's data). */
static size_t packed_base(const struct mproc__mb_jchunk *c, const struct mproc_packed *in) {
  return c->start > 0 ? in->ends[c->start - 1] : 0;
}

/* Writes the descriptors of chunk c's packed items at d: the caller's ends
 * made relative to the chunk, checked on the way.  0, or MPROC_EINVAL: an
 * end decreases (or passes SIZE_MAX / 4, which the last end may not, so
 * one after it decreases).  Ends below that bound differ by less than it,
 * so an end smaller than the one before leaves a difference with one of
 * the two top bits set: or-ing every end and every difference makes one
 * test at the end, and a loop with no branch and nothing carried from one
 * item to the next, which the compiler turns into vector code. */
static int packed_descs(const struct mproc__mb_jchunk *c, const struct mproc_packed *in,
                        mproc__mb_in32 *d) {
  size_t base = packed_base(c, in), count = c->count;
  const size_t *e = in->ends + c->start;
  size_t acc = e[0] | (e[0] - base);
  d[0] = (mproc__mb_in32)(e[0] - base);
  for (size_t i = 1; i < count; i++) {
    acc |= e[i] | (e[i] - e[i - 1]);
    d[i] = (mproc__mb_in32)(e[i] - base); /* < 1 GiB: one_pass_start */
  }
  return (acc & ~(SIZE_MAX / 4)) != 0 ? MPROC_EINVAL : 0;
}

/* map_buf's one pass: the caller's items (in, or packed: pk) are read once
 * -- checked and copied as they go -- into one extent `in` of up to IN_MAX
 * bytes (address space: only what is written is touched) laid out as
 *
 *   every chunk's header and descriptors | all the item bytes | the results
 *
 * and the chunks are queued once all is in, so a bad item runs nothing.
 * Packed items' ends alone tell where everything goes: they are checked
 * and copied as descriptors first, then each chunk's bytes are copied as
 * it is queued, so the workers start on the first while the parent copies
 * the next.  0 (queued), MPROC_EINVAL (a
 * bad item), the pool's closed code (the chunks queued before it run, see
 * map_run), or 1: the items or their results did not fit (nothing left
 * behind: the general way follows). */
static int one_pass_start(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t nchunks,
                          const struct mproc_buf *in, const struct mproc_packed *pk, size_t n,
                          size_t roomy) {
  struct mproc_pool *p = j->p;
  size_t heads = 0;
  for (size_t k = 0; k < nchunks; k++)
    heads += MPROC__MB_ALIGN(MPROC__MB_HDR + cs[k].count * desc_size(j));
  /* At least room for the results of empty items. */
  size_t least = heads + MPROC__MB_ALIGN(n * sizeof(struct mproc_buf)) + 16 * n + 64 * nchunks;
  pthread_mutex_lock(&p->mu);
  int r = closed_code(p);
  for (size_t len = mproc__map_buf_in_max; r == 0 && j->in_len == 0; len /= 2) {
    if (len < least || len < heads) {
      r = 1;
    } else if (mproc__arena_alloc(p, len, &j->in) == 0) {
      j->in_len = len;
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (r != 0)
    return r;
  unsigned char *b = mproc__arena_at(p, j->in);
  unsigned char *w = b + heads;
  size_t cap = j->in_len - heads, pos = 0, head = 0;
  for (size_t k = 0; r == 0 && k < nchunks; k++) {
    struct mproc__mb_jchunk *c = &cs[k];
    c->ext = j->in + head;
    c->items = j->in + heads + pos;
    size_t from = pos;
    unsigned char *d = b + head + MPROC__MB_HDR;
    if (pk == NULL) {
      r = copy_bufs(c, in, (mproc__mb_in *)d, w, cap, &pos);
    } else if ((r = packed_descs(c, pk, (mproc__mb_in32 *)d)) == 0) {
      /* The bytes are copied as the chunk is queued. */
      size_t bytes = pk->ends[c->start + c->count - 1] - packed_base(c, pk);
      if (bytes > cap - pos)
        r = 1;
      else
        pos += bytes;
    }
    c->bytes = pos - from;
    head += MPROC__MB_ALIGN(MPROC__MB_HDR + c->count * desc_size(j));
  }
  /* The results right after the items: warm pages when the job is small. */
  size_t at = MPROC__MB_ALIGN(heads + pos);
  for (; r == 0; roomy = roomy_less(roomy)) {
    size_t len = res_size(cs, nchunks, roomy);
    if (at <= j->in_len && len <= j->in_len - at) {
      j->res = j->in + at;
      j->res_len = len;
      j->res_in_in = true;
      res_place(j, cs, nchunks, roomy);
      break;
    }
    if (roomy == 0)
      r = 1;
  }
  pthread_mutex_lock(&p->mu);
  if (r == 0)
    r = closed_code(p);
  if (r == 0 && !j->packed && j->ovf_len == 0)
    ovf_reserve(j);
  if (r != 0)
    job_extents_free(j);
  pthread_mutex_unlock(&p->mu);
  for (size_t k = 0; r == 0 && k < nchunks; k++) {
    struct mproc__mb_jchunk *c = &cs[k];
    if (pk != NULL && c->bytes > 0)
      memcpy(b + (c->items - j->in), (const unsigned char *)pk->data + packed_base(c, pk),
             c->bytes);
    chunk_setup(j, c);
    pthread_mutex_lock(&p->mu);
    r = closed_code(p);
    if (r == 0) {
      c->queued = true;
      j->live++;
      mproc__pool_enqueue(p, &c->t);
    } else if (k == 0) {
      job_extents_free(j); /* nothing queued: nothing uses them */
    }
    pthread_mutex_unlock(&p->mu);
  }
  return r;
}

/* Once chunk c landed: when its items continue the call way, submits them.
 * 0, or the submit's failure. */
static int chunk_continue(struct mproc__mb_jchunk *c) {
  if (!c->full || c->rest != NULL)
    return 0;
  const unsigned char *b = mproc__arena_at(c->job->p, c->ext);
  const mproc__mb_in *d = (const mproc__mb_in *)(b + MPROC__MB_HDR);
  const mproc__mb_in32 *d32 = (const mproc__mb_in32 *)(b + MPROC__MB_HDR);
  size_t n = c->count - c->ok;
  struct mproc_buf *items = malloc((n != 0 ? n : 1) * sizeof *items);
  if (items == NULL)
    return MPROC_ENOMEM;
  /* The items where the parent put them, cut by descriptors that must
   * still run forward inside the chunk's bytes: the worker's task could
   * have written over the header and the descriptors in the arena. */
  const unsigned char *at = mproc__arena_at(c->job->p, c->items);
  int r = 0;
  for (size_t i = 0; r == 0 && i < n; i++) {
    size_t k = c->ok + i;
    bool packed = c->job->packed;
    uint64_t from = k == 0 ? 0 : packed ? d32[k - 1] : d[k - 1], to = packed ? d32[k] : d[k];
    if (from > to || to > c->bytes)
      r = MPROC_ECORRUPT;
    items[i] = (struct mproc_buf){at + from, (size_t)(to - from)};
  }
  if (r != 0) {
    free(items);
    return r;
  }
  r = call_submit(c->job, items, n, &c->rest);
  free(items);
  return r;
}

static bool landed_cond(void *arg) {
  struct mproc__mb_jchunk *c = arg;
  return atomic_load_explicit(&c->landed, memory_order_acquire);
}

/* Waits until chunk c is final (parsed) or the absolute deadline dl. */
int mproc__mb_chunk_wait(struct mproc__mb_jchunk *c, int64_t dl) {
  struct mproc_pool *p = c->job->p;
  if (c->parsed)
    return 0;
  if (!landed_cond(c)) {
    int r = mproc__wait_until(landed_cond, c, &p, 1, (p->opts.flags & MPROC_POOL_SIGINT) != 0, dl);
    if (r != 0)
      return r;
  }
  if (c->fail == 0 && c->full) {
    int r = chunk_continue(c);
    if (r != 0) {
      c->fail = r;
      set_item_error(&c->err, c->start + c->ok, r, "map_buf: could not submit the rest of a chunk");
      c->err.code = r;
      c->full = false;
    } else {
      int64_t left = dl < 0 ? -1 : dl - mproc_now_ms();
      r = mproc_future_wait(c->rest, left < 0 && dl >= 0 ? 0 : left);
      if (r != 0)
        return r;
      rest_parse(c);
    }
  }
  c->parsed = true;
  return 0;
}

/* The entries of a parsed chunk's arena results (items before ok), read
 * through the pool's own mapping of the arena; NULL when it has none. */
const struct mproc_buf *mproc__mb_chunk_outs(const struct mproc__mb_jchunk *c) {
  return c->ok > 0 ? mproc__arena_at(c->job->p, c->outs) : NULL;
}

static bool all_landed(void *arg) {
  struct mproc__mb_job *j = arg;
  pthread_mutex_lock(&j->p->mu);
  bool done = j->live == 0;
  pthread_mutex_unlock(&j->p->mu);
  return done;
}

/* Cancels every chunk of cs[0..n) still running, waits (bounded) for them
 * to land, and releases extents and futures.  Frees the job and the chunk
 * array (mem) -- at once, or, when a chunk will not land, when the last one
 * does. */
void mproc__mb_chunks_end(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                          void *mem) {
  struct mproc_pool *p = j->p;
  pthread_mutex_lock(&p->mu);
  for (size_t k = 0; k < n; k++)
    if (cs[k].queued && !atomic_load(&cs[k].landed))
      mproc__pool_cancel_task(p, &cs[k].t);
  pthread_mutex_unlock(&p->mu);
  for (size_t k = 0; k < n; k++)
    if (cs[k].rest != NULL)
      mproc_future_cancel(cs[k].rest);
  mproc__wait_until(all_landed, j, &p, 1, false, mproc__deadline(30000));
  for (size_t k = 0; k < n; k++) {
    if (cs[k].rest != NULL) {
      mproc_future_wait(cs[k].rest, 30000);
      mproc_future_free(cs[k].rest);
      cs[k].rest = NULL;
    }
  }
  pthread_mutex_lock(&p->mu);
  for (size_t k = 0; k < n; k++) {
    if (cs[k].ext_len != 0 && (!cs[k].queued || atomic_load(&cs[k].landed))) {
      mproc__arena_free(p, cs[k].ext, cs[k].ext_len);
      cs[k].ext_len = 0;
    }
  }
  bool keep = j->live > 0;
  if (!keep)
    job_extents_free(j);
  if (keep) {
    j->orphaned = true;
    j->mem = mem;
  }
  pthread_mutex_unlock(&p->mu);
  if (!keep) {
    free(mem);
    free(j);
  }
}

/* Items of cs[0..n) finished: landed chunks' items, their rests' once done,
 * and the items finished inside the chunks running now (their workers
 * publish their position), so a bar moves per item. */
static size_t items_done(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n) {
  size_t done = 0;
  for (size_t k = 0; k < n; k++) {
    if (!atomic_load_explicit(&cs[k].landed, memory_order_acquire))
      continue;
    done += cs[k].ok;
    if (cs[k].parsed || (cs[k].rest != NULL && mproc_future_done(cs[k].rest)))
      done += cs[k].count - cs[k].ok;
  }
  struct mproc_pool *p = j->p;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__activity a = {0};
    if (p->slots[i].pid > 0)
      p->tp->activity(p, i, &a);
    if (a.running != NULL && a.running->complete == chunk_landed && a.running->owner == j)
      done += (size_t)(a.items_done < a.running->count ? a.items_done : a.running->count);
  }
  pthread_mutex_unlock(&p->mu);
  return done;
}

/* ---- map_buf --------------------------------------------------------------------- */

/* Waits for chunk k, reporting progress every 100 ms when asked. */
static int wait_progress(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n, size_t k,
                         struct mproc__progress *pr, int64_t dl) {
  if (!mproc__progress_active(pr))
    return mproc__mb_chunk_wait(&cs[k], dl);
  for (;;) {
    int64_t slice = mproc_now_ms() + 100;
    int r = mproc__mb_chunk_wait(&cs[k], dl >= 0 && dl < slice ? dl : slice);
    mproc__progress_update(pr, items_done(j, cs, n), false);
    if (r != MPROC_ETIMEDOUT || (dl >= 0 && mproc_now_ms() >= dl))
      return r;
  }
}

/* Hands the job's results extent to the caller as *out (map_buf with a view,
 * every result in the arena): a result set keeps what the results take --
 * and the overflow area's part when a result went there -- and the unused
 * tail of each chunk's area (and the one pass's inputs) go back to the
 * arena.  0, or MPROC_ENOMEM with nothing changed (the results are then
 * copied). */
static int hand_over(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t nchunks,
                     struct mproc_buf **out) {
  struct mproc__mb_piece *keep = malloc((2 * nchunks + 5) * sizeof *keep),
                         *drop = keep + nchunks + 2;
  if (keep == NULL)
    return MPROC_ENOMEM;
  struct mproc_pool *p = j->p;
  size_t nk = 0, nd = 0;
  uint64_t from = j->res; /* where the piece being measured begins */
  for (size_t k = 0; k < nchunks; k++) {
    const struct mproc__mb_hdr *h = mproc__arena_at(p, cs[k].ext);
    size_t used = h->used < cs[k].area_len ? MPROC__MB_ALIGN((size_t)h->used) : cs[k].area_len;
    if (used >= cs[k].area_len)
      continue;
    uint64_t end = cs[k].area + used;
    if (end > from)
      keep[nk++] = (struct mproc__mb_piece){from, end - from};
    drop[nd++] = (struct mproc__mb_piece){end, cs[k].area_len - used};
    from = cs[k].area + cs[k].area_len;
  }
  if (from < j->res + j->res_len)
    keep[nk++] = (struct mproc__mb_piece){from, j->res + j->res_len - from};
  if (j->res_in_in) {
    /* The inputs before the results, and the room after them. */
    drop[nd++] = (struct mproc__mb_piece){j->in, j->res - j->in};
    if (j->res + j->res_len < j->in + j->in_len)
      drop[nd++] =
          (struct mproc__mb_piece){j->res + j->res_len, j->in + j->in_len - j->res - j->res_len};
  }
  bool ovf = false;
  if (j->ovf_len != 0) {
    const struct mproc__mb_ovf *o = mproc__arena_at(p, j->ovf);
    uint64_t used = atomic_load(&o->used);
    if (used > 0) {
      size_t len = MPROC__MB_ALIGN(MPROC__MB_OVF + (size_t)(used < o->cap ? used : o->cap));
      keep[nk++] = (struct mproc__mb_piece){j->ovf, len};
      if (len < j->ovf_len)
        drop[nd++] = (struct mproc__mb_piece){j->ovf + len, j->ovf_len - len};
      ovf = true;
    }
  }
  const struct mproc_buf *bufs = (const struct mproc_buf *)(j->view + j->res);
  int r = mproc__mb_rset_add(p, bufs, keep, nk);
  if (r == 0) {
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < nd; i++)
      mproc__arena_free(p, drop[i].off, drop[i].len);
    pthread_mutex_unlock(&p->mu);
    /* Nothing of them is the job's to free any more. */
    j->res_len = 0;
    if (j->res_in_in)
      j->in_len = 0;
    if (ovf)
      j->ovf_len = 0;
    *out = (struct mproc_buf *)bufs;
  }
  free(keep);
  return r;
}

/* Copies every chunk's results into one allocation. */
static int gather(struct mproc__mb_jchunk *cs, size_t nchunks, size_t n, struct mproc_buf **out) {
  /* Each result takes its bytes and NUL rounded up to 16. */
  size_t head = ALIGN16(n * sizeof(struct mproc_buf)), bytes = head;
  for (size_t k = 0; k < nchunks; k++) {
    const struct mproc_buf *outs = mproc__mb_chunk_outs(&cs[k]);
    const unsigned char *cur = cs[k].rdata;
    for (size_t i = 0; i < cs[k].count; i++) {
      size_t len = mproc__mb_chunk_item(&cs[k], outs, i, &cur).len;
      if (len >= SIZE_MAX / 4 || ALIGN16(len + 1) > SIZE_MAX / 2 - bytes)
        return MPROC_ENOMEM;
      bytes += ALIGN16(len + 1);
    }
  }
  struct mproc_buf *bufs = mproc__mb_bufs_alloc(bytes);
  if (bufs == NULL)
    return MPROC_ENOMEM;
  unsigned char *w = (unsigned char *)bufs + head;
  struct mproc_buf *b = bufs;
  for (size_t k = 0; k < nchunks; k++) {
    const struct mproc_buf *outs = mproc__mb_chunk_outs(&cs[k]);
    const unsigned char *cur = cs[k].rdata;
    for (size_t i = 0; i < cs[k].count; i++, b++) {
      *b = mproc__mb_chunk_item(&cs[k], outs, i, &cur);
      mproc__mb_copy(w, b->data, b->len + 1); /* with its NUL */
      b->data = w;
      w += ALIGN16(b->len + 1);
    }
  }
  *out = bufs;
  return 0;
}

/* Checks the items of chunks cs[0..n) and sizes each chunk's fixed part, in
 * one pass over the caller's array. */
static int size_chunks(struct mproc__mb_jchunk *cs, size_t n, const struct mproc_buf *in) {
  size_t total = 0;
  for (size_t k = 0; k < n; k++) {
    size_t sum = 0;
    for (const struct mproc_buf *b = in + cs[k].start, *e = b + cs[k].count; b < e; b++) {
      if ((b->data == NULL && b->len > 0) || b->len > SIZE_MAX / 4 - total)
        return MPROC_EINVAL;
      sum += b->len;
      total += b->len;
    }
    mproc__mb_chunk_size(&cs[k], sum);
  }
  return 0;
}

/* The caller's packed results are gathered chunk by chunk, each as soon as
 * it is final while the workers run the next: its ends into the array made
 * for all n at the start, counted on from the bytes of the chunks before
 * it.  Their bytes, whose total is known only then, are copied at the end,
 * one copy of an area a chunk.
 *
 * The ends the worker wrote are checked in the same pass (they must run
 * forward inside the chunk's area: its task could have written over them),
 * before anything else of the chunk counts, so a scribbled end is reported
 * even when a later item of the chunk failed.  The checks are or-ed into
 * one word, the loop has no branch; only a bad chunk is scanned again for
 * its first bad item.  0, or MPROC_ECORRUPT with *err set (that item's
 * index), or MPROC_ENOMEM. */
static int packed_ends(const struct mproc__mb_jchunk *c, size_t *ends, size_t *pos,
                       struct mproc_task_error *err) {
  size_t *e = ends + c->start, at = *pos, ok = c->ok;
  if (ok > 0) {
    const mproc__mb_end *ce = mproc__arena_at(c->job->p, c->outs);
    /* Each end's difference from the one before (both below 2^32) has its
     * top bit set exactly when it decreases.  Nothing is carried from one
     * item to the next (the end before is loaded again), so the compiler
     * makes vector code of it. */
    uint64_t acc = ce[0], last;
    e[0] = at + (size_t)ce[0];
    for (size_t i = 1; i < ok; i++) {
      acc |= (uint64_t)ce[i] - (uint64_t)ce[i - 1];
      e[i] = at + (size_t)ce[i];
    }
    last = e[ok - 1] - at; /* the end the caller gets */
    if ((acc >> 63) != 0 || last > c->area_len) {
      size_t i = 0;
      for (size_t before = at; i < ok && e[i] >= before && e[i] - at <= c->area_len; i++)
        before = e[i];
      set_item_error(err, c->start + i, MPROC_ECORRUPT,
                     "map_buf: the worker wrote a result end outside the results area");
      err->code = MPROC_ECORRUPT;
      return MPROC_ECORRUPT;
    }
    at += (size_t)last;
  }
  for (size_t i = 0; i < c->rest_ok; i++) {
    if (c->rlen[i] > SIZE_MAX / 4 - at)
      return err->code = MPROC_ENOMEM;
    at += (size_t)c->rlen[i];
    e[ok + i] = at;
  }
  *pos = at;
  return 0;
}

/* Copies the bytes of chunks cs[0..nchunks), their ends gathered, into one
 * new allocation of `bytes`; the caller's results are then complete. */
static int packed_data(const struct mproc__mb_jchunk *cs, size_t nchunks, size_t bytes,
                       size_t *ends, size_t n, struct mproc_packed *out) {
  unsigned char *data = (unsigned char *)mproc__mb_bufs_alloc(bytes);
  if (data == NULL)
    return MPROC_ENOMEM;
  unsigned char *w = data;
  for (size_t k = 0; k < nchunks; k++) {
    const struct mproc__mb_jchunk *c = &cs[k];
    if (c->ok > 0) {
      const mproc__mb_end *ce = mproc__arena_at(c->job->p, c->outs);
      size_t len = (size_t)ce[c->ok - 1];
      memcpy(w, mproc__arena_at(c->job->p, c->area), len);
      w += len;
    }
    const unsigned char *cur = c->rdata;
    for (size_t i = 0; i < c->rest_ok; i++) {
      size_t len = (size_t)c->rlen[i];
      if (len > 0)
        memcpy(w, cur, len);
      cur += len + 1; /* the call way's results keep their NUL */
      w += len;
    }
  }
  *out = (struct mproc_packed){data, ends, n};
  return 0;
}

/* Packed items as an array of mproc_buf (the general way and the call way
 * take those), checking the ends.  0, MPROC_EINVAL or MPROC_ENOMEM. */
static int packed_bufs(const struct mproc_packed *in, struct mproc_buf **out) {
  struct mproc_buf *b = malloc(in->n * sizeof *b);
  if (b == NULL)
    return MPROC_ENOMEM;
  const unsigned char *data = in->data;
  size_t prev = 0;
  for (size_t i = 0; i < in->n; i++) {
    if (in->ends[i] < prev) {
      free(b);
      return MPROC_EINVAL;
    }
    b[i] = (struct mproc_buf){data != NULL ? data + prev : NULL, in->ends[i] - prev};
    prev = in->ends[i];
  }
  *out = b;
  return 0;
}

/* map_buf, map_packed and map_bytes, their arguments checked: items `in`,
 * or packed `pk` (n of them, n > 0, mode as mproc__mb_job_init's); results
 * into *out or *pout. */
static int map_run(struct mproc_pool *p, mproc_map_buf_fn fn, const struct mproc_buf *in,
                   const struct mproc_packed *pk, unsigned mode, size_t n, struct mproc_buf **out,
                   struct mproc_packed *pout, const struct mproc_map_options *o,
                   struct mproc_task_error *err, int64_t timeout_ms) {
  size_t chunk = o != NULL ? o->chunksize : 0;
  if (chunk == 0) {
    size_t div = 4 * (size_t)p->nworkers;
    chunk = n / div + (n % div != 0);
  }
  size_t nchunks = (n - 1) / chunk + 1;
  struct mproc__mb_job *j = malloc(sizeof *j);
  struct mproc__mb_jchunk *cs = calloc(nchunks, sizeof *cs);
  for (size_t k = 0; cs != NULL && k < nchunks; k++) {
    cs[k].job = j;
    cs[k].start = k * chunk;
    cs[k].count = n - cs[k].start < chunk ? n - cs[k].start : chunk;
  }
  int r = j != NULL && cs != NULL ? mproc__mb_job_init(j, p, fn, true, mode) : MPROC_ENOMEM;
  size_t roomy = MPROC__MB_ALIGN(MPROC__MB_ROOMY_TOTAL / nchunks < MPROC__MB_ROOMY_MAX
                                     ? MPROC__MB_ROOMY_TOTAL / nchunks
                                     : MPROC__MB_ROOMY_MAX);
  if (r == 0)
    r = j->arena ? one_pass_start(j, cs, nchunks, in, pk, n, roomy) : 1;
  /* The general way: the items checked first, each chunk its own extent
   * (packed items as an array of them). */
  struct mproc_buf *tmp = NULL;
  bool general = r == 1;
  r = general ? 0 : r;
  if (general && pk != NULL && (r = packed_bufs(pk, &tmp)) == 0)
    in = tmp;
  if (general && r == 0)
    r = size_chunks(cs, nchunks, in);
  if (r != 0 && !cs[0].queued) {
    free(tmp);
    free(cs);
    free(j);
    return r;
  }
  int64_t dl = mproc__deadline(timeout_ms);
  if (!cs[0].queued)
    r = mproc__mb_chunks_start(j, cs, nchunks, in, 0, roomy);
  free(tmp);     /* chunks_start copied the items */
  err->code = r; /* the pool closed while chunks started: they are ended below */
  struct mproc__progress pr;
  static const struct mproc_map_options none;
  const struct mproc_map_options *po = o != NULL ? o : &none;
  mproc__progress_begin(&pr, po->progress, po->progress_cb, po->progress_ud, n);
  size_t *ends = NULL, bytes = 0; /* packed: the results gathered so far */
  if (r == 0 && pout != NULL && (ends = (size_t *)mproc__mb_bufs_alloc(n * sizeof *ends)) == NULL)
    r = err->code = MPROC_ENOMEM;
  for (size_t k = 0; r == 0 && k < nchunks; k++) {
    r = wait_progress(j, cs, nchunks, k, &pr, dl);
    if (r != 0)
      err->code = r; /* the wait's deadline, or SIGINT: no item to blame */
    else if (ends != NULL && (r = packed_ends(&cs[k], ends, &bytes, err)) != 0)
      continue; /* a scribbled end, before any failure after it */
    else if (cs[k].fail != 0)
      *err = cs[k].err;
    if (r == 0)
      r = cs[k].fail;
  }
  if (ends != NULL) {
    if (r == 0 && (r = packed_data(cs, nchunks, bytes, ends, n, pout)) != 0)
      err->code = r;
    if (r != 0)
      mproc_bufs_free((struct mproc_buf *)(void *)ends);
  } else if (r == 0) {
    bool whole = j->view != NULL && j->res_len != 0;
    for (size_t k = 0; whole && k < nchunks; k++)
      whole = cs[k].rest == NULL;
    if (!whole || hand_over(j, cs, nchunks, out) != 0)
      r = gather(cs, nchunks, n, out);
    err->code = r;
  }
  if (mproc__progress_active(&pr))
    mproc__progress_update(&pr, items_done(j, cs, nchunks), true);
  mproc__mb_chunks_end(j, cs, nchunks, cs);
  return r;
}

/* The checks both maps share: 0, or MPROC_EINVAL. */
static int map_check(mproc_pool *p, mproc_map_buf_fn fn, const struct mproc_map_options *o,
                     int64_t timeout_ms) {
  if (p == NULL || fn == NULL || mproc__check_timeout(timeout_ms) != 0 ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))))
    return MPROC_EINVAL;
  return 0;
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
  if (map_check(p, fn, o, timeout_ms) != 0 || out == NULL || (n > 0 && in == NULL) ||
      n > SIZE_MAX / 4 / sizeof(struct mproc_buf))
    return MPROC_EINVAL;
  if (n == 0)
    return 0;
  return map_run(p, fn, in, NULL, 0, n, out, NULL, o, err, timeout_ms);
}

/* map_packed and map_bytes (mode as mproc__mb_job_init's). */
static int packed_map(mproc_pool *p, mproc_map_buf_fn fn, unsigned mode,
                      const struct mproc_packed *in, struct mproc_packed *out,
                      const struct mproc_map_options *o, struct mproc_task_error *err,
                      int64_t timeout_ms) {
  struct mproc_task_error scratch;
  if (err == NULL)
    err = &scratch;
  memset(err, 0, sizeof *err);
  if (out != NULL)
    *out = (struct mproc_packed){NULL, NULL, 0};
  if (map_check(p, fn, o, timeout_ms) != 0 || out == NULL || in == NULL)
    return MPROC_EINVAL;
  size_t n = in->n;
  if (n == 0)
    return 0;
  /* The last end bounds them all (the copies check that none decreases). */
  if (in->ends == NULL || n > SIZE_MAX / 4 / sizeof(struct mproc_buf) ||
      in->ends[n - 1] > SIZE_MAX / 4 || (in->data == NULL && in->ends[n - 1] > 0))
    return MPROC_EINVAL;
  return map_run(p, fn, NULL, in, mode, n, NULL, out, o, err, timeout_ms);
}

MPROC_EXTERN int mproc_pool_map_packed(mproc_pool *p, mproc_map_buf_fn fn,
                                       const struct mproc_packed *in, struct mproc_packed *out,
                                       const struct mproc_map_options *o,
                                       struct mproc_task_error *err, int64_t timeout_ms) {
  return packed_map(p, fn, MPROC__MB_PACKED, in, out, o, err, timeout_ms);
}

/* The job keeps every item function as a mproc_map_buf_fn; its `mode` tells
 * the worker the type to call it with. */
MPROC_EXTERN int mproc_pool_map_bytes(mproc_pool *p, mproc_map_bytes_fn fn,
                                      const struct mproc_packed *in, struct mproc_packed *out,
                                      const struct mproc_map_options *o,
                                      struct mproc_task_error *err, int64_t timeout_ms) {
  return packed_map(p, (mproc_map_buf_fn)(void (*)(void))fn, MPROC__MB_BYTES, in, out, o, err,
                    timeout_ms);
}

MPROC_EXTERN void mproc_packed_free(struct mproc_packed *packed) {
  if (packed == NULL)
    return;
  /* Two allocations (map_run): made as a copied mproc_buf array is. */
  mproc_bufs_free((struct mproc_buf *)(uintptr_t)packed->ends);
  mproc_bufs_free((struct mproc_buf *)(uintptr_t)packed->data);
  *packed = (struct mproc_packed){NULL, NULL, 0};
}
