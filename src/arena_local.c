/* A data arena in the parent's own memory, for transports that carry map
 * chunks by value.
 *
 * Design notes.  map and imap place their inputs and outputs in the pool's
 * arena by offset (transport.h).  The shm transport's arena is shared
 * memory its workers read in place; a transport whose workers cannot see
 * the parent's memory (MPI ranks, the socketpair test transport) copies each
 * chunk's ranges out in send_task and its outputs back before reporting it
 * (mproc__task_ranges), so any memory of the parent's will do.  This is that
 * memory: one malloc'ed block per allocation (map and imap allocate one
 * region per job and carve it themselves, so there are few), named by an
 * offset whose high bits are the block's index plus one and whose low bits
 * are the place in it -- offsets stay offsets, never pointers, and offset 0
 * is never handed out.  All under the pool mutex, like every arena op; the
 * pool frees what is left when it is freed. */
#include "pool.h"

#include <stdlib.h>

#define BLOCK_SHIFT 40 /* bytes addressable in one block: 1 TiB */

struct mproc__local_arena {
  void **blk; /* index -> block, NULL: free */
  size_t n;
};

static int local_alloc(struct mproc_pool *p, size_t len, uint64_t *off) {
  if ((uint64_t)len >= (uint64_t)1 << BLOCK_SHIFT)
    return MPROC_ENOMEM;
  struct mproc__local_arena *a = p->local_arena;
  if (a == NULL && (a = p->local_arena = calloc(1, sizeof *a)) == NULL)
    return MPROC_ENOMEM;
  size_t k = 0;
  while (k < a->n && a->blk[k] != NULL)
    k++;
  if (k == a->n) {
    size_t n = a->n * 2 + 4;
    void **b = realloc(a->blk, n * sizeof *b);
    if (b == NULL)
      return MPROC_ENOMEM;
    for (size_t i = a->n; i < n; i++)
      b[i] = NULL;
    a->blk = b;
    a->n = n;
  }
  if ((a->blk[k] = malloc(len > 0 ? len : 1)) == NULL)
    return MPROC_ENOMEM;
  *off = (uint64_t)(k + 1) << BLOCK_SHIFT;
  return 0;
}

static void local_free(struct mproc_pool *p, uint64_t off, size_t len) {
  (void)len;
  struct mproc__local_arena *a = p->local_arena;
  size_t k = (size_t)(off >> BLOCK_SHIFT) - 1;
  free(a->blk[k]);
  a->blk[k] = NULL;
}

static void *local_at(struct mproc_pool *p, uint64_t off) {
  struct mproc__local_arena *a = p->local_arena;
  return (unsigned char *)a->blk[(off >> BLOCK_SHIFT) - 1] +
         (off & (((uint64_t)1 << BLOCK_SHIFT) - 1));
}

MPROC_EXTERN const struct mproc__arena_ops mproc__arena_local = {
    .alloc = local_alloc, .free = local_free, .at = local_at};

void mproc__arena_local_fini(struct mproc_pool *p) {
  struct mproc__local_arena *a = p->local_arena;
  if (a == NULL)
    return;
  for (size_t k = 0; k < a->n; k++)
    free(a->blk[k]);
  free(a->blk);
  free(a);
  p->local_arena = NULL;
}
