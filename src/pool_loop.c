/* Event-loop integration: completions collected by the program's own loop.
 *
 * Design notes.  A pool created with MPROC_POOL_LOOP owns an eventfd (not in
 * semaphore mode) whose counter is non-zero exactly while the loop has
 * something to collect: a finished future with callbacks due, or a wake-up
 * from mproc_pool_loop_wake.  It is therefore level-triggered: poll, epoll
 * (without EPOLLET), libuv's uv_poll_t and libevent all keep reporting it
 * readable until mproc_pool_loop_run has collected everything.
 *
 *   future finishes (any thread, under mu) -> appended to loopq, eventfd += 1
 *   loop_run: lock -> take up to `max` futures -> if loopq is now empty and
 *   no wake-up is pending, drain the eventfd (counter -> 0) -> unlock ->
 *   run the callbacks in this thread -> drop the pool's reference
 *
 * Draining happens under the same mutex that finishing futures hold while
 * they append and write, so the counter can never be zero while loopq is
 * not empty (no lost wake-up), and never stay non-zero for an empty queue
 * longer than one loop_run.  A wake-up (any thread, async-signal-safe: one
 * atomic store and one write) is consumed by the next loop_run.
 *
 * Ownership: a queued future holds the pool's reference to it (as the
 * manager's callback queue does); loop_run or mproc_pool_free drops it.  Futures
 * without callbacks never enter the queue: their waiters use the usual
 * waits.  mproc_pool_free runs the callbacks the loop never collected (in the
 * thread freeing the pool), so every callback runs exactly once. */
#include "pool.h"
#include "list.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

int mproc__loop_init(struct mproc_pool *p) {
  p->loop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->loop_efd < 0)
    return mproc__neg_errno();
  p->loop_efd = mproc__fd_own(p->loop_efd);
  return 0;
}

static void efd_add(int fd) {
  uint64_t one = 1;
  ssize_t n = write(fd, &one, sizeof one);
  (void)n; /* EAGAIN: the counter is at its maximum, still readable */
}

static void efd_drain(int fd) {
  uint64_t v;
  ssize_t n = read(fd, &v, sizeof v);
  (void)n; /* EAGAIN: already zero */
}

void mproc__loop_push(struct mproc_pool *p, struct mproc_future *f) {
  MPROC__LIST_PUSH(p->loopq_head, p->loopq_tail, f, loopq_next);
  efd_add(p->loop_efd);
}

bool mproc__in_loop_run(const struct mproc_pool *p) {
  pid_t t = atomic_load(&((struct mproc_pool *)p)->loop_tid);
  return t != 0 && t == my_tid();
}

void mproc__loop_fini(struct mproc_pool *p) {
  if (p->loop_efd < 0)
    return;
  pthread_mutex_lock(&p->mu);
  struct mproc_future *q = p->loopq_head;
  p->loopq_head = p->loopq_tail = NULL;
  pthread_mutex_unlock(&p->mu);
  while (q != NULL) {
    struct mproc_future *f = q;
    q = f->loopq_next;
    mproc__future_run_callbacks(f);
  }
  mproc__close(p->loop_efd);
  p->loop_efd = -1;
}

MPROC_EXTERN int mproc_pool_loop_fd(const mproc_pool *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (!(p->opts.flags & MPROC_POOL_LOOP) || p->loop_efd < 0 || mproc__pool_foreign(p))
    return MPROC_ESTATE;
  return p->loop_efd;
}

MPROC_EXTERN int mproc_pool_loop_wake(mproc_pool *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (!(p->opts.flags & MPROC_POOL_LOOP) || p->loop_efd < 0 || mproc__pool_foreign(p))
    return MPROC_ESTATE;
  atomic_store(&p->loop_woken, 1);
  efd_add(p->loop_efd);
  return 0;
}

MPROC_EXTERN int mproc_pool_loop_run(mproc_pool *p, size_t max, bool *woken) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (!(p->opts.flags & MPROC_POOL_LOOP) || p->loop_efd < 0 || mproc__pool_foreign(p))
    return MPROC_ESTATE;
  if (max == 0)
    max = SIZE_MAX;
  pthread_mutex_lock(&p->mu);
  struct mproc_future *head = p->loopq_head, *last = NULL;
  size_t n = 0;
  for (struct mproc_future *f = head; f != NULL && n < max; f = f->loopq_next) {
    last = f;
    n++;
  }
  if (last != NULL) {
    p->loopq_head = last->loopq_next;
    if (p->loopq_head == NULL)
      p->loopq_tail = NULL;
    last->loopq_next = NULL;
  } else {
    head = NULL;
  }
  /* Drain first, then take the wake flag: a wake-up sets its flag before it
   * writes, so one whose write the drain swallowed is reported now, and one
   * that comes later leaves the eventfd readable for the next run. */
  if (p->loopq_head == NULL)
    efd_drain(p->loop_efd);
  bool w = atomic_exchange(&p->loop_woken, 0) != 0;
  pthread_mutex_unlock(&p->mu);
  if (woken != NULL)
    *woken = w;
  pid_t outer = atomic_exchange(&p->loop_tid, my_tid());
  while (head != NULL) {
    struct mproc_future *f = head;
    head = f->loopq_next;
    mproc__future_run_callbacks(f);
  }
  atomic_store(&p->loop_tid, outer);
  return (int)(n > INT32_MAX ? INT32_MAX : n);
}
