/* The internal fork core (src/spawn.c, src/fdreg.c). */
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ret_arg(void *arg) { return (int)(intptr_t)arg; }

static int die_by_signal(void *arg) {
  raise((int)(intptr_t)arg);
  return 99;
}

static int sleep_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return 0; /* not reached */
}

/* Exit 0 if fd is open, 1 if closed. */
static int fd_open_status(void *arg) { return fcntl((int)(intptr_t)arg, F_GETFD) >= 0 ? 0 : 1; }

static int run(mproc__child_fn fn, intptr_t arg, const int *keep, size_t nkeep) {
  struct mproc__spawn_opts o = {.fn = fn, .arg = (void *)arg, .keep_fds = keep, .nkeep = nkeep};
  pid_t pid;
  int pidfd, code = -1000;
  mproc_assert_ok(mproc__spawn(&o, &pid, &pidfd));
  ck_assert_int_gt(pid, 0);
  mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(30000)));
  mproc_assert_ok(mproc__close(pidfd));
  return code;
}

START_TEST(test_exit_codes) {
  ck_assert_int_eq(run(ret_arg, 0, NULL, 0), 0);
  ck_assert_int_eq(run(ret_arg, 3, NULL, 0), 3);
  ck_assert_int_eq(run(ret_arg, 255, NULL, 0), 255);
  ck_assert_int_eq(run(die_by_signal, SIGABRT, NULL, 0), -SIGABRT);
  ck_assert_int_eq(run(die_by_signal, SIGSEGV, NULL, 0), -SIGSEGV);
}
END_TEST

static void on_signal(int sig) { (void)sig; }

/* Exit 0 when every signal of the parent's test set is back at SIG_DFL,
 * else the first one that is not. */
static const int handled_set[] = {SIGHUP, SIGUSR1, SIGTERM, 40, 50, 64};

static int check_all_default(void *arg) {
  (void)arg;
  for (size_t i = 0; i < sizeof handled_set / sizeof handled_set[0]; i++) {
    struct sigaction sa;
    if (sigaction(handled_set[i], NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
      return handled_set[i];
  }
  return 0;
}

/* The child resets the signals that are caught or ignored: low, high and
 * real-time ones, with handlers and SIG_IGN alike. */
START_TEST(test_child_resets_caught_and_ignored_signals) {
  struct sigaction sa = {0}, old[6];
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < 6; i++) {
    sa.sa_handler = i % 2 ? SIG_IGN : on_signal;
    ck_assert_int_eq(sigaction(handled_set[i], &sa, &old[i]), 0);
  }
  int code = run(check_all_default, 0, NULL, 0);
  for (size_t i = 0; i < 6; i++)
    ck_assert_int_eq(sigaction(handled_set[i], &old[i], NULL), 0);
  ck_assert_int_eq(code, 0);
}
END_TEST

START_TEST(test_registered_fds_closed_in_child) {
  int a[2];
  ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
  /* Unregistered: inherited (as with Python's fork). */
  ck_assert_int_eq(run(fd_open_status, a[0], NULL, 0), 0);
  mproc__fd_register(a[0]);
  ck_assert_int_eq(run(fd_open_status, a[0], NULL, 0), 1);
  ck_assert_int_eq(run(fd_open_status, a[0], &a[0], 1), 0);
  /* One far up the map: the child scans every word in use. */
  int high = fcntl(a[1], F_DUPFD_CLOEXEC, 1000);
  ck_assert_int_ge(high, 1000);
  mproc__fd_register(high);
  ck_assert_int_eq(run(fd_open_status, high, NULL, 0), 1);
  mproc_assert_ok(mproc__close(high));
  mproc_assert_ok(mproc__close(a[0]));
  close(a[1]);
}
END_TEST

static void *block_forever(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return NULL;
}

/* A set*id call in a threaded child: glibc tells every thread by a signal
 * of its own (SIGSETXID), whose handler the reset must leave in place, or
 * the child dies by it. */
static int setxid_with_threads(void *arg) {
  (void)arg;
  pthread_t t;
  if (pthread_create(&t, NULL, block_forever, NULL) != 0)
    return 2;
  return setgid(getgid()) == 0 ? 0 : 3;
}

START_TEST(test_reset_keeps_the_c_library_signals) {
  ck_assert_int_eq(run(setxid_with_threads, 0, NULL, 0), 0);
}
END_TEST

START_TEST(test_reap_deadline_and_kill) {
  struct mproc__spawn_opts o = {.fn = sleep_forever};
  pid_t pid;
  int pidfd, code;
  mproc_assert_ok(mproc__spawn(&o, &pid, &pidfd));
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc__reap(pidfd, &code, mproc__deadline(100)), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 100);
  mproc_assert_err(mproc__reap(pidfd, &code, mproc__deadline(0)), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc__pidfd_kill(pidfd, SIGKILL));
  mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(30000)));
  ck_assert_int_eq(code, -SIGKILL);
  /* After the reap the pid may be recycled; the pidfd never reaches it. */
  mproc_assert_err(mproc__pidfd_kill(pidfd, SIGKILL), -ESRCH);
  mproc_assert_ok(mproc__close(pidfd));
}
END_TEST

START_TEST(test_bad_options) {
  pid_t pid;
  int pidfd;
  struct mproc__spawn_opts o = {0};
  mproc_assert_err(mproc__spawn(&o, &pid, &pidfd), MPROC_EINVAL);
  o.fn = ret_arg;
  mproc_assert_err(mproc__spawn(NULL, &pid, &pidfd), MPROC_EINVAL);
  mproc_assert_err(mproc__spawn(&o, NULL, &pidfd), MPROC_EINVAL);
  o.nkeep = 1;
  mproc_assert_err(mproc__spawn(&o, &pid, &pidfd), MPROC_EINVAL);
  o.nkeep = 0;
  o.pdeathsig = -1;
  mproc_assert_err(mproc__spawn(&o, &pid, &pidfd), MPROC_EINVAL);
  o.pdeathsig = 0;
  o.parent = -1;
  mproc_assert_err(mproc__spawn(&o, &pid, &pidfd), MPROC_EINVAL);
}
END_TEST

/* ---- the parent's buffered stdio is never written by a child ----------- */

/* Points stdout at a fresh memory file (fully buffered, like a file or a
 * pipe); returns the saved original stdout to restore with stdout_restore. */
static int stdout_to_memfd(int *mfd) {
  fflush(stdout);
  *mfd = memfd_create("stdout", MFD_CLOEXEC);
  ck_assert_int_ge(*mfd, 0);
  int saved = fcntl(1, F_DUPFD_CLOEXEC, 3);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(*mfd, 1), 1);
  return saved;
}

/* Restores stdout and returns how often `needle` was written to the file. */
static int stdout_restore(int saved, int mfd, const char *needle) {
  fflush(stdout);
  ck_assert_int_eq(dup2(saved, 1), 1);
  close(saved);
  char buf[4096];
  ssize_t n = pread(mfd, buf, sizeof buf - 1, 0);
  close(mfd);
  ck_assert_int_ge(n, 0);
  buf[n] = '\0';
  int count = 0;
  for (char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    count++;
  return count;
}

static int exit_via_exit(void *arg) {
  (void)arg;
  exit(0); /* flushes this process's stdio copies */
}

/* The pool's path: forked without a flush (MPROC__SPAWN_NOFLUSH), the child
 * leaving through exit(). */
START_TEST(test_child_never_writes_parent_stdout) {
  int mfd, saved = stdout_to_memfd(&mfd);
  printf("pending-no-newline");
  struct mproc__spawn_opts o = {.fn = exit_via_exit, .flags = MPROC__SPAWN_NOFLUSH};
  pid_t pid;
  int pidfd, code = -1000;
  for (int i = 0; i < 3; i++) {
    mproc_assert_ok(mproc__spawn(&o, &pid, &pidfd));
    mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(30000)));
    mproc_assert_ok(mproc__close(pidfd));
    ck_assert_int_eq(code, 0);
  }
  ck_assert_int_eq(stdout_restore(saved, mfd, "pending-no-newline"), 1);
}
END_TEST

static int task_exit(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  exit(0);
}

/* The same through the public pool: workers that exit() mid-task (and are
 * replaced) never print what the program had buffered. */
START_TEST(test_pool_worker_never_writes_parent_stdout) {
  int mfd, saved = stdout_to_memfd(&mfd);
  printf("pool-pending-line");
  mproc_pool *pool;
  struct mproc_pool_options po = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&pool, &po));
  for (int i = 0; i < 4; i++) {
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(pool, task_exit, NULL, 0, &f));
    const void *d;
    size_t n;
    mproc_assert_err(mproc_future_result(f, &d, &n, 60000), MPROC_EWORKERDIED);
    mproc_future_free(f);
  }
  mproc_assert_ok(mproc_pool_free(pool));
  ck_assert_int_eq(stdout_restore(saved, mfd, "pool-pending-line"), 1);
}
END_TEST

/* ---- a worker's group dies with it, even when the program is SIGKILLed --- */

/* Reads the pid a helper wrote to the pipe and opens a pidfd on it. */
/* A task that starts a plain helper (no library call) and reports its pid. */
static int task_fork_helper(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len, (void)ctx;
  int fd = *(const int *)arg;
  pid_t g = fork();
  if (g == 0) {
    for (;;)
      pause();
  }
  return g > 0 && write(fd, &g, sizeof g) == (ssize_t)sizeof g ? 0 : 1;
}

/* The program: a pool whose task leaves a helper behind, then it waits to
 * be killed.  The pipe is made inheritable so that a worker started by
 * spawn or forkserver (MPROC_START_METHOD) finds it at the same number. */
static int program_with_pool(void *arg) {
  mproc_pool *pool;
  struct mproc_pool_options po = {.workers = 1};
  mproc_future *f;
  const void *d;
  size_t n;
  if (fcntl(*(const int *)arg, F_SETFD, 0) != 0 || mproc_pool_new(&pool, &po) != 0 ||
      mproc_pool_submit(pool, task_fork_helper, arg, sizeof(int), &f) != 0 ||
      mproc_future_result(f, &d, &n, 30000) != 0)
    return 1;
  for (;;)
    pause();
}

START_TEST(test_worker_group_dies_with_killed_program) {
  int p[2];
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  struct mproc__spawn_opts o = {.fn = program_with_pool, .arg = &p[1]};
  pid_t prog, helper;
  int prog_fd;
  mproc_assert_ok(mproc__spawn(&o, &prog, &prog_fd));
  int helper_fd = mproc_test_read_pidfd(p[0], &helper);
  /* The program is gone, its manager thread with it: the worker dies by its
   * parent-death signal, and its group (the helper) must follow. */
  mproc_test_kill_expect_follow(prog_fd, helper_fd);
  close(p[0]);
  close(p[1]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("spawn");
  TCase *tc = mproc_test_tcase(s, "spawn", 60);
  tcase_add_test(tc, test_exit_codes);
  tcase_add_test(tc, test_registered_fds_closed_in_child);
  tcase_add_test(tc, test_child_resets_caught_and_ignored_signals);
  tcase_add_test(tc, test_reset_keeps_the_c_library_signals);
  tcase_add_test(tc, test_reap_deadline_and_kill);
  tcase_add_test(tc, test_bad_options);
  tcase_add_test(tc, test_child_never_writes_parent_stdout);
  tcase_add_test(tc, test_pool_worker_never_writes_parent_stdout);
  tcase_add_test(tc, test_worker_group_dies_with_killed_program);
  return mproc_test_run(s);
}
