/* map_buf and imap_buf: what the parent side (map_buf.c) and the worker side
 * (map_buf_worker.c) share -- the two ways a chunk of items travels.
 *
 * The arena way (the pool's transport has a data arena): a chunk is one
 * arena extent the parent fills and the worker answers in place, queued as a
 * K_MAP task marked by the element function mproc__map_buf_item; the shm
 * worker runs it whole (mproc__map_buf_run) and publishes its position per
 * item exactly as for a fixed-size map:
 *
 *   struct mproc__mb_hdr | mproc__mb_in[count] | struct mproc__mb_out[count]
 *   | item bytes, packed | results area (out_cap bytes, 64-byte aligned)
 *
 * Every offset in it is relative to the header, so the extent means the same
 * in every process whatever address the arena is mapped at.
 *
 * The call way (no arena, or the rest of a chunk whose results outgrew its
 * area): the items travel as one K_CALL argument and come back as one result
 * (struct mproc__mb_chunk / struct mproc__mb_res below). */
#ifndef MPROC_MAP_BUF_INTERNAL_H
#define MPROC_MAP_BUF_INTERNAL_H

#include "fnref.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* ---- the arena way ----------------------------------------------------------- */

struct mproc__mb_hdr {
  uint64_t job;     /* the job's id, non-zero: the worker caches the function per job */
  uint64_t addr;    /* the element function's address (by_ref == 0: fork workers) */
  uint32_t by_ref;  /* 1: `ref` names the function (spawn, forkserver workers) */
  uint32_t full;    /* worker: the item at the failure point found the area full */
  uint64_t need;    /* worker, with `full`: the size of that item's result */
  uint64_t out_at;  /* the results area, from the header */
  uint64_t out_cap; /* its size */
  uint64_t used;    /* worker: bytes of the area taken by results so far */
  uint32_t has_msg; /* worker: `msg` holds the failed item's message */
  uint32_t pad;
  int64_t ovf;       /* the job's overflow area (struct mproc__mb_ovf), from the header; 0: none */
  uint64_t ovf_used; /* worker: bytes this chunk's results took there */
  uint64_t items_at; /* the first item's bytes, from the header */
  char msg[200];
  struct mproc__fnref ref;
};

#define MPROC__MB_ALIGN(x) (((x) + 63) & ~(size_t)63)
#define MPROC__MB_HDR MPROC__MB_ALIGN(sizeof(struct mproc__mb_hdr))

/* The input descriptors: one uint64_t an item, the end of its bytes
 * counted from the header's `items_at`.  The items are packed in order, so
 * item i begins where item i - 1 ends (the first at 0): 8 bytes an item for
 * the parent to write, and the worker walks them with one running offset. */
typedef uint64_t mproc__mb_in;

/* One result, written by the worker, in 8 bytes.  The results that fit
 * their chunk's area are bump-allocated there in item order, each followed
 * by its NUL, so a result is told by where it ends: it begins where the
 * area's previous result ended (0 for the first), and a span of 0 bytes is
 * an item that returned nothing.  A result in the job's overflow area is
 * told by a negative `end`: -1 - the position of its record there, a
 * uint64_t length (unaligned) then the bytes and a NUL. */
struct mproc__mb_out {
  int64_t end; /* >= 0: the end (past the NUL) in the results area; < 0: see above */
};
#define MPROC__MB_OVF_REC(len) ((uint64_t)(len) + 1 + sizeof(uint64_t))

/* The overflow area of a map_buf job: one extent shared by all its chunks,
 * for results that do not fit their chunk's own area, taken by an atomic
 * bump (rare, large results: no contention worth avoiding).  The bytes
 * follow this block at MPROC__MB_OVF. */
struct mproc__mb_ovf {
  _Atomic uint64_t used;
  uint64_t cap;
};
#define MPROC__MB_OVF ((size_t)64)

/* memcpy for the many small copies of small items: lengths up to 16 bytes
 * are two overlapping fixed-size copies (inlined, no call), never touching a
 * byte outside either buffer. */
static inline void mproc__mb_copy(void *dst, const void *src, size_t len) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if (len > 16) {
    memcpy(d, s, len);
  } else if (len >= 8) {
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

/* The K_MAP element function that marks an arena chunk.  The worker never
 * calls it per item: seeing it, the shm worker loop runs the whole chunk
 * through mproc__map_buf_run (one header read, one function lookup, one
 * running offset instead of a call and a lookup per item). */
int mproc__map_buf_item(const void *in, void *out);
/* Runs the arena chunk whose descriptors are at `descs` (the K_MAP entry's
 * input range, `count` items), publishing its position in *progress before
 * each item as the K_MAP loop does.  0, or the failure of item *progress. */
int mproc__map_buf_run(unsigned char *descs, uint64_t count, _Atomic uint64_t *progress);

/* ---- the call way ------------------------------------------------------------ */

/* The argument: this header, a struct mproc__fnref when by_ref, then
 * (uint64_t len, bytes) per item, packed. */
struct mproc__mb_chunk {
  uint64_t addr;   /* the function's address (by_ref == 0) */
  uint64_t count;  /* items that follow */
  uint32_t by_ref; /* a struct mproc__fnref follows the header */
  uint32_t pad;
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
  struct mproc__mb_out *out; /* the item's result descriptor */
  unsigned char *area;       /* the chunk's results area (h->out_at) */
  size_t area_cap;           /* its size (h->out_cap) */
  /* The call way: results so far, in a growing buffer (the arena way: the
   * bytes of the results area taken so far). */
  unsigned char *buf;
  size_t used, cap;
  size_t start; /* where the current item's result begins (either way) */
  int code;     /* mproc_item_fail's code, 0 if not called */
  char msg[200];
};

#endif /* MPROC_MAP_BUF_INTERNAL_H */
