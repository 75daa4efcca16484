/* Deadlines on CLOCK_MONOTONIC.
 *
 * Design notes: public calls take a relative timeout (-1 forever, 0 poll,
 * > 0 ms).  Each converts it once, at entry, into an absolute deadline; every
 * wait inside the call then derives its remaining time from that deadline, so
 * EINTR retries and spurious wake-ups never extend the total wait.  The poll
 * loop of every fd wait is mproc__poll_until() below; futex sleeps go through
 * futex.c, with the same rule: time out only once the deadline has passed. */
#include "internal.h"

#include <limits.h>
#include <poll.h>
#include <time.h>

MPROC_EXTERN int64_t mproc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

MPROC_EXTERN int64_t mproc_deadline_after(int64_t timeout_ms) {
  if (timeout_ms < 0)
    return -1;
  int64_t now = mproc_now_ms();
  /* Saturate instead of overflowing: a huge timeout means "practically
   * forever", not a deadline in the past. */
  if (timeout_ms > INT64_MAX - now)
    return INT64_MAX;
  return now + timeout_ms;
}

MPROC_EXTERN int64_t mproc_timeout_until(int64_t deadline_ms) {
  if (deadline_ms < 0)
    return -1;
  int64_t left = deadline_ms - mproc_now_ms();
  return left > 0 ? left : 0;
}

int64_t mproc__deadline(int64_t timeout_ms) { return mproc_deadline_after(timeout_ms); }

int mproc__check_timeout(int64_t timeout_ms) { return timeout_ms >= -1 ? 0 : MPROC_EINVAL; }

int mproc__poll_timeout(int64_t deadline_ms) {
  int64_t left = mproc_timeout_until(deadline_ms);
  if (left > INT_MAX)
    return INT_MAX;
  return (int)left;
}

int mproc__poll_until(struct pollfd *fds, size_t n, int64_t deadline_ms) {
  for (;;) {
    int r = poll(fds, (nfds_t)n, mproc__poll_timeout(deadline_ms));
    if (r > 0)
      return r;
    if (r == 0) {
      if (mproc_timeout_until(deadline_ms) == 0)
        return MPROC_ETIMEDOUT;
      continue; /* woke before the deadline: rounding */
    }
    if (errno != EINTR)
      return mproc__neg_errno();
  }
}

int mproc__poll1(int fd, short events, int64_t deadline_ms) {
  struct pollfd p = {.fd = fd, .events = events, .revents = 0};
  int r = mproc__poll_until(&p, 1, deadline_ms);
  return r > 0 ? p.revents : r;
}
