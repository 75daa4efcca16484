/* Leak-checking fixture and helpers for the Check-based tests (harness.h). */
#include "harness.h"
#include "internal.h"
#include "start.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_TRACKED 4096

static int snap_fds;
static int snap_threads;
static int snap_children;
static int snap_maps;
static char snap_map_lines[16384];
static char snap_fd_present[MAX_TRACKED];

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

int mproc_test_count_fds(void) {
  /* opendir itself holds one fd while counting. */
  return count_dir("/proc/self/fd") - 1;
}

/* Not counted: the forkserver's keeper thread, which lives as long as the
 * process once made (the server's children die with it). */
int mproc_test_count_threads(void) {
  return count_dir("/proc/self/task") - mproc__forkserver_threads();
}

static void mark_fds(char *present) {
  memset(present, 0, MAX_TRACKED);
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd >= 0 && fd < MAX_TRACKED && fd != dirfd(d))
      present[fd] = 1;
  }
  closedir(d);
}

/* The shared mappings of the process as "<range> <path>\n" lines in out
 * (cut at cap); returns how many there are. */
static int shared_maps(char *out, size_t cap) {
  FILE *f = fopen("/proc/self/maps", "re");
  ck_assert_ptr_nonnull(f);
  int n = 0;
  char line[4096];
  if (cap > 0)
    out[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL) {
    char range[64] = "", perms[8] = "", path[512] = "";
    if (sscanf(line, "%63s %7s %*s %*s %*s %511[^\n]", range, perms, path) < 2 || perms[3] != 's')
      continue;
    n++;
    size_t used = cap > 0 ? strlen(out) : 0;
    if (cap > used + 1)
      snprintf(out + used, cap - used, "%s %s\n", range, path);
  }
  fclose(f);
  return n;
}

int mproc_test_count_shared_maps(void) { return shared_maps(NULL, 0); }

int mproc_test_count_children(void) {
  pid_t self = getpid();
  DIR *d = opendir("/proc");
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0]))
      continue;
    struct mproc__pstat ps;
    if (mproc__proc_stat(NULL, (pid_t)atoi(e->d_name), &ps) == 0 && ps.ppid == self)
      n++;
  }
  closedir(d);
  return n;
}

int mproc_test_pid_exists(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", (int)pid);
  struct stat st;
  return stat(path, &st) == 0;
}

void mproc_test_setenv_filled(const char *name, size_t len, char fill) {
  char *v = malloc(len + 1);
  ck_assert_ptr_nonnull(v);
  memset(v, fill, len);
  v[len] = '\0';
  ck_assert_int_eq(setenv(name, v, 1), 0);
  free(v);
}

int mproc_test_read_pidfd(int fd, pid_t *pid) {
  ck_assert_int_gt(mproc__poll1(fd, POLLIN, mproc__deadline(30000)), 0);
  ck_assert_int_eq(read(fd, pid, sizeof *pid), (ssize_t)sizeof *pid);
  int pfd = (int)syscall(SYS_pidfd_open, *pid, 0);
  ck_assert_int_ge(pfd, 0);
  return pfd;
}

void mproc_test_kill_expect_follow(int prog_fd, int helper_fd) {
  int code = -1000;
  mproc_assert_ok(mproc__pidfd_kill(prog_fd, SIGKILL));
  mproc_assert_ok(mproc__reap(prog_fd, &code, mproc__deadline(30000)));
  ck_assert_int_eq(code, -SIGKILL);
  int r = mproc__poll1(helper_fd, POLLIN, mproc__deadline(30000));
  if (r <= 0)
    mproc__pidfd_kill(helper_fd, SIGKILL); /* do not leave it behind */
  ck_assert_int_gt(r, 0);
  mproc_assert_ok(mproc__close(prog_fd));
  close(helper_fd);
}

const char *mproc_test_shm_name(char *buf, size_t len, const char *tag) {
  static int seq;
  snprintf(buf, len, "/mproc-test-%d-%s-%d", (int)getpid(), tag, ++seq);
  return buf;
}

/* Whether `name` contains `pid` as a whole number (delimited by non-digits). */
static int name_has_pid(const char *name, const char *pid) {
  size_t lp = strlen(pid);
  for (const char *p = strstr(name, pid); p != NULL; p = strstr(p + 1, pid)) {
    int left_ok = p == name || !isdigit((unsigned char)p[-1]);
    int right_ok = !isdigit((unsigned char)p[lp]);
    if (left_ok && right_ok)
      return 1;
  }
  return 0;
}

/* The /dev/shm entries whose names carry this process's pid, as one
 * space-separated string ("" when none). */
static void shm_of_pid(char *out, size_t cap) {
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  out[0] = '\0';
  DIR *d = opendir("/dev/shm");
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !name_has_pid(e->d_name, pid))
      continue;
    strncat(out, e->d_name, cap - strlen(out) - 2);
    strncat(out, " ", cap - strlen(out) - 1);
  }
  closedir(d);
}

/* Entries already there when the test started belong to an earlier process
 * that had the same pid (pids are recycled; a test that failed may have left
 * its objects): only what appeared during the test is its leak. */
static char snap_shm[4096];

/* Appends to `out` (cap bytes) each item of the `sep`-separated list `now`
 * that is not an item of the list `before`, followed by `sep`; destroys now. */
static void new_items(char *now, const char *before, char sep, char *out, size_t cap) {
  const char seps[2] = {sep, '\0'};
  out[0] = '\0';
  for (char *tok = strtok(now, seps); tok != NULL; tok = strtok(NULL, seps)) {
    const char *hit = strstr(before, tok);
    size_t n = strlen(tok);
    if (hit != NULL && (hit == before || hit[-1] == sep) && hit[n] == sep)
      continue;
    strncat(out, tok, cap - strlen(out) - 2);
    strncat(out, seps, cap - strlen(out) - 1);
  }
}

static void check_shm(void) {
  static char now[4096];
  shm_of_pid(now, sizeof now);
  char leaked[1024];
  new_items(now, snap_shm, ' ', leaked, sizeof leaked);
  ck_assert_msg(leaked[0] == '\0', "leaked /dev/shm entries: %s", leaked);
}

/* Every object the library maps is a shared mapping (of a memfd or a
 * /dev/shm file): one more after the test than before is a mapping that
 * was never unmapped, named in the message. */
static void check_maps(void) {
  static char now[16384];
  int n = shared_maps(now, sizeof now);
  if (n <= snap_maps)
    return;
  char leaked[2048];
  new_items(now, snap_map_lines, '\n', leaked, sizeof leaked);
  ck_abort_msg("%d shared mapping(s) after the test, %d before; new:\n%s", n, snap_maps, leaked);
}

static void *nothing(void *arg) { return arg; }

void mproc_test_setup(void) {
  /* ThreadSanitizer starts a background thread of its own, for good, at the
   * first pthread_create of a process.  One thread created and joined before
   * the snapshot makes that thread part of it, so suites that use threads
   * (directly or through the library) are not blamed for it. */
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, nothing, NULL), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  snap_fds = mproc_test_count_fds();
  snap_threads = mproc_test_count_threads();
  snap_children = mproc_test_count_children();
  snap_maps = shared_maps(snap_map_lines, sizeof snap_map_lines);
  mark_fds(snap_fd_present);
  shm_of_pid(snap_shm, sizeof snap_shm);
}

void mproc_test_teardown(void) {
  /* The forkserver is a long-lived helper of the program, not a leak of the
   * test; its children, if any survived, still count below. */
  mproc_forkserver_stop();
  int fds = mproc_test_count_fds();
  if (fds != snap_fds) {
    static char now[MAX_TRACKED];
    char msg[2048] = "";
    mark_fds(now);
    for (int fd = 0; fd < MAX_TRACKED; fd++) {
      if (now[fd] && !snap_fd_present[fd]) {
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        size_t used = strlen(msg);
        snprintf(msg + used, sizeof msg - used, " %d->%s", fd, target);
      }
    }
    ck_abort_msg("fd count %d after the test, %d before; new:%s", fds, snap_fds, msg);
  }
  /* A joined thread stays listed in /proc/self/task until the kernel has
   * finished its exit, a moment after pthread_join returned: the snapshot may
   * count one that is leaving (so fewer after is no leak), and a thread the
   * library just joined may still be listed after the test, so an excess is
   * given a bounded time to go. */
  int threads = mproc_test_count_threads();
  for (int64_t end = mproc__deadline(2000); threads > snap_threads && mproc_now_ms() < end;
       threads = mproc_test_count_threads())
    sched_yield();
  ck_assert_msg(threads <= snap_threads, "thread count %d after the test, %d before", threads,
                snap_threads);
  int children = mproc_test_count_children();
  ck_assert_msg(children == snap_children,
                "%d child process(es) (live or zombie) after the test, %d before", children,
                snap_children);
  check_shm();
  check_maps();
}

static double timeout_scale(void) {
  const char *s = getenv("MPROC_TEST_TIMEOUT_SCALE");
  double v = s != NULL ? atof(s) : 1.0;
  return v > 0 ? v : 1.0;
}

int64_t mproc_test_scaled_ms(int64_t ms) {
  double v = timeout_scale();
  return (int64_t)((double)ms * (v > 1 ? v : 1));
}

TCase *mproc_test_tcase(Suite *s, const char *name, double timeout_s) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, mproc_test_setup, mproc_test_teardown);
  tcase_set_timeout(tc, timeout_s * timeout_scale());
  suite_add_tcase(s, tc);
  return tc;
}

int mproc_test_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  /* Every test in its own process, whatever CK_FORK says in the environment:
   * a crashing or hanging test must not take the others down. */
  srunner_set_fork_status(sr, CK_FORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
