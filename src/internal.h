/* Internal declarations shared by the library's source files.  Nothing here is
 * exported: the build uses -fvisibility=hidden and only MPROC_EXTERN symbols of
 * the public headers leave the shared object.  Internal names carry the
 * mproc__ prefix.
 *
 * Fork-safety contract of the library (read before writing code that runs in a
 * child between fork and the user's function):
 *  - the child of a multi-threaded parent has one thread; any lock another
 *    parent thread held at fork time stays held forever in the child.  glibc
 *    makes malloc and the stdio list lock safe across fork, but not individual
 *    FILE locks nor any pthread mutex of ours or the user's;
 *  - so code that runs in a freshly forked child before the user's function
 *    uses only async-signal-safe system calls and the library's lock-free
 *    state (the fd registry below), and a child leaves only through _exit(). */
#ifndef MPROC_INTERNAL_H
#define MPROC_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "mproc.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#define MPROC__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MPROC__UNUSED(x) ((void)(x))
#define MPROC__LIKELY(x) __builtin_expect(!!(x), 1)
#define MPROC__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* -errno of the last failed system call, never 0 (so callers can return it). */
static inline int mproc__neg_errno(void) { return errno > 0 ? -errno : -EIO; }

/* Room for element n of a growable array `v` of *cap elements of `size`
 * bytes: v itself while n < *cap, else the array reallocated to twice the
 * capacity (`first` when empty) with *cap updated; NULL when out of memory,
 * and then v and *cap are unchanged (the caller still owns v). */
static inline void *mproc__grow(void *v, size_t *cap, size_t n, size_t size, size_t first) {
  if (n < *cap)
    return v;
  size_t ncap = *cap != 0 ? *cap * 2 : first;
  void *nv = realloc(v, ncap * size);
  if (nv != NULL)
    *cap = ncap;
  return nv;
}

/* One round of a spin-wait: tells the CPU this is a busy loop (x86 `pause`,
 * arm64 `yield`), which saves power and yields the core's pipeline to a
 * sibling hyperthread.  Elsewhere a compiler barrier, so the loop still
 * re-reads memory.  Callers bound their spins and sleep afterwards. */
static inline void mproc__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* spawn.c: every signal disposition back to SIG_DFL (a new child's first
 * step, whatever handlers its image or a sanitizer runtime installed). */
void mproc__reset_signals(void);
/* spawn.c: whether the kernel reaps this process's children itself
 * (SIGCHLD ignored, or SA_NOCLDWAIT): a child that exits at once could then
 * be gone, and its pid even reused, before the parent opens its pidfd. */
bool mproc__children_autoreaped(void);

/* ---- clock.c: deadlines ----------------------------------------------- */

/* Absolute deadline for a relative timeout, -1 meaning forever.  Negative
 * values other than -1 are rejected by mproc__check_timeout() first. */
int64_t mproc__deadline(int64_t timeout_ms);
/* 0 if `timeout_ms` is -1 or >= 0, MPROC_EINVAL otherwise. */
int mproc__check_timeout(int64_t timeout_ms);
/* Remaining milliseconds for poll(2): -1 forever, 0 if passed, capped to
 * INT_MAX. */
int mproc__poll_timeout(int64_t deadline_ms);

/* poll(2) until at least one of fds[0..n) reports an event or the absolute
 * deadline passes (a deadline already passed polls once).  Retries on EINTR,
 * and times out only once the deadline has really passed (poll rounds its
 * timeout to whole milliseconds).  Returns poll's count (> 0; the revents are
 * in fds), MPROC_ETIMEDOUT, or -errno. */
struct pollfd;
int mproc__poll_until(struct pollfd *fds, size_t n, int64_t deadline_ms);

/* poll(2) on one fd until `events` (or an error/hangup) is reported or the
 * absolute deadline passes.  Retries on EINTR.  Returns the revents (> 0),
 * MPROC_ETIMEDOUT, or -errno. */
int mproc__poll1(int fd, short events, int64_t deadline_ms);

/* ---- fdreg.c: the registry of library-owned fds ------------------------ */

/* Every fd the library opens is O_CLOEXEC, which protects exec'd programs but
 * not forked children.  The registry lets a freshly forked child close every
 * library fd it was not explicitly handed (another Process's pidfd, a pool's
 * pipes...), so children never inherit library fds they do not need.  It is a
 * lock-free bitmap, safe to read in the child right after fork.  Fds at or
 * above MPROC__FDREG_MAX are not tracked (they stay CLOEXEC only). */
#define MPROC__FDREG_MAX 65536
void mproc__fd_register(int fd);
/* A descriptor the library opened, moved above the standard ones when it
 * landed on 0, 1 or 2 (fdreg.c), then registered: the one to use. */
int mproc__fd_own(int fd);
/* Only the move: fd, or its close-on-exec duplicate above 2. */
int mproc__fd_above_std(int fd);
/* Registers an fd that backs an object the user holds (a connection, a shm
 * block): children spawned with MPROC__SPAWN_KEEP_USER_FDS keep it. */
void mproc__fd_register_user(int fd);
void mproc__fd_unregister(int fd);
/* Unregister and close; returns 0 or -errno (EINTR is treated as closed, as
 * Linux always releases the fd). A negative fd is a no-op. */
int mproc__close(int fd);
/* In a forked child only: close every registered fd not in keep[0..nkeep)
 * (and, with keep_user, not registered with mproc__fd_register_user). */
void mproc__fd_close_registered_except(const int *keep, size_t nkeep, bool keep_user);

/* ---- fdpass.c: descriptors over a unix socket (SCM_RIGHTS) ------------ */

/* The kernel accepts at most SCM_MAX_FD (253) descriptors per sendmsg. */
#define MPROC__SCM_MAX_FD 253

struct iovec;
/* One sendmsg(MSG_NOSIGNAL | flags) of the iovecs, with fds[0..nfds) attached
 * when nfds > 0 (at most MPROC__SCM_MAX_FD, else MPROC_EINVAL).  Retries on
 * EINTR.  Returns the bytes sent or -errno. */
ssize_t mproc__sendmsg_fds(int sock, struct iovec *iov, int iovcnt, int flags, const int *fds,
                           size_t nfds);
/* One recvmsg(MSG_CMSG_CLOEXEC | flags) into dst[0..n), retried on EINTR.
 * Descriptors that arrive (close-on-exec, not registered: the caller decides)
 * are stored in fds[0..*nfds), at most `max`.  *fd_err is -EMFILE when the
 * kernel dropped descriptors (MSG_CTRUNC: the fd limit, or more than `max`
 * sent), else 0; the bytes are consumed either way.  Returns the bytes read
 * (> 0), 0 at end of stream (a reset connection included), or -errno. */
ssize_t mproc__recvmsg_fds(int sock, void *dst, size_t n, int flags, int *fds, size_t max,
                           size_t *nfds, int *fd_err);

/* ---- procfs.c: /proc/<pid>/stat ---------------------------------------- */

struct mproc__pstat {
  char state;           /* field 3: R, S, D, T, t, Z, X... */
  pid_t ppid;           /* field 4: parent pid */
  uint64_t utime;       /* field 14: user CPU time, clock ticks */
  uint64_t stime;       /* field 15: system CPU time, clock ticks */
  uint64_t start_time;  /* field 22: start time, clock ticks after boot */
  uint32_t num_threads; /* field 20: threads of the process */
};
/* Reads <proc>/<pid>/stat (proc NULL: "/proc"; tests pass a fixture tree).
 * Returns 0, -ENOENT once the process is gone (also while reaped), -EIO on a
 * line it cannot parse, MPROC_EINVAL, or -errno. */
int mproc__proc_stat(const char *proc, pid_t pid, struct mproc__pstat *out);

/* How often a wait on a helper process of the library checks that it is not
 * stopped (mproc__poll_peer): the bound on noticing a SIGSTOPped helper. */
#define MPROC__PEER_CHECK_MS 50
/* mproc__poll1 on a channel whose other end is process `peer` (our own
 * unreaped child, so the pid is its): a peer that is stopped (SIGSTOP,
 * SIGTSTP: state T) answers nothing until continued, so instead of waiting
 * out the deadline this returns 0 within about MPROC__PEER_CHECK_MS of
 * finding it stopped.  Otherwise (and for peer 0: no peer) as mproc__poll1
 * (revents > 0, MPROC_ETIMEDOUT, -errno). */
int mproc__poll_peer(int fd, short events, int64_t deadline_ms, pid_t peer);

/* ---- spawn.c: the one place the library forks ------------------------- */

/* What runs in the child.  Its return value becomes the exit status
 * (masked to 0..255 by the kernel). */
typedef int (*mproc__child_fn)(void *arg);

enum {
  /* Put the child in a new process group of its own (pgid = pid), guarded:
   * the group is SIGKILLed when the child ends, however it ends, even with
   * the parent gone (spawn.c, "the group guard"). */
  MPROC__SPAWN_NEWPGRP = 1u << 0,
  /* Do not flush the parent's stdio before forking (hot paths that know no
   * buffered output can be pending). */
  MPROC__SPAWN_NOFLUSH = 1u << 1,
  /* A process the library forks for its own purposes (a named block's
   * keeper): it takes no part in the user's objects.  Fork handlers check
   * mproc__internal_fork() and give it no roles (a queue would otherwise
   * count it as a producer and consumer for as long as it lives). */
  MPROC__SPAWN_INTERNAL = 1u << 2,
  /* Keep the fds of user objects (mproc__fd_register_user) open in the
   * child: a mproc_process child may use what the program made before it. */
  MPROC__SPAWN_KEEP_USER_FDS = 1u << 3,
};

/* True in the thread forking with MPROC__SPAWN_INTERNAL, from before the
 * fork handlers run until after they ran, and for good in the child (and
 * in whatever it forks in turn).  Safe in fork handlers. */
bool mproc__internal_fork(void);

struct mproc__spawn_opts {
  mproc__child_fn fn;  /* runs in the child; required */
  void *arg;           /* passed to fn, in the child's copy of memory */
  const int *keep_fds; /* registered fds the child keeps open */
  size_t nkeep;        /* number of entries in keep_fds */
  int pdeathsig;       /* signal sent to the child when the parent dies;
                          0 means SIGKILL */
  unsigned flags;      /* MPROC__SPAWN_* */
};

/* Fork a child that runs opts->fn(opts->arg) and leaves through _exit with its
 * return value, after: default dispositions for every signal, the parent's
 * signal mask, a parent-death signal (with the race check: a child whose
 * parent already died exits at once), every registered library fd not in
 * keep_fds closed.  Stdio is flushed before the fork (unless
 * MPROC__SPAWN_NOFLUSH) and the child discards its copies of the stdout and
 * stderr buffers, so the parent's buffered output is never written twice.  On success *pid and
 * *pidfd (O_CLOEXEC, registered) are set and the caller owns the pidfd; the child is reaped with
 * mproc__reap().  On failure nothing is left behind. */
int mproc__spawn(const struct mproc__spawn_opts *opts, pid_t *pid, int *pidfd);

/* In a child that just made itself a group leader (setpgid(0, 0)), with
 * every signal blocked: starts the group guard described in spawn.c, which
 * kills the group once the caller exits.  Best effort; raw system calls
 * only.  Also used by the forkserver's children (forkserver.c). */
void mproc__group_guard_start(void);

/* Reap a child through its pidfd, waiting until the absolute deadline.
 * Returns 0 and the Python-style exit code (status, or -signo when killed),
 * MPROC_ETIMEDOUT if still running (or ended but held by a debugger that
 * traces it: its zombie is shown to the tracer first), or -errno.  Reaps at
 * most once: after a success the pidfd must not be reaped again. */
int mproc__reap(int pidfd, int *exitcode, int64_t deadline_ms);
/* For a wait whose pidfd polled readable yet found nothing to reap: a
 * zombie that a debugger traces is shown to its tracer first, and no event
 * says when the tracer lets go, so such a wait must neither spin on the
 * readable pidfd nor overstay its deadline.  Returns MPROC_ETIMEDOUT once the
 * absolute deadline has passed, else 0 after a nap of at most 2 ms. */
int mproc__reap_pause(int64_t deadline_ms);

/* Send a signal through a pidfd: never hits a recycled pid.  Returns 0,
 * -ESRCH if the process has already exited, or -errno. */
int mproc__pidfd_kill(int pidfd, int sig);

/* ---- reap_later.c: children whose reap is pending --------------------- */

/* Hands over the (registered) pidfd of a child of ours that has been, or
 * will be, killed but cannot be reaped now (a debugger holds its zombie, or
 * it is stuck in the kernel): it is reaped without blocking at later calls
 * of mproc__reap_later_sweep() and at exit, then closed.  The caller no
 * longer owns the pidfd. */
void mproc__reap_later(int pidfd);
/* One non-blocking reap attempt of every pidfd handed over; one relaxed
 * load when there is none.  Called by calls that start or free children. */
void mproc__reap_later_sweep(void);
/* Pidfds handed over and not reaped yet (tests). */
size_t mproc__reap_later_pending(void);
/* Reaps a child that was sent SIGKILL, waiting until it has exited or the
 * absolute deadline passes; one that has exited yet cannot be reaped (a
 * debugger holds its zombie) or is still there at the deadline is handed to
 * mproc__reap_later at once.  Consumes the pidfd either way.  Returns 0 and
 * the exit code, 1 when handed over, or -errno (-ECHILD: reaped elsewhere). */
int mproc__reap_killed(int pidfd, int *exitcode, int64_t deadline_ms);
/* How long a reap after SIGKILL may wait: a killed process dies at once
 * unless it is stuck in the kernel (uninterruptible sleep). */
#define MPROC__KILL_REAP_MS 10000

/* ---- shm.c: keepers of named objects ---------------------------------- */

/* Runs in a keeper with the object's fd (read-only), once no process has it
 * attached any more, before the name is removed.  Only system calls and
 * lock-free code: the keeper is a fork of a possibly multi-threaded
 * process. */
typedef void (*mproc__keeper_fn)(int fd);

/* Starts the keeper of the /dev/shm object behind `fd` (to be named
 * `name`): a double-forked process (MPROC__SPAWN_INTERNAL) that waits for
 * LOCK_EX on its own open file description of the object, so it wakes when
 * every process holding LOCK_SH (each attached user, through its fd or its
 * mappings) is gone, however they went; it then runs last(fd) and removes
 * the name if it still refers to the object.  The caller holds LOCK_SH
 * before calling and gives the object its name afterwards (linkat).
 * Returns 0 or -errno / MPROC_ECHILDFAILED. */
int mproc__keeper_start(int fd, const char *name, mproc__keeper_fn last);
/* Tests only: called in the intermediate child of a keeper's start before
 * it forks the keeper. */
extern void (*_Atomic mproc__keeper_test_hook)(void);
/* Tests only: called in the keeper once it has closed what it inherited
 * (so its intermediate exits) and before it tells the creator it is ready. */
extern void (*_Atomic mproc__keeper_gap_hook)(void);
/* Starts the keeper, then gives the unnamed object behind fd (O_TMPFILE in
 * /dev/shm) its name: -EEXIST if the name exists already. */
int mproc__keeper_link(int fd, const char *name, mproc__keeper_fn last);

/* Offset of a block's bytes in its file (the header page of a named block). */
size_t mproc__shm_data_off(const mproc_shm *shm);
/* map_shm.c: the block behind fd is being closed: pools' workers drop their
 * cached mappings of it. */
void mproc__map_shm_forget(int fd);

/* ---- memfd.c: shared mappings ---------------------------------------- */

/* A memfd of `size` bytes (O_CLOEXEC, registered).  name is a debugging label
 * only (it appears in /proc/<pid>/fd), never in /dev/shm. */
int mproc__memfd_create(const char *name, size_t size, int *fd_out);
/* mmap(MAP_SHARED) of the first `size` bytes of fd, read-write. */
int mproc__map_shared(int fd, size_t size, void **addr_out);
/* An anonymous MAP_SHARED mapping: shared with children forked after it. */
int mproc__map_anon_shared(size_t size, void **addr_out);
/* "/mproc.<pid>.<kind>.<seq>.<random>": a fresh /dev/shm name. */
int mproc__shm_make_name(char *buf, size_t len, const char *kind);

#endif /* MPROC_INTERNAL_H */
