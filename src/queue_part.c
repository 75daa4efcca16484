/* Queue participants: who is attached, who died, and re-attachment in forked
 * children.
 *
 * Design notes.  Python's Queue cannot tell a consumer that every producer is
 * gone, and a process killed while using it can wedge the others (cpython
 * #96062).  Here every process attached to a queue owns one slot of the
 * shared participant table: its pid, its start time (field 22 of
 * /proc/<pid>/stat, which tells a recycled pid apart) and its roles.  The
 * number of producers and consumers is kept beside the table, so "nobody
 * will ever put again" is one load.
 *
 * A slot's life: free (pid 0) -> attached (attach, under the lock) ->
 * roles dropped one by one (close/detach) -> free; or attached -> owner died
 * -> reclaimed by a sweep -> free.  A pid is not a handle we can poll across
 * unrelated processes, so death is found by polling: a process about to
 * block sweeps at most every MPROC__Q_SWEEP_MS (its sleeps are capped to
 * that period), which bounds how late a death is noticed.  The sweep reads
 * /proc outside the lock and re-checks the slot under it before reclaiming.
 * Reclaiming turns the dead process's in-flight records (RESERVED: it was
 * writing; CLAIMED: it was reading) into DEAD records, counted as lost, and
 * gives back what it held in the JoinableQueue count.
 *
 * Fork.  A child forked after a queue was created inherits the mapping and a
 * copy of the handle, but is a different participant.  The parent reserves
 * the child's slot in a pthread_atfork prepare handler, before fork, as a
 * "pending" slot carrying the parent's identity and roles; the child claims
 * it (its own pid and start time) in the child handler.  So there is no
 * window in which, say, a consumer sees zero producers because the parent
 * closed right after fork and the child has not attached yet.  A pending
 * slot lives as long as its parent, or PENDING_MS if never claimed (a fork
 * that failed).  The list of live handles is guarded by a mutex that the
 * prepare handler takes, so it is consistent in the child.  A process the
 * library forks for itself (MPROC__SPAWN_INTERNAL: a named block's keeper)
 * gets no slot and drops its copies' roles: it would otherwise count as a
 * producer and consumer for as long as it lives. */
#include "queue.h"
#include "futex.h"
#include "list.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Start time of a process, 0 if it is gone or a zombie. */
static uint64_t start_time_of(pid_t pid) {
  struct mproc__pstat ps;
  if (mproc__proc_stat(NULL, pid, &ps) != 0 || ps.state == 'Z' || ps.state == 'X')
    return 0;
  return ps.start_time;
}

/* How long a slot reserved for a forked child waits to be claimed. */
#define PENDING_MS 30000

int mproc__q_attach(struct mproc_queue *q, unsigned roles, bool pending) {
  struct mproc__qhdr *h = q->h;
  pid_t self = getpid();
  uint64_t start = start_time_of(self);
  for (int attempt = 0; attempt < 2; attempt++) {
    int err = mproc__q_lock(q);
    if (err != 0)
      return err;
    for (uint32_t i = 0; i < q->max_parts; i++) {
      struct mproc__qpart *p = &h->parts[i];
      if (atomic_load_explicit(&p->pid, memory_order_relaxed) != 0)
        continue;
      p->roles = roles;
      p->start_time = start;
      p->outstanding = 0;
      p->pending = pending;
      p->pending_until = pending ? mproc_now_ms() + PENDING_MS : 0;
      p->retired = 0;
      atomic_store_explicit(&p->busy[MPROC__Q_PUT], 0, memory_order_relaxed);
      atomic_store_explicit(&p->busy[MPROC__Q_GET], 0, memory_order_relaxed);
      atomic_store_explicit(&p->pid, self, memory_order_relaxed);
      atomic_fetch_add(&h->nparts, 1);
      atomic_fetch_or(&h->ever_roles, roles);
      if (roles & MPROC_QUEUE_PRODUCER)
        atomic_fetch_add(&h->nproducers, 1);
      if (roles & MPROC_QUEUE_CONSUMER)
        atomic_fetch_add(&h->nconsumers, 1);
      mproc__q_unlock(q);
      return (int)i;
    }
    mproc__q_unlock(q);
    /* Full: slots of dead processes may be reclaimable. */
    if (!mproc__q_sweep(q))
      break;
  }
  return MPROC_EFULL;
}

/* `keep`: a slot left without roles stays taken (retired) until its
 * process dies, instead of being freed. */
static void release_slot(struct mproc__qhdr *h, struct mproc__qpart *p, unsigned roles, bool keep) {
  if (roles & p->roles & MPROC_QUEUE_PRODUCER)
    atomic_fetch_sub(&h->nproducers, 1);
  if (roles & p->roles & MPROC_QUEUE_CONSUMER)
    atomic_fetch_sub(&h->nconsumers, 1);
  p->roles &= ~roles;
  if (p->roles == 0 && keep) {
    p->retired = 1;
  } else if (p->roles == 0) {
    atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
    atomic_fetch_sub(&h->nparts, 1);
  }
}

void mproc__q_drop_roles(struct mproc_queue *q, unsigned roles) {
  if (q->part < 0)
    return;
  /* A thread of ours that entered a parked critical section may still be
   * about to write this slot's busy words (queue.h); if another thread
   * lives, the slot is not handed to another process while we live. */
  bool keep = atomic_load_explicit(&q->parked_ever, memory_order_relaxed) &&
              (q->roles & ~roles) == 0 && !mproc__q_threads_alone();
  release_slot(q->h, &q->h->parts[q->part], roles, keep);
  q->roles &= ~roles;
  if (q->roles == 0)
    q->part = -1;
}

/* Under the lock: the process in slot i is dead; take back what it held. */
static void reclaim(struct mproc_queue *q, uint32_t i) {
  struct mproc__qhdr *h = q->h;
  bool joinable = h->flags & MPROC_QUEUE_JOINABLE;
  uint64_t pos = atomic_load(&h->release), tail = atomic_load(&h->tail);
  uint64_t size = tail - pos <= q->cap ? 1 : 0; /* corrupt positions: no walk */
  while (pos < tail && size != 0) {
    struct mproc__qrec *r = mproc__q_rec_at(q, pos);
    uint32_t st = atomic_load_explicit(&r->state, memory_order_acquire);
    /* A RESERVED record's kind and length were written under plock before
     * tail moved, so they are checked like any other. */
    size = mproc__q_rec_check(q, r, tail - pos);
    if (size != 0 && r->owner == i && (st == MPROC__QR_RESERVED || st == MPROC__QR_CLAIMED)) {
      atomic_fetch_add(&h->lost, 1);
      atomic_fetch_add(&h->lost_bytes, r->len);
      if (st == MPROC__QR_RESERVED && joinable)
        atomic_fetch_sub(&h->unfinished, 1);
      mproc__q_drop_record(q, r);
      atomic_store_explicit(&r->state, MPROC__QR_DEAD, memory_order_release);
    }
    pos += size;
  }
  struct mproc__qpart *p = &h->parts[i];
  if (joinable && p->outstanding > 0)
    atomic_fetch_sub(&h->unfinished, p->outstanding);
  p->outstanding = 0;
  release_slot(h, p, MPROC_QUEUE_BOTH, false);
  mproc__q_advance_release(q);
}

bool mproc__q_sweep(struct mproc_queue *q) {
  struct mproc__qhdr *h = q->h;
  atomic_store_explicit(&q->last_sweep_ms, mproc_now_ms(), memory_order_relaxed);
  bool changed = false;
  pid_t self = getpid();
  uint64_t self_start = start_time_of(self);
  for (uint32_t i = 0; i < q->max_parts; i++) {
    pid_t pid = atomic_load_explicit(&h->parts[i].pid, memory_order_relaxed);
    /* Our own slots are alive, except one reserved for a child of a fork
     * that failed (pending past its deadline).  A slot with our pid but
     * another start time is a dead process whose pid we were given again
     * (pid wrap, another pid namespace): not ours. */
    if (pid == 0 || (pid == self && !h->parts[i].pending && h->parts[i].start_time == self_start))
      continue;
    uint64_t start = start_time_of(pid);
    bool expired = h->parts[i].pending && mproc_now_ms() > h->parts[i].pending_until;
    if (start != 0 && start == h->parts[i].start_time && !expired)
      continue; /* alive (racy read of start_time: re-checked below) */
    if (mproc__q_lock(q) != 0)
      return changed;
    /* Still the same dead process?  (The slot may have been freed and taken
     * by a new process meanwhile.) */
    if (atomic_load_explicit(&h->parts[i].pid, memory_order_relaxed) == pid &&
        (h->parts[i].start_time != start ||
         (h->parts[i].pending && mproc_now_ms() > h->parts[i].pending_until))) {
      reclaim(q, i);
      changed = true;
    }
    mproc__q_unlock(q);
  }
  if (changed) {
    /* Everyone blocked may now see space, ECLOSED or a finished join. */
    atomic_fetch_add(&h->get_seq, 1);
    atomic_fetch_add(&h->put_seq, 1);
    atomic_fetch_add(&h->join_seq, 1);
    mproc__futex_wake(&h->get_seq, INT_MAX, true);
    mproc__futex_wake(&h->put_seq, INT_MAX, true);
    mproc__futex_wake(&h->join_seq, INT_MAX, true);
  }
  return changed;
}

bool mproc__q_maybe_sweep(struct mproc_queue *q) {
  if (mproc_now_ms() - atomic_load_explicit(&q->last_sweep_ms, memory_order_relaxed) <
      MPROC__Q_SWEEP_MS)
    return false;
  return mproc__q_sweep(q);
}

/* ---- handles of this process, for fork ---------------------------------- */

static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mproc_queue *tracked;
static pthread_once_t track_once = PTHREAD_ONCE_INIT;

static void before_fork(void) {
  pthread_mutex_lock(&track_lock);
  bool user = !mproc__internal_fork();
  for (struct mproc_queue *q = tracked; q != NULL; q = q->next) {
    int r = user && q->roles != 0 && q->part >= 0 ? mproc__q_attach(q, q->roles, true) : -1;
    q->fork_slot = r >= 0 ? r : -1;
  }
}

static void after_fork_parent(void) {
  /* The reserved slots now belong to the child (or expire if fork failed). */
  for (struct mproc_queue *q = tracked; q != NULL; q = q->next)
    q->fork_slot = -1;
  pthread_mutex_unlock(&track_lock);
}

static void after_fork_child(void) {
  pid_t self = getpid(), parent = getppid();
  bool user = !mproc__internal_fork();
  uint64_t start = user ? start_time_of(self) : 0;
  for (struct mproc_queue *q = tracked; q != NULL; q = q->next) {
    atomic_store_explicit(&q->last_sweep_ms, 0, memory_order_relaxed);
    /* The memfd is the creator's to hand out; the child keeps the mapping. */
    mproc__close(q->fd);
    q->fd = -1;
    int slot = q->fork_slot;
    q->fork_slot = -1;
    q->part = -1;
    if (!user)
      q->roles = 0; /* the library's own process: no part in the queue */
    if (q->roles == 0)
      continue;
    if (slot >= 0 && mproc__q_lock(q) == 0) {
      struct mproc__qpart *p = &q->h->parts[slot];
      if (p->pending && atomic_load_explicit(&p->pid, memory_order_relaxed) == parent) {
        p->start_time = start;
        p->pending = 0;
        atomic_store_explicit(&p->pid, self, memory_order_relaxed);
        q->part = slot;
      }
      mproc__q_unlock(q);
    }
    if (q->part < 0) {
      int r = mproc__q_attach(q, q->roles, false);
      q->part = r >= 0 ? r : -1; /* -1: operations report MPROC_EBROKEN */
    }
  }
  pthread_mutex_unlock(&track_lock);
}

static void track_init(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

void mproc__q_track(struct mproc_queue *q) {
  pthread_once(&track_once, track_init);
  pthread_mutex_lock(&track_lock);
  q->fork_slot = -1;
  MPROC__DLIST_INSERT_HEAD(tracked, q);
  pthread_mutex_unlock(&track_lock);
}

void mproc__q_untrack(struct mproc_queue *q) {
  pthread_mutex_lock(&track_lock);
  MPROC__DLIST_REMOVE(tracked, q);
  pthread_mutex_unlock(&track_lock);
}
