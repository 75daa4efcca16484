/* mproc — external commands (Python's subprocess.Popen, for C).
 *
 * A command object runs a program (argv, searched on PATH, or a /bin/sh -c
 * command line) in a child started with posix_spawn, i.e. a vfork-style
 * clone that never copies the parent's memory, so starting it costs the same
 * from a small or a huge program.  The child is tracked by a pidfd, may get
 * its own process group, its standard streams redirected to fds, pipes or
 * /dev/null, and a deadline after which its whole process tree is stopped:
 *
 *   char *argv[] = {"gzip", "-9", "big.log", NULL};
 *   mproc_command_options o = {.timeout_ms = 60000, .flags = MPROC_COMMAND_NEWPGRP};
 *   mproc_command *c;
 *   int r = mproc_command_start(&c, argv, &o);
 *   if (r == 0) r = mproc_command_wait(c, -1);       // returns once it has exited
 *   int code;
 *   if (r == 0) r = mproc_command_exitcode(c, &code);  // 0..255 or -signo
 *   mproc_command_free(c);
 *
 * The child starts with default dispositions for every signal and an empty
 * signal mask, and inherits only its three standard streams: every other
 * descriptor is closed (Python's close_fds=True).  It is reaped through its
 * pidfd only (never waitpid(-1), no SIGCHLD handler).
 *
 * Deadlines need no thread: mproc_command_wait() enforces the command's own
 * deadline while it waits, and a program multiplexing many commands polls
 * their sentinels with a timeout no later than mproc_command_due_ms(), then
 * calls mproc_command_wait(c, 0) on each command that is readable or due.
 *
 * Thread safety: different objects may be used from different threads; one
 * object must not be used by two threads at once. */
#ifndef MPROC_COMMAND_H
#define MPROC_COMMAND_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A command object (opaque). */
typedef struct mproc_command mproc_command;

/* mproc_command_options.flags */
enum {
  /* argv[0] is a command line run by /bin/sh -c; argv[1..] become $0, $1...
   * (Python's shell=True with a sequence). */
  MPROC_COMMAND_SHELL = 1u << 0,
  /* Start the child in a new process group (pgid = its pid), so that a tree
   * signal also reaches descendants whose parent has already exited, and a
   * terminal's Ctrl-C does not reach it directly. */
  MPROC_COMMAND_NEWPGRP = 1u << 1,
};

/* Values of the stdin_fd/stdout_fd/stderr_fd options besides a
 * descriptor >= 0 of the caller (dup'ed onto the child's stream; the caller
 * keeps its own).  0 is also "inherit" for stdout and stderr: the child's
 * stream is the caller's stream of the same number, so the caller's fd 0 can
 * not be given as the child's stdout or stderr. */
#define MPROC_COMMAND_INHERIT 0
#define MPROC_COMMAND_DEVNULL (-1) /* /dev/null */
#define MPROC_COMMAND_PIPE (-2)    /* a new pipe; the caller's end: mproc_command_fd() */

/* Options of mproc_command_start(); NULL or all-zero means defaults. */
typedef struct mproc_command_options {
  unsigned flags; /* MPROC_COMMAND_*; unknown bits are MPROC_EINVAL */
  int stdin_fd;   /* MPROC_COMMAND_INHERIT (0), _DEVNULL, _PIPE or an fd >= 0 */
  int stdout_fd;  /* the same; 0 inherits the caller's stdout */
  int stderr_fd;  /* the same; 0 inherits the caller's stderr */
  /* The program file to execute, used as given (no PATH search); argv[0]
   * is still what the program sees as its name.  With MPROC_COMMAND_SHELL
   * it replaces /bin/sh.  NULL: argv[0] searched on PATH (Python's
   * executable=).  A caller starting one program many times saves the PATH
   * search by resolving it once. */
  const char *executable;
  const char *cwd;   /* working directory of the child; NULL: the caller's */
  char *const *envp; /* environment; NULL: the caller's */
  /* How long the command may run (from start), 0: no limit.  When it
   * passes, mproc_command_wait() sends SIGTERM to the whole tree, and
   * SIGKILL grace_ms later to whatever is left (including, with
   * MPROC_COMMAND_NEWPGRP, members of its process group once the child
   * itself has exited).  The exit code then reflects the signal and
   * mproc_command_timed_out() returns 1. */
  int64_t timeout_ms;
  int64_t grace_ms; /* 0: 1000 ms */
} mproc_command_options;

/* Starts argv (NULL-terminated; argv[0] searched on PATH unless it contains
 * a '/').  On success *out owns the object: release it with
 * mproc_command_free().  Errors: MPROC_EINVAL (NULL out/argv/argv[0],
 * unknown flags, a std*_fd below -2, timeout_ms or grace_ms < 0),
 * MPROC_ENOMEM, -EMFILE/-ENFILE, and what exec reported: -ENOENT (no such
 * program), -EACCES, -ENOEXEC...  A failed start leaves nothing behind (no
 * child, no fd).  Blocks only until the child has called exec. */
MPROC_EXTERN int mproc_command_start(mproc_command **out, char *const argv[],
                                     const mproc_command_options *opts);

/* The child's pid.  Errors: MPROC_EINVAL (NULL). */
MPROC_EXTERN int mproc_command_pid(const mproc_command *c);

/* The pidfd, readable (POLLIN) once the child has exited; owned by the
 * object.  (An always-readable eventfd for a child the kernel reaped before
 * its pidfd could be opened: the program ignores SIGCHLD.)  Errors:
 * MPROC_EINVAL. */
MPROC_EXTERN int mproc_command_sentinel(const mproc_command *c);

/* The caller's end of stream `which` (0 stdin, 1 stdout, 2 stderr) when it
 * was MPROC_COMMAND_PIPE: write end for stdin, read end for the others
 * (O_CLOEXEC, blocking).  Owned by the object.  Errors: MPROC_EINVAL
 * (NULL, which not 0..2), MPROC_ESTATE (not a pipe, or already closed). */
MPROC_EXTERN int mproc_command_fd(const mproc_command *c, int which);

/* Closes the caller's end of a pipe early (stdin: the child sees end of
 * file).  Errors: as mproc_command_fd(). */
MPROC_EXTERN int mproc_command_close_fd(mproc_command *c, int which);

/* Waits until the child has exited and reaps it, sending the deadline's
 * signals when they fall due during the wait; -1 waits forever, 0 polls
 * (and still sends signals that are due).  Waiting again after success
 * returns 0 at once.  Errors: MPROC_EINVAL (NULL, timeout < -1),
 * MPROC_ETIMEDOUT (still running), -errno. */
MPROC_EXTERN int mproc_command_wait(mproc_command *c, int64_t timeout_ms);

/* Absolute time (mproc_now_ms() clock) at which the command's deadline next
 * requires mproc_command_wait() to act, or -1 when nothing is pending (no
 * timeout, or already exited).  -1 also for NULL. */
MPROC_EXTERN int64_t mproc_command_due_ms(const mproc_command *c);

/* After a successful wait: the exit status 0..255, or -signo when a signal
 * ended the child (Python's returncode).  Errors: MPROC_EINVAL (NULL),
 * MPROC_ESTATE (not reaped yet), MPROC_ECHILD (reaped behind the library's
 * back, e.g. the program ignores SIGCHLD: it exited, its status is lost). */
MPROC_EXTERN int mproc_command_exitcode(const mproc_command *c, int *code);

/* 1 if the deadline passed and the tree was signalled, else 0;
 * MPROC_EINVAL for NULL. */
MPROC_EXTERN int mproc_command_timed_out(const mproc_command *c);

/* Sends `sig` (1..64) to the child through its pidfd, and with
 * MPROC_SIGNAL_TREE (process.h) to every descendant and, with
 * MPROC_COMMAND_NEWPGRP, to its whole process group (members may get it
 * twice).  A child that has exited is not signalled and the call succeeds.
 * Errors: MPROC_EINVAL (NULL, bad signal, unknown flags), -errno.  With the
 * tree flag it may scan /proc for up to about a second. */
MPROC_EXTERN int mproc_command_signal(mproc_command *c, int sig, unsigned flags);

/* Releases the object; NULL is a no-op.  A child still running is killed
 * (SIGKILL, with its whole tree) and reaped, so nothing is left behind;
 * pipe ends are closed. */
MPROC_EXTERN void mproc_command_free(mproc_command *c);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_COMMAND_H */
