/* Internals of queues (src/queue.c, src/queue_part.c, src/joinable.c). */
#ifndef MPROC_QUEUE_INTERNAL_H
#define MPROC_QUEUE_INTERNAL_H

#include "internal.h"
#include "tidlock.h"

#include <stdatomic.h>

#define MPROC__Q_MAGIC 0x6d707175u /* "mpqu" */
#define MPROC__Q_VERSION 3u
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
  _Atomic int32_t pid;  /* 0: free slot */
  uint32_t roles;       /* MPROC_QUEUE_PRODUCER | MPROC_QUEUE_CONSUMER */
  uint64_t start_time;  /* /proc/<pid>/stat field 22: tells a reused pid apart */
  uint64_t outstanding; /* JoinableQueue: taken by it, not yet marked done */
  uint32_t pending;     /* 1: reserved by a forking parent (pid, start_time are
                           the parent's) for a child that has not claimed it */
  uint32_t pad;
  int64_t pending_until; /* CLOCK_MONOTONIC ms: a pending slot not claimed by
                            then belongs to a fork that failed */
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
  _Atomic uint64_t tail __attribute__((aligned(128))); /* end of reserved records */
  /* Consumer side: clock guards taking at head and releasing space. */
  mproc__tidlock clock __attribute__((aligned(128)));  /* owner-checked (tidlock.c) */
  _Atomic uint64_t gets;                               /* statistics: messages taken */
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
  bool spin;      /* spinning before sleep is allowed */
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
/* One side's lock, with owner-death accounting.  Returns 0 or
 * MPROC_EBROKEN.  Inline: one compare-and-swap when uncontended. */
int mproc__q_lock1_slow(struct mproc_queue *q, int r);
static inline int mproc__q_lock1(struct mproc_queue *q, mproc__tidlock *m) {
  int r = mproc__tidlock_lock(m, -1);
  return MPROC__LIKELY(r == 0) ? 0 : mproc__q_lock1_slow(q, r);
}
/* Wakes every sleeper on a sequence word if its waiter count is nonzero.
 * With `pending` (cleared by each new sleeper before its last re-check),
 * only the first waker after a sleeper went to sleep makes the system call:
 * a producer running while its consumer is descheduled does not pay one
 * per message.  NULL: always wake (close, death, join). */
void mproc__q_wake(_Atomic uint32_t *seq, _Atomic uint32_t *nwait, _Atomic uint32_t *pending);
/* mproc__q_wake after its fence, once the count was seen nonzero. */
void mproc__q_wake_counted(_Atomic uint32_t *seq, _Atomic uint32_t *pending);
/* Releases one side's lock m, then mproc__q_wake: the hot path's one fence
 * serves both the lock's sleepers and the queue's, and is light (futex.h).
 * Inline: a store, a compiler barrier and two loads when nobody sleeps. */
static inline void mproc__q_unlock_wake(mproc__tidlock *m, _Atomic uint32_t *seq,
                                        _Atomic uint32_t *nwait, _Atomic uint32_t *pending) {
  mproc__tidlock_release(m);
  mproc__fence_light();
  mproc__tidlock_wake(m);
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
uint64_t mproc__q_rec_size(uint32_t kind, uint64_t len);
/* Validates a record read from shared memory that may use at most `room`
 * bytes of the ring: a known kind, an inline length that fits the ring, a
 * spill name of this queue's own (see mproc__q_spill_name_ok).  Returns its
 * size in the ring, or 0 when it is corrupt. */
uint64_t mproc__q_rec_check(const struct mproc_queue *q, const struct mproc__qrec *r,
                            uint64_t room);
/* Makes a fresh spill name of this queue: "/mproc.<pid>.q<qid>.<seq>.<rnd>". */
int mproc__q_spill_name(const struct mproc_queue *q, char name[MPROC__Q_NAME_MAX]);
/* Whether the NAME_MAX bytes at `name` hold a NUL-terminated spill name of
 * this queue (made by mproc__q_spill_name), so a corrupt record can never
 * make a consumer read or unlink another /dev/shm object. */
bool mproc__q_spill_name_ok(const struct mproc_queue *q, const char *name);

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
