/* Children whose reap is pending: a process-wide list of pidfds.
 *
 * Design notes.  A child the library has killed is normally reaped within
 * moments.  Two cases keep it from being reaped for an unbounded time: a
 * debugger that traces it (a traced zombie is shown to its tracer first, and
 * its parent's waitid finds nothing until the tracer lets go) and, rarely, a
 * process stuck in the kernel.  A call that frees the object (a process, a
 * command, a pool's worker, a helper of the library) must not wait for
 * either, yet closing the pidfd would leave a zombie nobody ever reaps.  So
 * such a pidfd is handed to this list, which owns it from then on, and every
 * entry is retried -- one waitid(WNOHANG) each, never blocking -- at later
 * library calls that start or free children, and at exit.  No thread and no
 * SIGCHLD handler: the host program's signals and threads stay its own.
 *
 *   handed over --(retry: reaped, or ECHILD: reaped elsewhere)--> closed
 *        |
 *        +--(retry: nothing yet)--> stays listed
 *
 * An empty list costs one relaxed atomic load per call site.  Fork-safety:
 * a forked copy of the program inherits the list, but not the children
 * (they are its parent's); `owner` tells them apart, and a copy forgets the
 * list without closing anything (in a child the library forked the fd
 * numbers were closed and may name other files now).  The lock is
 * re-initialised in a child, as another thread may have held it at fork. */
#include "internal.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int *fds;             /* pidfds whose reap is pending; under lock */
static size_t nfds, capfds;  /* entries, capacity; under lock */
static pid_t owner;          /* getpid() of the process the entries belong to */
static _Atomic size_t count; /* nfds, readable without the lock */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void forget_in_child(void) {
  static const pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  memcpy(&lock, &fresh, sizeof fresh);
  /* The array is the parent's: dropped, not freed (it may be mid-realloc). */
  fds = NULL;
  nfds = capfds = 0;
  owner = 0;
  atomic_store_explicit(&count, 0, memory_order_relaxed);
}

static void at_exit(void) { mproc__reap_later_sweep(); }

static void register_handlers(void) {
  atexit(at_exit);
  pthread_atfork(NULL, NULL, forget_in_child);
}

/* One non-blocking attempt; true once the pidfd needs nothing more. */
static bool reap_now(int pidfd) {
  siginfo_t si;
  si.si_pid = 0;
  int r;
  do
    r = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG);
  while (r < 0 && errno == EINTR);
  /* ECHILD: reaped behind the library's back (SIGCHLD ignored).  Any other
   * error would repeat for ever: the entry is dropped. */
  return r < 0 || si.si_pid != 0;
}

void mproc__reap_later(int pidfd) {
  if (pidfd < 0)
    return;
  if (reap_now(pidfd)) {
    mproc__close(pidfd);
    return;
  }
  pthread_once(&handlers_once, register_handlers);
  pthread_mutex_lock(&lock);
  if (owner != getpid()) { /* first entry of this process */
    nfds = 0;
    owner = getpid();
  }
  if (nfds == capfds) {
    size_t cap = capfds > 0 ? 2 * capfds : 8;
    int *v = realloc(fds, cap * sizeof *v);
    if (v == NULL) {
      /* Out of memory: given up, as before the list existed (the zombie
       * stays until the program exits). */
      pthread_mutex_unlock(&lock);
      mproc__close(pidfd);
      return;
    }
    fds = v;
    capfds = cap;
  }
  fds[nfds++] = pidfd;
  atomic_store_explicit(&count, nfds, memory_order_relaxed);
  pthread_mutex_unlock(&lock);
}

void mproc__reap_later_sweep(void) {
  if (atomic_load_explicit(&count, memory_order_relaxed) == 0)
    return;
  pthread_mutex_lock(&lock);
  if (owner == getpid())
    for (size_t i = 0; i < nfds;) {
      if (!reap_now(fds[i])) {
        i++;
        continue;
      }
      mproc__close(fds[i]);
      fds[i] = fds[--nfds];
    }
  atomic_store_explicit(&count, owner == getpid() ? nfds : 0, memory_order_relaxed);
  pthread_mutex_unlock(&lock);
}

size_t mproc__reap_later_pending(void) {
  pthread_mutex_lock(&lock);
  size_t n = owner == getpid() ? nfds : 0;
  pthread_mutex_unlock(&lock);
  return n;
}

int mproc__reap_killed(int pidfd, int *exitcode, int64_t deadline_ms) {
  /* Readable once it has exited; unreapable then means a tracer holds its
   * zombie, and waiting on would only spin until the deadline. */
  int r = mproc__poll1(pidfd, POLLIN, deadline_ms);
  if (r >= 0 || r == MPROC_ETIMEDOUT)
    r = mproc__reap(pidfd, exitcode, 0);
  if (r == MPROC_ETIMEDOUT) {
    mproc__reap_later(pidfd);
    return 1;
  }
  mproc__close(pidfd);
  return r;
}
