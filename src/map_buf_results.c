/* Who owns the results of mproc_pool_map_buf, and how mproc_bufs_free
 * releases them (formats in map_buf.h, the job in map_buf.c).
 *
 * Design notes.  A map_buf's results are either where its workers wrote
 * them -- a result set: extents of the pool's data arena -- or, when they
 * could not all be written there, a copy in one allocation of this process
 * (bufs_alloc).  mproc_bufs_free tells the two apart by looking the address
 * up in the registry of result sets.
 *
 * The caller may free the pool before its results, so a result set is read
 * through a view: the pool's arena mapped a second time in this process
 * (mremap with an old size of 0 maps the same shared pages again), made on
 * the pool's first map_buf.  Its life:
 *
 *   made (refs 1: the pool) -> +1 per result set -> pool freed: -1, and the
 *   extents of the sets still held are no longer returned to an arena ->
 *   last reference dropped: unmapped (the pages it showed go with it)
 *
 * The registry's mutex orders a set's release against its pool's end: a set
 * freed while the pool lives returns its extents under the pool's mutex,
 * and mproc__map_buf_pool_gone, which runs before the pool unmaps its arena,
 * waits for it.  Lock order: the registry, then a pool's mu. */
#include "map_buf.h"
#include "pool.h"
#include "shm_layout.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A pool's view (under reg_mu). */
struct view {
  struct mproc_pool *p; /* NULL once the pool is freed */
  unsigned char *base;
  size_t refs; /* the pool's, until it is freed, and one per result set */
  struct view *next;
};

/* A result set handed to a caller (under reg_mu). */
struct rset {
  const struct mproc_buf *bufs; /* what the caller frees it by */
  struct view *v;
  size_t npieces;
  struct rset *next;
  struct mproc__mb_piece piece[]; /* the extents it holds in its pool's arena */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct view *views;
static struct rset *rsets;

/* Pool p's view, or NULL (under reg_mu). */
static struct view *view_of(struct mproc_pool *p) {
  struct view *v = views;
  while (v != NULL && v->p != p)
    v = v->next;
  return v;
}

unsigned char *mproc__mb_view(struct mproc_pool *p) {
  pthread_mutex_lock(&reg_mu);
  struct view *v = view_of(p);
  if (v == NULL && (v = malloc(sizeof *v)) != NULL) {
    /* An old size of 0 maps the same shared pages again, elsewhere. */
    void *m = mremap(mproc__arena_at(p, 0), 0, MPROC__ARENA_LEN, MREMAP_MAYMOVE);
    if (m == MAP_FAILED) {
      free(v);
      v = NULL;
    } else {
      *v = (struct view){.p = p, .base = m, .refs = 1, .next = views};
      views = v;
    }
  }
  pthread_mutex_unlock(&reg_mu);
  return v != NULL ? v->base : NULL;
}

/* Drops a reference to v (under reg_mu): the last unmaps it. */
static void view_unref(struct view *v) {
  if (--v->refs > 0)
    return;
  for (struct view **pp = &views; *pp != NULL; pp = &(*pp)->next)
    if (*pp == v) {
      *pp = v->next;
      break;
    }
  munmap(v->base, MPROC__ARENA_LEN);
  free(v);
}

void mproc__map_buf_pool_gone(struct mproc_pool *p) {
  pthread_mutex_lock(&reg_mu);
  struct view *v = view_of(p);
  if (v != NULL) {
    v->p = NULL; /* the sets still held keep the view, not the extents */
    view_unref(v);
  }
  pthread_mutex_unlock(&reg_mu);
}

int mproc__mb_rset_add(struct mproc_pool *p, const struct mproc_buf *bufs,
                       const struct mproc__mb_piece *pieces, size_t n) {
  struct rset *rs = malloc(sizeof *rs + n * sizeof *pieces);
  if (rs == NULL)
    return MPROC_ENOMEM;
  rs->bufs = bufs;
  rs->npieces = n;
  memcpy(rs->piece, pieces, n * sizeof *pieces);
  pthread_mutex_lock(&reg_mu);
  rs->v = view_of(p);
  if (rs->v != NULL) {
    rs->v->refs++;
    rs->next = rsets;
    rsets = rs;
  }
  pthread_mutex_unlock(&reg_mu);
  if (rs->v == NULL) {
    free(rs); /* p has no view: mproc__mb_view was not called or failed */
    return MPROC_EINVAL;
  }
  return 0;
}

/* Finds and unlinks the result set whose entries are bufs (under reg_mu). */
static struct rset *rset_take(const struct mproc_buf *bufs) {
  for (struct rset **pp = &rsets; *pp != NULL; pp = &(*pp)->next) {
    struct rset *rs = *pp;
    if (rs->bufs == bufs) {
      *pp = rs->next;
      return rs;
    }
  }
  return NULL;
}

/* Releases a result set taken from the registry (under reg_mu): its extents
 * go back to the arena while the pool lives. */
static void rset_free(struct rset *rs) {
  struct mproc_pool *p = rs->v->p;
  if (p != NULL) {
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < rs->npieces; i++)
      mproc__arena_free(p, rs->piece[i].off, rs->piece[i].len);
    pthread_mutex_unlock(&p->mu);
  }
  view_unref(rs->v);
  free(rs);
}

/* What precedes the results array: how it was allocated.  Large arrays are
 * mapped with their pages populated in one system call, since a fresh
 * allocation of tens of MiB (above malloc's mmap threshold) would otherwise
 * take one page fault per 4 KiB, a large share of a map of small items; and
 * the last BUFS_KEEP released are kept for the next calls (each up to
 * BUFS_KEEP_MAX; two, for the two arrays of packed results), so a program
 * mapping again and again reuses warm pages instead of having fresh ones
 * zeroed each time, as malloc does with its heap. */
struct bufs_hdr {
  size_t mapped; /* the mapping's length, 0: malloc */
  size_t pad;    /* 16 bytes: the array stays 16-byte aligned */
};
#define BUFS_MAP_MIN ((size_t)4 << 20)
#define BUFS_KEEP_MAX ((size_t)256 << 20)
#define BUFS_KEEP 2

static _Atomic(struct bufs_hdr *) bufs_kept[BUFS_KEEP];

/* A kept mapping that fits len (not too small, not far too big), or NULL. */
static struct bufs_hdr *bufs_reuse(size_t len) {
  for (size_t i = 0; i < BUFS_KEEP; i++) {
    struct bufs_hdr *h = atomic_exchange(&bufs_kept[i], NULL);
    if (h == NULL)
      continue;
    if (h->mapped >= len && h->mapped / 2 <= len)
      return h;
    struct bufs_hdr *none = NULL;
    if (!atomic_compare_exchange_strong(&bufs_kept[i], &none, h))
      munmap(h, h->mapped); /* another was kept meanwhile */
  }
  return NULL;
}

struct mproc_buf *mproc__mb_bufs_alloc(size_t bytes) {
  struct bufs_hdr *h;
  if (bytes > SIZE_MAX / 2)
    return NULL;
  size_t len = sizeof *h + bytes;
  if (len < BUFS_MAP_MIN) {
    h = malloc(len);
    if (h == NULL)
      return NULL;
    h->mapped = 0;
    return (struct mproc_buf *)(h + 1);
  }
  h = bufs_reuse(len);
  if (h == NULL) {
    void *m =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED)
      return NULL;
    h = m;
    h->mapped = len;
  }
  return (struct mproc_buf *)(h + 1);
}

MPROC_EXTERN void mproc_bufs_free(struct mproc_buf *bufs) {
  if (bufs == NULL)
    return;
  pthread_mutex_lock(&reg_mu);
  struct rset *rs = rset_take(bufs);
  if (rs != NULL)
    rset_free(rs);
  pthread_mutex_unlock(&reg_mu);
  if (rs != NULL)
    return;
  struct bufs_hdr *h = (struct bufs_hdr *)((unsigned char *)bufs - sizeof *h);
  if (h->mapped == 0) {
    free(h);
    return;
  }
  for (size_t i = 0; h->mapped <= BUFS_KEEP_MAX && i < BUFS_KEEP; i++) {
    struct bufs_hdr *none = NULL;
    if (atomic_compare_exchange_strong(&bufs_kept[i], &none, h))
      return;
  }
  munmap(h, h->mapped);
}
