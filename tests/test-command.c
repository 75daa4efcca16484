/* External commands (src/command.c): start, streams, wait, deadlines, tree
 * kills, and every error case. */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs argv to completion and returns its exit code. */
static int run(char *const argv[], const mproc_command_options *o) {
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, argv, o));
  mproc_assert_ok(mproc_command_wait(c, 60000));
  int code = -1000;
  mproc_assert_ok(mproc_command_exitcode(c, &code));
  mproc_command_free(c);
  return code;
}

/* Reads fd to end of file into buf (NUL-terminated); returns the length. */
static size_t slurp(int fd, char *buf, size_t cap) {
  size_t n = 0;
  ssize_t k;
  while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
    n += (size_t)k;
  buf[n] = '\0';
  return n;
}

START_TEST(test_exit_codes) {
  char *t[] = {"true", NULL}, *f[] = {"false", NULL};
  ck_assert_int_eq(run(t, NULL), 0);
  ck_assert_int_eq(run(f, NULL), 1);
  char *sh[] = {"exit 42", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL};
  ck_assert_int_eq(run(sh, &o), 42);
  char *sig[] = {"kill -TERM $$", NULL};
  ck_assert_int_eq(run(sig, &o), -SIGTERM);
}
END_TEST

START_TEST(test_shell_args_and_pipe) {
  /* argv[1..] become $0, $1 of the shell, as with Python's shell=True. */
  char *sh[] = {"echo \"$0:$1\"; echo err >&2", "zero", "one", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL,
                             .stdout_fd = MPROC_COMMAND_PIPE,
                             .stderr_fd = MPROC_COMMAND_DEVNULL};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, sh, &o));
  char buf[256];
  slurp(mproc_command_fd(c, 1), buf, sizeof buf);
  ck_assert_str_eq(buf, "zero:one\n");
  mproc_assert_err(mproc_command_fd(c, 2), MPROC_ESTATE);
  mproc_assert_err(mproc_command_fd(c, 0), MPROC_ESTATE);
  mproc_assert_ok(mproc_command_wait(c, 60000));
  mproc_command_free(c);
}
END_TEST

START_TEST(test_stdin_pipe_and_close) {
  char *cat[] = {"cat", NULL};
  mproc_command_options o = {.stdin_fd = MPROC_COMMAND_PIPE, .stdout_fd = MPROC_COMMAND_PIPE};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, cat, &o));
  ck_assert_int_eq(write(mproc_command_fd(c, 0), "hello", 5), 5);
  mproc_assert_ok(mproc_command_close_fd(c, 0));
  mproc_assert_err(mproc_command_close_fd(c, 0), MPROC_ESTATE);
  char buf[64];
  slurp(mproc_command_fd(c, 1), buf, sizeof buf);
  ck_assert_str_eq(buf, "hello");
  mproc_assert_ok(mproc_command_wait(c, 60000));
  mproc_assert_ok(mproc_command_wait(c, 0)); /* again: at once */
  mproc_command_free(c);
}
END_TEST

START_TEST(test_caller_fd_and_cwd_and_env) {
  char path[] = "/tmp/mproc-test-cmd-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  char *sh[] = {"pwd; echo \"$MPROC_X\"", NULL};
  char *env[] = {"MPROC_X=forty-two", "PATH=/usr/bin:/bin", NULL};
  mproc_command_options o = {
      .flags = MPROC_COMMAND_SHELL, .stdout_fd = fd, .cwd = "/", .envp = env};
  ck_assert_int_eq(run(sh, &o), 0);
  char buf[64];
  ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
  slurp(fd, buf, sizeof buf);
  ck_assert_str_eq(buf, "/\nforty-two\n");
  close(fd);
}
END_TEST

START_TEST(test_executable) {
  /* argv[0] is only the name the program sees. */
  char *argv[] = {"whatever-name", "-c", "exit 7", NULL};
  mproc_command_options o = {.executable = "/bin/sh"};
  ck_assert_int_eq(run(argv, &o), 7);
  /* With the shell flag it replaces /bin/sh. */
  char *sh[] = {"exit 9", NULL};
  o.flags = MPROC_COMMAND_SHELL;
  ck_assert_int_eq(run(sh, &o), 9);
  mproc_command *c = NULL;
  o = (mproc_command_options){.executable = "/mproc-no-such-file"};
  mproc_assert_err(mproc_command_start(&c, argv, &o), -ENOENT);
}
END_TEST

START_TEST(test_stderr_to_callers_stdout) {
  /* stdout to a pipe, stderr to the caller's fd 1 (here a file): the
   * child's stderr must reach that file, not the pipe. */
  char path[] = "/tmp/mproc-test-cmd-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  fflush(stdout);
  int saved = dup(1);
  ck_assert_int_eq(dup2(fd, 1), 1);
  char *sh[] = {"echo out; echo err >&2", NULL};
  mproc_command_options o = {
      .flags = MPROC_COMMAND_SHELL, .stdout_fd = MPROC_COMMAND_PIPE, .stderr_fd = 1};
  mproc_command *c = NULL;
  int r = mproc_command_start(&c, sh, &o);
  dup2(saved, 1);
  close(saved);
  mproc_assert_ok(r);
  char buf[64];
  slurp(mproc_command_fd(c, 1), buf, sizeof buf);
  ck_assert_str_eq(buf, "out\n");
  mproc_assert_ok(mproc_command_wait(c, 60000));
  mproc_command_free(c);
  ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
  slurp(fd, buf, sizeof buf);
  ck_assert_str_eq(buf, "err\n");
  close(fd);
}
END_TEST

START_TEST(test_only_std_streams_inherited) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0); /* not CLOEXEC on purpose */
  char cmd[64];
  snprintf(cmd, sizeof cmd, "test -e /proc/self/fd/%d", p[0]);
  char *sh[] = {cmd, NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL};
  ck_assert_int_eq(run(sh, &o), 1);
  close(p[0]);
  close(p[1]);
}
END_TEST

START_TEST(test_signals_reset_in_child) {
  /* An ignored SIGTERM in the caller must not be inherited. */
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  sigaction(SIGTERM, &ign, &old);
  char *sh[] = {"kill -TERM $$; exit 0", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL};
  ck_assert_int_eq(run(sh, &o), -SIGTERM);
  sigaction(SIGTERM, &old, NULL);
}
END_TEST

START_TEST(test_start_errors) {
  mproc_command *c = NULL;
  char *t[] = {"true", NULL}, *none[] = {NULL};
  mproc_assert_err(mproc_command_start(NULL, t, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_start(&c, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_start(&c, none, NULL), MPROC_EINVAL);
  mproc_command_options bad = {.flags = 1u << 7};
  mproc_assert_err(mproc_command_start(&c, t, &bad), MPROC_EINVAL);
  bad = (mproc_command_options){.stdout_fd = -3};
  mproc_assert_err(mproc_command_start(&c, t, &bad), MPROC_EINVAL);
  bad = (mproc_command_options){.timeout_ms = -1};
  mproc_assert_err(mproc_command_start(&c, t, &bad), MPROC_EINVAL);
  bad = (mproc_command_options){.grace_ms = -1};
  mproc_assert_err(mproc_command_start(&c, t, &bad), MPROC_EINVAL);
  char *missing[] = {"mproc-no-such-program-here", NULL};
  /* exec's failure is the start's: nothing left behind (checked by the
   * fixture: no child, no fd). */
  mproc_command_options pipes = {.stdout_fd = MPROC_COMMAND_PIPE, .stdin_fd = MPROC_COMMAND_PIPE};
  mproc_assert_err(mproc_command_start(&c, missing, &pipes), -ENOENT);
  mproc_command_options dir = {.cwd = "/mproc-no-such-dir"};
  mproc_assert_err(mproc_command_start(&c, t, &dir), -ENOENT);
  ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_call_errors) {
  int code;
  mproc_assert_err(mproc_command_pid(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_sentinel(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_fd(NULL, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_command_close_fd(NULL, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_command_wait(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_command_exitcode(NULL, &code), MPROC_EINVAL);
  mproc_assert_err(mproc_command_timed_out(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_signal(NULL, SIGTERM, 0), MPROC_EINVAL);
  ck_assert_int_eq(mproc_command_due_ms(NULL), -1);
  mproc_command_free(NULL);

  char *sl[] = {"sleep", "30", NULL};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, sl, NULL));
  ck_assert_int_gt(mproc_command_pid(c), 0);
  ck_assert_int_ge(mproc_command_sentinel(c), 0);
  mproc_assert_err(mproc_command_fd(c, 3), MPROC_EINVAL);
  mproc_assert_err(mproc_command_fd(c, -1), MPROC_EINVAL);
  mproc_assert_err(mproc_command_wait(c, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_command_exitcode(c, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_command_exitcode(c, &code), MPROC_ESTATE);
  mproc_assert_err(mproc_command_signal(c, 0, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_command_signal(c, 65, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_command_signal(c, SIGTERM, 1u << 5), MPROC_EINVAL);
  mproc_assert_err(mproc_command_wait(c, 0), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_command_wait(c, 20), MPROC_ETIMEDOUT);
  ck_assert_int_eq(mproc_command_due_ms(c), -1);
  ck_assert_int_eq(mproc_command_timed_out(c), 0);
  mproc_assert_ok(mproc_command_signal(c, SIGKILL, 0));
  mproc_assert_ok(mproc_command_wait(c, 60000));
  mproc_assert_ok(mproc_command_exitcode(c, &code));
  ck_assert_int_eq(code, -SIGKILL);
  /* Signalling an exited command succeeds and does nothing. */
  mproc_assert_ok(mproc_command_signal(c, SIGTERM, MPROC_SIGNAL_TREE));
  mproc_command_free(c);
}
END_TEST

/* The pids of a shell's background grandchildren, written to a pipe. */
static void read_pids(int fd, pid_t *pids, int n) {
  char buf[256];
  size_t len = 0;
  int got = 0;
  while (got < n) {
    ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
    ck_assert_int_gt(k, 0);
    len += (size_t)k;
    buf[len] = '\0';
    got = 0;
    for (char *p = buf; *p; p++)
      if (*p == '\n')
        got++;
  }
  char *p = buf;
  for (int i = 0; i < n; i++)
    pids[i] = (pid_t)strtol(p, &p, 10);
}

START_TEST(test_timeout_kills_tree) {
  /* A grandchild that ignores SIGTERM and an orphaned one (its parent
   * exits): both must be gone once the command is reaped. */
  char *sh[] = {"trap '' TERM; sleep 300 & echo $!; (sleep 300 & echo $!) ; wait", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL | MPROC_COMMAND_NEWPGRP,
                             .stdout_fd = MPROC_COMMAND_PIPE,
                             .timeout_ms = 200,
                             .grace_ms = 100};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, sh, &o));
  ck_assert_int_gt(mproc_command_due_ms(c), 0);
  pid_t pids[2];
  read_pids(mproc_command_fd(c, 1), pids, 2);
  int64_t t0 = mproc_now_ms();
  mproc_assert_ok(mproc_command_wait(c, 60000));
  ck_assert_int_lt(mproc_now_ms() - t0, 30000);
  ck_assert_int_eq(mproc_command_timed_out(c), 1);
  int code;
  mproc_assert_ok(mproc_command_exitcode(c, &code));
  ck_assert_int_eq(code, -SIGKILL); /* the shell ignored TERM */
  mproc_command_free(c);
  /* The grandchildren were our grandchildren: once killed they are reaped
   * by init quickly, but not synchronously; wait for that, bounded. */
  for (int i = 0; i < 2; i++) {
    int64_t until = mproc_deadline_after(30000);
    while (kill(pids[i], 0) == 0 && mproc_timeout_until(until) > 0)
      usleep(1000); /* polls a real condition, bounded */
    ck_assert_msg(kill(pids[i], 0) != 0, "grandchild %d survived", (int)pids[i]);
  }
}
END_TEST

START_TEST(test_free_kills_running) {
  char *sh[] = {"sleep 300 & sleep 300", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL | MPROC_COMMAND_NEWPGRP};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, sh, &o));
  pid_t pid = mproc_command_pid(c);
  mproc_command_free(c);
  ck_assert_int_ne(kill(pid, 0), 0);
}
END_TEST

START_TEST(test_terminate_with_tree) {
  char *sh[] = {"sleep 300 & wait", NULL};
  mproc_command_options o = {.flags = MPROC_COMMAND_SHELL};
  mproc_command *c = NULL;
  mproc_assert_ok(mproc_command_start(&c, sh, &o));
  mproc_assert_ok(mproc_command_signal(c, SIGTERM, MPROC_SIGNAL_TREE));
  mproc_assert_ok(mproc_command_wait(c, 60000));
  int code;
  mproc_assert_ok(mproc_command_exitcode(c, &code));
  ck_assert_int_eq(code, -SIGTERM);
  ck_assert_int_eq(mproc_command_timed_out(c), 0);
  mproc_command_free(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("command");
  TCase *tc = mproc_test_tcase(s, "basics", 60);
  tcase_add_test(tc, test_exit_codes);
  tcase_add_test(tc, test_shell_args_and_pipe);
  tcase_add_test(tc, test_stdin_pipe_and_close);
  tcase_add_test(tc, test_caller_fd_and_cwd_and_env);
  tcase_add_test(tc, test_executable);
  tcase_add_test(tc, test_stderr_to_callers_stdout);
  tcase_add_test(tc, test_only_std_streams_inherited);
  tcase_add_test(tc, test_signals_reset_in_child);
  tcase_add_test(tc, test_start_errors);
  tcase_add_test(tc, test_call_errors);
  tcase_add_test(tc, test_timeout_kills_tree);
  tcase_add_test(tc, test_free_kills_running);
  tcase_add_test(tc, test_terminate_with_tree);
  return mproc_test_run(s);
}
