/* mproc — processes (Python's multiprocessing.Process).
 *
 * A process object runs one C function in a forked child:
 *
 *   static int work(const void *arg, size_t len) { ... return 0; }
 *
 *   mproc_process *p;
 *   int r = mproc_process_new(&p, work, &n, sizeof n, NULL);  // arg bytes copied
 *   if (r == 0) r = mproc_process_start(p);
 *   if (r == 0) r = mproc_process_join(p, 5000);              // wait at most 5 s
 *   int code;
 *   if (r == 0 && mproc_process_exitcode(p, &code) == 0) printf("exit code %d\n", code);
 *   mproc_process_free(p);
 *
 * Exit codes follow Python: the function's return value (or the status given to
 * exit()) masked to 0..255, or -signo when a signal ended the child.
 *
 * The child:
 *  - starts with default dispositions for every signal and the parent's
 *    signal mask; buffered stdio of the parent is flushed before the fork, so
 *    no output is ever written twice, and the child's own stdio is flushed
 *    when its function returns;
 *  - inherits no file descriptor the library opened for other purposes
 *    (another process's sentinel, a pool's pipes); descriptors the program
 *    opened itself are inherited, as with Python's fork start method;
 *  - is killed (SIGKILL) when its parent dies, even by SIGKILL.  Linux may
 *    send that signal as soon as the *thread* that called
 *    mproc_process_start() exits (prctl(2); Linux 6.18 does), so start fork
 *    and spawn processes from a thread that lives as long as they should
 *    (forkserver children die with the process only).
 *
 * Children are reaped through their pidfd only; the library never calls
 * waitpid(-1) and installs no SIGCHLD handler.  A program that sets SIGCHLD to
 * SIG_IGN, or reaps every child itself, loses the exit codes: join still
 * returns, and exitcode fails with MPROC_ECHILD.
 *
 * Thread safety: different process objects may be used from different
 * threads at once.  One object may be queried (is_alive, exitcode, join,
 * terminate...) from several threads; mproc_process_free() must not race with
 * any other call on the same object. */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A process object (opaque). */
typedef struct mproc_process mproc_process;

/* The child's function.  `arg` points to the child's copy of the bytes given
 * to mproc_process_new(), aligned for any type (NULL when len is 0).  The
 * return value is the exit code (0..255). */
typedef int (*mproc_process_fn)(const void *arg, size_t len);

/* mproc_process_options.flags */
enum {
  /* Python's daemon=True: when the object is freed or the parent calls
   * exit(), the child is terminated (SIGTERM, then SIGKILL after grace_ms)
   * instead of being waited for. */
  MPROC_PROCESS_DAEMON = 1u << 0,
  /* Run the child in a process group of its own (pgid = its pid): the
   * terminal's Ctrl-C does not reach it, and when the child ends, however
   * it ends (even by its parent-death signal after the parent was
   * SIGKILLed), its whole group is killed, so processes it started with a
   * plain fork() die with it.  A small guard process, invisible to the
   * child's wait()/waitpid(-1), lives in the group for that. */
  MPROC_PROCESS_NEW_GROUP = 1u << 1,
};

/* How a child is started (mproc_process_options.start_method).  Python's
 * multiprocessing start methods; see docs/reference/process.md for exactly
 * what a child sees under each. */
enum {
  /* The program's default: the environment variable MPROC_START_METHOD
   * ("fork", "spawn" or "forkserver") when set, else fork.  Read when the
   * object is created; any other value makes mproc_process_new() fail with
   * MPROC_EINVAL. */
  MPROC_START_DEFAULT = 0,
  /* A fork of the caller: fast, a copy of its memory; only
   * async-signal-safe work is safe in the child if other threads may hold
   * locks (see the reference). */
  MPROC_START_FORK = 1,
  /* A fresh exec of the program (/proc/self/exe) that never runs main():
   * the library takes the child over before main and runs the function,
   * found again by reference (function.h).  Nothing of the parent's memory
   * is inherited; the argument bytes are copied. */
  MPROC_START_SPAWN = 2,
  /* A fork of a clean single-threaded server process, itself started by
   * spawn once per program and restarted if it dies; the child is still
   * this process's own child.  Fork's speed without fork's hazards. */
  MPROC_START_FORKSERVER = 3,
};

/* Flags of mproc_process_terminate() and mproc_process_kill(). */
enum {
  /* Signal every descendant of the child too (grandchildren started with
   * plain fork() or exec'd programs included).  The tree is frozen top-down
   * with SIGSTOP first, so nothing can fork while it is walked, then every
   * member gets the signal, then SIGCONT. */
  MPROC_SIGNAL_TREE = 1u << 0,
};

/* Options of mproc_process_new(); NULL or all-zero means defaults. */
typedef struct mproc_process_options {
  /* Name for mproc_process_name(); copied.  NULL: "Process-N", N counting
   * the process objects this process created from 1; in a child named
   * "Process-N", its own objects are "Process-N:1", "Process-N:2"... as in
   * Python. */
  const char *name;
  /* MPROC_PROCESS_*; unknown bits are MPROC_EINVAL. */
  unsigned flags;
  /* A running non-daemon child at mproc_process_free() or exit(): how long to
   * wait for it to finish on its own before terminating it (Python joins
   * non-daemon children at exit).  0: 10 000 ms; -1: no limit. */
  int64_t exit_wait_ms;
  /* After SIGTERM, how long free()/exit() wait before SIGKILL.  0: 1000 ms. */
  int64_t grace_ms;
  /* MPROC_START_*; 0: the program's default (MPROC_START_METHOD). */
  int start_method;
} mproc_process_options;

/* Creates a process object in state "new" (not started).  The `len` bytes at
 * `arg` are copied now, so the caller may reuse its buffer at once; arg may be
 * NULL only when len is 0.  On success *out owns the object: release it with
 * mproc_process_free().  Errors: MPROC_EINVAL (NULL out or fn, arg NULL with
 * len > 0, unknown flags, exit_wait_ms < -1, grace_ms < 0, unknown
 * start_method or MPROC_START_METHOD value), MPROC_ENOFUNC (spawn and
 * forkserver: fn is not in the code of the program or of a loaded shared
 * library, so no other image can find it), MPROC_ENOMEM.  Does not block. */
MPROC_EXTERN int mproc_process_new(mproc_process **out, mproc_process_fn fn, const void *arg,
                                   size_t len, const mproc_process_options *opts);

/* Starts the child by the object's start method.  Before that, reaps any
 * finished children of this program (as Python's start does).  Errors:
 * MPROC_EINVAL (NULL), MPROC_ESTATE (already started, or the object belongs
 * to another process), -EAGAIN (process limit), -EMFILE/-ENFILE (no fd for
 * the pidfd or the channel), -ENOMEM; under spawn and forkserver also the
 * exec's error (-ENOENT, -E2BIG for an environment too large, -ENOMEM...),
 * MPROC_ENOFUNC (the child cannot find the function: the reason, naming it,
 * is written to stderr), MPROC_ECHILDFAILED (the new image died or hung for
 * 30 s before reaching the library), MPROC_ENOTSUP (forkserver: more than
 * 235 inheritable fds, or a kernel without clone3/PR_GET_TID_ADDRESS;
 * -EPIPE: the server died during the start and again during its retry).
 * After a failure the object is still "new" and nothing was left behind:
 * start may be retried.  Blocks for the fork; under spawn until the new image
 * has found the function (one exec), under forkserver for one round trip to
 * the server (plus one spawn the first time). */
MPROC_EXTERN int mproc_process_start(mproc_process *p);

/* Waits until the child has exited and reaps it; -1 waits forever, 0 polls.
 * Joining an already joined process returns 0 at once.  Errors: MPROC_EINVAL
 * (NULL, timeout < -1), MPROC_ESTATE (not started, or not our child),
 * MPROC_ETIMEDOUT (still running at the deadline), -errno. */
MPROC_EXTERN int mproc_process_join(mproc_process *p, int64_t timeout_ms);

/* 1 while the child runs, 0 before start and after exit (a finished child is
 * reaped here, as in Python).  Errors: MPROC_EINVAL, MPROC_ESTATE (not our
 * child).  Does not block. */
MPROC_EXTERN int mproc_process_is_alive(mproc_process *p);

/* The child's pid (still reported after exit, when the number may already
 * belong to another process: signal through the object, never by pid).
 * Errors: MPROC_EINVAL, MPROC_ESTATE (not started). */
MPROC_EXTERN int mproc_process_pid(const mproc_process *p);

/* The name (owned by the object, valid until free); NULL if p is NULL. */
MPROC_EXTERN const char *mproc_process_name(const mproc_process *p);

/* Stores the exit code in *code once the child has exited (reaping it if
 * needed): status 0..255, or -signo.  Errors: MPROC_EINVAL (NULL),
 * MPROC_ESTATE (not started, or still running: Python's None), MPROC_ECHILD
 * (reaped behind the library's back: status lost).  Does not block. */
MPROC_EXTERN int mproc_process_exitcode(mproc_process *p, int *code);

/* Sends SIGTERM (terminate) or SIGKILL (kill) to the child, and with
 * MPROC_SIGNAL_TREE to all its descendants.  A child that has already exited
 * is not signalled and the call succeeds (Python); the signal goes through
 * the pidfd, so a recycled pid is never hit.  Errors: MPROC_EINVAL (NULL,
 * unknown flags), MPROC_ESTATE (not started, not our child), -errno (with
 * the tree flag, -EMFILE/-ENFILE/-ENOMEM when the tree cannot be walked: the
 * members found so far, the child at least, were signalled).  Without
 * MPROC_SIGNAL_TREE it does not block; with it, it scans /proc a few times,
 * waiting at most about one second for stragglers to stop and 10 seconds in
 * all (a tree that keeps growing) before signalling. */
MPROC_EXTERN int mproc_process_terminate(mproc_process *p, unsigned flags);
MPROC_EXTERN int mproc_process_kill(mproc_process *p, unsigned flags);

/* The child's pidfd: readable (POLLIN) once the child has exited, for poll,
 * epoll or mproc_wait().  Owned by the object, valid until free; do not
 * close it.  Errors: MPROC_EINVAL, MPROC_ESTATE (not started). */
MPROC_EXTERN int mproc_process_sentinel(const mproc_process *p);

/* Releases the object; NULL is a no-op.  A child still running is never left
 * behind as a zombie: a daemon child is terminated (SIGTERM, then SIGKILL
 * after grace_ms) and reaped; a non-daemon child is waited for up to
 * exit_wait_ms, then terminated the same way.  So free() blocks at most
 * exit_wait_ms + grace_ms (+ a bounded moment for SIGKILL to take effect).
 * Called in a forked copy of the program, it only releases memory. */
MPROC_EXTERN void mproc_process_free(mproc_process *p);

/* At exit() (not _exit, not a fatal signal) the library treats every running
 * child this program started and did not free the same way, daemons first
 * signalled together.  The handler does nothing in a forked child for objects
 * of its parent. */

/* How many times the forkserver of this program was found dead (killed) and
 * replaced.  Never fails. */
MPROC_EXTERN int mproc_forkserver_restarts(void);

/* Stops this program's forkserver, if one runs (Python's
 * forkserver._stop()); children it started keep running, and the next
 * forkserver start starts a new server (not counted as a restart).  Waits
 * at most about a second for the server to exit before killing it. */
MPROC_EXTERN void mproc_forkserver_stop(void);

/* Python's multiprocessing.connection.wait: waits until at least one of the
 * n fds (sentinels, pipe or socket ends...) is readable, hung up or in error.
 * If ready is not NULL, ready[i] is set to 1 for each such fd and 0 for the
 * others.  Returns the number of ready fds (>= 1).  Errors: MPROC_EINVAL
 * (NULL fds, n == 0, timeout < -1, too many fds), MPROC_EBADF (a negative or
 * closed fd), MPROC_ETIMEDOUT, -ENOMEM. */
MPROC_EXTERN int mproc_wait(const int *fds, size_t n, int *ready, int64_t timeout_ms);

/* Python's os.process_cpu_count()/loky's cpu_count: how many CPUs this
 * process may actually use: the CPUs of its affinity mask, limited by the CPU
 * quota of its cgroup (v1 cpu.cfs_quota_us/cfs_period_us or v2 cpu.max, the
 * tightest along the hierarchy), rounded up; at least 1.  Never fails. */
MPROC_EXTERN int mproc_cpu_count(void);

/* Python's multiprocessing.active_children(): reaps children of this program
 * that have finished (their exit codes become available), then stores up to
 * cap of the still running ones in out[] and returns how many are running
 * (possibly more than cap).  Objects already freed are not counted.  Errors:
 * MPROC_EINVAL (out NULL with cap > 0). */
MPROC_EXTERN int mproc_active_children(mproc_process **out, size_t cap);

/* Python's parent_process().pid: in a child started by mproc_process_start(),
 * the pid of the process that started it; MPROC_ESTATE elsewhere (Python's
 * None). */
MPROC_EXTERN int mproc_parent_pid(void);

/* Python's current_process().name: the name of the running child's process
 * object, or "MainProcess" outside mproc children.  Static; never NULL. */
MPROC_EXTERN const char *mproc_current_process_name(void);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_PROCESS_H */
