/* The pool's MPI transport: struct mproc__transport_ops over worker ranks.
 *
 * Design notes.  Slot i of a pool is worker rank i + 1; a task handed to a
 * slot becomes a job of rank 0's dispatcher (mpi_client.c) pinned to that
 * rank, and the slot keeps its jobs in send order.  The ops
 * (src/transport.h):
 *   init          needs mproc_mpi_init to have found worker ranks, at most
 *                 one slot per rank
 *   start_worker  nothing to start: ranks live as long as the job, so the
 *                 slot gets no pid and no pidfd
 *   send_task     -EAGAIN once the slot holds tasks_per_rank tasks;
 *                 K_CALL only: the function reference made portable
 *                 (build-id + offset), the argument copied from memory or
 *                 from its memfd; fds cannot travel (MPROC_ENOTSUP); no
 *                 arena ops, so the pool refuses map and imap itself
 *   poll_results  one progress step, then every finished job of the slot
 *                 in send order becomes an outcome (the result payload is
 *                 handed over, not copied)
 *   revoke        a sent task belongs to its rank: never revoked
 *   activity      the oldest job of the slot runs, since it was sent;
 *                 always past its initializer (none over MPI yet)
 *   stop          _TASK cancels that task's job (its failure comes back as
 *                 an outcome); _NOW cancels every job of the slot; _IDLE
 *                 waits for none to be left: then the slot's "worker" is
 *                 reported ended by poll_results (the rank itself serves
 *                 until mproc_mpi_finalize)
 *   reset_slot    cancels the slot's jobs (results discarded on arrival)
 *                 and hands their tasks back as started
 *   sleep         MPI has no descriptor: one progress step, then poll the
 *                 manager's fds for at most 1 ms, so results are collected
 *                 within about a millisecond
 * The per-task timeout travels with the task and is enforced on the rank,
 * where the task's local worker is killed.
 *
 * This file is built into libmproc_mpi and exercised directly through its
 * ops (tests/mpi, case "transport").  The seam now lets the pool run it:
 * slots need no pid (a rank's end comes through poll_results), stop is an
 * operation, and a transport is chosen by name from a registry
 * (mproc__transport_register, exported by libmproc.so for this library);
 * registering it and map chunks by value (mproc__task_ranges, with
 * mproc__arena_local as its arena) are left. */
#include "mpi_internal.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>

struct sent {
  struct sent *next;
  struct mproc__task *t;
  struct mproc__mpi_job *j;
};

struct tp_mpi {
  struct sent **head, **tail; /* per slot, in send order */
  int *count;                 /* per slot */
  int *stop;                  /* per slot: MPROC__STOP_* asked, 0 none */
};

static struct tp_mpi *tp(struct mproc_pool *p) { return p->tp_state; }

static int tm_init(struct mproc_pool *p) {
  int ranks = mproc_mpi_worker_ranks();
  if (ranks == 0)
    return MPROC_ESTATE;
  if (p->nworkers < 1 || p->nworkers > ranks || p->opts.initializer)
    return MPROC_EINVAL; /* an initializer's argument is a raw pointer */
  struct tp_mpi *s = calloc(1, sizeof *s);
  if (s) {
    s->head = calloc((size_t)p->nworkers, sizeof *s->head);
    s->tail = calloc((size_t)p->nworkers, sizeof *s->tail);
    s->count = calloc((size_t)p->nworkers, sizeof *s->count);
    s->stop = calloc((size_t)p->nworkers, sizeof *s->stop);
  }
  if (!s || !s->head || !s->tail || !s->count || !s->stop) {
    if (s) {
      free(s->head);
      free(s->tail);
      free(s->count);
      free(s->stop);
    }
    free(s);
    return MPROC_ENOMEM;
  }
  p->tp_state = s;
  return 0;
}

static int tm_start_worker(struct mproc_pool *p, int slot, int phase) {
  if (phase != MPROC__PHASE_LAUNCH)
    return 0;
  p->slots[slot].pid = 0;
  p->slots[slot].pidfd = -1;
  return 0;
}

static int tm_send_task(struct mproc_pool *p, int slot, struct mproc__task *t) {
  if (tp(p)->count[slot] >= mproc__mpi.tasks_per_rank)
    return -EAGAIN;
  if (t->kind != MPROC__K_CALL || t->nfds)
    return MPROC_ENOTSUP;
  void (*fn)(void) = mproc__taskfn_addr(t->fn);
  struct mproc__mpi_fn ref;
  int rc = fn ? mproc__mpi_fn_of(&ref, MPROC__MPI_FN_TASK, fn) : MPROC_EINVAL;
  if (rc)
    return rc;
  struct sent *e = calloc(1, sizeof *e);
  if (!e)
    return MPROC_ENOMEM;
  /* A large argument sits in a memfd: map it to send it (submit copies). */
  const void *arg = t->arg;
  void *map = NULL;
  if (t->arg_fd >= 0 && t->arg_len) {
    map = mmap(NULL, t->arg_len, PROT_READ, MAP_SHARED, t->arg_fd, 0);
    if (map == MAP_FAILED) {
      free(e);
      return -errno;
    }
    arg = map;
  }
  rc = mproc__mpi_submit_to(slot + 1, &ref, arg, t->arg_len, t->timeout_ms, &e->j);
  if (map)
    munmap(map, t->arg_len);
  if (rc) {
    free(e);
    return rc;
  }
  struct tp_mpi *s = tp(p);
  e->t = t;
  if (s->tail[slot])
    s->tail[slot]->next = e;
  else
    s->head[slot] = e;
  s->tail[slot] = e;
  s->count[slot]++;
  return 0;
}

static struct sent *pop(struct tp_mpi *s, int slot) {
  struct sent *e = s->head[slot];
  s->head[slot] = e->next;
  if (!s->head[slot])
    s->tail[slot] = NULL;
  s->count[slot]--;
  return e;
}

static int tm_poll_results(struct mproc_pool *p, int slot,
                           void (*done)(struct mproc_pool *, struct mproc__task *,
                                        struct mproc__outcome *)) {
  struct tp_mpi *s = tp(p);
  mproc__mpi_progress();
  int n = 0;
  struct mproc_task_error err;
  int code;
  while (s->head[slot] &&
         (code = mproc__mpi_job_result(s->head[slot]->j, NULL, NULL, &err)) != MPROC_ESTATE) {
    struct sent *e = pop(s, slot);
    struct mproc__outcome o = {.code = code, .exit_status = -1, .msg = ""};
    if (code) {
      o.task_code = err.task_code;
      o.pid = err.pid;
      o.signo = err.signo;
      o.exit_status = err.exit_status;
      o.index = err.index;
      o.msg = err.message;
    } else {
      o.res = mproc__mpi_job_take_result(e->j, &o.res_len);
    }
    e->t->slot = -1;
    done(p, e->t, &o);
    mproc__mpi_job_free(e->j);
    free(e);
    n++;
  }
  if ((s->stop[slot] == MPROC__STOP_IDLE && !s->head[slot]) || s->stop[slot] == MPROC__STOP_NOW) {
    /* The pool let the slot go: its end, as a worker's end. */
    struct mproc__outcome o = {.code = MPROC_EWORKERDIED, .msg = "the worker rank was released"};
    s->stop[slot] = 0;
    done(p, NULL, &o);
  }
  return n;
}

static int tm_revoke(struct mproc_pool *p, int slot, struct mproc__task *t,
                     void (*each)(struct mproc_pool *, struct mproc__task *)) {
  (void)p, (void)slot, (void)t, (void)each;
  return 0;
}

static void tm_activity(struct mproc_pool *p, int slot, struct mproc__activity *a) {
  struct sent *e = tp(p)->head[slot];
  a->running = e ? e->t : NULL;
  a->since = e ? mproc__mpi_job_sent_ms(e->j) : 0;
  a->waiting = NULL; /* a rank's queue is not visible from here */
  a->pos = 0;
}

static void tm_stop(struct mproc_pool *p, int slot, int how, struct mproc__task *t) {
  struct tp_mpi *s = tp(p);
  for (struct sent *e = s->head[slot]; e && how != MPROC__STOP_IDLE; e = e->next)
    if (how == MPROC__STOP_NOW || e->t == t)
      mproc__mpi_cancel(e->j);
  if (how != MPROC__STOP_TASK)
    s->stop[slot] = how;
}

static void tm_reset_slot(struct mproc_pool *p, int slot,
                          void (*left)(struct mproc_pool *, struct mproc__task *, bool started)) {
  struct tp_mpi *s = tp(p);
  while (s->head[slot]) {
    struct sent *e = pop(s, slot);
    mproc__mpi_cancel(e->j);
    mproc__mpi_job_free(e->j); /* its answer is dropped when it comes */
    e->t->slot = -1;
    if (left)
      left(p, e->t, true);
    free(e);
  }
  s->stop[slot] = 0;
}

/* Called without the pool mutex (transport.h): MPI and the slots' lists are
 * touched under it, as poll_results touches them, so one thread at a time
 * drives MPI. */
static int tm_sleep(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms) {
  struct tp_mpi *s = tp(p);
  bool waiting = false;
  pthread_mutex_lock(&p->mu);
  mproc__mpi_progress();
  for (int i = 0; i < p->nworkers && !waiting; i++)
    waiting = s->head[i] && mproc__mpi_job_result(s->head[i]->j, NULL, NULL, NULL) != MPROC_ESTATE;
  pthread_mutex_unlock(&p->mu);
  if (waiting)
    return 0; /* a result is waiting: collect it now */
  return poll(pfd, (nfds_t)n, timeout_ms < 0 || timeout_ms > 1 ? 1 : timeout_ms);
}

static void tm_helping(struct mproc_pool *p, int delta) { (void)p, (void)delta; }

static void tm_fini(struct mproc_pool *p) {
  struct tp_mpi *s = tp(p);
  if (!s)
    return;
  for (int i = 0; i < p->nworkers; i++)
    tm_reset_slot(p, i, NULL);
  free(s->head);
  free(s->tail);
  free(s->count);
  free(s->stop);
  free(s);
  p->tp_state = NULL;
}

const struct mproc__transport_ops mproc__transport_mpi = {
    .name = "mpi",
    .init = tm_init,
    .fini = tm_fini,
    .start_worker = tm_start_worker,
    .send_task = tm_send_task,
    .poll_results = tm_poll_results,
    .revoke = tm_revoke,
    .activity = tm_activity,
    .stop = tm_stop,
    .reset_slot = tm_reset_slot,
    .sleep = tm_sleep,
    .helping = tm_helping,
};
