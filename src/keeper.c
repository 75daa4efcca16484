/* Keepers: the processes that remove a named /dev/shm object (a named shm
 * block or a named queue) once no process uses it any more, also when every
 * user was killed.
 *
 * Design notes.  Built on flock(2), whose locks belong to an open file
 * description and are dropped by the kernel when the last reference to it
 * goes, including at death and including references held by mappings:
 * every user holds LOCK_SH on its description for as long as it uses the
 * object, and the keeper waits for LOCK_EX on a description of its own.  It
 * gets it only when no user is left, runs the object's last rites (a
 * queue's spill objects), removes the name if it still refers to this
 * object, and exits.  The keeper is double-forked (nobody's zombie), in its
 * own session, with no parent-death signal, no other descriptor and no
 * shared mapping (a mapping it inherited would keep a description, and its
 * lock, alive forever), and is marked as the library's own process
 * (MPROC__SPAWN_INTERNAL) so that it takes no part in the user's queues.
 * A pending LOCK_EX does not block new LOCK_SH requests on Linux, so the
 * waiting keeper never delays users (tests/test-shm.c checks this).
 *
 * Life of a keeper (the creator waits, bounded, for the keeper's word and
 * the intermediate's exit; a stopped one of them ends the wait at once):
 *
 *   creator: reopen the object (a description of the keeper's own)
 *     -> spawn intermediate -> fork keeper -> intermediate writes the
 *     keeper's pid to `ready` (so that the creator, waiting, can tell a
 *     stopped keeper once the intermediate is gone) and waits for the keeper
 *     to close what it inherited
 *   keeper: setsid -> close every fd but its own and `ready` (the
 *     intermediate exits) -> unmap inherited shared mappings (cannot: exit,
 *     the create fails) -> write its word, 0, to `ready` (the creator reaps
 *     the intermediate and links the name) -> flock(LOCK_EX) ... no user left
 *     -> last rites -> unlink the name if it is still this object -> _exit
 *
 * A keeper that cannot start makes the create fail (nothing named yet). */
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define SHM_DIR "/dev/shm"
/* How long a create waits for its keeper's word; a stopped intermediate or
 * keeper is noticed within about MPROC__PEER_CHECK_MS instead. */
#define READY_MS 30000

/* Whether `path` names the object (dev, ino). */
static bool path_is(const char *path, dev_t dev, ino_t ino) {
  struct stat st;
  return stat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

struct keeper_arg {
  int fd;                /* the keeper's own open file description */
  int ready;             /* write end of the creator's pipe: one byte once ready */
  char path[288];        /* /dev/shm/<name>, names of at most 255 bytes */
  mproc__keeper_fn last; /* run once no one is attached; or NULL */
};

static uintptr_t parse_hex(const char **p) {
  uintptr_t v = 0;
  for (;; (*p)++) {
    char c = **p;
    if (c >= '0' && c <= '9')
      v = v * 16 + (uintptr_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v = v * 16 + (uintptr_t)(c - 'a' + 10);
    else
      return v;
  }
}

/* The keeper inherited every mapping of the process that created the block.
 * A shared mapping of a file keeps that file's open file description alive,
 * and with it the flock that description holds: the keeper would keep every
 * named block of its creator "attached", its own included.  So it unmaps
 * every shared mapping.  (Private memory is left alone: the keeper still
 * calls into libc, whose state, like the dynamic linker's, lives in anonymous
 * private mappings.  It shares those pages copy-on-write with its creator;
 * docs/reference/shm.md states the cost.)  /proc/self/maps is parsed with plain system
 * calls (a forked child of a possibly multi-threaded process may not use
 * stdio or malloc).  Unmapping while reading can make the kernel skip lines,
 * hence the passes until one finds nothing to unmap. */
static bool release_inherited(void) {
  for (int pass = 0; pass < 16; pass++) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return false;
    char buf[8192];
    size_t have = 0;
    bool found = false;
    for (;;) {
      ssize_t n = read(fd, buf + have, sizeof buf - have);
      if (n <= 0)
        break;
      have += (size_t)n;
      char *line = buf, *nl;
      while ((nl = memchr(line, '\n', (size_t)(buf + have - line))) != NULL) {
        const char *q = line;
        uintptr_t start = parse_hex(&q);
        uintptr_t end = *q == '-' ? (q++, parse_hex(&q)) : 0;
        /* "start-end rwsp ...": the fourth permission character. */
        if (*q == ' ' && q + 4 < nl && q[4] == 's' && end > start) {
          munmap((void *)start, end - start);
          found = true;
        }
        line = nl + 1;
      }
      have = (size_t)(buf + have - line);
      memmove(buf, line, have);
      if (have == sizeof buf)
        have = 0; /* an absurdly long line: drop it */
    }
    close(fd);
    if (!found)
      return true;
  }
  return false;
}

/* Runs in the double-forked keeper: async-signal-safe calls only.  `ready`
 * is written once the keeper holds nothing of its creator's: until then its
 * inherited mappings keep the creator's open file descriptions, and so their
 * LOCK_SH, alive, and a last user closing in that window would not see itself
 * as the last one. */
static _Noreturn void keeper_main(const struct keeper_arg *arg, int ready) {
  struct keeper_arg k = *arg; /* on this stack, which release_inherited keeps */
  setsid();                   /* leave the creator's session and process group */
  /* Descriptors first: a creator at its descriptor limit leaves the keeper
   * none to read /proc/self/maps with.  A keeper that cannot let go of
   * every inherited mapping would wait for its own creator's lock for ever
   * (an orphan nobody ends): it fails the create instead. */
  int lo = k.fd < ready ? k.fd : ready, hi = k.fd < ready ? ready : k.fd;
  if (lo > 0)
    close_range(0, (unsigned)lo - 1, 0);
  if (hi > lo + 1)
    close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
  close_range((unsigned)hi + 1, ~0u, 0);
  void (*hook)(void) = atomic_load(&mproc__keeper_gap_hook);
  if (hook != NULL)
    hook();
  if (!release_inherited())
    _exit(1);
  int32_t word = 0; /* "ready" (a pid is never 0: see keeper_launch) */
  while (write(ready, &word, sizeof word) < 0 && errno == EINTR) {
  }
  close(ready);
  while (flock(k.fd, LOCK_EX) != 0) {
    if (errno != EINTR)
      _exit(1);
  }
  if (k.last != NULL)
    k.last(k.fd); /* e.g. a named queue's spill objects */
  struct stat st;
  if (fstat(k.fd, &st) == 0 && st.st_nlink > 0 && path_is(k.path, st.st_dev, st.st_ino))
    unlink(k.path);
  _exit(0);
}

/* The intermediate child: forks the keeper and exits, so the keeper is
 * reparented and never becomes a zombie of the user's process.  Readiness
 * travels from the keeper to the creator directly, through a pipe the
 * creator made, and never through the intermediate's exit status: a program
 * that ignores SIGCHLD has its children reaped by the kernel, status and
 * all, and must still be able to create a named object.  The intermediate
 * still lives until the keeper has closed what it inherited (end of file on
 * a pipe of its own, whose write end only the keeper holds), so that it
 * does not vanish, reaped by the kernel, before the creator has opened its
 * pidfd. */
void (*_Atomic mproc__keeper_test_hook)(void);
void (*_Atomic mproc__keeper_gap_hook)(void);

static int keeper_launch(void *arg) {
  const struct keeper_arg *k = arg;
  void (*hook)(void) = atomic_load(&mproc__keeper_test_hook);
  if (hook != NULL)
    hook();
  int q[2];
  if (pipe2(q, O_CLOEXEC) != 0)
    return 1;
  pid_t pid = fork();
  if (pid == 0)
    keeper_main(k, k->ready);
  /* The keeper's pid, first (it may come after the keeper's word): once
   * this process has exited, the creator watches the keeper itself. */
  int32_t word = (int32_t)pid;
  while (pid > 0 && write(k->ready, &word, sizeof word) < 0 && errno == EINTR) {
  }
  close(q[1]);
  char b;
  while (read(q[0], &b, 1) < 0 && errno == EINTR) {
  }
  close(q[0]);
  return pid > 0 ? 0 : 1;
}

/* Kills the keeper `pid`, found stopped before its word.  It is not our
 * child (it was reparented when the intermediate exited), so its pid is
 * pinned with a pidfd and checked again through it: still stopped, and the
 * leader of a session of its own as the keeper is.  Only a keeper that died
 * meanwhile could have left its pid to another process, and then the pipe
 * says so (end of file) and nothing is killed. */
static void kill_stopped_keeper(pid_t pid, int ready) {
  int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec, always */
  if (fd < 0)
    return;
  struct mproc__pstat ps;
  if (mproc__poll1(ready, POLLIN, 0) == MPROC_ETIMEDOUT && getsid(pid) == pid &&
      mproc__proc_stat(NULL, pid, &ps) == 0 && ps.state == 'T')
    mproc__pidfd_kill(fd, SIGKILL);
  close(fd);
}

/* Waits for the keeper's word on `ready`: 0 once it is ready, else
 * MPROC_ECHILDFAILED (it or the intermediate failed, or one of them is
 * stopped: killed then) or -errno.  Words are int32_t, written whole (a
 * pipe's writes of up to PIPE_BUF bytes are atomic): the intermediate's
 * (the keeper's pid, > 0) and the keeper's own (0, "ready"), in either
 * order.  Until the pid is known, a stopped intermediate is looked for;
 * after, a stopped keeper: stopped after the intermediate had exited, it
 * would otherwise be noticed only at the deadline. */
static int await_keeper(int ready, pid_t intermediate) {
  pid_t keeper = 0;
  int64_t deadline = mproc__deadline(READY_MS);
  for (;;) {
    pid_t peer = keeper > 0 ? keeper : intermediate;
    int r = mproc__poll_peer(ready, POLLIN, deadline, peer);
    if (r == 0 && keeper > 0)
      kill_stopped_keeper(keeper, ready);
    if (r == 0 && mproc__poll1(ready, POLLIN, 0) > 0)
      r = POLLIN; /* it answered just as it was seen stopped */
    if (r <= 0)
      return r < 0 ? r : MPROC_ECHILDFAILED;
    int32_t word;
    ssize_t n;
    while ((n = read(ready, &word, sizeof word)) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof word)
      return n < 0 ? mproc__neg_errno() : MPROC_ECHILDFAILED;
    if (word == 0)
      return 0;
    keeper = (pid_t)word;
  }
}

int mproc__keeper_start(int fd, const char *name, mproc__keeper_fn last) {
  struct keeper_arg k = {.last = last};
  snprintf(k.path, sizeof k.path, "%s%s", SHM_DIR, name);
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  /* Reopening gives the keeper a lock of its own (flock locks are per open
   * file description: an inherited fd would share the creator's). */
  k.fd = open(self, O_RDONLY | O_CLOEXEC);
  if (k.fd < 0)
    return mproc__neg_errno();
  k.fd = mproc__fd_own(k.fd);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    int e = mproc__neg_errno();
    mproc__close(k.fd);
    return e;
  }
  p[0] = mproc__fd_own(p[0]);
  p[1] = mproc__fd_own(p[1]);
  k.ready = p[1];
  int keep[2] = {k.fd, k.ready};
  struct mproc__spawn_opts o = {
      .fn = keeper_launch, .arg = &k, .keep_fds = keep, .nkeep = 2, .flags = MPROC__SPAWN_INTERNAL};
  pid_t pid;
  int pidfd;
  int r = mproc__spawn(&o, &pid, &pidfd);
  mproc__close(p[1]);
  if (r == 0) {
    r = await_keeper(p[0], pid);
    /* The intermediate only forks and exits.  Its status does not matter
     * (the word said it all), and it may be gone already (-ECHILD when the
     * program ignores SIGCHLD).  One that is stopped is killed at once. */
    if (mproc__poll_peer(pidfd, POLLIN, mproc__deadline(READY_MS), pid) <= 0 ||
        mproc__reap(pidfd, NULL, mproc__deadline(READY_MS)) == MPROC_ETIMEDOUT) {
      mproc__pidfd_kill(pidfd, SIGKILL);
      mproc__reap_killed(pidfd, NULL, mproc__deadline(MPROC__KILL_REAP_MS));
    } else {
      mproc__close(pidfd);
    }
  }
  mproc__close(p[0]);
  mproc__close(k.fd);
  return r;
}

int mproc__keeper_link(int fd, const char *name, mproc__keeper_fn last) {
  int r = mproc__keeper_start(fd, name, last);
  if (r != 0)
    return r;
  char self[64], path[288];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  snprintf(path, sizeof path, "%s%s", SHM_DIR, name);
  /* Fails with EEXIST if the name is taken: an existing name is never
   * reused.  The keeper started for it then finds the name is not this
   * object's and leaves it alone. */
  if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0)
    return mproc__neg_errno();
  return 0;
}
