/* Queues: a bounded MPMC ring of variable-size messages in shared memory
 * (Python's Queue, SimpleQueue): memory, locks, create/open/free, queries.
 * put/get are in queue_ring.c, JoinableQueue's counting in joinable.c,
 * participants and crash recovery in queue_part.c.
 *
 * Design notes.
 *
 * Memory.  One shared object (a memfd, or a /dev/shm object for a named
 * queue): a header with two process-shared locks (tidlock.c) and the
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
 * take plock then clock, always in that order.  A side with a single
 * process keeps its lock parked between calls, so that its messages take no
 * locked instruction; whoever else needs the lock revokes the parking
 * (queue.h, "parking a side's lock").
 *
 * Crash safety.  Every critical section ends with the store that publishes
 * it (tail for put, head for get); a process that dies inside one leaves
 * the lock to the next locker, who finds its owner dead (tidlock.c) and
 * takes it over, and the records are
 * consistent as they are: a partially written record past tail is simply
 * not there; a record being copied out under clock is still at head and
 * goes to the next consumer.  Only the counters stored next to the
 * publishing store (nput/nget, puts/gets, unfinished) may be off by one.  A process that dies while
 * copying outside the lock leaves a RESERVED or CLAIMED record owned by its participant index; the
 * liveness sweep (queue_part.c) turns it DEAD: it is skipped and counted in the lost statistics,
 * never delivered partially.
 *
 * Putting and getting (records, waiting) are in queue_ring.c. */
#include "queue.h"
#include "futex.h"
#include "park_revoke.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#include <sys/single_threaded.h>
#endif
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CAP ((size_t)4 << 20)
#define MAX_CAP ((size_t)1 << 30)
#define DEFAULT_PARTS 256u
#define MAX_PARTS 65536u

/* ---- lock and repair ---------------------------------------------------- */

/* Gives up a side's parking if it is ours (the caller is outside that
 * side's critical section): a revoker that cannot make the heavy fence
 * waits for exactly this (park_revoke.c), and one that can gets the word a
 * little sooner. */
static void unpark_mine(struct mproc_queue *q, int side) {
  mproc__tidlock *m = mproc__q_side_lock(q, side);
  uint64_t parked = mproc__tidlock_who() | MPROC__TIDLOCK_PARK;
  if (atomic_load_explicit(&m->word, memory_order_relaxed) == parked &&
      atomic_compare_exchange_strong(&m->word, &parked, 0)) {
    mproc__fence_light();
    mproc__tidlock_wake(m);
  }
}

void mproc__q_unbusy_wake(struct mproc_queue *q, int side, _Atomic uint32_t *busy) {
  mproc__futex_wake(busy, INT_MAX, true);
  unpark_mine(q, side);
}

/* Longest pause, in calls, between two counts of this process's threads. */
#define ALONE_PAUSE_MAX 65536u

bool mproc__q_threads_alone(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (__libc_single_threaded)
    return true;
#endif
  struct mproc__pstat ps;
  return mproc__proc_stat(NULL, getpid(), &ps) == 0 && ps.num_threads == 1;
}

bool mproc__q_alone(struct mproc_queue *q) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (__libc_single_threaded)
    return true;
#endif
  uint32_t skip = atomic_load_explicit(&q->alone_skip, memory_order_relaxed);
  if (skip > 0) {
    atomic_store_explicit(&q->alone_skip, skip - 1, memory_order_relaxed);
    return false;
  }
  if (mproc__q_threads_alone()) {
    atomic_store_explicit(&q->alone_pause, 0, memory_order_relaxed);
    return true;
  }
  uint32_t pause = atomic_load_explicit(&q->alone_pause, memory_order_relaxed);
  pause = pause == 0 ? 64 : pause < ALONE_PAUSE_MAX ? pause * 2 : ALONE_PAUSE_MAX;
  atomic_store_explicit(&q->alone_pause, pause, memory_order_relaxed);
  atomic_store_explicit(&q->alone_skip, pause, memory_order_relaxed);
  return false;
}

void mproc__q_park(struct mproc_queue *q, int side) {
  mproc__tidlock *m = mproc__q_side_lock(q, side);
  struct mproc__qpark *pk = mproc__q_side_park(q, side);
  /* With a waiter asleep on the word, or one revoking, parking would only
   * make it revoke (again). */
  if (atomic_load_explicit(&m->sleepers, memory_order_relaxed) != 0 ||
      atomic_load_explicit(&pk->revoke, memory_order_relaxed) != 0) {
    mproc__tidlock_release(m);
  } else {
    /* `part` first: a revoker that sees the parked word sees whose it is. */
    atomic_store_explicit(&q->parked_ever, true, memory_order_relaxed);
    atomic_store_explicit(&pk->part, (uint32_t)q->part, memory_order_relaxed);
    atomic_store_explicit(&m->word, mproc__tidlock_who() | MPROC__TIDLOCK_PARK,
                          memory_order_release);
  }
  mproc__fence_light();
  mproc__tidlock_wake(m); /* a sleeper that came meanwhile finds it parked and revokes */
}

/* Takes a side's lock from its parker (see queue.h): 0 or MPROC_EOWNERDEAD
 * when held now, 1 to start the acquire again, or an error. */
static int unpark(struct mproc_queue *q, mproc__tidlock *m, int side) {
  uint64_t me = mproc__tidlock_who();
  uint64_t cur = atomic_load(&m->word);
  if (!(cur & MPROC__TIDLOCK_PARK))
    return 1;
  /* Our own parking: we are not inside a critical section, we are here. */
  if (cur == (me | MPROC__TIDLOCK_PARK))
    return atomic_compare_exchange_strong(&m->word, &cur, me) ? 0 : 1;
  struct mproc__qpark *pk = mproc__q_side_park(q, side);
  /* Whose busy word to wait for: the parker stored `part` before it
   * parked the word we read. */
  uint32_t part = atomic_load_explicit(&pk->part, memory_order_relaxed);
  if (part >= q->max_parts)
    return -EIO;
  return mproc__park_revoke(m, cur, &pk->revoke, &q->h->parts[part].busy[side], -1);
}

int mproc__q_lock1_slow(struct mproc_queue *q, mproc__tidlock *m) {
  int side = m == &q->h->plock ? MPROC__Q_PUT : MPROC__Q_GET;
  /* About to wait: a parking of ours on the other side must not make its
   * revoker wait for our next call, which this wait may be waiting for
   * (a revoker that holds this side's lock and wants the other). */
  unpark_mine(q, MPROC__Q_PUT + MPROC__Q_GET - side);
  for (;;) {
    int r = mproc__tidlock_lock_slow(m, -1);
    if (r == MPROC__TIDLOCK_PARKED)
      r = unpark(q, m, side);
    if (r == 1)
      continue;
    if (r == 0)
      return 0;
    if (r == MPROC_EOWNERDEAD) {
      /* Every critical section ends with its publishing store (tail,
       * head), so the records are consistent whatever instruction the
       * owner died at; only the counters next to that store may be off by
       * one. */
      atomic_fetch_add(&q->h->repairs, 1);
      return 0;
    }
    return MPROC_EBROKEN;
  }
}

int mproc__q_lock(struct mproc_queue *q) {
  int err = mproc__q_lock1(q, &q->h->plock);
  if (err != 0)
    return err;
  err = mproc__q_lock1(q, &q->h->clock);
  if (err != 0)
    mproc__tidlock_unlock(&q->h->plock);
  return err;
}

void mproc__q_unlock(struct mproc_queue *q) {
  mproc__tidlock_unlock(&q->h->clock);
  mproc__tidlock_unlock(&q->h->plock);
}

void mproc__q_wake_counted(_Atomic uint32_t *seq, _Atomic uint32_t *pending) {
  /* Already woken, and nobody went to sleep since?  A plain load first:
   * while a sleeper stays counted, every put would otherwise pull its line
   * over with a locked exchange. */
  if (pending != NULL && (atomic_load_explicit(pending, memory_order_relaxed) != 0 ||
                          atomic_exchange(pending, 1) != 0))
    return;
  atomic_fetch_add(seq, 1);
  mproc__futex_wake(seq, INT_MAX, true);
}

void mproc__q_wake(_Atomic uint32_t *seq, _Atomic uint32_t *nwait, _Atomic uint32_t *pending) {
  /* Pairs with the sleeper's increment of nwait before its re-check. */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(nwait, memory_order_relaxed) != 0)
    mproc__q_wake_counted(seq, pending);
}

void mproc__q_advance_release(struct mproc_queue *q) {
  struct mproc__qhdr *h = q->h;
  uint64_t rel = atomic_load_explicit(&h->release, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
  if (head - rel > q->cap)
    return; /* corrupt positions: get/put report MPROC_ECORRUPT */
  while (rel < head) {
    struct mproc__qrec *r = mproc__q_rec_at(q, rel);
    uint32_t st = atomic_load_explicit(&r->state, memory_order_acquire);
    /* Below head, COMMITTED is a small record a consumer copied out under
     * clock (which we hold): taken, like DONE.  A large one is claimed
     * before head passes it, so it is CLAIMED until copied out. */
    if (st != MPROC__QR_DONE && st != MPROC__QR_DEAD && st != MPROC__QR_COMMITTED)
      break;
    uint64_t size = mproc__q_rec_check(q, r, head - rel);
    if (size == 0)
      break; /* a corrupt record is never stepped over blindly */
    rel += size;
  }
  atomic_store_explicit(&h->release, rel, memory_order_release);
}

void mproc__q_drop_record(struct mproc_queue *q, struct mproc__qrec *r) {
  /* Only a name of this queue's own: a corrupt record must never make us
   * unlink somebody else's object. */
  if (r->kind == MPROC__QK_SPILL && mproc__q_spill_name_ok(q, (const char *)(r + 1)))
    shm_unlink((const char *)(r + 1));
}

/* ---- validating what shared memory says --------------------------------- */

/* "q" and the queue id in 16 lowercase hex digits.  By hand: a keeper runs
 * this in a forked child, where stdio may not be used. */
static void spill_kind(const struct mproc_queue *q, char buf[18]) {
  static const char hex[] = "0123456789abcdef";
  buf[0] = 'q';
  for (int i = 0; i < 16; i++)
    buf[1 + i] = hex[(q->qid >> (60 - 4 * i)) & 15];
  buf[17] = '\0';
}

int mproc__q_spill_name(const struct mproc_queue *q, char name[MPROC__Q_NAME_MAX]) {
  char kind[18];
  spill_kind(q, kind);
  return mproc__shm_make_name(name, MPROC__Q_NAME_MAX, kind);
}

/* Skips one or more characters of `set`; NULL if there is none. */
static const char *skip_set(const char *p, const char *set) {
  const char *s = p + strspn(p, set);
  return s > p ? s : NULL;
}

bool mproc__q_spill_name_ok(const struct mproc_queue *q, const char *name) {
  if (strnlen(name, MPROC__Q_NAME_MAX) == MPROC__Q_NAME_MAX)
    return false; /* not terminated inside the record */
  static const char digits[] = "0123456789", hex[] = "0123456789abcdef";
  char kind[18];
  spill_kind(q, kind);
  size_t klen = strlen(kind);
  /* "/mproc.<pid>.<kind>.<seq>.<rnd>", as mproc__shm_make_name writes it. */
  const char *p = strncmp(name, "/mproc.", 7) == 0 ? skip_set(name + 7, digits) : NULL;
  if (p == NULL || p[0] != '.' || strncmp(p + 1, kind, klen) != 0 || p[1 + klen] != '.')
    return false;
  p = skip_set(p + 2 + klen, digits);
  if (p == NULL || *p != '.')
    return false;
  p = skip_set(p + 1, hex);
  return p != NULL && *p == '\0';
}

/* ---- create, open, free ------------------------------------------------- */

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static size_t header_size(unsigned max_parts) {
  size_t ps = page_size();
  size_t n = sizeof(struct mproc__qhdr) + (size_t)max_parts * sizeof(struct mproc__qpart);
  return (n + ps - 1) / ps * ps;
}

int mproc__q_map(int fd, size_t hdr, size_t cap, int prot, struct mproc_queue *q) {
  size_t total = hdr + 2 * cap;
  char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return mproc__neg_errno();
  if (mmap(base, hdr + cap, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
      mmap(base + hdr + cap, cap, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)hdr) == MAP_FAILED) {
    int err = mproc__neg_errno();
    munmap(base, total);
    return err;
  }
  q->h = (struct mproc__qhdr *)base;
  q->ring = base + hdr;
  q->map_len = total;
  q->cap = cap;
  return 0;
}

static void init_header(struct mproc__qhdr *h, size_t cap, size_t hdr, size_t maxsize,
                        unsigned flags, unsigned max_parts) {
  h->version = MPROC__Q_VERSION;
  h->cap = cap;
  h->hdr_size = hdr;
  h->maxsize = maxsize;
  h->flags = flags;
  h->max_parts = max_parts;
  uint64_t qid = 0;
  if (getrandom(&qid, sizeof qid, GRND_NONBLOCK) != (ssize_t)sizeof qid)
    qid = (uint64_t)mproc_now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
  h->qid = qid;
  /* plock and clock: zeroes are free locks. */
  atomic_store_explicit(&h->magic, MPROC__Q_MAGIC, memory_order_release);
}

int mproc__q_geometry(const struct mproc__qhdr *peek, size_t size, struct mproc_queue *q,
                      size_t *hdr) {
  uint32_t magic = atomic_load_explicit(&peek->magic, memory_order_acquire);
  if (magic == 0)
    return MPROC_EAGAIN;
  if (magic != MPROC__Q_MAGIC || peek->version != MPROC__Q_VERSION)
    return MPROC_ECORRUPT;
  uint64_t cap = peek->cap, h = peek->hdr_size;
  uint32_t max_parts = peek->max_parts;
  if (cap < page_size() || cap > MAX_CAP || (cap & (cap - 1)) || max_parts == 0 ||
      max_parts > MAX_PARTS || h != header_size(max_parts) || h + cap != size)
    return MPROC_ECORRUPT;
  q->cap = cap;
  q->max_parts = max_parts;
  q->qid = peek->qid;
  *hdr = (size_t)h;
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
    return MPROC_ENOMEM;
  int fd = -1, err;
  if (o->name == NULL)
    err = mproc__memfd_create("mproc-queue", hdr + cap, &fd);
  else
    err = mproc__q_named_tmpfile(hdr + cap, &fd); /* named below, once ready */
  if (err == 0)
    err = mproc__q_map(fd, hdr, cap, PROT_READ | PROT_WRITE, q);
  if (err == 0) {
    init_header(q->h, cap, hdr, o->maxsize, o->flags, max_parts);
    q->max_parts = max_parts;
    q->qid = q->h->qid;
    if (o->name != NULL) {
      err = mproc__q_named_publish(fd, o->name);
      if (err == 0)
        snprintf(q->name, sizeof q->name, "%s", o->name);
    }
    if (err == 0)
      err = finish_handle(q, roles);
    if (err != 0)
      munmap(q->h, q->map_len);
  }
  /* An anonymous queue keeps its memfd, to be handed to processes that did
   * not inherit the queue (mproc_queue_fd / mproc_queue_from_fd). */
  q->fd = err == 0 && o->name == NULL ? fd : -1;
  if (q->fd < 0)
    mproc__close(fd);
  if (err != 0) {
    if (q->name[0] != '\0')
      shm_unlink(q->name);
    free(q);
    return err;
  }
  *out = q;
  return 0;
}

/* A handle on the queue in `fd` (the caller keeps the fd), attached with
 * `roles`. */
static int map_fd(int fd, unsigned roles, mproc_queue **out) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return mproc__neg_errno();
  if (!S_ISREG(st.st_mode))
    return MPROC_EINVAL;
  /* A creator sizes its file in one ftruncate: empty is "created, not yet
   * sized" (try again), anything else too short for a header is no queue. */
  if (st.st_size == 0)
    return MPROC_EAGAIN;
  if ((size_t)st.st_size < sizeof(struct mproc__qhdr))
    return MPROC_ECORRUPT;
  struct mproc__qhdr *peek = mmap(NULL, sizeof *peek, PROT_READ, MAP_SHARED, fd, 0);
  if (peek == MAP_FAILED)
    return mproc__neg_errno();
  /* The geometry is checked once here and kept in the handle. */
  struct mproc_queue geo = {0};
  size_t hdr = 0;
  int err = mproc__q_geometry(peek, (size_t)st.st_size, &geo, &hdr);
  munmap(peek, sizeof *peek);
  if (err != 0)
    return err;
  struct mproc_queue *q = calloc(1, sizeof *q);
  if (q == NULL)
    return MPROC_ENOMEM;
  q->fd = -1;
  q->max_parts = geo.max_parts;
  q->qid = geo.qid;
  err = mproc__q_map(fd, hdr, geo.cap, PROT_READ | PROT_WRITE, q);
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

static bool valid_roles(unsigned *roles) {
  if (*roles == 0)
    *roles = MPROC_QUEUE_BOTH;
  return (*roles & ~(unsigned)MPROC_QUEUE_BOTH) == 0;
}

MPROC_EXTERN int mproc_queue_attach(mproc_queue **out, const char *name, unsigned roles) {
  if (out == NULL || name == NULL || !valid_name(name) || !valid_roles(&roles))
    return MPROC_EINVAL;
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  int err = mproc__q_named_join(fd);
  if (err == 0)
    err = map_fd(fd, roles, out);
  mproc__close(fd);
  return err;
}

MPROC_EXTERN int mproc_queue_fd(const mproc_queue *q) {
  if (q == NULL)
    return MPROC_EINVAL;
  return q->fd >= 0 ? q->fd : MPROC_ESTATE;
}

MPROC_EXTERN int mproc_queue_from_fd(mproc_queue **out, int fd, unsigned roles) {
  if (out == NULL || fd < 0 || !valid_roles(&roles))
    return MPROC_EINVAL;
  int err = map_fd(fd, roles, out);
  return err == MPROC_EAGAIN ? MPROC_EINVAL : err; /* no queue there */
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
      uint64_t size = tail - pos <= q->cap ? 1 : 0;
      while (pos < tail && size != 0) {
        struct mproc__qrec *r = mproc__q_rec_at(q, pos);
        uint32_t st = atomic_load(&r->state);
        size = mproc__q_rec_check(q, r, tail - pos);
        if (size != 0 && st != MPROC__QR_DONE && st != MPROC__QR_DEAD)
          mproc__q_drop_record(q, r);
        pos += size;
      }
    }
    mproc__q_unlock(q);
  }
  int err = 0;
  if (q->name[0] != '\0' && shm_unlink(q->name) != 0 && errno != ENOENT)
    err = mproc__neg_errno();
  munmap(h, q->map_len);
  mproc__close(q->fd);
  free(q);
  return err;
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
  return (h->maxsize != 0 && count >= h->maxsize) || used > q->cap ||
         q->cap - used < mproc__q_rec_size(MPROC__QK_INLINE, 0);
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
  mproc__q_wake(&q->h->get_seq, &q->h->nget_wait, NULL);
  mproc__q_wake(&q->h->put_seq, &q->h->nput_wait, NULL);
  return 0;
}
