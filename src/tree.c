/* Signalling a whole process tree (MPROC_SIGNAL_TREE).
 *
 * Design notes.  Linux offers no atomic "signal my descendants", and
 * /proc/<pid>/task/<tid>/children exists only in kernels built with
 * CONFIG_PROC_CHILDREN, so the tree is found by scanning every
 * /proc/<pid>/stat for parent pids (procfs.c).  A running tree changes while it
 * is scanned (members fork and exit), hence:
 *
 *   stop root --> scan /proc: for each new process whose parent is a member,
 *       ^         open a pidfd, re-check its parent, SIGSTOP it, add it
 *       |                 |
 *       +--- a full scan with every member stopped found nothing new?
 *                         | yes (or: ~1 s passed and the tree stopped
 *                         v  growing; or 10 s passed)
 *            send `sig` to every member, top-down --> SIGCONT every member
 *
 *  - A stopped process cannot fork, so once every member is stopped and a
 *    whole scan finds nothing new, the set is complete.  SIGSTOP is
 *    asynchronous: "stopped" is read back from the state letter (T), and
 *    the loop is bounded so a process that never stops (e.g. traced)
 *    cannot hang us.
 *  - Pid reuse: a member's pidfd is opened while its parent is stopped, and
 *    its parent pid is read again afterwards.  A stopped parent cannot reap,
 *    so if the parent pid still matches, the pidfd names the right process;
 *    every later signal goes through that pidfd.  (A parent with SIGCHLD
 *    ignored has its children auto-reaped; the re-check still catches a
 *    recycled pid, since a new process would not have that parent.)
 *  - SIGCONT comes last so that a SIGTERM handler can run; for SIGKILL it is
 *    harmless.  Members stopped before the call (job control) are continued
 *    too: documented.
 *  - If a pidfd cannot be opened (out of fds), the member is still stopped
 *    and signalled by pid, which is safe while its parent stays stopped. */
#include "process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* How long to wait for every member to be seen stopped, and the bound on the
 * whole walk of a tree that keeps growing. */
#define FREEZE_BUDGET_MS 1000
#define FREEZE_LIMIT_MS 10000

struct member {
  pid_t pid;    /* process id */
  int pidfd;    /* owned pidfd, or -1 (the root's is borrowed, see `owned`) */
  bool owned;   /* whether pidfd is ours to close */
  bool gone;    /* exited (ESRCH) */
  bool stopped; /* seen in state T/t/Z/X, or gone */
};

struct tree {
  struct member *m; /* members, parents before children */
  size_t n, cap;
};

static int signal_member(const struct member *m, int sig) {
  if (m->gone)
    return -ESRCH;
  if (m->pidfd >= 0)
    return mproc__pidfd_kill(m->pidfd, sig);
  return kill(m->pid, sig) == 0 ? 0 : mproc__neg_errno();
}

static ssize_t find(const struct tree *t, pid_t pid) {
  for (size_t i = 0; i < t->n; i++)
    if (t->m[i].pid == pid)
      return (ssize_t)i;
  return -1;
}

static int add(struct tree *t, struct member m) {
  struct member *v = mproc__grow(t->m, &t->cap, t->n, sizeof *v, 16);
  if (v == NULL)
    return MPROC_ENOMEM;
  t->m = v;
  t->m[t->n++] = m;
  return 0;
}

/* Errors of mproc__proc_stat that mean "no such process to consider", as
 * opposed to failures of ours (out of fds or memory). */
static bool not_there(int e) {
  return e == -ENOENT || e == -ESRCH || e == -EACCES || e == -EPERM || e == -EIO;
}

/* A process found with a member as parent: pin it with a pidfd, check it is
 * still that parent's child, stop it and add it. */
static int adopt(struct tree *t, pid_t pid, pid_t parent) {
  struct member m = {.pid = pid, .pidfd = -1};
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    fd = mproc__fd_own(fd);
    m.pidfd = fd;
    m.owned = true;
  }
  struct mproc__pstat ps;
  int e = mproc__proc_stat(NULL, pid, &ps);
  if (e < 0 || ps.ppid != parent) {
    mproc__close(m.pidfd);
    /* Exited, or the number was recycled: not a member.  Any other failure
     * (out of fds) must not pass silently. */
    return e == 0 || not_there(e) ? 0 : e;
  }
  if (signal_member(&m, SIGSTOP) == -ESRCH)
    m.gone = m.stopped = true;
  int r = add(t, m);
  if (r < 0)
    mproc__close(m.pidfd);
  return r;
}

/* One pass over /proc.  *grew tells whether members were added; *all_stopped
 * whether every member was seen stopped (or gone). */
static int scan(struct tree *t, bool *grew, bool *all_stopped) {
  DIR *d = opendir("/proc");
  if (d == NULL)
    return mproc__neg_errno();
  mproc__fd_register(dirfd(d));
  size_t before = t->n;
  for (size_t i = 0; i < t->n; i++)
    if (!t->m[i].gone)
      t->m[i].stopped = false;
  int r = 0;
  struct dirent *ent;
  while (r == 0 && (ent = readdir(d)) != NULL) {
    char *end;
    long v = strtol(ent->d_name, &end, 10);
    if (*end != '\0' || v <= 0)
      continue;
    pid_t pid = (pid_t)v;
    struct mproc__pstat ps;
    int e = mproc__proc_stat(NULL, pid, &ps);
    if (not_there(e))
      continue; /* exited since readdir listed it, or not ours to see */
    if (e < 0) {
      /* Out of fds, say: a partial walk must not pass for a complete one. */
      r = e;
      break;
    }
    ssize_t self = find(t, pid);
    if (self >= 0) {
      if (ps.state == 'T' || ps.state == 't' || ps.state == 'Z' || ps.state == 'X')
        t->m[self].stopped = true;
      continue;
    }
    if (find(t, ps.ppid) >= 0)
      r = adopt(t, pid, ps.ppid);
  }
  mproc__fd_unregister(dirfd(d));
  closedir(d);
  /* Members not listed any more have exited. */
  *all_stopped = true;
  for (size_t i = 0; i < t->n; i++) {
    if (i < before && !t->m[i].stopped && !t->m[i].gone) {
      struct mproc__pstat ps;
      if (mproc__proc_stat(NULL, t->m[i].pid, &ps) == -ENOENT)
        t->m[i].gone = t->m[i].stopped = true;
    }
    if (!t->m[i].stopped)
      *all_stopped = false;
  }
  *grew = t->n > before;
  return r;
}

int mproc__signal_tree(int pidfd, pid_t root, int sig) {
  int r = mproc__pidfd_kill(pidfd, SIGSTOP);
  if (r < 0)
    return r == -ESRCH ? 0 : r;
  struct tree t = {0};
  r = add(&t, (struct member){.pid = root, .pidfd = pidfd});
  if (r < 0) {
    /* No memory for the walk: at least signal the root, never leave it
     * stopped. */
    mproc__pidfd_kill(pidfd, sig);
    mproc__pidfd_kill(pidfd, SIGCONT);
    return r;
  }
  int64_t soft = mproc__deadline(FREEZE_BUDGET_MS);
  int64_t hard = mproc__deadline(FREEZE_LIMIT_MS);
  bool settled = false; /* every member was stopped when the last scan ended */
  while (r == 0) {
    bool grew, all_stopped;
    r = scan(&t, &grew, &all_stopped);
    /* Complete when a whole scan ran with every member already stopped (so
     * none could fork meanwhile) and found nothing new.  One scan is not
     * enough: a member may stop during it, after forking a child whose pid
     * the directory walk had already passed (pids wrap around). */
    if (r < 0 || (settled && all_stopped && !grew))
      break;
    /* A member that never stops (traced, or stuck in the kernel) must not
     * hang us: after the soft deadline, stop waiting for stragglers as soon
     * as the tree stops growing; the hard deadline bounds even a tree that
     * keeps growing. */
    if ((!grew && mproc_timeout_until(soft) == 0) || mproc_timeout_until(hard) == 0)
      break;
    settled = all_stopped;
    if (!grew && !all_stopped) {
      /* Give pending SIGSTOPs a moment to take effect before rescanning. */
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
    }
  }
  /* Even after a failed scan, signal what was found and never leave any
   * member stopped. */
  for (size_t i = 0; i < t.n; i++)
    signal_member(&t.m[i], sig);
  for (size_t i = 0; i < t.n; i++) {
    signal_member(&t.m[i], SIGCONT);
    if (t.m[i].owned)
      mproc__close(t.m[i].pidfd);
  }
  free(t.m);
  return r;
}
