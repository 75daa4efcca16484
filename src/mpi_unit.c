/* Units: several tasks of a worker rank handed to one local worker at once,
 * and the task context of a task run in the rank itself (in-rank mode).
 *
 * Design notes.  A batch of tiny tasks that reaches a worker rank used to
 * cost one local submit each: a ring entry, a wake-up of the worker, a
 * future, a result collected.  A unit puts such tasks (calls without a
 * timeout) in one area of shared memory -- each task's function, argument
 * and, once it ran, result and outcome -- and hands the area to one local
 * worker as ONE task of the local pool (unit_task): one ring entry, one
 * wake-up, one future, the results read together and sent back in one MPI
 * message (mpi_rank.c batches them).
 *
 * The areas are carved out of one anonymous shared mapping made before the
 * rank's local pools fork their workers, so every worker -- the first ones
 * and every replacement, all forks of the rank -- sees them at the same
 * address: nothing to map per unit, no descriptor, no /dev/shm entry.  The
 * function pointers in an area are the rank's, valid in its forks (the
 * local pools start their workers by fork for this reason).
 *
 * Per-task semantics are kept by a state per task, moved by compare and
 * swap by the worker and by the rank:
 *   PENDING --worker--> RUNNING --worker--> DONE (result, or failure code)
 *   PENDING --rank cancel--> CANCELLED        (never runs)
 *   RUNNING --rank cancel--> CANCEL_REQ       (the rank then cancels the
 *            unit's future, which kills the worker; a worker that finishes
 *            the task first sees the request, writes nothing more and ends
 *            the unit, so the kill never hits another task)
 *   RUNNING --worker--> IN_FUTURE             (its result did not fit in the
 *            area: it is the unit's own result, and the unit ends there)
 * When the unit's future finishes, the rank reads each task's outcome: DONE
 * and IN_FUTURE are results, CANCELLED and CANCEL_REQ are MPROC_ECANCELED,
 * a task left RUNNING is the one whose worker died (it fails with the
 * future's error, MPROC_EWORKERDIED naming the signal), and the tasks left
 * PENDING never started: the rank runs them again as the same unit on the
 * replacement worker -- a crash fails only the task that crashed.  Tasks
 * with a timeout never go in a unit (each runs alone under its own deadline,
 * enforced by the local pool).
 *
 * The in-rank context (mproc__mpi_inrank_*) is the same task context with
 * its result in this process's heap: in-rank mode runs the task function on
 * the rank's own thread. */
#include "mpi_internal.h"
#include "task_ctx.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* One task in an area. */
struct uslot {
  _Atomic uint32_t state;
  int32_t code;     /* DONE: 0, or the task's failure code */
  uint32_t has_msg; /* code's message is set */
  uint32_t pad_;
  uint64_t fn;      /* mproc_task_fn of the rank (and its forks) */
  uint64_t arg_off; /* in the area's data */
  uint64_t arg_len;
  uint64_t res_off; /* DONE: the result in the area's data */
  uint64_t res_len;
  char msg[MPROC__TASK_MSG];
};
struct uarea {
  uint32_t n;
  int32_t pid;       /* the worker that ran the unit last */
  uint64_t args_end; /* data bytes the arguments take */
  uint64_t used;     /* data bytes used: arguments, then results */
  struct uslot s[MPROC__MPI_UNIT_MAX];
  _Alignas(16) unsigned char data[];
};

enum { UNITS = 64 };
#define UNIT_BYTES ((size_t)64 << 10)
#define UNIT_DATA (UNIT_BYTES - sizeof(struct uarea))

static unsigned char *g_map; /* UNITS areas of UNIT_BYTES */
static bool g_used[UNITS];

static struct uarea *area(int k) { return (struct uarea *)(g_map + (size_t)k * UNIT_BYTES); }

int mproc__mpi_units_prepare(void) {
  if (g_map)
    return 0;
  void *m =
      mmap(NULL, UNITS * UNIT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return MPROC_ENOMEM;
  g_map = m;
  return 0;
}

void mproc__mpi_units_discard(void) {
  if (g_map)
    munmap(g_map, UNITS * UNIT_BYTES);
  g_map = NULL;
  memset(g_used, 0, sizeof g_used);
}

int mproc__mpi_unit_new(void) {
  for (int k = 0; g_map && k < UNITS; k++) {
    if (!g_used[k]) {
      g_used[k] = true;
      struct uarea *u = area(k);
      u->n = 0;
      u->pid = 0;
      u->args_end = u->used = 0;
      return k;
    }
  }
  return -1;
}

void mproc__mpi_unit_release(int k) {
  if (k >= 0 && k < UNITS)
    g_used[k] = false;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

int mproc__mpi_unit_add(int k, mproc_task_fn fn, const void *arg, size_t len) {
  struct uarea *u = area(k);
  /* Arguments take at most half of the data: the rest is for results. */
  if (u->n >= MPROC__MPI_UNIT_MAX || align16(u->used + len) > UNIT_DATA / 2)
    return 1;
  struct uslot *s = &u->s[u->n++];
  atomic_store_explicit(&s->state, MPROC__MPI_U_PENDING, memory_order_relaxed);
  s->code = 0;
  s->has_msg = 0;
  s->fn = (uint64_t)(uintptr_t)fn;
  s->arg_off = u->used;
  s->arg_len = len;
  s->res_off = s->res_len = 0;
  if (len)
    memcpy(u->data + u->used, arg, len);
  u->used = u->args_end = align16(u->used + len);
  return 0;
}

/* ---- the task context: a task of a unit, or a task run in the rank ------ */

struct uctx {
  mproc_task_ctx base;
  struct uslot *s; /* a unit's task; NULL in the rank */
  struct uarea *u;
  mproc_task_ctx *outer; /* the unit's own task: where a large result goes */
  bool in_outer;         /* the result went there */
  int code;              /* mproc_task_fail's code */
  char *msg;             /* its message (MPROC__TASK_MSG bytes) */
  void *heap;            /* in the rank: the result */
  size_t heap_len;
};

static int unit_result_buf(mproc_task_ctx *base, size_t len, void **buf) {
  struct uctx *c = (struct uctx *)base;
  struct uarea *u = c->u;
  size_t at = align16(u->used);
  if (len <= UNIT_DATA && at <= UNIT_DATA - len) {
    /* A result asked again replaces the last one; its space is not
     * reused (the area's results are read once, when the unit ends). */
    c->s->res_off = at;
    c->s->res_len = len;
    u->used = at + len;
    c->in_outer = false;
    *buf = u->data + at;
    return 0;
  }
  void *b = mproc_task_result_buf(c->outer, len);
  if (!b)
    return MPROC_ENOMEM;
  c->in_outer = true;
  *buf = b;
  return 0;
}

static void ctx_fail(mproc_task_ctx *base, int code, const char *msg) {
  struct uctx *c = (struct uctx *)base;
  c->code = code;
  snprintf(c->msg, MPROC__TASK_MSG, "%s", msg);
  if (c->s)
    c->s->has_msg = 1;
}

static const struct mproc__task_ops unit_ops = {.result_buf = unit_result_buf, .fail = ctx_fail};

/* After the function returned r: its end code, as the local worker's
 * (task.c: a result that could not be made fails the task). */
static int task_end(struct uctx *c, int r) {
  if (r == 0 && !c->base.failed && c->base.res_err != 0)
    mproc_task_fail(&c->base, c->base.res_err, "could not make the task's %zu-byte result: %s",
                    c->base.res_want, mproc_strerror(c->base.res_err));
  return r != 0 ? r : c->base.failed ? c->code : 0;
}

/* The local pool's task that runs a unit: argument the area's index. */
static int unit_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  uint32_t k;
  if (len != sizeof k)
    return mproc_task_fail(ctx, MPROC_EINVAL, "malformed unit");
  memcpy(&k, arg, sizeof k);
  if (k >= UNITS || !g_map)
    return mproc_task_fail(ctx, MPROC_EINVAL, "unit %u out of range", k);
  struct uarea *u = area((int)k);
  u->pid = (int32_t)getpid();
  u->used = u->args_end; /* the results of an earlier run were read */
  for (uint32_t i = 0; i < u->n; i++) {
    struct uslot *s = &u->s[i];
    uint32_t st = MPROC__MPI_U_PENDING;
    if (!atomic_compare_exchange_strong(&s->state, &st, MPROC__MPI_U_RUNNING))
      continue; /* cancelled, or done in an earlier run */
    struct uctx c = {.base.ops = &unit_ops, .s = s, .u = u, .outer = ctx, .msg = s->msg};
    s->has_msg = 0;
    s->res_len = 0;
    mproc_task_fn fn = (mproc_task_fn)(uintptr_t)s->fn;
    int r = task_end(&c, fn(u->data + s->arg_off, (size_t)s->arg_len, &c.base));
    s->code = r;
    if (r != 0)
      s->res_len = 0;
    uint32_t to = r == 0 && c.in_outer ? MPROC__MPI_U_IN_FUTURE : MPROC__MPI_U_DONE;
    st = MPROC__MPI_U_RUNNING;
    if (!atomic_compare_exchange_strong(&s->state, &st, to))
      return 0; /* a cancel asked while it ran: end here, the kill is near */
    if (to == MPROC__MPI_U_IN_FUTURE)
      return 0; /* its result is this task's: the rest runs again after */
  }
  return 0;
}

int mproc__mpi_unit_start(int k, mproc_pool *pool, mproc_future **f) {
  uint32_t idx = (uint32_t)k;
  struct mproc_submit_options so = {.retries = 0};
  return mproc_pool_submit_ex(pool, unit_task, &idx, sizeof idx, &so, f);
}

uint32_t mproc__mpi_unit_state(int k, uint32_t i) {
  return atomic_load_explicit(&area(k)->s[i].state, memory_order_acquire);
}

bool mproc__mpi_unit_cancel(int k, uint32_t i) {
  struct uslot *s = &area(k)->s[i];
  uint32_t st = MPROC__MPI_U_PENDING;
  if (atomic_compare_exchange_strong(&s->state, &st, MPROC__MPI_U_CANCELLED))
    return false;
  st = MPROC__MPI_U_RUNNING;
  return atomic_compare_exchange_strong(&s->state, &st, MPROC__MPI_U_CANCEL_REQ);
}

void mproc__mpi_unit_take(int k, uint32_t i) {
  atomic_store_explicit(&area(k)->s[i].state, MPROC__MPI_U_TAKEN, memory_order_relaxed);
}

int mproc__mpi_unit_outcome(int k, uint32_t i, const void **data, size_t *len, const char **msg,
                            int *pid) {
  struct uarea *u = area(k);
  struct uslot *s = &u->s[i];
  *pid = u->pid;
  *data = u->data + s->res_off;
  *len = (size_t)s->res_len;
  *msg = s->has_msg ? s->msg : NULL;
  return s->code;
}

/* ---- in-rank ------------------------------------------------------------- */

static int heap_result_buf(mproc_task_ctx *base, size_t len, void **buf) {
  struct uctx *c = (struct uctx *)base;
  void *b = realloc(c->heap, len ? len : 1);
  if (!b)
    return MPROC_ENOMEM;
  c->heap = b;
  c->heap_len = len;
  *buf = b;
  return 0;
}

static const struct mproc__task_ops heap_ops = {.result_buf = heap_result_buf, .fail = ctx_fail};

int mproc__mpi_inrank_call(mproc_task_fn fn, const void *arg, size_t len, void **res,
                           size_t *res_len, char msg[MPROC__MPI_MSG], bool *has_msg) {
  char m[MPROC__TASK_MSG] = "";
  struct uctx c = {.base.ops = &heap_ops, .msg = m};
  int r = task_end(&c, fn(arg, len, &c.base));
  *has_msg = c.base.failed;
  snprintf(msg, MPROC__MPI_MSG, "%s", m);
  if (r != 0) {
    free(c.heap);
    *res = NULL;
    *res_len = 0;
    return r;
  }
  *res = c.heap;
  *res_len = c.heap_len;
  return 0;
}
