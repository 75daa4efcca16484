/* Internals of queues (src/queue.c, src/queue_part.c, src/joinable.c). */
#ifndef MPROC_QUEUE_INTERNAL_H
#define MPROC_QUEUE_INTERNAL_H

#include "internal.h"
#include "tidlock.h"

#include <stdatomic.h>
#include <stdint.h>

#define MPROC__Q_MAGIC 0x6d707175u /* "mpqu" */
#define MPROC__Q_VERSION 4u
#define MPROC__Q_NAME_MAX 64 /* spill object names, with the NUL */

/* Record states (struct mproc__qrec.state). */
enum {
  MPROC__QR_RESERVED = 1,  /* space taken by a producer still copying in */
  MPROC__QR_COMMITTED = 2, /* complete, waiting for a consumer */
  MPROC__QR_CLAIMED = 3,   /* taken by a consumer still copying out */
  MPROC__QR_DONE = 4,      /* consumed: space can be released (a small record
                              copied out under the lock stays COMMITTED:
                              below head that means consumed too) */
  MPROC__QR_DEAD = 5,      /* its producer or consumer died: skipped, lost */
};
/* Record kinds. */
enum { MPROC__QK_INLINE = 0, MPROC__QK_SPILL = 1 };

/* A record in the ring: this header, then the payload (inline) or the name
 * of the /dev/shm object holding it (spill), padded to 8 bytes. */
struct mproc__qrec {
  _Atomic uint32_t state; /* MPROC__QR_* */
  uint32_t owner;         /* participant index that reserved or claimed it */
  uint64_t len;           /* payload length */
  uint32_t kind;          /* MPROC__QK_* */
  uint32_t pad;
};

/* One attached process.  Changed under the queue lock only. */
struct mproc__qpart {
  _Atomic int32_t pid;   /* 0: free slot */
  uint32_t roles;        /* MPROC_QUEUE_PRODUCER | MPROC_QUEUE_CONSUMER */
  uint64_t start_time;   /* /proc/<pid>/stat field 22: tells a reused pid apart */
  uint64_t outstanding;  /* JoinableQueue: taken by it, not yet marked done */
  uint32_t pending;      /* 1: reserved by a forking parent (pid, start_time are
                            the parent's) for a child that has not claimed it */
  uint32_t retired;      /* 1: detached, but kept until the process dies (see
                            mproc__q_drop_roles) */
  int64_t pending_until; /* CLOCK_MONOTONIC ms: a pending slot not claimed by
                            then belongs to a fork that failed */
  /* 1 while this process is inside a critical section of a side whose lock
   * it parked (MPROC__Q_PUT, MPROC__Q_GET): written by that process only.
   * A slot has its cache line to itself, so a producer's and a consumer's
   * busy words never share one. */
  _Atomic uint32_t busy[2];
} __attribute__((aligned(64)));

/* The sides of a queue, each with its lock. */
enum { MPROC__Q_PUT = 0, MPROC__Q_GET = 1 };

/* A side's parking (see mproc__q_enter): who parked its lock, and how many
 * want it revoked.  On the side's own cache line: the parker reads `revoke`
 * on every call. */
struct mproc__qpark {
  _Atomic uint32_t revoke; /* processes revoking the parking now */
  _Atomic uint32_t part;   /* the parker's participant index */
};

/* The shared header, at offset 0 of the mapping.  No pointers: positions are
 * byte counts since creation (64-bit, never wrap in practice) and the ring
 * offset of a position is pos & (cap - 1). */
struct mproc__qhdr {
  _Atomic uint32_t magic;  /* written last by the creator: initialized */
  uint32_t version;        /* MPROC__Q_VERSION */
  uint64_t cap;            /* ring bytes, a power of two, >= page size */
  uint64_t hdr_size;       /* bytes before the ring (page multiple) */
  uint64_t maxsize;        /* count bound, 0 = none */
  uint32_t flags;          /* MPROC_QUEUE_JOINABLE */
  uint32_t max_parts;      /* entries of the participant table */
  uint64_t qid;            /* random id: the queue's spill names carry it */
  _Atomic uint64_t nparts; /* used participant slots */
  _Atomic uint32_t nproducers;
  _Atomic uint32_t nconsumers;
  _Atomic uint32_t ever_roles;                         /* roles any process ever attached with: "no
                                                          consumer left" needs one to have come */
  _Atomic uint64_t spilled, lost, lost_bytes, repairs; /* statistics */
  /* Producer side: plock guards reserving at tail.  Each side's lock and
   * the words only it writes have cache lines of their own, so a producer
   * and a consumer do not bounce one line per message. */
  mproc__tidlock plock __attribute__((aligned(128))); /* owner-checked (tidlock.c) */
  _Atomic uint64_t nput;       /* records ever reserved (counted before tail moves) */
  _Atomic uint64_t puts;       /* statistics: messages put */
  _Atomic uint64_t unfinished; /* JoinableQueue; changed under plock only */
  struct mproc__qpark ppark;   /* plock's parking */
  _Atomic uint64_t tail __attribute__((aligned(128))); /* end of reserved records */
  /* Consumer side: clock guards taking at head and releasing space. */
  mproc__tidlock clock __attribute__((aligned(128)));  /* owner-checked (tidlock.c) */
  _Atomic uint64_t gets;                               /* statistics: messages taken */
  struct mproc__qpark cpark;                           /* clock's parking */
  _Atomic uint64_t head __attribute__((aligned(128))); /* next record for consumers */
  _Atomic uint64_t release;                            /* start of the space still in use */
  _Atomic uint64_t nget; /* records ever taken or skipped (counted after head moves) */
  /* wake-ups: a sleeper bumps the waiter count, then re-checks, then sleeps
   * on the sequence word; the other side bumps the word and wakes only when
   * the count is nonzero. */
  _Atomic uint32_t get_seq __attribute__((aligned(64)));
  _Atomic uint32_t nget_wait;
  _Atomic uint32_t get_pending; /* a wake-up is on its way to the sleepers */
  _Atomic uint32_t put_seq __attribute__((aligned(64)));
  _Atomic uint32_t nput_wait;
  _Atomic uint32_t put_pending;
  _Atomic uint32_t join_seq __attribute__((aligned(64)));
  _Atomic uint32_t njoin_wait;
  struct mproc__qpart parts[] __attribute__((aligned(64)));
};

/* A process-local handle. */
struct mproc_queue {
  struct mproc__qhdr *h; /* the shared header */
  char *ring;            /* the ring, mapped twice back to back */
  size_t map_len;        /* whole mapping (header + 2 * cap) */
  /* Local copies of the header's geometry, checked when mapped: every
   * access is bounded by these, never by what shared memory says now. */
  uint64_t cap;                  /* ring bytes */
  uint32_t max_parts;            /* entries of the participant table */
  uint64_t qid;                  /* the header's qid */
  _Atomic int part;              /* my participant index, -1 if none (broken); threads read it */
  _Atomic unsigned roles;        /* my roles; close/detach may run while other threads wait */
  _Atomic int64_t last_sweep_ms; /* last liveness sweep by this handle (any thread) */
  /* Lower bounds of the other side's position, as this process last read
   * it (positions only grow, so a stale copy errs on the safe side): a put
   * re-reads release, a get tail, only when the copy says full or empty,
   * instead of pulling the other side's cache line over on every message.
   * Stored with release after an acquire load of the shared word, loaded
   * with acquire: another thread of ours may use what one thread read. */
  _Atomic uint64_t seen_release;
  _Atomic uint64_t seen_tail;
  bool spin; /* spinning before sleep is allowed */
  /* Parking (see mproc__q_enter): whether a lock was ever parked through
   * this handle, and the calls mproc__q_alone skips before it counts the
   * process's threads again, and the next such pause. */
  _Atomic bool parked_ever;
  _Atomic uint32_t alone_skip, alone_pause;
  int fork_slot;  /* slot reserved for the child of a fork in progress */
  int fd;         /* memfd of an anonymous queue made here (mproc_queue_fd), or -1 */
  char name[208]; /* name if this process created it (unlinked at free) */
  struct mproc_queue *next, *prev; /* process-local list, for fork */
};

/* Both locks (producer side, then consumer side: always in that order),
 * for the rare operations that change both sides: attach, detach, sweep,
 * task_done, free.  Returns 0 or MPROC_EBROKEN. */
int mproc__q_lock(struct mproc_queue *q);
void mproc__q_unlock(struct mproc_queue *q);
/* One side's lock, with owner-death accounting and the revoking of a
 * parking.  Returns 0 or MPROC_EBROKEN.  Inline: one compare-and-swap when
 * uncontended. */
int mproc__q_lock1_slow(struct mproc_queue *q, mproc__tidlock *m);
static inline int mproc__q_lock1(struct mproc_queue *q, mproc__tidlock *m) {
  uint64_t free_word = 0;
  if (MPROC__LIKELY(atomic_compare_exchange_strong_explicit(
          &m->word, &free_word, mproc__tidlock_who(), memory_order_acquire, memory_order_relaxed)))
    return 0;
  return mproc__q_lock1_slow(q, m);
}
/* Wakes every sleeper on a sequence word if its waiter count is nonzero.
 * With `pending` (cleared by each new sleeper before its last re-check),
 * only the first waker after a sleeper went to sleep makes the system call:
 * a producer running while its consumer is descheduled does not pay one
 * per message.  NULL: always wake (close, death, join). */
void mproc__q_wake(_Atomic uint32_t *seq, _Atomic uint32_t *nwait, _Atomic uint32_t *pending);
/* mproc__q_wake after its fence, once the count was seen nonzero. */
void mproc__q_wake_counted(_Atomic uint32_t *seq, _Atomic uint32_t *pending);
/* Tests only: sleeps of this process that ran to their sweep-period cap
 * with the sequence word unchanged (a wake-up that never came), and a hook
 * called by a waiter announcing itself, between its read of the sequence
 * word and its clearing of `pending` (queue_ring.c, wait_step). */
extern _Atomic uint64_t mproc__q_capped_sleeps;
extern void (*_Atomic mproc__q_announce_hook)(void);
/* ---- parking a side's lock ------------------------------------------------
 *
 * A queue with one producer and one consumer process pays, on each side,
 * one compare-and-swap per message for its lock, and on x86 that locked
 * instruction waits for every store before it, including the previous
 * message's stores to the lines the other side is reading: half the cost
 * of a small message.  So the only process of a side keeps its lock
 * between calls instead of releasing it: it "parks" the word (tidlock.h:
 * the owner's word with the park bit), and enters and leaves its critical
 * sections by an asymmetric Dekker pair (futex.h) on two words: it stores
 * its participant slot's `busy` = 1, makes the light fence (a compiler
 * barrier) and checks that `revoke` is 0 and the word still parked by it;
 * it leaves by storing busy = 0 (release), the light fence, and a wake-up
 * of `busy` only when someone revokes.  Anyone else who needs the lock
 * (attach, detach, sweep, free, a new thread, the owner's own slow paths)
 * meets the parked word in its acquire and revokes (queue.c,
 * park_revoke.c): it counts itself in `revoke`, makes the heavy fence,
 * waits for busy to read 0, and takes the word with a compare-and-swap from
 * the parked value.  Either the
 * owner sees the revoker counted and backs off, or the revoker sees the
 * owner busy and waits: never both inside.
 *
 * Parking requires, checked when the holder leaves a normal critical
 * section: membarrier (else the light fence is a full one, no cheaper than
 * the lock), being the side's only process (else every call would revoke
 * the other's parking), a queue that is not joinable (task_done takes both
 * locks on every message), and a process of one thread (mproc__q_alone).
 * The busy words are the process's, written only by the thread that parked
 * the word; with no other thread at parking time, no other thread of ours
 * can be the parker later while that one still runs, so none can overwrite
 * its busy word.  Threads made later are revokers like other processes.
 * The one write such a thread could still make late is a parker's own
 * back-off of a fast entry it began before it was revoked: its slot is
 * therefore not handed to another process while the process lives (see
 * mproc__q_drop_roles).  Crash safety is the lock's: an owner that dies while
 * parked but outside a critical section leaves busy 0, and the revoker
 * takes the word at once; one that dies inside leaves busy 1, and the
 * revoker judges the owner dead as a waiter of tidlock.c does (after a
 * sleep slice, through /proc) and takes the word with MPROC_EOWNERDEAD, the
 * records being consistent as they are (queue.c).  A stopped owner blocks
 * a revoker only while inside a critical section, like a holder of the lock.
 * A revoker whose membarrier is refused (a seccomp filter) cannot trust the
 * busy word: it waits instead for the parker to give the word up, which a
 * parker does at its next put or get once it sees `revoke` (and it parks no
 * more while someone revokes), or for the parker to be found dead; a live
 * parker that makes no further call keeps such a revoker waiting.
 */
static inline mproc__tidlock *mproc__q_side_lock(const struct mproc_queue *q, int side) {
  return side == MPROC__Q_PUT ? &q->h->plock : &q->h->clock;
}
static inline struct mproc__qpark *mproc__q_side_park(const struct mproc_queue *q, int side) {
  return side == MPROC__Q_PUT ? &q->h->ppark : &q->h->cpark;
}

/* Leaves a parked critical section: busy back to 0, then the light fence,
 * which the caller's wake-up check may rely on. */
void mproc__q_unbusy_wake(struct mproc_queue *q, int side, _Atomic uint32_t *busy);
static inline void mproc__q_unbusy(struct mproc_queue *q, int side, _Atomic uint32_t *busy) {
  atomic_store_explicit(busy, 0, memory_order_release);
  mproc__fence_light();
  if (MPROC__UNLIKELY(
          atomic_load_explicit(&mproc__q_side_park(q, side)->revoke, memory_order_relaxed) != 0))
    mproc__q_unbusy_wake(q, side, busy); /* and gives the parking up */
}

/* Enters a side's critical section (usable() checked): through the parked
 * word when this thread parked it, else by mproc__q_lock1.  *parked tells
 * mproc__q_exit which way.  Returns 0 or MPROC_EBROKEN. */
static inline int mproc__q_enter(struct mproc_queue *q, int side, bool *parked) {
  mproc__tidlock *m = mproc__q_side_lock(q, side);
  uint64_t me = mproc__tidlock_me;
  int part = atomic_load_explicit(&q->part, memory_order_relaxed);
  *parked = false;
  if (me != 0 &&
      atomic_load_explicit(&m->word, memory_order_relaxed) == (me | MPROC__TIDLOCK_PARK) &&
      part >= 0) {
    struct mproc__qpark *pk = mproc__q_side_park(q, side);
    _Atomic uint32_t *busy = &q->h->parts[part].busy[side];
    atomic_store_explicit(busy, 1, memory_order_relaxed);
    mproc__fence_light();
    /* The word again after `revoke`: a revoker that took it over has
     * uncounted itself already. */
    if (MPROC__LIKELY(atomic_load_explicit(&pk->revoke, memory_order_acquire) == 0 &&
                      atomic_load_explicit(&m->word, memory_order_relaxed) ==
                          (me | MPROC__TIDLOCK_PARK))) {
      *parked = true;
      return 0;
    }
    mproc__q_unbusy(q, side, busy);
  }
  return mproc__q_lock1(q, m);
}

/* Whether the calling process has exactly one thread: glibc's
 * __libc_single_threaded when it says so (it never turns true again once a
 * thread was made, nor in the child of a fork of such a process), else
 * /proc/self/stat's thread count, read again only after a growing number of
 * calls that found other threads. */
bool mproc__q_alone(struct mproc_queue *q);
/* The same, counted now. */
bool mproc__q_threads_alone(void);

/* Whether the holder of a side's lock may park it when it leaves (see
 * above); the side's role count is exact under its lock. */
static inline bool mproc__q_may_park(struct mproc_queue *q, int side) {
  const struct mproc__qhdr *h = q->h;
  uint32_t n = atomic_load_explicit(side == MPROC__Q_PUT ? &h->nproducers : &h->nconsumers,
                                    memory_order_relaxed);
  return n == 1 && !(h->flags & MPROC_QUEUE_JOINABLE) && mproc__fence_asym() &&
         atomic_load_explicit(&q->part, memory_order_relaxed) >= 0 && mproc__q_alone(q);
}
/* Parks the side's lock the caller holds, then the light fence. */
void mproc__q_park(struct mproc_queue *q, int side);

/* Leaves the critical section mproc__q_enter entered (parking the lock
 * when allowed), then makes the light fence: a caller may read wake-up
 * counts right after. */
static inline void mproc__q_exit(struct mproc_queue *q, int side, bool parked) {
  if (parked) {
    mproc__q_unbusy(q, side,
                    &q->h->parts[atomic_load_explicit(&q->part, memory_order_relaxed)].busy[side]);
  } else if (mproc__q_may_park(q, side)) {
    mproc__q_park(q, side);
  } else {
    mproc__tidlock *m = mproc__q_side_lock(q, side);
    mproc__tidlock_release(m);
    mproc__fence_light();
    mproc__tidlock_wake(m);
  }
}

/* mproc__q_exit, then mproc__q_wake without a second fence: the hot path's
 * one light fence serves the lock's sleepers and the queue's.  Inline: a
 * store, a compiler barrier and two loads when nobody sleeps. */
static inline void mproc__q_exit_wake(struct mproc_queue *q, int side, bool parked,
                                      _Atomic uint32_t *seq, _Atomic uint32_t *nwait,
                                      _Atomic uint32_t *pending) {
  mproc__q_exit(q, side, parked);
  if (MPROC__UNLIKELY(atomic_load_explicit(nwait, memory_order_relaxed) != 0))
    mproc__q_wake_counted(seq, pending);
}

/* Maps header + ring, and the ring a second time right after itself, with
 * `prot`; sets q->h, q->ring, q->map_len, q->cap. */
int mproc__q_map(int fd, size_t hdr, size_t cap, int prot, struct mproc_queue *q);
/* Checks the geometry a header claims against the object's size; on success
 * sets q->cap, q->max_parts, q->qid and *hdr.  MPROC_EAGAIN (not yet
 * initialised) or MPROC_ECORRUPT. */
int mproc__q_geometry(const struct mproc__qhdr *peek, size_t size, struct mproc_queue *q,
                      size_t *hdr);

/* queue_named.c: the lifetime of named queues. */
/* An unnamed /dev/shm object of `size` bytes (O_TMPFILE, registered fd). */
int mproc__q_named_tmpfile(size_t size, int *fd);
/* Once the queue in it is initialised: takes LOCK_SH, starts its keeper and
 * gives it `name` (-EEXIST if taken). */
int mproc__q_named_publish(int fd, const char *name);
/* An opener's LOCK_SH; -ENOENT when the name is being removed. */
int mproc__q_named_join(int fd);

/* queue_part.c: participants. */
/* Attaches the calling process with `roles` (lock taken inside).  Returns the
 * slot index or MPROC_EFULL. */
int mproc__q_attach(struct mproc_queue *q, unsigned roles, bool pending);
/* Drops roles of the calling process; frees the slot when none is left.
 * Caller holds the lock. */
void mproc__q_drop_roles(struct mproc_queue *q, unsigned roles);
/* Liveness sweep: reclaims participants that died (their in-flight records
 * become DEAD, their roles and joinable counts are released).  Returns true
 * when something changed.  Takes the lock itself. */
bool mproc__q_sweep(struct mproc_queue *q);
/* Sweep if the last one by this handle is older than the period. */
bool mproc__q_maybe_sweep(struct mproc_queue *q);
/* Registers/unregisters a handle for re-attachment in forked children. */
void mproc__q_track(struct mproc_queue *q);
void mproc__q_untrack(struct mproc_queue *q);
/* Releases what a DEAD/abandoned record holds (unlinks a spill object). */
void mproc__q_drop_record(struct mproc_queue *q, struct mproc__qrec *r);
/* Advances release over DONE, DEAD and (below head) COMMITTED records.
 * Caller holds the lock. */
void mproc__q_advance_release(struct mproc_queue *q);
/* Size in the ring of a record. */
static inline uint64_t mproc__q_rec_size(uint32_t kind, uint64_t len) {
  uint64_t body = kind == MPROC__QK_SPILL ? MPROC__Q_NAME_MAX : len;
  return (sizeof(struct mproc__qrec) + body + 7) & ~(uint64_t)7;
}
/* Makes a fresh spill name of this queue: "/mproc.<pid>.q<qid>.<seq>.<rnd>". */
int mproc__q_spill_name(const struct mproc_queue *q, char name[MPROC__Q_NAME_MAX]);
/* Whether the NAME_MAX bytes at `name` hold a NUL-terminated spill name of
 * this queue (made by mproc__q_spill_name), so a corrupt record can never
 * make a consumer read or unlink another /dev/shm object. */
bool mproc__q_spill_name_ok(const struct mproc_queue *q, const char *name);
/* Validates a record read from shared memory that may use at most `room`
 * bytes of the ring: a known kind, an inline length that fits the ring, a
 * spill name of this queue's own (see mproc__q_spill_name_ok).  Returns its
 * size in the ring, or 0 when it is corrupt. */
static inline uint64_t mproc__q_rec_check(const struct mproc_queue *q, const struct mproc__qrec *r,
                                          uint64_t room) {
  uint32_t kind = r->kind;
  uint64_t len = r->len;
  if (kind == MPROC__QK_INLINE) {
    if (len > q->cap - sizeof(struct mproc__qrec))
      return 0;
  } else if (kind != MPROC__QK_SPILL || len > (uint64_t)PTRDIFF_MAX ||
             !mproc__q_spill_name_ok(q, (const char *)(r + 1))) {
    return 0;
  }
  uint64_t size = mproc__q_rec_size(kind, len);
  return size <= room ? size : 0;
}

#define MPROC__Q_SWEEP_MS 100

/* Increment of a counter only ever changed under one lock: no locked RMW. */
static inline void mproc__q_bump(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* The record at a ring position. */
static inline struct mproc__qrec *mproc__q_rec_at(const struct mproc_queue *q, uint64_t pos) {
  return (struct mproc__qrec *)(q->ring + (pos & (q->cap - 1)));
}

#endif /* MPROC_QUEUE_INTERNAL_H */
