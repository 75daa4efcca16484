/* Rank 0: jobs sent to the worker ranks and their results collected.
 *
 * Design notes.  A job is one task (a call, or a map chunk) bound for some
 * worker rank.  States:
 *   QUEUED  on rank 0, waiting for a rank with room (tasks_per_rank)
 *   SENT    its message is (being) sent; the rank holds it
 *   DONE    its result (or failure) arrived, or it was cancelled while queued
 * A job is dispatched to the rank with the fewest jobs in flight, so a slow
 * task never holds up the others queued behind it for long.  The argument
 * copy is kept until the send completes (MPI reads it in place); a result
 * payload is received into memory the job then owns -- or, for a map
 * chunk, straight into the caller's output buffer.  A map chunk's input is
 * borrowed, not copied: MPI reads it in place.  Both buffers belong to the
 * caller again once the job finished; freeing an unfinished job first waits
 * for a send that still reads the input and a receive that already writes
 * the output (both are under way, the rank takes and sends every message
 * promptly), and a result arriving later goes to memory of its own.
 *
 * Submitting only queues a job: it goes out at the next mproc__mpi_flush
 * or progress step, together with whatever else was queued for its rank by
 * then.  Jobs bound for one rank in one step travel as batches (mpi_wire.c)
 * when they are small -- one message, one match on the rank for a run of
 * tiny tasks -- and alone otherwise, always in queue order; a lone job is
 * sent alone, at once, never held back to fill a batch.  A batched job's
 * argument is copied into the batch, so it has no send of its own to wait
 * for; the batch's send is tracked with the control messages.  Ranks
 * answer in batches the same way: each frame is one job's result.
 *
 * Not thread-safe by itself: the raw calls here run on one thread (the
 * tests, the benchmark), and the pool's MPI transport (transport_mpi.c)
 * calls them under its own lock from whichever pool thread drives MPI at
 * the moment (MPI_THREAD_SERIALIZED).  Progress happens only inside these
 * calls (wait, progress, submit).
 *
 * Failure: any MPI error means a rank is gone.  Without ULFM nothing can be
 * repaired, so the job fails fast: the message names the rank and its host,
 * and MPI_Abort ends every process (mpiexec exits non-zero).  A job freed
 * before it finished stays until its result arrives, then goes. */
#include "mpi_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QUEUED = 0, SENT = 1, DONE = 2 };

struct mproc__mpi_job {
  struct mproc__mpi_job *next;  /* queue or in-flight list */
  struct mproc__mpi_job *onext; /* dispatched, in the rank's outgoing list */
  uint64_t id;
  int state;
  int rank;        /* 0 while queued */
  int pin;         /* the rank it must go to, 0: any */
  int64_t sent_ms; /* when it was sent (mproc_now_ms) */
  bool freed;      /* released by the caller: free when done */
  bool cancel;     /* a CANCEL was sent for it */
  struct mproc__mpi_task hdr;
  void *payload;   /* the argument copy (NULL: borrowed), until the send completed */
  const void *arg; /* what is sent: payload, or the caller's input */
  void *out;       /* MAP: where the result goes (out_len bytes), NULL: own memory */
  size_t out_len;
  struct mproc__mpi_op *send, *recv;
  int code;
  struct mproc_task_error err;
  void *result;
  size_t result_len;
};

/* Control messages (cancel, stop) in flight. */
struct ctrl {
  struct ctrl *next;
  struct mproc__mpi_op *op;
};

static struct {
  struct mproc__mpi_job *queue, *queue_tail; /* QUEUED, FIFO */
  struct mproc__mpi_job *flight;             /* SENT */
  struct mproc__mpi_job **out, **out_tail;   /* per rank: dispatched, to send */
  int *load;                                 /* jobs in flight per rank */
  uint64_t next_id;
  struct ctrl *ctrls;
  int stopped;                             /* ranks that confirmed STOP */
  int pinned;                              /* queued jobs pinned to a rank */
  uint64_t batches_sent, batches_received; /* messages of several tasks, results */
} C;

static const char *host_of(int rank) {
  return mproc__mpi.hosts && rank >= 0 && rank < mproc__mpi.size ? mproc__mpi.hosts[rank] : "?";
}

static void job_release(struct mproc__mpi_job *j) {
  mproc__mpi_op_free(j->send);
  mproc__mpi_op_free(j->recv);
  free(j->payload);
  free(j->result);
  free(j);
}

static int submit(const struct mproc__mpi_fn *fn, uint32_t type, void *payload, const void *arg,
                  size_t len, struct mproc__mpi_task *hdr, struct mproc__mpi_to to,
                  struct mproc__mpi_job **out) {
  int pin = to.rank;
  if (mproc_mpi_worker_ranks() == 0 || pin < 0 || pin >= mproc__mpi.size) {
    free(payload);
    return mproc_mpi_worker_ranks() == 0 ? MPROC_ESTATE : MPROC_EINVAL;
  }
  if (!C.load && !(C.load = calloc((size_t)mproc__mpi.size, sizeof *C.load))) {
    free(payload);
    return MPROC_ENOMEM;
  }
  if (!C.out) {
    C.out = calloc((size_t)mproc__mpi.size, sizeof *C.out);
    C.out_tail = calloc((size_t)mproc__mpi.size, sizeof *C.out_tail);
    if (!C.out || !C.out_tail) {
      free(C.out);
      free(C.out_tail);
      C.out = C.out_tail = NULL;
      free(payload);
      return MPROC_ENOMEM;
    }
  }
  struct mproc__mpi_job *j = calloc(1, sizeof *j);
  if (!j) {
    free(payload);
    return MPROC_ENOMEM;
  }
  j->id = ++C.next_id;
  j->hdr = *hdr;
  j->hdr.id = j->id;
  j->hdr.len = len;
  j->hdr.fn = *fn;
  j->hdr.fn.type = type;
  j->hdr.pool = to.pool;
  j->payload = payload;
  j->arg = payload ? payload : arg;
  j->pin = pin;
  if (C.queue_tail)
    C.queue_tail->next = j;
  else
    C.queue = j;
  C.queue_tail = j;
  if (pin)
    C.pinned++;
  *out = j;
  return 0; /* sent by the next mproc__mpi_flush or progress step */
}

/* A copy of len bytes the job owns (NULL for none): 0 or MPROC_ENOMEM. */
static int copy_of(const void *src, size_t len, void **out) {
  *out = NULL;
  if (len && !(*out = malloc(len)))
    return MPROC_ENOMEM;
  if (len)
    memcpy(*out, src, len);
  return 0;
}

int mproc__mpi_submit(const struct mproc__mpi_fn *fn, const void *arg, size_t len,
                      int64_t timeout_ms, struct mproc__mpi_job **out) {
  return mproc__mpi_submit_to((struct mproc__mpi_to){0, 0}, fn, arg, len, timeout_ms, out);
}

int mproc__mpi_submit_to(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn, const void *arg,
                         size_t len, int64_t timeout_ms, struct mproc__mpi_job **out) {
  if (!fn || !out || (len && !arg) || timeout_ms < 0 || fn->type != MPROC__MPI_FN_TASK)
    return MPROC_EINVAL;
  /* In-rank, nothing can stop a task that overruns but ending its rank,
   * hence the job: a timeout is refused rather than ignored. */
  if (mproc__mpi.inrank && timeout_ms > 0)
    return MPROC_ENOTSUP;
  void *copy;
  if (copy_of(arg, len, &copy) != 0)
    return MPROC_ENOMEM;
  struct mproc__mpi_task hdr = {.kind = MPROC__MPI_CALL,
                                .flags = mproc__mpi.inrank ? MPROC__MPI_INRANK : 0,
                                .timeout_ms = timeout_ms};
  return submit(fn, MPROC__MPI_FN_TASK, copy, NULL, len, &hdr, to, out);
}

int mproc__mpi_submit_map(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn, const void *in,
                          size_t n, size_t in_size, void *res, size_t out_size,
                          struct mproc__mpi_job **out) {
  if (!fn || !out || (n && !in) || !in_size || fn->type != MPROC__MPI_FN_MAP ||
      (n && in_size > SIZE_MAX / n) || (n && out_size > SIZE_MAX / n))
    return MPROC_EINVAL;
  size_t len = n * in_size;
  struct mproc__mpi_task hdr = {.kind = MPROC__MPI_MAP,
                                .flags = mproc__mpi.inrank ? MPROC__MPI_INRANK : 0,
                                .count = n,
                                .in_size = in_size,
                                .out_size = out_size};
  struct mproc__mpi_job *j;
  int rc = submit(fn, MPROC__MPI_FN_MAP, NULL, in, len, &hdr, to, &j);
  if (rc == 0) {
    j->out = res;
    j->out_len = res ? n * out_size : 0;
    *out = j;
  }
  return rc;
}

int mproc__mpi_submit_starmap(struct mproc__mpi_to to, const struct mproc__mpi_fn *fn,
                              const void *const *cols, size_t n, size_t nargs,
                              const size_t *col_size, size_t out_size,
                              struct mproc__mpi_job **out) {
  if (!fn || !out || !cols || !col_size || nargs == 0 || nargs > MPROC_STARMAP_MAX_ARGS ||
      fn->type != MPROC__MPI_FN_MAP || (n && out_size > SIZE_MAX / n))
    return MPROC_EINVAL;
  struct mproc__mpi_task hdr = {.kind = MPROC__MPI_STARMAP,
                                .flags = mproc__mpi.inrank ? MPROC__MPI_INRANK : 0,
                                .count = n,
                                .out_size = out_size,
                                .nargs = nargs};
  size_t len = 0;
  for (size_t k = 0; k < nargs; k++) {
    if (!col_size[k] || (n && (col_size[k] > (SIZE_MAX - len) / n || !cols[k])))
      return MPROC_EINVAL;
    hdr.col_size[k] = col_size[k];
    len += n * col_size[k];
  }
  /* One payload: the columns one after the other. */
  unsigned char *copy = NULL;
  if (len && !(copy = malloc(len)))
    return MPROC_ENOMEM;
  for (size_t k = 0, at = 0; k < nargs && n; at += n * col_size[k], k++)
    memcpy(copy + at, cols[k], n * col_size[k]);
  return submit(fn, MPROC__MPI_FN_MAP, copy, NULL, len, &hdr, to, out);
}

int mproc__mpi_open(struct mproc__mpi_to to, int workers, const struct mproc__mpi_fn *init,
                    const void *arg, size_t len, int64_t init_timeout_ms,
                    struct mproc__mpi_job **out) {
  if (!out || to.rank < 1 || to.pool == 0 || workers < 1 || (len && !arg) || init_timeout_ms < 0 ||
      (init && init->type != MPROC__MPI_FN_INIT))
    return MPROC_EINVAL;
  void *copy;
  if (copy_of(arg, len, &copy) != 0)
    return MPROC_ENOMEM;
  struct mproc__mpi_task hdr = {.kind = MPROC__MPI_OPEN,
                                .flags = init ? MPROC__MPI_HAS_INIT : 0,
                                .count = (uint64_t)workers,
                                .timeout_ms = init_timeout_ms};
  static const struct mproc__mpi_fn none;
  return submit(init ? init : &none, MPROC__MPI_FN_INIT, copy, NULL, len, &hdr, to, out);
}

/* A failed MPI call: rank is the peer, or -1 when the call had none (a
 * probe of any source). */
static void lost(int rank, const char *what) {
  if (rank < 0)
    mproc__mpi_abort("lost a worker rank (%s): without fault-tolerant MPI the job cannot go on",
                     what);
  mproc__mpi_abort("lost worker rank %d on %s (%s): without fault-tolerant MPI the job cannot "
                   "go on",
                   rank, host_of(rank), what);
}

/* The rank with the fewest jobs in flight and room for one more, or 0. */
static int pick_rank(void) {
  int best = 0;
  for (int r = 1; r < mproc__mpi.size; r++)
    if (C.load[r] < mproc__mpi.tasks_per_rank && (!best || C.load[r] < C.load[best]))
      best = r;
  return best;
}

/* The rank has job j's argument: a copy goes, a borrowed one is the
 * caller's again. */
static void sent(struct mproc__mpi_job *j) {
  free(j->payload);
  j->payload = NULL;
  j->arg = NULL;
}

/* Send job j alone; its argument is kept until the send completed. */
static void send_alone(struct mproc__mpi_job *j) {
  if (mproc__mpi_isend(mproc__mpi.comm, j->rank, MPROC__MPI_TAG_TASK, &j->hdr, sizeof j->hdr,
                       (void *)j->arg, j->hdr.len, false, &j->send) != 0)
    lost(j->rank, "sending a task failed");
}

static void track(struct mproc__mpi_op *op);

/* Send the n jobs from j on (consecutive in rank r's outgoing list, every
 * one batchable, their frames fitting one batch) as one message; the
 * arguments are copied into it, so each job's copy goes at once. */
static void send_batch(int r, struct mproc__mpi_job *j, int n) {
  struct mproc__mpi_batch b = {0};
  struct mproc__mpi_job *k = j;
  for (int i = 0; i < n && k; i++, k = k->onext) {
    if (mproc__mpi_batch_add(&b, &k->hdr, sizeof k->hdr, k->arg, k->hdr.len) != 0) {
      mproc__mpi_batch_clear(&b); /* no memory for the batch: each goes alone */
      for (int m = 0; m < n; m++, j = j->onext)
        send_alone(j);
      return;
    }
  }
  for (int i = 0; i < n; i++, j = j->onext)
    sent(j);
  struct mproc__mpi_task hdr = {.kind = MPROC__MPI_BATCH, .count = (uint64_t)n};
  struct mproc__mpi_op *op;
  if (mproc__mpi_batch_send(mproc__mpi.comm, r, MPROC__MPI_TAG_TASK, &hdr, sizeof hdr, &b, &op) !=
      0)
    lost(r, "sending a batch of tasks failed");
  track(op);
  C.batches_sent++;
}

/* Send rank r's outgoing jobs, in order: each run of batchable jobs in as
 * few batches as hold it, a lone one (or one too large) alone -- a batch is
 * what is queued now, never waited for. */
static void send_out(int r) {
  struct mproc__mpi_job *j = C.out[r];
  C.out[r] = C.out_tail[r] = NULL;
  while (j) {
    int n = 0;
    size_t used = 0;
    struct mproc__mpi_job *end = j;
    while (end && mproc__mpi_batchable(sizeof end->hdr, end->hdr.len) &&
           used + mproc__mpi_frame_size(sizeof end->hdr, end->hdr.len) <= MPROC__MPI_INLINE) {
      used += mproc__mpi_frame_size(sizeof end->hdr, end->hdr.len);
      n++;
      end = end->onext;
    }
    if (n <= 1) {
      send_alone(j);
      j = j->onext;
    } else {
      send_batch(r, j, n);
      j = end;
    }
  }
}

/* Send queued jobs, in order: a pinned job at once (whoever pins them
 * keeps its own count: the pool's transport allows a slot as many as its
 * share of workers can use), the others to the least loaded rank with room.
 * The walk stops as soon as only unpinned jobs and no room are left: with
 * 100 000 tasks queued at once, walking the whole queue on every progress
 * step made submitting them quadratic. */
static bool dispatch(void) {
  bool moved = false;
  int room = 0;
  for (int r = 1; r < mproc__mpi.size; r++)
    room += C.load[r] < mproc__mpi.tasks_per_rank ? mproc__mpi.tasks_per_rank - C.load[r] : 0;
  struct mproc__mpi_job *prev = NULL;
  for (struct mproc__mpi_job *j = C.queue, *next; j && (room > 0 || C.pinned > 0); j = next) {
    next = j->next;
    int r = j->pin ? j->pin : room > 0 ? pick_rank() : 0;
    if (r == 0) {
      prev = j;
      continue;
    }
    if (prev)
      prev->next = next;
    else
      C.queue = next;
    if (C.queue_tail == j)
      C.queue_tail = prev;
    j->onext = NULL;
    if (C.out_tail[r])
      C.out_tail[r]->onext = j;
    else
      C.out[r] = j;
    C.out_tail[r] = j;
    j->rank = r;
    j->state = SENT;
    j->sent_ms = mproc_now_ms();
    if (C.load[r]++ < mproc__mpi.tasks_per_rank)
      room--;
    if (j->pin)
      C.pinned--;
    j->next = C.flight;
    C.flight = j;
    moved = true;
  }
  for (int r = 1; moved && r < mproc__mpi.size; r++)
    send_out(r);
  return moved;
}

void mproc__mpi_flush(void) {
  if (C.load)
    dispatch();
}

static void finish(struct mproc__mpi_job *j) {
  for (struct mproc__mpi_job **pp = &C.flight; *pp; pp = &(*pp)->next) {
    if (*pp == j) {
      *pp = j->next;
      break;
    }
  }
  C.load[j->rank]--;
  j->state = DONE;
  /* The rank answered, so it took the whole task: the send completes. */
  if (j->send && mproc__mpi_wait_op(j->send, mproc_now_ms() + 10000) != 0)
    lost(j->rank, "a task's send never completed");
  mproc__mpi_op_free(j->send);
  j->send = NULL;
  sent(j);
  if (j->freed)
    job_release(j);
}

/* A complete result message for job j. */
static void take_result(struct mproc__mpi_job *j) {
  const struct mproc__mpi_result *r = j->recv->hdr;
  j->code = r->code;
  memset(&j->err, 0, sizeof j->err);
  if (r->code) {
    j->err.code = r->code;
    j->err.task_code = r->task_code;
    j->err.pid = r->pid;
    j->err.signo = r->signo;
    j->err.exit_status = r->exit_status;
    j->err.index = (size_t)r->index;
    memcpy(j->err.message, r->message, sizeof j->err.message);
    j->err.message[sizeof j->err.message - 1] = '\0';
  } else if (j->recv->user == j) {
    j->result = NULL; /* received into j->out already */
    j->result_len = j->recv->len;
  } else {
    j->result = j->recv->data; /* the job owns the payload now */
    j->result_len = j->recv->len;
    j->recv->data = NULL;
    j->recv->free_data = false;
  }
  mproc__mpi_op_free(j->recv);
  j->recv = NULL;
  finish(j);
}

/* A map chunk's output goes straight where its caller wants it -- when the
 * job still has a place for it and the rank sends exactly that much. */
static void *place_result(void *ctx, int source, const void *hdr, size_t len, void **user) {
  (void)ctx;
  const struct mproc__mpi_result *r = hdr;
  if (r->batch != 0 || r->code != 0)
    return NULL;
  for (struct mproc__mpi_job *j = C.flight; j; j = j->next) {
    if (j->id == r->id && j->rank == source) {
      if (!j->out || j->out_len != len)
        return NULL;
      *user = j; /* take_result: the payload is in j->out */
      return j->out;
    }
  }
  return NULL;
}

/* A result message (complete or still arriving) goes to its job. */
static void attach(struct mproc__mpi_op *op) {
  const struct mproc__mpi_result *r = op->hdr;
  struct mproc__mpi_job *j = C.flight;
  while (j && !(j->id == r->id && j->rank == op->source))
    j = j->next;
  if (!j || j->recv || r->batch != 0)
    mproc__mpi_abort("rank %d sent a result for no job of ours (id %llu)", op->source,
                     (unsigned long long)r->id);
  j->recv = op;
}

int mproc__mpi_progress(void) {
  if (!C.load)
    return 0;
  int finished = 0;
  dispatch();
  struct mproc__mpi_op *op;
  int rc;
  static const struct mproc__mpi_place placed = {place_result, NULL};
  int tag;
  /* One probe of any tag per message, and one that finds nothing per step
   * (mproc__mpi_waiting: an empty probe yields the CPU). */
  while ((rc = mproc__mpi_waiting(mproc__mpi.comm, &tag)) == 1) {
    if (tag == MPROC__MPI_TAG_CTRL) {
      if ((rc = mproc__mpi_irecv(mproc__mpi.comm, MPROC__MPI_TAG_CTRL,
                                 sizeof(struct mproc__mpi_ctrl), NULL, &op)) != 0)
        break;
      const struct mproc__mpi_ctrl *c = op->hdr;
      if (c->what == MPROC__MPI_STOPPED)
        C.stopped++;
      mproc__mpi_op_free(op);
      continue;
    }
    if (tag != MPROC__MPI_TAG_RESULT)
      mproc__mpi_abort("a worker rank sent a message of unknown tag %d", tag);
    if ((rc = mproc__mpi_irecv(mproc__mpi.comm, MPROC__MPI_TAG_RESULT,
                               sizeof(struct mproc__mpi_result), &placed, &op)) != 0)
      break;
    const struct mproc__mpi_result *r = op->hdr;
    if (r->batch == 0) {
      attach(op);
      continue;
    }
    /* Results a rank collected together: each frame is a whole result. */
    size_t at = 0;
    int k, n = 0;
    struct mproc__mpi_op *f;
    while ((k = mproc__mpi_batch_next(op, &at, &f)) == 1 && ++n)
      attach(f);
    if (k < 0 || n != r->batch)
      mproc__mpi_abort("rank %d sent a malformed batch of results", op->source);
    mproc__mpi_op_free(op);
    C.batches_received++;
  }
  if (rc < 0)
    lost(-1, "receiving a message failed");
  for (struct mproc__mpi_job *j = C.flight, *next; j; j = next) {
    next = j->next;
    if (j->send && (rc = mproc__mpi_test(j->send)) != 0) {
      if (rc < 0)
        lost(j->rank, "sending a task failed");
      mproc__mpi_op_free(j->send);
      j->send = NULL;
      sent(j);
    }
    if (j->recv && (rc = mproc__mpi_test(j->recv)) != 0) {
      if (rc < 0)
        lost(j->rank, "receiving a result failed");
      take_result(j);
      finished++;
    }
  }
  for (struct ctrl **pp = &C.ctrls; *pp;) {
    struct ctrl *c = *pp;
    if ((rc = mproc__mpi_test(c->op)) != 0) {
      *pp = c->next;
      mproc__mpi_op_free(c->op);
      free(c);
    } else {
      pp = &c->next;
    }
  }
  if (finished)
    dispatch(); /* their ranks have room again */
  return finished;
}

int mproc__mpi_wait(struct mproc__mpi_job *j, int64_t timeout_ms) {
  if (!j || timeout_ms < -1)
    return MPROC_EINVAL;
  int64_t deadline = timeout_ms < 0 ? -1 : mproc_now_ms() + timeout_ms;
  struct mproc__mpi_idle w = {0};
  while (j->state != DONE) {
    if (mproc__mpi_progress() > 0 || j->state == DONE) {
      w = (struct mproc__mpi_idle){0};
      continue;
    }
    if (deadline >= 0 && mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    mproc__mpi_backoff(&w);
  }
  return 0;
}

int mproc__mpi_job_result(struct mproc__mpi_job *j, const void **data, size_t *len,
                          struct mproc_task_error *err) {
  if (!j)
    return MPROC_EINVAL;
  if (j->state != DONE)
    return MPROC_ESTATE;
  if (data)
    *data = j->result;
  if (len)
    *len = j->result_len;
  if (err)
    *err = j->err;
  return j->code;
}

void mproc__mpi_batch_counts(uint64_t *sent, uint64_t *received) {
  *sent = C.batches_sent;
  *received = C.batches_received;
}

bool mproc__mpi_job_done(const struct mproc__mpi_job *j) { return j && j->state == DONE; }

int mproc__mpi_job_rank(const struct mproc__mpi_job *j) { return j ? j->rank : MPROC_EINVAL; }

int64_t mproc__mpi_job_sent_ms(const struct mproc__mpi_job *j) {
  return j && j->state != QUEUED ? j->sent_ms : -1;
}

void *mproc__mpi_job_take_result(struct mproc__mpi_job *j, size_t *len) {
  void *r = j->result;
  *len = j->result_len;
  j->result = NULL;
  j->result_len = 0;
  return r;
}

/* Send a header-only message, tracked until its send completes. */
static int send_small(int rank, int tag, const void *hdr, size_t len) {
  struct mproc__mpi_op *op;
  if (mproc__mpi_isend(mproc__mpi.comm, rank, tag, hdr, len, NULL, 0, false, &op) != 0)
    lost(rank, "sending a control message failed");
  track(op);
  return 0;
}

/* Keep a message that belongs to no job (a control message, a batch) until
 * its send completed.  Without memory for the bookkeeping, wait for it
 * here: the rank takes every message off the wire promptly. */
static void track(struct mproc__mpi_op *op) {
  struct ctrl *c = calloc(1, sizeof *c);
  if (!c) {
    if (mproc__mpi_wait_op(op, mproc_now_ms() + 10000) != 0)
      lost(-1, "a message was never taken");
    mproc__mpi_op_free(op);
    return;
  }
  c->op = op;
  c->next = C.ctrls;
  C.ctrls = c;
}

int mproc__mpi_cancel(struct mproc__mpi_job *j) {
  if (!j)
    return MPROC_EINVAL;
  if (j->state == DONE)
    return MPROC_ESTATE;
  if (j->state == QUEUED) {
    struct mproc__mpi_job *prev = NULL;
    for (struct mproc__mpi_job *q = C.queue; q; prev = q, q = q->next) {
      if (q != j)
        continue;
      if (prev)
        prev->next = j->next;
      else
        C.queue = j->next;
      if (C.queue_tail == j)
        C.queue_tail = prev;
      if (j->pin)
        C.pinned--;
      break;
    }
    j->state = DONE;
    j->code = MPROC_ECANCELED;
    j->err.code = MPROC_ECANCELED;
    j->err.exit_status = -1;
    snprintf(j->err.message, sizeof j->err.message, "cancelled before it was sent to a rank");
    return 0;
  }
  if (j->cancel)
    return 0;
  j->cancel = true;
  struct mproc__mpi_task m = {.id = j->id, .kind = MPROC__MPI_CANCEL};
  return send_small(j->rank, MPROC__MPI_TAG_TASK, &m, sizeof m);
}

void mproc__mpi_job_free(struct mproc__mpi_job *j) {
  if (!j)
    return;
  if (j->state == QUEUED)
    mproc__mpi_cancel(j);
  if (j->state == DONE) {
    job_release(j);
    return;
  }
  j->freed = true; /* released when its result arrives */
  /* The caller's buffers are the caller's again: a send still reading the
   * input, a receive already writing the output finish first; an answer
   * that comes later goes to memory of its own. */
  if (j->send && !j->payload) {
    if (mproc__mpi_wait_op(j->send, mproc_now_ms() + 10000) != 0)
      lost(j->rank, "a task's send never completed");
    mproc__mpi_op_free(j->send);
    j->send = NULL;
    sent(j);
  }
  if (j->recv && j->recv->user == j && mproc__mpi_wait_op(j->recv, mproc_now_ms() + 10000) != 0)
    lost(j->rank, "a result never arrived whole");
  j->out = NULL;
}

int mproc__mpi_client_stop(int64_t deadline) {
  /* Queued jobs never go out. */
  while (C.queue)
    mproc__mpi_cancel(C.queue);
  struct mproc__mpi_ctrl stop = {.what = MPROC__MPI_STOP};
  for (int r = 1; r < mproc__mpi.size; r++)
    if (send_small(r, MPROC__MPI_TAG_CTRL, &stop, sizeof stop) != 0)
      return MPROC_ENOMEM;
  if (!C.load)
    C.load = calloc((size_t)mproc__mpi.size, sizeof *C.load);
  struct mproc__mpi_idle w = {0};
  while (C.stopped < mproc__mpi.size - 1) {
    if (mproc__mpi_progress() > 0) {
      w = (struct mproc__mpi_idle){0};
      continue;
    }
    if (deadline >= 0 && mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    mproc__mpi_backoff(&w);
  }
  /* The ranks are gone from the conversation: what they did not answer is
   * cancelled, and sends they never took are withdrawn. */
  while (C.flight) {
    struct mproc__mpi_job *j = C.flight;
    if (j->send) {
      mproc__mpi_op_abandon(j->send);
      j->send = NULL;
    }
    if (j->recv) {
      mproc__mpi_op_abandon(j->recv);
      j->recv = NULL;
    }
    j->code = j->err.code = MPROC_ECANCELED;
    j->err.exit_status = -1;
    snprintf(j->err.message, sizeof j->err.message, "the MPI job was finalized first");
    finish(j);
  }
  while (C.ctrls) {
    struct ctrl *c = C.ctrls;
    C.ctrls = c->next;
    mproc__mpi_op_abandon(c->op);
    free(c);
  }
  free(C.load);
  free(C.out);
  free(C.out_tail);
  C.load = NULL;
  C.out = C.out_tail = NULL;
  return 0;
}

int mproc__mpi_close(int rank, uint64_t pool) {
  if (rank < 1 || rank >= mproc__mpi.size || pool == 0)
    return MPROC_EINVAL;
  if (!C.load)
    return 0; /* stopped already: the ranks dropped every pool */
  struct mproc__mpi_task m = {.kind = MPROC__MPI_CLOSE, .pool = pool};
  return send_small(rank, MPROC__MPI_TAG_TASK, &m, sizeof m);
}
