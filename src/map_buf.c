/* map over variable-size items with variable-size results (mproc_pool_map_buf,
 * mproc_pool_imap_buf): the parent side.  Formats in map_buf.h, the worker
 * side in map_buf_worker.c.
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
 * map_buf waits for its chunks in order: the first chunk with a failure holds
 * the lowest failed item, so the chunks after it are cancelled at once.
 * imap_buf keeps a ring of at most max_inflight items' chunks, each with its
 * results area and entries in its own extent, and yields results in order
 * straight from the arena (a result stays valid until the next call, so a
 * chunk whose last item was yielded is released one call later).
 *
 * A chunk that will not land after being cancelled (a worker that cannot be
 * reaped within the bounded wait) is never freed under the worker: the job
 * is marked orphaned and the last chunk to land frees the extents, the chunk
 * array and the job (under mu; the pool completes every chunk before its
 * manager exits). */
#include "map_buf.h"
#include "pool.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)
/* The results areas of the chunks in flight together take at most this much
 * of the arena beyond what their inputs ask for, and one chunk at most
 * ROOMY_MAX: the pages below the arena's keep mark stay warm between calls. */
#define ROOMY_TOTAL ((size_t)256 << 20)
#define ROOMY_MAX ((size_t)16 << 20)
/* A map_buf's overflow area, for the results too large for their chunk's
 * area: reserved as address space, touched only by such results. */
#define OVF_MAX ((size_t)1 << 30)
#define OVF_MIN ((size_t)64 << 20)
/* map_buf's one-pass input extent (see one_pass_start), address space. */
#define IN_MAX ((size_t)1 << 30)
size_t mproc__map_buf_in_max = IN_MAX;

struct mb_job {
  struct mproc_pool *p;
  mproc_map_buf_fn fn;
  uint64_t id; /* non-zero, unique in this process */
  bool by_ref; /* the workers exec: the function travels as `ref` */
  struct mproc__fnref ref;
  bool arena;           /* the workers share the pool's data arena (shm transport) */
  size_t live;          /* arena chunks queued and not landed (under mu) */
  bool orphaned;        /* the owner left: the last chunk to land frees (under mu) */
  void *mem;            /* the chunk array, freed with an orphaned job */
  bool is_map;          /* map_buf: an overflow area and one results extent */
  uint64_t ovf;         /* the overflow area (struct mproc__mb_ovf) */
  size_t ovf_len;       /* its extent's length, 0: none */
  uint64_t in;          /* map_buf's one pass: the extent of every chunk's input */
  size_t in_len;        /* its length, 0: none */
  uint64_t res;         /* map_buf: the results extent (entries, then the areas) */
  size_t res_len;       /* its length, 0: none (the chunks run the call way) */
  bool res_in_in;       /* the results extent is the tail of `in` (freed with it) */
  unsigned char *view;  /* map_buf: the pool's view, NULL: none (results are copied) */
  unsigned char *ubase; /* where the parent reads the arena's offset 0 from */
};

struct mb_chunk {
  struct mproc__task t; /* the arena task: first, the completion finds the chunk */
  struct mb_job *job;
  uint64_t ext;   /* its header, followed by its descriptors (an arena offset) */
  size_t ext_len; /* the length of the extent it owns from there, 0: none (the
                     call way, or in the job's `in`) */
  size_t fixed;   /* its header, descriptors and item bytes */
  size_t bytes;   /* the item bytes */
  uint64_t items; /* the arena offset of its item bytes */
  uint64_t outs;  /* the arena offset of its entries (struct mproc_buf[count]) */
  uint64_t area;  /* the arena offset of its results area */
  size_t area_len;
  size_t start, count;
  bool queued;          /* the arena task was queued */
  _Atomic bool landed;  /* it completed (or there was none): the fields below hold */
  size_t ok;            /* items whose results are in the arena */
  bool full;            /* item `ok` found the area full: the rest runs the call way */
  mproc_future *rest;   /* the call way: items ok.. */
  size_t rest_ok;       /* items of the rest with results */
  const uint64_t *rlen; /* their lengths and bytes (in rest's result) */
  const unsigned char *rdata;
  const unsigned char *cur;    /* imap_buf: the next rest result to yield */
  bool parsed;                 /* ok, rest_ok, fail and err are final */
  int fail;                    /* 0, or the code of item ok + rest_ok */
  struct mproc_task_error err; /* its error */
};

/* ---- the job ---------------------------------------------------------------- */

static _Atomic uint64_t job_ids;

/* A chunk's extent holds more than the ranges a K_MAP chunk declares
 * (mproc__task_ranges: the descriptors, not the header, the items' bytes or
 * the results), so it runs in the arena only where the workers map the
 * arena itself -- the shared-memory transport; a transport that copies
 * chunks by value (MPI) gets every chunk the call way. */
static int job_init(struct mb_job *j, struct mproc_pool *p, mproc_map_buf_fn fn, bool is_map) {
  *j = (struct mb_job){.p = p, .fn = fn, .arena = p->tp == &mproc__transport_shm, .is_map = is_map};
  j->id = atomic_fetch_add(&job_ids, 1) + 1;
  j->by_ref = p->opts.start_method != MPROC_START_FORK;
  int r = j->by_ref ? mproc__fnref_make(MPROC_FUNCTION(fn), &j->ref) : 0;
  if (r != 0)
    return r;
  if (j->arena) {
    j->view = is_map ? mproc__mb_view(p) : NULL;
    j->ubase = j->view != NULL ? j->view : mproc__arena_at(p, 0);
  }
  return 0;
}

/* ---- the call way ------------------------------------------------------------- */

/* Packs items as a call-way argument and submits it. */
static int call_submit(struct mb_job *j, const struct mproc_buf *items, size_t count,
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
  struct mproc__mb_chunk h = {(uint64_t)(uintptr_t)j->fn, count, j->by_ref, 0};
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
static void rest_parse(struct mb_chunk *c) {
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
static void job_extents_free(struct mb_job *j) {
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
static size_t first_stray(const struct mb_job *j, const struct mb_chunk *c, size_t n) {
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
  struct mb_chunk *c = (struct mb_chunk *)t;
  struct mb_job *j = c->job;
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
  size_t stray = first_stray(j, c, c->ok);
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
static size_t area_least(const struct mb_chunk *c) {
  return MPROC__MB_ALIGN(c->bytes + 16 * c->count);
}

/* The size of a results extent for chunks cs[0..n) (all of map_buf's) with
 * areas at least `roomy` wide: the n entries, then each chunk's area. */
static size_t res_size(const struct mb_chunk *cs, size_t n, size_t roomy) {
  size_t len = MPROC__MB_ALIGN((cs[n - 1].start + cs[n - 1].count) * sizeof(struct mproc_buf));
  for (size_t k = 0; k < n && len <= SIZE_MAX / 4; k++) {
    size_t least = area_least(&cs[k]);
    len += roomy > least ? roomy : least;
  }
  return len;
}

/* Lays the chunks' entries and areas out in the results extent at j->res. */
static void res_place(struct mb_job *j, struct mb_chunk *cs, size_t n, size_t roomy) {
  uint64_t at =
      j->res + MPROC__MB_ALIGN((cs[n - 1].start + cs[n - 1].count) * sizeof(struct mproc_buf));
  for (size_t k = 0; k < n; k++) {
    size_t least = area_least(&cs[k]);
    cs[k].outs = j->res + cs[k].start * sizeof(struct mproc_buf);
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
static void res_alloc(struct mb_job *j, struct mb_chunk *cs, size_t n, size_t roomy) {
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
static void chunk_alloc(struct mb_job *j, struct mb_chunk *c, size_t roomy) {
  c->ext = 0; /* nothing left of an abandoned one pass */
  c->ext_len = 0;
  if (!j->arena || (j->is_map && j->res_len == 0))
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
static void ovf_reserve(struct mb_job *j) {
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
static void chunk_size(struct mb_chunk *c, size_t bytes) {
  c->bytes = bytes;
  c->fixed = MPROC__MB_ALIGN(MPROC__MB_HDR + c->count * sizeof(mproc__mb_in) + bytes);
}

/* Sets up chunk c's header (at c->ext, its descriptors after it, already
 * written) and its task: its items at c->items, its results at c->outs
 * and c->area (the header is ours: no lock). */
static void chunk_setup(struct mb_job *j, struct mb_chunk *c) {
  struct mproc_pool *p = j->p;
  struct mproc__mb_hdr *h = mproc__arena_at(p, c->ext);
  memset(h, 0, sizeof *h);
  h->job = j->id;
  h->addr = (uint64_t)(uintptr_t)j->fn;
  h->by_ref = j->by_ref;
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
  t->in_size = sizeof(mproc__mb_in);
  t->in_off = c->ext + MPROC__MB_HDR;
  t->out_size = sizeof(struct mproc_buf);
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
static void chunk_fill(struct mb_job *j, struct mb_chunk *c, const struct mproc_buf *items) {
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
static int chunks_start(struct mb_job *j, struct mb_chunk *cs, size_t n,
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
  if (r == 0 && j->is_map && j->res_len != 0 && j->ovf_len == 0)
    ovf_reserve(j);
  pthread_mutex_unlock(&p->mu);
  if (r != 0)
    return r;
  /* Each chunk is queued as soon as it is filled: the workers start on it
   * while the next one is filled. */
  for (size_t k = 0; k < n; k++) {
    struct mb_chunk *c = &cs[k];
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
    struct mb_chunk *c = &cs[k];
    if (c->queued)
      continue;
    c->ok = 0;
    c->full = true; /* every item runs the call way */
    atomic_store(&c->landed, true);
    r = call_submit(j, items + (c->start - base), c->count, &c->rest);
  }
  return r;
}

/* map_buf's one pass: the caller's items are read once -- checked and
 * copied as they go -- into one extent `in` of up to IN_MAX bytes (address
 * space: only what is written is touched) laid out as
 *
 *   every chunk's header and descriptors | all the item bytes | the results
 *
 * and the chunks are queued together once all is in, so a bad item runs
 * nothing.  0 (queued), MPROC_EINVAL (a bad item), the pool's closed code,
 * or 1: the items or their results did not fit (nothing left behind: the
 * general way follows). */
static int one_pass_start(struct mb_job *j, struct mb_chunk *cs, size_t nchunks,
                          const struct mproc_buf *in, size_t n, size_t roomy) {
  struct mproc_pool *p = j->p;
  size_t heads = 0;
  for (size_t k = 0; k < nchunks; k++)
    heads += MPROC__MB_ALIGN(MPROC__MB_HDR + cs[k].count * sizeof(mproc__mb_in));
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
    struct mb_chunk *c = &cs[k];
    c->ext = j->in + head;
    c->items = j->in + heads + pos;
    mproc__mb_in *d = (mproc__mb_in *)(b + head + MPROC__MB_HDR);
    size_t from = pos;
    for (const struct mproc_buf *it = in + c->start, *e = it + c->count; it < e; it++, d++) {
      if (it->data == NULL && it->len > 0) {
        r = MPROC_EINVAL;
        break;
      }
      if (it->len > cap - pos) {
        r = 1;
        break;
      }
      mproc__mb_copy(w + pos, it->data, it->len);
      pos += it->len;
      *d = pos - from;
    }
    c->bytes = pos - from;
    head += MPROC__MB_ALIGN(MPROC__MB_HDR + c->count * sizeof(mproc__mb_in));
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
  if (r == 0 && j->ovf_len == 0)
    ovf_reserve(j);
  if (r != 0)
    job_extents_free(j);
  pthread_mutex_unlock(&p->mu);
  if (r != 0)
    return r;
  for (size_t k = 0; k < nchunks; k++)
    chunk_setup(j, &cs[k]);
  pthread_mutex_lock(&p->mu);
  r = closed_code(p);
  for (size_t k = 0; r == 0 && k < nchunks; k++) {
    cs[k].queued = true;
    j->live++;
    mproc__pool_enqueue(p, &cs[k].t);
  }
  if (r != 0)
    job_extents_free(j);
  pthread_mutex_unlock(&p->mu);
  return r;
}

/* Once chunk c landed: when its items continue the call way, submits them.
 * 0, or the submit's failure. */
static int chunk_continue(struct mb_chunk *c) {
  if (!c->full || c->rest != NULL)
    return 0;
  const unsigned char *b = mproc__arena_at(c->job->p, c->ext);
  const mproc__mb_in *d = (const mproc__mb_in *)(b + MPROC__MB_HDR);
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
    uint64_t from = k > 0 ? d[k - 1] : 0, to = d[k];
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
  struct mb_chunk *c = arg;
  return atomic_load_explicit(&c->landed, memory_order_acquire);
}

/* Waits until chunk c is final (parsed) or the absolute deadline dl. */
static int chunk_wait(struct mb_chunk *c, int64_t dl) {
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
static const struct mproc_buf *chunk_outs(const struct mb_chunk *c) {
  return c->ok > 0 ? mproc__arena_at(c->job->p, c->outs) : NULL;
}

/* The result of item i of a parsed chunk (i < ok + rest_ok), read in item
 * order: the rest's results through *cur (formats in map_buf.h). */
static inline struct mproc_buf chunk_item(const struct mb_chunk *c, const struct mproc_buf *outs,
                                          size_t i, const unsigned char **cur) {
  if (i < c->ok)
    return outs[i];
  size_t k = i - c->ok;
  struct mproc_buf r = {*cur, (size_t)c->rlen[k]};
  *cur += c->rlen[k] + 1;
  return r;
}

static bool all_landed(void *arg) {
  struct mb_job *j = arg;
  pthread_mutex_lock(&j->p->mu);
  bool done = j->live == 0;
  pthread_mutex_unlock(&j->p->mu);
  return done;
}

/* Cancels every chunk of cs[0..n) still running, waits (bounded) for them
 * to land, and releases extents and futures.  Frees the job and the chunk
 * array (mem) -- at once, or, when a chunk will not land, when the last one
 * does. */
static void chunks_end(struct mb_job *j, struct mb_chunk *cs, size_t n, void *mem) {
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
static size_t items_done(struct mb_job *j, struct mb_chunk *cs, size_t n) {
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
static int wait_progress(struct mb_job *j, struct mb_chunk *cs, size_t n, size_t k,
                         struct mproc__progress *pr, int64_t dl) {
  if (!mproc__progress_active(pr))
    return chunk_wait(&cs[k], dl);
  for (;;) {
    int64_t slice = mproc_now_ms() + 100;
    int r = chunk_wait(&cs[k], dl >= 0 && dl < slice ? dl : slice);
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
static int hand_over(struct mb_job *j, struct mb_chunk *cs, size_t nchunks,
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
static int gather(struct mb_chunk *cs, size_t nchunks, size_t n, struct mproc_buf **out) {
  /* Each result takes its bytes and NUL rounded up to 16. */
  size_t head = ALIGN16(n * sizeof(struct mproc_buf)), bytes = head;
  for (size_t k = 0; k < nchunks; k++) {
    const struct mproc_buf *outs = chunk_outs(&cs[k]);
    const unsigned char *cur = cs[k].rdata;
    for (size_t i = 0; i < cs[k].count; i++) {
      size_t len = chunk_item(&cs[k], outs, i, &cur).len;
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
    const struct mproc_buf *outs = chunk_outs(&cs[k]);
    const unsigned char *cur = cs[k].rdata;
    for (size_t i = 0; i < cs[k].count; i++, b++) {
      *b = chunk_item(&cs[k], outs, i, &cur);
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
static int size_chunks(struct mb_chunk *cs, size_t n, const struct mproc_buf *in) {
  size_t total = 0;
  for (size_t k = 0; k < n; k++) {
    size_t sum = 0;
    for (const struct mproc_buf *b = in + cs[k].start, *e = b + cs[k].count; b < e; b++) {
      if ((b->data == NULL && b->len > 0) || b->len > SIZE_MAX / 4 - total)
        return MPROC_EINVAL;
      sum += b->len;
      total += b->len;
    }
    chunk_size(&cs[k], sum);
  }
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
  if (p == NULL || fn == NULL || out == NULL || mproc__check_timeout(timeout_ms) != 0 ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))) ||
      (n > 0 && in == NULL) || n > SIZE_MAX / 4 / sizeof(struct mproc_buf))
    return MPROC_EINVAL;
  if (n == 0)
    return 0;
  size_t chunk = o != NULL ? o->chunksize : 0;
  if (chunk == 0) {
    size_t div = 4 * (size_t)p->nworkers;
    chunk = n / div + (n % div != 0);
  }
  size_t nchunks = (n - 1) / chunk + 1;
  struct mb_job *j = malloc(sizeof *j);
  struct mb_chunk *cs = calloc(nchunks, sizeof *cs);
  for (size_t k = 0; cs != NULL && k < nchunks; k++) {
    cs[k].job = j;
    cs[k].start = k * chunk;
    cs[k].count = n - cs[k].start < chunk ? n - cs[k].start : chunk;
  }
  int r = j != NULL && cs != NULL ? job_init(j, p, fn, true) : MPROC_ENOMEM;
  size_t roomy =
      MPROC__MB_ALIGN(ROOMY_TOTAL / nchunks < ROOMY_MAX ? ROOMY_TOTAL / nchunks : ROOMY_MAX);
  if (r == 0)
    r = j->arena ? one_pass_start(j, cs, nchunks, in, n, roomy) : 1;
  if (r == 1) /* the general way: the items checked first, each chunk its own extent */
    r = size_chunks(cs, nchunks, in);
  if (r != 0) {
    free(cs);
    free(j);
    return r;
  }
  int64_t dl = mproc__deadline(timeout_ms);
  if (r == 0 && !cs[0].queued)
    r = chunks_start(j, cs, nchunks, in, 0, roomy);
  struct mproc__progress pr;
  static const struct mproc_map_options none;
  const struct mproc_map_options *po = o != NULL ? o : &none;
  mproc__progress_begin(&pr, po->progress, po->progress_cb, po->progress_ud, n);
  for (size_t k = 0; r == 0 && k < nchunks; k++) {
    r = wait_progress(j, cs, nchunks, k, &pr, dl);
    if (r != 0)
      err->code = r; /* the wait's deadline, or SIGINT: no item to blame */
    else if (cs[k].fail != 0)
      *err = cs[k].err;
    if (r == 0)
      r = cs[k].fail;
  }
  if (r == 0) {
    bool whole = j->view != NULL && j->res_len != 0;
    for (size_t k = 0; whole && k < nchunks; k++)
      whole = cs[k].rest == NULL;
    if (!whole || hand_over(j, cs, nchunks, out) != 0)
      r = gather(cs, nchunks, n, out);
    err->code = r;
  }
  if (mproc__progress_active(&pr))
    mproc__progress_update(&pr, items_done(j, cs, nchunks), true);
  chunks_end(j, cs, nchunks, cs);
  return r;
}

/* ---- imap_buf ------------------------------------------------------------------ */

struct mproc_imap_buf {
  struct mb_job *job;
  mproc_buf_gen_fn gen;
  void *gen_ctx;
  size_t chunk, max_chunks;
  struct mb_chunk *q; /* ring of max_chunks chunks in flight, oldest at head */
  size_t head, n;
  size_t pos;        /* the next item of the head chunk to yield */
  size_t next_index; /* index of the next item generated */
  bool gen_done;
  int gen_err; /* the generator's error, reported once */
  size_t gen_err_index;
  unsigned char *stage; /* the items of the chunk being generated */
  size_t stage_used, stage_cap;
  struct mproc_buf *items;  /* (offset into stage, len) until the chunk starts */
  struct mb_chunk *retired; /* holds the result last yielded */
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
  it->roomy = ROOMY_TOTAL / it->max_chunks < ROOMY_MAX ? ROOMY_TOTAL / it->max_chunks : ROOMY_MAX;
  it->job = malloc(sizeof *it->job);
  it->q = calloc(it->max_chunks, sizeof *it->q);
  it->items =
      it->chunk <= SIZE_MAX / sizeof *it->items ? malloc(it->chunk * sizeof *it->items) : NULL;
  int r = it->job != NULL && it->q != NULL && it->items != NULL ? job_init(it->job, p, fn, false)
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
    struct mb_chunk *c = &it->q[(it->head + it->n) % it->max_chunks];
    memset(c, 0, sizeof *c);
    c->job = it->job;
    c->start = start;
    c->count = k;
    chunk_size(c, it->stage_used);
    int r = chunks_start(it->job, c, 1, it->items, start, it->roomy);
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
static void chunk_release(struct mb_chunk *c) {
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
  struct mb_chunk *c = &it->q[it->head];
  int r = chunk_wait(c, mproc__deadline(timeout_ms));
  if (r != 0)
    return r;
  size_t k = it->pos++;
  if (index != NULL)
    *index = c->start + k;
  if (k < c->ok + c->rest_ok) {
    *out = chunk_item(c, chunk_outs(c), k, &c->cur);
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
  if (it == NULL)
    return;
  struct mproc_pool *p = it->job->p;
  mproc__progress_update(&it->pr, it->yielded, true);
  chunks_end(it->job, it->q, it->max_chunks, it->q);
  free(it->stage);
  free(it->items);
  free(it);
  mproc__pool_unref(p);
}
