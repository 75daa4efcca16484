/* Helpers shared by the fault-class suites (fault-helpers.h). */
#include "fault-helpers.h"
#include "pool-helpers.h"

#include <dirent.h>
#include <grp.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

void stop_and_wait(int pidfd) {
  mproc_assert_ok(mproc__pidfd_kill(pidfd, SIGSTOP));
  siginfo_t si;
  while (waitid(P_PIDFD, (id_t)pidfd, &si, WSTOPPED | WNOWAIT) != 0)
    ck_assert_int_eq(errno, EINTR);
}

pid_t trace_hold(pid_t pid, int *release) {
  int ready[2], hold[2];
  ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(hold, O_CLOEXEC), 0);
  pid_t t = fork();
  ck_assert_int_ge(t, 0);
  if (t == 0) {
    char c = ptrace(PTRACE_SEIZE, pid, NULL, NULL) == 0 ? 'a' : 'e';
    if (write(ready[1], &c, 1) != 1)
      _exit(1);
    close(hold[1]);
    while (read(hold[0], &c, 1) < 0) {
    }
    _exit(0); /* detaches: the zombie goes back to its parent */
  }
  close(ready[1]);
  close(hold[0]);
  char c = 0;
  ck_assert_int_eq(read(ready[0], &c, 1), 1);
  close(ready[0]);
  ck_assert_msg(c == 'a', "PTRACE_SEIZE failed in the tracer");
  *release = hold[1];
  return t;
}

void trace_release(pid_t tracer, int release) {
  ck_assert_int_eq(write(release, "x", 1), 1);
  close(release);
  ck_assert_int_eq(waitpid(tracer, NULL, 0), tracer);
}

bool become_nobody(bool no_processes) {
  struct rlimit zero = {0, 0};
  if (no_processes && setrlimit(RLIMIT_NPROC, &zero) != 0)
    return false;
  return setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0;
}

int run_in_helper(int (*fn)(void *), int64_t timeout_ms) {
  struct mproc__spawn_opts so = {.fn = fn};
  pid_t pid;
  int pidfd, code = -1;
  mproc_assert_ok(mproc__spawn(&so, &pid, &pidfd));
  mproc_assert_ok(mproc__reap(pidfd, &code, mproc__deadline(mproc_test_scaled_ms(timeout_ms))));
  mproc__close(pidfd);
  return code;
}

int stray_keepers(void) {
  char self[PATH_MAX], exe[PATH_MAX], path[64];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = 0;
  struct mproc__pstat mine, ps;
  mproc_assert_ok(mproc__proc_stat(NULL, getpid(), &mine));
  int found = 0;
  DIR *d = opendir("/proc");
  ck_assert_ptr_nonnull(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid <= 0 || pid == getpid() || getsid(pid) != pid)
      continue;
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t m = readlink(path, exe, sizeof exe - 1);
    if (m <= 0)
      continue;
    exe[m] = 0;
    if (strcmp(exe, self) == 0 && mproc__proc_stat(NULL, pid, &ps) == 0 && ps.state != 'Z' &&
        ps.start_time >= mine.start_time)
      found++;
  }
  closedir(d);
  return found;
}

int wait_no_stray_keepers(int64_t timeout_ms) {
  int64_t until = mproc__deadline(timeout_ms);
  int n;
  while ((n = stray_keepers()) > 0 && mproc_timeout_until(until) > 0)
    poll(NULL, 0, 10);
  return n;
}

int proc_traceable(const void *arg, size_t len) {
  (void)arg, (void)len;
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY); /* Yama's scope 1; else EINVAL */
  for (;;)
    pause();
  return 0;
}

int task_traceable(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY);
  atomic_store(&S->pid, (int)getpid());
  for (;;)
    pause();
  return 0;
}

void wait_task_started(void) {
  int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(3000);
  while (atomic_load(&S->pid) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
}
