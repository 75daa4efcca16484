/* mproc — bounded multi-producer multi-consumer queues (Python's Queue, SimpleQueue,
 * JoinableQueue). */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A queue of byte messages in shared memory (Python's multiprocessing.Queue).
 * Any number of processes put and get; a message is copied in by put and out
 * by get, so the sender's buffer is free as soon as put returns and a process
 * with unconsumed puts can exit at once (there is no feeder thread).
 *
 * Sharing.  An anonymous queue (no name) is shared with the children forked
 * after it: they inherit the mapping and are attached with the creator's
 * roles during fork.  A named queue lives in /dev/shm and unrelated processes
 * of the same user attach with mproc_queue_attach().
 *
 * Participants and close.  Every process attached to a queue is a producer,
 * a consumer, or both (its roles).  A get on an empty queue with no producer
 * left returns MPROC_ECLOSED instead of blocking forever; a put with no
 * consumer left returns MPROC_ECLOSED ("left": before any producer or
 * consumer has ever attached, get waits and put queues).  A process leaves by
 * mproc_queue_close() (Python's close(): it will put no more),
 * mproc_queue_detach(), mproc_queue_free(), or by dying: death is noticed by a
 * process about to block, within about 100 ms.  An inherited handle carries
 * both roles: a child that only consumes calls mproc_queue_close(), one that
 * only produces detaches MPROC_QUEUE_CONSUMER, and a parent that takes no
 * part detaches both, or the others will wait for it.
 *
 * A handle is process-local memory; threads of one process may share it
 * (mproc_queue_free() excepted, which must not race with other calls). */
typedef struct mproc_queue mproc_queue;

/* Roles of a process in a queue. */
enum {
  MPROC_QUEUE_PRODUCER = 1u << 0,
  MPROC_QUEUE_CONSUMER = 1u << 1,
  MPROC_QUEUE_BOTH = MPROC_QUEUE_PRODUCER | MPROC_QUEUE_CONSUMER,
};

/* mproc_queue_new() flags. */
enum {
  /* Python's JoinableQueue: count unfinished tasks for task_done()/join(). */
  MPROC_QUEUE_JOINABLE = 1u << 0,
};

/* Options of mproc_queue_new(); NULL or all-zero gives an unbounded-count
 * queue (Python's SimpleQueue / Queue()) of the default byte capacity. */
struct mproc_queue_options {
  unsigned flags;            /* MPROC_QUEUE_* flags */
  size_t maxsize;            /* Python's maxsize: most messages queued; 0 = no count bound */
  size_t capacity;           /* bytes of the shared ring; 0 = 4 MiB; rounded up to a power
                                of two of at least one page; at most 1 GiB */
  unsigned roles;            /* the creating process's roles; 0 = MPROC_QUEUE_BOTH */
  const char *name;          /* NULL: anonymous; else a /dev/shm name ("/x") to create */
  unsigned max_participants; /* attached processes at once; 0 = 256, at most 65536 */
};

/* Creates a queue and attaches the calling process.  *q is owned by the
 * caller, released with mproc_queue_free().  Errors: MPROC_EINVAL (NULL q,
 * unknown flag or role, capacity or max_participants too large, a name not
 * of the form "/x" or longer than 200), -EEXIST (name taken), -ENOMEM,
 * -EMFILE, -errno.  Nothing is left behind on failure. */
MPROC_EXTERN int mproc_queue_new(mproc_queue **q, const struct mproc_queue_options *opts);

/* Attaches to the named queue another process created.  Errors: MPROC_EINVAL,
 * -ENOENT (no such name, or its last user just left and it is being
 * removed), MPROC_EAGAIN (its creator has not finished initializing it: try
 * again), MPROC_ECORRUPT (not an mproc queue of this version), MPROC_EFULL
 * (max_participants processes are attached), -errno. */
MPROC_EXTERN int mproc_queue_attach(mproc_queue **q, const char *name, unsigned roles);

/* Removes a queue's name from /dev/shm (attached processes keep using it).
 * Errors: MPROC_EINVAL, -ENOENT. */
MPROC_EXTERN int mproc_queue_unlink(const char *name);
/* The fd of an anonymous queue made by mproc_queue_new in this process, to
 * hand it to a process that did not inherit it (a pool worker forked before
 * the queue was made: mproc_submit_options.fds).  Valid until
 * mproc_queue_free; the caller must not close it.  MPROC_EINVAL for NULL,
 * MPROC_ESTATE for a named queue (open it by name) or a handle that was
 * inherited, opened or mapped from an fd. */
MPROC_EXTERN int mproc_queue_fd(const mproc_queue *q);
/* A handle on the queue whose fd was handed over (the caller keeps `fd`),
 * taking part with `roles` (0: both), as mproc_queue_attach does: release it
 * with mproc_queue_free, which gives the roles up.  Errors: MPROC_EINVAL (bad
 * arguments, not a shared object's fd), MPROC_ECORRUPT (another kind of
 * object, or a damaged header),
 * MPROC_EFULL (participant table full), -errno. */
MPROC_EXTERN int mproc_queue_from_fd(mproc_queue **out, int fd, unsigned roles);

/* Detaches the calling process, unmaps and frees the handle.  The creator of
 * a named queue also unlinks the name.  The last process to leave removes
 * oversized messages nobody took (see mproc_queue_put).  NULL is a no-op. */
MPROC_EXTERN int mproc_queue_free(mproc_queue *q);

/* Puts one message of `len` bytes (buf may be NULL only when len is 0).  Blocks
 * while the queue is full (maxsize messages, or not enough free bytes) until
 * the deadline.  A message larger than half the byte capacity is carried in a
 * /dev/shm object of its own whose name travels through the queue; it counts
 * for one message and for a few bytes of capacity.  Errors: MPROC_EINVAL,
 * MPROC_ETIMEDOUT, MPROC_ECLOSED (this process closed its producer role, or every
 * consumer has left), MPROC_EBROKEN (the handle could not attach in a
 * forked child), MPROC_ECORRUPT (the queue's positions in shared memory are
 * not valid), -ENOMEM/-ENOSPC (oversized message), -errno. */
MPROC_EXTERN int mproc_queue_put(mproc_queue *q, const void *buf, size_t len, int64_t timeout_ms);
/* Python's put_nowait(): as put with no wait; MPROC_EFULL when full. */
MPROC_EXTERN int mproc_queue_put_nowait(mproc_queue *q, const void *buf, size_t len);

/* Takes the oldest message into buf[0..cap), sets *len.  If it is longer than
 * cap, returns MPROC_ETOOSMALL with *len set to its size and takes nothing.
 * Blocks while the queue is empty until the deadline.  Errors: MPROC_EINVAL,
 * MPROC_ETIMEDOUT, MPROC_ECLOSED (empty and every producer has left, or this
 * process dropped its consumer role), MPROC_EBROKEN, MPROC_ECORRUPT (the next
 * record in shared memory is not valid: nothing is read or taken, except a
 * spilled message whose object does not match its record, which is dropped),
 * -errno. */
MPROC_EXTERN int mproc_queue_get(mproc_queue *q, void *buf, size_t cap, size_t *len,
                                 int64_t timeout_ms);
/* Python's get_nowait(): as get with no wait; MPROC_EEMPTY when empty. */
MPROC_EXTERN int mproc_queue_get_nowait(mproc_queue *q, void *buf, size_t cap, size_t *len);
/* As get, into a buffer allocated with malloc (the caller frees it; never NULL
 * on success, NULL on failure).  Extra error: -ENOMEM. */
MPROC_EXTERN int mproc_queue_get_alloc(mproc_queue *q, void **buf, size_t *len, int64_t timeout_ms);

/* Number of messages queued (including ones being written), capped at
 * INT_MAX; like Python's qsize() only a snapshot.  MPROC_EINVAL for NULL. */
MPROC_EXTERN int mproc_queue_qsize(mproc_queue *q);
/* 1 if empty / full (by count or by bytes: not even an empty message fits),
 * 0 if not, MPROC_EINVAL for NULL.  Snapshots. */
MPROC_EXTERN int mproc_queue_empty(mproc_queue *q);
MPROC_EXTERN int mproc_queue_full(mproc_queue *q);

/* Python's close(): this process will put no more (drops the producer role).
 * Consumers see MPROC_ECLOSED once no producer is left and the queue is
 * drained.  Errors: MPROC_EINVAL, MPROC_EBROKEN. */
MPROC_EXTERN int mproc_queue_close(mproc_queue *q);
/* Drops some of this process's roles (MPROC_QUEUE_PRODUCER/CONSUMER).
 * Dropping every role leaves the queue for this process; the handle must then
 * only be freed.  Errors: MPROC_EINVAL (unknown role bits), MPROC_EBROKEN. */
MPROC_EXTERN int mproc_queue_detach(mproc_queue *q, unsigned roles);

/* JoinableQueue: marks one message taken with get as processed.  Errors:
 * MPROC_EINVAL, MPROC_ESTATE (not a joinable queue), MPROC_EOVERRELEASE
 * (called more times than messages were put: Python's ValueError). */
MPROC_EXTERN int mproc_queue_task_done(mproc_queue *q);
/* JoinableQueue: blocks until every message put has been taken and marked
 * done (messages lost to a process death count as done).  Errors:
 * MPROC_EINVAL, MPROC_ESTATE, MPROC_ETIMEDOUT. */
MPROC_EXTERN int mproc_queue_join(mproc_queue *q, int64_t timeout_ms);

/* Counters of a queue since it was created (all processes together). */
struct mproc_queue_stats {
  uint64_t puts;       /* messages put */
  uint64_t gets;       /* messages taken */
  uint64_t spilled;    /* messages carried in their own /dev/shm object */
  uint64_t lost;       /* messages lost because their producer or consumer died
                          while copying them; never delivered partially */
  uint64_t lost_bytes; /* payload bytes of those */
  uint64_t repairs;    /* times a process died holding the queue's lock */
  uint32_t producers;  /* processes attached as producers now */
  uint32_t consumers;  /* processes attached as consumers now */
  uint64_t unfinished; /* JoinableQueue: messages not yet marked done */
};
/* Fills *st.  Errors: MPROC_EINVAL. */
MPROC_EXTERN int mproc_queue_stats(mproc_queue *q, struct mproc_queue_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_QUEUE_H */
