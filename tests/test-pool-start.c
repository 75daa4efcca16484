/* Pools whose workers are started by spawn or forkserver: the options that
 * only make sense there, initializer argument bytes, task functions found by
 * reference (the program's and a shared library's), and functions a worker
 * cannot find.  Every other pool promise is checked by running the pool
 * suites once per start method (tests/CMakeLists.txt). */
#include "fault-helpers.h"
#include "pool-helpers.h"
#include "shm_layout.h"
#include "start.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/stat.h>

static const int methods[] = {MPROC_START_SPAWN, MPROC_START_FORKSERVER};

static int init_arg;  /* the initializer's argument, as the worker saw it */
static int init_seen; /* the initializer ran in this process */

static int init_copy(void *arg, mproc_task_ctx *ctx) {
  (void)ctx;
  memcpy(&init_arg, arg, sizeof init_arg);
  init_seen = 1;
  return 0;
}

static int task_init_arg(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  int r[2] = {init_seen, init_arg};
  return mproc_task_return(ctx, r, sizeof r);
}

static mproc_pool *pool_by(int method, int workers) {
  mproc_pool *p;
  struct mproc_pool_options o = {.workers = workers, .start_method = method};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  return p;
}

START_TEST(test_bad_options) {
  static int data_word;
  mproc_pool *p = NULL;
  int v = 7;
  struct mproc_pool_options o = {.workers = 1, .start_method = 99};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  o.start_method = -1;
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    /* A pointer without its size means nothing to a fresh image. */
    o = (struct mproc_pool_options){
        .workers = 1, .start_method = methods[i], .initializer = init_copy, .initarg = &v};
    mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
    o.initarg = NULL;
    o.initarg_len = sizeof v;
    mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
    /* An initializer that is no function of any loaded object. */
    o = (struct mproc_pool_options){
        .workers = 1, .start_method = methods[i], .initializer = (mproc_init_fn)(void *)&data_word};
    mproc_assert_err(mproc_pool_new(&p, &o), MPROC_ENOFUNC);
  }
  ck_assert_ptr_null(p);
  /* Under fork initarg stays a pointer into the worker's copy of memory. */
  o = (struct mproc_pool_options){
      .workers = 1, .start_method = MPROC_START_FORK, .initializer = init_copy, .initarg = &v};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_bad_env) {
  setenv("MPROC_START_METHOD", "vfork", 1);
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.workers = 1};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  ck_assert_ptr_null(p);
  setenv("MPROC_START_METHOD", "spawn", 1);
  mproc_assert_ok(mproc_pool_new(&p, &o));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* The initializer's argument bytes reach every worker, copied. */
START_TEST(test_initarg_bytes) {
  int v = 4242;
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p;
    struct mproc_pool_options o = {.workers = 2,
                                   .start_method = methods[i],
                                   .initializer = init_copy,
                                   .initarg = &v,
                                   .initarg_len = sizeof v};
    mproc_assert_ok(mproc_pool_new(&p, &o));
    for (int k = 0; k < 4; k++) {
      mproc_future *f;
      mproc_assert_ok(mproc_pool_submit(p, task_init_arg, NULL, 0, &f));
      const void *d;
      size_t n;
      mproc_assert_ok(mproc_future_result(f, &d, &n, 60000));
      ck_assert_uint_eq(n, 2 * sizeof(int));
      ck_assert_int_eq(((const int *)d)[0], 1);
      ck_assert_int_eq(((const int *)d)[1], 4242);
      mproc_future_free(f);
    }
    mproc_assert_ok(mproc_pool_free(p));
  }
}
END_TEST

/* The workers are fresh images: the parent's globals are not theirs. */
static int parent_mark;

static int task_mark(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  return mproc_task_return(ctx, &parent_mark, sizeof parent_mark);
}

START_TEST(test_worker_is_fresh_image) {
  parent_mark = 99;
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = pool_by(methods[i], 1);
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(p, task_mark, NULL, 0, &f));
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f, &d, &n, 60000));
    ck_assert_int_eq(*(const int *)d, 0);
    mproc_future_free(f);
    mproc_assert_ok(mproc_pool_free(p));
  }
}
END_TEST

/* Which of the two descriptor numbers sent are open in the worker. */
static int task_fd_view(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  const int *fd = arg;
  int open_[2] = {fcntl(fd[0], F_GETFD) >= 0, fcntl(fd[1], F_GETFD) >= 0};
  return mproc_task_return(ctx, open_, sizeof open_);
}

/* A worker has the program's inheritable descriptors (at their numbers),
 * not its close-on-exec ones. */
START_TEST(test_worker_descriptors) {
  int fd[2];
  ck_assert_int_eq(dup2(0, 700), 700);
  ck_assert_int_eq(dup3(0, 701, O_CLOEXEC), 701);
  fd[0] = 700;
  fd[1] = 701;
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = pool_by(methods[i], 1);
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(p, task_fd_view, fd, sizeof fd, &f));
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f, &d, &n, 60000));
    ck_assert_int_eq(((const int *)d)[0], 1);
    ck_assert_int_eq(((const int *)d)[1], 0);
    mproc_future_free(f);
    mproc_assert_ok(mproc_pool_free(p));
  }
  close(700);
  close(701);
}
END_TEST

/* Copies the test library to a fresh path (so it can be removed). */
static void copy_lib(const char *from, char *to, size_t cap) {
  snprintf(to, cap, "/tmp/mproc-fnlib-%d.so", (int)getpid());
  int in = open(from, O_RDONLY | O_CLOEXEC);
  ck_assert_int_ge(in, 0);
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  ck_assert_int_ge(out, 0);
  struct stat st;
  ck_assert_int_eq(fstat(in, &st), 0);
  ck_assert_int_eq(sendfile(out, in, NULL, (size_t)st.st_size), st.st_size);
  close(in);
  close(out);
}

/* A function of a library the program loaded after the pool started: the
 * worker loads it by path. */
START_TEST(test_library_function) {
  void *lib = dlopen(FNLIB_PATH, RTLD_NOW | RTLD_LOCAL);
  ck_assert_ptr_nonnull(lib);
  mproc_map_fn fn = (mproc_map_fn)dlsym(lib, "fnlib_map");
  ck_assert_ptr_nonnull(fn);
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = pool_by(methods[i], 2);
    int in[50], out[50];
    for (int k = 0; k < 50; k++)
      in[k] = k;
    mproc_assert_ok(mproc_pool_map(p, fn, in, 50, sizeof *in, out, sizeof *out, NULL, NULL, 60000));
    for (int k = 0; k < 50; k++)
      ck_assert_int_eq(out[k], 40 + k);
    mproc_assert_ok(mproc_pool_free(p));
  }
  dlclose(lib);
}
END_TEST

/* A function no worker can find fails its task with MPROC_ENOFUNC and a
 * message naming it; the pool and its workers carry on. */
START_TEST(test_unresolvable_function) {
  static int data_word;
  char path[64];
  copy_lib(FNLIB_PATH, path, sizeof path);
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_ptr_nonnull(lib);
  mproc_map_fn gone = (mproc_map_fn)dlsym(lib, "fnlib_map");
  ck_assert_ptr_nonnull(gone);
  ck_assert_int_eq(unlink(path), 0); /* the workers cannot load it any more */
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = pool_by(methods[i], 1);
    int in[3] = {1, 2, 3}, out[3];
    struct mproc_task_error err;
    mproc_assert_err(
        mproc_pool_map(p, gone, in, 3, sizeof *in, out, sizeof *out, NULL, &err, 60000),
        MPROC_ETASK);
    ck_assert_int_eq(err.task_code, MPROC_ENOFUNC);
    ck_assert_msg(strstr(err.message, "mproc-fnlib") != NULL, "message: %s", err.message);
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(p, (mproc_task_fn)(void *)&data_word, NULL, 0, &f));
    const void *d;
    size_t n;
    mproc_assert_err(mproc_future_result(f, &d, &n, 60000), MPROC_ETASK);
    ck_assert_int_eq(mproc_future_error(f, &err), 0);
    ck_assert_int_eq(err.task_code, MPROC_ENOFUNC);
    ck_assert_msg(strstr(err.message, "function") != NULL, "message: %s", err.message);
    mproc_future_free(f);
    run_ok(p, task_mark); /* still serving */
    mproc_assert_ok(mproc_pool_free(p));
  }
  dlclose(lib);
}
END_TEST

static int task_one(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  int v = 1;
  return mproc_task_return(ctx, &v, sizeof v);
}

/* A pool names a bounded number of distinct functions; one more fails its
 * task (-ENOSPC, saying why), and functions already named keep working. */
START_TEST(test_function_table_full) {
  mproc__pool_fn_table_max = 2;
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = pool_by(methods[i], 1);
    mproc_task_fn fns[3] = {task_mark, task_init_arg, task_one};
    for (int k = 0; k < 3; k++) {
      mproc_future *f;
      mproc_assert_ok(mproc_pool_submit(p, fns[k], NULL, 0, &f));
      const void *d;
      size_t n;
      if (k < 2) {
        mproc_assert_ok(mproc_future_result(f, &d, &n, 60000));
      } else {
        struct mproc_task_error err;
        mproc_assert_err(mproc_future_result(f, &d, &n, 60000), -ENOSPC);
        ck_assert_int_eq(mproc_future_error(f, &err), 0);
        ck_assert_msg(strstr(err.message, "distinct task functions") != NULL, "message: %s",
                      err.message);
      }
      mproc_future_free(f);
    }
    run_ok(p, task_mark); /* the functions already named still work */
    mproc_assert_ok(mproc_pool_free(p));
  }
  mproc__pool_fn_table_max = MPROC__FN_TABLE;
}
END_TEST

/* ---- a worker's group dies with it, the program SIGKILLed ---------------- */

/* Starts a plain helper (no library call) and writes its pid to the pipe
 * sent with the task. */
static int task_fork_helper(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  const int *fds;
  if (mproc_task_fds(ctx, &fds) != 1)
    return 1;
  pid_t g = fork();
  if (g == 0) {
    for (;;)
      pause();
  }
  return g > 0 && write(fds[0], &g, sizeof g) == (ssize_t)sizeof g ? 0 : 1;
}

struct program_arg {
  int method;
  int wfd;
};

/* The program: a pool whose task leaves a helper behind, then it waits to
 * be killed. */
static int program_with_pool(void *arg) {
  const struct program_arg *a = arg;
  mproc_pool *pool;
  struct mproc_pool_options po = {.workers = 1, .start_method = a->method};
  struct mproc_submit_options so = {.retries = -1, .fds = &a->wfd, .nfds = 1};
  mproc_future *f;
  const void *d;
  size_t n;
  if (mproc_pool_new(&pool, &po) != 0 ||
      mproc_pool_submit_ex(pool, task_fork_helper, NULL, 0, &so, &f) != 0 ||
      mproc_future_result(f, &d, &n, 30000) != 0)
    return 1;
  for (;;)
    pause();
}

START_TEST(test_worker_group_dies_with_killed_program) {
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    struct program_arg a = {.method = methods[i], .wfd = p[1]};
    struct mproc__spawn_opts o = {.fn = program_with_pool, .arg = &a};
    pid_t prog, helper;
    int prog_fd;
    mproc_assert_ok(mproc__spawn(&o, &prog, &prog_fd));
    int helper_fd = mproc_test_read_pidfd(p[0], &helper);
    /* The worker dies by its parent-death signal, its group with it. */
    mproc_test_kill_expect_follow(prog_fd, helper_fd);
    close(p[0]);
    close(p[1]);
  }
}
END_TEST

/* ---- starting a worker fails: environment too big, out of fds, of
 * processes ------------------------------------------------------------- */

/* Sets (or, with on false, removes) a variable the kernel refuses to pass
 * to an exec: one string over 128 KiB. */
static void big_env(bool on) {
  if (!on) {
    ck_assert_int_eq(unsetenv("MPROC_TEST_BIG"), 0);
    return;
  }
  mproc_test_setenv_filled("MPROC_TEST_BIG", 200000, 'x');
}

static struct rlimit saved_nofile;

/* Leaves no descriptor number free (on), or restores the limit. */
static void no_fds(bool on) {
  if (!on) {
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
    return;
  }
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
  int lowest = dup(0);
  ck_assert_int_ge(lowest, 0);
  close(lowest);
  struct rlimit low = {(rlim_t)lowest, saved_nofile.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
}

static int task_die(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  raise(SIGKILL);
  return 0;
}

/* Under `cond`, a pool cannot be made (error `err`, nothing left behind),
 * and a worker that dies cannot be replaced; once the condition is gone
 * the pool replaces it by itself and serves again. */
static void start_fails(int method, void (*cond)(bool on), int err) {
  mproc_forkserver_stop(); /* the server, too, must be started anew */
  int fds = mproc_test_count_fds();
  mproc_pool *p = NULL;
  struct mproc_pool_options o = {.workers = 2, .start_method = method};
  cond(true);
  int r = mproc_pool_new(&p, &o);
  cond(false);
  mproc_assert_err(r, err);
  ck_assert_ptr_null(p);
  ck_assert_int_eq(mproc_test_count_children(), 0);
  ck_assert_int_eq(mproc_test_count_fds(), fds);

  o.workers = 1;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  run_ok(p, task_mark);
  mproc_forkserver_stop();
  cond(true);
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_die, NULL, 0, &f));
  mproc_assert_err(mproc_future_wait(f, 60000), 0);
  mproc_future_free(f);
  /* The replacement is tried under the pool's lock with the count bumped:
   * once the count shows it, the attempt has failed. */
  struct mproc_worker_stats ws;
  int64_t dl = mproc__deadline(mproc_test_scaled_ms(30000));
  while (mproc_pool_stats(p, NULL, &ws, 1) == 1 && ws.replaced == 0 && mproc_now_ms() < dl)
    sleep_ms(1);
  ck_assert_uint_eq(ws.replaced, 1);
  ck_assert_int_eq(ws.pid, 0);
  cond(false);
  run_ok(p, task_mark); /* replaced by a later attempt */
  mproc_assert_ok(mproc_pool_free(p));
}

START_TEST(test_start_fails) {
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    start_fails(methods[i], big_env, MPROC_E2BIG);
    start_fails(methods[i], no_fds, -EMFILE);
  }
}
END_TEST

/* As an unprivileged user with no process allowance (root ignores
 * RLIMIT_NPROC, hence the uid change), a pool cannot be made: -EAGAIN, and
 * nothing is left.  Runs in a forked helper; 0 when all held. */
static int pool_without_nproc(void *arg) {
  (void)arg;
  if (!become_nobody(true))
    return 1;
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    mproc_pool *p = NULL;
    struct mproc_pool_options o = {.workers = 2, .start_method = methods[i]};
    if (mproc_pool_new(&p, &o) != -EAGAIN || p != NULL)
      return 3;
    if (mproc_test_count_children() != 0)
      return 4;
  }
  return 0;
}

START_TEST(test_out_of_processes) { ck_assert_int_eq(run_in_helper(pool_without_nproc, 60000), 0); }
END_TEST

/* ---- workers started side by side ------------------------------------ */

/* The variable that makes an exec'd image of this test meet its siblings
 * before the library takes it over: "b<r>,<w>" (a barrier: wait until two
 * images wrote their byte to the pipe) or "t<r>,<w>" (a token: the image that
 * takes the pipe's one byte goes on, any other exits 3 before it answers).
 * The pipe's ends are inheritable on purpose, to reach the new image. */
#define MEET_ENV "MPROC_TEST_MEET"

__attribute__((constructor(MPROC__ENTRY_PRIORITY + 1))) static void meet_siblings(void) {
  const char *m = getenv(MEET_ENV);
  if (m == NULL || getenv("MPROC_WORKER") == NULL)
    return;
  int rfd = -1, wfd = -1;
  if (m[0] == 't' && sscanf(m + 1, "%d", &rfd) == 1) {
    char c;
    fcntl(rfd, F_SETFL, O_NONBLOCK);
    if (read(rfd, &c, 1) != 1)
      _exit(3);
    return;
  }
  if (m[0] != 'b' || sscanf(m + 1, "%d,%d", &rfd, &wfd) != 2 || write(wfd, "x", 1) != 1)
    _exit(4);
  /* A started sibling's byte is an event no call can wait for without
   * taking it: look at the count until it shows, within a hang bound. */
  int64_t dl = mproc_now_ms() + 10000 * mproc_test_scaled_ms(1);
  int n = 0;
  while (ioctl(rfd, FIONREAD, &n) == 0 && n < 2 && mproc_now_ms() < dl) {
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  if (n < 2)
    _exit(5);
}

/* Makes a spawn pool of two whose images meet as `kind` says ('b' or 't',
 * see MEET_ENV) over a fresh pipe; returns mproc_pool_new's result. */
static int pool_meeting(char kind, mproc_pool **p) {
  int pp[2];
  ck_assert_int_eq(pipe(pp), 0);
  if (kind == 't')
    ck_assert_int_eq(write(pp[1], "t", 1), 1);
  char v[32];
  snprintf(v, sizeof v, "%c%d,%d", kind, pp[0], pp[1]);
  setenv(MEET_ENV, v, 1);
  struct mproc_pool_options o = {.workers = 2, .start_method = MPROC_START_SPAWN};
  int r = mproc_pool_new(p, &o);
  unsetenv(MEET_ENV);
  close(pp[0]);
  close(pp[1]);
  return r;
}

/* A spawn pool launches every worker before it waits for any: each of its
 * two workers' images, before answering, waits for the other to exist.
 * Started one after the other, the first would wait in vain (and the pool
 * would fail to start). */
START_TEST(test_workers_start_side_by_side) {
  mproc_pool *p = NULL;
  mproc_assert_ok(pool_meeting('b', &p));
  run_ok(p, task_mark);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* One of two launched workers fails before it answers: the pool fails to
 * start with that worker's error, and the one that did start is not left
 * behind (no child, no descriptor). */
START_TEST(test_one_of_launched_fails) {
  int fds = mproc_test_count_fds();
  mproc_pool *p = NULL;
  mproc_assert_err(pool_meeting('t', &p), MPROC_ECHILDFAILED);
  ck_assert_ptr_null(p);
  ck_assert_int_eq(mproc_test_count_children(), 0);
  ck_assert_int_eq(mproc_test_count_fds(), fds);
}
END_TEST

/* The two halves of a start, directly: several children launched, then
 * each finished; a launch whose exec fails is reported by its finish, with
 * nothing left; bad arguments are MPROC_EINVAL. */
/* An entry of this test's own: exits with its argument. */
#define EXIT_ENTRY 6

static int exit_with_arg(const struct mproc__child_ctx *c) { return *(const int *)c->arg; }

__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void register_exit_entry(void) {
  mproc__start_entry_register(EXIT_ENTRY, exit_with_arg);
}

extern const char *mproc__spawn_exe;

START_TEST(test_start_launch_finish) {
  int fds = mproc_test_count_fds();
  struct mproc__start_pending pd[3];
  int codes[3] = {3, 4, 5};
  for (int k = 0; k < 3; k++) {
    struct mproc__start_req rq = {.method = MPROC_START_SPAWN,
                                  .entry = EXIT_ENTRY,
                                  .arg = &codes[k],
                                  .len = sizeof codes[k],
                                  .name = "launched",
                                  .ident = ""};
    mproc_assert_ok(mproc__start_launch(&rq, &pd[k]));
  }
  for (int k = 0; k < 3; k++) {
    pid_t pid = 0;
    int pidfd = -1, code = -1;
    mproc_assert_ok(mproc__start_finish(&pd[k], &pid, &pidfd));
    ck_assert_int_gt(pid, 0);
    mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(mproc_test_scaled_ms(30000))));
    mproc__close(pidfd);
    ck_assert_int_eq(code, codes[k]);
  }
  /* An exec that fails: the launch went out, the finish tells. */
  const char *exe = mproc__spawn_exe;
  mproc__spawn_exe = "/nonexistent/mproc-test";
  struct mproc__start_req rq = {.method = MPROC_START_SPAWN,
                                .entry = EXIT_ENTRY,
                                .arg = &codes[0],
                                .len = sizeof codes[0],
                                .name = "",
                                .ident = ""};
  int r = mproc__start_launch(&rq, &pd[0]);
  mproc__spawn_exe = exe;
  mproc_assert_ok(r);
  pid_t pid = 0;
  int pidfd = -1;
  mproc_assert_err(mproc__start_finish(&pd[0], &pid, &pidfd), -ENOENT);
  ck_assert_int_eq(mproc_test_count_children(), 0);
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  /* Bad arguments. */
  mproc_assert_err(mproc__start_launch(NULL, &pd[0]), MPROC_EINVAL);
  mproc_assert_err(mproc__start_launch(&rq, NULL), MPROC_EINVAL);
  rq.method = 99;
  mproc_assert_err(mproc__start_launch(&rq, &pd[0]), MPROC_EINVAL);
  mproc_assert_err(mproc__start_finish(NULL, &pid, &pidfd), MPROC_EINVAL);
  mproc_assert_err(mproc__start_finish(&pd[1], NULL, &pidfd), MPROC_EINVAL);
  mproc_assert_err(mproc__start_finish(&pd[1], &pid, NULL), MPROC_EINVAL);
  ck_assert_int_eq(mproc_test_count_fds(), fds);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-start");
  TCase *tc = mproc_test_tcase(s, "pool-start", 120);
  tcase_add_test(tc, test_bad_options);
  tcase_add_test(tc, test_bad_env);
  tcase_add_test(tc, test_initarg_bytes);
  tcase_add_test(tc, test_worker_is_fresh_image);
  tcase_add_test(tc, test_worker_descriptors);
  tcase_add_test(tc, test_library_function);
  tcase_add_test(tc, test_unresolvable_function);
  tcase_add_test(tc, test_worker_group_dies_with_killed_program);
  tcase_add_test(tc, test_function_table_full);
  tcase_add_test(tc, test_start_fails);
  tcase_add_test(tc, test_out_of_processes);
  tcase_add_test(tc, test_workers_start_side_by_side);
  tcase_add_test(tc, test_one_of_launched_fails);
  tcase_add_test(tc, test_start_launch_finish);
  return mproc_test_run(s);
}
