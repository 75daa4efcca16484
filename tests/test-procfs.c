/* The /proc/<pid>/stat parser (src/procfs.c), on fixture files (command
 * names with spaces and parentheses, truncated lines) and on live
 * processes. */
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[64];

static void put_stat(int pid, const char *line) {
  char path[128];
  snprintf(path, sizeof path, "%s/%d", root, pid);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%d/stat", root, pid);
  FILE *f = fopen(path, "we");
  ck_assert_ptr_nonnull(f);
  fputs(line, f);
  fclose(f);
}

static void remove_root(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_fixture_lines) {
  snprintf(root, sizeof root, "/tmp/mproc-procfs-%d", (int)getpid());
  ck_assert_int_eq(mkdir(root, 0755), 0);
  /* A command name with spaces and ") " inside: fields count after the
   * last ')'. */
  put_stat(42, "42 (a) b ) c) S 7 42 42 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 "
               "987654 1000 200 18446744073709551615\n");
  struct mproc__pstat ps;
  mproc_assert_ok(mproc__proc_stat(root, 42, &ps));
  ck_assert_int_eq(ps.state, 'S');
  ck_assert_int_eq(ps.ppid, 7);
  ck_assert_uint_eq(ps.utime, 1234);
  ck_assert_uint_eq(ps.stime, 567);
  ck_assert_uint_eq(ps.start_time, 987654);
  ck_assert_uint_eq(ps.num_threads, 3);
  /* Truncated before the start time, no ')' at all, an empty file. */
  put_stat(43, "43 (x) Z 1 43 43 0 -1 0 0 0 0 0 5 6 0 0 20 0\n");
  mproc_assert_err(mproc__proc_stat(root, 43, &ps), -EIO);
  put_stat(44, "44 (x S 1 2 3\n");
  mproc_assert_err(mproc__proc_stat(root, 44, &ps), -EIO);
  put_stat(45, "");
  mproc_assert_err(mproc__proc_stat(root, 45, &ps), -EIO);
  /* Gone, and bad arguments. */
  mproc_assert_err(mproc__proc_stat(root, 46, &ps), -ENOENT);
  mproc_assert_err(mproc__proc_stat(root, 0, &ps), MPROC_EINVAL);
  mproc_assert_err(mproc__proc_stat(root, 42, NULL), MPROC_EINVAL);
  remove_root();
}
END_TEST

START_TEST(test_live_processes) {
  struct mproc__pstat self, parent;
  mproc_assert_ok(mproc__proc_stat(NULL, getpid(), &self));
  ck_assert_int_eq(self.state, 'R');
  ck_assert_int_eq(self.ppid, getppid());
  ck_assert_uint_gt(self.start_time, 0);
  ck_assert_uint_ge(self.num_threads, 1);
  mproc_assert_ok(mproc__proc_stat(NULL, getppid(), &parent));
  ck_assert_uint_le(parent.start_time, self.start_time);
  /* A zombie child, then a reaped one. */
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(0);
  /* The pidfd turns readable when the child has exited: a zombie now. */
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_gt(mproc__poll1(fd, POLLIN, mproc__deadline(30000)), 0);
  close(fd);
  struct mproc__pstat child;
  mproc_assert_ok(mproc__proc_stat(NULL, pid, &child));
  ck_assert_int_eq(child.state, 'Z');
  ck_assert_int_eq(child.ppid, getpid());
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  mproc_assert_err(mproc__proc_stat(NULL, pid, &child), -ENOENT);
}
END_TEST

int main(void) {
  Suite *s = suite_create("procfs");
  TCase *tc = mproc_test_tcase(s, "stat", 30);
  tcase_add_test(tc, test_fixture_lines);
  tcase_add_test(tc, test_live_processes);
  return mproc_test_run(s);
}
