/* map_buf and imap_buf: what the parent side (map_buf.c) and the worker side
 * (map_buf_worker.c) share -- the two ways a chunk of items travels.
 *
 * The arena way (the pool's transport has a data arena): a chunk is one
 * arena extent the parent fills and the worker answers in place, queued as a
 * K_MAP task marked by the element function mproc__map_buf_item; the shm
 * worker runs it whole (mproc__map_buf_run) and publishes its position per
 * item exactly as for a fixed-size map:
 *
 *   struct mproc__mb_hdr | mproc__mb_in[count] | item bytes, packed
 *
 * and its results go to an area and an array of struct mproc_buf that
 * imap_buf puts after the items in the same extent and map_buf in one
 * extent of the whole job's results (which it hands the caller, see
 * map_buf.c).  Every offset in the header is relative to the header, so
 * the extent means the same in every process whatever address the arena
 * is mapped at.
 *
 * The call way (no arena, or the rest of a chunk whose results outgrew its
 * area): the items travel as one K_CALL argument and come back as one result
 * (struct mproc__mb_chunk / struct mproc__mb_res below). */
#ifndef MPROC_MAP_BUF_INTERNAL_H
#define MPROC_MAP_BUF_INTERNAL_H

#include "fnref.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- the arena way ----------------------------------------------------------- */

struct mproc__mb_hdr {
  uint64_t job;      /* the job's id, non-zero: the worker caches the function per job */
  uint64_t addr;     /* the element function's address (by_ref == 0: fork workers) */
  uint32_t by_ref;   /* 1: `ref` names the function (spawn, forkserver workers) */
  uint32_t full;     /* worker: the item at the failure point found the area full */
  uint64_t need;     /* worker, with `full`: the size of that item's result */
  int64_t outs_at;   /* the chunk's results (struct mproc_buf[count]), from the header */
  int64_t area_at;   /* its results area, from the header */
  uint64_t out_cap;  /* the area's size */
  uint64_t area_ub;  /* the parent's address of the area (see below) */
  uint64_t used;     /* worker: bytes of the area taken by results */
  uint32_t has_msg;  /* worker: `msg` holds the failed item's message */
  uint32_t packed;   /* 0, or how results are packed: MPROC__MB_PACKED or _BYTES */
  int64_t ovf;       /* the job's overflow area (struct mproc__mb_ovf), from the header; 0: none */
  uint64_t ovf_ub;   /* the parent's address of the overflow area's bytes */
  uint64_t items_at; /* the first item's bytes, from the header */
  char msg[200];
  struct mproc__fnref ref;
};

#define MPROC__MB_ALIGN(x) (((x) + 63) & ~(size_t)63)
#define MPROC__MB_ALIGN16(x) (((x) + 15) & ~(size_t)15)
#define MPROC__MB_HDR MPROC__MB_ALIGN(sizeof(struct mproc__mb_hdr))

/* The input descriptors: one uint64_t an item, the end of its bytes
 * counted from the header's `items_at`.  The items are packed in order, so
 * item i begins where item i - 1 ends (the first at 0): 8 bytes an item for
 * the parent to write, and the worker walks them with one running offset. */
typedef uint64_t mproc__mb_in;

/* The results.  The worker writes each item's result where the caller will
 * read it: its bytes, then a NUL, 16-byte aligned, bump-allocated in the
 * chunk's results area (an empty result takes 16 bytes for its NUL), or in
 * the job's overflow area when they do not fit; and its struct mproc_buf,
 * the entry map_buf hands the caller, at position i of the chunk's results.
 * The entry's `data` is the result's address in the parent: the header's
 * area_ub or ovf_ub plus an offset, a number the worker computes and never
 * dereferences (the parent sees the arena at another address than an exec'd
 * worker).  Those two are the one place a worker writes parent addresses,
 * because the entries are the caller's result array itself: no pass over
 * the items is needed to turn offsets into pointers. */

/* A packed job (mproc_pool_map_packed) halves what travels per item: its
 * chunks run in the arena only inside map_buf's one pass (an extent of at
 * most 1 GiB, so every offset in a chunk fits 32 bits), and
 *  - its descriptors are uint32_t (mproc__mb_in32), the same ends;
 *  - its results are packed: each result's bytes right after the previous
 *    one's in the chunk's area (no NUL, no alignment), and at position i of
 *    the chunk's results a uint32_t, where item i's bytes end, counted from
 *    the area.  8 bytes for a 4-byte result instead of 32; the parent
 *    gathers them into the caller's two arrays, one copy of the bytes a
 *    chunk.  A result that does not fit what is left of the area stops the
 *    chunk with `full` (packed jobs have no overflow area: its results could
 *    not stay in order) and the rest runs the call way. */
typedef uint32_t mproc__mb_in32;
typedef uint32_t mproc__mb_end;

/* How a packed job's item function hands back its result (the header's
 * `packed`, the call way's `mode`): through mproc_item_return
 * (map_packed), or written in place at the end of the results so far,
 * returning its length (mproc_map_bytes_fn, map_bytes): then the worker
 * calls nothing but the item function. */
#define MPROC__MB_PACKED 1u
#define MPROC__MB_BYTES 2u

/* The overflow area of a map_buf job: one extent shared by all its chunks,
 * for results that do not fit their chunk's own area, taken by an atomic
 * bump (rare, large results: no contention worth avoiding).  The bytes
 * follow this block at MPROC__MB_OVF. */
struct mproc__mb_ovf {
  _Atomic uint64_t used;
  uint64_t cap;
};
#define MPROC__MB_OVF ((size_t)64)

/* A copy of up to 16 bytes: two overlapping fixed-size copies (inlined, no
 * call), never touching a byte outside either buffer. */
static inline void mproc__mb_copy_small(void *dst, const void *src, size_t len) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if (len >= 8) {
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + len - 8, 8);
    memcpy(d, &a, 8);
    memcpy(d + len - 8, &b, 8);
  } else if (len >= 4) {
    uint32_t a, b;
    memcpy(&a, s, 4);
    memcpy(&b, s + len - 4, 4);
    memcpy(d, &a, 4);
    memcpy(d + len - 4, &b, 4);
  } else {
    for (size_t i = 0; i < len; i++)
      d[i] = s[i];
  }
}

/* memcpy for the many small copies of small items. */
static inline void mproc__mb_copy(void *dst, const void *src, size_t len) {
  if (len > 16)
    memcpy(dst, src, len);
  else
    mproc__mb_copy_small(dst, src, len);
}

/* The K_MAP element function that marks an arena chunk.  The worker never
 * calls it per item: seeing it, the shm worker loop runs the whole chunk
 * through mproc__map_buf_run (one header read, one function lookup, one
 * running offset instead of a call and a lookup per item). */
int mproc__map_buf_item(const void *in, void *out);
/* Runs the arena chunk whose descriptors are at `descs` (the K_MAP entry's
 * input range, `count` items), publishing its position in *progress before
 * each item as the K_MAP loop does.  0, or the failure of item *progress. */
int mproc__map_buf_run(unsigned char *descs, uint64_t count, _Atomic uint64_t *progress);

/* ---- the parent's result sets (map_buf_results.c) ---------------------------- */

/* An extent of a pool's arena that a result set holds. */
struct mproc__mb_piece {
  uint64_t off, len;
};

/* Where this process reads pool p's arena for map_buf's results: a second
 * mapping of it (a view) that stays while result sets need it, after the
 * pool too.  NULL when it cannot be made (the results are then copied). */
unsigned char *mproc__mb_view(struct mproc_pool *p);
/* Registers the result set whose entries are at bufs (in p's view), holding
 * pieces[0..n) of p's arena until mproc_bufs_free.  0, or (nothing
 * registered) MPROC_ENOMEM, or MPROC_EINVAL when p has no view. */
int mproc__mb_rset_add(struct mproc_pool *p, const struct mproc_buf *bufs,
                       const struct mproc__mb_piece *pieces, size_t n);
/* One allocation for results copied out of the arena: `bytes` bytes, which
 * mproc_bufs_free releases.  NULL when out of memory. */
struct mproc_buf *mproc__mb_bufs_alloc(size_t bytes);

/* The largest extent map_buf's one pass takes for a job's items and results
 * (map_buf.c); tests lower it to exercise the general way. */
extern size_t mproc__map_buf_in_max;

/* ---- the call way ------------------------------------------------------------ */

/* The argument: this header, a struct mproc__fnref when by_ref, then
 * (uint64_t len, bytes) per item, packed. */
struct mproc__mb_chunk {
  uint64_t addr;   /* the function's address (by_ref == 0) */
  uint64_t count;  /* items that follow */
  uint32_t by_ref; /* a struct mproc__fnref follows the header */
  uint32_t mode;   /* MPROC__MB_BYTES: fn is a mproc_map_bytes_fn; else 0 */
};

/* The result: this header, uint64_t len[ok], then (bytes, NUL) per item. */
struct mproc__mb_res {
  uint64_t ok;  /* items with a result */
  int32_t code; /* the item at index `ok` failed with it; 0: none failed */
  uint32_t pad;
  char msg[200]; /* its message, NUL-terminated ("" when none) */
};

/* The K_CALL task of the call way (runs in the worker). */
int mproc__map_buf_call(const void *arg, size_t len, mproc_task_ctx *ctx);

/* Grows *buf (doubling from 4 KiB) to hold at least `need` bytes (at most
 * SIZE_MAX / 4, checked by the callers).  0, or MPROC_ENOMEM leaving it as is. */
int mproc__mb_grow(unsigned char **buf, size_t *cap, size_t need);

/* The worker's handle on the item it runs (either way). */
struct mproc_item_ctx {
  /* The arena way: h non-NULL. */
  struct mproc__mb_hdr *h;
  unsigned char *area; /* the chunk's results area (h->area_at) */
  size_t area_cap;     /* its size (h->out_cap) */
  uint64_t rdata;      /* the item's result, the parent's address; 0: none yet */
  size_t rlen;         /* its length */
  /* The call way: results so far, in a growing buffer (the arena way: the
   * bytes of the results area taken so far). */
  unsigned char *buf;
  size_t used, cap;
  size_t start; /* where the current item's result begins (either way) */
  int code;     /* mproc_item_fail's code, 0 if not called */
  bool packed;  /* the arena way: results packed (h->packed, read once) */
  char msg[200];
};

#endif /* MPROC_MAP_BUF_INTERNAL_H */
