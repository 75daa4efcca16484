/* The forkserver start method.
 *
 * Design notes.  Forking a program whose other threads hold locks can hang
 * the child (a user mutex, a FILE lock, any library's internal lock), and
 * forking a large heap costs page tables on every start.  The forkserver is a
 * process started by spawn (so: a fresh image, one thread, a small heap)
 * whose only job is to fork children on request; it never runs user code
 * itself, so it never holds a lock when it forks.
 *
 * Channel.  One socketpair per owner process, made by the spawn handshake
 * (never a listening or abstract socket, so no other process can reach it).
 * Requests are serialised by `lock`: header + SCM_RIGHTS, then name,
 * argument, environment and fd numbers; the reply is {status, pid} plus, for
 * a function the server cannot find, the reason.
 *
 * The note.  Each request also carries one end of a fresh socketpair (a
 * pipe would kill with SIGPIPE a child whose owner has had its reply and
 * closed the other end), and the new child's first act is to send its pid.  The server can
 * die between its fork and its reply (SIGKILL, the OOM killer): the child
 * then exists, is ours, and nobody else will ever name it.  So when the
 * server is found gone the owner, once it has reaped the server (no fork can
 * follow), reads the note: a pid is a child that got the whole request and
 * runs -- the start succeeded, and the child is adopted exactly as if the
 * reply had come; end of file is no child, and the request is retried.
 * Without it such a child would run its function unjoined and stay a zombie
 * of the owner, while the retry ran the function a second time.
 *
 * The page.  The note misses one child: one that dies (SIGKILL, the OOM
 * killer, a kill of its group) before it could send its pid, while the
 * server dies before its reply.  It is still our unreaped child, and nobody
 * would ever reap it.  So each server maps one page of a memfd the owner
 * hands it once started, and forks with CLONE_PARENT_SETTID pointing into
 * it: the kernel writes the child's pid there before the child runs and
 * before clone returns in the server, so no death of either can come
 * between.  The owner zeroes the page before each request and, when the
 * server is gone and the note is silent, reads it (pread: no mapping on the
 * owner's side): a pid there is a child that never got to run its function,
 * which is killed and reaped (checked first to be our child: with SIGCHLD
 * ignored the kernel may have reaped it and the pid been reused).
 *
 * Whose child.  The server creates children with clone3(CLONE_PARENT): the
 * child's parent is the *owner*, not the server.  So the owner pidfd_open()s
 * the pid it is told (still its unreaped child: the pid cannot have been
 * recycled, exactly as after fork) and joins, reaps, signals and walks the
 * tree of it like any forked child (in an owner whose children the kernel
 * reaps, the child first holds still until the owner closes the note, after
 * its pidfd_open: a child that exits at once would otherwise be gone, its
 * pid free for reuse, first); the server never reaps anything, and a
 * dead server does not take running children with it.  The alternative,
 * server-owned children whose exit status the server relays, would make the
 * owner's pidfd unreapable (waitid works for own children only) and tie every
 * child's life to the server's.  A raw clone bypasses glibc's fork, so the
 * child repeats what glibc's fork does for the calling thread: the kernel
 * writes the new tid into glibc's thread descriptor (CLONE_CHILD_SETTID at
 * the address PR_GET_TID_ADDRESS reports) and the robust-mutex list is
 * registered again (set_robust_list), or robust process-shared locks held by
 * a dying child would never be reported as owner-died.  A kernel without
 * these calls gets MPROC_ENOTSUP, never a half-working child.
 *
 * What a child sees.  The server's memory image (a fresh exec of the
 * program, plus the libraries earlier requests made it dlopen), and from the
 * owner, at each request: its inheritable (not close-on-exec) descriptors at
 * the same numbers, its working directory, environment, umask and the
 * requesting thread's signal mask -- the same view a spawn child gets,
 * rather than a copy of the owner's state at the time the server started
 * (Python's forkserver).  Dispositions are the defaults, rlimits the owner's
 * at the time the server started.
 *
 * Life.  The server has the owner's parent-death signal (SIGKILL) and exits
 * when its channel closes.
 *
 * The keeper thread.  Linux sends a parent-death signal when the *thread*
 * that created a process exits, and a CLONE_PARENT child's creator is the
 * server's: every child of the server would die with the thread that
 * happened to start the server -- the first to need it, a pool's manager
 * thread, say, whose pool is freed while other children still run.  So
 * servers are spawned by one thread of the library's own (`keeper`), made
 * at the first need and living as long as the process, idle but for the
 * spawns it is asked for; children die with the process, and with no thread
 * of it.  When it
 * has died anyway (SIGKILL by an administrator, the OOM killer), the next
 * request finds its pidfd readable or its channel broken, reaps it, starts a
 * new one and retries once; mproc_forkserver_restarts() counts these.
 * A forked copy of the owner drops the copy of the server state (atfork) and
 * starts its own server when it needs one.
 *
 * Stopped.  A server stopped by SIGSTOP (or SIGTSTP sent to it alone)
 * answers nothing until continued, yet reads as alive.  The waits for its
 * reply, and for room in its socket while a large request is sent, look at
 * its state whenever it is slow, so a stopped server is found within about
 * MPROC__PEER_CHECK_MS (50 ms) and handled as a dead one: killed, reaped,
 * replaced, the request retried once.  A server that runs but never answers
 * is given up on after REPLY_MS.  mproc_forkserver_stop kills a stopped
 * server as soon as it is seen, rather than after STOP_MS.  A server whose
 * zombie a debugger holds has exited all the same: its pidfd goes to
 * reap_later.c instead of being waited for. */
#include "process.h"
#include "start.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_PARENT
#define CLONE_PARENT 0x00008000
#endif
#ifndef CLONE_PARENT_SETTID
#define CLONE_PARENT_SETTID 0x00100000
#endif

/* Inheritable descriptors one request can carry: the kernel's SCM_MAX_FD,
 * less the entry's descriptors, the working directory and the note. */
#define MAX_FDS (MPROC__SCM_MAX_FD - MPROC__START_FDS_MAX - 2)
/* Every descriptor of one request. */
#define ALL_FDS (MAX_FDS + MPROC__START_FDS_MAX + 2)
/* The server's page: the pid of its last child at offset 0. */
#define PAGE_BYTES 4096
/* Bound on a reply: a live server answers in microseconds.  A stopped one
 * is given up on much sooner (MPROC__PEER_CHECK_MS, see "Stopped"). */
#define REPLY_MS 30000
/* How long mproc_forkserver_stop lets a server exit on its own once its
 * channel is closed (a stopped one is killed as soon as it is seen). */
#define STOP_MS 1000
#define ENV_MAX (64u << 20)

struct reply {
  int32_t status; /* 0 or a negative error */
  int32_t pid;
  uint32_t msg_len; /* bytes of reason that follow */
};

/* ---- owner side ------------------------------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t srv_owner;    /* getpid() of the process the server serves */
static pid_t srv_pid;      /* the server, 0 when none */
static int srv_pidfd = -1; /* its pidfd (registered) */
static int srv_ctl = -1;   /* our end of the channel (registered) */
static int srv_page = -1;  /* the memfd of its page (registered; "The page") */
static atomic_int restarts;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The keeper thread and its one job at a time (asked for under `lock`). */
static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kcv = PTHREAD_COND_INITIALIZER;
static bool keeper_up;
static struct {
  bool asked, done; /* a spawn was asked for / has finished */
  int r;            /* its result */
  pid_t pid;        /* on success: the server, */
  int pidfd, ctl;   /*   its pidfd and our end of its channel */
} job;

/* In a forked copy of the owner: the server is not ours to talk to. */
static void forget_in_child(void) {
  pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t fresh_cv = PTHREAD_COND_INITIALIZER;
  memcpy(&lock, &fresh, sizeof fresh);
  memcpy(&kmu, &fresh, sizeof fresh);
  memcpy(&kcv, &fresh_cv, sizeof fresh_cv);
  keeper_up = false; /* the copy has only the thread that forked */
  memset(&job, 0, sizeof job);
  if (srv_ctl >= 0 && srv_owner != getpid()) {
    mproc__close(srv_ctl);
    mproc__close(srv_pidfd);
    mproc__close(srv_page);
    srv_ctl = srv_pidfd = srv_page = -1;
    srv_pid = 0;
    atomic_store(&restarts, 0);
  }
}

static void install_atfork(void) { pthread_atfork(NULL, NULL, forget_in_child); }

/* Closes what the owner holds of a server that is reaped; lock held. */
static void forget_locked(void) {
  mproc__close(srv_pidfd);
  mproc__close(srv_page);
  srv_pidfd = srv_page = -1;
  srv_pid = 0;
}

/* Kills and reaps the server, keeping its page; lock held.  A server whose
 * zombie a debugger holds has exited all the same (no fork can follow): it
 * is left to reap_later.c rather than waited for. */
static void kill_locked(void) {
  mproc__close(srv_ctl);
  srv_ctl = -1;
  mproc__pidfd_kill(srv_pidfd, SIGKILL);
  mproc__reap_killed(srv_pidfd, NULL, mproc__deadline(MPROC__KILL_REAP_MS));
  srv_pidfd = -1;
}

/* Kills and reaps the server; lock held. */
static void drop_locked(void) {
  if (srv_ctl < 0)
    return;
  kill_locked();
  forget_locked();
}

static void *keeper_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&kmu);
  for (;;) {
    while (!job.asked)
      pthread_cond_wait(&kcv, &kmu);
    job.asked = false;
    pthread_mutex_unlock(&kmu);
    /* No flush: the requester did it; this thread's stdio is not its own. */
    pid_t pid = 0;
    int pidfd = -1, ctl = -1;
    int r = mproc__spawn_exec('f', MPROC__START_NOFLUSH, NULL, NULL, 0, NULL, 0, NULL, 0, &pid,
                              &pidfd, &ctl);
    pthread_mutex_lock(&kmu);
    job.r = r;
    job.pid = pid;
    job.pidfd = pidfd;
    job.ctl = ctl;
    job.done = true;
    pthread_cond_broadcast(&kcv);
  }
  return NULL;
}

/* Starts a server from the keeper thread (made on first use); lock held. */
static int spawn_server_locked(pid_t *pid, int *pidfd, int *ctl) {
  pthread_mutex_lock(&kmu);
  if (!keeper_up) {
    /* Every signal blocked in it: the program's signals are for its own
     * threads (the server unblocks them for itself). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    pthread_t t;
    int e = pthread_create(&t, &at, keeper_main, NULL);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
      pthread_mutex_unlock(&kmu);
      return -e;
    }
    pthread_setname_np(t, "mproc-forksrv");
    keeper_up = true;
  }
  job.asked = true;
  job.done = false;
  pthread_cond_broadcast(&kcv);
  while (!job.done)
    pthread_cond_wait(&kcv, &kmu);
  int r = job.r;
  *pid = job.pid;
  *pidfd = job.pidfd;
  *ctl = job.ctl;
  pthread_mutex_unlock(&kmu);
  return r;
}

int mproc__forkserver_threads(void) {
  pthread_mutex_lock(&kmu);
  int n = keeper_up ? 1 : 0;
  pthread_mutex_unlock(&kmu);
  return n;
}

static int ensure_locked(void) {
  if (srv_ctl >= 0) {
    struct pollfd p = {.fd = srv_pidfd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0)
      return 0;
    drop_locked(); /* died since the last request */
    atomic_fetch_add(&restarts, 1);
  }
  pid_t pid = 0;
  int pidfd = -1, ctl = -1;
  int r = spawn_server_locked(&pid, &pidfd, &ctl);
  if (r < 0)
    return r;
  srv_owner = getpid();
  srv_pid = pid;
  srv_pidfd = pidfd;
  srv_ctl = ctl;
  /* Its page (see "The page"), handed over once. */
  r = mproc__memfd_create("mproc-forksrv", PAGE_BYTES, &srv_page);
  if (r == 0) {
    struct iovec iov = {.iov_base = "P", .iov_len = 1};
    ssize_t n = mproc__sendmsg_fds(srv_ctl, &iov, 1, MSG_DONTWAIT, &srv_page, 1);
    r = n == 1 ? 0 : n < 0 ? (int)n : -EPIPE;
  }
  if (r < 0)
    drop_locked();
  return r;
}

/* Appends the owner's inheritable descriptors (numbers in nums), then its
 * cwd, to fds[0..]; returns how many were appended, or -errno. */
static int collect_fds(int *fds, struct mproc__wire *w, int32_t *nums) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return mproc__neg_errno();
  int n = 0, r = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd == dirfd(d))
      continue;
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || (fl & FD_CLOEXEC))
      continue;
    if (n == MAX_FDS) {
      r = MPROC_ENOTSUP; /* more inheritable fds than one message carries */
      break;
    }
    nums[n] = fd;
    fds[n++] = fd;
  }
  closedir(d);
  if (r < 0)
    return r;
  w->nfds = (uint32_t)n;
  int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cwd >= 0) {
    fds[n++] = cwd;
    w->has_cwd = 1;
  }
  return n;
}

/* The umask without changing it (umask(2) would race with other threads). */
static uint32_t current_umask(void) {
  FILE *f = fopen("/proc/self/status", "re");
  unsigned v = 022;
  if (f != NULL) {
    char line[256];
    while (fgets(line, sizeof line, f) != NULL)
      if (sscanf(line, "Umask: %o", &v) == 1)
        break;
    fclose(f);
  }
  return v;
}

static char *env_block(uint32_t *len) {
  size_t n = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++)
    n += strlen(*e) + 1;
  if (n > ENV_MAX)
    return NULL;
  char *b = malloc(n + 1), *p = b;
  if (b == NULL)
    return NULL;
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    size_t l = strlen(*e) + 1;
    memcpy(p, *e, l);
    p += l;
  }
  *len = (uint32_t)n;
  return b;
}

/* The pid the page names (see "The page"), 0 when none. */
static pid_t page_pid(void) {
  int32_t v = 0;
  return pread(srv_page, &v, sizeof v, 0) == (ssize_t)sizeof v && v > 0 ? (pid_t)v : 0;
}

/* Kills and reaps our child `pid`, forked by a server that is gone, unless
 * it is no longer ours. */
static void reap_unnoted(pid_t pid) {
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return; /* gone for good: reaped by the kernel (SIGCHLD ignored) */
  fd = mproc__fd_own(fd);
  /* Pinned by the pidfd: ECHILD means the pid is no longer our child's. */
  siginfo_t si;
  if (waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
    mproc__pidfd_kill(fd, SIGKILL);
    mproc__reap_killed(fd, NULL, mproc__deadline(REPLY_MS));
  } else {
    mproc__close(fd);
  }
}

/* After the server is reaped (no fork can follow): the child its last
 * request made, adopted when it noted its pid ("The note"), or -ESRCH when
 * there is none, or none that got to run (then killed and reaped: "The
 * page").  The child writes its note first; the wait is bounded all the
 * same, and ends early if it is stopped. */
static int adopt_noted(int note, pid_t *pid) {
  pid_t child = page_pid();
  if (child == 0)
    return -ESRCH; /* the kernel writes it before the child exists */
  int32_t v;
  int r = mproc__poll_peer(note, POLLIN, mproc__deadline(REPLY_MS), child);
  if (r > 0 && read(note, &v, sizeof v) == (ssize_t)sizeof v && v == child) {
    *pid = child;
    return 0;
  }
  reap_unnoted(child);
  return -ESRCH;
}

/* Exposed for tests only: called with the lock held and the server's pidfd
 * before a request is sent (stage 0) and once it is sent, before its reply
 * is read (stage 1), so a test can kill the server exactly while a start is
 * in flight. */
void (*_Atomic mproc__forkserver_test_hook)(int stage, int server_pidfd);

/* One request over a live channel; lock held.  -EPIPE: the server is gone. */
static int request_locked(const struct mproc__start_req *req, struct mproc__wire *w, const int *fds,
                          int nfds, const int32_t *nums, const char *env, pid_t *pid) {
  int64_t deadline = mproc__deadline(REPLY_MS);
  void (*hook)(int, int) = atomic_load(&mproc__forkserver_test_hook);
  if (hook != NULL)
    hook(0, srv_pidfd);
  int r = mproc__send_header(srv_ctl, w, fds, (size_t)nfds, deadline, srv_pid);
  if (r == 0)
    r = mproc__send_full(srv_ctl, req->name, w->name_len, deadline, srv_pid);
  if (r == 0)
    r = mproc__send_full(srv_ctl, req->arg, req->len, deadline, srv_pid);
  if (r == 0)
    r = mproc__send_full(srv_ctl, env, w->env_len, deadline, srv_pid);
  if (r == 0)
    r = mproc__send_full(srv_ctl, nums, w->nfds * sizeof *nums, deadline, srv_pid);
  struct reply rep;
  if (r == 0 && hook != NULL)
    hook(1, srv_pidfd);
  if (r == 0)
    r = mproc__poll_peer(srv_ctl, POLLIN, deadline, srv_pid);
  if (r == 0)
    r = MPROC_ETIMEDOUT; /* stopped: it would answer only once continued */
  if (r > 0)
    r = mproc__read_full(srv_ctl, &rep, sizeof rep);
  if (r == -ECONNRESET)
    r = -EPIPE;
  if (r < 0)
    return r;
  if (rep.msg_len > 0) {
    char why[1024];
    size_t k = rep.msg_len < sizeof why ? rep.msg_len : sizeof why - 1;
    r = mproc__read_full(srv_ctl, why, k);
    for (size_t left = rep.msg_len - k; r == 0 && left > 0; left--) {
      char c;
      r = mproc__read_full(srv_ctl, &c, 1);
    }
    why[k] = '\0';
    if (r == 0)
      fprintf(stderr, "mproc: cannot start \"%s\": %s\n", req->name, why);
  }
  if (r < 0)
    return r == -ECONNRESET ? -EPIPE : r;
  *pid = rep.pid;
  return rep.status;
}

int mproc__forkserver_request(const struct mproc__start_req *req, const struct mproc__wire *w0,
                              pid_t *pid_out, int *pidfd_out) {
  pthread_once(&atfork_once, install_atfork);
  struct mproc__wire w = *w0;
  int fds[ALL_FDS];
  int32_t nums[MAX_FDS];
  if (req->nfds > 0)
    memcpy(fds, req->fds, req->nfds * sizeof *fds);
  int nfds = collect_fds(fds + req->nfds, &w, nums);
  if (nfds < 0)
    return nfds;
  nfds += (int)req->nfds;
  char *env = env_block(&w.env_len);
  if (env == NULL) {
    if (w.has_cwd)
      close(fds[nfds - 1]);
    return MPROC_ENOMEM;
  }
  w.umask = current_umask();
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  memcpy(w.sigmask, &mask, sizeof w.sigmask);

  /* As under fork and spawn: output buffered before the start is written
   * before the child's. */
  if (!(req->flags & MPROC__START_NOFLUSH))
    fflush(NULL);
  pid_t pid = 0;
  /* Kept open until the pidfd is: the child's hold (see "Whose child"). */
  int held = -1;
  if (mproc__children_autoreaped())
    w.flags |= MPROC__START_HOLD;
  pthread_mutex_lock(&lock);
  int r = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    int note[2] = {-1, -1};
    r = ensure_locked();
    /* A pid left from an earlier request would name a child adopted then. */
    static const int32_t zero = 0;
    if (r == 0 && pwrite(srv_page, &zero, sizeof zero, 0) != (ssize_t)sizeof zero)
      r = mproc__neg_errno();
    if (r == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, note) != 0)
      r = mproc__neg_errno();
    if (r == 0) {
      /* Registered: a fork by another thread must not keep the write end
       * open, or a server's death would look like a child that is silent. */
      note[0] = mproc__fd_own(note[0]);
      note[1] = mproc__fd_own(note[1]);
      fds[nfds] = note[1];
      r = request_locked(req, &w, fds, nfds + 1, nums, env, &pid);
      mproc__close(note[1]); /* the request's copy stays in flight */
    }
    bool gone = r == -EPIPE || r == -ECONNRESET || r == MPROC_ETIMEDOUT;
    if (gone) {
      /* The server died (or hangs) under us: replace it, then take the
       * child it may have forked before dying, or try once more. */
      if (srv_pidfd >= 0)
        kill_locked();
      atomic_fetch_add(&restarts, 1);
      if (note[0] >= 0 && adopt_noted(note[0], &pid) == 0)
        r = 0;
      forget_locked();
    }
    if (r == 0 && (w.flags & MPROC__START_HOLD))
      held = note[0];
    else if (note[0] >= 0)
      mproc__close(note[0]);
    if (!gone || r == 0)
      break;
  }
  pthread_mutex_unlock(&lock);
  free(env);
  if (w.has_cwd)
    close(fds[nfds - 1]);
  if (r < 0)
    return r;
  if (req->flags & MPROC__START_NEWPGRP)
    setpgid(pid, pid); /* both sides set it, as spawn.c does: either may run first */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  r = pidfd < 0 ? mproc__neg_errno() : 0;
  if (pidfd < 0) {
    /* Our own child (CLONE_PARENT), still holding if the kernel reaps our
     * children: kill it by its exact pid before letting it go, as
     * mproc__spawn does, then reap it. */
    kill(pid, SIGKILL);
    mproc__close(held);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return r;
  }
  mproc__close(held); /* the child may go on */
  pidfd = mproc__fd_own(pidfd);
  *pid_out = pid;
  *pidfd_out = pidfd;
  return 0;
}

int mproc__forkserver_pidfd(void) {
  pthread_mutex_lock(&lock);
  int fd = srv_ctl >= 0 && srv_owner == getpid() ? fcntl(srv_pidfd, F_DUPFD_CLOEXEC, 0) : -1;
  pthread_mutex_unlock(&lock);
  return fd;
}

MPROC_EXTERN int mproc_forkserver_restarts(void) { return atomic_load(&restarts); }

MPROC_EXTERN void mproc_forkserver_stop(void) {
  pthread_mutex_lock(&lock);
  if (srv_ctl >= 0 && srv_owner == getpid()) {
    /* Closing the channel asks it to exit; the kill only bounds a wedged
     * one, and comes at once for a stopped one (SIGSTOP: it would read its
     * channel's end only once continued).  Its children are ours and keep
     * running. */
    mproc__close(srv_ctl);
    srv_ctl = -1;
    if (mproc__poll_peer(srv_pidfd, POLLIN, mproc__deadline(STOP_MS), srv_pid) <= 0)
      mproc__pidfd_kill(srv_pidfd, SIGKILL);
    mproc__reap_killed(srv_pidfd, NULL, mproc__deadline(MPROC__KILL_REAP_MS));
    srv_pidfd = -1;
    forget_locked();
  }
  pthread_mutex_unlock(&lock);
}

/* ---- server side ----------------------------------------------------------- */

static int *tid_addr;     /* glibc's tid field of our only thread */
static void *robust_head; /* glibc's robust-list head of our only thread */
static size_t robust_len;
static int32_t *page; /* the owner's page: each child's pid ("The page") */

/* Exposed for tests only, set by a constructor of the program (which runs in
 * the server's image too): called right after each fork, in the new child
 * (pid 0) before its note and in the server (the child's pid) before its
 * reply, so a test can end either exactly there. */
void (*_Atomic mproc__forkserver_fork_hook)(pid_t pid);

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Closes [lo, hi]; hi == ~0u: every fd from lo on. */
static void close_span(unsigned lo, unsigned hi) {
  if (hi < lo || syscall(SYS_close_range, lo, hi, 0) == 0)
    return;
  long max = hi == ~0u ? sysconf(_SC_OPEN_MAX) : (long)hi + 1;
  for (long fd = lo; fd < max; fd++)
    close((int)fd);
}

/* In the new child: the owner's inheritable descriptors at their numbers,
 * the entry's descriptors somewhere above them, nothing else. */
static void place_fds(int *inh, const int32_t *nums, uint32_t n, int *entry, uint32_t nentry) {
  int top = -1;
  for (uint32_t i = 0; i < n; i++)
    if (nums[i] > top)
      top = nums[i];
  /* Move every received fd above all targets first, so no dup2 below can
   * overwrite one not placed yet. */
  int *all[ALL_FDS];
  uint32_t nall = 0;
  for (uint32_t i = 0; i < n; i++)
    all[nall++] = &inh[i];
  for (uint32_t i = 0; i < nentry; i++)
    all[nall++] = &entry[i];
  for (uint32_t i = 0; i < nall; i++)
    if (*all[i] <= top) {
      int moved = fcntl(*all[i], F_DUPFD_CLOEXEC, top + 1);
      if (moved < 0)
        _exit(127);
      *all[i] = moved;
    }
  int keep[ALL_FDS];
  for (uint32_t i = 0; i < n; i++) {
    if (dup2(inh[i], nums[i]) < 0) /* dup2 leaves the target inheritable */
      _exit(127);
    keep[i] = nums[i];
  }
  for (uint32_t i = 0; i < nentry; i++)
    keep[n + i] = entry[i];
  qsort(keep, n + nentry, sizeof *keep, cmp_int);
  unsigned next = 0;
  for (uint32_t i = 0; i < n + nentry; i++) {
    if ((unsigned)keep[i] > next)
      close_span(next, (unsigned)keep[i] - 1);
    next = (unsigned)keep[i] + 1;
  }
  close_span(next, ~0u);
}

static _Noreturn void child_setup(const struct mproc__wire *w, int *got, const int32_t *nums,
                                  char *env, struct mproc__child_ctx *c, pid_t owner) {
  if (robust_head != NULL)
    syscall(SYS_set_robust_list, robust_head, robust_len);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL); /* until the request's own mask */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != owner)
    _exit(127);
  if (w->flags & MPROC__START_NEWPGRP) {
    setpgid(0, 0);
    mproc__group_guard_start(); /* inherits the blocked mask */
  }
  if (w->has_cwd && fchdir(got[w->nentry + w->nfds]) != 0)
    _exit(127);
  place_fds(got + w->nentry, nums, w->nfds, got, w->nentry);
  c->fds = got;
  c->nfds = w->nentry;
  /* The environment: pointers into the request, kept until exit. */
  size_t count = 0;
  for (uint32_t i = 0; i < w->env_len; i++)
    count += env[i] == '\0';
  char **envp = malloc((count + 1) * sizeof *envp);
  if (envp == NULL)
    _exit(127);
  size_t k = 0;
  for (uint32_t i = 0; i < w->env_len; i += (uint32_t)strlen(env + i) + 1)
    envp[k++] = env + i;
  envp[k] = NULL;
  environ = envp;
  umask((mode_t)w->umask);
  sigset_t mask;
  memcpy(&mask, w->sigmask, sizeof mask);
  sigprocmask(SIG_SETMASK, &mask, NULL);
  mproc__child_run(w, c);
}

static void reply(int ctl, int32_t status, pid_t pid, const char *msg) {
  struct reply rep = {.status = status, .pid = pid, .msg_len = msg ? (uint32_t)strlen(msg) : 0};
  if (mproc__send_full(ctl, &rep, sizeof rep, -1, 0) != 0 ||
      (msg != NULL && mproc__send_full(ctl, msg, rep.msg_len, -1, 0) != 0))
    _exit(0); /* the owner is gone */
}

/* Serves one request; returns only to serve the next. */
static void serve_one(int ctl, pid_t owner) {
  struct mproc__wire w;
  int got[ALL_FDS];
  int r = mproc__recv_header(ctl, &w, got, ALL_FDS);
  if (r == -EPIPE)
    _exit(0); /* the owner closed the channel, or died */
  /* -EMFILE: we are out of descriptors; the header still tells how much to
   * read, and the owner gets the error. */
  int fd_err = r == -EMFILE ? r : 0;
  if ((r < 0 && !fd_err) || w.magic != MPROC__WIRE_MAGIC || w.name_len > 4096 ||
      w.env_len > ENV_MAX || w.nfds > MAX_FDS || w.nentry > MPROC__START_FDS_MAX ||
      w.arg_len > SIZE_MAX / 4 ||
      (!fd_err && (uint32_t)r != w.nentry + w.nfds + (w.has_cwd ? 1u : 0u) + 1u) ||
      w.ident[sizeof w.ident - 1] != '\0')
    _exit(1); /* not our owner's protocol: no sane answer */
  int ngot = fd_err ? 0 : r;
  size_t arg_at = w.name_len, env_at = arg_at + w.arg_len, nums_at = env_at + w.env_len,
         total = nums_at + w.nfds * sizeof(int32_t);
  char *body = malloc(total + 1);
  if (body == NULL)
    _exit(1); /* cannot even drain the request: let the owner start anew */
  r = mproc__read_full(ctl, body, total);
  if (r == -EPIPE)
    _exit(0);
  if (r == 0)
    r = fd_err;
  mproc_function fn = NULL;
  char why[1024] = "";
  if (r == 0 && (w.env_len > 0 && body[env_at + w.env_len - 1] != '\0'))
    r = MPROC_EINVAL;
  if (r == 0 && w.has_fn)
    r = mproc__fnref_resolve(&w.fn, &fn, why, sizeof why);
  pid_t pid = 0;
  if (r == 0) {
    struct clone_args {
      uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } ca = {.flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID,
            .child_tid = (uint64_t)(uintptr_t)tid_addr,
            .parent_tid = (uint64_t)(uintptr_t)page,
            .exit_signal = 0}; /* CLONE_PARENT: the server's own exit signal */
    pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
    void (*hook)(pid_t) = atomic_load(&mproc__forkserver_fork_hook);
    if (hook != NULL && pid >= 0)
      hook(pid);
    if (pid == 0) {
      /* First of all, tell the owner we exist: the server may die before
       * its reply. */
      int note = got[w.nentry + w.nfds + (w.has_cwd ? 1u : 0u)];
      int32_t me = (int32_t)syscall(SYS_getpid);
      /* EPIPE (no signal): the owner had its reply and closed the note. */
      (void)send(note, &me, sizeof me, MSG_NOSIGNAL);
      if (w.flags & MPROC__START_HOLD) {
        /* Until the owner has our pidfd: it closes the note then (or dies). */
        char b;
        while (recv(note, &b, 1, 0) < 0 && errno == EINTR) {
        }
      }
      close(note);
      close(ctl);
      munmap(page, PAGE_BYTES); /* the server's, not the child's */
      char *name = malloc(w.name_len + 1);
      /* A copy of its own: malloc's alignment, as the API promises. */
      void *arg = w.arg_len > 0 ? malloc(w.arg_len) : NULL;
      if (name == NULL || (w.arg_len > 0 && arg == NULL))
        _exit(127);
      memcpy(name, body, w.name_len);
      name[w.name_len] = '\0';
      if (arg != NULL)
        memcpy(arg, body + arg_at, w.arg_len);
      int32_t nums[MAX_FDS];
      memcpy(nums, body + nums_at, w.nfds * sizeof *nums);
      struct mproc__child_ctx c = {.fn = fn,
                                   .arg = arg,
                                   .len = w.arg_len,
                                   .name = name,
                                   .ident = w.ident,
                                   .parent = (pid_t)w.parent};
      child_setup(&w, got, nums, body + env_at, &c, owner);
    }
    if (pid < 0)
      r = mproc__neg_errno();
  }
  for (int i = 0; i < ngot; i++)
    close(got[i]);
  free(body);
  reply(ctl, r, pid, r == MPROC_ENOFUNC ? why : NULL);
}

_Noreturn void mproc__forkserver_main(int ctl) {
  pid_t owner = getppid();
  /* Spawned by the keeper thread, which blocks every signal: take the
   * default mask back (each child gets its requester's). */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  long sr = syscall(SYS_get_robust_list, 0, &robust_head, &robust_len);
  if (prctl(PR_GET_TID_ADDRESS, &tid_addr, 0, 0, 0) != 0 || tid_addr == NULL || sr != 0) {
    /* Without them a child's glibc would believe it is the server's thread
     * (robust locks, pthread ids): refuse rather than half-work. */
    char tag = 'N';
    ssize_t n = write(ctl, &tag, 1);
    (void)n;
    _exit(1);
  }
  /* Keep nothing of the owner's but the channel: a pipe the owner reads to
   * its end must not stay open here.  Children get the owner's descriptors
   * with each request; stray writes of ours go to /dev/null. */
  int fd = ctl;
  if (ctl <= 2) {
    fd = fcntl(ctl, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
      _exit(1);
  }
  if (syscall(SYS_close_range, 0u, (unsigned)fd - 1, 0) != 0)
    for (int i = 0; i < fd; i++)
      close(i);
  if (syscall(SYS_close_range, (unsigned)fd + 1, ~0u, 0) != 0)
    for (long i = fd + 1; i < sysconf(_SC_OPEN_MAX); i++)
      close((int)i);
  ctl = fd;
  int null = open("/dev/null", O_RDWR);
  if (null == 0) {
    dup2(null, 1);
    dup2(null, 2);
  }
  char tag = 'R';
  if (write(ctl, &tag, 1) != 1)
    _exit(0);
  /* The owner's answer: the page each fork writes its child's pid to. */
  int pg = -1, fd_err = 0;
  size_t got = 0;
  if (mproc__recvmsg_fds(ctl, &tag, 1, 0, &pg, 1, &got, &fd_err) != 1 || got != 1 || tag != 'P')
    _exit(0);
  page = mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, pg, 0);
  close(pg);
  if (page == MAP_FAILED)
    _exit(1);
  for (;;)
    serve_one(ctl, owner);
}
