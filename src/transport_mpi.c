/* The pool's MPI transport: struct mproc__transport_ops over worker ranks.
 *
 * Design notes.  Slot i of a pool is worker rank i + 1, one slot per rank.
 * The pool's workers (its `workers` option; 0: one per rank) are shared out
 * over its slots -- 5 workers over 2 ranks: 3 on rank 1, 2 on rank 2 -- and
 * each rank runs its share in a local pool of that many supervised workers
 * made for this pool (mpi_rank.c), with the pool's initializer.  So a pool
 * runs as many tasks at once as it asked for, wherever they run.  A task
 * handed to a slot becomes a job of rank 0's dispatcher (mpi_client.c)
 * pinned to that rank and that local pool; the slot keeps its jobs in send
 * order.  The ops (src/transport.h):
 *   init          needs worker ranks (mproc_mpi_init found some); the
 *                 pool's workers are other images of the program, as under
 *                 spawn, so its start method says so (map_buf then sends
 *                 its element function by reference, not by address); an
 *                 initializer travels as a function reference, its
 *                 argument as initarg_len bytes (a pointer means nothing
 *                 on another node)
 *   start_worker  opens the slot's local pool on its rank (the rank itself
 *                 lives as long as the job): no pid, no pidfd; the answer
 *                 says when the initializer ran, or how it failed -- then
 *                 the slot is reported ended and the pool breaks, as on one
 *                 machine
 *   send_task     queues the task's job on rank 0 (flush sends what a
 *                 round of send_task queued: the tasks for one rank
 *                 together, in batches, mpi_wire.c); -EAGAIN once the slot
 *                 holds tasks_per_rank tasks per worker of its share; the
 *                 function travels as the core's portable reference
 *                 (fnref.h), the argument by value (from memory or its
 *                 memfd), a map chunk's input sent straight from the arena
 *                 (MPI reads it in place) and its output received straight
 *                 into it; descriptors cannot travel (MPROC_ENOTSUP)
 *   poll_results  one progress step, then every finished job of the slot
 *                 in send order becomes an outcome: a call's result payload
 *                 is handed over as is, a chunk's output is in the arena
 *                 already (a starmap chunk's is copied there)
 *   revoke        a sent task belongs to its rank: never revoked
 *   activity      the oldest job of the slot runs, since it was sent; the
 *                 initializer's state from the open job
 *   stop          _TASK cancels that task's job (the rank kills its local
 *                 worker; the failure comes back as an outcome); _NOW
 *                 cancels every job of the slot; _IDLE waits for none to be
 *                 left; then the slot's "worker" is reported ended through
 *                 poll_results (the rank itself serves until finalize)
 *   reset_slot    cancels the slot's jobs (results discarded on arrival)
 *                 and hands their tasks back as started
 *   fini          closes the local pools on the ranks
 *   sleep         (without the pool's mutex; takes it) MPI has no
 *                 descriptor: while jobs are out, progress and the
 *                 manager's fds are polled in a short spin (a tiny task's
 *                 answer is collected within microseconds), then in 1 ms
 *                 naps; with nothing out it sleeps on the fds alone
 *   arena         the core's arena in this process's memory
 *                 (mproc__arena_local): ranks get copies
 * The per-task timeout travels with the task and is enforced on the rank,
 * where the task's local worker is killed; the pool's own deadline (stop
 * _TASK) is the backstop.  Under MPROC_MPI_INRANK tasks run in the
 * ranks themselves, where nothing can stop one but ending the job: init
 * refuses task_timeout_ms and the dispatcher a task's timeout
 * (MPROC_ENOTSUP).  A rank that dies ends the job (mpi_client.c:
 * fail fast), so no slot is ever reported dead for that reason.
 *
 * Threads.  The pool calls these ops from its manager thread and from any
 * thread helping it (under the pool's mutex), and several pools may run
 * over the ranks at once: every call into the dispatcher, hence into MPI,
 * holds mproc__mpi_mu (MPI_THREAD_SERIALIZED, which mproc_mpi_init asks
 * for), as does mproc_mpi_finalize.  The order is the pool's mutex, then
 * mproc__mpi_mu. */
#include "mpi_internal.h"
#include "pool.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

pthread_mutex_t mproc__mpi_mu = PTHREAD_MUTEX_INITIALIZER;

struct sent {
  struct sent *next;
  struct mproc__task *t;
  struct mproc__mpi_job *j;
};

/* Per slot. */
struct tslot {
  struct sent *head, *tail;    /* jobs in send order */
  int count;                   /* ... how many */
  int stop;                    /* MPROC__STOP_* asked, 0 none */
  int share;                   /* the pool's workers on this rank */
  struct mproc__mpi_job *open; /* opening its local pool, until answered */
  int init;                    /* MPROC__INIT_*: where its initializer is */
  int init_code;
  char init_msg[200];
};

struct tp_mpi {
  struct tslot *slot;
  uint64_t pool;       /* this pool's id on the ranks */
  int out;             /* jobs out over every slot */
  _Atomic int helpers; /* threads spinning on the pool's futures (helping) */
  bool has_init;       /* the pool has an initializer: init_ref, initarg */
  struct mproc__mpi_fn init_ref;
  void *initarg;
  size_t initarg_len;
  /* The last function referenced: a pool's tasks mostly name one. */
  void (*last_fn)(void);
  uint32_t last_type;
  struct mproc__mpi_fn last_ref;
};

static struct tp_mpi *tp(struct mproc_pool *p) { return p->tp_state; }

static void state_free(struct tp_mpi *s) {
  if (!s)
    return;
  free(s->slot);
  free(s->initarg);
  free(s);
}

/* Pools on the ranks are numbered by rank 0 (under mproc__mpi_mu). */
static uint64_t next_pool_id;

static int tm_init(struct mproc_pool *p) {
  pthread_mutex_lock(&mproc__mpi_mu); /* finalize may be under way */
  int ranks = mproc_mpi_worker_ranks();
  pthread_mutex_unlock(&mproc__mpi_mu);
  if (ranks == 0) {
    fprintf(stderr, "mproc-mpi: pool: no worker ranks (mproc_mpi_finalize ran)\n");
    return MPROC_ESTATE;
  }
  const struct mproc_pool_options *o = &p->opts;
  if (o->initializer && o->initarg && o->initarg_len == 0)
    return MPROC_EINVAL; /* a pointer means nothing on another node */
  /* In-rank tasks cannot be timed out (mpi_client.c): say so up front. */
  if (mproc__mpi.inrank && o->task_timeout_ms > 0)
    return MPROC_ENOTSUP;
  int workers = o->workers > 0 ? o->workers : ranks;
  p->nworkers = workers < ranks ? workers : ranks;
  /* Workers are other images of the program: what decides by start method
   * (map_buf's element function) must not send an address. */
  p->opts.start_method = MPROC_START_SPAWN;
  struct tp_mpi *s = calloc(1, sizeof *s);
  if (s)
    s->slot = calloc((size_t)p->nworkers, sizeof *s->slot);
  if (!s || !s->slot ||
      (o->initializer && o->initarg_len && !(s->initarg = malloc(o->initarg_len)))) {
    state_free(s);
    return MPROC_ENOMEM;
  }
  for (int i = 0; i < p->nworkers; i++)
    s->slot[i].share = workers / p->nworkers + (i < workers % p->nworkers);
  if (o->initializer) {
    int rc = mproc__mpi_fn_of(&s->init_ref, MPROC__MPI_FN_INIT, (void (*)(void))o->initializer);
    if (rc) {
      state_free(s);
      return rc;
    }
    s->has_init = true;
    s->initarg_len = o->initarg_len;
    if (o->initarg_len)
      memcpy(s->initarg, o->initarg, o->initarg_len);
  }
  pthread_mutex_lock(&mproc__mpi_mu);
  s->pool = ++next_pool_id;
  pthread_mutex_unlock(&mproc__mpi_mu);
  p->tp_state = s;
  return 0;
}

static int tm_start_worker(struct mproc_pool *p, int slot, int phase) {
  if (phase != MPROC__PHASE_LAUNCH)
    return 0; /* opened in one step */
  struct tp_mpi *s = tp(p);
  struct tslot *sl = &s->slot[slot];
  p->slots[slot].pid = 0;
  p->slots[slot].pidfd = -1;
  pthread_mutex_lock(&mproc__mpi_mu);
  if (sl->open)
    mproc__mpi_job_free(sl->open);
  sl->open = NULL;
  int rc = mproc__mpi_open((struct mproc__mpi_to){slot + 1, s->pool}, sl->share,
                           s->has_init ? &s->init_ref : NULL, s->initarg, s->initarg_len,
                           p->opts.init_timeout_ms, &sl->open);
  mproc__mpi_flush();
  pthread_mutex_unlock(&mproc__mpi_mu);
  sl->init = rc == 0 && s->has_init ? MPROC__INIT_RUNNING : MPROC__INIT_READY;
  return rc;
}

/* The wire reference of a task's function (type: task or element). */
static int ref_of(struct tp_mpi *s, struct mproc__task *t, uint32_t type,
                  const struct mproc__mpi_fn **out) {
  void (*fn)(void) = mproc__taskfn_addr(t->fn);
  if (!fn)
    return MPROC_EINVAL;
  if (fn != s->last_fn || type != s->last_type) {
    int rc = mproc__mpi_fn_of(&s->last_ref, type, fn);
    if (rc) {
      s->last_fn = NULL;
      return rc;
    }
    s->last_fn = fn;
    s->last_type = type;
  }
  *out = &s->last_ref;
  return 0;
}

static int send_call(struct tp_mpi *s, struct mproc__mpi_to to, struct mproc__task *t,
                     struct mproc__mpi_job **j) {
  const struct mproc__mpi_fn *ref;
  int rc = ref_of(s, t, MPROC__MPI_FN_TASK, &ref);
  if (rc)
    return rc;
  /* A large argument sits in a memfd: map it to send it (submit copies). */
  const void *arg = t->arg;
  void *map = NULL;
  if (t->arg_fd >= 0 && t->arg_len) {
    map = mmap(NULL, t->arg_len, PROT_READ, MAP_SHARED, t->arg_fd, 0);
    if (map == MAP_FAILED)
      return -errno;
    arg = map;
  }
  rc = mproc__mpi_submit_to(to, ref, arg, t->arg_len, t->timeout_ms, j);
  if (map)
    munmap(map, t->arg_len);
  return rc;
}

/* A map chunk: its input and output in the arena (a starmap's columns are
 * copied into one payload). */
static int send_chunk(struct mproc_pool *p, struct mproc__mpi_to to, struct mproc__task *t,
                      struct mproc__mpi_job **j) {
  const struct mproc__mpi_fn *ref;
  int rc = ref_of(tp(p), t, MPROC__MPI_FN_MAP, &ref);
  if (rc)
    return rc;
  if (t->kind == MPROC__K_MAP)
    /* Straight from and into the arena: the pool keeps both ranges until
     * the chunk's outcome is in (or the job was freed, which waits for
     * transfers under way). */
    return mproc__mpi_submit_map(to, ref, p->tp->arena->at(p, t->in_off), t->count, t->in_size,
                                 p->tp->arena->at(p, t->out_off), t->out_size, j);
  const void *cols[MPROC_STARMAP_MAX_ARGS];
  size_t sizes[MPROC_STARMAP_MAX_ARGS];
  for (uint32_t k = 0; k < t->nargs && k < MPROC_STARMAP_MAX_ARGS; k++) {
    cols[k] = p->tp->arena->at(p, t->col_off[k]);
    sizes[k] = t->col_size[k];
  }
  return mproc__mpi_submit_starmap(to, ref, cols, t->count, t->nargs, sizes, t->out_size, j);
}

static int tm_send_task(struct mproc_pool *p, int slot, struct mproc__task *t) {
  struct tp_mpi *s = tp(p);
  struct tslot *sl = &s->slot[slot];
  if (sl->count >= sl->share * mproc__mpi.tasks_per_rank)
    return -EAGAIN;
  if (t->nfds ||
      (t->kind != MPROC__K_CALL && t->kind != MPROC__K_MAP && t->kind != MPROC__K_STARMAP))
    return MPROC_ENOTSUP; /* a descriptor, or a block by descriptor (map_shm,
                             refused before it gets here: no forget_block),
                             means nothing on another node */
  struct sent *e = calloc(1, sizeof *e);
  if (!e)
    return MPROC_ENOMEM;
  struct mproc__mpi_to to = {slot + 1, s->pool};
  pthread_mutex_lock(&mproc__mpi_mu);
  int rc = t->kind == MPROC__K_CALL ? send_call(s, to, t, &e->j) : send_chunk(p, to, t, &e->j);
  pthread_mutex_unlock(&mproc__mpi_mu);
  if (rc) {
    free(e);
    return rc;
  }
  e->t = t;
  t->slot = slot;
  if (sl->tail)
    sl->tail->next = e;
  else
    sl->head = e;
  sl->tail = e;
  sl->count++;
  s->out++;
  return 0;
}

/* The tasks just handed over go out, several for one rank in one message. */
static void tm_flush(struct mproc_pool *p) {
  (void)p;
  pthread_mutex_lock(&mproc__mpi_mu);
  mproc__mpi_flush();
  pthread_mutex_unlock(&mproc__mpi_mu);
}

static struct sent *pop(struct tp_mpi *s, int slot) {
  struct tslot *sl = &s->slot[slot];
  struct sent *e = sl->head;
  sl->head = e->next;
  if (!sl->head)
    sl->tail = NULL;
  sl->count--;
  s->out--;
  return e;
}

/* The outcome of a finished job (under mproc__mpi_mu); a chunk's output goes
 * back into the arena. */
static void outcome_of(struct mproc_pool *p, struct sent *e, struct mproc__outcome *o,
                       struct mproc_task_error *err) {
  struct mproc__task *t = e->t;
  *o = (struct mproc__outcome){.exit_status = -1, .msg = ""};
  o->code = mproc__mpi_job_result(e->j, NULL, NULL, err);
  if (o->code) {
    o->task_code = err->task_code;
    o->signo = err->signo;
    o->exit_status = err->exit_status;
    o->msg = err->message; /* names the rank and its host */
    if (t->kind != MPROC__K_CALL) {
      o->index = t->base_index + err->index;
      t->progress = err->index;
    }
    return;
  }
  size_t len;
  void *res = mproc__mpi_job_take_result(e->j, &len);
  if (t->kind == MPROC__K_CALL) {
    o->res = res;
    o->res_len = len;
    return;
  }
  if (len != t->count * t->out_size) {
    o->code = MPROC_ECORRUPT;
    o->index = t->base_index;
    snprintf(err->message, sizeof err->message,
             "rank %d sent %zu result bytes for a chunk of %llu elements of %llu bytes",
             mproc__mpi_job_rank(e->j), len, (unsigned long long)t->count,
             (unsigned long long)t->out_size);
    o->msg = err->message;
  } else if (len && res) { /* a map chunk's output is in the arena already */
    memcpy(p->tp->arena->at(p, t->out_off), res, len);
  }
  free(res);
}

/* The answer to the slot's open, once it came (under mproc__mpi_mu): true when it
 * failed, the initializer's failure then recorded for activity. */
static bool open_failed(struct tslot *sl) {
  struct mproc_task_error err;
  int code;
  if (!sl->open || !mproc__mpi_job_done(sl->open))
    return false;
  code = mproc__mpi_job_result(sl->open, NULL, NULL, &err);
  mproc__mpi_job_free(sl->open);
  sl->open = NULL;
  if (code == 0) {
    sl->init = MPROC__INIT_READY;
    return false;
  }
  sl->init = MPROC__INIT_FAILED;
  sl->init_code = code == MPROC_EINITFAILED || code == MPROC_EBROKEN ? MPROC_EINITFAILED : code;
  snprintf(sl->init_msg, sizeof sl->init_msg, "%s", err.message);
  return true;
}

static int tm_poll_results(struct mproc_pool *p, int slot,
                           void (*done)(struct mproc_pool *, struct mproc__task *,
                                        struct mproc__outcome *)) {
  struct tp_mpi *s = tp(p);
  struct tslot *sl = &s->slot[slot];
  int n = 0;
  pthread_mutex_lock(&mproc__mpi_mu);
  mproc__mpi_progress();
  bool failed = open_failed(sl);
  while (sl->head && mproc__mpi_job_done(sl->head->j)) {
    struct sent *e = pop(s, slot);
    struct mproc__outcome o;
    struct mproc_task_error err;
    outcome_of(p, e, &o, &err);
    mproc__mpi_job_free(e->j);
    /* done() may take the pool's callbacks' locks, never mproc__mpi_mu: dropping
     * it here keeps the order simple. */
    pthread_mutex_unlock(&mproc__mpi_mu);
    e->t->slot = -1;
    done(p, e->t, &o);
    free(e);
    n++;
    pthread_mutex_lock(&mproc__mpi_mu);
  }
  pthread_mutex_unlock(&mproc__mpi_mu);
  if (failed) {
    /* Its initializer failed: the slot's worker ended there, as a local
     * worker's would; the pool reads why from activity and breaks. */
    struct mproc__outcome o = {.code = MPROC_EWORKERDIED, .exit_status = -1, .msg = sl->init_msg};
    done(p, NULL, &o);
  } else if ((sl->stop == MPROC__STOP_IDLE && !sl->head) || sl->stop == MPROC__STOP_NOW) {
    /* The pool let the slot go: its end, as a worker's end. */
    char msg[128];
    pthread_mutex_lock(&mproc__mpi_mu); /* finalize frees the host names */
    snprintf(msg, sizeof msg, "worker rank %d on %s was released by the pool", slot + 1,
             mproc__mpi.hosts ? mproc__mpi.hosts[slot + 1] : "?");
    pthread_mutex_unlock(&mproc__mpi_mu);
    struct mproc__outcome o = {.code = MPROC_EWORKERDIED, .exit_status = 0, .msg = msg};
    sl->stop = 0;
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
  struct tslot *sl = &tp(p)->slot[slot];
  struct sent *e = sl->head;
  a->running = e ? e->t : NULL;
  pthread_mutex_lock(&mproc__mpi_mu);
  a->since = e ? mproc__mpi_job_sent_ms(e->j) : 0;
  pthread_mutex_unlock(&mproc__mpi_mu);
  a->init = sl->init;
  a->init_code = sl->init_code;
  a->init_msg = sl->init_msg;
}

static void tm_stop(struct mproc_pool *p, int slot, int how, struct mproc__task *t) {
  struct tslot *sl = &tp(p)->slot[slot];
  pthread_mutex_lock(&mproc__mpi_mu);
  for (struct sent *e = sl->head; e && how != MPROC__STOP_IDLE; e = e->next)
    if (how == MPROC__STOP_NOW || e->t == t)
      mproc__mpi_cancel(e->j);
  pthread_mutex_unlock(&mproc__mpi_mu);
  if (how != MPROC__STOP_TASK)
    sl->stop = how;
}

static void tm_reset_slot(struct mproc_pool *p, int slot,
                          void (*left)(struct mproc_pool *, struct mproc__task *, bool started)) {
  struct tp_mpi *s = tp(p);
  while (s->slot[slot].head) {
    struct sent *e = pop(s, slot);
    pthread_mutex_lock(&mproc__mpi_mu);
    mproc__mpi_cancel(e->j);
    mproc__mpi_job_free(e->j); /* its answer is dropped when it comes */
    pthread_mutex_unlock(&mproc__mpi_mu);
    e->t->slot = -1;
    if (left)
      left(p, e->t, true);
    free(e);
  }
  s->slot[slot].stop = 0;
}

/* Whether jobs of the pool are out, and whether one of them finished
 * (one progress step first) or a slot has news for poll_results that
 * nothing else would wake the manager for: its open answered, or stop let
 * it go. */
static bool results_waiting(struct mproc_pool *p, bool *out) {
  struct tp_mpi *s = tp(p);
  bool ready = false;
  pthread_mutex_lock(&p->mu);
  *out = s->out > 0;
  for (int i = 0; i < p->nworkers && !ready; i++) {
    struct tslot *sl = &s->slot[i];
    ready = (sl->stop == MPROC__STOP_IDLE && !sl->head) || sl->stop == MPROC__STOP_NOW;
    *out = *out || sl->open;
  }
  if (*out && !ready) {
    pthread_mutex_lock(&mproc__mpi_mu);
    mproc__mpi_progress();
    for (int i = 0; i < p->nworkers && !ready; i++) {
      struct tslot *sl = &s->slot[i];
      ready = (sl->head && mproc__mpi_job_done(sl->head->j)) ||
              (sl->open && mproc__mpi_job_done(sl->open));
    }
    pthread_mutex_unlock(&mproc__mpi_mu);
  }
  pthread_mutex_unlock(&p->mu);
  return ready;
}

/* The manager polls MPI, yielding between polls, for MPROC__MPI_SPIN_US
 * after it went to sleep (a tiny task's round trip is well within it), then
 * naps a millisecond at a time in poll(2), so the pool's own fds still wake
 * it at once.  The spin was a millisecond measured with a millisecond clock
 * (anywhere from 0 to 2 ms of spinning); now it is bounded in microseconds. */
static int tm_sleep(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms) {
  /* A thread waiting on a future drives MPI itself while it spins (the
   * pool's helping): a second spinner would only take the CPU the ranks
   * need, so the manager naps instead (the helper drains once more when it
   * stops, and kicks the manager when there is work only it can do). */
  int64_t spin_until =
      mproc__mpi_now_us() + (atomic_load(&tp(p)->helpers) > 0 ? 0 : MPROC__MPI_SPIN_US);
  for (;;) {
    bool out;
    if (results_waiting(p, &out))
      return 0; /* collect them now */
    int r = poll(pfd, (nfds_t)n, 0);
    if (r != 0 || timeout_ms == 0)
      return r;
    if (!out) /* nothing out: only the fds can bring news */
      return poll(pfd, (nfds_t)n, timeout_ms);
    if (mproc__mpi_now_us() >= spin_until)
      return poll(pfd, (nfds_t)n, timeout_ms < 0 || timeout_ms > 1 ? 1 : timeout_ms);
    sched_yield(); /* ranks may share this CPU: let them run */
  }
}

static void tm_helping(struct mproc_pool *p, int delta) {
  atomic_fetch_add(&tp(p)->helpers, delta);
}

static void tm_fini(struct mproc_pool *p) {
  struct tp_mpi *s = tp(p);
  if (!s)
    return;
  for (int i = 0; i < p->nworkers; i++) {
    tm_reset_slot(p, i, NULL);
    pthread_mutex_lock(&mproc__mpi_mu);
    mproc__mpi_job_free(s->slot[i].open);
    /* Only once MPI is still there (a pool freed after finalize finds the
     * ranks gone, and their pools with them). */
    if (mproc_mpi_worker_ranks() > 0)
      mproc__mpi_close(i + 1, s->pool);
    pthread_mutex_unlock(&mproc__mpi_mu);
  }
  state_free(s);
  p->tp_state = NULL;
}

const struct mproc__transport_ops mproc__transport_mpi = {
    .name = "mpi",
    .init = tm_init,
    .fini = tm_fini,
    .start_worker = tm_start_worker,
    .send_task = tm_send_task,
    .flush = tm_flush,
    .poll_results = tm_poll_results,
    .revoke = tm_revoke,
    .activity = tm_activity,
    .stop = tm_stop,
    .reset_slot = tm_reset_slot,
    .sleep = tm_sleep,
    .helping = tm_helping,
    .arena = &mproc__arena_local,
};
