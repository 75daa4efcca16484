/* mproc_wait(): Python's multiprocessing.connection.wait over fds.
 *
 * Design notes.  One poll(2) over every fd through mproc__poll_until
 * (clock.c), which retries on EINTR against the absolute deadline taken at
 * entry.  "Ready" means what Python's wait means
 * for a connection or a sentinel: reading would not block, which includes
 * end-of-file (POLLHUP) and errors (POLLERR).  A closed or invalid fd is
 * reported as MPROC_EBADF instead of being silently ignored (poll's
 * POLLNVAL), so a stale sentinel cannot turn a wait into a busy loop.
 * Sets up to STACK_FDS entries avoid the allocation. */
#include "process.h"

#include <limits.h>
#include <poll.h>
#include <stdlib.h>

#define STACK_FDS 64

MPROC_EXTERN int mproc_wait(const int *fds, size_t n, int *ready, int64_t timeout_ms) {
  if (fds == NULL || n == 0 || n > INT_MAX || mproc__check_timeout(timeout_ms) < 0)
    return MPROC_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (fds[i] < 0)
      return MPROC_EBADF;
  int64_t deadline = mproc__deadline(timeout_ms);
  struct pollfd stack[STACK_FDS];
  struct pollfd *p = n <= STACK_FDS ? stack : malloc(n * sizeof *p);
  if (p == NULL)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < n; i++)
    p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  int r = mproc__poll_until(p, n, deadline);
  if (r > 0) {
    int count = 0;
    for (size_t i = 0; i < n && r > 0; i++)
      if (p[i].revents & POLLNVAL)
        r = MPROC_EBADF;
    for (size_t i = 0; i < n && r > 0; i++) {
      int is_ready = (p[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
      if (ready != NULL)
        ready[i] = is_ready;
      count += is_ready;
    }
    if (r > 0)
      r = count;
  }
  if (p != stack)
    free(p);
  return r;
}
