/* External commands: Python's subprocess.Popen on posix_spawn and a pidfd.
 *
 * Design notes.  State machine of one object:
 *
 *   start --> RUNNING --(deadline)--> TERM sent --(grace)--> KILL sent
 *                |                        |                     |
 *                +--------- exited: (timed out: SIGKILL the group) --> REAPED
 *
 * The deadline is acted on only inside mproc_command_wait (and by a runner
 * that polls mproc_command_due_ms and then waits); the TERM and KILL steps
 * go to the whole tree and the group.  mproc_command_free on a child still
 * running SIGKILLs the tree and the group and reaps it (waiting at most
 * 10 s for the kernel to finish it off); one a debugger holds (its zombie
 * is the tracer's to see first) is handed to reap_later.c, which reaps it
 * at a later call once the tracer lets go.
 *
 *  - Why posix_spawn: glibc implements it with clone(CLONE_VM|CLONE_VFORK),
 *    so the child never copies the parent's page tables; a fork of a large
 *    runner costs far more than the exec it is followed by.  glibc also
 *    reports exec failures (ENOENT...) as the return value and reaps the
 *    failed child itself, so a failed start leaves nothing behind.
 *  - The pidfd is opened right after the spawn.  The pid cannot be recycled
 *    in between: it stays our unreaped child, and the library never calls
 *    waitpid(-1).  If pidfd_open fails, the child is killed and reaped by its
 *    exact pid.  A program that ignores SIGCHLD voids this: the kernel
 *    reaps a child as it exits, possibly before pidfd_open (-ESRCH).  Such
 *    a child ran (posix_spawn saw its exec succeed), so the start succeeds
 *    with the object already reaped and an always-readable eventfd as its
 *    sentinel; a child reaped that way later ends its wait the same way.
 *    Either way its status is lost: mproc_command_exitcode says
 *    MPROC_ECHILD.  (Only a spawn that returns a pidfd, glibc 2.39's
 *    pidfd_spawn, would close the window in which the pid, reaped, could
 *    be reused before pidfd_open.)
 *  - No thread watches the deadline: every wait computes the next due time
 *    and polls the pidfd until then, so a program running thousands of
 *    commands pays nothing for deadlines it never reaches.
 *  - Whole-tree signals: mproc__signal_tree() freezes and walks the
 *    descendants (tree.c); a descendant whose parent already exited was
 *    reparented and is invisible to the walk, which is why the process
 *    group (MPROC_COMMAND_NEWPGRP) is signalled too.  The group id is safe
 *    to signal while the child is unreaped: the kernel does not reuse a pid
 *    that still names a live group.  Once a timed-out child has exited, the
 *    rest of its group gets SIGKILL before the child is reaped.
 *  - The child's environment is made clean on purpose: default dispositions
 *    for every signal (a runner ignoring SIGPIPE or SIGINT must not pass that
 *    on), an empty mask, and no descriptor but 0-2 (closefrom). */
#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

#define DEFAULT_GRACE_MS 1000

struct mproc_command {
  pid_t pid;        /* the child */
  int pidfd;        /* owned, registered */
  int fds[3];       /* caller's pipe ends, or -1 */
  bool pgrp;        /* the child leads its own process group */
  bool reaped;      /* exit status collected, or known to be lost */
  bool lost;        /* reaped behind the library's back: no exit status */
  bool timed_out;   /* the deadline fired */
  bool killed;      /* SIGKILL was sent for the deadline */
  int exitcode;     /* valid once reaped */
  int64_t due_ms;   /* next deadline action, -1 none */
  int64_t grace_ms; /* between SIGTERM and SIGKILL */
};

static bool valid_stream(int v) { return v >= MPROC_COMMAND_PIPE; }

static void close_pair(int p[2]) {
  mproc__close(p[0]);
  mproc__close(p[1]);
  p[0] = p[1] = -1;
}

/* The child ends of the three streams go into the file actions; pipes' and
 * /dev/null's are opened here and closed by the caller after the spawn.
 * pipes[i][0] is the child end, pipes[i][1] the caller's. */
static int setup_stream(posix_spawn_file_actions_t *fa, int which, int v, int pipes[2]) {
  int child = -1;
  if (v == MPROC_COMMAND_PIPE) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
      return mproc__neg_errno();
    p[0] = mproc__fd_own(p[0]);
    p[1] = mproc__fd_own(p[1]);
    /* stdin: the child reads p[0]; stdout/stderr: the child writes p[1]. */
    pipes[0] = which == 0 ? p[0] : p[1];
    pipes[1] = which == 0 ? p[1] : p[0];
    child = pipes[0];
  } else if (v == MPROC_COMMAND_DEVNULL) {
    int fd = open("/dev/null", which == 0 ? O_RDONLY | O_CLOEXEC : O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      return mproc__neg_errno();
    fd = mproc__fd_own(fd);
    pipes[0] = fd;
    child = fd;
  } else if (v > 0 || (v == 0 && which == 0)) {
    child = v;
  }
  /* dup2 onto the same number still clears O_CLOEXEC in the child (glibc),
   * which a caller's own fd 1 given as stdout needs. */
  if (child >= 0 && (child != which || v > 0)) {
    int e = posix_spawn_file_actions_adddup2(fa, child, which);
    if (e != 0)
      return -e;
  }
  return 0;
}

static int check_args(mproc_command **out, char *const argv[], const mproc_command_options *o) {
  if (out == NULL || argv == NULL || argv[0] == NULL)
    return MPROC_EINVAL;
  if (o->flags & ~(unsigned)(MPROC_COMMAND_SHELL | MPROC_COMMAND_NEWPGRP))
    return MPROC_EINVAL;
  if (!valid_stream(o->stdin_fd) || !valid_stream(o->stdout_fd) || !valid_stream(o->stderr_fd))
    return MPROC_EINVAL;
  if (o->timeout_ms < 0 || o->grace_ms < 0)
    return MPROC_EINVAL;
  return 0;
}

/* The argv actually exec'd: argv itself, or /bin/sh -c argv[0] argv[1..]. */
static char **shell_argv(char *const argv[]) {
  size_t n = 0;
  while (argv[n] != NULL)
    n++;
  char **v = malloc((n + 3) * sizeof *v);
  if (v == NULL)
    return NULL;
  v[0] = (char *)"/bin/sh";
  v[1] = (char *)"-c";
  for (size_t i = 0; i <= n; i++)
    v[i + 2] = argv[i];
  return v;
}

static int spawn(mproc_command *c, char *const argv[], const mproc_command_options *o,
                 posix_spawn_file_actions_t *fa) {
  posix_spawnattr_t at;
  int e = posix_spawnattr_init(&at);
  if (e != 0)
    return -e;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  short fl = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (o->flags & MPROC_COMMAND_NEWPGRP)
    fl |= POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setflags(&at, fl);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setpgroup(&at, 0);
  char **sh = NULL;
  if (o->flags & MPROC_COMMAND_SHELL) {
    sh = shell_argv(argv);
    if (sh == NULL) {
      posix_spawnattr_destroy(&at);
      return MPROC_ENOMEM;
    }
  }
  char *const *envp = o->envp != NULL ? o->envp : environ;
  pid_t pid;
  char *const *av = sh != NULL ? sh : argv;
  if (o->executable != NULL)
    e = posix_spawn(&pid, o->executable, fa, &at, av, envp);
  else if (sh != NULL)
    e = posix_spawn(&pid, sh[0], fa, &at, av, envp);
  else
    e = posix_spawnp(&pid, argv[0], fa, &at, av, envp);
  free(sh);
  posix_spawnattr_destroy(&at);
  if (e != 0)
    return -e;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0 && errno == ESRCH) {
    /* It ran and is gone already, reaped by the kernel (the program
     * ignores SIGCHLD): a command whose status is lost, not a failed
     * start.  Its sentinel is a descriptor that is always readable. */
    pidfd = eventfd(1, EFD_CLOEXEC);
    if (pidfd < 0)
      return mproc__neg_errno();
    c->lost = c->reaped = true;
  } else if (pidfd < 0) {
    int err = mproc__neg_errno();
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return err;
  }
  pidfd = mproc__fd_own(pidfd);
  c->pid = pid;
  c->pidfd = pidfd;
  return 0;
}

MPROC_EXTERN int mproc_command_start(mproc_command **out, char *const argv[],
                                     const mproc_command_options *opts) {
  static const mproc_command_options defaults;
  const mproc_command_options *o = opts != NULL ? opts : &defaults;
  int r = check_args(out, argv, o);
  if (r < 0)
    return r;
  mproc__reap_later_sweep();
  mproc_command *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MPROC_ENOMEM;
  c->fds[0] = c->fds[1] = c->fds[2] = -1;
  c->pidfd = -1;
  c->pgrp = (o->flags & MPROC_COMMAND_NEWPGRP) != 0;
  c->grace_ms = o->grace_ms > 0 ? o->grace_ms : DEFAULT_GRACE_MS;

  posix_spawn_file_actions_t fa;
  int e = posix_spawn_file_actions_init(&fa);
  if (e != 0) {
    free(c);
    return -e;
  }
  int ends[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int want[3] = {o->stdin_fd, o->stdout_fd, o->stderr_fd};
  /* The file actions run in order, so stderr given the caller's fd 1 (the
   * shell's 2>&1) while stdout is redirected would get the redirected fd 1:
   * hand it a private copy of the caller's fd 1 instead. */
  int shadow = -1;
  if (want[2] == 1 && want[1] != MPROC_COMMAND_INHERIT && want[1] != 1) {
    shadow = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (shadow < 0)
      r = mproc__neg_errno();
    shadow = mproc__fd_own(shadow);
    want[2] = shadow;
  }
  for (int i = 0; i < 3 && r == 0; i++)
    r = setup_stream(&fa, i, want[i], ends[i]);
  if (r == 0 && o->cwd != NULL)
    r = -posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
  if (r == 0)
    r = -posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (r == 0)
    r = spawn(c, argv, o, &fa);
  posix_spawn_file_actions_destroy(&fa);
  mproc__close(shadow);
  for (int i = 0; i < 3; i++) {
    /* The child's ends are the child's now; the caller's ends are kept. */
    mproc__close(ends[i][0]);
    ends[i][0] = -1;
    if (r == 0)
      c->fds[i] = ends[i][1];
    else
      close_pair(ends[i]);
  }
  if (r < 0) {
    free(c);
    return r;
  }
  c->due_ms = o->timeout_ms > 0 && !c->reaped ? mproc__deadline(o->timeout_ms) : -1;
  *out = c;
  return 0;
}

MPROC_EXTERN int mproc_command_pid(const mproc_command *c) {
  return c == NULL ? MPROC_EINVAL : (int)c->pid;
}

MPROC_EXTERN int mproc_command_sentinel(const mproc_command *c) {
  return c == NULL ? MPROC_EINVAL : c->pidfd;
}

MPROC_EXTERN int mproc_command_fd(const mproc_command *c, int which) {
  if (c == NULL || which < 0 || which > 2)
    return MPROC_EINVAL;
  return c->fds[which] >= 0 ? c->fds[which] : MPROC_ESTATE;
}

MPROC_EXTERN int mproc_command_close_fd(mproc_command *c, int which) {
  int r = mproc_command_fd(c, which);
  if (r < 0)
    return r;
  c->fds[which] = -1;
  mproc__close(r);
  return 0;
}

/* The group's id is the child's pid, which cannot name a newer group while
 * the child exists (running or a zombie).  In a program that ignores
 * SIGCHLD the kernel reaps it, unseen, as it exits, and the pid may then be
 * a new process's -- and a new group's.  So the child is first checked to
 * exist through its pidfd (signal 0), which never names another process. */
static void signal_group(const mproc_command *c, int sig) {
  if (c->pgrp && mproc__pidfd_kill(c->pidfd, 0) == 0)
    kill(-c->pid, sig);
}

MPROC_EXTERN int mproc_command_signal(mproc_command *c, int sig, unsigned flags) {
  if (c == NULL || sig < 1 || sig >= NSIG || (flags & ~(unsigned)MPROC_SIGNAL_TREE))
    return MPROC_EINVAL;
  if (c->reaped)
    return 0;
  if (!(flags & MPROC_SIGNAL_TREE)) {
    int r = mproc__pidfd_kill(c->pidfd, sig);
    return r == -ESRCH ? 0 : r;
  }
  /* The group first: members a walk cannot see (reparented orphans) get the
   * signal even if the walk below fails. */
  signal_group(c, sig);
  return mproc__signal_tree(c->pidfd, c->pid, sig);
}

/* Acts on the deadline if it has passed: SIGTERM to the tree first, SIGKILL
 * after the grace period. */
static void deadline_step(mproc_command *c) {
  if (c->due_ms < 0 || mproc_timeout_until(c->due_ms) > 0)
    return;
  if (!c->timed_out) {
    c->timed_out = true;
    mproc_command_signal(c, SIGTERM, MPROC_SIGNAL_TREE);
    c->due_ms = mproc__deadline(c->grace_ms);
  } else {
    c->killed = true;
    mproc_command_signal(c, SIGKILL, MPROC_SIGNAL_TREE);
    c->due_ms = -1;
  }
}

/* One non-blocking reap attempt: 1 if reaped now, 0 if still running. */
static int try_reap(mproc_command *c) {
  siginfo_t si;
  for (;;) {
    si.si_pid = 0;
    /* WNOWAIT first: the child must stay unreaped while its group is
     * signalled, so that the group id cannot be reused meanwhile. */
    if (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
      break;
    if (errno == ECHILD) {
      /* Reaped already, by the kernel (the program ignores SIGCHLD) or by
       * a waitpid(-1) elsewhere: it has exited, its status is lost.  Its
       * group is not signalled: nothing keeps that id from reuse now. */
      c->lost = c->reaped = true;
      c->due_ms = -1;
      return 1;
    }
    if (errno != EINTR)
      return mproc__neg_errno();
  }
  if (si.si_pid == 0)
    return 0;
  if (c->timed_out)
    signal_group(c, SIGKILL);
  while (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED) != 0) {
    if (errno != EINTR)
      return mproc__neg_errno();
  }
  c->exitcode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
  c->reaped = true;
  c->due_ms = -1;
  return 1;
}

MPROC_EXTERN int mproc_command_wait(mproc_command *c, int64_t timeout_ms) {
  if (c == NULL || mproc__check_timeout(timeout_ms) < 0)
    return MPROC_EINVAL;
  int64_t deadline = mproc__deadline(timeout_ms);
  bool exited = false;
  while (!c->reaped) {
    int r = try_reap(c);
    if (r != 0)
      return r < 0 ? r : 0;
    deadline_step(c);
    int64_t until = deadline;
    if (c->due_ms >= 0 && (until < 0 || c->due_ms < until))
      until = c->due_ms;
    /* Readable at the last look and not reaped: a debugger holds the
     * zombie. */
    r = exited ? mproc__reap_pause(until) : 0;
    if (r == 0)
      r = mproc__poll1(c->pidfd, POLLIN, until);
    exited = r > 0;
    if (r == MPROC_ETIMEDOUT) {
      if (until == deadline && mproc_timeout_until(deadline) == 0) {
        /* A last look: it may have exited right at the deadline. */
        r = try_reap(c);
        return r > 0 ? 0 : r < 0 ? r : MPROC_ETIMEDOUT;
      }
    } else if (r < 0) {
      return r;
    }
  }
  return 0;
}

MPROC_EXTERN int64_t mproc_command_due_ms(const mproc_command *c) {
  return c == NULL || c->reaped ? -1 : c->due_ms;
}

MPROC_EXTERN int mproc_command_exitcode(const mproc_command *c, int *code) {
  if (c == NULL || code == NULL)
    return MPROC_EINVAL;
  if (!c->reaped)
    return MPROC_ESTATE;
  if (c->lost)
    return MPROC_ECHILD;
  *code = c->exitcode;
  return 0;
}

MPROC_EXTERN int mproc_command_timed_out(const mproc_command *c) {
  return c == NULL ? MPROC_EINVAL : c->timed_out ? 1 : 0;
}

MPROC_EXTERN void mproc_command_free(mproc_command *c) {
  if (c == NULL)
    return;
  if (!c->reaped) {
    if (try_reap(c) == 0) {
      mproc_command_signal(c, SIGKILL, MPROC_SIGNAL_TREE);
      /* SIGKILL cannot be caught: the wait is short, but bounded anyway so
       * a child stuck in the kernel cannot hang free(). */
      c->timed_out = true; /* so the group is killed before the reap */
      c->due_ms = -1;
      mproc__poll1(c->pidfd, POLLIN, mproc__deadline(10000));
      try_reap(c);
    }
  }
  for (int i = 0; i < 3; i++)
    mproc__close(c->fds[i]);
  /* Still unreaped: a debugger holds its zombie (or it is stuck in the
   * kernel).  Closing the pidfd would leave a zombie for good. */
  if (c->reaped)
    mproc__close(c->pidfd);
  else
    mproc__reap_later(c->pidfd);
  free(c);
  mproc__reap_later_sweep();
}
