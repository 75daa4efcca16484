/* Process objects: Python's multiprocessing.Process on top of mproc__spawn.
 *
 * Design notes.  State machine of one object:
 *
 *   NEW --start--> RUNNING --reap--> DONE
 *    ^  (failed start: stays NEW)      |
 *    +--------------- free <-----------+  (free is valid in every state)
 *
 * "reap" is one waitid(P_PIDFD) that collected the exit status.  It happens
 * in join, is_alive, exitcode, active_children, start (Python's _cleanup) and
 * free, possibly from several threads: every reap attempt runs under
 * `reg_lock`, which also guards the `state`/`exitcode` fields, so a child is
 * reaped exactly once.  Waiting is done *outside* the lock by polling the
 * pidfd, which becomes readable when the child exits; then the reap is
 * retried under the lock.
 *
 * The registry is a list of started objects, kept until free.  It serves
 * active_children() and the atexit handler, which stops running children
 * the way free() does.  Each object records `creator` (getpid() at creation):
 * a forked child inherits a copy of the parent's list and objects, but they
 * are not its children, so every call that acts on a child first checks
 * creator == getpid(), and the atexit handler skips foreign objects.
 *
 * Fork-safety: another parent thread may hold reg_lock at the moment of any
 * fork (ours or the program's own fork()), and that thread does not exist in
 * the child, so a pthread_atfork child handler re-initializes the lock.  (No
 * prepare handler takes the lock: a fork from a signal handler that
 * interrupted a registry operation would then deadlock.)
 *
 * Stopping a running child (free, exit): a non-daemon is first given
 * exit_wait_ms to finish; then SIGTERM, grace_ms, SIGKILL, and a bounded
 * wait for the reap.  All children stopped together share the phases, so
 * the total wait at exit is bounded by the longest budget, not the sum.  A
 * phase ends early for a child that has exited (its pidfd readable) even if
 * it cannot be reaped: a debugger holds its zombie, and waiting changes
 * nothing.  free() then hands its pidfd to reap_later.c, which reaps it at
 * a later call once the tracer lets go, rather than closing it (a zombie
 * for good). */
#include "process.h"
#include "start.h"
#include "list.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_EXIT_WAIT_MS 10000
#define DEFAULT_GRACE_MS 1000
/* After SIGKILL a process normally dies at once; this only bounds pathological
 * cases (uninterruptible sleep) so that free() can never hang. */
#define KILL_REAP_MS 10000

enum state { ST_NEW, ST_RUNNING, ST_DONE };

#define IDENT_MAX 48

struct mproc_process {
  mproc_process_fn fn;   /* the child's function */
  void *arg;             /* copy of the argument bytes, after the struct; NULL if len 0 */
  size_t len;            /* their size */
  char *name;            /* copy of the name, after the argument bytes */
  unsigned flags;        /* MPROC_PROCESS_* */
  int method;            /* MPROC_START_*, resolved (never DEFAULT) */
  int64_t exit_wait_ms;  /* resolved: -1 or > 0 */
  int64_t grace_ms;      /* resolved: > 0 */
  pid_t creator;         /* getpid() of the process that created the object */
  char ident[IDENT_MAX]; /* Python's _identity, as "2:1" (default names) */
  pid_t pid;             /* child pid, 0 while NEW */
  int pidfd;             /* child pidfd (registered), -1 while NEW */
  enum state state;      /* guarded by reg_lock once started */
  int exitcode;          /* valid in ST_DONE; guarded by reg_lock */
  int reap_err;          /* ST_DONE without a status: why (see reap) */
  size_t cap;            /* bytes allocated for the object and its copies */
  struct mproc_process *prev, *next; /* registry links, guarded by reg_lock */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mproc_process *reg_head; /* started objects, until free */
static atomic_uint name_seq;           /* objects created by this process */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

/* One freed object, kept for the next mproc_process_new.  A start + join
 * + free cycle is mostly page faults: fork leaves every page of the parent
 * copy-on-write, and each page the parent then writes before its next fork
 * costs one.  free() is one of them: glibc's free saves and restores errno,
 * a write to the thread's page of TLS, which nothing else of a start
 * writes.  Reusing the object skips free and malloc; objects larger than
 * SPARE_MAX are freed, so that no large argument copy is kept alive. */
#define SPARE_MAX 1024
/* Allocations are rounded up, so that a name or an argument a few bytes
 * longer still fits the spare. */
#define SPARE_ROUND 64
static _Atomic(struct mproc_process *) spare;

/* Set in a child by child_entry(): Python's parent_process()/current_process().
 * Zero-initialized, next to reg_lock, so that the child's writes dirty as few
 * copy-on-write pages as possible. */
static pid_t parent_pid;
static const char *current_name; /* NULL: "MainProcess" */
/* Python's _identity of this process: "" in the main process, "2" in the
 * second child it started, "2:1" in that child's first child... */
static char current_ident[IDENT_MAX];

static void reg_insert_locked(struct mproc_process *p) { MPROC__DLIST_INSERT_HEAD(reg_head, p); }

static void reg_remove_locked(struct mproc_process *p) { MPROC__DLIST_REMOVE(reg_head, p); }

/* getpid() of this process, 0 until first asked; reset in every forked
 * child by the fork handler below.  A start + join + free asked the kernel
 * four times (creation, start, join and free each check whose object it
 * is), a system call each.  A child made without the C library's fork (a
 * raw clone, _Fork, vfork) runs no fork handler and would keep the
 * parent's pid here; none of them may call into the library (each allows
 * only async-signal-safe calls before exec, or none at all). */
static _Atomic pid_t self_pid;

static void register_handlers(void);

static pid_t own_pid(void) {
  pid_t pid = atomic_load_explicit(&self_pid, memory_order_relaxed);
  if (MPROC__UNLIKELY(pid == 0)) {
    /* The handler that forgets it first, or a child forked later would
     * take its parent's objects for its own. */
    pthread_once(&handlers_once, register_handlers);
    pid = getpid();
    atomic_store_explicit(&self_pid, pid, memory_order_relaxed);
  }
  return pid;
}

static bool mine(const struct mproc_process *p) { return p->creator == own_pid(); }

/* One non-blocking reap attempt; reg_lock held.  Returns true once DONE.
 * A single waitid(WNOHANG): this runs on every join, so it stays one system
 * call (mproc__reap would add a poll). */
static bool try_reap_locked(struct mproc_process *p) {
  if (p->state != ST_RUNNING)
    return p->state == ST_DONE;
  siginfo_t si;
  si.si_pid = 0;
  int r;
  /* A child leading its own group: the group is SIGKILLed once the child
   * has exited and before it is reaped, while its zombie keeps the group's
   * id from reuse.  Its guard (spawn.c) does the same, but a guard can be
   * killed, stopped or never started (process limit). */
  int peek = (p->flags & MPROC_PROCESS_NEW_GROUP) ? WNOWAIT : 0;
  do
    r = waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG | peek);
  while (r < 0 && errno == EINTR);
  if (r == 0 && si.si_pid != 0 && peek) {
    kill(-p->pid, SIGKILL);
    si.si_pid = 0;
    do
      r = waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG);
    while (r < 0 && errno == EINTR);
  }
  if (r == 0 && si.si_pid != 0) {
    p->exitcode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    p->state = ST_DONE;
  } else if (r < 0) {
    /* ECHILD: the program reaped the child behind our back (SIGCHLD set to
     * SIG_IGN, or its own waitpid(-1)).  The child is gone but its status is
     * lost; treating it as running would make join spin on a pidfd that
     * stays readable. */
    p->reap_err = mproc__neg_errno();
    p->state = ST_DONE;
  }
  return p->state == ST_DONE;
}

static bool try_reap(struct mproc_process *p) {
  pthread_mutex_lock(&reg_lock);
  bool done = try_reap_locked(p);
  pthread_mutex_unlock(&reg_lock);
  return done;
}

static bool is_done(struct mproc_process *p) {
  pthread_mutex_lock(&reg_lock);
  bool done = p->state == ST_DONE;
  pthread_mutex_unlock(&reg_lock);
  return done;
}

/* Waits until p is reaped or the absolute deadline passes.  The pidfd is
 * polled before each reap attempt: a child just started has rarely exited
 * yet, and poll returns at once for one that has. */
static int wait_done(struct mproc_process *p, int64_t deadline) {
  if (is_done(p))
    return 0;
  for (bool exited = false;; exited = true) {
    /* Readable and not reaped: a debugger holds the zombie. */
    int r = exited ? mproc__reap_pause(deadline) : 0;
    if (r == 0)
      r = mproc__poll1(p->pidfd, POLLIN, deadline);
    if (try_reap(p))
      return 0;
    if (r < 0)
      return r;
  }
}

/* ---- stopping running children (free, exit) ---------------------------- */

/* `sig`, then SIGCONT: a stopped process acts on no signal but SIGKILL
 * until it is continued (tree.c does the same for a whole tree); SIGCONT
 * comes second so that a SIGTERM handler runs at once. */
static int signal_and_continue(int pidfd, int sig) {
  int r = mproc__pidfd_kill(pidfd, sig);
  if (r == 0 && sig != SIGKILL)
    mproc__pidfd_kill(pidfd, SIGCONT);
  return r;
}

static void signal_all(struct mproc_process **v, size_t n, int sig) {
  for (size_t i = 0; i < n; i++)
    if (!try_reap(v[i]))
      signal_and_continue(v[i]->pidfd, sig);
}

/* start + ms without overflow (ms >= 0; -1 stays "forever"). */
static int64_t deadline_from(int64_t start, int64_t ms) {
  if (ms < 0)
    return -1;
  return ms > INT64_MAX - start ? INT64_MAX : start + ms;
}

/* Waits until p has exited (its pidfd readable) or the deadline passes,
 * then tries one reap.  Unlike wait_done it does not wait on for a child
 * that has exited yet cannot be reaped: a debugger holds its zombie, and no
 * phase of a stop can change that (free hands it to reap_later.c). */
static void wait_exited(struct mproc_process *p, int64_t deadline) {
  if (!try_reap(p) && mproc__poll1(p->pidfd, POLLIN, deadline) > 0)
    try_reap(p);
}

static void stop_children(struct mproc_process **v, size_t n) {
  /* Phase 1: non-daemons may finish on their own (Python joins them). */
  int64_t start = mproc_now_ms();
  for (size_t i = 0; i < n; i++)
    if (!(v[i]->flags & MPROC_PROCESS_DAEMON))
      wait_exited(v[i], deadline_from(start, v[i]->exit_wait_ms));
  /* Phase 2: SIGTERM to every survivor at once, then each one's grace. */
  signal_all(v, n, SIGTERM);
  start = mproc_now_ms();
  for (size_t i = 0; i < n; i++)
    wait_exited(v[i], deadline_from(start, v[i]->grace_ms));
  /* Phase 3: SIGKILL; the reap is bounded only against pathological cases. */
  signal_all(v, n, SIGKILL);
  int64_t d = mproc__deadline(KILL_REAP_MS);
  for (size_t i = 0; i < n; i++)
    wait_exited(v[i], d);
}

static void at_exit(void) {
  pid_t self = own_pid();
  pthread_mutex_lock(&reg_lock);
  size_t n = 0;
  for (struct mproc_process *q = reg_head; q != NULL; q = q->next)
    if (q->creator == self && q->state == ST_RUNNING)
      n++;
  struct mproc_process **v = n > 0 ? malloc(n * sizeof *v) : NULL;
  size_t k = 0;
  if (v != NULL)
    for (struct mproc_process *q = reg_head; q != NULL && k < n; q = q->next)
      if (q->creator == self && q->state == ST_RUNNING)
        v[k++] = q;
  pthread_mutex_unlock(&reg_lock);
  if (n > 0 && v == NULL) {
    /* No memory at exit: still never leave children behind, one by one. */
    for (;;) {
      struct mproc_process *one = NULL;
      pthread_mutex_lock(&reg_lock);
      for (struct mproc_process *q = reg_head; q != NULL && one == NULL; q = q->next)
        if (q->creator == self && q->state == ST_RUNNING)
          one = q;
      pthread_mutex_unlock(&reg_lock);
      if (one == NULL)
        return;
      stop_children(&one, 1);
      if (!try_reap(one))
        return; /* unkillable: give up rather than loop forever */
    }
  }
  stop_children(v, k);
  free(v);
  mproc__reap_later_sweep();
  free(atomic_exchange(&spare, NULL));
}

static void reinit_lock_in_child(void) {
  /* Compared first: when the lock was free at fork (nearly always), the
   * write would only cost a copy-on-write fault. */
  static const pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  if (memcmp(&reg_lock, &fresh, sizeof fresh) != 0)
    memcpy(&reg_lock, &fresh, sizeof fresh);
  /* The child is another process (its start writes this page anyway). */
  if (atomic_load_explicit(&self_pid, memory_order_relaxed) != 0)
    atomic_store_explicit(&self_pid, 0, memory_order_relaxed);
}

/* Best effort: without the atexit handler, running children would still die
 * by their parent-death signal when the program exits. */
static void register_handlers(void) {
  atexit(at_exit);
  pthread_atfork(NULL, NULL, reinit_lock_in_child);
}

/* ---- the child side ------------------------------------------------------ */

/* dst = src, truncated to IDENT_MAX - 1 bytes: a plain loop, since every
 * page of code the child touches first is a page fault in each child
 * (snprintf's was two). */
static void copy_ident(char dst[IDENT_MAX], const char *src) {
  size_t k = 0;
  for (; k < IDENT_MAX - 1 && src[k] != '\0'; k++)
    dst[k] = src[k];
  dst[k] = '\0';
}

/* Becomes the process object's child (parent pid, name, identity), runs
 * fn(arg, len) and returns its exit code, stdio flushed. */
static int child_run(mproc_function fn, pid_t parent, const char *name, const char *ident,
                     const void *arg, size_t len) {
  parent_pid = parent;
  current_name = name;
  /* As Python's _bootstrap: the child's own objects count from 1 again and
   * are named after its identity ("Process-2:1"). */
  copy_ident(current_ident, ident);
  atomic_store(&name_seq, 0);
  int code = ((mproc_process_fn)fn)(arg, len);
  /* exit() would flush stdio; _exit() does not.  The function's output must
   * not be lost, and the parent's atexit handlers must not run here. */
  mproc__flush_stdio();
  return code;
}

static int child_entry(void *arg) {
  struct mproc_process *p = arg;
  return child_run(MPROC_FUNCTION(p->fn), p->creator, p->name, p->ident, p->arg, p->len);
}

/* The same in a spawn or forkserver child. */
static int spawned_entry(const struct mproc__child_ctx *c) {
  return child_run(c->fn, c->parent, c->name, c->ident, c->arg, c->len);
}

__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void register_entry(void) {
  mproc__start_entry_register(MPROC__ENTRY_PROCESS, spawned_entry);
}

/* Python's _identity of this process's seq-th child: "<ours>:<seq>", or
 * "<seq>" in the main process or once the nesting no longer fits.  Written
 * by hand: snprintf's frame reaches a page of stack that nothing else of a
 * start touches, one more copy-on-write fault in every start. */
static void make_ident(char out[IDENT_MAX], unsigned seq) {
  char digits[3 * sizeof seq];
  size_t nd = 0;
  do
    digits[nd++] = (char)('0' + seq % 10);
  while ((seq /= 10) != 0);
  size_t k = strlen(current_ident);
  if (k > 0 && k + 1 + nd < IDENT_MAX) {
    memcpy(out, current_ident, k);
    out[k++] = ':';
  } else {
    k = 0;
  }
  while (nd > 0)
    out[k++] = digits[--nd];
  out[k] = '\0';
}

/* ---- public API --------------------------------------------------------- */

MPROC_EXTERN int mproc_process_new(mproc_process **out, mproc_process_fn fn, const void *arg,
                                   size_t len, const mproc_process_options *opts) {
  static const mproc_process_options defaults = {0};
  pthread_once(&handlers_once, register_handlers);
  if (opts == NULL)
    opts = &defaults;
  if (out == NULL || fn == NULL || (arg == NULL && len > 0) ||
      (opts->flags & ~(unsigned)(MPROC_PROCESS_DAEMON | MPROC_PROCESS_NEW_GROUP)) ||
      opts->exit_wait_ms < -1 || opts->grace_ms < 0)
    return MPROC_EINVAL;
  int method = opts->start_method;
  if (method == MPROC_START_DEFAULT)
    method = mproc__start_method_default();
  if (method < MPROC_START_FORK || method > MPROC_START_FORKSERVER)
    return MPROC_EINVAL;
  struct mproc__fnref ref;
  if (method != MPROC_START_FORK && mproc__fnref_make(MPROC_FUNCTION(fn), &ref) < 0)
    return MPROC_ENOFUNC; /* no other image could ever find it */
  /* One allocation holds the object, the argument bytes (aligned for any
   * type, as malloc's would be) and the name: one malloc per process keeps
   * start+join cheap, and a failed create has only that to undo. */
  char ident[IDENT_MAX], defname[sizeof "Process-" + IDENT_MAX];
  make_ident(ident, atomic_fetch_add(&name_seq, 1) + 1);
  const char *name = opts->name;
  if (name == NULL) {
    memcpy(defname, "Process-", sizeof "Process-" - 1);
    memcpy(defname + sizeof "Process-" - 1, ident, strlen(ident) + 1);
    name = defname;
  }
  size_t name_len = strlen(name);
  const size_t align = _Alignof(max_align_t);
  size_t head = (sizeof(struct mproc_process) + align - 1) / align * align;
  if (len > SIZE_MAX - head - name_len - 1)
    return MPROC_ENOMEM;
  size_t need = head + len + name_len + 1;
  size_t cap = need <= SPARE_MAX ? (need + SPARE_ROUND - 1) / SPARE_ROUND * SPARE_ROUND : need;
  struct mproc_process *p = atomic_exchange(&spare, NULL);
  if (p != NULL && p->cap < need) {
    free(p);
    p = NULL;
  }
  if (p != NULL)
    cap = p->cap;
  else if ((p = malloc(cap)) == NULL)
    return MPROC_ENOMEM;
  memset(p, 0, sizeof *p);
  p->cap = cap;
  memcpy(p->ident, ident, sizeof ident);
  char *mem = (char *)p + head;
  if (len > 0) {
    p->arg = mem;
    memcpy(p->arg, arg, len);
  }
  p->name = mem + len;
  memcpy(p->name, name, name_len + 1);
  p->fn = fn;
  p->len = len;
  p->flags = opts->flags;
  p->method = method;
  p->exit_wait_ms = opts->exit_wait_ms == 0 ? DEFAULT_EXIT_WAIT_MS : opts->exit_wait_ms;
  p->grace_ms = opts->grace_ms == 0 ? DEFAULT_GRACE_MS : opts->grace_ms;
  p->creator = own_pid();
  p->pidfd = -1;
  p->state = ST_NEW;
  *out = p;
  return 0;
}

MPROC_EXTERN int mproc_process_start(mproc_process *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  pid_t self = own_pid();
  if (p->creator != self)
    return MPROC_ESTATE;
  pthread_mutex_lock(&reg_lock);
  enum state st = p->state;
  if (st == ST_NEW) /* Python's _cleanup(): reap finished children */
    for (struct mproc_process *q = reg_head; q != NULL; q = q->next)
      if (q->creator == self)
        try_reap_locked(q);
  pthread_mutex_unlock(&reg_lock);
  if (st != ST_NEW)
    return MPROC_ESTATE;
  mproc__reap_later_sweep();

  pid_t pid;
  int pidfd;
  int r;
  if (p->method == MPROC_START_FORK) {
    /* Connections, shm blocks... made before start stay usable in the child,
     * as with Python's fork start method (fdreg.c). */
    struct mproc__spawn_opts so = {
        .fn = child_entry,
        .arg = p,
        .flags = MPROC__SPAWN_KEEP_USER_FDS |
                 ((p->flags & MPROC_PROCESS_NEW_GROUP) ? MPROC__SPAWN_NEWPGRP : 0),
        .parent = self};
    r = mproc__spawn(&so, &pid, &pidfd);
  } else {
    struct mproc__start_req rq = {
        .method = p->method,
        .entry = MPROC__ENTRY_PROCESS,
        .fn = MPROC_FUNCTION(p->fn),
        .arg = p->arg,
        .len = p->len,
        .name = p->name,
        .ident = p->ident,
        .flags = (p->flags & MPROC_PROCESS_NEW_GROUP) ? MPROC__START_NEWPGRP : 0};
    r = mproc__start_child(&rq, &pid, &pidfd);
  }
  if (r < 0)
    return r;
  pthread_mutex_lock(&reg_lock);
  p->pid = pid;
  p->pidfd = pidfd;
  p->state = ST_RUNNING;
  reg_insert_locked(p);
  pthread_mutex_unlock(&reg_lock);
  return 0;
}

/* Common checks of calls that act on a started child of ours. */
static int check_started(struct mproc_process *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (!mine(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&reg_lock);
  enum state st = p->state;
  pthread_mutex_unlock(&reg_lock);
  return st == ST_NEW ? MPROC_ESTATE : 0;
}

MPROC_EXTERN int mproc_process_join(mproc_process *p, int64_t timeout_ms) {
  int r = mproc__check_timeout(timeout_ms);
  if (r == 0)
    r = check_started(p);
  if (r < 0)
    return r;
  return wait_done(p, mproc__deadline(timeout_ms));
}

MPROC_EXTERN int mproc_process_is_alive(mproc_process *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  if (!mine(p))
    return MPROC_ESTATE;
  pthread_mutex_lock(&reg_lock);
  int alive = p->state == ST_RUNNING && !try_reap_locked(p);
  pthread_mutex_unlock(&reg_lock);
  return alive;
}

MPROC_EXTERN int mproc_process_pid(const mproc_process *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  /* pid is written once, before the object is published as started. */
  return p->pid > 0 ? (int)p->pid : MPROC_ESTATE;
}

MPROC_EXTERN const char *mproc_process_name(const mproc_process *p) {
  return p == NULL ? NULL : p->name;
}

MPROC_EXTERN int mproc_process_exitcode(mproc_process *p, int *code) {
  if (p == NULL || code == NULL)
    return MPROC_EINVAL;
  pthread_mutex_lock(&reg_lock);
  int r = MPROC_ESTATE;
  if (p->state == ST_DONE || (p->state == ST_RUNNING && mine(p) && try_reap_locked(p))) {
    r = p->reap_err;
    if (r == 0)
      *code = p->exitcode;
  }
  pthread_mutex_unlock(&reg_lock);
  return r;
}

static int send_signal(mproc_process *p, unsigned flags, int sig) {
  if (flags & ~(unsigned)MPROC_SIGNAL_TREE)
    return MPROC_EINVAL;
  int r = check_started(p);
  if (r < 0)
    return r;
  /* Holding the lock keeps the child unreaped while its tree is walked by
   * pid; a single signal goes through the pidfd and needs no such care. */
  pthread_mutex_lock(&reg_lock);
  if (p->state == ST_RUNNING) {
    r = (flags & MPROC_SIGNAL_TREE) ? mproc__signal_tree(p->pidfd, p->pid, sig)
                                    : signal_and_continue(p->pidfd, sig);
    if (r == -ESRCH)
      r = 0; /* exited meanwhile: like Python, nothing to do */
  }
  pthread_mutex_unlock(&reg_lock);
  return r;
}

MPROC_EXTERN int mproc_process_terminate(mproc_process *p, unsigned flags) {
  return send_signal(p, flags, SIGTERM);
}

MPROC_EXTERN int mproc_process_kill(mproc_process *p, unsigned flags) {
  return send_signal(p, flags, SIGKILL);
}

MPROC_EXTERN int mproc_process_sentinel(const mproc_process *p) {
  if (p == NULL)
    return MPROC_EINVAL;
  return p->pidfd >= 0 ? p->pidfd : MPROC_ESTATE;
}

MPROC_EXTERN void mproc_process_free(mproc_process *p) {
  if (p == NULL)
    return;
  bool own = mine(p);
  if (own) {
    pthread_mutex_lock(&reg_lock);
    bool running = p->state == ST_RUNNING && !try_reap_locked(p);
    pthread_mutex_unlock(&reg_lock);
    if (running)
      stop_children(&p, 1);
  }
  /* A forked copy of the program holds a copy of the object, possibly linked
   * in its copy of the registry: unlink it in every case. */
  pthread_mutex_lock(&reg_lock);
  bool unreaped = p->state == ST_RUNNING;
  if (p->state != ST_NEW)
    reg_remove_locked(p);
  pthread_mutex_unlock(&reg_lock);
  /* In a forked copy the pidfd number was closed by the fork core and may now
   * name another file: only the creator closes it.  A child killed yet not
   * reaped (a debugger holds its zombie) is reaped later, once it lets go:
   * closing its pidfd would leave a zombie for good. */
  if (own && unreaped)
    mproc__reap_later(p->pidfd);
  else if (own)
    mproc__close(p->pidfd);
  /* With the argument bytes and the name; kept as the spare if small. */
  if (p->cap <= SPARE_MAX)
    p = atomic_exchange(&spare, p);
  if (p != NULL)
    free(p);
  if (own)
    mproc__reap_later_sweep();
}

MPROC_EXTERN int mproc_active_children(mproc_process **out, size_t cap) {
  if (out == NULL && cap > 0)
    return MPROC_EINVAL;
  pid_t self = own_pid();
  size_t n = 0;
  pthread_mutex_lock(&reg_lock);
  for (struct mproc_process *q = reg_head; q != NULL; q = q->next) {
    if (q->creator != self || try_reap_locked(q))
      continue;
    if (n < cap)
      out[n] = q;
    n++;
  }
  pthread_mutex_unlock(&reg_lock);
  return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

MPROC_EXTERN int mproc_parent_pid(void) { return parent_pid > 0 ? (int)parent_pid : MPROC_ESTATE; }

MPROC_EXTERN const char *mproc_current_process_name(void) {
  return current_name != NULL ? current_name : "MainProcess";
}
