/* Queues: putting and getting records (see queue.c for the memory layout
 * and the two locks).
 *
 * Design notes.
 *
 * Records.  [release, head) are being copied out or done; [head, tail) are
 * queued.  A record's state walks
 *     RESERVED -> COMMITTED -> CLAIMED -> DONE      (or -> DEAD)
 * A message of at most 1 KiB is copied in and out while holding the side's
 * lock: it goes straight to COMMITTED on put and stays so on get (below
 * head, a COMMITTED record was copied out under the lock: the consumer never
 * writes to the ring), so a small message costs one lock round trip per
 * side.  A larger one is RESERVED
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
 * Wake-ups.  Sleepers count themselves in nget_wait/nput_wait, then re-check,
 * then sleep on get_seq/put_seq (futex), and uncount themselves as soon as
 * they wake.  The other side bumps the word and wakes only when the count is
 * nonzero, and only once per sleep (the pending flag, which a sleeper
 * clears only after reading the sequence word it will sleep on: see
 * wait_step), so a busy queue makes no system call besides the lock's.
 * Before sleeping a waiter spins briefly, only when attached processes do
 * not outnumber the CPUs.  Sleeps are capped at MPROC__Q_SWEEP_MS so a
 * blocked waiter re-checks participants' liveness.
 *
 * Memory ordering.  Producers and consumers hold different locks (plock,
 * clock), so what one side writes reaches the other only through these
 * release/acquire pairs on words in the shared header and records:
 *  - tail (written under plock): a producer writes the record header, the
 *    payload of a small message and its state, then stores tail with
 *    release; a consumer loads tail with acquire before it reads anything
 *    below it.  A producer dying before that store leaves no record.
 *  - a record's state, for a large message: the producer copies the payload
 *    outside the lock, then stores COMMITTED with release; the consumer
 *    loads the state with acquire before it copies.  A claimed record is
 *    copied out and stored DONE with release, under clock.
 *  - release (written under clock by mproc__q_advance_release, which reads
 *    each state with acquire): stored with release once every record below
 *    it is DONE or DEAD, after the consumers' copies out of it; a producer
 *    loads it with acquire before reusing those bytes, so it never
 *    overwrites a record still being read.
 *  - head (under clock) is stored with release for the liveness sweep and
 *    the counters; nput is stored before tail and nget after head, so
 *    nput - nget, read with acquire on nget, is never negative (it may read
 *    high while a get finishes, or after a consumer died between the two
 *    stores: bounded queues then count one message too many).
 *  - wake-ups are a Dekker pair: the sleeper increments its wait count
 *    (seq_cst) and makes the heavy fence of futex.h before re-checking
 *    under the lock, and sleeps on the sequence word it read before the
 *    re-check; the waker publishes, then makes the light fence (with
 *    membarrier, a compiler barrier: a put or get makes no fence at all)
 *    before reading the count (mproc__q_exit_wake, mproc__q_wake).  Either the
 *    waker sees the sleeper counted, or the sleeper's re-check sees the
 *    publication; a bump of the sequence word in between makes the futex
 *    wait return at once. */
#include "queue.h"
#include "futex.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Messages up to this size are copied while holding the side's lock. */
#define LOCKED_COPY_MAX 1024
/* How long a waiter may spin before sleeping. */
#define SPIN_NS 20000
/* Made-up spill names tried before a put gives up with -EEXIST (a collision
 * needs the same pid, sequence number and 32 random bits: a second one in a
 * row means someone squats our names). */
#define SPILL_NAME_TRIES 8

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- spill objects ------------------------------------------------------ */

static int spill_write(const char *name, const void *buf, size_t len) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
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

/* `name` passed mproc__q_spill_name_ok.  The object must be a regular file
 * of exactly `len` bytes: mapping a shorter one would fault (SIGBUS) on
 * the copy. */
static int spill_read(const char *name, void *dst, size_t len) {
  int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  struct stat st;
  void *p = MAP_FAILED;
  int err = 0;
  if (fstat(fd, &st) != 0)
    err = mproc__neg_errno();
  else if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size != len)
    err = MPROC_ECORRUPT;
  else if (len > 0 && (p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED)
    err = mproc__neg_errno();
  mproc__close(fd);
  if (p != MAP_FAILED) {
    memcpy(dst, p, len);
    munmap(p, len);
  }
  shm_unlink(name);
  return err;
}

/* memcpy for the payloads copied under a lock: most are a few words, which
 * a call to the library's memcpy costs more than moving. */
static inline void copy_small(void *dst, const void *src, size_t len) {
  if (len > 32) {
    memcpy(dst, src, len);
    return;
  }
  char *d = dst;
  const char *p = src;
  if (len >= 8 && len <= 16) {
    /* Two words that overlap when len < 16: the common small message in
     * two loads and two stores, no loop. */
    memcpy(d, p, 8);
    memcpy(d + len - 8, p + len - 8, 8);
    return;
  }
  for (; len >= 8; len -= 8, d += 8, p += 8)
    memcpy(d, p, 8); /* constant size: one load and one store */
  for (; len > 0; len--)
    *d++ = *p++;
}

/* ---- waiting ------------------------------------------------------------ */

_Atomic uint64_t mproc__q_capped_sleeps;
void (*_Atomic mproc__q_announce_hook)(void);

/* Sleeps until *seq moves past `seen`, the deadline, or the sweep period.
 * Returns 0 to retry, MPROC_ETIMEDOUT, or -errno. */
static int sleep_on(struct mproc_queue *q, _Atomic uint32_t *seq, uint32_t seen, int64_t deadline) {
  if (mproc__q_maybe_sweep(q))
    return 0;
  int64_t cap = mproc_now_ms() + MPROC__Q_SWEEP_MS;
  int r = mproc__futex_wait_capped(seq, seen, deadline, MPROC__Q_SWEEP_MS, true);
  /* Counted for the tests of the wake-up protocol: with traffic flowing,
   * a sleep that ends by its cap is a wake-up lost. */
  if (r == 0 && (deadline < 0 || cap < deadline) && atomic_load(seq) == seen &&
      mproc_now_ms() >= cap)
    atomic_fetch_add_explicit(&mproc__q_capped_sleeps, 1, memory_order_relaxed);
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
      mproc__cpu_relax();
    if (atomic_load_explicit(word, memory_order_relaxed) != v)
      return;
  } while (now_ns() - t0 < SPIN_NS);
}

/* A put that found no room, or a get that found no record, waits in three
 * steps, one per retry: spin briefly on the word the other side moves, then
 * announce itself as a sleeper (counted, so the other side knows to wake it)
 * and look once more, then sleep until the side's sequence moves or the
 * deadline passes.  Two bytes to set up: a put or get that need not wait
 * pays nothing more. */
struct waitstep {
  bool spun, waiting;
  uint32_t seen; /* seq when announced */
};

/* The words of the waiting side (MPROC__Q_PUT waits for room, MPROC__Q_GET
 * for a record): the one the other side moves, and its own wake-up words. */
struct waitwords {
  _Atomic uint64_t *spin_word;
  _Atomic uint32_t *seq, *nwait, *pending;
};

static struct waitwords wait_words(const struct mproc_queue *q, int side) {
  struct mproc__qhdr *h = q->h;
  if (side == MPROC__Q_PUT)
    return (struct waitwords){&h->release, &h->put_seq, &h->nput_wait, &h->put_pending};
  return (struct waitwords){&h->tail, &h->get_seq, &h->nget_wait, &h->get_pending};
}

/* 0: try again; else the error ending the call (MPROC_ETIMEDOUT, ...). */
static int wait_step(struct mproc_queue *q, int side, struct waitstep *w, int64_t deadline) {
  if (deadline >= 0 && mproc_timeout_until(deadline) == 0)
    return MPROC_ETIMEDOUT;
  struct waitwords ww = wait_words(q, side);
  if (!w->spun) {
    w->spun = true;
    spin_on(q, ww.spin_word);
    return 0;
  }
  if (!w->waiting) {
    w->waiting = true;
    atomic_fetch_add(ww.nwait, 1);
    /* The sequence word is read before `pending` is cleared.  A waker
     * whose exchange of `pending` reads our clear bumps the word after
     * that exchange, hence after our read, so our futex wait returns at
     * once.  In the other order a waker could exchange `pending` between
     * our clear and our read: it bumps the word before our read (we sleep
     * on the bumped value: its wake-up is not for us) yet leaves `pending`
     * set, so the wakers of the next change skip us, and if the change it
     * woke for was used up by another thread or process of our side, our
     * re-check finds nothing: a wake-up lost until the sleep's cap.  All
     * three accesses are sequentially consistent. */
    w->seen = atomic_load(ww.seq);
    void (*hook)(void) = atomic_load_explicit(&mproc__q_announce_hook, memory_order_relaxed);
    if (MPROC__UNLIKELY(hook != NULL))
      hook();
    atomic_store(ww.pending, 0); /* the next waker must wake us */
    mproc__fence_heavy();        /* the wakers' side of the pair is light */
    return 0;                    /* re-check after announcing ourselves */
  }
  int err = sleep_on(q, ww.seq, w->seen, deadline);
  /* Uncount at once: while we retry, the other side need not wake us. */
  atomic_fetch_sub(ww.nwait, 1);
  w->waiting = false;
  w->spun = false;
  return err;
}

/* The call ends: a sleeper still counted is uncounted. */
static void wait_end(struct mproc_queue *q, int side, const struct waitstep *w) {
  if (w->waiting)
    atomic_fetch_sub(wait_words(q, side).nwait, 1);
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
  /* Acquire: consumers are done with the bytes below release.  The copy
   * this process read last will do while it shows room. */
  uint64_t rel = atomic_load_explicit(&q->seen_release, memory_order_acquire);
  if (tail - rel > q->cap || q->cap - (tail - rel) < size) {
    rel = atomic_load_explicit(&h->release, memory_order_acquire);
    atomic_store_explicit(&q->seen_release, rel, memory_order_release);
  }
  uint64_t nput = atomic_load_explicit(&h->nput, memory_order_relaxed);
  if (atomic_load_explicit(&h->nconsumers, memory_order_relaxed) == 0 &&
      (atomic_load_explicit(&h->ever_roles, memory_order_relaxed) & MPROC_QUEUE_CONSUMER))
    return MPROC_ECLOSED; /* consumers came and all left */
  if (tail - rel > q->cap)
    return MPROC_ECORRUPT; /* writing there would overwrite live records */
  /* nget is the consumers' word: read only when a count bound needs it. */
  if ((h->maxsize != 0 &&
       nput - atomic_load_explicit(&h->nget, memory_order_acquire) >= h->maxsize) ||
      q->cap - (tail - rel) < size)
    return MPROC_EFULL;
  struct mproc__qrec *r = mproc__q_rec_at(q, tail);
  r->owner = (uint32_t)q->part;
  r->len = len;
  r->kind = kind;
  r->pad = 0;
  bool now = kind == MPROC__QK_INLINE && len <= LOCKED_COPY_MAX;
  if (now)
    copy_small(r + 1, buf, len);
  if (kind == MPROC__QK_SPILL) {
    char name[MPROC__Q_NAME_MAX] = "";
    if (mproc__q_spill_name(q, name) != 0)
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
  mproc__q_bump(&h->puts);
  if (h->flags & MPROC_QUEUE_JOINABLE)
    mproc__q_bump(&h->unfinished);
  *rec = now ? NULL : r;
  return 0;
}

/* Outside the lock: copies a reserved record's payload and commits it. */
static int fill_record(struct mproc_queue *q, struct mproc__qrec *r, const void *buf, size_t len) {
  int err = 0;
  if (r->kind == MPROC__QK_SPILL) {
    /* The name was made up at reserve time; one that exists already (a
     * collision, or a squatter) is replaced by a fresh one.  The record is
     * RESERVED and ours: no consumer reads the name before the commit. */
    for (int attempt = 1;; attempt++) {
      err = spill_write((const char *)(r + 1), buf, len);
      if (err != -EEXIST || attempt == SPILL_NAME_TRIES)
        break;
      char name[MPROC__Q_NAME_MAX] = "";
      if (mproc__q_spill_name(q, name) != 0)
        break;
      memcpy(r + 1, name, sizeof name);
    }
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

/* Whether this process may put (role MPROC_QUEUE_PRODUCER) or get
 * (MPROC_QUEUE_CONSUMER): a role given up is MPROC_ECLOSED, a handle whose
 * participant slot was lost is MPROC_EBROKEN. */
static int usable(const struct mproc_queue *q, unsigned role) {
  if (!(q->roles & role))
    return MPROC_ECLOSED;
  return q->part < 0 ? MPROC_EBROKEN : 0;
}

static int put_impl(struct mproc_queue *q, const void *buf, size_t len, int64_t timeout_ms,
                    bool nowait) {
  if (q == NULL || (buf == NULL && len > 0) || timeout_ms < -1)
    return MPROC_EINVAL;
  int err = usable(q, MPROC_QUEUE_PRODUCER);
  if (err != 0)
    return err;
  struct mproc__qhdr *h = q->h;
  uint32_t kind =
      len > q->cap / 2 - sizeof(struct mproc__qrec) ? MPROC__QK_SPILL : MPROC__QK_INLINE;
  int64_t deadline = timeout_ms < 0 ? -1 : mproc__deadline(timeout_ms);
  struct waitstep w = {false, false, 0};
  for (;;) {
    struct mproc__qrec *r = NULL;
    bool parked;
    err = mproc__q_enter(q, MPROC__Q_PUT, &parked);
    if (err != 0)
      break;
    err = try_put(q, buf, len, kind, &r);
    if (err == 0 && r == NULL) {
      mproc__q_exit_wake(q, MPROC__Q_PUT, parked, &h->get_seq, &h->nget_wait, &h->get_pending);
      break;
    }
    mproc__q_exit(q, MPROC__Q_PUT, parked);
    if (err == 0) {
      err = fill_record(q, r, buf, len);
      mproc__q_wake(&h->get_seq, &h->nget_wait, &h->get_pending);
      break;
    }
    /* No room: wait (spin, announce, sleep) and try again. */
    if (err != MPROC_EFULL || nowait || (err = wait_step(q, MPROC__Q_PUT, &w, deadline)) != 0)
      break;
  }
  wait_end(q, MPROC__Q_PUT, &w);
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
  /* The copy of tail this process read last will do while records remain
   * below it; else (empty, or another consumer went past it) re-read. */
  uint64_t tail = atomic_load_explicit(&q->seen_tail, memory_order_acquire);
  if (tail - head - 1 >= q->cap) {
    tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    atomic_store_explicit(&q->seen_tail, tail, memory_order_release);
  }
  /* Everything read from shared memory is checked before it is used: the
   * positions against the ring, each record's kind, length and spill name
   * (mproc__q_rec_check).  A corrupt queue is reported, never trusted. */
  if (tail - head > q->cap ||
      head - atomic_load_explicit(&h->release, memory_order_relaxed) > q->cap)
    return MPROC_ECORRUPT;
  struct mproc__qrec *r;
  uint32_t st;
  /* Skip records whose producer died (or whose consumer died under the
   * lock after finishing with them). */
  while (head < tail && ((st = atomic_load_explicit(&(r = mproc__q_rec_at(q, head))->state,
                                                    memory_order_acquire)) == MPROC__QR_DEAD ||
                         st == MPROC__QR_DONE)) {
    uint64_t size = mproc__q_rec_check(q, r, tail - head);
    if (size == 0)
      return MPROC_ECORRUPT;
    head += size;
    atomic_store_explicit(&h->head, head, memory_order_release);
    mproc__q_bump(&h->nget);
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
  r = mproc__q_rec_at(q, head);
  st = atomic_load_explicit(&r->state, memory_order_acquire);
  if (st == MPROC__QR_RESERVED)
    return MPROC_EEMPTY; /* its producer is still copying it in */
  uint64_t size = mproc__q_rec_check(q, r, tail - head);
  if (st != MPROC__QR_COMMITTED || size == 0)
    return MPROC_ECORRUPT; /* CLAIMED at head, or an unknown state */
  /* The checked values are used from here on, never re-read. */
  uint64_t rlen = r->len;
  uint32_t kind = r->kind;
  if (mproc__q_rec_size(kind, rlen) != size)
    return MPROC_ECORRUPT; /* changed under us since the check */
  *len = (size_t)rlen;
  if (rlen > g->cap)
    return MPROC_ETOOSMALL;
  bool now = kind == MPROC__QK_INLINE && rlen <= LOCKED_COPY_MAX;
  if (now) {
    /* Copied out under the lock: the record stays COMMITTED, and head
     * moving past it is what says it was taken (see queue.c,
     * mproc__q_advance_release).  Not writing it keeps the consumer off
     * the ring's cache lines, which the producer is writing next to. */
    copy_small(g->buf, r + 1, (size_t)rlen);
  } else {
    r->owner = (uint32_t)q->part;
    atomic_store_explicit(&r->state, MPROC__QR_CLAIMED, memory_order_relaxed);
  }
  /* The publishing store; the counters follow it (a death in between
   * leaves them one low: nget never passes nput). */
  atomic_store_explicit(&h->head, head + size, memory_order_release);
  mproc__q_bump(&h->nget);
  mproc__q_bump(&h->gets);
  if (h->flags & MPROC_QUEUE_JOINABLE)
    h->parts[q->part].outstanding++;
  if (now && atomic_load_explicit(&h->release, memory_order_relaxed) == head)
    /* Everything below was released already: this record, copied out
     * above, is all mproc__q_advance_release would release. */
    atomic_store_explicit(&h->release, head + size, memory_order_release);
  else if (now)
    mproc__q_advance_release(q);
  *rec = now ? NULL : r;
  return 0;
}

/* Outside the lock: copies a claimed record of `len` bytes (the length
 * try_get checked) out, then marks it done. */
static int drain_record(struct mproc_queue *q, struct mproc__qrec *r, void *dst, size_t len) {
  int err = 0;
  if (r->kind == MPROC__QK_SPILL) {
    /* A private copy of the name, checked again: what is opened and
     * unlinked is exactly what was checked. */
    char name[MPROC__Q_NAME_MAX];
    memcpy(name, r + 1, sizeof name);
    err = mproc__q_spill_name_ok(q, name) ? spill_read(name, dst, len) : MPROC_ECORRUPT;
  } else if (len <= q->cap - sizeof *r) {
    memcpy(dst, r + 1, len);
  } else {
    err = MPROC_ECORRUPT;
  }
  bool parked;
  int e2 = mproc__q_enter(q, MPROC__Q_GET, &parked);
  if (e2 == 0) {
    atomic_store_explicit(&r->state, MPROC__QR_DONE, memory_order_release);
    mproc__q_advance_release(q);
    mproc__q_exit(q, MPROC__Q_GET, parked);
  }
  return err != 0 ? err : e2;
}

static int get_impl(struct mproc_queue *q, struct getbuf *g, size_t *len, int64_t timeout_ms,
                    bool nowait) {
  if (q == NULL || len == NULL || (g->buf == NULL && g->cap > 0 && !g->alloc) || timeout_ms < -1)
    return MPROC_EINVAL;
  int err = usable(q, MPROC_QUEUE_CONSUMER);
  if (err != 0)
    return err;
  struct mproc__qhdr *h = q->h;
  int64_t deadline = timeout_ms < 0 ? -1 : mproc__deadline(timeout_ms);
  struct waitstep w = {false, false, 0};
  for (;;) {
    struct mproc__qrec *r = NULL;
    size_t need = 0;
    bool parked;
    err = mproc__q_enter(q, MPROC__Q_GET, &parked);
    if (err != 0)
      break;
    err = try_get(q, g, &need, &r);
    if (err == 0 && r == NULL) {
      *len = need;
      mproc__q_exit_wake(q, MPROC__Q_GET, parked, &h->put_seq, &h->nput_wait, &h->put_pending);
      break;
    }
    mproc__q_exit(q, MPROC__Q_GET, parked);
    if (err == MPROC_EAGAIN)
      continue;
    if (err == 0) {
      err = drain_record(q, r, g->buf, need);
      if (err == 0)
        *len = need;
      mproc__q_wake(&h->put_seq, &h->nput_wait, &h->put_pending);
      break;
    }
    if (err == MPROC_ETOOSMALL && g->alloc) {
      void *n = realloc(g->buf, need);
      if (n == NULL) {
        err = MPROC_ENOMEM;
        break;
      }
      g->buf = n;
      g->cap = need;
      continue;
    }
    if (err == MPROC_ETOOSMALL)
      *len = need;
    /* Nothing to take: wait (spin, announce, sleep) and try again. */
    if (err != MPROC_EEMPTY || nowait || (err = wait_step(q, MPROC__Q_GET, &w, deadline)) != 0)
      break;
  }
  wait_end(q, MPROC__Q_GET, &w);
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
    return MPROC_ENOMEM;
  int err = get_impl(q, &g, len, timeout_ms, false);
  if (err != 0) {
    free(g.buf);
    return err;
  }
  *buf = g.buf;
  return 0;
}
