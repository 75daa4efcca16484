/* Queues: a bounded MPMC ring of variable-size messages in shared memory
 * (Python's Queue, SimpleQueue; JoinableQueue's counting is in joinable.c,
 * participants and crash recovery in queue_part.c).
 *
 * Design notes.
 *
 * Memory.  One shared object (a memfd, or a /dev/shm object for a named
 * queue): a header with two robust process-shared mutexes and the
 * participant table, then a ring of `cap` bytes (a power of two).  The ring is mapped
 * twice, back to back, so every record is contiguous in virtual memory even
 * when it wraps: no padding records, and a record may use the whole ring.
 * Positions (head, tail, release) are 64-bit byte counts since creation; the
 * ring offset is pos & (cap - 1).  Nothing in shared memory is a pointer.
 *
 * Two locks (the two-lock queue of Michael and Scott).  Producers take
 * plock to reserve at tail; consumers take clock to take at head and to
 * release space.  Each side reads the other's words (release and nget for
 * producers, tail for consumers) with acquire loads and writes its own with
 * release stores, so one producer and one consumer never wait for each
 * other's lock, and each lock's cache line stays with its side.  The rare
 * operations that touch both sides (attach, detach, sweep, task_done, free)
 * take plock then clock, always in that order.
 *
 * Records.  [release, head) are being copied out or done; [head, tail) are
 * queued.  A record's state walks
 *     RESERVED -> COMMITTED -> CLAIMED -> DONE      (or -> DEAD)
 * A message of at most 1 KiB is copied in and out while holding the side's
 * lock: it goes straight to COMMITTED on put and to DONE on get, so a small
 * message costs one lock round trip per side.  A larger one is RESERVED
 * under plock, copied outside it, then COMMITTED with a release store (no
 * lock); a consumer likewise CLAIMs it under clock, copies it out, and
 * takes clock again only to mark it DONE and release space.  The number
 * queued is nput - nget: nput grows before tail moves and nget after head
 * moves, so it is never negative.  Consumers
 * take records in ring order; a RESERVED record at the head makes them wait
 * for its producer (FIFO, as Python's Queue).  A message larger than half
 * the ring is written to a /dev/shm object of its own ("spill") and only its
 * name travels in the ring: it cannot fill the ring, so it never waits for
 * space it could never get.
 *
 * Crash safety.  Every critical section ends with the store that publishes
 * it (tail for put, head for get); a process that dies inside one leaves
 * the robust mutex to the next locker with EOWNERDEAD, and the records are
 * consistent as they are: a partially written record past tail is simply
 * not there; a record being copied out under clock is still at head and
 * goes to the next consumer.  Only the counters stored next to the
 * publishing store (nput/nget, puts/gets, unfinished) may be off by one.  A process that dies while
 * copying outside the lock leaves a RESERVED or CLAIMED record owned by its participant index; the
 * liveness sweep (queue_part.c) turns it DEAD: it is skipped and counted in the lost statistics,
 * never delivered partially.
 *
 * Wake-ups.  Sleepers count themselves in nget_wait/nput_wait, then re-check,
 * then sleep on get_seq/put_seq (futex), and uncount themselves as soon as
 * they wake.  The other side bumps the word and wakes only when the count is
 * nonzero, so a busy queue makes no system call besides the lock's.  Before
 * sleeping a waiter spins briefly, only when attached processes do not
 * outnumber the CPUs.  Sleeps are capped at
 * MPROC__Q_SWEEP_MS so a blocked waiter re-checks participants' liveness. */
#include "queue.h"
#include "futex.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CAP ((size_t)4 << 20)
#define MAX_CAP ((size_t)1 << 30)
#define DEFAULT_PARTS 256u
#define MAX_PARTS 65536u
#define LOCKED_COPY_MAX 1024
/* Attempts at the lock before sleeping on it. */
#define LOCK_SPINS 100
/* How long a waiter may spin before sleeping. */
#define SPIN_NS 20000

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static inline void bump(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static inline struct mproc__qrec *rec_at(const struct mproc_queue *q, uint64_t pos) {
  return (struct mproc__qrec *)(q->ring + (pos & (q->h->cap - 1)));
}

uint64_t mproc__q_rec_size(uint32_t kind, uint64_t len) {
  uint64_t body = kind == MPROC__QK_SPILL ? MPROC__Q_NAME_MAX : len;
  return (sizeof(struct mproc__qrec) + body + 7) & ~(uint64_t)7;
}

/* ---- lock and repair ---------------------------------------------------- */

int mproc__q_lock1(struct mproc_queue *q, pthread_mutex_t *m) {
  /* Critical sections are a few dozen nanoseconds, while a contended robust
   * mutex sleeps in the kernel at once: try a little before sleeping. */
  int r = pthread_mutex_trylock(m);
  for (int i = 0; r == EBUSY && i < LOCK_SPINS; i++) {
    cpu_relax();
    r = pthread_mutex_trylock(m);
  }
  if (r == EBUSY)
    r = pthread_mutex_lock(m);
  if (MPROC__LIKELY(r == 0))
    return 0;
  if (r == EOWNERDEAD) {
    /* Every critical section ends with its publishing store (tail, head),
     * so the records are consistent whatever instruction the owner died
     * at; only the counters next to that store may be off by one. */
    pthread_mutex_consistent(m);
    atomic_fetch_add(&q->h->repairs, 1);
    return 0;
  }
  return MPROC_EBROKEN;
}

int mproc__q_lock(struct mproc_queue *q) {
  int err = mproc__q_lock1(q, &q->h->plock);
  if (err != 0)
    return err;
  err = mproc__q_lock1(q, &q->h->clock);
  if (err != 0)
    pthread_mutex_unlock(&q->h->plock);
  return err;
}

void mproc__q_unlock(struct mproc_queue *q) {
  pthread_mutex_unlock(&q->h->clock);
  pthread_mutex_unlock(&q->h->plock);
}

void mproc__q_wake(_Atomic uint32_t *seq, _Atomic uint32_t *nwait) {
  /* Pairs with the sleeper's increment of nwait before its re-check. */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(nwait, memory_order_relaxed) == 0)
    return;
  atomic_fetch_add(seq, 1);
  mproc__futex_wake(seq, INT_MAX, true);
}

void mproc__q_advance_release(struct mproc_queue *q) {
  struct mproc__qhdr *h = q->h;
  uint64_t rel = atomic_load_explicit(&h->release, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
  while (rel < head) {
    struct mproc__qrec *r = rec_at(q, rel);
    uint32_t st = atomic_load_explicit(&r->state, memory_order_acquire);
    if (st != MPROC__QR_DONE && st != MPROC__QR_DEAD)
      break;
    rel += mproc__q_rec_size(r->kind, r->len);
  }
  atomic_store_explicit(&h->release, rel, memory_order_release);
}

/* ---- spill objects ------------------------------------------------------ */

static int spill_write(const char *name, const void *buf, size_t len) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return mproc__neg_errno();
  mproc__fd_register(fd);
  void *p = MAP_FAILED;
  int err = 0;
  if (ftruncate(fd, (off_t)len) != 0)
    err = mproc__neg_errno();
  else if ((p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
    err = mproc__neg_errno();
  mproc__close(fd);
  if (err == 0) {
    memcpy(p, buf, len);
    munmap(p, len);
  } else {
    shm_unlink(name);
  }
  return err;
}

static int spill_read(const char *name, void *dst, size_t len) {
  int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0)
    return mproc__neg_errno();
  mproc__fd_register(fd);
  void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  int err = p == MAP_FAILED ? mproc__neg_errno() : 0;
  mproc__close(fd);
  if (err == 0) {
    memcpy(dst, p, len);
    munmap(p, len);
  }
  shm_unlink(name);
  return err;
}

void mproc__q_drop_record(struct mproc_queue *q, struct mproc__qrec *r) {
  (void)q;
  if (r->kind == MPROC__QK_SPILL)
    shm_unlink((const char *)(r + 1));
}

/* ---- create, open, free ------------------------------------------------- */

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static size_t header_size(unsigned max_parts) {
  size_t ps = page_size();
  size_t n = sizeof(struct mproc__qhdr) + (size_t)max_parts * sizeof(struct mproc__qpart);
  return (n + ps - 1) / ps * ps;
}

/* Maps header + ring, and the ring a second time right after itself. */
static int map_queue(int fd, size_t hdr, size_t cap, struct mproc_queue *q) {
  size_t total = hdr + 2 * cap;
  char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return mproc__neg_errno();
  int prot = PROT_READ | PROT_WRITE;
  if (mmap(base, hdr + cap, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
      mmap(base + hdr + cap, cap, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)hdr) == MAP_FAILED) {
    int err = mproc__neg_errno();
    munmap(base, total);
    return err;
  }
  q->h = (struct mproc__qhdr *)base;
  q->ring = base + hdr;
  q->map_len = total;
  return 0;
}

static int init_header(struct mproc__qhdr *h, size_t cap, size_t hdr, size_t maxsize,
                       unsigned flags, unsigned max_parts) {
  h->version = MPROC__Q_VERSION;
  h->cap = cap;
  h->hdr_size = hdr;
  h->maxsize = maxsize;
  h->flags = flags;
  h->max_parts = max_parts;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  int r = pthread_mutex_init(&h->plock, &a);
  if (r == 0)
    r = pthread_mutex_init(&h->clock, &a);
  pthread_mutexattr_destroy(&a);
  if (r != 0)
    return -r;
  atomic_store_explicit(&h->magic, MPROC__Q_MAGIC, memory_order_release);
  return 0;
}

static bool valid_name(const char *name) {
  size_t n = strnlen(name, 201);
  return name[0] == '/' && n >= 2 && n <= 200 && strchr(name + 1, '/') == NULL;
}

static int finish_handle(struct mproc_queue *q, unsigned roles) {
  q->part = -1;
  int r = mproc__q_attach(q, roles, false);
  if (r < 0)
    return r;
  q->part = r;
  q->roles = roles;
  mproc__q_track(q);
  return 0;
}

MPROC_EXTERN int mproc_queue_new(mproc_queue **out, const struct mproc_queue_options *opts) {
  static const struct mproc_queue_options defaults = {0};
  const struct mproc_queue_options *o = opts != NULL ? opts : &defaults;
  unsigned roles = o->roles != 0 ? o->roles : MPROC_QUEUE_BOTH;
  unsigned max_parts = o->max_participants != 0 ? o->max_participants : DEFAULT_PARTS;
  if (out == NULL || (o->flags & ~(unsigned)MPROC_QUEUE_JOINABLE) ||
      (roles & ~(unsigned)MPROC_QUEUE_BOTH) || o->capacity > MAX_CAP || max_parts > MAX_PARTS ||
      (o->name != NULL && !valid_name(o->name)))
    return MPROC_EINVAL;
  size_t cap = page_size();
  while (cap < (o->capacity != 0 ? o->capacity : DEFAULT_CAP))
    cap *= 2;
  size_t hdr = header_size(max_parts);
  struct mproc_queue *q = calloc(1, sizeof *q);
  if (q == NULL)
    return -ENOMEM;
  int fd = -1, err;
  if (o->name == NULL) {
    err = mproc__memfd_create("mproc-queue", hdr + cap, &fd);
  } else {
    fd = shm_open(o->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    err = fd < 0 ? mproc__neg_errno() : 0;
    if (err == 0) {
      mproc__fd_register(fd);
      snprintf(q->name, sizeof q->name, "%s", o->name);
      if (ftruncate(fd, (off_t)(hdr + cap)) != 0)
        err = mproc__neg_errno();
    }
  }
  if (err == 0)
    err = map_queue(fd, hdr, cap, q);
  mproc__close(fd);
  if (err == 0) {
    err = init_header(q->h, cap, hdr, o->maxsize, o->flags, max_parts);
    if (err == 0)
      err = finish_handle(q, roles);
    if (err != 0)
      munmap(q->h, q->map_len);
  }
  if (err != 0) {
    if (q->name[0] != '\0')
      shm_unlink(q->name);
    free(q);
    return err;
  }
  *out = q;
  return 0;
}

MPROC_EXTERN int mproc_queue_open(mproc_queue **out, const char *name, unsigned roles) {
  if (roles == 0)
    roles = MPROC_QUEUE_BOTH;
  if (out == NULL || name == NULL || !valid_name(name) || (roles & ~(unsigned)MPROC_QUEUE_BOTH))
    return MPROC_EINVAL;
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return mproc__neg_errno();
  mproc__fd_register(fd);
  struct stat st;
  struct mproc_queue *q = NULL;
  int err = fstat(fd, &st) != 0 ? mproc__neg_errno() : 0;
  if (err == 0 && (size_t)st.st_size < sizeof(struct mproc__qhdr))
    err = MPROC_EAGAIN; /* created, not yet sized */
  struct mproc__qhdr *peek = MAP_FAILED;
  if (err == 0) {
    peek = mmap(NULL, sizeof *peek, PROT_READ, MAP_SHARED, fd, 0);
    if (peek == MAP_FAILED)
      err = mproc__neg_errno();
  }
  size_t cap = 0, hdr = 0;
  if (err == 0) {
    uint32_t magic = atomic_load_explicit(&peek->magic, memory_order_acquire);
    if (magic == 0)
      err = MPROC_EAGAIN;
    else if (magic != MPROC__Q_MAGIC || peek->version != MPROC__Q_VERSION)
      err = MPROC_ECORRUPT;
    cap = peek->cap;
    hdr = peek->hdr_size;
    if (err == 0 && (cap == 0 || (cap & (cap - 1)) || hdr + cap != (size_t)st.st_size))
      err = MPROC_ECORRUPT;
    munmap(peek, sizeof *peek);
  }
  if (err == 0 && (q = calloc(1, sizeof *q)) == NULL)
    err = -ENOMEM;
  if (err == 0)
    err = map_queue(fd, hdr, cap, q);
  mproc__close(fd);
  if (err == 0) {
    err = finish_handle(q, roles);
    if (err != 0)
      munmap(q->h, q->map_len);
  }
  if (err != 0) {
    free(q);
    return err;
  }
  *out = q;
  return 0;
}

MPROC_EXTERN int mproc_queue_unlink(const char *name) {
  if (name == NULL || !valid_name(name))
    return MPROC_EINVAL;
  return shm_unlink(name) == 0 ? 0 : mproc__neg_errno();
}

MPROC_EXTERN int mproc_queue_free(mproc_queue *q) {
  if (q == NULL)
    return 0;
  mproc__q_untrack(q);
  struct mproc__qhdr *h = q->h;
  /* Reclaim the dead first: whoever leaves last cleans up for everyone. */
  mproc__q_sweep(q);
  if (mproc__q_lock(q) == 0) {
    if (q->part >= 0)
      mproc__q_drop_roles(q, MPROC_QUEUE_BOTH);
    if (atomic_load(&h->nparts) == 0) {
      /* Nobody will take what is left: remove its spill objects. */
      uint64_t pos = atomic_load(&h->release), tail = atomic_load(&h->tail);
      while (pos < tail) {
        struct mproc__qrec *r = rec_at(q, pos);
        uint32_t st = atomic_load(&r->state);
        if (st != MPROC__QR_DONE && st != MPROC__QR_DEAD)
          mproc__q_drop_record(q, r);
        pos += mproc__q_rec_size(r->kind, r->len);
      }
    }
    mproc__q_unlock(q);
  }
  int err = 0;
  if (q->name[0] != '\0' && shm_unlink(q->name) != 0 && errno != ENOENT)
    err = mproc__neg_errno();
  munmap(h, q->map_len);
  free(q);
  return err;
}

/* ---- waiting ------------------------------------------------------------ */

/* Sleeps until *seq moves past `seen`, the deadline, or the sweep period.
 * Returns 0 to retry, MPROC_ETIMEDOUT, or -errno. */
static int sleep_on(struct mproc_queue *q, _Atomic uint32_t *seq, uint32_t seen, int64_t deadline) {
  if (mproc__q_maybe_sweep(q))
    return 0;
  int64_t wake = mproc_now_ms() + MPROC__Q_SWEEP_MS;
  if (deadline >= 0 && deadline < wake)
    wake = deadline;
  int r = mproc__futex_wait(seq, seen, wake, true);
  if (r == MPROC_ETIMEDOUT)
    return deadline >= 0 && mproc_timeout_until(deadline) == 0 ? MPROC_ETIMEDOUT : 0;
  return r;
}

/* Spins a little while `*word` keeps its value, if CPUs outnumber the
 * attached processes (spinning on a busy machine only steals time from the
 * process we are waiting for). */
static void spin_on(struct mproc_queue *q, _Atomic uint64_t *word) {
  static _Atomic long ncpu_cache; /* threads may race to fill it: same value */
  long ncpu = atomic_load_explicit(&ncpu_cache, memory_order_relaxed);
  if (ncpu == 0)
    atomic_store_explicit(&ncpu_cache, ncpu = sysconf(_SC_NPROCESSORS_ONLN), memory_order_relaxed);
  if (ncpu < (long)atomic_load_explicit(&q->h->nparts, memory_order_relaxed))
    return;
  uint64_t v = atomic_load_explicit(word, memory_order_relaxed);
  int64_t t0 = now_ns();
  do {
    for (int k = 0; k < 16; k++)
      cpu_relax();
    if (atomic_load_explicit(word, memory_order_relaxed) != v)
      return;
  } while (now_ns() - t0 < SPIN_NS);
}

/* ---- put ---------------------------------------------------------------- */

/* Under the lock: reserves (and for small messages fills and commits) a
 * record.  Returns 0, MPROC_EFULL or MPROC_ECLOSED; *rec is set to the
 * record still to be filled, or NULL if it is complete. */
static int try_put(struct mproc_queue *q, const void *buf, size_t len, uint32_t kind,
                   struct mproc__qrec **rec) {
  struct mproc__qhdr *h = q->h;
  uint64_t size = mproc__q_rec_size(kind, len);
  uint64_t tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
  /* Acquire: consumers are done with the bytes below release. */
  uint64_t rel = atomic_load_explicit(&h->release, memory_order_acquire);
  uint64_t nput = atomic_load_explicit(&h->nput, memory_order_relaxed);
  uint64_t count = nput - atomic_load_explicit(&h->nget, memory_order_acquire);
  if (atomic_load_explicit(&h->nconsumers, memory_order_relaxed) == 0 &&
      (atomic_load_explicit(&h->ever_roles, memory_order_relaxed) & MPROC_QUEUE_CONSUMER))
    return MPROC_ECLOSED; /* consumers came and all left */
  if ((h->maxsize != 0 && count >= h->maxsize) || h->cap - (tail - rel) < size)
    return MPROC_EFULL;
  struct mproc__qrec *r = rec_at(q, tail);
  r->owner = (uint32_t)q->part;
  r->len = len;
  r->kind = kind;
  r->pad = 0;
  bool now = kind == MPROC__QK_INLINE && len <= LOCKED_COPY_MAX;
  if (now && len > 0)
    memcpy(r + 1, buf, len);
  if (kind == MPROC__QK_SPILL) {
    char name[MPROC__Q_NAME_MAX];
    if (mproc__shm_make_name(name, sizeof name, "qspill") != 0)
      return MPROC_ENAMETOOLONG;
    memcpy(r + 1, name, sizeof name);
  }
  atomic_store_explicit(&r->state, now ? MPROC__QR_COMMITTED : MPROC__QR_RESERVED,
                        memory_order_relaxed);
  /* Counted before it is visible, so a consumer's nget never passes nput. */
  atomic_store_explicit(&h->nput, nput + 1, memory_order_relaxed);
  /* The publishing store: a death before it leaves no record. */
  atomic_store_explicit(&h->tail, tail + size, memory_order_release);
  /* After it: a consumer's task_done needs plock, so it cannot get here
   * first; a death in between leaves the count one low, never a hang. */
  bump(&h->puts);
  if (h->flags & MPROC_QUEUE_JOINABLE)
    bump(&h->unfinished);
  *rec = now ? NULL : r;
  return 0;
}

/* Outside the lock: copies a reserved record's payload and commits it. */
static int fill_record(struct mproc_queue *q, struct mproc__qrec *r, const void *buf, size_t len) {
  int err = 0;
  if (r->kind == MPROC__QK_SPILL) {
    err = spill_write((const char *)(r + 1), buf, len);
    if (err == 0)
      atomic_fetch_add_explicit(&q->h->spilled, 1, memory_order_relaxed);
  } else {
    memcpy(r + 1, buf, len);
  }
  if (err == 0) {
    atomic_store_explicit(&r->state, MPROC__QR_COMMITTED, memory_order_release);
    return 0;
  }
  /* Could not write it: withdraw the record (consumers skip it). */
  if (mproc__q_lock(q) == 0) {
    atomic_store_explicit(&r->state, MPROC__QR_DEAD, memory_order_release);
    atomic_fetch_sub_explicit(&q->h->puts, 1, memory_order_relaxed);
    if (q->h->flags & MPROC_QUEUE_JOINABLE)
      atomic_fetch_sub_explicit(&q->h->unfinished, 1, memory_order_relaxed);
    mproc__q_unlock(q);
  }
  return err;
}

static int put_impl(struct mproc_queue *q, const void *buf, size_t len, int64_t timeout_ms,
                    bool nowait) {
  if (q == NULL || (buf == NULL && len > 0) || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (!(q->roles & MPROC_QUEUE_PRODUCER))
    return MPROC_ECLOSED;
  if (q->part < 0)
    return MPROC_EBROKEN;
  struct mproc__qhdr *h = q->h;
  uint32_t kind =
      len > h->cap / 2 - sizeof(struct mproc__qrec) ? MPROC__QK_SPILL : MPROC__QK_INLINE;
  int64_t deadline = mproc__deadline(timeout_ms);
  bool waiting = false, spun = false;
  uint32_t seen = 0;
  int err;
  for (;;) {
    struct mproc__qrec *r = NULL;
    err = mproc__q_lock1(q, &h->plock);
    if (err != 0)
      break;
    err = try_put(q, buf, len, kind, &r);
    pthread_mutex_unlock(&h->plock);
    if (err == 0) {
      if (r != NULL)
        err = fill_record(q, r, buf, len);
      mproc__q_wake(&h->get_seq, &h->nget_wait);
      break;
    }
    if (err != MPROC_EFULL || nowait)
      break;
    if (deadline >= 0 && mproc_timeout_until(deadline) == 0) {
      err = MPROC_ETIMEDOUT;
      break;
    }
    if (!spun) {
      spun = true;
      spin_on(q, &h->release);
      continue;
    }
    if (!waiting) {
      waiting = true;
      atomic_fetch_add(&h->nput_wait, 1);
      seen = atomic_load(&h->put_seq);
      continue; /* re-check after announcing ourselves */
    }
    err = sleep_on(q, &h->put_seq, seen, deadline);
    /* Uncount at once: while we retry, puts need not wake us. */
    atomic_fetch_sub(&h->nput_wait, 1);
    waiting = false;
    spun = false;
    if (err != 0)
      break;
  }
  if (waiting)
    atomic_fetch_sub(&h->nput_wait, 1);
  return err;
}

MPROC_EXTERN int mproc_queue_put(mproc_queue *q, const void *buf, size_t len, int64_t timeout_ms) {
  return put_impl(q, buf, len, timeout_ms, false);
}

MPROC_EXTERN int mproc_queue_put_nowait(mproc_queue *q, const void *buf, size_t len) {
  return put_impl(q, buf, len, 0, true);
}

/* ---- get ---------------------------------------------------------------- */

struct getbuf {
  void *buf;  /* destination */
  size_t cap; /* its size */
  bool alloc; /* grow buf with realloc instead of failing with ETOOSMALL */
};

/* Under the lock: takes the head record.  Returns 0 (copied, *rec NULL; or
 * claimed, *rec to copy out), MPROC_EEMPTY (nothing, or the head is still
 * being written), MPROC_ECLOSED, MPROC_ETOOSMALL (*len set). */
static int try_get(struct mproc_queue *q, struct getbuf *g, size_t *len, struct mproc__qrec **rec) {
  struct mproc__qhdr *h = q->h;
  uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
  struct mproc__qrec *r;
  uint32_t st;
  /* Skip records whose producer died (or whose consumer died under the
   * lock after finishing with them). */
  while (head < tail && ((st = atomic_load_explicit(&(r = rec_at(q, head))->state,
                                                    memory_order_acquire)) == MPROC__QR_DEAD ||
                         st == MPROC__QR_DONE)) {
    head += mproc__q_rec_size(r->kind, r->len);
    atomic_store_explicit(&h->head, head, memory_order_release);
    bump(&h->nget);
    mproc__q_advance_release(q);
  }
  if (head == tail) {
    /* Producers detach after their last publish: read the count first,
     * then look at tail again. */
    bool gone =
        atomic_load(&h->nproducers) == 0 && (atomic_load(&h->ever_roles) & MPROC_QUEUE_PRODUCER);
    if (atomic_load_explicit(&h->tail, memory_order_acquire) == head)
      return gone ? MPROC_ECLOSED : MPROC_EEMPTY; /* producers came and all left */
    return MPROC_EAGAIN;                          /* something just arrived: retry */
  }
  r = rec_at(q, head);
  if (atomic_load_explicit(&r->state, memory_order_acquire) != MPROC__QR_COMMITTED)
    return MPROC_EEMPTY; /* its producer is still copying it in */
  *len = (size_t)r->len;
  if (r->len > g->cap)
    return MPROC_ETOOSMALL;
  bool now = r->kind == MPROC__QK_INLINE && r->len <= LOCKED_COPY_MAX;
  if (now) {
    if (r->len > 0)
      memcpy(g->buf, r + 1, (size_t)r->len);
    atomic_store_explicit(&r->state, MPROC__QR_DONE, memory_order_relaxed);
  } else {
    r->owner = (uint32_t)q->part;
    atomic_store_explicit(&r->state, MPROC__QR_CLAIMED, memory_order_relaxed);
  }
  /* The publishing store; the counters follow it (a death in between
   * leaves them one low: nget never passes nput). */
  atomic_store_explicit(&h->head, head + mproc__q_rec_size(r->kind, r->len), memory_order_release);
  bump(&h->nget);
  bump(&h->gets);
  if (h->flags & MPROC_QUEUE_JOINABLE)
    h->parts[q->part].outstanding++;
  if (now)
    mproc__q_advance_release(q);
  *rec = now ? NULL : r;
  return 0;
}

/* Outside the lock: copies a claimed record out, then marks it done. */
static int drain_record(struct mproc_queue *q, struct mproc__qrec *r, void *dst) {
  int err = 0;
  if (r->kind == MPROC__QK_SPILL)
    err = spill_read((const char *)(r + 1), dst, (size_t)r->len);
  else
    memcpy(dst, r + 1, (size_t)r->len);
  int e2 = mproc__q_lock1(q, &q->h->clock);
  if (e2 == 0) {
    atomic_store_explicit(&r->state, MPROC__QR_DONE, memory_order_release);
    mproc__q_advance_release(q);
    pthread_mutex_unlock(&q->h->clock);
  }
  return err != 0 ? err : e2;
}

static int get_impl(struct mproc_queue *q, struct getbuf *g, size_t *len, int64_t timeout_ms,
                    bool nowait) {
  if (q == NULL || len == NULL || (g->buf == NULL && g->cap > 0 && !g->alloc) ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (!(q->roles & MPROC_QUEUE_CONSUMER))
    return MPROC_ECLOSED;
  if (q->part < 0)
    return MPROC_EBROKEN;
  struct mproc__qhdr *h = q->h;
  int64_t deadline = mproc__deadline(timeout_ms);
  bool waiting = false, spun = false;
  uint32_t seen = 0;
  int err;
  for (;;) {
    struct mproc__qrec *r = NULL;
    size_t need = 0;
    err = mproc__q_lock1(q, &h->clock);
    if (err != 0)
      break;
    err = try_get(q, g, &need, &r);
    pthread_mutex_unlock(&h->clock);
    if (err == MPROC_EAGAIN)
      continue;
    if (err == 0) {
      if (r != NULL)
        err = drain_record(q, r, g->buf);
      if (err == 0)
        *len = need;
      mproc__q_wake(&h->put_seq, &h->nput_wait);
      break;
    }
    if (err == MPROC_ETOOSMALL && g->alloc) {
      void *n = realloc(g->buf, need);
      if (n == NULL) {
        err = -ENOMEM;
        break;
      }
      g->buf = n;
      g->cap = need;
      continue;
    }
    if (err == MPROC_ETOOSMALL)
      *len = need;
    if (err != MPROC_EEMPTY)
      break;
    if (nowait)
      break;
    if (deadline >= 0 && mproc_timeout_until(deadline) == 0) {
      err = MPROC_ETIMEDOUT;
      break;
    }
    if (!spun) {
      spun = true;
      spin_on(q, &h->tail);
      continue;
    }
    if (!waiting) {
      waiting = true;
      atomic_fetch_add(&h->nget_wait, 1);
      seen = atomic_load(&h->get_seq);
      continue;
    }
    err = sleep_on(q, &h->get_seq, seen, deadline);
    /* Uncount at once: while we retry, puts need not wake us. */
    atomic_fetch_sub(&h->nget_wait, 1);
    waiting = false;
    spun = false;
    if (err != 0)
      break;
  }
  if (waiting)
    atomic_fetch_sub(&h->nget_wait, 1);
  return err;
}

MPROC_EXTERN int mproc_queue_get(mproc_queue *q, void *buf, size_t cap, size_t *len,
                                 int64_t timeout_ms) {
  struct getbuf g = {buf, cap, false};
  return get_impl(q, &g, len, timeout_ms, false);
}

MPROC_EXTERN int mproc_queue_get_nowait(mproc_queue *q, void *buf, size_t cap, size_t *len) {
  struct getbuf g = {buf, cap, false};
  return get_impl(q, &g, len, 0, true);
}

MPROC_EXTERN int mproc_queue_get_alloc(mproc_queue *q, void **buf, size_t *len,
                                       int64_t timeout_ms) {
  if (buf == NULL)
    return MPROC_EINVAL;
  *buf = NULL;
  struct getbuf g = {malloc(64), 64, true};
  if (g.buf == NULL)
    return -ENOMEM;
  int err = get_impl(q, &g, len, timeout_ms, false);
  if (err != 0) {
    free(g.buf);
    return err;
  }
  *buf = g.buf;
  return 0;
}

/* ---- queries ------------------------------------------------------------ */

/* Messages queued: nget is read first and never passes nput. */
static uint64_t queued(struct mproc__qhdr *h) {
  uint64_t got = atomic_load_explicit(&h->nget, memory_order_acquire);
  return atomic_load_explicit(&h->nput, memory_order_acquire) - got;
}

MPROC_EXTERN int mproc_queue_qsize(mproc_queue *q) {
  if (q == NULL)
    return MPROC_EINVAL;
  uint64_t n = queued(q->h);
  return n > INT_MAX ? INT_MAX : (int)n;
}

MPROC_EXTERN int mproc_queue_empty(mproc_queue *q) {
  if (q == NULL)
    return MPROC_EINVAL;
  return queued(q->h) == 0;
}

MPROC_EXTERN int mproc_queue_full(mproc_queue *q) {
  if (q == NULL)
    return MPROC_EINVAL;
  struct mproc__qhdr *h = q->h;
  uint64_t count = queued(h);
  uint64_t used = atomic_load_explicit(&h->tail, memory_order_relaxed) -
                  atomic_load_explicit(&h->release, memory_order_relaxed);
  return (h->maxsize != 0 && count >= h->maxsize) ||
         h->cap - used < mproc__q_rec_size(MPROC__QK_INLINE, 0);
}

MPROC_EXTERN int mproc_queue_stats(mproc_queue *q, struct mproc_queue_stats *st) {
  if (q == NULL || st == NULL)
    return MPROC_EINVAL;
  struct mproc__qhdr *h = q->h;
  *st = (struct mproc_queue_stats){
      .puts = atomic_load(&h->puts),
      .gets = atomic_load(&h->gets),
      .spilled = atomic_load(&h->spilled),
      .lost = atomic_load(&h->lost),
      .lost_bytes = atomic_load(&h->lost_bytes),
      .repairs = atomic_load(&h->repairs),
      .producers = atomic_load(&h->nproducers),
      .consumers = atomic_load(&h->nconsumers),
      .unfinished = atomic_load(&h->unfinished),
  };
  return 0;
}

MPROC_EXTERN int mproc_queue_close(mproc_queue *q) {
  return mproc_queue_detach(q, MPROC_QUEUE_PRODUCER);
}

MPROC_EXTERN int mproc_queue_detach(mproc_queue *q, unsigned roles) {
  if (q == NULL || (roles & ~(unsigned)MPROC_QUEUE_BOTH))
    return MPROC_EINVAL;
  if (q->part < 0)
    return q->roles == 0 ? 0 : MPROC_EBROKEN;
  int err = mproc__q_lock(q);
  if (err != 0)
    return err;
  mproc__q_drop_roles(q, roles);
  mproc__q_unlock(q);
  /* Blocked peers may now have to report MPROC_ECLOSED. */
  mproc__q_wake(&q->h->get_seq, &q->h->nget_wait);
  mproc__q_wake(&q->h->put_seq, &q->h->nput_wait);
  return 0;
}
