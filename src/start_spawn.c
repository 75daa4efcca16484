/* The spawn start method: a child that is a fresh exec of the program.
 *
 * Design notes.  Python's spawn re-runs the interpreter and imports the main
 * module, which is why its users need an `if __name__ == "__main__"` guard.
 * Here the child is an exec of /proc/self/exe -- the very file the parent
 * runs, even if the path was replaced on disk since (argv[0] could name
 * another program, or nothing) -- and the library takes it over before
 * main() from an ELF constructor (worker_entry below) that recognises the
 * marker variable MPROC_WORKER=s<fd>.  main() never runs in the child.
 *
 *   parent                                   child
 *   socketpair (CLOEXEC both ends)
 *   mproc__spawn: fork -------------------> default dispositions, parent-
 *                                           death signal, library fds closed,
 *                                           channel made inheritable, execve
 *                                           (fails: 'E' errno, _exit 127)
 *   send request (header + SCM_RIGHTS, --> constructor: read it, resolve
 *   name, argument)                         the function by reference
 *   wait for the first reply byte  <------- 'R' ready | 'F' (reason on stderr)
 *   'R': started; else reap and fail        run the registered entry (for a
 *                                           process: the function, fflush),
 *                                           _exit(code)
 *
 * Why a handshake: errors that happen after fork (exec failing with ENOENT,
 * E2BIG or ENOMEM; a function the child cannot find) become the start
 * call's error instead of a mysterious exit code, and a failed start leaves
 * no child behind (it is reaped here).  The reply comes after one exec and
 * the dynamic loader's work, well under a millisecond for small programs.
 *
 * The start comes in two halves (mproc__start_launch: fork, exec, request
 * sent; mproc__start_finish: the verdict read), so that a pool can launch
 * all its workers and then wait for each: their execs run side by side.
 *
 * Entries (what a child runs once its function is found) are registered by
 * constructors of a lower priority number than worker_entry's, so that in a
 * static program as in the shared library every entry is known before the
 * image is taken over, without this file depending on their owners.
 *
 * The marker is removed from the environment before the user's function
 * runs, and the channel is closed, so nothing of it reaches the function's
 * own children.  Every other fd marked close-on-exec -- all of the library's,
 * and the program's own -- is closed by the exec: a spawn child inherits only
 * the descriptors the program left inheritable. */
#include "start.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long a start waits for the exec'd child to answer before it gives up
 * and kills it: only a child that hangs in the program's own constructors
 * (which run before the library's in a shared build) comes near it. */
#define READY_MS 30000
/* Upper bounds a child accepts for a request's variable parts. */
#define NAME_LEN_MAX 4096

extern char **environ;
extern char *program_invocation_name;

/* Exposed for tests only: the image exec'd (an ENOENT can be provoked). */
const char *mproc__spawn_exe = "/proc/self/exe";

int mproc__start_method_default(void) {
  const char *s = getenv("MPROC_START_METHOD");
  if (s == NULL || s[0] == '\0' || strcmp(s, "fork") == 0)
    return MPROC_START_FORK;
  if (strcmp(s, "spawn") == 0)
    return MPROC_START_SPAWN;
  if (strcmp(s, "forkserver") == 0)
    return MPROC_START_FORKSERVER;
  return MPROC_EINVAL;
}

/* ---- byte streams -------------------------------------------------------- */

int mproc__read_full(int fd, void *buf, size_t len) {
  while (len > 0) {
    ssize_t n = read(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return mproc__neg_errno();
    if (n == 0)
      return -EPIPE;
    buf = (char *)buf + n;
    len -= (size_t)n;
  }
  return 0;
}

/* Waits until sock takes more bytes; a stopped peer is a timeout. */
static int wait_writable(int sock, int64_t deadline_ms, pid_t peer) {
  int r = mproc__poll_peer(sock, POLLOUT, deadline_ms, peer);
  return r == 0 ? MPROC_ETIMEDOUT : r;
}

int mproc__send_full(int fd, const void *buf, size_t len, int64_t deadline_ms, pid_t peer) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      int r = wait_writable(fd, deadline_ms, peer);
      if (r < 0)
        return r;
      continue;
    }
    if (n < 0)
      return mproc__neg_errno();
    buf = (const char *)buf + n;
    len -= (size_t)n;
  }
  return 0;
}

int mproc__wire_make(const struct mproc__start_req *req, struct mproc__wire *w) {
  memset(w, 0, sizeof *w);
  if (req->fn != NULL) {
    int r = mproc__fnref_make(req->fn, &w->fn);
    if (r < 0)
      return r;
    w->has_fn = 1;
  }
  size_t nl = strlen(req->name);
  if (nl > NAME_LEN_MAX || strlen(req->ident) >= sizeof w->ident)
    return MPROC_EINVAL;
  w->magic = MPROC__WIRE_MAGIC;
  w->entry = req->entry;
  w->parent = (int32_t)getpid();
  w->name_len = (uint32_t)nl;
  w->arg_len = req->len;
  w->nentry = (uint32_t)req->nfds;
  w->flags = req->flags;
  memcpy(w->ident, req->ident, strlen(req->ident) + 1);
  return 0;
}

int mproc__send_header(int sock, const struct mproc__wire *w, const int *fds, size_t nfds,
                       int64_t deadline_ms, pid_t peer) {
  struct iovec iov = {.iov_base = (void *)w, .iov_len = sizeof *w};
  ssize_t n;
  for (;;) {
    n = mproc__sendmsg_fds(sock, &iov, 1, MSG_DONTWAIT, fds, nfds);
    if (n >= 0)
      break;
    if (n != -EAGAIN)
      return n == -ECONNRESET ? -EPIPE : (int)n;
    int r = wait_writable(sock, deadline_ms, peer);
    if (r < 0)
      return r;
  }
  /* The descriptors went with the first byte; the rest is plain bytes. */
  return mproc__send_full(sock, (const char *)w + n, sizeof *w - (size_t)n, deadline_ms, peer);
}

int mproc__recv_header(int sock, struct mproc__wire *w, int *fds, size_t cap) {
  size_t got = 0;
  int fd_err = 0;
  ssize_t n = mproc__recvmsg_fds(sock, w, sizeof *w, 0, fds, cap, &got, &fd_err);
  if (n <= 0)
    return n == 0 ? -EPIPE : (int)n;
  /* The whole header is read even when descriptors were lost, so the
   * stream stays in step and the caller can still answer. */
  int err = mproc__read_full(sock, (char *)w + n, sizeof *w - (size_t)n);
  if (err == 0)
    err = fd_err;
  if (err < 0) {
    for (size_t i = 0; i < got; i++)
      close(fds[i]);
    return err;
  }
  return (int)got;
}

/* ---- parent side ---------------------------------------------------------- */

struct exec_arg {
  char *const *argv;
  char *const *envp;
  int chan; /* the child's end of the channel */
};

/* In the forked child: async-signal-safe calls only until execve. */
static int exec_child(void *arg) {
  const struct exec_arg *x = arg;
  int fl = fcntl(x->chan, F_GETFD);
  if (fl >= 0)
    fcntl(x->chan, F_SETFD, fl & ~FD_CLOEXEC);
  execve(mproc__spawn_exe, x->argv, x->envp);
  char msg[1 + sizeof(int)] = {'E'};
  int e = errno;
  memcpy(msg + 1, &e, sizeof e);
  ssize_t n = write(x->chan, msg, sizeof msg);
  (void)n;
  return 127;
}

/* environ without any marker of ours, plus our marker: built before fork,
 * since the child may not allocate. */
static char **make_envp(const char *marker) {
  size_t n = 0;
  while (environ != NULL && environ[n] != NULL)
    n++;
  char **envp = malloc((n + 2) * sizeof *envp);
  if (envp == NULL)
    return NULL;
  size_t k = 0, ml = strlen(MPROC__WORKER_ENV);
  for (size_t i = 0; i < n; i++)
    if (!(strncmp(environ[i], MPROC__WORKER_ENV, ml) == 0 && environ[i][ml] == '='))
      envp[k++] = environ[i];
  envp[k++] = (char *)marker;
  envp[k] = NULL;
  return envp;
}

/* Reads the verdict of child `pid`: 0 ('R'), or the error it reports.  A
 * child stopped before its answer (SIGSTOP) fails the start at once rather
 * than at the deadline: it may stay stopped for ever. */
static int read_verdict(int fd, int64_t deadline, pid_t pid) {
  int r = mproc__poll_peer(fd, POLLIN, deadline, pid);
  if (r <= 0)
    return r == MPROC_ETIMEDOUT || r == 0 ? MPROC_ECHILDFAILED : r;
  char tag;
  ssize_t n;
  do
    n = recv(fd, &tag, 1, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n <= 0)
    return MPROC_ECHILDFAILED; /* died before it could say anything */
  if (tag == 'R')
    return 0;
  if (tag == 'N')
    return MPROC_ENOTSUP;
  if (tag == 'F')
    return MPROC_ENOFUNC;
  int e = 0;
  if (tag == 'E' && mproc__read_full(fd, &e, sizeof e) == 0 && e > 0)
    return -e;
  return MPROC_ECHILDFAILED;
}

/* Forks the exec'd child and sends it its request (see mproc__spawn_exec);
 * on success *pd holds it, its verdict not read yet. */
static int spawn_launch(char kind, unsigned flags, const struct mproc__wire *w, const int *fds,
                        size_t nfds, const void *payload, size_t plen, const void *payload2,
                        size_t plen2, struct mproc__start_pending *pd) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return mproc__neg_errno();
  sv[0] = mproc__fd_own(sv[0]);
  sv[1] = mproc__fd_own(sv[1]);
  char marker[64];
  snprintf(marker, sizeof marker, "%s=%c%d", MPROC__WORKER_ENV, kind, sv[1]);
  char *argv[] = {program_invocation_name, NULL};
  char **envp = make_envp(marker);
  if (envp == NULL) {
    mproc__close(sv[0]);
    mproc__close(sv[1]);
    return MPROC_ENOMEM;
  }
  struct exec_arg x = {.argv = argv, .envp = envp, .chan = sv[1]};
  /* A new group is made (and guarded) before the exec: the guard is the
   * pre-exec child's child, unseen by the new image's waits. */
  struct mproc__spawn_opts so = {.fn = exec_child,
                                 .arg = &x,
                                 .keep_fds = &sv[1],
                                 .nkeep = 1,
                                 .flags =
                                     ((flags & MPROC__START_NEWPGRP) ? MPROC__SPAWN_NEWPGRP : 0) |
                                     ((flags & MPROC__START_NOFLUSH) ? MPROC__SPAWN_NOFLUSH : 0)};
  int r = mproc__spawn(&so, &pd->pid, &pd->pidfd);
  free(envp);
  mproc__close(sv[1]);
  if (r < 0) {
    mproc__close(sv[0]);
    return r;
  }
  pd->chan = sv[0];
  pd->deadline = mproc__deadline(READY_MS);
  /* A child whose exec failed has exited: the send then fails (EPIPE) and
   * the verdict read in finish tells why.  The request is sent now (a
   * large one while the child execs and reads it): what is left to wait
   * for is only the child's answer. */
  if (w == NULL || mproc__send_header(sv[0], w, fds, nfds, pd->deadline, pd->pid) == 0)
    if (mproc__send_full(sv[0], payload, plen, pd->deadline, pd->pid) == 0)
      mproc__send_full(sv[0], payload2, plen2, pd->deadline, pd->pid);
  return 0;
}

/* Reads a launched child's verdict; on failure kills and reaps it. */
static int spawn_finish(struct mproc__start_pending *pd) {
  int r = read_verdict(pd->chan, pd->deadline, pd->pid);
  if (r < 0) {
    mproc__pidfd_kill(pd->pidfd, SIGKILL);
    /* SIGKILLed: prompt, unless a debugger holds it (reaped later then). */
    mproc__reap_killed(pd->pidfd, NULL, mproc__deadline(MPROC__KILL_REAP_MS));
    mproc__close(pd->chan);
    pd->pidfd = pd->chan = -1;
  }
  return r;
}

int mproc__spawn_exec(char kind, unsigned flags, const struct mproc__wire *w, const int *fds,
                      size_t nfds, const void *payload, size_t plen, const void *payload2,
                      size_t plen2, pid_t *pid_out, int *pidfd_out, int *chan_out) {
  struct mproc__start_pending pd;
  int r = spawn_launch(kind, flags, w, fds, nfds, payload, plen, payload2, plen2, &pd);
  if (r == 0)
    r = spawn_finish(&pd);
  if (r < 0)
    return r;
  *pid_out = pd.pid;
  *pidfd_out = pd.pidfd;
  *chan_out = pd.chan;
  return 0;
}

int mproc__start_launch(const struct mproc__start_req *req, struct mproc__start_pending *pd) {
  if (req == NULL || pd == NULL || (req->fn == NULL && req->entry == MPROC__ENTRY_PROCESS) ||
      (req->arg == NULL && req->len > 0) || req->name == NULL || req->ident == NULL ||
      req->nfds > MPROC__START_FDS_MAX || (req->nfds > 0 && req->fds == NULL) || req->entry == 0 ||
      req->entry >= MPROC__ENTRY_MAX ||
      (req->flags & ~(unsigned)(MPROC__START_NEWPGRP | MPROC__START_NOFLUSH)))
    return MPROC_EINVAL;
  struct mproc__wire w;
  int r = mproc__wire_make(req, &w);
  if (r < 0)
    return r;
  if (req->method == MPROC_START_FORKSERVER) {
    pd->chan = -1;
    return mproc__forkserver_request(req, &w, &pd->pid, &pd->pidfd);
  }
  if (req->method != MPROC_START_SPAWN)
    return MPROC_EINVAL;
  return spawn_launch('s', req->flags, &w, req->fds, req->nfds, req->name, w.name_len, req->arg,
                      req->len, pd);
}

int mproc__start_finish(struct mproc__start_pending *pd, pid_t *pid, int *pidfd) {
  if (pd == NULL || pid == NULL || pidfd == NULL)
    return MPROC_EINVAL;
  if (pd->chan >= 0) {
    int r = spawn_finish(pd);
    if (r < 0)
      return r;
    mproc__close(pd->chan);
    pd->chan = -1;
  }
  *pid = pd->pid;
  *pidfd = pd->pidfd;
  pd->pidfd = -1;
  return 0;
}

int mproc__start_child(const struct mproc__start_req *req, pid_t *pid, int *pidfd) {
  if (pid == NULL || pidfd == NULL)
    return MPROC_EINVAL;
  struct mproc__start_pending pd;
  int r = mproc__start_launch(req, &pd);
  return r == 0 ? mproc__start_finish(&pd, pid, pidfd) : r;
}

/* ---- child side ------------------------------------------------------------ */

static mproc__entry_fn entries[MPROC__ENTRY_MAX];

void mproc__start_entry_register(uint32_t entry, mproc__entry_fn fn) {
  if (entry > 0 && entry < MPROC__ENTRY_MAX)
    entries[entry] = fn;
}

_Noreturn void mproc__child_run(const struct mproc__wire *w, const struct mproc__child_ctx *c) {
  /* Default dispositions, as a forked child has: exec reset the parent's
   * handlers, but the image's own constructors (a sanitizer runtime, a
   * library) may have installed some since, and a crash must kill the
   * child by its signal under every start method. */
  mproc__reset_signals();
  int code = 127;
  if (w->entry < MPROC__ENTRY_MAX && entries[w->entry] != NULL)
    code = entries[w->entry](c);
  else
    fprintf(stderr, "mproc: no child entry %u in this program\n", (unsigned)w->entry);
  _exit(code);
}

/* Reads a request's header, descriptors, name and argument; 0 or -errno /
 * MPROC_EINVAL.  Allocations are never freed: the child exits when done. */
static int read_request(int fd, struct mproc__wire *w, int *fds, size_t *nfds, char **name,
                        void **arg) {
  int r = mproc__recv_header(fd, w, fds, MPROC__START_FDS_MAX);
  if (r < 0)
    return r;
  *nfds = (size_t)r;
  if (w->magic != MPROC__WIRE_MAGIC || w->name_len > NAME_LEN_MAX ||
      w->ident[sizeof w->ident - 1] != '\0' || w->arg_len > SIZE_MAX / 2 || w->nentry != *nfds)
    return MPROC_EINVAL;
  *name = malloc(w->name_len + 1);
  *arg = w->arg_len > 0 ? malloc(w->arg_len) : NULL;
  if (*name == NULL || (w->arg_len > 0 && *arg == NULL))
    return MPROC_ENOMEM;
  (*name)[w->name_len] = '\0';
  r = mproc__read_full(fd, *name, w->name_len);
  if (r == 0)
    r = mproc__read_full(fd, *arg, w->arg_len);
  return r;
}

static _Noreturn void spawn_child_main(int fd) {
  struct mproc__wire w;
  char *name = NULL;
  void *arg = NULL;
  int fds[MPROC__START_FDS_MAX];
  size_t nfds = 0;
  if (read_request(fd, &w, fds, &nfds, &name, &arg) < 0)
    _exit(127); /* the parent went away mid-request, or a foreign marker */
  mproc_function fn = NULL;
  char why[1024];
  if (w.has_fn && mproc__fnref_resolve(&w.fn, &fn, why, sizeof why) < 0) {
    fprintf(stderr, "mproc: cannot start \"%s\": %s\n", name, why);
    char tag = 'F';
    ssize_t n = write(fd, &tag, 1);
    (void)n;
    _exit(127);
  }
  char tag = 'R';
  ssize_t n = write(fd, &tag, 1);
  (void)n;
  close(fd);
  struct mproc__child_ctx c = {.fn = fn,
                               .arg = arg,
                               .len = w.arg_len,
                               .name = name,
                               .ident = w.ident,
                               .parent = (pid_t)w.parent,
                               .fds = fds,
                               .nfds = nfds};
  mproc__child_run(&w, &c);
}

/* Runs before main() in every program linked with the library; returns at
 * once unless this image was exec'd as a library child. */
__attribute__((constructor)) static void worker_entry(void) {
  const char *m = getenv(MPROC__WORKER_ENV);
  if (m == NULL || (m[0] != 's' && m[0] != 'f'))
    return;
  char kind = m[0], *end;
  long fd = strtol(m + 1, &end, 10);
  struct stat st;
  /* Only a socket can be our channel: a stray marker naming, say, stdin
   * leaves the program alone. */
  if (*end != '\0' || end == m + 1 || fd < 0 || fd > 1 << 24 || fstat((int)fd, &st) != 0 ||
      !S_ISSOCK(st.st_mode))
    return;
  unsetenv(MPROC__WORKER_ENV);
  fcntl((int)fd, F_SETFD, FD_CLOEXEC);
  if (kind == 'f')
    mproc__forkserver_main((int)fd);
  spawn_child_main((int)fd);
}
