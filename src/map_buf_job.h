/* map_buf, map_packed and imap_buf: the parent's job and its chunks, what
 * map_buf.c (the job, the chunks' life, map_buf and map_packed) shares with
 * map_buf_imap.c (imap_buf).  Formats in map_buf.h. */
#ifndef MPROC_MAP_BUF_JOB_H
#define MPROC_MAP_BUF_JOB_H

#include "map_buf.h"
#include "pool.h"

/* The results areas of the chunks in flight together take at most
 * MPROC__MB_ROOMY_TOTAL of the arena beyond what their inputs ask for, and
 * one chunk at most MPROC__MB_ROOMY_MAX: the pages below the arena's keep
 * mark stay warm between calls. */
#define MPROC__MB_ROOMY_TOTAL ((size_t)256 << 20)
#define MPROC__MB_ROOMY_MAX ((size_t)16 << 20)

/* One call of map_buf, map_packed or imap_buf (an iterator's whole life). */
struct mproc__mb_job {
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
  bool packed;          /* map_packed, map_bytes: packed results, no overflow area, no view */
  unsigned mode;        /* packed: MPROC__MB_PACKED, or MPROC__MB_BYTES (fn is one) */
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

/* A chunk of a job: consecutive items, their task and their results (its
 * life in map_buf.c's design notes). */
struct mproc__mb_jchunk {
  struct mproc__task t; /* the arena task: first, the completion finds the chunk */
  struct mproc__mb_job *job;
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

/* Sets up *j for a call on p (mode: 0, or packed, MPROC__MB_PACKED or
 * MPROC__MB_BYTES, which makes fn a mproc_map_bytes_fn).  0, or the failure to
 * name fn for exec'd workers.  A chunk's extent holds more than the ranges
 * a K_MAP chunk declares
 * (mproc__task_ranges: the descriptors, not the header, the items' bytes or
 * the results), so it runs in the arena only where the workers map the
 * arena itself -- the shared-memory transport; a transport that copies
 * chunks by value (MPI) gets every chunk the call way. */
int mproc__mb_job_init(struct mproc__mb_job *j, struct mproc_pool *p, mproc_map_buf_fn fn,
                       bool is_map, unsigned mode);

/* Sizes chunk c's fixed part (header, descriptors, item bytes) from its
 * items, with c->bytes. */
void mproc__mb_chunk_size(struct mproc__mb_jchunk *c, size_t bytes);

/* Starts chunks cs[0..n): items[i] is the item of index base + i.  Each runs
 * in the arena when it fits, else the call way.  0, or the failure of the
 * first chunk that could not start (the ones before it run). */
int mproc__mb_chunks_start(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                           const struct mproc_buf *items, size_t base, size_t roomy);

/* Waits until chunk c is final (parsed) or the absolute deadline dl. */
int mproc__mb_chunk_wait(struct mproc__mb_jchunk *c, int64_t dl);

/* The entries of a parsed chunk's arena results (items before ok), read
 * through the pool's own mapping of the arena; NULL when it has none. */
const struct mproc_buf *mproc__mb_chunk_outs(const struct mproc__mb_jchunk *c);

/* Cancels every chunk of cs[0..n) still running, waits (bounded) for them
 * to land, and releases extents and futures.  Frees the job and the chunk
 * array (mem) -- at once, or, when a chunk will not land, when the last one
 * does. */
void mproc__mb_chunks_end(struct mproc__mb_job *j, struct mproc__mb_jchunk *cs, size_t n,
                          void *mem);

/* The result of item i of a parsed chunk (i < ok + rest_ok), read in item
 * order: the rest's results through *cur (formats in map_buf.h). */
static inline struct mproc_buf mproc__mb_chunk_item(const struct mproc__mb_jchunk *c,
                                                    const struct mproc_buf *outs, size_t i,
                                                    const unsigned char **cur) {
  if (i < c->ok)
    return outs[i];
  size_t k = i - c->ok;
  struct mproc_buf r = {*cur, (size_t)c->rlen[k]};
  *cur += c->rlen[k] + 1;
  return r;
}

#endif /* MPROC_MAP_BUF_JOB_H */
