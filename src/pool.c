/* The public pool layer: argument checks, new/free, submit, apply,
 * lifecycle, the exit hook and the opt-in SIGINT handling.
 *
 * Design notes.  Lifecycle of a pool (the `state` word, changed under mu):
 *
 *   RUNNING --close / shutdown--> CLOSED --work done--> workers stopped
 *   RUNNING | CLOSED --terminate / free / exit()--> TERMINATING
 *   RUNNING --an initializer failed--> BROKEN
 *
 * Submit succeeds only in RUNNING (MPROC_ECLOSED after close, shutdown or
 * terminate; MPROC_EBROKEN once broken).  Every path ends with the manager
 * thread exiting once no task is outstanding and no worker is alive; join
 * waits for exactly that.  No future is ever left pending: terminate cancels
 * what is queued and kills what runs, and the manager completes the rest.
 *
 * Memory: the pool struct is reference counted (the creator, plus one per
 * live future) so a future may outlive mproc_pool_free; the workers,
 * mappings, fds and the thread are all released by mproc_pool_free itself.
 *
 * exit() with live pools: an atexit hook, in the process that created them,
 * lets closed pools finish their work and terminates open ones (killing and
 * reaping their workers); in a forked child the hook does nothing, since the
 * pools' workers are not its children. */
#include "pool.h"
#include "list.h"
#include "futex.h"
#include "start.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- process-wide state: live pools, exit hook, SIGINT ------------------- */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mproc_pool *live_head;
static pid_t hook_pid;
static bool hook_registered;
static int sigint_users;
static struct sigaction sigint_old;
static _Atomic uint32_t sigint_count;

_Atomic uint32_t mproc__pool_forks;
static pthread_once_t forks_once = PTHREAD_ONCE_INIT;
static void count_fork(void) {
  atomic_fetch_add_explicit(&mproc__pool_forks, 1, memory_order_relaxed);
}
static void count_forks(void) { pthread_atfork(NULL, NULL, count_fork); }

static void on_sigint(int sig) {
  (void)sig;
  int saved = errno;
  atomic_fetch_add(&sigint_count, 1);
  mproc__epoch_bump();
  errno = saved;
}

uint32_t mproc__sigint_mark(void) { return atomic_load(&sigint_count); }

bool mproc__sigint_since(uint32_t mark) { return atomic_load(&sigint_count) != mark; }

/* At exit a pool that was closed (close, or shutdown without waiting)
 * finishes its work first, as Python's executors do (gh-83386): the program
 * said "finish what I submitted", and exit() must not silently kill it.  A
 * pool still open is terminated: nobody asked for its work to complete, and
 * waiting for it could hold exit forever. */
static void at_exit_hook(void) {
  if (getpid() != hook_pid)
    return;
  pthread_mutex_lock(&live_mu);
  for (struct mproc_pool *p = live_head; p != NULL; p = p->live_next) {
    if (atomic_load(&p->state) == MPROC__P_CLOSED && !mproc__on_manager_thread(p)) {
      int r;
      while ((r = mproc_pool_join(p, -1)) == MPROC_EINTERRUPTED) {
      }
      if (r == 0)
        continue;
    }
    mproc_pool_terminate(p);
    mproc_pool_join(p, 5000);
  }
  pthread_mutex_unlock(&live_mu);
}

static void live_add(struct mproc_pool *p) {
  pthread_mutex_lock(&live_mu);
  if (!hook_registered) {
    hook_registered = atexit(at_exit_hook) == 0;
  }
  hook_pid = getpid();
  p->live_next = live_head;
  live_head = p;
  if (p->opts.flags & MPROC_POOL_SIGINT) {
    if (sigint_users++ == 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_sigint;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      sigaction(SIGINT, &sa, &sigint_old);
    }
  }
  pthread_mutex_unlock(&live_mu);
}

static void live_remove(struct mproc_pool *p) {
  pthread_mutex_lock(&live_mu);
  for (struct mproc_pool **pp = &live_head; *pp != NULL; pp = &(*pp)->live_next)
    if (*pp == p) {
      *pp = p->live_next;
      break;
    }
  if ((p->opts.flags & MPROC_POOL_SIGINT) && --sigint_users == 0)
    sigaction(SIGINT, &sigint_old, NULL);
  pthread_mutex_unlock(&live_mu);
}

/* ---- internals shared with the manager ----------------------------------- */

void mproc__pool_kick(struct mproc_pool *p) {
  uint64_t one = 1;
  ssize_t n = write(p->efd, &one, sizeof one);
  (void)n; /* EAGAIN: the counter is already non-zero, the manager wakes */
}

void mproc__pool_unref(struct mproc_pool *p) {
  if (atomic_fetch_sub(&p->refs, 1) != 1)
    return;
  pthread_mutex_destroy(&p->mu);
  free(p);
}

void mproc__pool_queue(struct mproc_pool *p, struct mproc__task *t) {
  p->outstanding++;
  t->id = ++p->next_id;
  t->slot = -1;
  MPROC__LIST_PUSH(p->pend_head, p->pend_tail, t, next);
}

void mproc__pool_enqueue(struct mproc_pool *p, struct mproc__task *t) {
  mproc__pool_queue(p, t);
  mproc__pool_dispatch(p);
}

bool mproc__pool_cancel_task(struct mproc_pool *p, struct mproc__task *t) {
  if (t->slot < 0) {
    struct mproc__task *prev = NULL;
    for (struct mproc__task *q = p->pend_head; q != NULL; prev = q, q = q->next) {
      if (q != t)
        continue;
      if (prev != NULL)
        prev->next = q->next;
      else
        p->pend_head = q->next;
      if (p->pend_tail == q)
        p->pend_tail = prev;
      mproc__task_fail(p, t, MPROC_ECANCELED, "cancelled before it started");
      return true;
    }
    return false;
  }
  if (mproc__pool_revoke(p, t)) {
    mproc__task_fail(p, t, MPROC_ECANCELED, "cancelled before it started");
    return true;
  }
  /* Running: its transport ends it (the shm one kills the worker); the
   * task completes as cancelled. */
  t->cancel_req = true;
  mproc__stop_task(p, t);
  return false;
}

/* ---- new / free ---------------------------------------------------------- */

static void release_resources(struct mproc_pool *p) {
  if (p->tp_state != NULL)
    p->tp->fini(p);
  mproc__arena_local_fini(p);
  free(p->slots);
  p->slots = NULL;
  free(p->linger); /* empty: the manager hands what is left to reap_later.c */
  p->linger = NULL;
  free(p->pfd);
  p->pfd = NULL;
  free(p->slot_of);
  p->slot_of = NULL;
  mproc__close(p->efd);
  p->efd = -1;
  mproc__close(p->loop_efd);
  p->loop_efd = -1;
}

/* Under spawn and forkserver a worker shares no memory with the pool's
 * process: an option that is a pointer must say how many bytes it points at,
 * and the initializer must be a function another image can find.  Refused
 * here, with the reason on stderr, rather than as a worker that cannot start
 * (or one that reads garbage). */
static int check_exec_options(const struct mproc_pool_options *o) {
  if (o->initarg != NULL && o->initarg_len == 0) {
    fprintf(stderr, "mproc: pool: initarg is a pointer, meaningless to a worker started by spawn "
                    "or forkserver: set initarg_len to the size of what it points at\n");
    return MPROC_EINVAL;
  }
  if (o->initarg == NULL && o->initarg_len > 0)
    return MPROC_EINVAL;
  struct mproc__fnref ref;
  if (o->initializer != NULL && mproc__fnref_make(MPROC_FUNCTION(o->initializer), &ref) < 0) {
    fprintf(stderr,
            "mproc: pool: the initializer %p is not in the code of any loaded object; "
            "a worker started by spawn or forkserver cannot find it\n",
            (void *)(uintptr_t)o->initializer);
    return MPROC_ENOFUNC;
  }
  return 0;
}

MPROC_EXTERN int mproc_pool_new(mproc_pool **out, const struct mproc_pool_options *opts) {
  static const struct mproc_pool_options defaults;
  if (opts == NULL)
    opts = &defaults;
  if (out == NULL || (opts->flags & ~(unsigned)(MPROC_POOL_SIGINT | MPROC_POOL_LOOP)) ||
      opts->workers < 0 || opts->workers > 4096 || opts->task_timeout_ms < 0 ||
      opts->init_timeout_ms < 0)
    return MPROC_EINVAL;
  int method = opts->start_method != MPROC_START_DEFAULT ? opts->start_method
                                                         : mproc__start_method_default();
  if (method < MPROC_START_FORK || method > MPROC_START_FORKSERVER)
    return MPROC_EINVAL;
  int r = method != MPROC_START_FORK ? check_exec_options(opts) : 0;
  const struct mproc__transport_ops *tp = NULL;
  if (r == 0)
    r = mproc__transport_find(opts->transport, &tp);
  if (r < 0)
    return r;
  struct mproc_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return MPROC_ENOMEM;
  pthread_once(&forks_once, count_forks);
  p->forks = atomic_load_explicit(&mproc__pool_forks, memory_order_relaxed);
  pthread_mutex_init(&p->mu, NULL);
  atomic_store(&p->refs, 1);
  p->opts = *opts;
  p->opts.start_method = method;
  p->nworkers = opts->workers > 0 ? opts->workers : mproc_cpu_count();
  p->tp = tp;
  p->opts.transport = NULL; /* the caller's string need not outlive the call */
  p->loop_efd = -1;
  p->created_ms = mproc_now_ms();
  p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r = p->efd >= 0 ? 0 : mproc__neg_errno();
  if (r == 0 && (opts->flags & MPROC_POOL_LOOP))
    r = mproc__loop_init(p);
  if (r == 0) {
    p->efd = mproc__fd_own(p->efd);
    r = p->tp->init(p);
  }
  if (r == 0) {
    p->slots = calloc((size_t)p->nworkers, sizeof *p->slots);
    r = p->slots != NULL ? 0 : MPROC_ENOMEM;
    for (int i = 0; r == 0 && i < p->nworkers; i++)
      p->slots[i].pidfd = -1;
  }
  if (r == 0) {
    /* Everything the manager needs is allocated here, so it never runs
     * without its poll set (it would miss worker deaths). */
    p->pfd = calloc((size_t)p->nworkers + 1, sizeof *p->pfd);
    p->slot_of = calloc((size_t)p->nworkers + 1, sizeof *p->slot_of);
    r = p->pfd != NULL && p->slot_of != NULL ? 0 : MPROC_ENOMEM;
  }
  if (r == 0)
    r = mproc__manager_start(p);
  if (r == 0) {
    while (atomic_load(&p->started) == 0)
      mproc__futex_wait((_Atomic uint32_t *)&p->started, 0, -1, false);
    r = p->start_err;
    if (r != 0) {
      pthread_join(p->mgr, NULL);
      p->mgr_joined = true;
    }
  }
  if (r != 0) {
    release_resources(p);
    mproc__pool_unref(p);
    return r;
  }
  live_add(p);
  *out = p;
  return 0;
}

MPROC_EXTERN int mproc_pool_workers(const mproc_pool *p) {
  return p != NULL ? p->nworkers : MPROC_EINVAL;
}

MPROC_EXTERN int mproc_pool_worker_pids(mproc_pool *p, pid_t *pids, size_t n) {
  if (p == NULL || (pids == NULL && n > 0))
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&p->mu);
  size_t k = 0;
  for (int i = 0; p->slots != NULL && i < p->nworkers && k < n; i++)
    if (p->slots[i].pid > 0)
      pids[k++] = p->slots[i].pid;
  pthread_mutex_unlock(&p->mu);
  return (int)k;
}

static bool mgr_exited(void *arg) { return atomic_load(&((struct mproc_pool *)arg)->mgr_exited); }

MPROC_EXTERN int mproc_pool_join(mproc_pool *p, int64_t timeout_ms) {
  if (p == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p) || atomic_load(&p->state) == MPROC__P_RUNNING ||
      mproc__on_manager_thread(p))
    return MPROC_ESTATE;
  int r = mproc__wait_until(mgr_exited, p, &p, 1, (p->opts.flags & MPROC_POOL_SIGINT) != 0,
                            mproc__deadline(timeout_ms));
  if (r != 0)
    return r;
  pthread_mutex_lock(&p->mu);
  bool join = p->mgr_started && !p->mgr_joined;
  p->mgr_joined = true;
  pthread_mutex_unlock(&p->mu);
  if (join)
    pthread_join(p->mgr, NULL);
  return 0;
}

MPROC_EXTERN int mproc_pool_close(mproc_pool *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&p->mu);
  if (atomic_load(&p->state) == MPROC__P_RUNNING)
    atomic_store(&p->state, MPROC__P_CLOSED);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_kick(p);
  return 0;
}

MPROC_EXTERN int mproc_pool_terminate(mproc_pool *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&p->mu);
  if (atomic_load(&p->state) != MPROC__P_BROKEN)
    atomic_store(&p->state, MPROC__P_TERMINATING);
  if (p->slots != NULL) {
    mproc__pool_cancel_pending(p);
    for (int i = 0; i < p->nworkers; i++)
      mproc__kill_worker(p, i);
  }
  pthread_mutex_unlock(&p->mu);
  mproc__pool_kick(p);
  if (mproc__on_manager_thread(p))
    return 0;
  /* Killed workers are reaped at once; this wait is bounded in practice by
   * the kernel tearing the processes down. */
  int64_t dl = mproc__deadline(30000);
  while (!atomic_load(&p->mgr_exited)) {
    if (mproc__futex_wait((_Atomic uint32_t *)&p->mgr_exited, 0, dl, false) == MPROC_ETIMEDOUT)
      return MPROC_ETIMEDOUT;
  }
  return 0;
}

MPROC_EXTERN int mproc_pool_shutdown(mproc_pool *p, bool wait, bool cancel_pending) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&p->mu);
  if (atomic_load(&p->state) == MPROC__P_RUNNING)
    atomic_store(&p->state, MPROC__P_CLOSED);
  if (cancel_pending && p->slots != NULL)
    mproc__pool_cancel_pending(p);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_kick(p);
  if (!wait || mproc__on_manager_thread(p))
    return 0;
  int r;
  while ((r = mproc_pool_join(p, -1)) == MPROC_EINTERRUPTED) {
  }
  return r;
}

MPROC_EXTERN int mproc_pool_free(mproc_pool *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p) || mproc__on_manager_thread(p) || mproc__in_loop_run(p))
    return MPROC_ESTATE;
  if (!atomic_load(&p->mgr_exited))
    mproc_pool_terminate(p);
  int r;
  while ((r = mproc_pool_join(p, -1)) == MPROC_EINTERRUPTED) {
  }
  mproc__reap_later_sweep(); /* workers a debugger held, maybe let go now */
  mproc__loop_fini(p);
  live_remove(p);
  mproc__map_shm_pool_gone(p);
  mproc__map_buf_pool_gone(p);
  pthread_mutex_lock(&p->mu);
  release_resources(p);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_unref(p);
  return r;
}

/* ---- submit / apply ---------------------------------------------------------- */

static int copy_arg(struct mproc_future *f, const void *arg, size_t len) {
  struct mproc__task *t = &f->task;
  t->arg_len = len;
  if (len == 0)
    return 0;
  if (len <= sizeof f->arg_small) {
    t->arg = f->arg_small;
    memcpy(t->arg, arg, len);
    return 0;
  }
  if (len <= MPROC__ARG_INLINE) {
    t->arg = malloc(len);
    if (t->arg == NULL)
      return MPROC_ENOMEM;
    memcpy(t->arg, arg, len);
    return 0;
  }
  /* A large argument goes to the worker as a memfd: one copy, no pipe. */
  int fd;
  int r = mproc__memfd_create("mproc-arg", len, &fd);
  if (r != 0)
    return r;
  void *m;
  r = mproc__map_shared(fd, len, &m);
  if (r != 0) {
    mproc__close(fd);
    return r;
  }
  memcpy(m, arg, len);
  munmap(m, len);
  t->arg_fd = fd;
  return 0;
}

void mproc__task_close_fds(struct mproc__task *t) {
  for (uint32_t i = 0; i < t->nfds; i++)
    mproc__close(t->fds[i]);
  free(t->fds);
  t->fds = NULL;
  t->nfds = 0;
}

/* The task keeps its own duplicates until it is final, so the caller may
 * close its fds at once and a re-run after a worker death sends them again. */
static int copy_fds(struct mproc__task *t, const int *fds, size_t n) {
  if (n == 0)
    return 0;
  t->fds = malloc(n * sizeof *t->fds);
  if (t->fds == NULL)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
      int r = errno == EBADF ? MPROC_EINVAL : mproc__neg_errno();
      mproc__task_close_fds(t);
      return r;
    }
    d = mproc__fd_own(d);
    t->fds[t->nfds++] = d;
  }
  return 0;
}

static int state_error(int state) {
  return state == MPROC__P_BROKEN ? MPROC_EBROKEN : MPROC_ECLOSED;
}

MPROC_EXTERN int mproc_pool_submit_ex(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                                      const struct mproc_submit_options *o, mproc_future **out) {
  if (p == NULL || fn == NULL || out == NULL || (arg == NULL && len > 0) ||
      (o != NULL && (o->flags != 0 || o->timeout_ms < 0 || o->retries < -1 ||
                     o->nfds > MPROC_TASK_MAX_FDS || (o->fds == NULL && o->nfds > 0))))
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  struct mproc_future *f = mproc__future_new(p);
  if (f == NULL)
    return MPROC_ENOMEM;
  struct mproc__task *t = &f->task;
  t->fn = mproc__taskfn_of((void (*)(void))fn);
  t->timeout_ms = o != NULL && o->timeout_ms > 0 ? o->timeout_ms : p->opts.task_timeout_ms;
  t->retries_left = o != NULL && o->retries >= 0 ? o->retries : (int32_t)p->opts.retries;
  if (o != NULL) {
    f->apply_cb = o->callback;
    f->apply_errcb = o->error_callback;
    f->apply_ud = o->ud;
  }
  int r = copy_arg(f, arg, len);
  if (r == 0 && o != NULL)
    r = copy_fds(t, o->fds, o->nfds);
  if (r == 0) {
    pthread_mutex_lock(&p->mu);
    int state = atomic_load(&p->state);
    if (state == MPROC__P_RUNNING)
      mproc__pool_enqueue(p, t);
    else
      r = state_error(state);
    pthread_mutex_unlock(&p->mu);
  }
  if (r != 0) {
    mproc__future_unref(f);
    mproc__future_unref(f);
    return r;
  }
  *out = f;
  return 0;
}

MPROC_EXTERN int mproc_pool_submit(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                                   mproc_future **out) {
  return mproc_pool_submit_ex(p, fn, arg, len, NULL, out);
}

MPROC_EXTERN int mproc_pool_apply_async(mproc_pool *p, mproc_task_fn fn, const void *arg,
                                        size_t len, void (*cb)(mproc_future *, void *),
                                        void (*errcb)(mproc_future *, void *), void *ud,
                                        mproc_future **out) {
  struct mproc_submit_options o = {
      .retries = -1, .callback = cb, .error_callback = errcb, .ud = ud};
  return mproc_pool_submit_ex(p, fn, arg, len, &o, out);
}

MPROC_EXTERN int mproc_pool_apply(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                                  void **result, size_t *result_len, struct mproc_task_error *err,
                                  int64_t timeout_ms) {
  if (result == NULL || result_len == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  *result = NULL;
  *result_len = 0;
  mproc_future *f;
  int r = mproc_pool_submit(p, fn, arg, len, &f);
  if (r != 0)
    return r;
  const void *data;
  size_t n;
  r = mproc_future_result(f, &data, &n, timeout_ms);
  if (r == 0 && n > 0) {
    *result = malloc(n);
    if (*result == NULL)
      r = MPROC_ENOMEM;
    else {
      memcpy(*result, data, n);
      *result_len = n;
    }
  } else if (r == MPROC_ETIMEDOUT || r == MPROC_EINTERRUPTED) {
    if (!mproc_future_done(f))
      mproc_future_cancel(f);
    else
      r = mproc_future_result(f, &data, &n, 0);
  }
  if (r != 0 && err != NULL && mproc_future_error(f, err) != 0)
    memset(err, 0, sizeof *err), err->code = r, err->exit_status = -1;
  mproc_future_free(f);
  return r;
}
