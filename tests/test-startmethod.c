/* Start methods beyond fork (src/start_spawn.c, src/forkserver.c) and
 * function references (src/fnref.c): bad input and failures.  The process
 * suite itself runs under every method (tests/CMakeLists.txt).
 * ctest-labels: threads */
#include "harness.h"
#include "start.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define LONG_MS mproc_test_scaled_ms(30000)

extern const char *mproc__spawn_exe;

static const int methods[] = {MPROC_START_SPAWN, MPROC_START_FORKSERVER};

/* ---- helpers ------------------------------------------------------------- */

static int ret_len(const void *arg, size_t len) {
  (void)arg;
  return (int)len;
}

static int sleep_forever(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  for (;;)
    pause();
  return 0;
}

/* Starts fn under `method` and returns its exit code (start errors as is). */
static int run_code(int method, mproc_process_fn fn, const void *arg, size_t len) {
  mproc_process_options o = {.start_method = method};
  mproc_process *p = NULL;
  int r = mproc_process_new(&p, fn, arg, len, &o);
  if (r < 0)
    return r;
  r = mproc_process_start(p);
  if (r == 0) {
    mproc_assert_ok(mproc_process_join(p, LONG_MS));
    mproc_assert_ok(mproc_process_exitcode(p, &r));
  }
  mproc_process_free(p);
  return r;
}

/* Our child other than `except`: with one process object running, that is
 * the forkserver. */
static pid_t find_server_except(pid_t except) {
  DIR *d = opendir("/proc");
  ck_assert_ptr_nonnull(d);
  pid_t found = -1;
  struct dirent *e;
  while (found < 0 && (e = readdir(d)) != NULL) {
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid <= 0 || pid == except)
      continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
      continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *q = strrchr(buf, ')'), st;
    int ppid;
    if (q != NULL && sscanf(q + 1, " %c %d", &st, &ppid) == 2 && ppid == getpid())
      found = pid;
  }
  closedir(d);
  return found;
}

static void copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  ck_assert_int_ge(in, 0);
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  ck_assert_int_ge(out, 0);
  char buf[65536];
  ssize_t n;
  while ((n = read(in, buf, sizeof buf)) > 0)
    ck_assert_int_eq(write(out, buf, (size_t)n), n);
  ck_assert_int_eq(n, 0);
  close(in);
  close(out);
  ck_assert_int_eq(chmod(to, 0755), 0); /* O_TRUNC kept an older mode */
}

/* ---- function references ---------------------------------------------- */

static int data_word = 7;

START_TEST(test_function_registry) {
  mproc_function fn;
  mproc_assert_err(mproc_function_register(NULL, MPROC_FUNCTION(ret_len)), MPROC_EINVAL);
  mproc_assert_err(mproc_function_register("", MPROC_FUNCTION(ret_len)), MPROC_EINVAL);
  mproc_assert_err(mproc_function_register("x", NULL), MPROC_EINVAL);
  char longname[MPROC_FUNCTION_NAME_MAX + 2];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  mproc_assert_err(mproc_function_register(longname, MPROC_FUNCTION(ret_len)), MPROC_ENAMETOOLONG);
  longname[MPROC_FUNCTION_NAME_MAX] = '\0'; /* the longest allowed */
  mproc_assert_ok(mproc_function_register(longname, MPROC_FUNCTION(ret_len)));
  mproc_assert_ok(mproc_function_register("ret_len", MPROC_FUNCTION(ret_len)));
  mproc_assert_ok(mproc_function_register("ret_len", MPROC_FUNCTION(ret_len)));
  mproc_assert_err(mproc_function_register("ret_len", MPROC_FUNCTION(sleep_forever)), MPROC_EEXIST);
  mproc_assert_err(mproc_function_lookup(NULL, &fn), MPROC_EINVAL);
  mproc_assert_err(mproc_function_lookup("ret_len", NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_function_lookup("nope", &fn), MPROC_ENOENT);
  mproc_assert_ok(mproc_function_lookup("ret_len", &fn));
  ck_assert(fn == MPROC_FUNCTION(ret_len));
}
END_TEST

START_TEST(test_fnref_resolve) {
  struct mproc__fnref ref;
  mproc_function fn = NULL;
  char why[512];
  /* The program's own function and a shared library's (libc) come back. */
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(sleep_forever), &ref));
  ck_assert_int_eq(ref.is_main, 1);
  ck_assert_int_gt(ref.build_id_len, 0);
  mproc_assert_ok(mproc__fnref_resolve(&ref, &fn, why, sizeof why));
  ck_assert(fn == MPROC_FUNCTION(sleep_forever));
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(getppid), &ref));
  ck_assert_int_eq(ref.is_main, 0);
  ck_assert(ref.path[0] == '/');
  mproc_assert_ok(mproc__fnref_resolve(&ref, &fn, why, sizeof why));
  ck_assert(fn == MPROC_FUNCTION(getppid));

  /* Data is not code; a heap address is in no object. */
  mproc_assert_err(mproc__fnref_make((mproc_function)(void *)&data_word, &ref), MPROC_ENOFUNC);
  void *heap = malloc(16);
  mproc_assert_err(mproc__fnref_make((mproc_function)heap, &ref), MPROC_ENOFUNC);
  free(heap);

  /* A forged offset, a changed build-id, a missing library: errors that
   * name the function, never a jump. */
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(sleep_forever), &ref));
  struct mproc__fnref bad = ref;
  bad.offset = UINT64_MAX / 2;
  mproc_assert_err(mproc__fnref_resolve(&bad, &fn, why, sizeof why), MPROC_ENOFUNC);
  ck_assert_msg(strstr(why, "<program>+0x") != NULL && strstr(why, "outside") != NULL, "%s", why);
  bad = ref;
  bad.build_id[0] ^= 0xff;
  mproc_assert_err(mproc__fnref_resolve(&bad, &fn, why, sizeof why), MPROC_ENOFUNC);
  ck_assert_msg(strstr(why, "build-id") != NULL, "%s", why);
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(getppid), &bad));
  snprintf(bad.path, sizeof bad.path, "/nonexistent/libgone.so");
  bad.build_id[0] ^= 0xff;
  mproc_assert_err(mproc__fnref_resolve(&bad, &fn, why, sizeof why), MPROC_ENOFUNC);
  ck_assert_msg(strstr(why, "/nonexistent/libgone.so+0x") != NULL, "%s", why);

  /* A registered name travels with the reference and wins. */
  mproc_assert_ok(mproc_function_register("sleeper", MPROC_FUNCTION(sleep_forever)));
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(sleep_forever), &ref));
  ck_assert_str_eq(ref.name, "sleeper");
  ref.offset = UINT64_MAX / 2;
  mproc_assert_ok(mproc__fnref_resolve(&ref, &fn, why, sizeof why));
  ck_assert(fn == MPROC_FUNCTION(sleep_forever));
}
END_TEST

/* ---- the internal entry API (what the pool's workers will use) ---------- */

#define TEST_ENTRY (MPROC__ENTRY_MAX - 1)

/* Writes the entry's view to its first descriptor: the function's result,
 * how many descriptors came, whether they are close-on-exec. */
static int test_entry(const struct mproc__child_ctx *c) {
  int v[3] = {c->fn != NULL ? ((mproc_process_fn)c->fn)(c->arg, c->len) : -1, (int)c->nfds, 1};
  for (size_t i = 0; i < c->nfds; i++)
    if (!(fcntl(c->fds[i], F_GETFD) & FD_CLOEXEC))
      v[2] = 0;
  if (c->nfds == 0 || write(c->fds[0], v, sizeof v) != (ssize_t)sizeof v)
    return 1;
  return 0;
}

__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void register_test_entry(void) {
  mproc__start_entry_register(TEST_ENTRY, test_entry);
}

START_TEST(test_entry_with_fds) {
  int pfd[2], other[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0); /* reaches the child only if sent */
  ck_assert_int_eq(pipe2(other, O_CLOEXEC), 0);
  int send[2] = {pfd[1], other[0]};
  int v = 5;
  for (size_t i = 0; i < 2; i++) {
    struct mproc__start_req rq = {.method = methods[i],
                                  .entry = TEST_ENTRY,
                                  .fn = MPROC_FUNCTION(ret_len),
                                  .arg = &v,
                                  .len = sizeof v,
                                  .name = "entry",
                                  .ident = "",
                                  .fds = send,
                                  .nfds = 2};
    pid_t pid;
    int pidfd, code = -1;
    mproc_assert_ok(mproc__start_child(&rq, &pid, &pidfd));
    int got[3];
    ck_assert_int_gt(mproc__poll1(pfd[0], POLLIN, mproc__deadline(LONG_MS)), 0);
    ck_assert_int_eq(read(pfd[0], got, sizeof got), (ssize_t)sizeof got);
    ck_assert_int_eq(got[0], (int)sizeof v);
    ck_assert_int_eq(got[1], 2);
    ck_assert_int_eq(got[2], 1);
    mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(LONG_MS)));
    ck_assert_int_eq(code, 0);
    mproc__close(pidfd);

    /* A request without a function: the entry gets NULL. */
    rq.fn = NULL;
    mproc_assert_ok(mproc__start_child(&rq, &pid, &pidfd));
    ck_assert_int_gt(mproc__poll1(pfd[0], POLLIN, mproc__deadline(LONG_MS)), 0);
    ck_assert_int_eq(read(pfd[0], got, sizeof got), (ssize_t)sizeof got);
    ck_assert_int_eq(got[0], -1);
    mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(LONG_MS)));
    ck_assert_int_eq(code, 0);
    mproc__close(pidfd);
    rq.fn = MPROC_FUNCTION(ret_len);

    /* An id no constructor registered: the child says so and fails. */
    rq.entry = TEST_ENTRY - 1;
    mproc_assert_ok(mproc__start_child(&rq, &pid, &pidfd));
    mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(LONG_MS)));
    ck_assert_int_eq(code, 127);
    mproc__close(pidfd);

    /* Bad requests. */
    rq.entry = 0;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
    rq.entry = MPROC__ENTRY_PROCESS; /* a process always has a function */
    rq.fn = NULL;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
    rq.fn = MPROC_FUNCTION(ret_len);
    rq.entry = MPROC__ENTRY_MAX;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
    rq.entry = TEST_ENTRY;
    rq.nfds = MPROC__START_FDS_MAX + 1;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
    rq.nfds = 1;
    rq.fds = NULL;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
    rq.method = MPROC_START_FORK; /* mproc__spawn's business, not this one's */
    rq.fds = send;
    mproc_assert_err(mproc__start_child(&rq, &pid, &pidfd), MPROC_EINVAL);
  }
  for (int i = 0; i < 2; i++) {
    close(pfd[i]);
    close(other[i]);
  }
}
END_TEST

/* Output the caller buffered is written before the child starts, unless
 * the request says nothing needs flushing (a pool's hot path). */
START_TEST(test_noflush) {
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  FILE *f = fdopen(pfd[1], "w");
  ck_assert_ptr_nonnull(f);
  setvbuf(f, NULL, _IOFBF, 4096);
  for (size_t i = 0; i < 2; i++)
    for (int flush = 0; flush < 2; flush++) {
      ck_assert_int_ge(fputs("x", f), 0);
      struct mproc__start_req rq = {.method = methods[i],
                                    .entry = MPROC__ENTRY_PROCESS,
                                    .fn = MPROC_FUNCTION(ret_len),
                                    .name = "",
                                    .ident = "",
                                    .flags = flush ? 0 : MPROC__START_NOFLUSH};
      pid_t pid;
      int pidfd, code;
      mproc_assert_ok(mproc__start_child(&rq, &pid, &pidfd));
      char c;
      struct pollfd p = {.fd = pfd[0], .events = POLLIN};
      ck_assert_int_eq(poll(&p, 1, 0), flush ? 1 : 0);
      if (!flush) /* still ours to write */
        ck_assert_int_eq(fflush(f), 0);
      ck_assert_int_eq(read(pfd[0], &c, 1), 1);
      mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(LONG_MS)));
      mproc__close(pidfd);
    }
  fclose(f);
  close(pfd[0]);
}
END_TEST

/* ---- options ----------------------------------------------------------- */

START_TEST(test_bad_options) {
  mproc_process *p = NULL;
  mproc_process_options o = {.start_method = 4};
  mproc_assert_err(mproc_process_new(&p, ret_len, NULL, 0, &o), MPROC_EINVAL);
  o.start_method = -1;
  mproc_assert_err(mproc_process_new(&p, ret_len, NULL, 0, &o), MPROC_EINVAL);
  ck_assert_ptr_null(p);
  /* A typo in the environment is an error, not a silent fork. */
  ck_assert_int_eq(setenv("MPROC_START_METHOD", "forksrever", 1), 0);
  mproc_assert_err(mproc_process_new(&p, ret_len, NULL, 0, NULL), MPROC_EINVAL);
  ck_assert_int_eq(setenv("MPROC_START_METHOD", "spawn", 1), 0);
  int v = 0;
  mproc_assert_ok(mproc_process_new(&p, ret_len, &v, sizeof v, NULL));
  ck_assert_int_eq(unsetenv("MPROC_START_METHOD"), 0);
  mproc_assert_ok(mproc_process_start(p)); /* spawn, as created */
  mproc_assert_ok(mproc_process_join(p, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(p, &code));
  ck_assert_int_eq(code, (int)sizeof v);
  mproc_process_free(p);
  /* No other image could find a function that is not code. */
  for (size_t i = 0; i < 2; i++) {
    o.start_method = methods[i];
    mproc_assert_err(mproc_process_new(&p, (mproc_process_fn)(void *)&data_word, NULL, 0, &o),
                     MPROC_ENOFUNC);
  }
  mproc_assert_err(mproc_forkserver_restarts(), 0);
  mproc_forkserver_stop(); /* none running: nothing to do */
}
END_TEST

/* ---- what reaches the child -------------------------------------------- */

/* Checks every byte of a large argument and its alignment. */
static int check_big(const void *arg, size_t len) {
  if ((uintptr_t)arg % _Alignof(max_align_t) != 0)
    return 2;
  const unsigned char *b = arg;
  for (size_t i = 0; i < len; i++)
    if (b[i] != (unsigned char)(i * 7))
      return 1;
  return 0;
}

START_TEST(test_big_argument) {
  size_t len = 3u << 20; /* far more than a socket buffer */
  unsigned char *b = malloc(len);
  ck_assert_ptr_nonnull(b);
  for (size_t i = 0; i < len; i++)
    b[i] = (unsigned char)(i * 7);
  for (size_t i = 0; i < 2; i++)
    ck_assert_int_eq(run_code(methods[i], check_big, b, len), 0);
  free(b);
}
END_TEST

/* The variable, directory and umask the parent set after the forkserver
 * started must be the child's. */
static int check_context(const void *arg, size_t len) {
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd) == NULL || strlen(cwd) != len || memcmp(cwd, arg, len) != 0)
    return 1;
  const char *v = getenv("MPROC_TEST_LATE");
  if (v == NULL || strcmp(v, "yes") != 0)
    return 2;
  mode_t m = umask(0);
  if (m != 027)
    return 3;
  if (getenv(MPROC__WORKER_ENV) != NULL)
    return 4;
  return 0;
}

START_TEST(test_child_context) {
  for (size_t i = 0; i < 2; i++) {
    ck_assert_int_eq(run_code(methods[i], ret_len, NULL, 0), 0); /* server up */
    char dir[] = "/tmp/mproc-startm-XXXXXX", old[4096];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_ptr_nonnull(getcwd(old, sizeof old));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_int_eq(setenv("MPROC_TEST_LATE", "yes", 1), 0);
    mode_t um = umask(027);
    char real[4096];
    ck_assert_ptr_nonnull(getcwd(real, sizeof real));
    int code = run_code(methods[i], check_context, real, strlen(real));
    umask(um);
    unsetenv("MPROC_TEST_LATE");
    ck_assert_int_eq(chdir(old), 0);
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_int_eq(code, 0);
  }
}
END_TEST

/* What each method's child sees of state the parent changed after the
 * program (and the forkserver) started, as docs/reference/process.md's
 * table says: memory only under fork; the starting thread's signal mask
 * always; rlimits the caller's, under forkserver the caller's when the
 * server started.  (RLIMIT_MSGQUEUE: sanitizer runtimes set RLIMIT_CORE in
 * every image they start.) */
static int changed_global = 1;

static int report_view(const void *arg, size_t len) {
  (void)arg, (void)len;
  sigset_t m;
  struct rlimit mq;
  if (pthread_sigmask(SIG_BLOCK, NULL, &m) != 0 || getrlimit(RLIMIT_MSGQUEUE, &mq) != 0)
    return 100;
  return (changed_global == 2) | (sigismember(&m, SIGUSR2) == 1) << 1 | (mq.rlim_cur == 4096) << 2;
}

START_TEST(test_child_view) {
  static const int all[] = {MPROC_START_FORK, MPROC_START_SPAWN, MPROC_START_FORKSERVER};
  ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, ret_len, NULL, 0), 0); /* server up */
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_MSGQUEUE, &old), 0);
  ck_assert(old.rlim_max == RLIM_INFINITY || old.rlim_max >= 4096);
  low = (struct rlimit){4096, old.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_MSGQUEUE, &low), 0);
  changed_global = 2;
  sigset_t usr2, saved;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr2, &saved), 0);
  int got[3];
  for (size_t i = 0; i < 3; i++)
    got[i] = run_code(all[i], report_view, NULL, 0);
  ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &saved, NULL), 0);
  ck_assert_int_eq(setrlimit(RLIMIT_MSGQUEUE, &old), 0);
  changed_global = 1;
  ck_assert_int_eq(got[0], 1 | 2 | 4); /* fork: a copy of everything */
  ck_assert_int_eq(got[1], 2 | 4);     /* spawn: fresh memory */
  ck_assert_int_eq(got[2], 2);         /* forkserver: the server's rlimits */
}
END_TEST

/* ---- functions of libraries -------------------------------------------- */

START_TEST(test_dlopen_after_start) {
  /* The forkserver runs before the library is loaded: it must load it. */
  ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, ret_len, NULL, 0), 0);
  void *h = dlopen(FNLIB_PATH, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  mproc_process_fn fn = (mproc_process_fn)(uintptr_t)dlsym(h, "fnlib_work");
  ck_assert_ptr_nonnull((void *)(uintptr_t)fn);
  int v = 1;
  for (size_t i = 0; i < 2; i++)
    ck_assert_int_eq(run_code(methods[i], fn, &v, sizeof v), 40 + (int)sizeof v);
  dlclose(h);
}
END_TEST

START_TEST(test_library_without_build_id) {
  void *h = dlopen(FNLIB_NOID_PATH, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  mproc_process_fn fn = (mproc_process_fn)(uintptr_t)dlsym(h, "fnlib_work");
  struct mproc__fnref ref;
  mproc_assert_ok(mproc__fnref_make(MPROC_FUNCTION(fn), &ref));
  ck_assert_int_eq(ref.build_id_len, 0); /* identified by its file instead */
  for (size_t i = 0; i < 2; i++)
    ck_assert_int_eq(run_code(methods[i], fn, NULL, 0), 60);
  dlclose(h);
}
END_TEST

/* A library replaced on disk after the parent loaded it is refused, with
 * or without a build-id. */
static void replaced_case(const char *lib, const char *other) {
  char dir[] = "/tmp/mproc-startm-XXXXXX", path[256], tmp[256];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/libwork.so", dir);
  snprintf(tmp, sizeof tmp, "%s/new.so", dir);
  copy_file(lib, path);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  mproc_process_fn fn = (mproc_process_fn)(uintptr_t)dlsym(h, "fnlib_work");
  copy_file(other, tmp);
  ck_assert_int_eq(rename(tmp, path), 0);
  for (size_t i = 0; i < 2; i++)
    mproc_assert_err(run_code(methods[i], fn, NULL, 0), MPROC_ENOFUNC);
  dlclose(h);
  unlink(path);
  rmdir(dir);
}

START_TEST(test_library_replaced) {
  replaced_case(FNLIB_PATH, FNLIB_NOID_PATH);
  replaced_case(FNLIB_NOID_PATH, FNLIB_NOID_PATH); /* same bytes, new file */
}
END_TEST

/* ---- the program's file replaced --------------------------------------- */

static int ret_42(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  return 42;
}

/* Run as "<copy> --replaced <method>": replaces its own file, then starts a
 * child under that method.  Exit 0 when the child ran. */
static int replaced_helper(int method) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    return 10;
  self[n] = '\0';
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.new", self);
  FILE *f = fopen(tmp, "w");
  if (f == NULL || fputs("#!/bin/sh\nexit 3\n", f) < 0 || fclose(f) != 0)
    return 11;
  if (rename(tmp, self) != 0)
    return 12;
  mproc_process_options o = {.start_method = method};
  mproc_process *p;
  int code = -1;
  if (mproc_process_new(&p, ret_42, NULL, 0, &o) != 0 || mproc_process_start(p) != 0 ||
      mproc_process_join(p, -1) != 0 || mproc_process_exitcode(p, &code) != 0)
    return 13;
  mproc_process_free(p);
  return code == 42 ? 0 : 14;
}

START_TEST(test_binary_replaced) {
  char dir[] = "/tmp/mproc-startm-XXXXXX", bin[256];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(bin, sizeof bin, "%s/prog", dir);
  copy_file("/proc/self/exe", bin);
  for (size_t i = 0; i < 2; i++) {
    char m[16];
    snprintf(m, sizeof m, "%d", methods[i]);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      execl(bin, bin, "--replaced", m, (char *)NULL);
      _exit(127);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_int_ge(pidfd, 0);
    ck_assert_int_gt(mproc__poll1(pidfd, POLLIN, mproc__deadline(LONG_MS)), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    close(pidfd);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "method %d: status %#x",
                  methods[i], status);
    copy_file("/proc/self/exe", bin); /* the helper replaced it */
  }
  unlink(bin);
  rmdir(dir);
}
END_TEST

/* A marker that does not name a socket (here: stdin, /dev/null) leaves the
 * program alone: its main() runs. */
START_TEST(test_stray_marker) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) != 0)
      _exit(120);
    char *argv[] = {"prog", "--main-runs", NULL};
    char *envp[] = {"MPROC_WORKER=s0", NULL};
    execve("/proc/self/exe", argv, envp);
    _exit(127);
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  ck_assert_int_ge(pidfd, 0);
  ck_assert_int_gt(mproc__poll1(pidfd, POLLIN, mproc__deadline(LONG_MS)), 0);
  close(pidfd);
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 33, "status %#x", status);
}
END_TEST

/* ---- the forkserver's life ---------------------------------------------- */

START_TEST(test_forkserver_killed) {
  mproc_process_options o = {.start_method = MPROC_START_FORKSERVER};
  mproc_process *sleeper;
  mproc_assert_ok(mproc_process_new(&sleeper, sleep_forever, NULL, 0, &o));
  mproc_assert_ok(mproc_process_start(sleeper));
  /* The sleeper is our child, so the only other child is the server. */
  ck_assert_int_eq(mproc_test_count_children(), 2);
  pid_t sleeper_pid = mproc_process_pid(sleeper);
  int restarts = mproc_forkserver_restarts();
  for (int round = 1; round <= 2; round++) {
    pid_t server = find_server_except(sleeper_pid);
    ck_assert_int_gt(server, 0);
    int sfd = (int)syscall(SYS_pidfd_open, server, 0);
    ck_assert_int_ge(sfd, 0);
    ck_assert_int_eq(kill(server, SIGKILL), 0);
    ck_assert_int_gt(mproc__poll1(sfd, POLLIN, mproc__deadline(LONG_MS)), 0);
    close(sfd);
    /* The next start replaces it transparently... */
    ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, ret_42, NULL, 0), 42);
    ck_assert_int_eq(mproc_forkserver_restarts(), restarts + round);
  }
  /* ...and the child it had started runs on, still ours. */
  ck_assert_int_eq(mproc_process_is_alive(sleeper), 1);
  mproc_assert_ok(mproc_process_kill(sleeper, 0));
  mproc_assert_ok(mproc_process_join(sleeper, LONG_MS));
  int code;
  mproc_assert_ok(mproc_process_exitcode(sleeper, &code));
  ck_assert_int_eq(code, -SIGKILL);
  mproc_process_free(sleeper);
}
END_TEST

/* Starts a forkserver child, reports the server's pid and the child's on
 * the fd given, then sleeps. */
static int start_and_report(const void *arg, size_t len) {
  (void)len;
  int fd = *(const int *)arg;
  mproc_process_options o = {.start_method = MPROC_START_FORKSERVER};
  mproc_process *p;
  if (mproc_process_new(&p, sleep_forever, NULL, 0, &o) != 0 || mproc_process_start(p) != 0)
    return 1;
  pid_t pids[2] = {find_server_except(mproc_process_pid(p)), mproc_process_pid(p)};
  if (write(fd, pids, sizeof pids) != (ssize_t)sizeof pids)
    return 2;
  return sleep_forever(NULL, 0);
}

START_TEST(test_owner_killed) {
  /* The server and every child it made die with their owner, even when the
   * owner dies by SIGKILL: no orphan is left. */
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, 0), 0);
  mproc_process *owner;
  mproc_assert_ok(mproc_process_new(&owner, start_and_report, &pfd[1], sizeof pfd[1], NULL));
  mproc_assert_ok(mproc_process_start(owner));
  pid_t pids[2];
  ck_assert_int_gt(mproc__poll1(pfd[0], POLLIN, mproc__deadline(LONG_MS)), 0);
  ck_assert_int_eq(read(pfd[0], pids, sizeof pids), (ssize_t)sizeof pids);
  int fds[2];
  for (int i = 0; i < 2; i++) {
    ck_assert_int_gt(pids[i], 0);
    fds[i] = (int)syscall(SYS_pidfd_open, pids[i], 0);
    ck_assert_int_ge(fds[i], 0);
  }
  mproc_assert_ok(mproc_process_kill(owner, 0));
  mproc_assert_ok(mproc_process_join(owner, LONG_MS));
  for (int i = 0; i < 2; i++) {
    ck_assert_msg(mproc__poll1(fds[i], POLLIN, mproc__deadline(LONG_MS)) > 0,
                  "%s %d outlived its owner", i == 0 ? "server" : "child", (int)pids[i]);
    close(fds[i]);
  }
  mproc_process_free(owner);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* ---- forkserver children and the program's threads ---------------------- */

/* Waits for a byte on the inherited descriptor *arg; 5 when it came. */
static int wait_byte(const void *arg, size_t len) {
  (void)len;
  char c;
  return read(*(const int *)arg, &c, 1) == 1 ? 5 : 1;
}

struct thread_start {
  int fd;           /* the descriptor wait_byte reads */
  mproc_process *p; /* the child the thread started */
  pid_t tid;        /* the thread */
};

static void *start_in_thread(void *arg) {
  struct thread_start *t = arg;
  t->tid = (pid_t)syscall(SYS_gettid);
  mproc_process_options o = {.start_method = MPROC_START_FORKSERVER};
  if (mproc_process_new(&t->p, wait_byte, &t->fd, sizeof t->fd, &o) != 0 ||
      mproc_process_start(t->p) != 0)
    t->p = NULL;
  return NULL;
}

/* Linux sends the parent-death signal when the *thread* that made a process
 * exits.  A thread that starts the server (the first forkserver start of the
 * program) and a child, then exits, must take neither its child nor one the
 * main thread started since with it: forkserver children die with the
 * program, not with a thread. */
START_TEST(test_forkserver_children_outlive_threads) {
  mproc_forkserver_stop(); /* the thread below starts the server */
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, 0), 0); /* inheritable: the children read it */
  struct thread_start a = {.fd = pfd[0]};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, start_in_thread, &a), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_ptr_nonnull(a.p);
  struct thread_start b = {.fd = pfd[0]};
  start_in_thread(&b);
  ck_assert_ptr_nonnull(b.p);
  /* pthread_join returns before the kernel has finished the thread's exit
   * (where the signal is sent); its task entry goes after. */
  char task[64];
  snprintf(task, sizeof task, "/proc/self/task/%d", (int)a.tid);
  int64_t end = mproc__deadline(LONG_MS);
  while (access(task, F_OK) == 0 && mproc_now_ms() < end)
    sched_yield();
  ck_assert_int_ne(access(task, F_OK), 0);
  /* A signal sent is acted on before a child returns from its read. */
  ck_assert_int_eq(write(pfd[1], "xx", 2), 2);
  mproc_process *ps[2] = {a.p, b.p};
  for (int i = 0; i < 2; i++) {
    int code;
    mproc_assert_ok(mproc_process_join(ps[i], LONG_MS));
    mproc_assert_ok(mproc_process_exitcode(ps[i], &code));
    ck_assert_msg(code == 5, "child %d ended with %d", i, code);
    mproc_process_free(ps[i]);
  }
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

/* ---- the forkserver killed mid-request ------------------------------------ */

/* How many more requests lose their server while in flight. */
static _Atomic int kills_left;

/* Stops the server before the request is sent, so it cannot read it, then
 * kills it once the request sits in its socket: the reply never comes. */
static void kill_in_flight(int stage, int server_pidfd) {
  if (atomic_load(&kills_left) <= 0)
    return;
  if (stage == 0) {
    mproc_assert_ok(mproc__pidfd_kill(server_pidfd, SIGSTOP));
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)server_pidfd, &si, WSTOPPED | WNOWAIT) != 0)
      ck_assert_int_eq(errno, EINTR);
    return;
  }
  atomic_fetch_sub(&kills_left, 1);
  mproc_assert_ok(mproc__pidfd_kill(server_pidfd, SIGKILL));
  ck_assert_int_gt(mproc__poll1(server_pidfd, POLLIN, mproc__deadline(LONG_MS)), 0);
}

START_TEST(test_forkserver_killed_mid_request) {
  atomic_store(&mproc__forkserver_test_hook, kill_in_flight);
  /* Killed with a start in flight: retried on a new server, counted. */
  int restarts = mproc_forkserver_restarts();
  atomic_store(&kills_left, 1);
  ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, ret_42, NULL, 0), 42);
  ck_assert_int_eq(atomic_load(&kills_left), 0);
  ck_assert_int_eq(mproc_forkserver_restarts(), restarts + 1);
  ck_assert_int_eq(mproc_test_count_children(), 1); /* the new server only */
  /* Killed again during the retry: a clean error, nothing left behind, and
   * the next start works. */
  int fds = mproc_test_count_fds();
  atomic_store(&kills_left, 2);
  mproc_assert_err(run_code(MPROC_START_FORKSERVER, ret_42, NULL, 0), -EPIPE);
  ck_assert_int_eq(atomic_load(&kills_left), 0);
  ck_assert_int_eq(mproc_forkserver_restarts(), restarts + 3);
  ck_assert_int_eq(mproc_test_count_children(), 0);
  ck_assert_int_eq(mproc_test_count_fds(), fds - 3); /* the server's pidfd, channel, page */
  ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, ret_42, NULL, 0), 42);
  atomic_store(&mproc__forkserver_test_hook, NULL);
}
END_TEST

static int task_pid_or_die(const void *arg, size_t len, mproc_task_ctx *ctx) {
  if (len > 0 && *(const int *)arg != 0)
    raise(SIGKILL);
  int pid = (int)getpid();
  return mproc_task_return(ctx, &pid, sizeof pid);
}

/* A task's result: the pid of the worker that ran it. */
static int worker_pid(mproc_pool *pool, int die) {
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(pool, task_pid_or_die, &die, sizeof die, &f));
  const void *d;
  size_t n;
  int r = mproc_future_result(f, &d, &n, LONG_MS);
  int pid = r == 0 ? *(const int *)d : r;
  mproc_future_free(f);
  return pid;
}

/* A worker replacement whose server dies under it: the pool's manager
 * retries on a new server; killed twice, the replacement fails and the
 * pool tries again later.  Either way the next task runs. */
START_TEST(test_forkserver_killed_replacing_worker) {
  mproc_pool *pool;
  struct mproc_pool_options o = {.workers = 1, .start_method = MPROC_START_FORKSERVER};
  mproc_assert_ok(mproc_pool_new(&pool, &o));
  atomic_store(&mproc__forkserver_test_hook, kill_in_flight);
  for (int kills = 1; kills <= 2; kills++) {
    int restarts = mproc_forkserver_restarts();
    int before = worker_pid(pool, 0);
    ck_assert_int_gt(before, 0);
    atomic_store(&kills_left, kills);
    mproc_assert_err(worker_pid(pool, 1), MPROC_EWORKERDIED);
    int after = worker_pid(pool, 0);
    ck_assert_int_gt(after, 0);
    ck_assert_int_ne(after, before);
    ck_assert_int_eq(atomic_load(&kills_left), 0);
    ck_assert_int_eq(mproc_forkserver_restarts(), restarts + kills);
  }
  atomic_store(&mproc__forkserver_test_hook, NULL);
  mproc_assert_ok(mproc_pool_free(pool));
}
END_TEST

/* Several threads start processes while another kills the server at random
 * moments (idle, reading a request, forking, replying): every start either
 * works or fails cleanly, and no child is left that nobody knows of (one
 * forked just before the server died is still ours to reap). */
static _Atomic int killer_stop;

static void *killer(void *arg) {
  (void)arg;
  unsigned n = 0;
  while (!atomic_load(&killer_stop)) {
    int fd = mproc__forkserver_pidfd();
    if (fd >= 0) {
      mproc__pidfd_kill(fd, SIGKILL);
      close(fd);
    }
    struct timespec ts = {0, (long)(n++ % 7) * 100000L}; /* pacing, not sync */
    nanosleep(&ts, NULL);
  }
  return NULL;
}

/* Starts per thread. */
#define STARTS 40
static _Atomic int starts_ok, starts_failed;

/* Starters leave together: a forkserver child gets its parent-death signal
 * when the thread that started the *server* exits (see process.md), and
 * any of them may have. */
static pthread_barrier_t starters_done;

static void *starter(void *arg) {
  (void)arg;
  for (int i = 0; i < STARTS; i++) {
    int r = run_code(MPROC_START_FORKSERVER, ret_42, NULL, 0);
    if (r == 42)
      atomic_fetch_add(&starts_ok, 1);
    else if (r == -EPIPE || r == -ECONNRESET)
      atomic_fetch_add(&starts_failed, 1);
    else
      ck_abort_msg("start gave %d (%s)", r, mproc_err_name(r));
  }
  pthread_barrier_wait(&starters_done);
  return NULL;
}

START_TEST(test_forkserver_killed_under_threads) {
  int restarts = mproc_forkserver_restarts();
  atomic_store(&killer_stop, 0);
  ck_assert_int_eq(pthread_barrier_init(&starters_done, NULL, 4), 0);
  pthread_t k, t[4];
  ck_assert_int_eq(pthread_create(&k, NULL, killer, NULL), 0);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, starter, NULL), 0);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
  atomic_store(&killer_stop, 1);
  ck_assert_int_eq(pthread_join(k, NULL), 0);
  pthread_barrier_destroy(&starters_done);
  ck_assert_int_eq(atomic_load(&starts_ok) + atomic_load(&starts_failed), 4 * STARTS);
  ck_assert_int_gt(atomic_load(&starts_ok), 0);
  ck_assert_int_gt(mproc_forkserver_restarts(), restarts);
  printf("forkserver killed under threads: %d started, %d failed, %d restarts\n",
         atomic_load(&starts_ok), atomic_load(&starts_failed),
         mproc_forkserver_restarts() - restarts);
  mproc_forkserver_stop();
  ck_assert_int_eq(mproc_test_count_children(), 0);
}
END_TEST

/* ---- exec failing ------------------------------------------------------- */

START_TEST(test_exec_fails) {
  for (size_t i = 0; i < 2; i++) {
    mproc_process_options o = {.start_method = methods[i]};
    mproc_process *p;
    mproc_assert_ok(mproc_process_new(&p, ret_42, NULL, 0, &o));
    int fds = mproc_test_count_fds();
    /* No such file: what a vanished /proc (or a sandbox) would give. */
    mproc_forkserver_stop();
    mproc__spawn_exe = "/nonexistent/mproc-program";
    int r = mproc_process_start(p);
    mproc__spawn_exe = "/proc/self/exe";
    mproc_assert_err(r, -ENOENT);
    /* An environment the kernel refuses (one string over 128 KiB). */
    mproc_test_setenv_filled("MPROC_TEST_BIG", 200000, 'x');
    r = mproc_process_start(p);
    unsetenv("MPROC_TEST_BIG");
    mproc_assert_err(r, MPROC_E2BIG);
    /* A resource limit: exec refuses strings beyond a quarter of
     * RLIMIT_STACK (never less than 128 KiB): 200 KB in two variables pass
     * under the usual 8 MiB limit and fail under 64 KiB. */
    mproc_test_setenv_filled("MPROC_TEST_MID", 100000, 'y');
    mproc_test_setenv_filled("MPROC_TEST_MID2", 100000, 'y');
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_STACK, &old), 0);
    low = old;
    low.rlim_cur = 64 * 1024;
    ck_assert_int_eq(setrlimit(RLIMIT_STACK, &low), 0);
    r = mproc_process_start(p);
    ck_assert_int_eq(setrlimit(RLIMIT_STACK, &old), 0);
    unsetenv("MPROC_TEST_MID");
    unsetenv("MPROC_TEST_MID2");
    mproc_assert_err(r, MPROC_E2BIG);
    /* Nothing left behind; the object is still new and starts now. */
    ck_assert_int_eq(mproc_test_count_children(), 0);
    ck_assert_int_eq(mproc_test_count_fds(), fds);
    mproc_assert_err(mproc_process_pid(p), MPROC_ESTATE);
    mproc_assert_ok(mproc_process_start(p));
    mproc_assert_ok(mproc_process_join(p, LONG_MS));
    int code;
    mproc_assert_ok(mproc_process_exitcode(p, &code));
    ck_assert_int_eq(code, 42);
    mproc_process_free(p);
  }
}
END_TEST

/* One request carries at most 235 inheritable descriptors (the kernel's 253
 * per message, less the entry's 16 and the cwd's and the note's): one more
 * is MPROC_ENOTSUP with nothing left behind, never a child without some. */
static int count_inheritable(const void *arg, size_t len) {
  (void)arg, (void)len;
  int n = 0;
  for (int fd = 0; fd < 1024; fd++) {
    int fl = fcntl(fd, F_GETFD);
    n += fl >= 0 && !(fl & FD_CLOEXEC);
  }
  return n;
}

START_TEST(test_forkserver_fd_limit) {
  int limit = MPROC__SCM_MAX_FD - MPROC__START_FDS_MAX - 2;
  ck_assert_int_eq(limit, 235);
  int have = count_inheritable(NULL, 0), opened[300], n = 0;
  ck_assert_int_lt(have, limit);
  while (have + n < limit) {
    opened[n] = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(opened[n], 0);
    n++;
  }
  ck_assert_int_eq(run_code(MPROC_START_FORKSERVER, count_inheritable, NULL, 0), limit);
  opened[n] = open("/dev/null", O_RDONLY);
  ck_assert_int_ge(opened[n], 0);
  n++;
  int children = mproc_test_count_children(), fds = mproc_test_count_fds();
  mproc_assert_err(run_code(MPROC_START_FORKSERVER, count_inheritable, NULL, 0), MPROC_ENOTSUP);
  ck_assert_int_eq(mproc_test_count_children(), children);
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  while (n > 0)
    close(opened[--n]);
}
END_TEST

/* ---- fork safety ---------------------------------------------------------- */

/* 16 threads loop on malloc/free, stdio and a mutex of their own: under
 * fork, a child forked while one of them holds the mutex (or a FILE lock)
 * and then takes it would hang forever.  Under spawn and forkserver every
 * child must be ready at once. */
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *busy_out;
static _Atomic int busy_stop;

static void *busy(void *arg) {
  (void)arg;
  unsigned n = 0;
  while (!atomic_load(&busy_stop)) {
    pthread_mutex_lock(&busy_lock);
    void *m = malloc(64 + (n++ % 4096));
    fprintf(busy_out, "%u\n", n);
    free(m);
    pthread_mutex_unlock(&busy_lock);
  }
  return NULL;
}

/* Takes the same locks the threads hold: hangs only in a child that
 * inherited them held. */
static int use_locks(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  pthread_mutex_lock(&busy_lock);
  void *m = malloc(100);
  if (busy_out != NULL) { /* NULL in a fresh image: nothing to inherit */
    fprintf(busy_out, "child\n");
    fflush(busy_out);
  }
  free(m);
  pthread_mutex_unlock(&busy_lock);
  return 7;
}

/* Rounds of a fork-safety test: under sanitizers every exec is several
 * times slower, so fewer rounds, same check. */
static int fork_safety_rounds(void) {
  return getenv("MPROC_TEST_TIMEOUT_SCALE") != NULL ? 200 : 1000;
}

static void busy_start(pthread_t t[16]) {
  busy_out = fopen("/dev/null", "we");
  ck_assert_ptr_nonnull(busy_out);
  atomic_store(&busy_stop, 0);
  for (int i = 0; i < 16; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, busy, NULL), 0);
}

static void busy_end(pthread_t t[16]) {
  atomic_store(&busy_stop, 1);
  for (int i = 0; i < 16; i++)
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
  fclose(busy_out);
  busy_out = NULL;
}

static void fork_safety(int method) {
  int count = fork_safety_rounds();
  pthread_t t[16];
  busy_start(t);
  mproc_process_options o = {.start_method = method};
  int64_t worst = 0;
  for (int i = 0; i < count; i++) {
    int64_t t0 = mproc_now_ms();
    mproc_process *p;
    mproc_assert_ok(mproc_process_new(&p, use_locks, NULL, 0, &o));
    mproc_assert_ok(mproc_process_start(p));
    /* Ready and done within 10 s, every time: a child stuck on a lock held
     * at fork never finishes, and one exec on a loaded machine can take
     * more than a second or two. */
    mproc_assert_ok(mproc_process_join(p, mproc_test_scaled_ms(10000)));
    int code;
    mproc_assert_ok(mproc_process_exitcode(p, &code));
    ck_assert_int_eq(code, 7);
    mproc_process_free(p);
    int64_t dt = mproc_now_ms() - t0;
    worst = dt > worst ? dt : worst;
  }
  busy_end(t);
  printf("fork safety, method %d: %d children, slowest %lld ms\n", method, count, (long long)worst);
}

/* The same locks, from a pool task; returns the worker's pid. */
static int task_use_locks(const void *arg, size_t len, mproc_task_ctx *ctx) {
  int pid = use_locks(arg, len) == 7 ? (int)getpid() : -1;
  return mproc_task_return(ctx, &pid, sizeof pid);
}

/* The pool's side: every task retires its worker (max_tasks_per_worker 1),
 * so each of the rounds is served by a worker started while the 16 threads
 * run.  Each must be ready and answer within 10 s; the slot's replacement
 * count shows that every round had a new worker. */
static void pool_fork_safety(int method) {
  int count = fork_safety_rounds();
  pthread_t t[16];
  busy_start(t);
  mproc_pool *pool;
  struct mproc_pool_options o = {.workers = 1, .max_tasks_per_worker = 1, .start_method = method};
  mproc_assert_ok(mproc_pool_new(&pool, &o));
  int64_t worst = 0;
  int last = 0;
  for (int i = 0; i < count; i++) {
    int64_t t0 = mproc_now_ms();
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit(pool, task_use_locks, NULL, 0, &f));
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f, &d, &n, mproc_test_scaled_ms(10000)));
    ck_assert_uint_eq(n, sizeof(int));
    int pid = *(const int *)d;
    ck_assert_int_gt(pid, 0);
    ck_assert_int_ne(pid, last); /* a new worker every round */
    last = pid;
    mproc_future_free(f);
    int64_t dt = mproc_now_ms() - t0;
    worst = dt > worst ? dt : worst;
  }
  struct mproc_worker_stats ws;
  ck_assert_int_eq(mproc_pool_stats(pool, NULL, &ws, 1), 1);
  ck_assert_uint_ge(ws.replaced, (uint64_t)count - 1);
  mproc_assert_ok(mproc_pool_free(pool));
  busy_end(t);
  printf("pool fork safety, method %d: %d workers, slowest %lld ms\n", method, count,
         (long long)worst);
}

START_TEST(test_fork_safety_spawn) { fork_safety(MPROC_START_SPAWN); }
END_TEST

START_TEST(test_fork_safety_forkserver) { fork_safety(MPROC_START_FORKSERVER); }
END_TEST

START_TEST(test_pool_fork_safety_spawn) { pool_fork_safety(MPROC_START_SPAWN); }
END_TEST

START_TEST(test_pool_fork_safety_forkserver) { pool_fork_safety(MPROC_START_FORKSERVER); }
END_TEST

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--replaced") == 0)
    return replaced_helper(atoi(argv[2]));
  if (argc == 2 && strcmp(argv[1], "--main-runs") == 0)
    return getenv("MPROC_WORKER") != NULL ? 33 : 34;
  Suite *s = suite_create("startmethod");
  TCase *tc = mproc_test_tcase(s, "references", 60);
  tcase_add_test(tc, test_function_registry);
  tcase_add_test(tc, test_fnref_resolve);
  tcase_add_test(tc, test_bad_options);
  tcase_add_test(tc, test_entry_with_fds);
  tcase_add_test(tc, test_noflush);
  tc = mproc_test_tcase(s, "child", 120);
  tcase_add_test(tc, test_big_argument);
  tcase_add_test(tc, test_child_context);
  tcase_add_test(tc, test_child_view);
  tcase_add_test(tc, test_dlopen_after_start);
  tcase_add_test(tc, test_library_without_build_id);
  tcase_add_test(tc, test_library_replaced);
  tcase_add_test(tc, test_binary_replaced);
  tcase_add_test(tc, test_stray_marker);
  tc = mproc_test_tcase(s, "failures", 120);
  tcase_add_test(tc, test_forkserver_killed);
  tcase_add_test(tc, test_owner_killed);
  tcase_add_test(tc, test_forkserver_children_outlive_threads);
  tcase_add_test(tc, test_forkserver_killed_mid_request);
  tcase_add_test(tc, test_forkserver_killed_replacing_worker);
  tcase_add_test(tc, test_forkserver_killed_under_threads);
  tcase_add_test(tc, test_forkserver_fd_limit);
  tcase_add_test(tc, test_exec_fails);
  tc = mproc_test_tcase(s, "fork-safety", 300);
  tcase_add_test(tc, test_fork_safety_spawn);
  tcase_add_test(tc, test_fork_safety_forkserver);
  tcase_add_test(tc, test_pool_fork_safety_spawn);
  tcase_add_test(tc, test_pool_fork_safety_forkserver);
  return mproc_test_run(s);
}
