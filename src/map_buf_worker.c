/* The worker side of map_buf/imap_buf: the item context and the two ways a
 * chunk runs (formats in map_buf.h).
 *
 * Design notes.  An arena chunk runs as a K_MAP task that the shm worker
 * loop hands whole to mproc__map_buf_run, which resolves the function once,
 * walks the packed items with one running offset and publishes its position
 * before each item: a progress bar moves per item and a worker that dies is
 * blamed on the item it was in, as for a fixed-size map.  Each result is
 * copied once, straight to where the caller will read it: its bytes and NUL
 * 16-byte aligned in the chunk's results area, bump-allocated in item order
 * (one worker runs a chunk at a time, so no atomics), and its struct
 * mproc_buf in the chunk's entries once the item function returned.  A
 * result that does not fit goes to the job's overflow area (shared by its
 * chunks: an atomic bump); one that finds that full too (or none: imap_buf)
 * stops the chunk there with `full` set and the size it needed, and the
 * parent runs the rest of the chunk the call way, which has no size limit
 * (that item's function is then run a second time: rare by construction,
 * see map_buf.c).  A chunk that is retried after its worker died starts
 * again at its first item, which resets the area.
 *
 * A packed chunk (mproc_pool_map_packed) runs its own loop, run_packed: 32-bit
 * descriptors in, each result's bytes right after the previous one's and a
 * 32-bit end out, no NUL, no alignment, no overflow area (a result that does
 * not fit stops the chunk with `full`).  mproc_item_return stores a small
 * result that fits, packed or not, in a leaf with no call: it runs once an
 * item, and for a map of small items it is much of the worker's work.
 *
 * A map_bytes chunk (mproc_map_bytes_fn) runs run_bytes: the item function
 * writes its result straight after the previous one in the area and
 * returns its length, so an item costs one call and one 32-bit end.  A
 * length past the room it was given is that function asking for more: the
 * chunk stops with `full`, as a packed result that does not fit, and the
 * call way runs the item again with the room asked for.  A negative length
 * fails the item; its message, if the function gave one through
 * mproc_map_bytes_fail, waits in this thread's fail_note, taken only for
 * the code it was given with, so the loop touches it only on a failure.
 *
 * A call-way chunk (chunk_task) collects results in a growing buffer and
 * returns them as one task result; its first failed item ends it, and that
 * item's position, code and message travel in the result header while the
 * task itself succeeds. */
#include "map_buf.h"
#include "pool.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mproc__mb_grow(unsigned char **buf, size_t *cap, size_t need) {
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

/* A result too large for what is left of its chunk's area: into the job's
 * overflow area while it has room, else the chunk stops here and the parent
 * runs the rest of it the call way. */
static int overflow(mproc_item_ctx *c, const void *data, size_t len) {
  struct mproc__mb_hdr *h = c->h;
  if (h->ovf != 0 && len < UINT64_MAX / 2) {
    unsigned char *base = (unsigned char *)h + h->ovf;
    struct mproc__mb_ovf *o = (struct mproc__mb_ovf *)base;
    uint64_t need = MPROC__MB_ALIGN16((uint64_t)len + 1);
    uint64_t at = atomic_fetch_add(&o->used, need);
    if (at <= o->cap && need <= o->cap - at) {
      unsigned char *w = base + MPROC__MB_OVF + at;
      mproc__mb_copy(w, data, len);
      w[len] = '\0';
      c->rdata = h->ovf_ub + at;
      c->rlen = len;
      return 0;
    }
  }
  h->full = 1;
  h->need = len;
  return MPROC_ENOMEM;
}

/* The rest of storing a result whose bytes were copied to w, the area at
 * `start` (unpacked): its NUL, the room it takes, its parent address. */
static inline void stored(mproc_item_ctx *c, unsigned char *w, size_t len) {
  w[len] = '\0';
  c->used = c->start + MPROC__MB_ALIGN16(len + 1);
  c->rdata = c->h->area_ub + c->start;
  c->rlen = len;
}

/* Stores the current item's result (the arena way, unpacked); a second
 * call replaces the first, starting again at `start`. */
static inline int store(mproc_item_ctx *c, const void *data, size_t len) {
  c->used = c->start;
  if (len < c->area_cap - c->start && MPROC__MB_ALIGN16(len + 1) <= c->area_cap - c->start) {
    unsigned char *w = c->area + c->start;
    mproc__mb_copy(w, data, len);
    stored(c, w, len);
    return 0;
  }
  return overflow(c, data, len);
}

/* mproc_item_return but for its fast paths: checks, results over 16 bytes,
 * results that do not fit, and the call way. */
static __attribute__((noinline)) int item_return_slow(mproc_item_ctx *c, const void *data,
                                                      size_t len) {
  if (c == NULL || (data == NULL && len > 0))
    return MPROC_EINVAL;
  if (c->h != NULL && !c->packed)
    return store(c, data, len);
  if (c->h != NULL) {
    c->used = c->start;
    if (len <= c->area_cap - c->start) {
      mproc__mb_copy(c->area + c->start, data, len);
      c->used = c->start + len;
      return 0;
    }
    /* No room: the chunk stops here (packed results have no overflow area,
     * they must stay in item order in the area). */
    c->h->full = 1;
    c->h->need = len;
    return MPROC_ENOMEM;
  }
  c->used = c->start;
  if (len > c->cap - c->used) {
    if (len > SIZE_MAX / 4 - c->used || mproc__mb_grow(&c->buf, &c->cap, c->used + len) != 0)
      return MPROC_ENOMEM;
  }
  if (len > 0)
    memcpy(c->buf + c->used, data, len);
  c->used += len;
  return 0;
}

/* The fast paths, a small result that fits its chunk's area: with no call
 * and no register saved, since this runs once an item (the rest, a tail
 * call). */
MPROC_EXTERN int mproc_item_return(mproc_item_ctx *c, const void *data, size_t len) {
  if (c == NULL || c->h == NULL || data == NULL || len > 16)
    return item_return_slow(c, data, len);
  size_t room = c->area_cap - c->start;
  unsigned char *w = c->area + c->start;
  if (c->packed && len <= room) {
    mproc__mb_copy_small(w, data, len);
    c->used = c->start + len;
    return 0;
  }
  if (!c->packed && MPROC__MB_ALIGN16(len + 1) <= room) {
    mproc__mb_copy_small(w, data, len);
    stored(c, w, len);
    return 0;
  }
  return item_return_slow(c, data, len);
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

/* The element function of a chunk.  A fork worker gets its address; an exec'd
 * one a reference, resolved once per job (resolving reads the object's
 * notes).  0, or MPROC_ENOFUNC with the reason in why. */
static int resolve(uint64_t job, uint64_t addr, const struct mproc__fnref *ref,
                   mproc_map_buf_fn *fn, char *why, size_t whylen) {
  static uint64_t last_job;
  static struct mproc__fnref last_ref;
  static mproc_function last_fn;
  if (ref == NULL) {
    *fn = (mproc_map_buf_fn)(uintptr_t)addr;
    return 0;
  }
  if (last_fn == NULL || (job != 0 ? job != last_job : memcmp(&last_ref, ref, sizeof *ref) != 0)) {
    mproc_function f;
    if (mproc__fnref_resolve(ref, &f, why, whylen) < 0)
      return MPROC_ENOFUNC;
    last_job = job;
    last_ref = *ref;
    last_fn = f;
  }
  *fn = (mproc_map_buf_fn)last_fn;
  return 0;
}

/* The message of a failing map_bytes item (mproc_map_bytes_fail), kept for
 * the item that returns `code`: the item running when it was recorded, read
 * from the position the arena loop publishes anyway (fail_at), so that a
 * message recorded by an item that then succeeded is never another's and
 * the loop spends nothing on it per item.  The call way clears it per item. */
static _Thread_local struct {
  bool set;
  int code;
  uint64_t item; /* *fail_at when recorded */
  char msg[200];
} fail_note;
static _Thread_local _Atomic uint64_t *fail_at;

MPROC_EXTERN ssize_t mproc_map_bytes_fail(int code, const char *fmt, ...) {
  if (code >= 0)
    code = MPROC_ETASK;
  fail_note.msg[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_note.msg, sizeof fail_note.msg, fmt, ap);
    va_end(ap);
  }
  fail_note.code = code;
  fail_note.item = fail_at != NULL ? atomic_load_explicit(fail_at, memory_order_relaxed) : 0;
  fail_note.set = true;
  return code;
}

/* The code of map_bytes item i that returned w < 0, and its message in
 * msg[200] ("" when it gave none). */
static int bytes_failed(ssize_t w, uint64_t i, char *msg) {
  int code = w >= INT_MIN ? (int)w : MPROC_ETASK;
  msg[0] = '\0';
  if (fail_note.set && fail_note.code == code && fail_note.item == i)
    memcpy(msg, fail_note.msg, sizeof fail_note.msg);
  fail_note.set = false;
  return code;
}

int mproc__map_buf_item(const void *in, void *out) {
  (void)in, (void)out;
  return MPROC_ENOSYS; /* a marker: see map_buf.h */
}

/* Records the message of a failed item (mproc_item_fail's) in the header. */
static void failed_msg(struct mproc__mb_hdr *h, const mproc_item_ctx *c) {
  if (c->code != 0) {
    memcpy(h->msg, c->msg, sizeof h->msg);
    h->has_msg = 1;
  }
}

/* The item loop of a map_bytes chunk (see the design notes): as run_packed
 * with the item function writing its result in place. */
static int run_bytes(struct mproc__mb_hdr *h, unsigned char *area, size_t cap,
                     const mproc__mb_in32 *end, uint64_t count, _Atomic uint64_t *progress,
                     mproc_map_bytes_fn fn) {
  mproc__mb_end *ends = (mproc__mb_end *)((unsigned char *)h + h->outs_at);
  const unsigned char *items = (const unsigned char *)h + h->items_at;
  uint32_t at = 0;
  size_t used = 0;
  int r = 0;
  fail_note.set = false;
  fail_at = progress;
  for (uint64_t i = 0; i < count; i++) {
    atomic_store_explicit(progress, i, memory_order_relaxed);
    uint32_t e = end[i];
    ssize_t w = fn(items + at, e - at, area + used, cap - used);
    /* One test for both: a negative length is past any room as a size_t. */
    if (MPROC__UNLIKELY((size_t)w > cap - used)) {
      if (w < 0) {
        r = bytes_failed(w, i, h->msg);
        h->has_msg = h->msg[0] != '\0';
      } else {
        h->full = 1;
        h->need = (uint64_t)w;
        r = MPROC_ENOMEM; /* the parent takes over */
      }
      break;
    }
    used += (size_t)w;
    ends[i] = (mproc__mb_end)used;
    at = e;
  }
  fail_at = NULL;
  h->used = used;
  return r;
}

/* The item loop of a packed chunk (map_buf.h): 32-bit descriptors in, each
 * result right after the previous one and its 32-bit end out.  Nothing
 * returned leaves an empty result: its end is where it began. */
static int run_packed(struct mproc__mb_hdr *h, mproc_item_ctx *c, const mproc__mb_in32 *end,
                      uint64_t count, _Atomic uint64_t *progress, mproc_map_buf_fn fn) {
  mproc__mb_end *ends = (mproc__mb_end *)((unsigned char *)h + h->outs_at);
  const unsigned char *items = (const unsigned char *)h + h->items_at;
  uint32_t at = 0;
  int r = 0;
  for (uint64_t i = 0; i < count; i++) {
    atomic_store_explicit(progress, i, memory_order_relaxed);
    c->start = c->used;
    c->code = 0;
    uint32_t e = end[i];
    r = fn(items + at, e - at, c);
    if (h->full) {
      r = MPROC_ENOMEM; /* whatever the function made of it: the parent takes over */
      break;
    }
    if (r == 0 && c->code != 0)
      r = c->code;
    if (r != 0) {
      failed_msg(h, c);
      break;
    }
    ends[i] = (mproc__mb_end)c->used;
    at = e;
  }
  h->used = c->used;
  return r;
}

int mproc__map_buf_run(unsigned char *descs, uint64_t count, _Atomic uint64_t *progress) {
  struct mproc__mb_hdr *h = (struct mproc__mb_hdr *)(descs - MPROC__MB_HDR);
  /* A chunk retried after its worker died starts over. */
  h->used = 0;
  h->full = 0;
  h->has_msg = 0;
  mproc_map_buf_fn fn;
  char why[160];
  if (resolve(h->job, h->addr, h->by_ref ? &h->ref : NULL, &fn, why, sizeof why) != 0) {
    atomic_store_explicit(progress, 0, memory_order_relaxed);
    snprintf(h->msg, sizeof h->msg, "map_buf: element function %s", why);
    h->has_msg = 1;
    return MPROC_ENOFUNC;
  }
  /* Locals, read once: the element function may write any memory, so
   * anything read through h would be loaded again for every item. */
  const mproc__mb_in *end = (const mproc__mb_in *)descs;
  struct mproc_buf *outs = (struct mproc_buf *)((unsigned char *)h + h->outs_at);
  const unsigned char *items = (const unsigned char *)h + h->items_at;
  /* Field by field: zeroing the message buffer would cost more than a
   * small item's whole work. */
  struct mproc_item_ctx c;
  c.h = h;
  c.area = (unsigned char *)h + h->area_at;
  c.area_cap = (size_t)h->out_cap;
  c.buf = NULL;
  c.cap = 0;
  c.used = 0;
  c.packed = h->packed != 0;
  if (h->packed == MPROC__MB_BYTES)
    return run_bytes(h, c.area, c.area_cap, (const mproc__mb_in32 *)descs, count, progress,
                     (mproc_map_bytes_fn)(void (*)(void))fn);
  if (c.packed)
    return run_packed(h, &c, (const mproc__mb_in32 *)descs, count, progress, fn);
  uint64_t at = 0;
  int r = 0;
  for (uint64_t i = 0; i < count; i++) {
    /* Per item, as the fixed-size loop: a crash is blamed on its item and a
     * bar moves per item; a relaxed store to a line this core owns. */
    atomic_store_explicit(progress, i, memory_order_relaxed);
    /* Not the message: mproc_item_fail writes it whole, and it is read only
     * with a non-zero code. */
    c.start = c.used;
    c.rdata = 0;
    c.code = 0;
    uint64_t e = end[i];
    r = fn(items + at, (size_t)(e - at), &c);
    if (r == 0 && c.code == 0 && c.rdata == 0 && !h->full)
      store(&c, "", 0); /* nothing returned: an empty result, still with its NUL */
    if (h->full) {
      r = MPROC_ENOMEM; /* whatever the function made of it: the parent takes over */
      break;
    }
    if (r == 0 && c.code != 0)
      r = c.code;
    if (r != 0) {
      failed_msg(h, &c);
      break;
    }
    outs[i] = (struct mproc_buf){(const void *)(uintptr_t)c.rdata, c.rlen};
    at = e;
  }
  h->used = c.used;
  return r;
}

/* Writes a call-way chunk's results: header, lengths, (bytes, NUL) each. */
static void write_results(unsigned char *out, const struct mproc__mb_res *rh, const uint64_t *rlens,
                          const unsigned char *src) {
  memcpy(out, rh, sizeof *rh);
  memcpy(out + sizeof *rh, rlens, rh->ok * sizeof *rlens);
  unsigned char *w = out + sizeof *rh + rh->ok * sizeof *rlens;
  for (size_t i = 0; i < rh->ok; i++) {
    if (rlens[i] > 0) { /* src is NULL while every result so far is empty */
      memcpy(w, src, rlens[i]);
      src += rlens[i];
    }
    w[rlens[i]] = '\0';
    w += rlens[i] + 1;
  }
}

/* Runs a map_bytes item the call way, its result appended to c's buffer
 * (grown to the room the function asks for, once).  0, or the item's
 * failure code with its message in c (c->code set). */
static int bytes_call(mproc_item_ctx *c, mproc_map_bytes_fn fn, const void *in, size_t len) {
  if (c->cap == c->used && mproc__mb_grow(&c->buf, &c->cap, c->used + 1) != 0)
    return mproc_item_fail(c, MPROC_ENOMEM, "map_bytes: no memory for a result");
  for (int again = 0;; again++) {
    size_t room = c->cap - c->used;
    fail_note.set = false;
    ssize_t w = fn(in, len, c->buf + c->used, room);
    if (w < 0) {
      c->code = bytes_failed(w, 0, c->msg);
      return c->code;
    }
    if ((size_t)w <= room) {
      c->used += (size_t)w;
      return 0;
    }
    if (again)
      return mproc_item_fail(c, MPROC_ERANGE,
                             "map_bytes: the item function asked for %zd bytes after %zu", w, room);
    if ((size_t)w > SIZE_MAX / 4 - c->used ||
        mproc__mb_grow(&c->buf, &c->cap, c->used + (size_t)w) != 0)
      return mproc_item_fail(c, MPROC_ENOMEM, "map_bytes: no memory for a result of %zd bytes", w);
  }
}

int mproc__map_buf_call(const void *arg, size_t len, mproc_task_ctx *ctx) {
  const struct mproc__mb_chunk *h = arg;
  if (len < sizeof *h)
    return mproc_task_fail(ctx, MPROC_EINVAL, "map_buf: malformed chunk");
  size_t hdr = sizeof *h;
  struct mproc__fnref ref;
  if (h->by_ref) {
    if (len < hdr + sizeof ref)
      return mproc_task_fail(ctx, MPROC_ENOFUNC, "map_buf: element function reference cut short");
    memcpy(&ref, h + 1, sizeof ref); /* the argument bytes need not be aligned */
    hdr += sizeof ref;
  }
  mproc_map_buf_fn fn;
  char why[160];
  if (resolve(0, h->addr, h->by_ref ? &ref : NULL, &fn, why, sizeof why) != 0)
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
  struct mproc__mb_res rh = {0};
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
    int r = h->mode == MPROC__MB_BYTES
                ? bytes_call(&c, (mproc_map_bytes_fn)(void (*)(void))fn, in, (size_t)ilen)
                : fn(in, (size_t)ilen, &c);
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
  if (out != NULL)
    write_results(out, &rh, rlens, c.buf);
  free(rlens);
  free(c.buf);
  return 0; /* a failed result buffer fails the task by itself */
}
