/* /proc/<pid>/stat: the fields the library reads about other processes.
 *
 * Design notes.  One parser for every reader (the process-tree walk, queue
 * participants' start times, pool worker CPU times, and the tests' child
 * counting), because the format has one trap: field 2, the command name,
 * is chosen by the process itself and may hold spaces and ')'.  The fields
 * are therefore counted after the LAST ')' of the line.  The file is read
 * with one read(2): the kernel produces it in one go, so the line is a
 * consistent snapshot (one page is far more than it ever holds).  The fd is
 * registered while open, so a child forked meanwhile by another thread does
 * not inherit it. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mproc__proc_stat(const char *proc, pid_t pid, struct mproc__pstat *out) {
  if (out == NULL || pid <= 0)
    return MPROC_EINVAL;
  char path[256], buf[1024];
  if (snprintf(path, sizeof path, "%s/%d/stat", proc != NULL ? proc : "/proc", (int)pid) >=
      (int)sizeof path)
    return -ENAMETOOLONG;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf - 1)) < 0 && errno == EINTR) {
  }
  int err = n < 0 ? mproc__neg_errno() : 0;
  mproc__close(fd);
  if (n < 0)
    return err == -ESRCH ? -ENOENT : err; /* a process reaped while read */
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return -EIO;
  /* After ')': state(3) ppid(4) pgrp session tty tpgid flags minflt cminflt
   * majflt cmajflt utime(14) stime(15) cutime cstime priority nice
   * num_threads itrealvalue starttime(22). */
  uint64_t f[20];
  char state;
  int k = 0;
  char *s = p + 1;
  if (sscanf(s, " %c%n", &state, &k) != 1)
    return -EIO;
  s += k;
  for (int i = 0; i < 19; i++) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno != 0)
      return -EIO;
    f[i] = (uint64_t)v;
    s = end;
  }
  *out = (struct mproc__pstat){.state = state,
                               .ppid = (pid_t)f[0],
                               .utime = f[10],
                               .stime = f[11],
                               .start_time = f[18],
                               .num_threads = (uint32_t)f[16]};
  return 0;
}

int mproc__poll_peer(int fd, short events, int64_t deadline_ms, pid_t peer) {
  if (peer <= 0)
    return mproc__poll1(fd, events, deadline_ms);
  for (;;) {
    /* Slices: a stopped peer is looked for only when it is slow to answer,
     * so a prompt one costs no /proc read. */
    int64_t slice = mproc__deadline(MPROC__PEER_CHECK_MS);
    bool last = deadline_ms >= 0 && deadline_ms <= slice;
    int r = mproc__poll1(fd, events, last ? deadline_ms : slice);
    if (r != MPROC_ETIMEDOUT || last)
      return r;
    struct mproc__pstat ps;
    if (mproc__proc_stat(NULL, peer, &ps) == 0 && ps.state == 'T')
      return 0;
  }
}
