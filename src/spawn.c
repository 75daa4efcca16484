/* The one place the library forks.
 *
 * Design notes.  Modelled on libuv's src/unix/process.c, for fork without
 * exec:
 *
 *   parent: flush stdio -> block all signals -> fork ------------------+
 *     |                                                                |
 *     | restore mask -> pidfd_open(pid) -> register pidfd -> return     |
 *                                                                      v
 *   child:  drop stdout/stderr buffers -> default dispositions ->
 *           PR_SET_PDEATHSIG -> parent alive? (no: _exit) -> new pgrp?
 *           (then a group guard, see below) -> close library fds ->
 *           restore mask -> fn(arg) -> _exit(status)
 *
 * Why each step:
 *  - stdio is flushed first, or bytes buffered in the parent would be written
 *    once by each process.  That flush cannot be complete: another parent
 *    thread may print between it and the fork, and pool workers are forked
 *    from the manager thread without it (MPROC__SPAWN_NOFLUSH: flushing the
 *    program's streams from a background thread would interleave with its
 *    own writes).  So the child also discards its copies of the stdout and
 *    stderr buffers right after fork (__fpurge, which takes no lock: a
 *    parent thread may have held the stream's lock at fork time).  Whatever
 *    they held is the parent's output, which the parent itself writes; a
 *    child that later calls exit() flushes only what it printed itself.
 *    Other FILE streams cannot be enumerated portably: they are covered by
 *    the flush only (documented in process.md);
 *  - MPROC__SPAWN_INTERNAL marks the fork (a thread-local flag the fork
 *    handlers read) so that a process the library forks for itself, such
 *    as a named block's keeper, is given no roles in the user's queues;
 *  - all signals are blocked across fork so a parent signal handler can never
 *    run in the child before the child has reset its dispositions;
 *  - PR_SET_PDEATHSIG is racy on its own: the parent may die between fork and
 *    prctl, and then the signal never comes.  Comparing getppid() with the
 *    pid recorded before fork closes the race.  Note that Linux sends the
 *    signal when the *thread* that forked exits, so long-lived objects must
 *    fork from a long-lived thread (documented in the public headers);
 *  - the pidfd is opened right after fork.  The pid cannot be recycled in
 *    between because it stays our unreaped child, and this library never
 *    calls waitpid(-1).  A program that reaps every child behind our back
 *    (SIGCHLD set to SIG_IGN, or its own waitpid(-1)) breaks that guarantee;
 *    the public documentation says so.
 *  - If pidfd_open fails (EMFILE...), the child is killed and reaped by its
 *    exact pid, so a failed spawn leaves nothing behind.
 *
 * What a start costs beyond fork itself is mostly page faults: fork copies
 * no page-table entries for code, so each 64 KiB window of code the child
 * runs first is a fault, and every page either side writes after fork is a
 * copy-on-write fault.  So the child makes its system calls inline
 * (child_sys) rather than through a wrapper each, resolves no symbol lazily
 * (bind_child_calls, child_exit), reads no constant the parent does not
 * (the default sigaction is on its stack), and writes shared state only
 * when it changes (stdio purge, fork handlers); measured, a start took 44
 * faults, then 22, now 19 to 20 (the stack's and the C library's placement
 * move a page either way from run to run), against 19 to 21 for a bare
 * fork + _exit. */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#if defined(__has_include)
#if __has_include(<stdio_ext.h>)
#include <stdio_ext.h>
#define MPROC__HAVE_FPURGE 1
#endif
#endif
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* Per thread: another thread of the program may fork at the same moment,
 * and its child is a user's process. */
static _Thread_local bool internal_fork;

bool mproc__internal_fork(void) { return internal_fork; }

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* The kernel's signal set, in bytes: the first part of the C library's. */
#define KSIGSET_BYTES (NSIG / 8)

/* The first real-time signal the C library leaves to programs (SIGRTMIN,
 * a function call), read in the parent before its first fork; the ones
 * between the kernel's first (32) and it are the library's own (glibc's
 * thread cancellation and set*id broadcast) and keep their handlers. */
static int first_user_rt;

/* The child's own system calls are made inline, through neither the C
 * library's wrappers nor its syscall(): each lives on a page of code of its
 * own, and every page the child runs first costs it a page fault (fork does
 * not copy the page table of code), a larger cost than the call itself.
 * Returns what the kernel returns: a negative errno on failure.  Other
 * architectures use syscall(), one page for every call. */
static long child_sys(long n, long a, long b, long c, long d, long e) {
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                   : "rcx", "r11", "memory");
  return ret;
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  __asm__ volatile("svc 0"
                   : "+r"(x0)
                   : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                   : "memory", "cc");
  return x0;
#else
  long r = syscall(n, a, b, c, d, e);
  return r < 0 ? -errno : r;
#endif
}

void mproc__reset_signals(void) {
  /* SIG_DFL, no flags, an empty mask: the all-zero kernel struct sigaction
   * on every architecture (this is larger than any of them).  On the stack,
   * whose page the child has written already: a constant would be read from
   * a page of read-only data that fork does not map, one more page fault. */
  const uint64_t dfl[8] = {0};
  int rtmin = first_user_rt != 0 ? first_user_rt : SIGRTMIN;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP || (sig >= 32 && sig < rtmin))
      continue;
    child_sys(SYS_rt_sigaction, sig, (long)dfl, 0, KSIGSET_BYTES, 0);
  }
}

/* Whether `f` holds bytes not yet written, as __fpending tells.  With glibc
 * the narrow buffer's pointers are read directly (public fields of its
 * FILE; a wide-oriented stream counts as pending, its purge being harmless):
 * __fpending lives on a page of code nothing else of the child runs, and
 * each such page is one more page fault in every child. */
#ifdef MPROC__HAVE_FPURGE
static bool stdio_pending(FILE *f) {
#if defined(__GLIBC__)
  return f->_mode > 0 || f->_IO_write_ptr != f->_IO_write_base;
#else
  return __fpending(f) != 0;
#endif
}
#endif

/* The child's copies of the parent's pending stdout/stderr bytes: never
 * written by the child (see the design notes).  Purged only when there are
 * some: the purge writes the FILE, a copy-on-write fault in every child. */
static void drop_parent_stdio(void) {
#ifdef MPROC__HAVE_FPURGE
  if (stdio_pending(stdout))
    __fpurge(stdout);
  if (stdio_pending(stderr))
    __fpurge(stderr);
#endif
}

/* Runs once in the parent, before its first fork: calls, harmlessly, each
 * C library function the child calls only after fork.  A program linked
 * with lazy binding resolves a function's PLT entry at its first call; left
 * to the child, every child would repeat the symbol lookup and take a
 * copy-on-write fault on the GOT page (measured: about a tenth of a process
 * start's CPU time).  Resolved here, the children inherit bound entries.
 * (Resetting only the caught or ignored signals, read from
 * /proc/self/status or, with raw system calls, /proc/self/stat, was tried
 * instead of the 60 sigactions of mproc__reset_signals: reading either file
 * in a fresh child cost more than the calls it saved.) */
static void bind_child_calls(void) {
  char probe[1];
  FILE *f = fmemopen(probe, sizeof probe, "w");
  if (f != NULL) {
#ifdef MPROC__HAVE_FPURGE
    if (stdio_pending(f))
      __fpurge(f);
#endif
    fclose(f);
  }
  (void)syscall(SYS_getppid);
  first_user_rt = SIGRTMIN;
}

static pthread_once_t bind_once = PTHREAD_ONCE_INIT;

/* ---- the group guard ----------------------------------------------------
 *
 * A child in a process group of its own (MPROC__SPAWN_NEWPGRP) promises that
 * its whole group dies with it: processes it started with a plain fork(),
 * which know nothing of the library, must not outlive it.  While the parent
 * lives, its code kills the group when the child is reaped.  But when the
 * parent is SIGKILLed, the child dies by its parent-death signal and nobody
 * is left to kill the group.  So the child starts a guard first: a tiny
 * process in the same group that waits (on a pidfd) for the child to exit,
 * whatever the reason, then SIGKILLs the group, itself included.
 *
 *  - It is the child's child, made with a raw clone whose exit signal is 0:
 *    the child gets no SIGCHLD for it, and waitpid(-1)/wait() in the
 *    child's code never see it (only __WALL/__WCLONE waits would).  It runs
 *    no fork handlers, so it takes no part in the user's objects.
 *  - All signals stay blocked in it (SIGKILL and SIGSTOP aside): a signal
 *    sent to the group (Ctrl-C style, or a tree signal) ends the child, and
 *    the guard then finishes the group.
 *  - It closes every descriptor at once (holding none of the pipes whose
 *    end-of-file someone waits for) and makes only raw system calls: it is
 *    a copy of a freshly forked process of a possibly multi-threaded program.
 *  - Being a member, it keeps the group's id from being recycled until the
 *    group is killed.
 *  - Best effort: if it cannot be created (process limit), the child runs
 *    without it, and only a live parent kills its group; if it cannot open
 *    a pidfd on the child, it watches for its own reparenting instead. */
static _Noreturn void guard_main(pid_t child) {
  if (syscall(SYS_close_range, 0u, ~0u, 0u) != 0) /* before Linux 5.9 */
    for (int fd = 0; fd < 4096; fd++)
      syscall(SYS_close, fd);
  int pfd = (int)syscall(SYS_pidfd_open, child, 0);
  if (pfd >= 0 && (pid_t)syscall(SYS_getppid) == child) {
    /* ppoll: the one poll system call every architecture has. */
    struct pollfd p = {.fd = pfd, .events = POLLIN};
    while (syscall(SYS_ppoll, &p, 1, NULL, NULL, 0) < 0 && errno == EINTR) {
    }
  } else if (pfd < 0) {
    /* No pidfd (out of memory, a kernel or filter refusing it): the child
     * is alive, so killing the group now would end it for nothing.  Watch
     * for the reparenting that its exit causes instead, 20 times a second. */
    struct timespec tick = {0, 50 * 1000 * 1000};
    while ((pid_t)syscall(SYS_getppid) == child)
      syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &tick, NULL);
  }
  /* The child exited (or was gone already: we were reparented). */
  syscall(SYS_kill, 0, SIGKILL);
  syscall(SYS_exit_group, 0);
  for (;;) {
  }
}

void mproc__group_guard_start(void) {
  pid_t child = (pid_t)syscall(SYS_getpid);
  /* flags = exit signal 0, no sharing: a fork whose end signals no one.  The
   * argument order differs between architectures, but all but the flags
   * are 0. */
  long r = syscall(SYS_clone, 0L, 0L, 0L, 0L, 0L);
  if (r == 0)
    guard_main(child);
}

/* _exit(status) without the C library's _exit: the child would be its first
 * caller, and a lazily bound program would resolve that one symbol again in
 * every child (about ten page faults of the dynamic linker's code and data,
 * a third of a process start's).  glibc's _exit is this system call. */
static _Noreturn void child_exit(int status) {
  child_sys(SYS_exit_group, status, 0, 0, 0, 0);
  for (;;)
    child_sys(SYS_exit, status, 0, 0, 0, 0);
}

static _Noreturn void child_main(const struct mproc__spawn_opts *o, pid_t parent,
                                 const sigset_t *oldmask, const int hold[2]) {
  if (hold[0] >= 0) {
    /* Wait until the parent holds our pidfd (end of file on the pipe). */
    char b;
    close(hold[1]);
    while (read(hold[0], &b, 1) < 0 && errno == EINTR) {
    }
    close(hold[0]);
  }
  drop_parent_stdio();
  mproc__reset_signals();
  long sig = o->pdeathsig > 0 ? o->pdeathsig : SIGKILL;
  if (child_sys(SYS_prctl, PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 ||
      (pid_t)child_sys(SYS_getppid, 0, 0, 0, 0, 0) != parent)
    child_exit(127);
  if (o->flags & MPROC__SPAWN_NEWPGRP) {
    setpgid(0, 0);
    mproc__group_guard_start(); /* signals are still all blocked: so will they be there */
  }
  mproc__fd_close_registered_except(o->keep_fds, o->nkeep,
                                    (o->flags & MPROC__SPAWN_KEEP_USER_FDS) != 0);
  child_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)oldmask, 0, KSIGSET_BYTES, 0);
  child_exit(o->fn(o->arg));
}

bool mproc__children_autoreaped(void) {
  struct sigaction sa;
  return sigaction(SIGCHLD, NULL, &sa) == 0 &&
         (((sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == SIG_IGN) ||
          (sa.sa_flags & SA_NOCLDWAIT) != 0);
}

int mproc__spawn(const struct mproc__spawn_opts *o, pid_t *pid_out, int *pidfd_out) {
  if (o == NULL || o->fn == NULL || pid_out == NULL || pidfd_out == NULL ||
      (o->nkeep > 0 && o->keep_fds == NULL) || o->pdeathsig < 0 || o->pdeathsig >= NSIG)
    return MPROC_EINVAL;
  if (!(o->flags & MPROC__SPAWN_NOFLUSH))
    fflush(NULL);
  pthread_once(&bind_once, bind_child_calls);
  /* In a program whose children the kernel reaps, the child holds still
   * until the parent has its pidfd (a pipe's end of file): the pidfd then
   * names our child, never a reused pid.  Elsewhere the zombie holds the
   * pid and no handshake is needed. */
  int hold[2] = {-1, -1};
  if (mproc__children_autoreaped() && pipe2(hold, O_CLOEXEC) != 0)
    return mproc__neg_errno();

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t parent = getpid();
  /* Written only when set: the fork leaves every page of the parent
   * copy-on-write, so a write after it costs a page fault. */
  bool internal = (o->flags & MPROC__SPAWN_INTERNAL) != 0;
  if (internal)
    internal_fork = true;
  pid_t pid = fork();
  if (pid == 0)
    child_main(o, parent, &old, hold);
  int err = pid < 0 ? mproc__neg_errno() : 0;
  if (internal)
    internal_fork = false;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (hold[0] >= 0)
    close(hold[0]);
  if (pid < 0) {
    if (hold[1] >= 0)
      close(hold[1]);
    return err;
  }

  if (o->flags & MPROC__SPAWN_NEWPGRP)
    setpgid(pid, pid); /* both sides set it: whichever runs first wins the race */

  int pidfd = pidfd_open_(pid);
  if (pidfd < 0) {
    /* Killed while it still holds (its pid is its own even when the kernel
     * reaps our children), then let go. */
    err = mproc__neg_errno();
    kill(pid, SIGKILL);
    if (hold[1] >= 0)
      close(hold[1]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return err;
  }
  if (hold[1] >= 0)
    close(hold[1]); /* the child may go on */
  pidfd = mproc__fd_own(pidfd);
  *pid_out = pid;
  *pidfd_out = pidfd;
  return 0;
}

int mproc__reap(int pidfd, int *exitcode, int64_t deadline_ms) {
  for (bool exited = false;; exited = true) {
    siginfo_t si;
    si.si_pid = 0;
    if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) < 0) {
      if (errno == EINTR)
        continue;
      return mproc__neg_errno();
    }
    if (si.si_pid != 0) {
      if (exitcode != NULL)
        *exitcode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
      return 0;
    }
    /* A pidfd polls readable once the process has exited. */
    int r = exited ? mproc__reap_pause(deadline_ms) : 0;
    if (r == 0)
      r = mproc__poll1(pidfd, POLLIN, deadline_ms);
    if (r < 0)
      return r;
  }
}

int mproc__reap_pause(int64_t deadline_ms) {
  if (deadline_ms >= 0 && mproc_now_ms() >= deadline_ms)
    return MPROC_ETIMEDOUT;
  int64_t ms = deadline_ms < 0 ? 2 : deadline_ms - mproc_now_ms();
  struct timespec ts = {0, (ms < 2 ? ms : 2) * 1000000L};
  nanosleep(&ts, NULL);
  return 0;
}

int mproc__pidfd_kill(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0)
    return 0;
  return mproc__neg_errno();
}
