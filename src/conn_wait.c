/* Waiting on many connections and descriptors at once (Python's
 * multiprocessing.connection.wait).
 *
 * Design notes: a connection may already hold a whole message in its
 * process-local buffer (read while it was sending) although its socket is
 * not readable, so buffered data and end of stream are checked first and,
 * when any item is ready that way, the poll(2) below only collects the other
 * items without waiting.  Plain descriptors cover process sentinels (pidfds
 * poll readable when the process exits), sockets, eventfds and pipes. */
#include "conn.h"

#include <poll.h>
#include <stdlib.h>

#define WAIT_MAX 4096

MPROC_EXTERN int mproc_conn_wait(struct mproc_wait_item *items, size_t n, int64_t timeout_ms) {
  if (items == NULL || n == 0 || n > WAIT_MAX || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (items[i].conn != NULL ? !(items[i].conn->mode & MPROC__CONN_READ) : items[i].fd < 0)
      return MPROC_EINVAL;
  }
  int64_t deadline = mproc__deadline(timeout_ms);
  struct pollfd *p = calloc(n > 0 ? n : 1, sizeof *p);
  if (p == NULL)
    return MPROC_ENOMEM;
  int nready = 0;
  for (size_t i = 0; i < n; i++) {
    mproc_conn *c = items[i].conn;
    items[i].ready = c != NULL && (c->rlen > c->rpos || c->eof);
    nready += items[i].ready;
    p[i].fd = c != NULL ? c->fd : items[i].fd;
    p[i].events = POLLIN;
  }
  /* With an item already ready, the poll only collects the others (a
   * deadline in the past polls once). */
  int err = mproc__poll_until(p, n, nready > 0 ? 0 : deadline);
  if (err > 0 || (err == MPROC_ETIMEDOUT && nready > 0)) {
    err = 0;
    for (size_t i = 0; i < n; i++) {
      if (p[i].revents != 0 && !items[i].ready) {
        items[i].ready = 1;
        nready++;
      }
    }
  }
  free(p);
  return err != 0 ? err : nready;
}
