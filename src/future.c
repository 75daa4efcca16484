/* Futures: completion exactly once, results, errors, cancel, callbacks.
 *
 * Design notes.  State machine (the `state` word):
 *
 *   PENDING --worker starts it--> (RUNNING: not stored, asked of the
 *                                  transport by mproc_future_state)
 *     --> DONE | FAILED | CANCELED         (final; set once, under the pool
 *                                           mutex, by mproc__future_finish)
 *
 * Ownership: a future starts with two references, the caller's and the
 * pool's.  The pool's is dropped when the future has finished and its
 * callbacks have run; the caller's by mproc_future_free.  Whoever drops the
 * last frees the memory, so freeing from inside a callback, or before the
 * task ends, is safe.  The result is owned by the future (borrowed by
 * callers of mproc_future_result).
 *
 * Callbacks run with no lock held, so a callback may submit, cancel, shut
 * down or free; they run on one of these threads:
 *  - the pool's manager thread, for a future that finishes while the pool
 *    runs (a thread that completes a future while helping, a waiter
 *    collecting results, queues its callbacks and wakes the manager);
 *  - for MPROC_POOL_LOOP pools, the thread calling mproc_pool_loop_run
 *    (pool_loop.c), and the thread calling mproc_pool_free for the
 *    completions the loop never consumed;
 *  - the calling thread of mproc_future_add_done_callback on a future that
 *    has already finished (at once, as Python does).
 *
 * Waiting: one process-wide epoch counter (a futex word) is bumped whenever
 * anything finishes or SIGINT arrives; waiters re-check their condition and
 * sleep on it (the wait loop itself is in future_wait.c).  A drain that
 * finishes a batch wakes the sleepers once, after the batch. */
#include "pool.h"
#include "list.h"
#include "futex.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

_Atomic uint32_t mproc__epoch;
_Atomic uint32_t mproc__epoch_waiters;

/* Between mproc__epoch_hold and mproc__epoch_release a thread bumps the
 * epoch at once but wakes its sleepers only once, at the release: a drain
 * that finishes a batch of futures then makes one futex call instead of one
 * per future, and a waiter for all of them wakes once per batch, not once
 * per future.  The counter itself moves at each bump, so a waiter that
 * reads it afterwards never goes to sleep on the old value. */
static _Thread_local unsigned epoch_holds;
static _Thread_local bool epoch_held;

static void epoch_wake(void) {
  if (atomic_load(&mproc__epoch_waiters) > 0)
    mproc__futex_wake(&mproc__epoch, INT_MAX, false);
}

void mproc__epoch_bump(void) {
  atomic_fetch_add(&mproc__epoch, 1);
  if (epoch_holds > 0)
    epoch_held = true;
  else
    epoch_wake();
}

void mproc__epoch_hold(void) { epoch_holds++; }

void mproc__epoch_release(void) {
  if (--epoch_holds == 0 && epoch_held) {
    epoch_held = false;
    epoch_wake();
  }
}

int mproc__epoch_wait(uint32_t seen, int64_t deadline_ms) {
  atomic_fetch_add(&mproc__epoch_waiters, 1);
  int r = mproc__futex_wait(&mproc__epoch, seen, deadline_ms, false);
  atomic_fetch_sub(&mproc__epoch_waiters, 1);
  return r;
}

int mproc__spin_budget(void) {
  static _Atomic int budget = -1;
  int b = atomic_load_explicit(&budget, memory_order_relaxed);
  if (b < 0) {
    b = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2000 : 0;
    atomic_store_explicit(&budget, b, memory_order_relaxed);
  }
  return b;
}

void mproc__error_from_outcome(struct mproc_task_error *e, const struct mproc__outcome *o) {
  memset(e, 0, sizeof *e);
  e->code = o->code;
  e->task_code = o->task_code;
  e->pid = o->pid;
  e->signo = o->signo;
  e->exit_status = o->exit_status;
  e->index = (size_t)o->index;
  snprintf(e->message, sizeof e->message, "%s", o->msg != NULL ? o->msg : "");
  /* A task that returns a positive code (`return 1;`, `return EIO;`) names no
   * error of the table: say what happened rather than "unknown error".  A
   * message the task gave with mproc_task_fail is kept. */
  if (e->code == MPROC_ETASK && e->task_code > 0 &&
      (e->message[0] == '\0' || strcmp(e->message, mproc_strerror(e->task_code)) == 0))
    snprintf(e->message, sizeof e->message, "task returned %d", e->task_code);
}

static void future_complete(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  mproc__future_finish(p, (struct mproc_future *)t, o);
}

struct mproc_future *mproc__future_new(struct mproc_pool *p) {
  struct mproc_future *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  f->task.kind = MPROC__K_CALL;
  f->task.arg_fd = -1;
  f->task.slot = -1;
  f->task.complete = future_complete;
  f->pool = p;
  atomic_store(&f->refs, 2);
  atomic_fetch_add(&p->refs, 1);
  return f;
}

static void future_free_mem(struct mproc_future *f) {
  struct mproc__cb *c = f->cbs;
  while (c != NULL) {
    struct mproc__cb *n = c->next;
    free(c);
    c = n;
  }
  if (f->result_map_len > 0)
    munmap(f->result, f->result_map_len);
  else
    free(f->result);
  if (f->task.arg != f->arg_small)
    free(f->task.arg);
  mproc__close(f->task.arg_fd);
  mproc__task_close_fds(&f->task);
  struct mproc_pool *p = f->pool;
  free(f);
  mproc__pool_unref(p);
}

void mproc__future_unref(struct mproc_future *f) {
  if (atomic_fetch_sub(&f->refs, 1) == 1)
    future_free_mem(f);
}

void mproc__future_finish(struct mproc_pool *p, struct mproc_future *f, struct mproc__outcome *o) {
  /* The argument is no longer needed once the task is final. */
  if (f->task.arg != f->arg_small)
    free(f->task.arg);
  f->task.arg = NULL;
  mproc__close(f->task.arg_fd);
  f->task.arg_fd = -1;
  mproc__task_close_fds(&f->task);
  int state;
  if (o->code == 0) {
    f->result = o->res;
    f->result_len = o->res_len;
    f->result_map_len = o->res_map_len;
    state = MPROC_FUTURE_DONE;
  } else {
    mproc__error_from_outcome(&f->err, o);
    if (o->res_map_len > 0)
      munmap(o->res, o->res_map_len);
    else
      free(o->res);
    state = o->code == MPROC_ECANCELED ? MPROC_FUTURE_CANCELED : MPROC_FUTURE_FAILED;
  }
  atomic_store_explicit(&f->state, state, memory_order_release);
  mproc__epoch_bump();
  /* Drop the pool's reference here unless callbacks are due or the caller
   * already let go (then the manager frees it, outside the mutex). */
  bool queue = f->cbs != NULL || f->apply_cb != NULL || f->apply_errcb != NULL;
  if (queue && (p->opts.flags & MPROC_POOL_LOOP)) {
    mproc__loop_push(p, f); /* the program's event loop runs them */
    return;
  }
  int r = atomic_load(&f->refs);
  while (!queue) {
    if (r <= 1) {
      queue = true;
      break;
    }
    if (atomic_compare_exchange_weak(&f->refs, &r, r - 1))
      return;
  }
  MPROC__LIST_PUSH(p->cbq_head, p->cbq_tail, f, cbq_next);
  if (!mproc__on_manager_thread(p))
    mproc__pool_kick(p);
}

void mproc__future_run_callbacks(struct mproc_future *f) {
  int state = atomic_load(&f->state);
  if (state == MPROC_FUTURE_DONE && f->apply_cb != NULL)
    f->apply_cb(f, f->apply_ud);
  else if (state != MPROC_FUTURE_DONE && f->apply_errcb != NULL)
    f->apply_errcb(f, f->apply_ud);
  struct mproc__cb *c = f->cbs;
  f->cbs = f->cbs_tail = NULL;
  while (c != NULL) {
    struct mproc__cb *n = c->next;
    c->fn(f, c->ud);
    free(c);
    c = n;
  }
  mproc__future_unref(f);
}

MPROC_EXTERN int mproc_future_state(mproc_future *f) {
  if (f == NULL)
    return MPROC_EINVAL;
  int s = atomic_load_explicit(&f->state, memory_order_acquire);
  if (s != MPROC_FUTURE_PENDING)
    return s;
  struct mproc_pool *p = f->pool;
  if (mproc__pool_foreign(p))
    return s;
  pthread_mutex_lock(&p->mu);
  s = atomic_load(&f->state);
  int64_t since;
  const struct mproc__task *t = &f->task;
  if (s == MPROC_FUTURE_PENDING && p->tp_state != NULL && t->slot >= 0 &&
      mproc__worker_running(p, t->slot, &since) == t)
    s = MPROC_FUTURE_RUNNING;
  pthread_mutex_unlock(&p->mu);
  return s;
}

MPROC_EXTERN bool mproc_future_done(mproc_future *f) {
  return f != NULL && atomic_load_explicit(&f->state, memory_order_acquire) >= MPROC_FUTURE_DONE;
}

static bool future_is_done(void *f) { return mproc_future_done(f); }

MPROC_EXTERN int mproc_future_wait(mproc_future *f, int64_t timeout_ms) {
  if (f == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  int64_t dl = mproc__deadline(timeout_ms);
  bool sigint = (f->pool->opts.flags & MPROC_POOL_SIGINT) != 0;
  return mproc__wait_until(future_is_done, f, &f->pool, 1, sigint, dl);
}

MPROC_EXTERN int mproc_future_result(mproc_future *f, const void **data, size_t *len,
                                     int64_t timeout_ms) {
  if (f == NULL)
    return MPROC_EINVAL;
  int r = mproc_future_wait(f, timeout_ms);
  if (r != 0)
    return r;
  bool ok = atomic_load(&f->state) == MPROC_FUTURE_DONE;
  if (data != NULL)
    *data = ok ? f->result : NULL;
  if (len != NULL)
    *len = ok ? f->result_len : 0;
  return ok ? 0 : f->err.code;
}

MPROC_EXTERN int mproc_future_error(mproc_future *f, struct mproc_task_error *err) {
  if (f == NULL || err == NULL)
    return MPROC_EINVAL;
  int s = atomic_load_explicit(&f->state, memory_order_acquire);
  if (s != MPROC_FUTURE_FAILED && s != MPROC_FUTURE_CANCELED)
    return MPROC_ESTATE;
  *err = f->err;
  return 0;
}

MPROC_EXTERN int mproc_future_cancel(mproc_future *f) {
  if (f == NULL)
    return MPROC_EINVAL;
  struct mproc_pool *p = f->pool;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&p->mu);
  int r = 0;
  if (atomic_load(&f->state) >= MPROC_FUTURE_DONE)
    r = MPROC_ESTATE;
  else if (f->cancel_hook != NULL)
    f->cancel_hook(p, f);
  else
    mproc__pool_cancel_task(p, &f->task);
  pthread_mutex_unlock(&p->mu);
  return r;
}

MPROC_EXTERN int mproc_future_add_done_callback(mproc_future *f, void (*cb)(mproc_future *, void *),
                                                void *ud) {
  if (f == NULL || cb == NULL)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(f->pool))
    return MPROC_ESTATE;
  struct mproc__cb *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MPROC_ENOMEM;
  c->fn = cb;
  c->ud = ud;
  struct mproc_pool *p = f->pool;
  pthread_mutex_lock(&p->mu);
  bool done = atomic_load(&f->state) >= MPROC_FUTURE_DONE;
  if (!done)
    MPROC__LIST_PUSH(f->cbs, f->cbs_tail, c, next);
  pthread_mutex_unlock(&p->mu);
  if (done) {
    /* Already finished: Python runs the callback at once, in this thread. */
    cb(f, ud);
    free(c);
  }
  return 0;
}

MPROC_EXTERN int mproc_future_set_data(mproc_future *f, void *data) {
  if (f == NULL)
    return MPROC_EINVAL;
  /* Release/acquire: a callback on the manager thread may read it. */
  atomic_store_explicit(&f->user_data, data, memory_order_release);
  return 0;
}

MPROC_EXTERN void *mproc_future_data(const mproc_future *f) {
  return f == NULL ? NULL : atomic_load_explicit(&f->user_data, memory_order_acquire);
}

MPROC_EXTERN void mproc_future_free(mproc_future *f) {
  if (f != NULL)
    mproc__future_unref(f);
}
