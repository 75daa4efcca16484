/* Process objects (src/process.c, src/tree.c, src/wait.c), under the start
 * method MPROC_START_METHOD names: tests/CMakeLists.txt runs this suite once
 * per method (fork, spawn, forkserver). */
#include "fault-helpers.h"
#include "harness.h"
#include "internal.h"
#include "start.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define LONG_MS mproc_test_scaled_ms(30000)

/* The start method this run of the suite uses. */
static int method(void) { return mproc__start_method_default(); }

/* A pipe whose ends children use: under spawn and forkserver a child
 * inherits only descriptors that are not close-on-exec (as after any exec),
 * so descriptors meant for a child are made inheritable, as a program using
 * those methods must do. */
static int child_pipe(int fd[2]) { return pipe2(fd, 0); }

/* Descriptors and children of the test process, without the forkserver
 * (a helper of the program that lives across starts, not a leak). */
static int fds_now(void) {
  mproc_forkserver_stop();
  return mproc_test_count_fds();
}

static int children_now(void) {
  mproc_forkserver_stop();
  return mproc_test_count_children();
}

/* ---- child functions ---------------------------------------------------- */

static int ret_int(const void *arg, size_t len) {
  return len == sizeof(int) ? *(const int *)arg : 200;
}

static int call_exit(const void *arg, size_t len) {
  (void)len;
  exit(*(const int *)arg);
}

static int call_abort(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  abort();
}

static int sleep_forever(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  for (;;)
    pause();
  return 0;
}

static int return_zero(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  return 0;
}

/* Reads one byte from the fd given as argument, then exits with it. */
static int read_byte(const void *arg, size_t len) {
  (void)len;
  unsigned char c = 0;
  while (read(*(const int *)arg, &c, 1) < 0 && errno == EINTR) {
  }
  return c;
}

static void write_all(int fd, const void *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      _exit(120);
    buf = (const char *)buf + n;
    len -= (size_t)n;
  }
}

/* Reads exactly len bytes (tests), with a deadline. */
static void read_all(int fd, void *buf, size_t len) {
  int64_t deadline = mproc__deadline(LONG_MS);
  while (len > 0) {
    ck_assert_int_gt(mproc__poll1(fd, POLLIN, deadline), 0);
    ssize_t n = read(fd, buf, len);
    ck_assert_int_gt(n, 0);
    buf = (char *)buf + n;
    len -= (size_t)n;
  }
}

static mproc_process *started(mproc_process_fn fn, const void *arg, size_t len,
                              const mproc_process_options *o) {
  mproc_process *p = NULL;
  mproc_assert_ok(mproc_process_new(&p, fn, arg, len, o));
  mproc_assert_ok(mproc_process_start(p));
  return p;
}

static int run_to_end(mproc_process_fn fn, const void *arg, size_t len) {
  mproc_process *p = started(fn, arg, len, NULL);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code = -1000;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  mproc_process_free(p);
  return code;
}

static int pidfd_of(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* Whether the process behind a pidfd (any process, not only a child) has
 * exited within ms: a pidfd polls readable at exit. */
static bool exits_within(int pidfd, int64_t ms) {
  return mproc__poll1(pidfd, POLLIN, mproc__deadline(ms)) > 0;
}

/* ---- exit codes and states ----------------------------------------------- */

START_TEST(test_exit_codes) {
  int v = 3;
  ck_assert_int_eq(run_to_end(ret_int, &v, sizeof v), 3);
  v = 0;
  ck_assert_int_eq(run_to_end(ret_int, &v, sizeof v), 0);
  v = 255;
  ck_assert_int_eq(run_to_end(ret_int, &v, sizeof v), 255);
  v = 7;
  ck_assert_int_eq(run_to_end(call_exit, &v, sizeof v), 7);
  ck_assert_int_eq(run_to_end(call_abort, NULL, 0), -SIGABRT);

  mproc_process *p = started(sleep_forever, NULL, 0, NULL);
  ck_assert_int_eq(mproc_process_is_alive(p), 1);
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, -SIGKILL);
  ck_assert_int_eq(mproc_process_is_alive(p), 0);
  mproc_process_free(p);

  p = started(sleep_forever, NULL, 0, NULL);
  mproc_assert_ok(mproc_process_terminate(p, 0));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, -SIGTERM);
  mproc_process_free(p);
}
END_TEST

START_TEST(test_states) {
  mproc_process *p;
  int code;
  mproc_assert_ok(mproc_process_new(&p, sleep_forever, NULL, 0, NULL));
  /* Not started: Python raises or answers None/False. */
  mproc_assert_err(mproc_process_join(p, 0), MPROC_ESTATE);
  mproc_assert_err(mproc_process_exitcode(p, &code), MPROC_ESTATE);
  mproc_assert_err(mproc_process_pid(p), MPROC_ESTATE);
  mproc_assert_err(mproc_process_sentinel(p), MPROC_ESTATE);
  mproc_assert_err(mproc_process_terminate(p, 0), MPROC_ESTATE);
  mproc_assert_err(mproc_process_kill(p, MPROC_SIGNAL_TREE), MPROC_ESTATE);
  ck_assert_int_eq(mproc_process_is_alive(p), 0);

  mproc_assert_ok(mproc_process_start(p));
  mproc_assert_err(mproc_process_start(p), MPROC_ESTATE);
  ck_assert_int_gt(mproc_process_pid(p), 0);
  ck_assert_int_ge(mproc_process_sentinel(p), 0);
  /* Running: exitcode is Python's None. */
  mproc_assert_err(mproc_process_exitcode(p, &code), MPROC_ESTATE);
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  /* After exit: signals are a no-op success (the pid may be recycled; the
   * pidfd never reaches another process), join returns at once. */
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_terminate(p, 0));
  mproc_assert_ok(mproc_process_terminate(p, MPROC_SIGNAL_TREE));
  mproc_assert_ok(mproc_process_join(p, 0));
  mproc_assert_err(mproc_process_start(p), MPROC_ESTATE);
  /* The sentinel stays valid and readable after the reap. */
  ck_assert_int_gt(mproc__poll1(mproc_process_sentinel(p), POLLIN, 0), 0);
  mproc_process_free(p);
}
END_TEST

START_TEST(test_bad_arguments) {
  mproc_process *p = NULL;
  int code, v = 1;
  mproc_process_options o = {0};
  mproc_assert_err(mproc_process_new(NULL, return_zero, NULL, 0, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_process_new(&p, NULL, NULL, 0, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_process_new(&p, return_zero, NULL, 4, NULL), MPROC_EINVAL);
  o.flags = 1u << 7;
  mproc_assert_err(mproc_process_new(&p, return_zero, &v, sizeof v, &o), MPROC_EINVAL);
  o.flags = 0;
  o.exit_wait_ms = -2;
  mproc_assert_err(mproc_process_new(&p, return_zero, NULL, 0, &o), MPROC_EINVAL);
  o.exit_wait_ms = 0;
  o.grace_ms = -1;
  mproc_assert_err(mproc_process_new(&p, return_zero, NULL, 0, &o), MPROC_EINVAL);
  /* A size no allocation can hold (never read: checked first). */
  mproc_assert_err(mproc_process_new(&p, return_zero, &v, SIZE_MAX, NULL), MPROC_ENOMEM);
  ck_assert_ptr_null(p);

  mproc_assert_err(mproc_process_start(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_process_join(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_process_is_alive(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_process_pid(NULL), MPROC_EINVAL);
  ck_assert_ptr_null(mproc_process_name(NULL));
  mproc_assert_err(mproc_process_exitcode(NULL, &code), MPROC_EINVAL);
  mproc_assert_err(mproc_process_terminate(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_process_kill(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_process_sentinel(NULL), MPROC_EINVAL);
  mproc_process_free(NULL);
  mproc_assert_err(mproc_active_children(NULL, 3), MPROC_EINVAL);

  p = started(return_zero, NULL, 0, NULL);
  mproc_assert_err(mproc_process_join(p, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_process_exitcode(p, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_process_terminate(p, 1u << 5), MPROC_EINVAL);
  mproc_assert_err(mproc_process_kill(p, ~0u), MPROC_EINVAL);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  mproc_process_free(p);
}
END_TEST

START_TEST(test_join_deadline) {
  mproc_process *p = started(sleep_forever, NULL, 0, NULL);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_process_join(p, 200), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 200);
  mproc_assert_err(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
  ck_assert_int_eq(mproc_process_is_alive(p), 1);
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_join(p, -1));
  mproc_process_free(p);
}
END_TEST

START_TEST(test_many_cycles) {
  int fds = fds_now();
  for (int i = 0; i < 1000; i++) {
    int v = i & 0x7f;
    mproc_process *p = started(ret_int, &v, sizeof v, NULL);
    mproc_assert_ok(mproc_process_join(p, LONG_MS));
    int code;
    mproc_assert_ok(mproc_process_exitcode(p, &code));
    ck_assert_int_eq(code, v);
    mproc_process_free(p);
    if (i % 250 == 0) {
      ck_assert_int_eq(fds_now(), fds);
      ck_assert_int_eq(children_now(), 0);
    }
  }
  ck_assert_int_eq(fds_now(), fds);
  ck_assert_int_eq(children_now(), 0);
}
END_TEST

/* ---- arguments, names, identity -------------------------------------------- */

static int check_hello(const void *arg, size_t len) {
  if ((uintptr_t)arg % _Alignof(max_align_t) != 0)
    return 2; /* the copy must be usable as any type */
  return len == 6 && memcmp(arg, "hello", 6) == 0 ? 0 : 1;
}

static int check_identity(const void *arg, size_t len) {
  (void)len;
  if (strcmp(mproc_current_process_name(), "worker-x") != 0)
    return 1;
  if (mproc_parent_pid() != getppid() || mproc_parent_pid() != *(const pid_t *)arg)
    return 2;
  return 0;
}

/* In a child named "Process-N", the objects it creates are "Process-N:1",
 * "Process-N:2"..., as in Python. */
static int check_nested_names(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  char want[64];
  snprintf(want, sizeof want, "%s:1", mproc_current_process_name());
  mproc_process *a, *b;
  if (mproc_process_new(&a, return_zero, NULL, 0, NULL) != 0)
    return 1;
  if (mproc_process_new(&b, return_zero, NULL, 0, NULL) != 0)
    return 2;
  int r = strcmp(mproc_process_name(a), want) == 0 ? 0 : 3;
  want[strlen(want) - 1] = '2';
  if (r == 0 && strcmp(mproc_process_name(b), want) != 0)
    r = 4;
  mproc_process_free(a);
  mproc_process_free(b);
  return r;
}

/* Identities grow by ":N" per level of nesting, as in Python, while they
 * fit in 47 bytes; a child whose identity would not fit is numbered by its
 * creator's count alone ("Process-1").  Each level checks the name of its
 * first child and starts it, down to the first level where that happens. */
static int nest_until_flat(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  const char *own = mproc_current_process_name() + strlen("Process-");
  bool fits = strlen(own) + 2 < 48;
  char want[80];
  if (fits)
    snprintf(want, sizeof want, "Process-%s:1", own);
  else
    snprintf(want, sizeof want, "Process-1");
  mproc_process *p;
  if (mproc_process_new(&p, nest_until_flat, NULL, 0, NULL) != 0)
    return 1;
  int r = strcmp(mproc_process_name(p), want) == 0 ? 0 : 2;
  if (r == 0 && fits) {
    int code = 3;
    if (mproc_process_start(p) != 0 || mproc_process_join(p, LONG_MS) != 0 ||
        mproc_process_exitcode(p, &code) != 0)
      code = 4;
    r = code;
  }
  mproc_process_free(p);
  return r;
}

START_TEST(test_args_and_names) {
  char buf[6] = "hello";
  mproc_process *p;
  mproc_assert_ok(mproc_process_new(&p, check_hello, buf, sizeof buf, NULL));
  memcpy(buf, "xxxxx", 6); /* the object holds its own copy */
  mproc_assert_ok(mproc_process_start(p));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);

  /* Default names count up from the last one, as in Python. */
  mproc_process *q;
  mproc_assert_ok(mproc_process_new(&q, return_zero, NULL, 0, NULL));
  int n1 = -1, n2 = -1;
  ck_assert_int_eq(sscanf(mproc_process_name(p), "Process-%d", &n1), 1);
  ck_assert_int_eq(sscanf(mproc_process_name(q), "Process-%d", &n2), 1);
  ck_assert_int_eq(n2, n1 + 1);
  mproc_process_free(q);
  mproc_process_free(p);

  char name[16] = "worker-x";
  mproc_process_options o = {.name = name};
  pid_t self = getpid();
  mproc_assert_ok(mproc_process_new(&p, check_identity, &self, sizeof self, &o));
  name[0] = 'W'; /* copied */
  ck_assert_str_eq(mproc_process_name(p), "worker-x");
  mproc_assert_ok(mproc_process_start(p));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);
  mproc_process_free(p);

  mproc_assert_err(mproc_parent_pid(), MPROC_ESTATE);
  ck_assert_str_eq(mproc_current_process_name(), "MainProcess");
  ck_assert_int_eq(run_to_end(check_nested_names, NULL, 0), 0);
  ck_assert_int_eq(run_to_end(nest_until_flat, NULL, 0), 0);
}
END_TEST

/* In a child, the parent's objects are copies it must not act on. */
static int use_foreign(const void *arg, size_t len) {
  (void)len;
  mproc_process *other;
  memcpy(&other, arg, sizeof other);
  int code;
  if (mproc_process_join(other, 0) != MPROC_ESTATE || mproc_process_start(other) != MPROC_ESTATE ||
      mproc_process_kill(other, 0) != MPROC_ESTATE ||
      mproc_process_is_alive(other) != MPROC_ESTATE ||
      mproc_process_exitcode(other, &code) != MPROC_ESTATE || mproc_active_children(NULL, 0) != 0)
    return 1;
  mproc_process_free(other); /* only releases the copy's memory */
  /* exit(), not return: the library's atexit handler runs here and must
   * leave the parent's children alone. */
  exit(0);
}

/* A spawned child has no copy of its parent's objects at all: nothing of
 * them is active there, and its exit leaves the parent's children alone. */
static int no_foreign(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  if (mproc_active_children(NULL, 0) != 0 || mproc_parent_pid() != getppid())
    return 1;
  exit(0);
}

START_TEST(test_foreign_objects) {
  mproc_process *other = started(sleep_forever, NULL, 0, NULL);
  if (method() == MPROC_START_FORK)
    ck_assert_int_eq(run_to_end(use_foreign, &other, sizeof other), 0);
  else
    ck_assert_int_eq(run_to_end(no_foreign, NULL, 0), 0);
  ck_assert_int_eq(mproc_process_is_alive(other), 1);
  mproc_assert_ok(mproc_process_kill(other, 0));
  mproc_process_free(other);
}
END_TEST

/* ---- the child's environment -------------------------------------------- */

static void on_usr2(int sig) { (void)sig; }

static int check_dispositions(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  struct sigaction sa;
  if (sigaction(SIGUSR1, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
    return 1;
  if (sigaction(SIGUSR2, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
    return 2;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
    return 3;
  return 0;
}

START_TEST(test_default_dispositions) {
  signal(SIGUSR1, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_usr2;
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR2, &sa, NULL), 0);
  ck_assert_int_eq(run_to_end(check_dispositions, NULL, 0), 0);
}
END_TEST

/* Exit 0 if the fd given is closed, 1 if open. */
static int fd_closed(const void *arg, size_t len) {
  (void)len;
  return fcntl(*(const int *)arg, F_GETFD) < 0 && errno == EBADF ? 0 : 1;
}

START_TEST(test_library_fds_not_inherited) {
  mproc_process *a = started(sleep_forever, NULL, 0, NULL);
  int s = mproc_process_sentinel(a);
  /* Another process's pidfd is closed in the child... */
  ck_assert_int_eq(run_to_end(fd_closed, &s, sizeof s), 0);
  /* ...while the program's own inheritable fds are inherited under every
   * method, and its close-on-exec ones only under fork (Python's fork; the
   * other methods exec). */
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  ck_assert_int_eq(run_to_end(fd_closed, &pfd[0], sizeof pfd[0]),
                   method() == MPROC_START_FORK ? 1 : 0);
  close(pfd[0]);
  close(pfd[1]);
  ck_assert_int_eq(child_pipe(pfd), 0);
  ck_assert_int_eq(run_to_end(fd_closed, &pfd[1], sizeof pfd[1]), 1);
  close(pfd[0]);
  close(pfd[1]);
  mproc_assert_ok(mproc_process_kill(a, 0));
  mproc_process_free(a);
}
END_TEST

/* ---- objects made before start are usable in the child ------------------ */

struct made_before {
  mproc_conn *child_end; /* Python: parent, child = Pipe() */
  mproc_shm *anon;       /* an anonymous block */
  mproc_shm *named;      /* a named block, closed by the child */
};

/* Python's canonical example: f(conn) sends, then closes its end; the
 * blocks' fds are open and their bytes shared. */
static int use_objects(const void *arg, size_t len) {
  (void)len;
  const struct made_before *m = arg;
  if (mproc_conn_send(m->child_end, "[42, None, 'hello']", 19, 10000) != 0)
    return 1;
  if (mproc_conn_free(m->child_end) != 0)
    return 2;
  if (fcntl(mproc_shm_fd(m->anon), F_GETFD) < 0 || fcntl(mproc_shm_fd(m->named), F_GETFD) < 0)
    return 3;
  memcpy(mproc_shm_addr(m->anon), "anon", 4);
  memcpy(mproc_shm_addr(m->named), "named", 5);
  /* The parent still has the named block: closing here must not remove it. */
  return mproc_shm_free(m->named) == 0 && mproc_shm_free(m->anon) == 0 ? 0 : 4;
}

START_TEST(test_objects_made_before_start) {
  struct made_before m;
  mproc_conn *parent_end;
  mproc_assert_ok(mproc_pipe(&parent_end, &m.child_end, NULL));
  mproc_assert_ok(mproc_shm_new(&m.anon, 64));
  mproc_assert_ok(mproc_shm_create(&m.named, NULL, 64));
  mproc_process *p = started(use_objects, &m, sizeof m, NULL);
  char buf[64];
  size_t n = 0;
  mproc_assert_ok(mproc_conn_recv(parent_end, buf, sizeof buf, &n, LONG_MS));
  ck_assert_uint_eq(n, 19);
  ck_assert_int_eq(memcmp(buf, "[42, None, 'hello']", 19), 0);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code = -1;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);
  mproc_process_free(p);
  ck_assert_int_eq(memcmp(mproc_shm_addr(m.anon), "anon", 4), 0);
  ck_assert_int_eq(memcmp(mproc_shm_addr(m.named), "named", 5), 0);
  mproc_shm *again;
  mproc_assert_ok(mproc_shm_attach(&again, mproc_shm_name(m.named)));
  mproc_assert_ok(mproc_shm_free(again));
  mproc_assert_ok(mproc_conn_free(m.child_end));
  mproc_assert_ok(mproc_conn_free(parent_end));
  mproc_assert_ok(mproc_shm_free(m.anon));
  mproc_assert_ok(mproc_shm_free(m.named));
}
END_TEST

/* ---- MPROC_PROCESS_NEW_GROUP: the group dies with the child -------------- */

/* Forks a plain helper (no library call), reports its pid on the fd given,
 * then returns (arg[1] == 0) or waits to be killed. */
static int leave_helper(const void *arg, size_t len) {
  (void)len;
  const int *a = arg;
  pid_t g = fork();
  if (g == 0) {
    for (;;)
      pause();
  }
  if (g < 0 || write(a[0], &g, sizeof g) != (ssize_t)sizeof g)
    return 1;
  while (a[1] != 0)
    pause();
  return 0;
}

static int helper_pidfd(int fd) {
  pid_t g;
  ck_assert_int_gt(mproc__poll1(fd, POLLIN, mproc__deadline(LONG_MS)), 0);
  ck_assert_int_eq(read(fd, &g, sizeof g), (ssize_t)sizeof g);
  int pfd = pidfd_of(g);
  ck_assert_int_ge(pfd, 0);
  return pfd;
}

/* The helper must be gone within the deadline (killed here if not). */
static void assert_helper_dies(int pfd) {
  int r = mproc__poll1(pfd, POLLIN, mproc__deadline(LONG_MS));
  if (r <= 0)
    mproc__pidfd_kill(pfd, SIGKILL);
  ck_assert_int_gt(r, 0);
  close(pfd);
}

/* The program: starts the child in its own group, then waits to be killed. */
static int program_with_group_child(void *arg) {
  mproc_process *p;
  mproc_process_options o = {.flags = MPROC_PROCESS_NEW_GROUP};
  int a[2] = {*(int *)arg, 1};
  if (mproc_process_new(&p, leave_helper, a, sizeof a, &o) != 0 || mproc_process_start(p) != 0)
    return 1;
  for (;;)
    pause();
}

START_TEST(test_new_group_dies_with_child) {
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  /* The child returns: its group (the helper) dies with it. */
  mproc_process_options o = {.flags = MPROC_PROCESS_NEW_GROUP};
  int a[2] = {pfd[1], 0};
  mproc_process *p = started(leave_helper, a, sizeof a, &o);
  int helper = helper_pidfd(pfd[0]);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code = -1;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);
  assert_helper_dies(helper);
  mproc_process_free(p);

  /* The program is SIGKILLed: the child dies by its parent-death signal,
   * and its group must follow with no code of the program left to run. */
  struct mproc__spawn_opts so = {.fn = program_with_group_child, .arg = &pfd[1]};
  pid_t prog;
  int prog_fd;
  mproc_assert_ok(mproc__spawn(&so, &prog, &prog_fd));
  helper = helper_pidfd(pfd[0]);
  mproc_assert_ok(mproc__pidfd_kill(prog_fd, SIGKILL));
  mproc_assert_ok(mproc__reap(prog_fd, &code, mproc__deadline(LONG_MS)));
  ck_assert_int_eq(code, -SIGKILL);
  assert_helper_dies(helper);
  mproc_assert_ok(mproc__close(prog_fd));
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* Without the flag the child shares the program's group, as in Python. */
static int report_pgid(const void *arg, size_t len) {
  (void)arg, (void)len;
  return getpgid(0) == getpid() ? 1 : 0;
}

START_TEST(test_group_flag) {
  ck_assert_int_eq(run_to_end(report_pgid, NULL, 0), 0);
  mproc_process_options o = {.flags = MPROC_PROCESS_NEW_GROUP};
  mproc_process *p = started(report_pgid, NULL, 0, &o);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code = -1;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 1);
  mproc_process_free(p);
}
END_TEST

/* Writes through a FILE of its own without flushing: the library must
 * flush it. */
static int print_child(const void *arg, size_t len) {
  (void)len;
  FILE *f = fdopen(dup(*(const int *)arg), "w");
  if (f == NULL)
    return 1;
  setvbuf(f, NULL, _IOFBF, 4096);
  fputs("child;", f);
  return 0;
}

/* An intermediate process: buffered output before start must be written
 * once, by the parent, and the child's own output must not be lost. */
static int print_around_start(const void *arg, size_t len) {
  (void)len;
  FILE *f = fdopen(*(const int *)arg, "w");
  if (f == NULL)
    return 1;
  setvbuf(f, NULL, _IOFBF, 4096);
  fputs("before;", f);
  mproc_process *p;
  if (mproc_process_new(&p, print_child, arg, sizeof(int), NULL) != 0 ||
      mproc_process_start(p) != 0 || mproc_process_join(p, -1) != 0)
    return 2;
  mproc_process_free(p);
  fputs("after;", f);
  fclose(f);
  return 0;
}

START_TEST(test_output_not_duplicated) {
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_process *p = started(print_around_start, &pfd[1], sizeof pfd[1], NULL);
  close(pfd[1]);
  char buf[256];
  size_t got = 0;
  int64_t deadline = mproc__deadline(LONG_MS);
  for (;;) {
    ck_assert_int_gt(mproc__poll1(pfd[0], POLLIN, deadline), 0);
    ssize_t n = read(pfd[0], buf + got, sizeof buf - 1 - got);
    ck_assert_int_ge(n, 0);
    if (n == 0)
      break;
    got += (size_t)n;
  }
  buf[got] = '\0';
  ck_assert_str_eq(buf, "before;child;after;");
  close(pfd[0]);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);
  mproc_process_free(p);
}
END_TEST

/* ---- parent death, trees ----------------------------------------------- */

/* Starts three sleeping children, reports their pids, then sleeps. */
static int start_three(const void *arg, size_t len) {
  (void)len;
  int fd = *(const int *)arg;
  for (int i = 0; i < 3; i++) {
    mproc_process *c;
    if (mproc_process_new(&c, sleep_forever, NULL, 0, NULL) != 0 || mproc_process_start(c) != 0)
      return 1;
    pid_t pid = mproc_process_pid(c);
    write_all(fd, &pid, sizeof pid);
  }
  return sleep_forever(NULL, 0);
}

START_TEST(test_parent_killed_children_die) {
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_process *p = started(start_three, &pfd[1], sizeof pfd[1], NULL);
  pid_t pids[3];
  read_all(pfd[0], pids, sizeof pids);
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = pidfd_of(pids[i]);
    ck_assert_int_ge(fds[i], 0);
  }
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  for (int i = 0; i < 3; i++) {
    ck_assert_msg(exits_within(fds[i], mproc_test_scaled_ms(1000)),
                  "grandchild %d outlived its parent", (int)pids[i]);
    close(fds[i]);
  }
  close(pfd[0]);
  close(pfd[1]);
  mproc_process_free(p);
}
END_TEST

/* Forks (plainly: no parent-death signal) a grandchild, which forks a great-
 * grandchild; both report their pids and sleep.  Only a tree signal reaches
 * them when their ancestor dies. */
static int plain_fork_tree(const void *arg, size_t len) {
  (void)len;
  int fd = *(const int *)arg;
  for (int depth = 0; depth < 2; depth++) {
    pid_t pid = fork();
    if (pid < 0)
      return 1;
    if (pid > 0)
      break;
    pid_t self = getpid();
    write_all(fd, &self, sizeof self);
  }
  for (;;)
    pause();
  return 0;
}

static void tree_case(unsigned flags, int sig, bool expect_dead) {
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_process *p = started(plain_fork_tree, &pfd[1], sizeof pfd[1], NULL);
  pid_t pids[2];
  read_all(pfd[0], pids, sizeof pids);
  int fds[2];
  for (int i = 0; i < 2; i++) {
    fds[i] = pidfd_of(pids[i]);
    ck_assert_int_ge(fds[i], 0);
  }
  if (sig == SIGTERM)
    mproc_assert_ok(mproc_process_terminate(p, flags));
  else
    mproc_assert_ok(mproc_process_kill(p, flags));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, -sig);
  for (int i = 0; i < 2; i++) {
    if (expect_dead) {
      ck_assert_msg(exits_within(fds[i], LONG_MS), "descendant %d survived", (int)pids[i]);
    } else {
      ck_assert_msg(!exits_within(fds[i], 0), "descendant %d died without a tree signal",
                    (int)pids[i]);
      mproc_assert_ok(mproc__pidfd_kill(fds[i], SIGKILL));
      ck_assert(exits_within(fds[i], LONG_MS));
    }
    close(fds[i]);
  }
  close(pfd[0]);
  close(pfd[1]);
  mproc_process_free(p);
}

START_TEST(test_tree_terminate) { tree_case(MPROC_SIGNAL_TREE, SIGTERM, true); }
END_TEST

START_TEST(test_tree_kill) { tree_case(MPROC_SIGNAL_TREE, SIGKILL, true); }
END_TEST

START_TEST(test_no_tree_spares_descendants) { tree_case(0, SIGTERM, false); }
END_TEST

/* Forks grandchildren as fast as it can (each reports its pid and sleeps):
 * a tree signal must catch a tree that grows while it is walked. */
static int fork_storm(const void *arg, size_t len) {
  (void)len;
  int fd = *(const int *)arg;
  for (int i = 0; i < 300; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      pid_t self = getpid();
      write_all(fd, &self, sizeof self);
      for (;;)
        pause();
    }
  }
  for (;;)
    pause();
  return 0;
}

START_TEST(test_tree_kill_while_forking) {
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_process *p = started(fork_storm, &pfd[1], sizeof pfd[1], NULL);
  close(pfd[1]); /* from now on only the tree holds the write end */
  pid_t pids[20];
  read_all(pfd[0], pids, sizeof pids);
  mproc_assert_ok(mproc_process_kill(p, MPROC_SIGNAL_TREE));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  /* End of file on the pipe: every process of the tree has exited. */
  int64_t deadline = mproc__deadline(LONG_MS);
  for (;;) {
    ck_assert_msg(mproc__poll1(pfd[0], POLLIN, deadline) > 0, "part of the tree survived");
    char buf[512];
    ssize_t n = read(pfd[0], buf, sizeof buf);
    ck_assert_int_ge(n, 0);
    if (n == 0)
      break;
  }
  close(pfd[0]);
  mproc_process_free(p);
}
END_TEST

/* Out of fds, a tree signal cannot walk the tree: it must say so (and still
 * signal the child itself) rather than pretend the tree was covered. */
START_TEST(test_tree_out_of_fds) {
  for (int spare = 0; spare < 2; spare++) {
    int pfd[2];
    ck_assert_int_eq(child_pipe(pfd), 0);
    mproc_process *p = started(plain_fork_tree, &pfd[1], sizeof pfd[1], NULL);
    pid_t pids[2];
    read_all(pfd[0], pids, sizeof pids);
    int fds[2];
    for (int i = 0; i < 2; i++) {
      fds[i] = pidfd_of(pids[i]);
      ck_assert_int_ge(fds[i], 0);
    }
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int lowest = dup(0);
    ck_assert_int_ge(lowest, 0);
    close(lowest);
    struct rlimit low = {(rlim_t)(lowest + spare), old.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    int r = mproc_process_kill(p, MPROC_SIGNAL_TREE);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    mproc_assert_err(r, -EMFILE);
    mproc_assert_ok(mproc_process_join(p, LONG_MS));
    int code;
    mproc_assert_ok(mproc_process_exitcode(p, &code));
    ck_assert_int_eq(code, -SIGKILL);
    for (int i = 0; i < 2; i++) {
      mproc__pidfd_kill(fds[i], SIGKILL);
      ck_assert(exits_within(fds[i], LONG_MS));
      close(fds[i]);
    }
    close(pfd[0]);
    close(pfd[1]);
    mproc_process_free(p);
  }
}
END_TEST

/* ---- waiting on many ----------------------------------------------------- */

START_TEST(test_wait_many_sentinels) {
  enum { N = 8 };
  int pipes[N][2], sentinels[N], ready[N];
  mproc_process *p[N];
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(child_pipe(pipes[i]), 0);
    p[i] = started(read_byte, &pipes[i][0], sizeof(int), NULL);
    sentinels[i] = mproc_process_sentinel(p[i]);
  }
  mproc_assert_err(mproc_wait(sentinels, N, ready, 50), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_wait(sentinels, N, ready, 0), MPROC_ETIMEDOUT);

  unsigned char c = 5;
  write_all(pipes[5][1], &c, 1);
  ck_assert_int_eq(mproc_wait(sentinels, N, ready, LONG_MS), 1);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(ready[i], i == 5);
  /* Still readable after the reap. */
  mproc_assert_ok(mproc_process_join(p[5], 0));
  ck_assert_int_eq(mproc_wait(sentinels, N, NULL, 0), 1);

  /* Sentinels mixed with ordinary fds. */
  int extra[2];
  ck_assert_int_eq(child_pipe(extra), 0);
  int mixed[3] = {sentinels[0], extra[0], sentinels[1]};
  mproc_assert_err(mproc_wait(mixed, 3, ready, 0), MPROC_ETIMEDOUT);
  write_all(extra[1], &c, 1);
  ck_assert_int_eq(mproc_wait(mixed, 3, ready, LONG_MS), 1);
  ck_assert_int_eq(ready[1], 1);
  close(extra[1]);
  close(extra[0]);

  /* More fds than the on-stack array holds. */
  int many[100], many_ready[100];
  for (int i = 0; i < 100; i++)
    many[i] = sentinels[i % 2 ? 5 : 0];
  ck_assert_int_eq(mproc_wait(many, 100, many_ready, LONG_MS), 50);
  ck_assert_int_eq(many_ready[1], 1);
  ck_assert_int_eq(many_ready[0], 0);

  for (int i = 0; i < N; i++) {
    if (i != 5) {
      c = (unsigned char)i;
      write_all(pipes[i][1], &c, 1);
    }
    mproc_assert_ok(mproc_process_join(p[i], LONG_MS));
    int code;
    mproc_assert_ok(mproc_process_exitcode(p[i], &code));
    ck_assert_int_eq(code, i);
    mproc_process_free(p[i]);
    close(pipes[i][0]);
    close(pipes[i][1]);
  }
}
END_TEST

START_TEST(test_wait_errors) {
  int fd = -1, ready[1];
  mproc_assert_err(mproc_wait(NULL, 1, ready, 0), MPROC_EINVAL);
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_assert_err(mproc_wait(pfd, 0, ready, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_wait(pfd, 1, ready, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_wait(&fd, 1, ready, 0), MPROC_EBADF);
  int closed = pfd[1];
  close(pfd[1]);
  mproc_assert_err(mproc_wait(&closed, 1, ready, LONG_MS), MPROC_EBADF);
  /* The read end of a pipe whose writer closed is ready (end of file). */
  ck_assert_int_eq(mproc_wait(pfd, 1, ready, LONG_MS), 1);
  close(pfd[0]);
}
END_TEST

static void on_alarm(int sig) { (void)sig; }

/* Signals interrupting a wait neither end nor stretch it. */
START_TEST(test_waits_survive_signals) {
  struct sigaction sa = {0};
  sa.sa_handler = on_alarm; /* no SA_RESTART: poll fails with EINTR */
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
  struct itimerval every_20ms = {{0, 20000}, {0, 20000}};
  ck_assert_int_eq(setitimer(ITIMER_REAL, &every_20ms, NULL), 0);

  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  int ready;
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_wait(&pfd[0], 1, &ready, 200), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 200);

  mproc_process *p = started(sleep_forever, NULL, 0, NULL);
  t0 = mproc_now_ms();
  mproc_assert_err(mproc_process_join(p, 200), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 200);
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));

  struct itimerval off = {{0, 0}, {0, 0}};
  ck_assert_int_eq(setitimer(ITIMER_REAL, &off, NULL), 0);
  mproc_process_free(p);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(test_active_children) {
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  mproc_process *a = started(read_byte, &pfd[0], sizeof(int), NULL);
  mproc_process *b = started(read_byte, &pfd[0], sizeof(int), NULL);
  int v = 4;
  mproc_process *quick = started(ret_int, &v, sizeof v, NULL);
  int s = mproc_process_sentinel(quick);
  ck_assert_int_eq(mproc_wait(&s, 1, NULL, LONG_MS), 1);

  mproc_process *out[4] = {NULL};
  ck_assert_int_eq(mproc_active_children(out, 4), 2);
  ck_assert((out[0] == a && out[1] == b) || (out[0] == b && out[1] == a));
  /* The finished child was reaped: its exit code is known without join. */
  int code;
  mproc_assert_ok(mproc_process_exitcode(quick, &code));
  ck_assert_int_eq(code, 4);
  ck_assert_int_eq(children_now(), 2);
  out[0] = NULL;
  ck_assert_int_eq(mproc_active_children(out, 1), 2);
  ck_assert_ptr_nonnull(out[0]);
  ck_assert_int_eq(mproc_active_children(NULL, 0), 2);

  unsigned char c[2] = {1, 1};
  write_all(pfd[1], c, 2);
  mproc_assert_ok(mproc_process_join(a, LONG_MS));
  mproc_assert_ok(mproc_process_join(b, LONG_MS));
  ck_assert_int_eq(mproc_active_children(out, 4), 0);
  mproc_process_free(a);
  mproc_process_free(b);
  mproc_process_free(quick);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* ---- daemons, free and exit ------------------------------------------- */

static int ignore_term(const void *arg, size_t len) {
  (void)len;
  signal(SIGTERM, SIG_IGN);
  char c = 'r';
  write_all(*(const int *)arg, &c, 1);
  for (;;)
    pause();
  return 0;
}

/* Sleeps a little, then reports through the pipe and returns 0. */
static int finish_soon(const void *arg, size_t len) {
  (void)len;
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  char c = 'n';
  write_all(*(const int *)arg, &c, 1);
  return 0;
}

START_TEST(test_free_running) {
  /* A daemon is terminated and reaped by free. */
  mproc_process_options daemon = {.flags = MPROC_PROCESS_DAEMON};
  mproc_process *p = started(sleep_forever, NULL, 0, &daemon);
  int fd = pidfd_of(mproc_process_pid(p));
  ck_assert_int_ge(fd, 0);
  mproc_process_free(p);
  ck_assert(exits_within(fd, 0));
  close(fd);

  /* One that ignores SIGTERM is killed after its grace period. */
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  daemon.grace_ms = 100;
  p = started(ignore_term, &pfd[1], sizeof(int), &daemon);
  char c;
  read_all(pfd[0], &c, 1);
  int64_t t0 = mproc_now_ms();
  mproc_process_free(p);
  ck_assert_int_ge(mproc_now_ms() - t0, 100);

  /* A non-daemon is given exit_wait_ms to finish on its own... */
  p = started(finish_soon, &pfd[1], sizeof(int), NULL);
  mproc_process_free(p);
  ck_assert_int_eq(mproc__poll1(pfd[0], POLLIN, 0), POLLIN);
  read_all(pfd[0], &c, 1);
  ck_assert_int_eq(c, 'n');

  /* Huge budgets are just long ones (no overflow), and a child that ends
   * earlier ends the wait. */
  mproc_process_options huge = {.exit_wait_ms = INT64_MAX, .grace_ms = INT64_MAX};
  p = started(finish_soon, &pfd[1], sizeof(int), &huge);
  mproc_process_free(p);
  read_all(pfd[0], &c, 1);
  huge.flags = MPROC_PROCESS_DAEMON;
  p = started(sleep_forever, NULL, 0, &huge);
  mproc_process_free(p); /* SIGTERM ends it at once */

  /* ...and is then terminated. */
  mproc_process_options bounded = {.exit_wait_ms = 100};
  p = started(sleep_forever, NULL, 0, &bounded);
  t0 = mproc_now_ms();
  mproc_process_free(p);
  ck_assert_int_ge(mproc_now_ms() - t0, 100);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

struct exit_fds {
  int pid_fd;  /* receives the daemon's pid */
  int done_fd; /* receives 'n' from the non-daemon */
};

/* An intermediate process that leaves through exit() with a daemon and a
 * non-daemon child still running. */
static int exit_with_children(const void *arg, size_t len) {
  (void)len;
  const struct exit_fds *f = arg;
  mproc_process_options daemon = {.flags = MPROC_PROCESS_DAEMON};
  mproc_process *d, *n;
  if (mproc_process_new(&d, sleep_forever, NULL, 0, &daemon) != 0 || mproc_process_start(d) != 0)
    return 1;
  if (mproc_process_new(&n, finish_soon, &f->done_fd, sizeof(int), NULL) != 0 ||
      mproc_process_start(n) != 0)
    return 2;
  pid_t pid = mproc_process_pid(d);
  write_all(f->pid_fd, &pid, sizeof pid);
  exit(0);
}

START_TEST(test_exit_stops_children) {
  int a[2], b[2];
  ck_assert_int_eq(child_pipe(a), 0);
  ck_assert_int_eq(child_pipe(b), 0);
  struct exit_fds f = {a[1], b[1]};
  mproc_process *p = started(exit_with_children, &f, sizeof f, NULL);
  pid_t daemon;
  read_all(a[0], &daemon, sizeof daemon);
  int dfd = pidfd_of(daemon); /* may fail if the daemon is already gone */
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, 0);
  /* The non-daemon was waited for: its output is there already. */
  ck_assert_int_eq(mproc__poll1(b[0], POLLIN, 0), POLLIN);
  char c;
  read_all(b[0], &c, 1);
  ck_assert_int_eq(c, 'n');
  if (dfd >= 0) {
    ck_assert(exits_within(dfd, 0));
    close(dfd);
  }
  mproc_process_free(p);
  close(a[0]);
  close(a[1]);
  close(b[0]);
  close(b[1]);
}
END_TEST

/* A program that lets the kernel reap its children (SIGCHLD ignored) loses
 * their exit status: join must still return, and exitcode say so. */
START_TEST(test_reaped_behind_our_back) {
  signal(SIGCHLD, SIG_IGN);
  int pfd[2];
  ck_assert_int_eq(child_pipe(pfd), 0);
  /* The child waits for a byte, so it cannot exit before start has its
   * pidfd. */
  mproc_process *p = started(read_byte, &pfd[0], sizeof(int), NULL);
  unsigned char c = 3;
  write_all(pfd[1], &c, 1);
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  ck_assert_int_eq(mproc_process_is_alive(p), 0);
  int code;
  mproc_assert_err(mproc_process_exitcode(p, &code), MPROC_ECHILD);
  mproc_assert_ok(mproc_process_kill(p, 0));
  mproc_process_free(p);
  signal(SIGCHLD, SIG_DFL);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* ---- resource exhaustion ------------------------------------------------ */

START_TEST(test_out_of_fds) {
  struct rlimit old;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int lowest = dup(0);
  ck_assert_int_ge(lowest, 0);
  close(lowest);
  mproc_process *p;
  mproc_assert_ok(mproc_process_new(&p, return_zero, NULL, 0, NULL));
  struct rlimit low = {(rlim_t)lowest, old.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  int r = mproc_process_start(p);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  mproc_assert_err(r, -EMFILE);
  /* Nothing left behind, and the object is still new. */
  ck_assert_int_eq(mproc_test_count_children(), 0);
  mproc_assert_err(mproc_process_pid(p), MPROC_ESTATE);
  mproc_assert_ok(mproc_process_start(p));
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  mproc_process_free(p);
}
END_TEST

/* As an unprivileged user with no process allowance, start must fail
 * cleanly.  Root ignores RLIMIT_NPROC, hence the uid change. */
static int start_without_nproc(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  if (!become_nobody(true))
    return 1;
  mproc_process *p;
  if (mproc_process_new(&p, return_zero, NULL, 0, NULL) != 0)
    return 3;
  if (mproc_process_start(p) != -EAGAIN)
    return 4;
  if (mproc_process_pid(p) != MPROC_ESTATE || mproc_process_is_alive(p) != 0 ||
      mproc_active_children(NULL, 0) != 0 || mproc_test_count_children() != 0)
    return 5;
  mproc_process_free(p);
  return 0;
}

START_TEST(test_out_of_processes) { ck_assert_int_eq(run_to_end(start_without_nproc, NULL, 0), 0); }
END_TEST

int main(void) {
  Suite *s = suite_create("process");
  TCase *tc = mproc_test_tcase(s, "basics", 60);
  tcase_add_test(tc, test_exit_codes);
  tcase_add_test(tc, test_states);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_join_deadline);
  tcase_add_test(tc, test_many_cycles);
  tcase_add_test(tc, test_args_and_names);
  tcase_add_test(tc, test_foreign_objects);
  tc = mproc_test_tcase(s, "environment", 60);
  tcase_add_test(tc, test_default_dispositions);
  tcase_add_test(tc, test_library_fds_not_inherited);
  if (method() == MPROC_START_FORK) /* fork-only semantics (process.md) */
    tcase_add_test(tc, test_objects_made_before_start);
  tcase_add_test(tc, test_output_not_duplicated);
  tc = mproc_test_tcase(s, "trees", 60);
  tcase_add_test(tc, test_parent_killed_children_die);
  tcase_add_test(tc, test_tree_terminate);
  tcase_add_test(tc, test_tree_kill);
  tcase_add_test(tc, test_no_tree_spares_descendants);
  tcase_add_test(tc, test_tree_kill_while_forking);
  tcase_add_test(tc, test_tree_out_of_fds);
  if (method() == MPROC_START_FORK)
    tcase_add_test(tc, test_new_group_dies_with_child);
  tcase_add_test(tc, test_group_flag);
  tc = mproc_test_tcase(s, "wait", 60);
  tcase_add_test(tc, test_wait_many_sentinels);
  tcase_add_test(tc, test_wait_errors);
  tcase_add_test(tc, test_active_children);
  tcase_add_test(tc, test_waits_survive_signals);
  tc = mproc_test_tcase(s, "lifetime", 60);
  tcase_add_test(tc, test_free_running);
  tcase_add_test(tc, test_exit_stops_children);
  tcase_add_test(tc, test_reaped_behind_our_back);
  tc = mproc_test_tcase(s, "limits", 60);
  tcase_add_test(tc, test_out_of_fds);
  tcase_add_test(tc, test_out_of_processes);
  return mproc_test_run(s);
}
