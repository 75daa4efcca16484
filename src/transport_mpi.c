/* The pool's MPI transport: struct mproc__transport_ops over worker ranks.
 *
 * Design notes.  Slot i of a pool is worker rank i + 1; a task handed to a
 * slot becomes a job of rank 0's dispatcher (mpi_client.c) pinned to that
 * rank, and the slot keeps its jobs in send order.  Against today's ops
 * table (src/transport.h):
 *   init          needs mproc_mpi_init to have found worker ranks, at most
 *                 one slot per rank; the "ring" is tasks_per_rank
 *   start_worker  nothing to start: ranks live as long as the job, so the
 *                 slot gets no pid and no pidfd
 *   send_task     K_CALL only: the function reference made portable
 *                 (build-id + offset, or registered name), the argument
 *                 copied from memory or from its memfd; map chunks and fds
 *                 cannot travel yet (MPROC_ENOTSUP)
 *   poll_results  one progress step, then every finished job of the slot
 *                 in send order becomes an outcome (the result payload is
 *                 handed over, not copied)
 *   revoke        a sent task belongs to its rank: never revoked
 *   started       a sent task counts as started
 *   running       the oldest job of the slot, since it was sent
 *   reset_slot    cancels the slot's jobs (results discarded on arrival)
 *                 and hands their tasks back as started
 *   arm_sleep     reports whether any job finished since *seen
 *   arena         none: map data must travel by value (see below)
 * The per-task timeout travels with the task and is enforced on the rank,
 * where the task's local worker is killed.
 *
 * This file is built into libmproc_mpi and exercised directly through its
 * ops (tests/mpi, case "transport"); the pool cannot choose it yet.  What
 * the seam must offer for that is listed in mpi_client.c's design notes:
 * run-time registration of a transport, slots without pids (worker death
 * reported by the transport), a wake-up for the manager, one MPI thread,
 * map data by value, portable function references, and cancel as a
 * transport operation. */
#include "mpi_internal.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct sent {
  struct sent *next;
  struct mproc__task *t;
  struct mproc__mpi_job *j;
};

struct tp_mpi {
  struct sent **head, **tail; /* per slot, in send order */
  int *count;                 /* per slot */
  uint64_t finished;          /* jobs turned into outcomes (arm_sleep) */
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
  }
  if (!s || !s->head || !s->tail || !s->count) {
    if (s) {
      free(s->head);
      free(s->tail);
      free(s->count);
    }
    free(s);
    return -ENOMEM;
  }
  p->tp_state = s;
  p->ring = (uint32_t)mproc__mpi.tasks_per_rank;
  return 0;
}

static int tm_start_worker(struct mproc_pool *p, int slot) {
  p->slots[slot].pid = 0;
  p->slots[slot].pidfd = -1;
  return 0;
}

static bool tm_can_send(struct mproc_pool *p, int slot) {
  return tp(p)->count[slot] < mproc__mpi.tasks_per_rank;
}

static int tm_send_task(struct mproc_pool *p, int slot, struct mproc__task *t) {
  if (t->kind != MPROC__K_CALL || t->nfds)
    return MPROC_ENOTSUP;
  void (*fn)(void) = mproc__fnref_resolve(t->fn);
  struct mproc__mpi_fn ref;
  int rc = fn ? mproc__mpi_fn_of(&ref, MPROC__MPI_FN_TASK, fn) : MPROC_EINVAL;
  if (rc)
    return rc;
  struct sent *e = calloc(1, sizeof *e);
  if (!e)
    return -ENOMEM;
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
    done(p, e->t, &o);
    mproc__mpi_job_free(e->j);
    free(e);
    s->finished++;
    n++;
  }
  return n;
}

static bool tm_revoke(struct mproc_pool *p, struct mproc__task *t) {
  (void)p, (void)t;
  return false;
}

static bool tm_started(struct mproc_pool *p, const struct mproc__task *t) {
  (void)p, (void)t;
  return true;
}

static struct mproc__task *tm_running(struct mproc_pool *p, int slot, int64_t *since_ms) {
  struct sent *e = tp(p)->head[slot];
  if (!e)
    return NULL;
  if (since_ms)
    *since_ms = mproc__mpi_job_sent_ms(e->j);
  return e->t;
}

static void tm_stop_worker(struct mproc_pool *p, int slot) {
  /* Ranks serve until mproc_mpi_finalize, not per pool. */
  (void)p, (void)slot;
}

static void tm_reset_slot(struct mproc_pool *p, int slot,
                          void (*left)(struct mproc_pool *, struct mproc__task *, bool started)) {
  struct tp_mpi *s = tp(p);
  while (s->head[slot]) {
    struct sent *e = pop(s, slot);
    mproc__mpi_cancel(e->j);
    mproc__mpi_job_free(e->j); /* its answer is dropped when it comes */
    if (left)
      left(p, e->t, true);
    free(e);
  }
}

static bool tm_ready(struct mproc_pool *p, int slot) {
  (void)p, (void)slot;
  return true;
}

static const char *tm_init_failure(struct mproc_pool *p, int slot, int *code) {
  (void)p, (void)slot, (void)code;
  return NULL;
}

static bool tm_arm_sleep(struct mproc_pool *p, uint64_t *seen) {
  mproc__mpi_progress();
  bool moved = tp(p)->finished != *seen;
  *seen = tp(p)->finished;
  return moved;
}

static void tm_disarm_sleep(struct mproc_pool *p) { (void)p; }

static void tm_helping(struct mproc_pool *p, int delta) { (void)p, (void)delta; }

static void *tm_arena(struct mproc_pool *p, uint64_t off) {
  (void)p, (void)off;
  return NULL;
}

static void tm_fini(struct mproc_pool *p) {
  struct tp_mpi *s = tp(p);
  if (!s)
    return;
  for (int i = 0; i < p->nworkers; i++)
    tm_reset_slot(p, i, NULL);
  free(s->head);
  free(s->tail);
  free(s->count);
  free(s);
  p->tp_state = NULL;
}

const struct mproc__transport_ops mproc__transport_mpi = {
    .name = "mpi",
    .init = tm_init,
    .start_worker = tm_start_worker,
    .can_send = tm_can_send,
    .send_task = tm_send_task,
    .poll_results = tm_poll_results,
    .revoke = tm_revoke,
    .started = tm_started,
    .running = tm_running,
    .stop_worker = tm_stop_worker,
    .reset_slot = tm_reset_slot,
    .ready = tm_ready,
    .init_failure = tm_init_failure,
    .arm_sleep = tm_arm_sleep,
    .disarm_sleep = tm_disarm_sleep,
    .helping = tm_helping,
    .arena = tm_arena,
    .fini = tm_fini,
};
