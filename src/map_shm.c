/* Zero-copy map over data already in a shared block (mproc_pool_map_shm).
 *
 * Design notes.  mproc_pool_map copies its input into the pool's arena and
 * its output back: for memory-bound element functions those two copies cost
 * more than the work.  Here the caller's arrays already live in a shared
 * block, so the chunks name the block instead: each chunk carries a
 * duplicate of the block's fd (SCM_RIGHTS, a few microseconds, which is why
 * chunks are few and large) and file offsets, and the worker runs the
 * element function on the block's pages in place.  The job itself is
 * map.c's engine with the arena left out (crash containment, per-item
 * blame, progress and cancel are the same code).
 *
 * The range form (mproc_pool_map_shm_range).  With a cheap element
 * function the per-element indirect call costs more than the work (x*x:
 * about 1.4 ns a call against a fraction of that for a vectorised loop), so
 * a range function is called once per chunk, over the chunk's contiguous
 * run (K_MAP_SHM_RANGE), and the items are split statically into one run
 * per worker, as OpenMP's default schedule.  The worker cannot publish
 * progress inside a run: a death blames the run's first item, and a
 * failure the item the function names.
 *
 * The worker's block cache.  Mapping a block and faulting its pages in
 * costs far more than a chunk of x*x, so a worker maps each block once and
 * keeps the mapping, keyed by the block's (dev, ino): a fd received for a
 * block already cached is closed at once.  The key cannot be reused by
 * another block while cached, because the mapping itself keeps the inode
 * alive.  A cached mapping would also keep a closed block's memory (and a
 * named block's keeper) alive, so mproc_shm_free tells every pool of its
 * process that was handed a block, which publishes the block in the shared
 * header
 * (shm_layout.h: forget_seq) and wakes its workers; a worker drops the
 * mappings named there before it next runs or sleeps.  The cache is small
 * (BLOCK_CACHE entries, least recently used goes first): a block pushed out
 * is simply mapped again by its next chunk.
 *
 * States of a cache entry (worker only, no locking: a worker is
 * single-threaded):  empty --first chunk of a block--> mapped
 * --forgotten (closed), evicted, or worker exit--> empty. */
#include "pool.h"
#include "progress.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- parent side -------------------------------------------------------------- */

/* The pools of this process that were handed a block: mproc_shm_free tells
 * them.  A list of its own, not the pools' live list: a block may be freed
 * from a done-callback while another thread holds that list's lock and
 * waits for the callback's pool (exit's join), and this lock is never held
 * across a wait.  Lock order: users_mu, then a pool's mu. */
static pthread_mutex_t users_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mproc_pool *users;
static pid_t users_pid; /* whose list it is: a forked child has none */

static void use_blocks(struct mproc_pool *p) {
  pthread_mutex_lock(&users_mu);
  if (users_pid != getpid()) {
    users = NULL;
    users_pid = getpid();
  }
  if (!p->block_user) {
    p->block_user = true;
    p->block_next = users;
    users = p;
  }
  pthread_mutex_unlock(&users_mu);
}

void mproc__map_shm_pool_gone(struct mproc_pool *p) {
  pthread_mutex_lock(&users_mu);
  for (struct mproc_pool **pp = &users; users_pid == getpid() && *pp != NULL;
       pp = &(*pp)->block_next)
    if (*pp == p) {
      *pp = p->block_next;
      break;
    }
  pthread_mutex_unlock(&users_mu);
}

/* The blocks freed last, for jobs that were running over one (FREED
 * entries, power of two): entry k is freed[k % FREED], written under
 * users_mu before freed_seq moves past k, read without it (a job ends under
 * its pool's mutex, which may not be held while taking users_mu). */
#define FREED 16
static _Atomic uint64_t freed_seq;
static _Atomic uint64_t freed[FREED][2];

void mproc__map_shm_job_end(struct mproc_pool *p, int fd, uint64_t since) {
  struct stat st;
  uint64_t now = atomic_load_explicit(&freed_seq, memory_order_acquire);
  if (now == since || fstat(fd, &st) != 0)
    return;
  /* The job's fd kept the block's inode alive: a freed entry with its
   * identity is this block.  Fallen too far behind: assume it was. */
  bool gone = now - since > FREED;
  for (uint64_t k = gone ? now : since; k < now; k++)
    gone |=
        atomic_load_explicit(&freed[k % FREED][0], memory_order_relaxed) == (uint64_t)st.st_dev &&
        atomic_load_explicit(&freed[k % FREED][1], memory_order_relaxed) == (uint64_t)st.st_ino;
  if (gone || atomic_load(&freed_seq) - since > FREED)
    p->tp->forget_block(p, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
}

static void forget_block(uint64_t dev, uint64_t ino) {
  pthread_mutex_lock(&users_mu);
  uint64_t k = atomic_load_explicit(&freed_seq, memory_order_relaxed);
  atomic_store_explicit(&freed[k % FREED][0], dev, memory_order_relaxed);
  atomic_store_explicit(&freed[k % FREED][1], ino, memory_order_relaxed);
  atomic_store_explicit(&freed_seq, k + 1, memory_order_release);
  for (struct mproc_pool *p = users_pid == getpid() ? users : NULL; p != NULL; p = p->block_next) {
    pthread_mutex_lock(&p->mu);
    if (p->tp_state != NULL)
      p->tp->forget_block(p, dev, ino);
    pthread_mutex_unlock(&p->mu);
  }
  pthread_mutex_unlock(&users_mu);
}

/* Whether [a, a + alen) and [b, b + blen) share a byte. */
static bool overlap(size_t a, size_t alen, size_t b, size_t blen) {
  return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
}

/* Both forms: `kind` says whether fn is an element or a range function. */
static int start(mproc_pool *p, uint32_t kind, void (*fn)(void), mproc_shm *shm, size_t in_off,
                 size_t in_size, size_t out_off, size_t out_size, size_t n,
                 const struct mproc_map_options *o, mproc_future **f) {
  if (p == NULL || fn == NULL || shm == NULL || f == NULL || (n > 0 && in_size == 0) ||
      (o != NULL && (o->flags != 0 || !mproc__progress_valid(o->progress))))
    return MPROC_EINVAL;
  size_t size = mproc_shm_size(shm);
  if (!mproc__block_range_ok(size, in_off, n, in_size) ||
      !mproc__block_range_ok(size, out_off, n, out_size))
    return MPROC_ERANGE;
  /* Items write outputs other chunks may still read as inputs: only the
   * exact in-place layout (out[i] is in[i]) is free of that race. */
  if (overlap(in_off, n * in_size, out_off, n * out_size) &&
      !(in_off == out_off && in_size == out_size))
    return MPROC_EINVAL;
  if (p->tp->forget_block == NULL)
    return MPROC_ENOTSUP;
  use_blocks(p);
  int fd = fcntl(mproc_shm_fd(shm), F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  size_t base = mproc__shm_data_off(shm);
  struct mproc__map_block b = {.fd = fd,
                               .in_off = base + in_off,
                               .out_off = base + out_off,
                               .freed_since = atomic_load(&freed_seq)};
  return mproc__map_block_start(p, kind, fn, n, in_size, out_size, &b, o, f);
}

MPROC_EXTERN int mproc_pool_map_shm_async(mproc_pool *p, mproc_map_fn fn, mproc_shm *shm,
                                          size_t in_off, size_t in_size, size_t out_off,
                                          size_t out_size, size_t n,
                                          const struct mproc_map_options *o, mproc_future **f) {
  return start(p, MPROC__K_MAP_SHM, (void (*)(void))fn, shm, in_off, in_size, out_off, out_size, n,
               o, f);
}

MPROC_EXTERN int mproc_pool_map_shm_range_async(mproc_pool *p, mproc_map_range_fn fn,
                                                mproc_shm *shm, size_t in_off, size_t in_size,
                                                size_t out_off, size_t out_size, size_t n,
                                                const struct mproc_map_options *o,
                                                mproc_future **f) {
  /* Static partitioning, one run per worker, as OpenMP's default schedule:
   * a run costs one call and one descriptor hand-off whatever its length,
   * so for the cheap, even work a range function does, more runs would
   * only add dispatch. */
  struct mproc_map_options one = {0};
  if (o != NULL)
    one = *o;
  if (one.chunksize == 0 && p != NULL && p->nworkers > 0)
    one.chunksize = n / (size_t)p->nworkers + (n % (size_t)p->nworkers != 0);
  return start(p, MPROC__K_MAP_SHM_RANGE, (void (*)(void))fn, shm, in_off, in_size, out_off,
               out_size, n, &one, f);
}

MPROC_EXTERN int mproc_pool_map_shm(mproc_pool *p, mproc_map_fn fn, mproc_shm *shm, size_t in_off,
                                    size_t in_size, size_t out_off, size_t out_size, size_t n,
                                    const struct mproc_map_options *o, struct mproc_task_error *err,
                                    int64_t timeout_ms) {
  if (mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  mproc_future *f;
  int r = mproc_pool_map_shm_async(p, fn, shm, in_off, in_size, out_off, out_size, n, o, &f);
  return r != 0 ? r : mproc__map_wait(f, n, o, err, timeout_ms);
}

MPROC_EXTERN int mproc_pool_map_shm_range(mproc_pool *p, mproc_map_range_fn fn, mproc_shm *shm,
                                          size_t in_off, size_t in_size, size_t out_off,
                                          size_t out_size, size_t n,
                                          const struct mproc_map_options *o,
                                          struct mproc_task_error *err, int64_t timeout_ms) {
  if (mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  mproc_future *f;
  int r = mproc_pool_map_shm_range_async(p, fn, shm, in_off, in_size, out_off, out_size, n, o, &f);
  return r != 0 ? r : mproc__map_wait(f, n, o, err, timeout_ms);
}

void mproc__map_shm_forget(int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0)
    forget_block((uint64_t)st.st_dev, (uint64_t)st.st_ino);
}

/* ---- worker side: the block cache -------------------------------------------- */

#define BLOCK_CACHE 8

struct cached_block {
  uint64_t dev, ino;  /* the block's identity */
  unsigned char *map; /* its whole file, NULL: empty entry */
  size_t len;
  uint64_t used; /* last use (tick), for eviction */
};

static struct cached_block cache[BLOCK_CACHE];
static uint64_t tick;

static void drop(struct cached_block *c) {
  if (c->map != NULL)
    munmap(c->map, c->len);
  memset(c, 0, sizeof *c);
}

int mproc__block_cache_map(int fd, unsigned char **base, size_t *len) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int r = mproc__neg_errno();
    mproc__close(fd);
    return r;
  }
  struct cached_block *victim = &cache[0];
  for (size_t i = 0; i < BLOCK_CACHE; i++) {
    struct cached_block *c = &cache[i];
    if (c->map != NULL && c->dev == (uint64_t)st.st_dev && c->ino == (uint64_t)st.st_ino &&
        c->len == (size_t)st.st_size) {
      mproc__close(fd);
      c->used = ++tick;
      *base = c->map;
      *len = c->len;
      return 0;
    }
    if (victim->map != NULL && (c->map == NULL || c->used < victim->used))
      victim = c;
  }
  if (st.st_size <= 0) {
    mproc__close(fd);
    return -EINVAL;
  }
  drop(victim);
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int r = m == MAP_FAILED ? mproc__neg_errno() : 0;
  /* The mapping holds the block from now on; the fd would only pin a named
   * block's lock. */
  mproc__close(fd);
  if (r != 0)
    return r;
  *victim = (struct cached_block){.dev = (uint64_t)st.st_dev,
                                  .ino = (uint64_t)st.st_ino,
                                  .map = m,
                                  .len = (size_t)st.st_size,
                                  .used = ++tick};
  *base = m;
  *len = victim->len;
  return 0;
}

void mproc__block_cache_forget(uint64_t dev, uint64_t ino) {
  for (size_t i = 0; i < BLOCK_CACHE; i++)
    if (cache[i].map != NULL && cache[i].dev == dev && cache[i].ino == ino)
      drop(&cache[i]);
}

void mproc__block_cache_clear(void) {
  for (size_t i = 0; i < BLOCK_CACHE; i++)
    drop(&cache[i]);
}
