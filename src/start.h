/* Internal: the spawn and forkserver start methods (start_spawn.c,
 * forkserver.c).
 *
 * A caller (process.c today, the pool's worker launcher next) describes the
 * child as a `struct mproc__start_req` and calls mproc__start_child(): the
 * function travels as a reference (fnref.h), the argument bytes are copied,
 * and the child comes back as a pid plus a registered pidfd of a *direct*
 * child of the caller (forkserver children are created with CLONE_PARENT),
 * so joining, exit codes, signals, sentinels and reaping are exactly those of
 * a forked child: mproc__reap(), mproc__pidfd_kill(), waitid(P_PIDFD).
 *
 * In the child the library runs the entry named by `entry` -- a function
 * registered by a constructor of the library (process.c registers
 * MPROC__ENTRY_PROCESS) -- before the program's main() (which never runs),
 * then leaves through _exit() with the entry's return value.  Descriptors
 * listed in the request (a pool worker's shared memory and pipes) reach the
 * entry by SCM_RIGHTS over the same channel, under both methods. */
#ifndef MPROC_SRC_START_H
#define MPROC_SRC_START_H

#include "fnref.h"

#include <signal.h>

/* What a spawned child runs once its function is resolved: an entry id,
 * chosen by the caller, names a function registered with
 * mproc__start_entry_register(). */
enum mproc__entry_id {
  /* A process object (process.c). */
  MPROC__ENTRY_PROCESS = 1,
  /* A pool worker of the shm transport (transport_shm_worker.c). */
  MPROC__ENTRY_POOL_WORKER = 2,
  /* Ids below MPROC__ENTRY_MAX are free for other users (the pool's worker;
   * tests). */
  MPROC__ENTRY_MAX = 8,
};

/* What an entry gets in the child. */
struct mproc__child_ctx {
  mproc_function fn; /* the resolved function; NULL when the request had none */
  const void *arg;   /* copy of the argument bytes (malloc-aligned), NULL if none */
  size_t len;        /* their size */
  const char *name;  /* req->name */
  const char *ident; /* req->ident */
  pid_t parent;      /* pid of the process that asked for the child */
  const int *fds;    /* copies of req->fds, close-on-exec, in the same order */
  size_t nfds;       /* their number */
};

/* Runs in the child; its return value is the exit status. */
typedef int (*mproc__entry_fn)(const struct mproc__child_ctx *c);

/* Constructor priority of entry registrations: lower than the default, so a
 * registration made by a constructor with it has run before the library's
 * worker constructor (default priority) takes a spawned image over, in a
 * static program as in the shared library. */
#define MPROC__ENTRY_PRIORITY 150

/* Registers fn for entry id `entry` (1..MPROC__ENTRY_MAX-1).  Must be called
 * from a constructor declared __attribute__((constructor(
 * MPROC__ENTRY_PRIORITY))), so that a fresh image knows every entry before
 * main(); registering an id twice keeps the last. */
void mproc__start_entry_register(uint32_t entry, mproc__entry_fn fn);

/* Descriptors one request carries (the kernel's SCM_MAX_FD is 253; the
 * forkserver also sends the caller's inheritable descriptors and its cwd in
 * the same message). */
#define MPROC__START_FDS_MAX 16

enum {
  /* The child leads a process group of its own, guarded as with
   * MPROC__SPAWN_NEWPGRP (the guard kills the group when the child ends). */
  MPROC__START_NEWPGRP = 1u << 0,
  /* Do not flush the caller's stdio first (a hot path that knows nothing is
   * buffered, as MPROC__SPAWN_NOFLUSH). */
  MPROC__START_NOFLUSH = 1u << 1,
  /* Wire only, set by the forkserver's owner: the child holds still until
   * the owner closes the note (see forkserver.c, "Whose child"). */
  MPROC__START_HOLD = 1u << 2,
};

struct mproc__start_req {
  int method;        /* MPROC_START_SPAWN or MPROC_START_FORKSERVER */
  uint32_t entry;    /* MPROC__ENTRY_* */
  mproc_function fn; /* the user's function, sent as a reference; NULL: none */
  const void *arg;   /* argument bytes, copied to the child */
  size_t len;        /* their size */
  const char *name;  /* the process object's name ("" for none) */
  const char *ident; /* its identity ("2:1"), for nested names */
  unsigned flags;    /* MPROC__START_* */
  const int *fds;    /* descriptors the child gets (SCM_RIGHTS), up to */
  size_t nfds;       /*   MPROC__START_FDS_MAX; the caller keeps its own */
};

/* Starts a child under req->method.  On success *pid and *pidfd (O_CLOEXEC,
 * registered, owned by the caller) are set; the child is the caller's own
 * child, killed by SIGKILL when the calling thread's process dies.  Errors:
 * MPROC_EINVAL, MPROC_ENOFUNC (the function cannot be referenced here, or
 * the child cannot find it: the reason is written to stderr), -errno of the
 * exec that failed (-ENOENT, -E2BIG, MPROC_ENOMEM...), -EAGAIN/-EMFILE/-ENFILE/
 * MPROC_ENOMEM, MPROC_ECHILDFAILED (the child died before its function was
 * resolved), MPROC_ENOTSUP (forkserver: the kernel lacks a needed call).
 * On failure nothing is left behind: no child, no fd.  Blocks until the
 * child has its function (spawn: one exec; forkserver: one round trip). */
int mproc__start_child(const struct mproc__start_req *req, pid_t *pid, int *pidfd);

/* A start in flight: the child is forked and its request sent, its verdict
 * not read yet.  Lets a caller start several children side by side (a pool
 * launches every worker, then waits for each): their execs and dynamic
 * loading overlap instead of adding up. */
struct mproc__start_pending {
  pid_t pid;        /* the child */
  int pidfd;        /* its pidfd (registered) */
  int chan;         /* parent end of its channel; -1 when already started */
  int64_t deadline; /* when waiting for its verdict gives up */
};

/* mproc__start_child in two halves.  launch: the checks and errors of
 * mproc__start_child that come before the child answers; on success *pd
 * holds the child, which must then go to mproc__start_finish.  finish: waits
 * for the child's verdict; 0 with *pid and *pidfd set, or the error
 * mproc__start_child would return, with nothing left behind (the child is
 * killed and reaped, every fd closed).  The forkserver answers in one round
 * trip: its launch does the whole start and its finish only hands it over. */
int mproc__start_launch(const struct mproc__start_req *req, struct mproc__start_pending *pd);
int mproc__start_finish(struct mproc__start_pending *pd, pid_t *pid, int *pidfd);

/* The method a process or pool uses when its option says 0: the value of
 * MPROC_START_METHOD ("fork", "spawn" or "forkserver") when set, else fork.
 * Returns the method, or MPROC_EINVAL for any other value of the variable. */
int mproc__start_method_default(void);

/* ---- shared by start_spawn.c and forkserver.c --------------- */

#define MPROC__WIRE_MAGIC 0x6d70726fu /* "mpro" */
/* The environment variable that marks an exec'd image as a library child:
 * "s<fd>" (spawn child) or "f<fd>" (forkserver), <fd> the channel. */
#define MPROC__WORKER_ENV "MPROC_WORKER"

/* Header of a start request; followed by name_len bytes of name, arg_len
 * bytes of argument, env_len bytes of NUL-separated environment, nfds int32
 * fd numbers (the last two only for the forkserver).  The header's first
 * bytes carry SCM_RIGHTS: nentry descriptors for the entry, then (forkserver)
 * nfds inheritable ones, then the cwd. */
struct mproc__wire {
  uint32_t magic;
  uint32_t entry;
  int32_t parent; /* pid of the process object's creator */
  uint32_t name_len;
  uint64_t arg_len;
  uint32_t env_len;
  uint32_t nfds;   /* forkserver: the caller's inheritable descriptors */
  int32_t has_cwd; /* forkserver: a descriptor of the caller's cwd follows */
  uint32_t nentry; /* descriptors for the entry: attached first */
  uint32_t has_fn; /* fn below is a reference (else the entry gets NULL) */
  uint32_t flags;  /* MPROC__START_* */
  uint32_t umask;  /* forkserver: the caller's umask */
  uint8_t sigmask[sizeof(sigset_t)];
  char ident[48];
  struct mproc__fnref fn;
};

/* Fills the header for req (no forkserver context). */
int mproc__wire_make(const struct mproc__start_req *req, struct mproc__wire *w);

/* Child side: reads exactly len bytes (EINTR-safe, blocking); 0 or -errno
 * (-EPIPE at end of stream). */
int mproc__read_full(int fd, void *buf, size_t len);
/* Writes exactly len bytes with MSG_NOSIGNAL until the absolute deadline;
 * MPROC_ETIMEDOUT also when `peer` (the reader, our child; 0: none) is found
 * stopped while the socket is full (mproc__poll_peer). */
int mproc__send_full(int fd, const void *buf, size_t len, int64_t deadline_ms, pid_t peer);

/* Runs a resolved request's entry in the child and never returns. */
_Noreturn void mproc__child_run(const struct mproc__wire *w, const struct mproc__child_ctx *c);

/* Sends the header with `fds` attached; 0 or -errno (`peer` as for
 * mproc__send_full). */
int mproc__send_header(int sock, const struct mproc__wire *w, const int *fds, size_t nfds,
                       int64_t deadline_ms, pid_t peer);
/* Receives a header and the descriptors attached to it (close-on-exec).
 * Returns the number of descriptors, or -errno (-EPIPE at end of stream;
 * -EMFILE when the kernel dropped descriptors, at the fd limit or beyond
 * cap: the header was read all the same, the descriptors that came are
 * closed). */
int mproc__recv_header(int sock, struct mproc__wire *w, int *fds, size_t cap);

/* Tests only: a new descriptor (close-on-exec, the caller's to close) of
 * this process's forkserver, or -1 when none runs; and a function called
 * with the server's pidfd before a request is sent (stage 0) and after
 * (stage 1, its reply not yet read). */
int mproc__forkserver_pidfd(void);
/* The library threads the forkserver machinery keeps: 1 once the keeper
 * thread (forkserver.c) runs in this process, else 0.  For leak checks. */
int mproc__forkserver_threads(void);
extern void (*_Atomic mproc__forkserver_test_hook)(int stage, int server_pidfd);
/* Tests only: called in a forkserver right after each fork, in the child
 * (pid 0) before it sends its note and in the server (the child's pid)
 * before its reply; set by a constructor, so that it is set in the server. */
extern void (*_Atomic mproc__forkserver_fork_hook)(pid_t pid);

/* The forkserver's loop, entered by the worker constructor; never returns. */
_Noreturn void mproc__forkserver_main(int ctl);

/* forkserver.c: mproc__start_child() under MPROC_START_FORKSERVER, with the
 * request header already made. */
int mproc__forkserver_request(const struct mproc__start_req *req, const struct mproc__wire *w,
                              pid_t *pid, int *pidfd);

/* Spawn side helper shared with forkserver.c: exec's /proc/self/exe as a
 * library child of kind 's' or 'f' with `chan` as its channel (flags:
 * MPROC__START_NEWPGRP), sends the
 * header w (with fds attached; NULL w: nothing) and the payloads, and waits
 * for the child's first reply byte.  On
 * success returns 0 with *pid and *pidfd set and *chan_out the parent's end
 * (caller closes it). */
int mproc__spawn_exec(char kind, unsigned flags, const struct mproc__wire *w, const int *fds,
                      size_t nfds, const void *payload, size_t plen, const void *payload2,
                      size_t plen2, pid_t *pid, int *pidfd, int *chan_out);

#endif /* MPROC_SRC_START_H */
