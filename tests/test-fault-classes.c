/* Classes of faults, each attacked across every object it can reach: a
 * program that ignores SIGCHLD (the kernel reaps every child, the library's
 * own helper processes included), stopped processes facing every deadline
 * and teardown, shared memory that is not what its name promises, and a
 * peer killed in the middle of a frame.
 * ctest-labels: threads */
#include "fault-helpers.h"
#include "internal.h"
#include "pool-helpers.h"
#include "start.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* A bound for "returns promptly" around a deadline that is honoured. */
#define SLACK_MS mproc_test_scaled_ms(3000)

/* ---- a program that ignores SIGCHLD ---------------------------------------- */

/* With SIGCHLD ignored the kernel reaps each child as it exits, so no exit
 * status is ever there to collect.  The library must neither fail because of
 * it (its own helpers' statuses) nor report a status it never saw. */
static void ignore_sigchld(void) { ck_assert(signal(SIGCHLD, SIG_IGN) != SIG_ERR); }
static void default_sigchld(void) { ck_assert(signal(SIGCHLD, SIG_DFL) != SIG_ERR); }

/* A named block and a named queue each start a keeper process, whose
 * readiness must not depend on reaping its intermediate. */
START_TEST(test_sigchld_ignored_named_objects) {
  ignore_sigchld();
  char name[96];
  for (int round = 0; round < 2; round++) {
    mproc_shm *s;
    mproc_test_shm_name(name, sizeof name, "ign");
    mproc_assert_ok(mproc_shm_create(&s, name, 4096));
    mproc_shm *a;
    mproc_assert_ok(mproc_shm_attach(&a, name));
    ((char *)mproc_shm_addr(s))[0] = 42;
    ck_assert_int_eq(((char *)mproc_shm_addr(a))[0], 42);
    mproc_assert_ok(mproc_shm_free(a));
    mproc_assert_ok(mproc_shm_unlink(s));
    mproc_assert_ok(mproc_shm_free(s));

    mproc_test_shm_name(name, sizeof name, "ignq");
    struct mproc_queue_options qo = {.name = name};
    mproc_queue *q;
    mproc_assert_ok(mproc_queue_new(&q, &qo));
    int v = 7, got = 0;
    size_t len = 0;
    mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, 0));
    mproc_assert_ok(mproc_queue_get(q, &got, sizeof got, &len, SLACK_MS));
    ck_assert_int_eq(got, 7);
    mproc_assert_ok(mproc_queue_unlink(name));
    mproc_assert_ok(mproc_queue_free(q));
  }
  default_sigchld();
}
END_TEST

/* A command reaped by the kernel: its wait ends (it did exit), and the exit
 * code says the status is lost instead of an error or a made-up value. */
START_TEST(test_sigchld_ignored_command_status_lost) {
  ignore_sigchld();
  /* It waits for its stdin to close, so it cannot exit before the start
   * has its pidfd. */
  char *argv[] = {"read x; exit 5", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL, .stdin_fd = MPROC_COMMAND_PIPE};
  mproc_command *c;
  mproc_assert_ok(mproc_command_start(&c, argv, &o));
  mproc_assert_err(mproc_command_wait(c, 0), MPROC_ETIMEDOUT);
  int code = -99;
  mproc_assert_err(mproc_command_exitcode(c, &code), MPROC_ESTATE);
  mproc_assert_ok(mproc_command_close_fd(c, 0));
  mproc_assert_ok(mproc_command_wait(c, SLACK_MS));
  mproc_assert_ok(mproc_command_wait(c, 0)); /* again: at once */
  mproc_assert_err(mproc_command_exitcode(c, &code), MPROC_ECHILD);
  ck_assert_int_eq(code, -99);
  ck_assert_int_eq(mproc_command_due_ms(c), -1);
  mproc_command_free(c);
  default_sigchld();
}
END_TEST

/* Commands that exit at once, in a program that ignores SIGCHLD: the kernel
 * may reap one before its start has opened its pidfd.  The start still
 * succeeds (the program ran), the sentinel is readable, the wait returns,
 * and the status is reported lost -- never -ESRCH from the start. */
START_TEST(test_sigchld_ignored_command_exits_at_once) {
  ignore_sigchld();
  for (int i = 0; i < 100; i++) {
    char *argv[] = {"true", NULL};
    mproc_command *c;
    mproc_assert_ok(mproc_command_start(&c, argv, NULL));
    ck_assert_int_gt(mproc_command_pid(c), 0);
    mproc_assert_ok(mproc_command_wait(c, SLACK_MS));
    int fd = mproc_command_sentinel(c);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_gt(mproc__poll1(fd, POLLIN, 0) & POLLIN, 0);
    int code = -99;
    mproc_assert_err(mproc_command_exitcode(c, &code), MPROC_ECHILD);
    mproc_assert_ok(mproc_command_signal(c, SIGTERM, 0));
    mproc_command_free(c);
  }
  default_sigchld();
}
END_TEST

static int proc_return_at_once(const void *arg, size_t len) {
  (void)arg, (void)len;
  return 3;
}

/* In a program that ignores SIGCHLD a child that exits at once could be
 * reaped by the kernel before its pidfd was opened: mproc_process_start
 * failed with MPROC_ESRCH (about 2% of starts; the error path then also
 * kill()ed a pid that may have been reused).  The child now holds still
 * until the parent has its pidfd.  The same class under forkserver, whose
 * children are the program's own (CLONE_PARENT): the start failed there
 * every time or nearly; that child now waits for the owner's pidfd too. */
START_TEST(test_sigchld_ignored_process_exits_at_once) {
  ignore_sigchld();
  static const struct {
    int method, starts;
  } by[] = {{MPROC_START_FORK, 300}, {MPROC_START_FORKSERVER, 300}, {MPROC_START_SPAWN, 30}};
  for (size_t m = 0; m < sizeof by / sizeof *by; m++)
    for (int i = 0; i < by[m].starts; i++) {
      mproc_process *p;
      mproc_process_options o = {.start_method = by[m].method};
      mproc_assert_ok(mproc_process_new(&p, proc_return_at_once, NULL, 0, &o));
      mproc_assert_ok(mproc_process_start(p));
      mproc_assert_ok(mproc_process_join(p, SLACK_MS));
      mproc_process_free(p);
    }
  default_sigchld();
}
END_TEST

static int task_sigkill_self(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  raise(SIGKILL);
  return 0;
}

/* A worker reaped by the kernel: its task fails with MPROC_EWORKERDIED and
 * says the cause is unknown -- never "exited with status 0" -- and the pool
 * goes on with a replacement. */
START_TEST(test_sigchld_ignored_worker_death) {
  ignore_sigchld();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_sigkill_self, NULL, 0, &f));
  mproc_assert_ok(mproc_future_wait(f, SLACK_MS));
  struct mproc_task_error e;
  mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_int_eq(e.code, MPROC_EWORKERDIED);
  ck_assert_int_eq(e.signo, 0);
  ck_assert_int_eq(e.exit_status, -1);
  ck_assert_msg(strstr(e.message, "lost") != NULL, "message: %s", e.message);
  ck_assert_msg(strstr(e.message, "status 0") == NULL, "message: %s", e.message);
  mproc_future_free(f);
  int x = 6;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  const void *d;
  size_t n;
  mproc_assert_ok(mproc_future_result(f, &d, &n, SLACK_MS));
  ck_assert_int_eq(*(const int *)d, 36);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  default_sigchld();
}
END_TEST

/* ---- stopped processes and deadlines --------------------------------------- */

/* Every worker of a pool stopped, one of them in a task, more tasks queued:
 * join honours its deadline, terminate and free return promptly, and every
 * future completes. */
START_TEST(test_stopped_pool_teardown) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f[6];
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f[0]));
  wait_task_started();
  pid_t pids[2];
  int nw = mproc_pool_worker_pids(p, pids, 2);
  ck_assert_int_eq(nw, 2);
  for (int i = 0; i < nw; i++)
    ck_assert_int_eq(kill(pids[i], SIGSTOP), 0);
  int ms = 100;
  for (int i = 1; i < 6; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_sleep, &ms, sizeof ms, &f[i]));
  mproc_assert_ok(mproc_pool_close(p));
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_pool_join(p, 200), MPROC_ETIMEDOUT);
  ck_assert_int_lt(mproc_now_ms() - t0, 200 + SLACK_MS);
  mproc_assert_err(mproc_pool_join(p, 0), MPROC_ETIMEDOUT);
  t0 = mproc_now_ms();
  mproc_assert_ok(mproc_pool_terminate(p));
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_lt(mproc_now_ms() - t0, SLACK_MS);
  for (int i = 0; i < 6; i++) {
    mproc_assert_ok(mproc_future_wait(f[i], 0));
    ck_assert_int_ne(mproc_future_state(f[i]), MPROC_FUTURE_DONE);
    mproc_future_free(f[i]);
  }
  for (int i = 0; i < nw; i++)
    ck_assert(wait_pid_dead(pids[i], SLACK_MS));
  shared_free(S);
}
END_TEST

/* A stopped worker woken after the pool gave up on it (task timeout): the
 * replacement took over, the old worker is gone for good, and nothing ran
 * twice or was lost. */
START_TEST(test_stopped_worker_woken_after_timeout) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {
      .workers = 1, .task_timeout_ms = 200, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *b;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &b));
  wait_task_started();
  pid_t old = atomic_load(&S->pid);
  ck_assert_int_eq(kill(old, SIGSTOP), 0);
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(b, &d, &n, SLACK_MS), MPROC_ETIMEDOUT);
  kill(old, SIGCONT); /* too late: it was killed; a no-op or ESRCH */
  ck_assert(wait_pid_dead(old, SLACK_MS));
  int x = 9;
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, SLACK_MS));
  ck_assert_int_eq(*(const int *)d, 81);
  mproc_future_free(f);
  mproc_future_free(b);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int task_kill_self(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  raise(SIGKILL);
  return 0;
}

/* Futures of a pool with one worker stopped in a task and another dead in
 * one: futures_wait and as_completed see the dead worker's future at once,
 * honour their deadlines over the stopped one's, and see it too once the
 * pool is terminated. */
START_TEST(test_futures_of_stopped_and_dead_workers) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 2, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_future *f[2];
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f[0]));
  wait_task_started();
  ck_assert_int_eq(kill(atomic_load(&S->pid), SIGSTOP), 0);
  mproc_assert_ok(mproc_pool_submit(p, task_kill_self, NULL, 0, &f[1]));
  ck_assert_int_eq(mproc_futures_wait(f, 2, MPROC_FIRST_EXCEPTION, SLACK_MS), 1);
  mproc_assert_err(mproc_future_result(f[1], NULL, NULL, 0), MPROC_EWORKERDIED);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_futures_wait(f, 2, MPROC_ALL_COMPLETED, 100), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 100);
  ck_assert_int_lt(mproc_now_ms() - t0, 100 + SLACK_MS);
  mproc_as_completed *it;
  mproc_assert_ok(mproc_as_completed_new(&it, f, 2));
  mproc_future *got = NULL;
  mproc_assert_ok(mproc_as_completed_next(it, &got, 0));
  ck_assert_ptr_eq(got, f[1]);
  mproc_assert_err(mproc_as_completed_next(it, &got, 50), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_pool_terminate(p));
  mproc_assert_ok(mproc_as_completed_next(it, &got, SLACK_MS));
  ck_assert_ptr_eq(got, f[0]);
  ck_assert_int_ne(mproc_future_state(f[0]), MPROC_FUTURE_DONE);
  mproc_assert_err(mproc_as_completed_next(it, &got, 0), MPROC_EEOF);
  mproc_as_completed_free(it);
  mproc_future_free(f[0]);
  mproc_future_free(f[1]);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

static int proc_pause(const void *arg, size_t len) {
  (void)arg, (void)len;
  for (;;)
    pause();
  return 0;
}

/* A started child, stopped. */
static mproc_process *stopped_process(void) {
  mproc_process *p;
  mproc_assert_ok(mproc_process_new(&p, proc_pause, NULL, 0, NULL));
  mproc_assert_ok(mproc_process_start(p));
  ck_assert_int_eq(kill(mproc_process_pid(p), SIGSTOP), 0);
  return p;
}

/* p ends promptly with exit code `code`; then it is freed. */
static void expect_ended(mproc_process *p, int code) {
  mproc_assert_ok(mproc_process_join(p, SLACK_MS));
  int got = 0;
  mproc_assert_ok(mproc_process_exitcode(p, &got));
  ck_assert_int_eq(got, code);
  mproc_process_free(p);
}

/* A stopped child: join's deadlines (0 and > 0) are honoured, it reads as
 * alive, and kill ends it with SIGKILL's exit code. */
START_TEST(test_stopped_process_deadlines) {
  mproc_process *p = stopped_process();
  mproc_assert_err(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_process_join(p, 150), MPROC_ETIMEDOUT);
  int64_t took = mproc_now_ms() - t0;
  ck_assert_int_ge(took, 150);
  ck_assert_int_lt(took, 150 + SLACK_MS);
  ck_assert_int_eq(mproc_process_is_alive(p), 1);
  mproc_assert_ok(mproc_process_kill(p, 0));
  expect_ended(p, -SIGKILL);
}
END_TEST

/* A stopped child with the tree flag: terminate wakes it so that SIGTERM
 * takes effect. */
START_TEST(test_stopped_process_tree_terminate) {
  mproc_process *p = stopped_process();
  mproc_assert_ok(mproc_process_terminate(p, MPROC_SIGNAL_TREE));
  expect_ended(p, -SIGTERM);
}
END_TEST

/* mproc_process_terminate(p, 0) on a stopped child sent SIGTERM only; a
 * stopped process does not act on it until continued, so the join timed
 * out (and free/exit of a stopped child waited out grace_ms).  SIGCONT now
 * follows, as for a tree. */
START_TEST(test_stopped_process_terminate) {
  mproc_process *p = stopped_process();
  mproc_assert_ok(mproc_process_terminate(p, 0));
  expect_ended(p, -SIGTERM);
}
END_TEST

/* A stopped command: wait honours its own deadline (0 and > 0), and the
 * command's timeout still ends it (the tree signal wakes it). */
START_TEST(test_stopped_command_deadlines) {
  char *argv[] = {"sleep", "60", NULL};
  mproc_command *c;
  mproc_command_options o = {.timeout_ms = 150, .grace_ms = 150};
  mproc_assert_ok(mproc_command_start(&c, argv, &o));
  ck_assert_int_eq(kill(mproc_command_pid(c), SIGSTOP), 0);
  mproc_assert_err(mproc_command_wait(c, 0), MPROC_ETIMEDOUT);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_command_wait(c, 50), MPROC_ETIMEDOUT);
  ck_assert_int_lt(mproc_now_ms() - t0, 50 + SLACK_MS);
  mproc_assert_ok(mproc_command_wait(c, SLACK_MS));
  ck_assert_int_eq(mproc_command_timed_out(c), 1);
  int code = 0;
  mproc_assert_ok(mproc_command_exitcode(c, &code));
  ck_assert(code == -SIGTERM || code == -SIGKILL);
  mproc_command_free(c);

  /* Freed while stopped and without a timeout: promptly, nothing left. */
  mproc_assert_ok(mproc_command_start(&c, argv, NULL));
  pid_t pid = mproc_command_pid(c);
  ck_assert_int_eq(kill(pid, SIGSTOP), 0);
  t0 = mproc_now_ms();
  mproc_command_free(c);
  ck_assert_int_lt(mproc_now_ms() - t0, SLACK_MS);
  ck_assert(!mproc_test_pid_exists(pid));
}
END_TEST

/* ---- helper processes of the library, stopped ------------------------------ */

/* In an image exec'd by the library (a spawn child, "s", or a forkserver,
 * "f") of the kind MPROC_TEST_STOP_AT_START names: stop before the library
 * takes the image over, as a SIGSTOP sent at that moment would. */
__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void stop_at_start(void) {
  const char *m = getenv(MPROC__WORKER_ENV), *k = getenv("MPROC_TEST_STOP_AT_START");
  if (m != NULL && k != NULL && m[0] == k[0])
    raise(SIGSTOP);
}

static _Atomic int stops_left;

/* Forkserver test hook: stops the server once, just before a request is
 * sent. */
static void stop_in_flight(int stage, int server_pidfd) {
  if (stage == 0 && atomic_fetch_sub(&stops_left, 1) > 0)
    stop_and_wait(server_pidfd);
}

static int proc_exit_7(const void *arg, size_t len) {
  (void)arg, (void)len;
  return 7;
}

/* A process started under `method` with an argument of `len` bytes (up to
 * 4 MiB: more than a socket's buffer holds): its exit code, or the start's
 * error. */
static int start_and_join_len(int method, size_t len) {
  static char arg[4 << 20];
  mproc_process *p;
  struct mproc_process_options o = {.start_method = method};
  mproc_assert_ok(mproc_process_new(&p, proc_exit_7, len > 0 ? arg : NULL, len, &o));
  int r = mproc_process_start(p);
  if (r == 0) {
    mproc_assert_ok(mproc_process_join(p, SLACK_MS));
    mproc_assert_ok(mproc_process_exitcode(p, &r));
  }
  mproc_process_free(p);
  return r;
}

static int start_and_join(int method) { return start_and_join_len(method, 0); }
static int start_big_and_join(int method) { return start_and_join_len(method, 4 << 20); }

/* A stopped forkserver -- idle (round 0), or stopped as a request is sent
 * to it, a small one (1) or one larger than its socket's buffer (2) -- made
 * every start wait 30 s for its reply.  It is now found stopped within a
 * bounded time and replaced: the start succeeds promptly, on a fresh
 * server. */
START_TEST(test_stopped_forkserver) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORKSERVER};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_assert_ok(mproc_pool_free(p));
  for (int round = 0; round < 3; round++) {
    int restarts = mproc_forkserver_restarts();
    if (round == 0) {
      int fd = mproc__forkserver_pidfd();
      ck_assert_int_ge(fd, 0);
      stop_and_wait(fd);
      close(fd);
    } else {
      atomic_store(&stops_left, 1);
      atomic_store(&mproc__forkserver_test_hook, stop_in_flight);
    }
    int64_t t0 = mproc_now_ms();
    if (round == 0) {
      mproc_assert_ok(mproc_pool_new(&p, &o));
      int x = 4;
      mproc_future *f;
      const void *d;
      size_t n;
      mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
      mproc_assert_ok(mproc_future_result(f, &d, &n, SLACK_MS));
      ck_assert_int_eq(*(const int *)d, 16);
      mproc_future_free(f);
      mproc_assert_ok(mproc_pool_free(p));
    } else {
      int code = round == 1 ? start_and_join(MPROC_START_FORKSERVER)
                            : start_big_and_join(MPROC_START_FORKSERVER);
      ck_assert_int_eq(code, 7);
    }
    ck_assert_msg(mproc_now_ms() - t0 < SLACK_MS, "round %d took %lld ms", round,
                  (long long)(mproc_now_ms() - t0));
    atomic_store(&mproc__forkserver_test_hook, NULL);
    ck_assert_int_eq(mproc_forkserver_restarts(), restarts + 1);
  }
}
END_TEST

/* In a forkserver whose environment has MPROC_TEST_LOSE_CHILD: the child
 * and the server both die right after the fork, the child before its note,
 * the server before its reply. */
static void lose_child(pid_t pid) {
  (void)pid;
  _exit(0);
}

__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void lose_child_install(void) {
  const char *m = getenv(MPROC__WORKER_ENV);
  if (m != NULL && m[0] == 'f' && getenv("MPROC_TEST_LOSE_CHILD") != NULL)
    atomic_store(&mproc__forkserver_fork_hook, lose_child);
}

/* The owner's hook: the server of the request is already started with the
 * variable; its replacement is not. */
static void clear_lose_child(int stage, int server_pidfd) {
  (void)server_pidfd;
  if (stage == 0)
    unsetenv("MPROC_TEST_LOSE_CHILD");
}

/* A forkserver child that died before it could tell its pid, while the
 * server died before its reply: nobody knew the child, which stayed a
 * zombie of the program for good (seen once in a crash storm).  The kernel
 * now writes each child's pid to a page the program reads when the server
 * is gone: the child is reaped, the start retried on a new server. */
START_TEST(test_forkserver_child_never_noted) {
  ck_assert_int_eq(setenv("MPROC_TEST_LOSE_CHILD", "1", 1), 0);
  atomic_store(&mproc__forkserver_test_hook, clear_lose_child);
  int restarts = mproc_forkserver_restarts();
  ck_assert_int_eq(start_and_join(MPROC_START_FORKSERVER), 7);
  atomic_store(&mproc__forkserver_test_hook, NULL);
  ck_assert_int_eq(mproc_forkserver_restarts(), restarts + 1);
  ck_assert_int_eq(mproc_test_count_children(), 1); /* the new server only */
}
END_TEST

/* The pid behind a pidfd (its fdinfo's "Pid:" line), or -1. */
static pid_t pidfd_pid(int fd) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE *f = fopen(path, "re");
  int pid = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Pid: %d", &pid) == 1)
      break;
  if (f != NULL)
    fclose(f);
  return (pid_t)pid;
}

/* Run in a forked helper as an unprivileged user (root ignores
 * RLIMIT_NPROC): a forkserver that runs but can no longer fork (its
 * process allowance taken away) fails a start with -EAGAIN, and a pool's
 * creation too, with nothing left behind; starts work again once it can
 * fork.  Returns 0 when all held, else the number of the check that
 * failed. */
static int forkserver_without_nproc(void *arg) {
  (void)arg;
  if (!become_nobody(false))
    return 1;
  if (start_and_join(MPROC_START_FORKSERVER) != 7)
    return 2;
  int fd = mproc__forkserver_pidfd();
  pid_t server = fd >= 0 ? pidfd_pid(fd) : -1;
  struct rlimit old, zero;
  if (server <= 0 || prlimit(server, RLIMIT_NPROC, NULL, &old) != 0)
    return 3;
  zero = (struct rlimit){0, old.rlim_max}; /* a lowered hard limit stays low */
  if (prlimit(server, RLIMIT_NPROC, &zero, NULL) != 0)
    return 3;
  if (start_and_join(MPROC_START_FORKSERVER) != -EAGAIN)
    return 4;
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.workers = 2, .start_method = MPROC_START_FORKSERVER};
  if (mproc_pool_new(&p, &o) != -EAGAIN || p != NULL)
    return 5;
  if (mproc_test_count_children() != 1) /* the server only */
    return 6;
  if (prlimit(server, RLIMIT_NPROC, &old, NULL) != 0 || start_and_join(MPROC_START_FORKSERVER) != 7)
    return 7;
  close(fd);
  mproc_forkserver_stop();
  return mproc_test_count_children() == 0 ? 0 : 8;
}

START_TEST(test_forkserver_cannot_fork) {
  ck_assert_int_eq(run_in_helper(forkserver_without_nproc, 30000), 0);
}
END_TEST

/* A library-exec'd image stopped before it answered its start -- a spawn
 * child, a pool's spawn worker, a new forkserver -- made the start wait out
 * its 30 s deadline.  The start now fails promptly with
 * MPROC_ECHILDFAILED, and the stopped child is killed and reaped (the
 * fixture checks). */
START_TEST(test_stopped_exec_child_at_start) {
  ck_assert_int_eq(setenv("MPROC_TEST_STOP_AT_START", "s", 1), 0);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(start_and_join(MPROC_START_SPAWN), MPROC_ECHILDFAILED);
  /* An argument larger than the socket's buffer: its sending waited. */
  mproc_assert_err(start_big_and_join(MPROC_START_SPAWN), MPROC_ECHILDFAILED);
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.workers = 2, .start_method = MPROC_START_SPAWN};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_ECHILDFAILED);
  ck_assert_int_eq(setenv("MPROC_TEST_STOP_AT_START", "f", 1), 0);
  mproc_assert_err(start_and_join(MPROC_START_FORKSERVER), MPROC_ECHILDFAILED);
  ck_assert_int_lt(mproc_now_ms() - t0, SLACK_MS);
  ck_assert_int_eq(unsetenv("MPROC_TEST_STOP_AT_START"), 0);
  ck_assert_int_eq(start_and_join(MPROC_START_FORKSERVER), 7);
  ck_assert_int_eq(start_and_join(MPROC_START_SPAWN), 7);
}
END_TEST

/* ---- children a debugger holds ---------------------------------------------- */

/* A zombie that another process traces is shown to its tracer first: our
 * pidfd on it is readable, yet waitid finds nothing until the tracer lets
 * go. */

/* A child killed while a debugger holds it: join's deadline is honoured
 * (the reap spun on the readable pidfd, past any deadline, until the
 * tracer let go), and once it does, the join reaps it. */
START_TEST(test_traced_zombie_join) {
  mproc_process *p;
  mproc_assert_ok(mproc_process_new(&p, proc_traceable, NULL, 0, NULL));
  mproc_assert_ok(mproc_process_start(p));
  int release;
  pid_t tracer = trace_hold(mproc_process_pid(p), &release);
  mproc_assert_ok(mproc_process_kill(p, 0));
  ck_assert_int_gt(mproc__poll1(mproc_process_sentinel(p), POLLIN, mproc__deadline(SLACK_MS)), 0);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_process_join(p, 100), MPROC_ETIMEDOUT);
  ck_assert_int_lt(mproc_now_ms() - t0, 100 + SLACK_MS);
  mproc_assert_err(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
  trace_release(tracer, release);
  expect_ended(p, -SIGKILL);
}
END_TEST

/* ---- shared memory that is not what its name promises ---------------------- */

/* A /dev/shm file under the name that holds something else -- nothing, a
 * few bytes, a page or a MiB of zeros or garbage -- is reported as corrupt
 * by every attach (a queue's file of zeros: not initialized yet), never a
 * crash (SIGBUS) or a hang. */
START_TEST(test_foreign_named_objects) {
  static const size_t sizes[] = {0, 10, 4096, 1 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    for (int fill = 0; fill < 2; fill++) {
      char name[96];
      mproc_test_shm_name(name, sizeof name, "foreign");
      int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      ck_assert_int_ge(fd, 0);
      ck_assert_int_eq(ftruncate(fd, (off_t)sizes[k]), 0);
      if (fill && sizes[k] > 0) {
        char junk[4096];
        memset(junk, 0xa5, sizeof junk);
        size_t w = sizes[k] < sizeof junk ? sizes[k] : sizeof junk;
        ck_assert_int_eq(pwrite(fd, junk, w, 0), (ssize_t)w);
      }
      close(fd);
      mproc_shm *s = NULL;
      int r = mproc_shm_attach(&s, name);
      ck_assert_msg(r == MPROC_ECORRUPT, "shm attach (%zu bytes, fill %d): %s", sizes[k], fill,
                    mproc_err_name(r));
      mproc_queue *q = NULL;
      r = mproc_queue_attach(&q, name, 0);
      /* Empty, or zeros past a header's size: a queue its creator has not
       * sized or initialized yet.  Short of a header: no queue. */
      int want = sizes[k] == 0   ? MPROC_EAGAIN
                 : sizes[k] < 64 ? MPROC_ECORRUPT
                 : fill == 0     ? MPROC_EAGAIN
                                 : MPROC_ECORRUPT;
      ck_assert_msg(r == want, "queue attach (%zu bytes, fill %d): %s", sizes[k], fill,
                    mproc_err_name(r));
      ck_assert_int_eq(shm_unlink(name), 0);
    }
  }
}
END_TEST

/* A file shorter than a queue header but not empty was reported as
 * MPROC_EAGAIN ("not yet sized"), so a caller retrying as documented
 * retried forever.  A creator sizes its file in one ftruncate: only an empty
 * file is "not yet sized"; a short one is MPROC_ECORRUPT. */
START_TEST(test_short_queue_file) {
  char name[96];
  mproc_test_shm_name(name, sizeof name, "short");
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, "0123456789", 10, 0), 10);
  close(fd);
  mproc_queue *q = NULL;
  mproc_assert_err(mproc_queue_attach(&q, name, 0), MPROC_ECORRUPT);
  ck_assert_int_eq(shm_unlink(name), 0);
}
END_TEST

/* ---- every deadline argument ------------------------------------------------ */

static int map_copy(const void *in, void *out) {
  *(int *)out = *(const int *)in;
  return 0;
}

static int starmap_first(const void *const *in, void *out) {
  *(int *)out = *(const int *)in[0];
  return 0;
}

static int pred_never(void *arg) {
  (void)arg;
  return 0;
}

static int item_copy(const void *in, size_t len, mproc_item_ctx *ctx) {
  return mproc_item_return(ctx, in, len);
}

static int buf_gen_three(void *ctx, struct mproc_buf *item) {
  int *k = ctx;
  if (*k >= 3)
    return 0;
  *item = (struct mproc_buf){"abc", (size_t)++ * k};
  return 1;
}

static int gen_three(void *ctx, void *item) {
  int *k = ctx;
  if (*k >= 3)
    return 0;
  *(int *)item = (*k)++;
  return 1;
}

/* A signal storm: SIGUSR1, whose handler does not restart calls, sent to
 * one thread every millisecond until stopped. */
struct storm {
  pthread_t target, thread;
  _Atomic bool stop;
};

static void on_usr1(int sig) { (void)sig; }

static void *storm_main(void *arg) {
  struct storm *st = arg;
  while (!atomic_load(&st->stop)) {
    pthread_kill(st->target, SIGUSR1);
    poll(NULL, 0, 1);
  }
  return NULL;
}

static void storm_start(struct storm *st) {
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
  st->target = pthread_self();
  atomic_store(&st->stop, false);
  ck_assert_int_eq(pthread_create(&st->thread, NULL, storm_main, st), 0);
}

static void storm_stop(struct storm *st) {
  atomic_store(&st->stop, true);
  ck_assert_int_eq(pthread_join(st->thread, NULL), 0);
  ck_assert(signal(SIGUSR1, SIG_DFL) != SIG_ERR);
}

/* Holds a lock from another thread until told to let go. */
struct held_lock {
  mproc_lock *lock;
  pthread_t thread;
  _Atomic int state; /* 1: held, 2: let go */
};

static void *hold_lock_main(void *arg) {
  struct held_lock *h = arg;
  mproc_assert_ok(mproc_lock_acquire(h->lock, -1));
  atomic_store(&h->state, 1);
  while (atomic_load(&h->state) != 2)
    poll(NULL, 0, 1);
  mproc_assert_ok(mproc_lock_release(h->lock));
  return NULL;
}

/* Every blocking call, on an object where it would block: a timeout below
 * -1 is MPROC_EINVAL at once, 0 returns at once (polls), and a short one
 * runs out whatever signals interrupt its waits meanwhile (never -EINTR). */
START_TEST(test_every_deadline_argument) {
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options po = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  mproc_future *bf;
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &bf));
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_sem *sem;
  mproc_assert_ok(mproc_sem_new(&sem, 0, NULL));
  mproc_event *ev;
  mproc_assert_ok(mproc_event_new(&ev));
  mproc_cond *cd;
  mproc_assert_ok(mproc_cond_new(&cd));
  mproc_barrier *br;
  mproc_assert_ok(mproc_barrier_new(&br, 2));
  char *argv[] = {"sleep", "60", NULL};
  mproc_command *cm;
  mproc_assert_ok(mproc_command_start(&cm, argv, NULL));
  mproc_process *pp;
  mproc_assert_ok(mproc_process_new(&pp, proc_pause, NULL, 0, NULL));
  mproc_assert_ok(mproc_process_start(pp));
  struct mproc_queue_options fo = {.flags = MPROC_QUEUE_JOINABLE, .maxsize = 1};
  mproc_queue *qf;
  mproc_assert_ok(mproc_queue_new(&qf, &fo));
  mproc_assert_ok(mproc_queue_put(qf, "x", 1, 0)); /* full, and a task not done */
  struct held_lock hl = {0};
  mproc_assert_ok(mproc_lock_new(&hl.lock));
  ck_assert_int_eq(pthread_create(&hl.thread, NULL, hold_lock_main, &hl), 0);
  while (atomic_load(&hl.state) != 1)
    poll(NULL, 0, 1);
  int gk = 0;
  mproc_imap *im;
  mproc_assert_ok(
      mproc_pool_imap(p, map_copy, gen_three, &gk, sizeof(int), sizeof(int), NULL, &im));
  int bk = 0;
  mproc_imap_buf *ib;
  mproc_assert_ok(mproc_pool_imap_buf(p, item_copy, buf_gen_three, &bk, NULL, &ib));
  static const int64_t tos[] = {-2, INT64_MIN, 0, 30};
  for (size_t k = 0; k < sizeof tos / sizeof tos[0]; k++) {
    int64_t to = tos[k];
    mproc_assert_ok(mproc_barrier_reset(br)); /* a timed-out wait breaks it */
    struct storm st;
    if (to > 0)
      storm_start(&st);
    char buf[8];
    size_t len, idx, nf = 1;
    void *vb;
    const void *cv;
    int fds[1], rdy, o, in[2] = {1, 2}, out[2];
    mproc_future *fs[1] = {bf}, *f;
    struct mproc_wait_item wi = {.conn = a};
    const void *sargs[] = {in};
    size_t ssz[] = {sizeof(int)}, ends[] = {1, 2};
    struct mproc_buf bin[] = {{"a", 1}, {"b", 1}}, *bout = NULL, bnext;
    struct mproc_packed pin = {"ab", ends, 2}, pout;
    int sfd = mproc_command_sentinel(cm);
    mproc_as_completed *it;
    mproc_assert_ok(mproc_as_completed_new(&it, fs, 1));
    int64_t t0 = mproc_now_ms();
    int r[] = {
        mproc_future_wait(bf, to),
        mproc_futures_wait(fs, 1, MPROC_FIRST_COMPLETED, to),
        mproc_as_completed_next(it, &f, to),
        mproc_future_result(bf, &cv, &len, to),
        mproc_pool_join(p, to),
        mproc_pool_map(p, map_copy, in, 2, sizeof(int), out, sizeof(int), NULL, NULL, to),
        mproc_imap_next(im, &o, &idx, NULL, to),
        mproc_pool_starmap(p, starmap_first, 1, sargs, ssz, 2, out, sizeof(int), NULL, NULL, to),
        mproc_pool_map_buf(p, item_copy, bin, 2, &bout, NULL, NULL, to),
        mproc_pool_map_packed(p, item_copy, &pin, &pout, NULL, NULL, to),
        mproc_imap_buf_next(ib, &bnext, &idx, NULL, to),
        mproc_conn_recv(a, buf, sizeof buf, &len, to),
        mproc_conn_recv_alloc(a, &vb, &len, to),
        mproc_conn_recv_fds(a, buf, sizeof buf, &len, fds, &nf, to),
        mproc_conn_poll(a, to),
        mproc_conn_wait(&wi, 1, to),
        mproc_wait(&sfd, 1, &rdy, to),
        mproc_command_wait(cm, to),
        mproc_queue_get(q, buf, sizeof buf, &len, to),
        mproc_queue_get_alloc(q, &vb, &len, to),
        mproc_sem_acquire(sem, to),
        mproc_event_wait(ev, to),
        mproc_barrier_wait(br, to),
        mproc_process_join(pp, to),
        mproc_queue_put(qf, "y", 1, to),
        mproc_queue_join(qf, to),
        mproc_lock_acquire(hl.lock, to),
    };
    mproc_as_completed_free(it);
    int64_t calls = (int64_t)(sizeof r / sizeof r[0]);
    ck_assert_int_lt(mproc_now_ms() - t0, SLACK_MS + calls * (to > 0 ? to : 0));
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
      /* pool_join: the pool is still open; the maps and imaps: their items
       * wait behind the blocked task. */
      int want = to < -1 ? MPROC_EINVAL : i == 4 ? MPROC_ESTATE : MPROC_ETIMEDOUT;
      ck_assert_msg(r[i] == want, "call %zu, timeout %lld: %s, expected %s", i, (long long)to,
                    mproc_err_name(r[i]), mproc_err_name(want));
    }
    /* The condition's calls need its lock held. */
    mproc_assert_ok(mproc_cond_acquire(cd, -1));
    int w = to < -1 ? MPROC_EINVAL : MPROC_ETIMEDOUT;
    mproc_assert_err(mproc_cond_wait(cd, to), w);
    mproc_assert_err(mproc_cond_wait_for(cd, pred_never, NULL, to), w);
    mproc_assert_ok(mproc_cond_release(cd));
    if (to > 0)
      storm_stop(&st);
  }
  mproc_imap_free(im);
  mproc_imap_buf_free(ib);
  mproc_command_free(cm);
  mproc_assert_ok(mproc_process_kill(pp, 0));
  mproc_assert_ok(mproc_process_join(pp, SLACK_MS));
  mproc_process_free(pp);
  mproc_assert_ok(mproc_queue_free(qf));
  atomic_store(&hl.state, 2);
  ck_assert_int_eq(pthread_join(hl.thread, NULL), 0);
  mproc_assert_ok(mproc_lock_free(hl.lock));
  mproc_assert_ok(mproc_barrier_free(br));
  mproc_assert_ok(mproc_cond_free(cd));
  mproc_assert_ok(mproc_event_free(ev));
  mproc_assert_ok(mproc_sem_free(sem));
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_conn_free(a));
  mproc_assert_ok(mproc_conn_free(b));
  mproc_future_free(bf);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* ---- descriptors at their limit ---------------------------------------------- */

/* One object of each kind that opens descriptors (and, for some, starts a
 * helper process), made and released: 0, or the error of the descriptor
 * that could not be opened. */
static int make_and_free(int kind) {
  char name[96];
  int r;
  switch (kind) {
  case 0: {
    mproc_shm *s;
    mproc_test_shm_name(name, sizeof name, "lim");
    if ((r = mproc_shm_create(&s, name, 4096)) == 0) {
      mproc_assert_ok(mproc_shm_unlink(s));
      mproc_assert_ok(mproc_shm_free(s));
    }
    return r;
  }
  case 1: {
    mproc_queue *q;
    mproc_test_shm_name(name, sizeof name, "limq");
    struct mproc_queue_options qo = {.name = name};
    if ((r = mproc_queue_new(&q, &qo)) == 0) {
      mproc_assert_ok(mproc_queue_unlink(name));
      mproc_assert_ok(mproc_queue_free(q));
    }
    return r;
  }
  case 2: {
    char *argv[] = {"true", NULL};
    mproc_command_options o = {.stdout_fd = MPROC_COMMAND_PIPE};
    mproc_command *c;
    if ((r = mproc_command_start(&c, argv, &o)) == 0) {
      mproc_assert_ok(mproc_command_wait(c, SLACK_MS));
      mproc_command_free(c);
    }
    return r;
  }
  case 3: {
    mproc_conn *a, *b;
    if ((r = mproc_pipe(&a, &b, NULL)) == 0) {
      mproc_assert_ok(mproc_conn_free(a));
      mproc_assert_ok(mproc_conn_free(b));
    }
    return r;
  }
  case 4: {
    mproc_pool *p;
    struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
    if ((r = mproc_pool_new(&p, &o)) == 0)
      mproc_assert_ok(mproc_pool_free(p));
    return r;
  }
  case 5: {
    mproc_pool *p;
    struct mproc_pool_options o = {.workers = 1, .flags = MPROC_POOL_LOOP};
    if ((r = mproc_pool_new(&p, &o)) == 0) {
      ck_assert_int_ge(mproc_pool_loop_fd(p), 0);
      mproc_assert_ok(mproc_pool_free(p));
    }
    return r;
  }
  default: {
    /* The maps over variable-size items, each on a pool of its own. */
    mproc_pool *p;
    struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
    if ((r = mproc_pool_new(&p, &o)) != 0)
      return r;
    size_t ends[] = {1, 3};
    struct mproc_packed in = {"abc", ends, 2}, out;
    struct mproc_buf bin[] = {{"a", 1}, {"bc", 2}}, *bout = NULL, b;
    if ((r = mproc_pool_map_packed(p, item_copy, &in, &out, NULL, NULL, SLACK_MS)) == 0) {
      ck_assert_uint_eq(out.ends[1], 3);
      mproc_packed_free(&out);
    }
    if (r == 0 &&
        (r = mproc_pool_map_buf(p, item_copy, bin, 2, &bout, NULL, NULL, SLACK_MS)) == 0) {
      ck_assert_uint_eq(bout[1].len, 2);
      mproc_bufs_free(bout);
    }
    int k = 0;
    mproc_imap_buf *ib;
    if (r == 0 && (r = mproc_pool_imap_buf(p, item_copy, buf_gen_three, &k, NULL, &ib)) == 0) {
      while ((r = mproc_imap_buf_next(ib, &b, NULL, NULL, SLACK_MS)) == 0) {
      }
      r = r == MPROC_EEOF ? 0 : r;
      mproc_imap_buf_free(ib);
    }
    mproc_assert_ok(mproc_pool_free(p));
    return r;
  }
  }
}

/* At every descriptor limit from "none free" upwards, each kind either
 * works or fails with -EMFILE, and leaves no descriptor, /dev/shm entry or
 * process behind (the fixture checks the last two at the end). */
START_TEST(test_objects_at_fd_limit) {
  struct rlimit old;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int base = mproc_test_count_fds();
  int highest = dup(0); /* the next descriptor number is the bound to set */
  ck_assert_int_ge(highest, 0);
  close(highest);
  for (int kind = 0; kind < 7; kind++) {
    bool worked = false;
    for (int extra = 0; extra < 24 && !worked; extra++) {
      struct rlimit low = old;
      low.rlim_cur = (rlim_t)(highest + extra);
      ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
      int r = make_and_free(kind);
      ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
      ck_assert_msg(r == 0 || r == -EMFILE, "kind %d, %d free: %s", kind, extra, mproc_err_name(r));
      ck_assert_msg(mproc_test_count_fds() == base, "kind %d, %d free: %d fds, %d before", kind,
                    extra, mproc_test_count_fds(), base);
      worked = r == 0;
    }
    ck_assert_msg(worked, "kind %d never worked", kind);
  }
  /* Every object was released: their keepers end once they see it. */
  ck_assert_msg(wait_no_stray_keepers(SLACK_MS) == 0, "a keeper outlived its object");
}
END_TEST

/* A result too large for shared memory's inline and arena room: it comes
 * as a file, a descriptor the caller's process receives. */
#define FILE_RESULT_LEN (1u << 20)
static int task_file_result(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  void *buf = mproc_task_result_buf(ctx, FILE_RESULT_LEN);
  if (buf == NULL)
    return 1;
  memset(buf, 'r', FILE_RESULT_LEN);
  return 0;
}

/* A pool made while descriptors were free, used once none is: the maps over
 * variable-size items, a result that comes as a file and a worker's
 * replacement each work or fail with -EMFILE, leave no descriptor behind,
 * and the pool works again (its replacement made) once descriptors are free
 * again.  A result file the kernel could not hand over for want of a
 * descriptor was reported as MPROC_ECORRUPT, as if the worker had lied. */
START_TEST(test_pool_used_at_fd_limit) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  int x = 3;
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f)); /* started */
  mproc_assert_ok(mproc_future_wait(f, SLACK_MS));
  mproc_future_free(f);
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int base = mproc_test_count_fds();
  int highest = dup(0);
  ck_assert_int_ge(highest, 0);
  close(highest);
  for (int extra = 0; extra < 4; extra++) {
    low = old;
    low.rlim_cur = (rlim_t)(highest + extra);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    size_t ends[] = {1, 3};
    struct mproc_packed in = {"abc", ends, 2}, out;
    struct mproc_buf bin[] = {{"a", 1}, {"bc", 2}}, *bout = NULL;
    int r[4];
    r[0] = mproc_pool_map_packed(p, item_copy, &in, &out, NULL, NULL, SLACK_MS);
    mproc_packed_free(&out);
    r[1] = mproc_pool_map_buf(p, item_copy, bin, 2, &bout, NULL, NULL, SLACK_MS);
    mproc_bufs_free(bout);
    mproc_assert_ok(mproc_pool_submit(p, task_file_result, NULL, 0, &f));
    size_t rlen = 0;
    const void *res;
    r[3] = mproc_future_result(f, &res, &rlen, SLACK_MS);
    ck_assert(r[3] != 0 || (rlen == FILE_RESULT_LEN && ((const char *)res)[rlen - 1] == 'r'));
    mproc_future_free(f);
    /* The worker dies: its replacement needs descriptors. */
    mproc_assert_ok(mproc_pool_submit(p, task_kill_self, NULL, 0, &f));
    r[2] = mproc_future_wait(f, SLACK_MS);
    ck_assert_int_eq(mproc_future_state(f), MPROC_FUTURE_FAILED);
    mproc_future_free(f);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    for (int i = 0; i < 4; i++)
      ck_assert_msg(r[i] == 0 || r[i] == -EMFILE, "call %d, %d free: %s", i, extra,
                    mproc_err_name(r[i]));
    mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
    mproc_assert_ok(mproc_future_result(f, &res, NULL, SLACK_MS));
    ck_assert_int_eq(*(const int *)res, 9);
    mproc_future_free(f);
    /* Counted once the replacement runs a task: a slot waiting for its
     * worker holds none of a worker's descriptors. */
    ck_assert_msg(mproc_test_count_fds() == base, "%d free: %d fds, %d before", extra,
                  mproc_test_count_fds(), base);
  }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Which of the standard descriptors are open, as bits 0..2. */
static int std_fds_open(void) {
  int open_ = 0;
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) >= 0)
      open_ |= 1 << fd;
  return open_;
}

/* Runs in a helper with its standard descriptors closed: 0 when no object
 * took one of them, else the number of the step after which one did. */
static int objects_without_std_fds(void *arg) {
  (void)arg;
  for (int fd = 0; fd <= 2; fd++)
    close(fd);
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
  if (mproc_pool_new(&p, &o) != 0 || std_fds_open() != 0)
    return 1;
  static char big[1 << 20]; /* an argument and a result that travel as files */
  mproc_future *f;
  const void *res;
  size_t len = 0;
  if (mproc_pool_submit(p, task_file_result, big, sizeof big, &f) != 0 ||
      mproc_future_result(f, &res, &len, SLACK_MS) != 0 || len != FILE_RESULT_LEN ||
      std_fds_open() != 0)
    return 2;
  mproc_future_free(f);
  mproc_conn *a, *b;
  if (mproc_pipe(&a, &b, NULL) != 0 || std_fds_open() != 0)
    return 3;
  mproc_conn_free(a);
  mproc_conn_free(b);
  char *argv[] = {"true", NULL};
  mproc_command *c;
  if (mproc_command_start(&c, argv, NULL) != 0 || mproc_command_wait(c, SLACK_MS) != 0 ||
      std_fds_open() != 0)
    return 4;
  mproc_command_free(c);
  return mproc_pool_free(p) == 0 ? 0 : 5;
}

/* A program that closed its standard descriptors (a daemon) and then made
 * a pool had the pool's eventfd, arena and worker socket on 0, 1 and 2: its
 * printf wrote into the arena the workers read, its perror (and a progress
 * bar) into a worker's channel.  The library's descriptors now stay above
 * 2. */
START_TEST(test_objects_without_std_fds) {
  ck_assert_int_eq(run_in_helper(objects_without_std_fds, 30000), 0);
}
END_TEST

/* Runs in the process that forks the keeper: takes every descriptor but the
 * two its own pipe needs, so the keeper starts with none free. */
static void fill_fds_but_two(void) {
  int last = -1, prev = -1;
  for (int fd; (fd = fcntl(2, F_DUPFD_CLOEXEC, 0)) >= 0;) {
    prev = last;
    last = fd;
  }
  if (last >= 0)
    close(last);
  if (prev >= 0)
    close(prev);
}

/* A keeper born with no descriptor free could not read /proc/self/maps, so
 * it kept its creator's mapping of the object, and with it the creator's
 * lock: it waited for itself for ever, an orphan nobody ends.  It now closes
 * what it inherited first; the create works and the keeper ends with the
 * object. */
START_TEST(test_keeper_born_without_descriptors) {
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = (rlim_t)mproc_test_count_fds() + 64;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  atomic_store(&mproc__keeper_test_hook, fill_fds_but_two);
  char name[96];
  mproc_shm *s = NULL;
  int r = mproc_shm_create(&s, mproc_test_shm_name(name, sizeof name, "nofd"), 4096);
  atomic_store(&mproc__keeper_test_hook, NULL);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  mproc_assert_ok(r);
  mproc_assert_ok(mproc_shm_unlink(s));
  mproc_assert_ok(mproc_shm_free(s));
  ck_assert_msg(wait_no_stray_keepers(SLACK_MS) == 0, "the keeper outlived its object");
}
END_TEST

/* ---- a pool used by a forked copy of its process ----------------------------- */

/* The pool the forked copy and the replacement worker below use: set once
 * the pool is made, so only processes forked after that see it. */
static mproc_pool *copied_pool;
static mproc_future *copied_done, *copied_blocked;

/* Every call on a copied pool: MPROC_ESTATE, at once, nothing touched.
 * Returns 0, or 1 + the index of the call that did otherwise. */
static int use_copied_pool(bool with_futures) {
  mproc_future *f = NULL;
  int x = 3, out[1];
  size_t ends[] = {1};
  struct mproc_packed in = {"a", ends, 1}, pout;
  struct mproc_pool_stats st;
  mproc_imap *im = NULL;
  int k = 0;
  int r[] = {
      mproc_pool_submit(copied_pool, task_square, &x, sizeof x, &f),
      mproc_pool_map(copied_pool, map_copy, &x, 1, sizeof x, out, sizeof x, NULL, NULL, -1),
      mproc_pool_map_packed(copied_pool, item_copy, &in, &pout, NULL, NULL, -1),
      mproc_pool_imap(copied_pool, map_copy, gen_three, &k, sizeof x, sizeof x, NULL, &im),
      mproc_pool_stats(copied_pool, &st, NULL, 0),
      with_futures ? mproc_future_wait(copied_blocked, -1) : MPROC_ESTATE,
      with_futures ? mproc_future_cancel(copied_blocked) : MPROC_ESTATE,
      mproc_pool_terminate(copied_pool),
      mproc_pool_free(copied_pool),
  };
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
    if (r[i] != MPROC_ESTATE)
      return 1 + (int)i;
  if (with_futures && mproc_future_result(copied_done, NULL, NULL, 0) != 0)
    return 100; /* finished before the fork: still readable */
  return 0;
}

static int forked_copy_main(void *arg) {
  (void)arg;
  return use_copied_pool(true);
}

/* A forked copy of the program that uses (or frees) a pool of its parent
 * inherits its memory but not its manager thread or workers: its calls
 * took the parent's results out of shared memory, and its free killed the
 * parent's workers through the inherited pidfds and then waited for ever.
 * They now return MPROC_ESTATE at once and touch nothing; the parent's
 * pool carries on, its workers and tasks untouched. */
START_TEST(test_pool_in_forked_copy) {
  S = shared_new();
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&copied_pool, &o));
  int x = 4;
  mproc_assert_ok(mproc_pool_submit(copied_pool, task_square, &x, sizeof x, &copied_done));
  mproc_assert_ok(mproc_future_wait(copied_done, SLACK_MS));
  mproc_assert_ok(mproc_pool_submit(copied_pool, task_block, NULL, 0, &copied_blocked));
  wait_task_started();
  pid_t worker = atomic_load(&S->pid);
  ck_assert_int_eq(run_in_helper(forked_copy_main, 30000), 0);
  ck_assert_int_eq(kill(worker, 0), 0);
  mproc_assert_err(mproc_future_wait(copied_blocked, 0), MPROC_ETIMEDOUT);
  atomic_store(&S->release, 1);
  mproc_assert_ok(mproc_future_result(copied_blocked, NULL, NULL, SLACK_MS));
  int in[2] = {5, 6}, out[2];
  mproc_assert_ok(mproc_pool_map(copied_pool, map_copy, in, 2, sizeof(int), out, sizeof(int), NULL,
                                 NULL, SLACK_MS));
  ck_assert_int_eq(out[1], 6);
  mproc_future_free(copied_done);
  mproc_future_free(copied_blocked);
  mproc_assert_ok(mproc_pool_free(copied_pool));
  copied_pool = NULL;
  shared_free(S);
}
END_TEST

static int task_uses_own_pool(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  return use_copied_pool(false);
}

/* A worker is a forked copy too: a task of a replacement worker (forked
 * after the program kept the pool's address) calling its own pool gets
 * MPROC_ESTATE instead of queueing into its siblings' rings. */
START_TEST(test_pool_used_by_its_own_task) {
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&copied_pool, &o));
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(copied_pool, task_kill_self, NULL, 0, &f));
  mproc_assert_err(mproc_future_result(f, NULL, NULL, SLACK_MS), MPROC_EWORKERDIED);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_submit(copied_pool, task_uses_own_pool, NULL, 0, &f));
  struct mproc_task_error e = {0};
  int r = mproc_future_result(f, NULL, NULL, SLACK_MS);
  if (r != 0)
    mproc_assert_ok(mproc_future_error(f, &e));
  ck_assert_msg(r == 0, "%s, task code %d", mproc_err_name(r), e.task_code);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(copied_pool));
  copied_pool = NULL;
}
END_TEST

/* ---- a pipe nobody reads ------------------------------------------------------ */

/* Whether SIGPIPE is pending for this thread or process. */
static bool sigpipe_pending(void) {
  sigset_t pending;
  ck_assert_int_eq(sigpending(&pending), 0);
  return sigismember(&pending, SIGPIPE) == 1;
}

/* Progress is drawn on stderr, which may be a pipe whose reader is gone
 * (`prog 2>&1 | head -1`): the standalone bar and a map's progress ended
 * the program with SIGPIPE.  Now the output is dropped, the calls work and
 * leave no SIGPIPE pending, and one the program had pending itself stays. */
START_TEST(test_progress_to_a_closed_pipe) {
  ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
  unsetenv("MPROC_PROGRESS");
  int p[2];
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  mproc__close(p[0]);
  fflush(stderr);
  int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(p[1], 2), 2);
  mproc__close(p[1]);

  mproc_progress_bar *b;
  mproc_assert_ok(mproc_progress_bar_new(&b, MPROC_PROGRESS_ON, 3, NULL, NULL));
  mproc_assert_ok(mproc_progress_bar_finish(b, 3));
  mproc_progress_bar_free(b);
  mproc_pool *pool;
  struct mproc_pool_options po = {.workers = 1, .start_method = MPROC_START_FORK};
  mproc_assert_ok(mproc_pool_new(&pool, &po));
  int in[3] = {1, 2, 3}, out[3];
  struct mproc_map_options mo = {.progress = MPROC_PROGRESS_ON};
  mproc_assert_ok(
      mproc_pool_map(pool, map_copy, in, 3, sizeof(int), out, sizeof(int), &mo, NULL, SLACK_MS));
  ck_assert_int_eq(out[2], 3);
  mproc_assert_ok(mproc_pool_free(pool));
  ck_assert(!sigpipe_pending());

  /* The program's own SIGPIPE, blocked and pending, is not taken. */
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &pipe_only, &old), 0);
  ck_assert_int_eq(raise(SIGPIPE), 0);
  mproc_assert_ok(mproc_progress_bar_new(&b, MPROC_PROGRESS_ON, 3, NULL, NULL));
  mproc_assert_ok(mproc_progress_bar_finish(b, 3));
  mproc_progress_bar_free(b);
  ck_assert(sigpipe_pending());
  const struct timespec zero = {0, 0};
  ck_assert_int_eq(sigtimedwait(&pipe_only, NULL, &zero), SIGPIPE);
  ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);

  ck_assert_int_eq(dup2(saved, 2), 2);
  mproc__close(saved);
}
END_TEST

/* ---- a peer killed in the middle of a frame ---------------------------------- */

/* The sender dies with most of a large frame unsent: the receiver sees the
 * end of the connection at once, with every deadline (0, > 0, -1), and
 * never a partial message. */
START_TEST(test_peer_killed_mid_frame) {
  for (int round = 0; round < 3; round++) {
    mproc_conn *a, *b;
    mproc_assert_ok(mproc_pipe(&a, &b, NULL));
    int ready[2];
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      static char big[4 << 20];
      close(ready[0]);
      mproc_conn_free(a);
      ck_assert_int_eq(write(ready[1], "x", 1), 1);
      /* Blocks once the socket buffer is full: nobody reads yet. */
      mproc_conn_send(b, big, sizeof big, -1);
      _exit(0);
    }
    close(ready[1]);
    char x;
    ck_assert_int_eq(read(ready[0], &x, 1), 1);
    close(ready[0]);
    mproc_assert_ok(mproc_conn_free(b));
    /* Wait until part of the frame is there, then kill the sender. */
    mproc_assert_ok(mproc_conn_poll(a, SLACK_MS));
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    static const int64_t deadlines[] = {0, 100, -1};
    void *buf = NULL;
    size_t len = 0;
    int64_t t0 = mproc_now_ms();
    mproc_assert_err(mproc_conn_recv_alloc(a, &buf, &len, deadlines[round]), MPROC_EEOF);
    ck_assert_int_lt(mproc_now_ms() - t0, SLACK_MS);
    ck_assert_ptr_null(buf);
    mproc_assert_err(mproc_conn_recv_alloc(a, &buf, &len, 0), MPROC_EEOF);
    mproc_assert_ok(mproc_conn_free(a));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault-classes");
  TCase *tc = mproc_test_tcase(s, "sigchld-ignored", 60);
  tcase_add_test(tc, test_sigchld_ignored_named_objects);
  tcase_add_test(tc, test_sigchld_ignored_command_status_lost);
  tcase_add_test(tc, test_sigchld_ignored_command_exits_at_once);
  tcase_add_test(tc, test_sigchld_ignored_worker_death);
  tcase_add_test(tc, test_sigchld_ignored_process_exits_at_once);
  tc = mproc_test_tcase(s, "stopped", 60);
  tcase_add_test(tc, test_stopped_pool_teardown);
  tcase_add_test(tc, test_stopped_worker_woken_after_timeout);
  tcase_add_test(tc, test_futures_of_stopped_and_dead_workers);
  tcase_add_test(tc, test_stopped_process_deadlines);
  tcase_add_test(tc, test_stopped_process_tree_terminate);
  tcase_add_test(tc, test_stopped_process_terminate);
  tcase_add_test(tc, test_stopped_command_deadlines);
  tcase_add_test(tc, test_stopped_forkserver);
  tcase_add_test(tc, test_stopped_exec_child_at_start);
  tcase_add_test(tc, test_forkserver_child_never_noted);
  tc = mproc_test_tcase(s, "cannot-fork", 60);
  tcase_add_test(tc, test_forkserver_cannot_fork);
  tc = mproc_test_tcase(s, "traced", 60);
  tcase_add_test(tc, test_traced_zombie_join);
  tc = mproc_test_tcase(s, "corrupt", 60);
  tcase_add_test(tc, test_foreign_named_objects);
  tcase_add_test(tc, test_short_queue_file);
  tc = mproc_test_tcase(s, "deadlines", 60);
  tcase_add_test(tc, test_every_deadline_argument);
  tc = mproc_test_tcase(s, "fd-limit", 60);
  tcase_add_test(tc, test_objects_at_fd_limit);
  tcase_add_test(tc, test_pool_used_at_fd_limit);
  tcase_add_test(tc, test_objects_without_std_fds);
  tcase_add_test(tc, test_keeper_born_without_descriptors);
  tc = mproc_test_tcase(s, "forked-copy", 60);
  tcase_add_test(tc, test_pool_in_forked_copy);
  tcase_add_test(tc, test_pool_used_by_its_own_task);
  tc = mproc_test_tcase(s, "sigpipe", 60);
  tcase_add_test(tc, test_progress_to_a_closed_pipe);
  tc = mproc_test_tcase(s, "conn", 60);
  tcase_add_test(tc, test_peer_killed_mid_frame);
  return mproc_test_run(s);
}
