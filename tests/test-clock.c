/* The deadline helpers every blocking call waits through (src/clock.c and
 * the capped futex wait of src/futex.c): they time out only once the
 * absolute deadline has really passed, never early, and signals do not end
 * or stretch a wait. */
#include "harness.h"
#include "futex.h"
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* SIGALRM every millisecond, without SA_RESTART: every blocking system call
 * of the waits below keeps being interrupted with EINTR. */
static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
  (void)sig;
  alarms++;
}
static void start_alarms(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
  struct itimerval it = {.it_interval = {0, 1000}, .it_value = {0, 1000}};
  ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
}
static void stop_alarms(void) {
  struct itimerval it;
  memset(&it, 0, sizeof it);
  ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
}

START_TEST(test_poll_until_times_out_at_the_deadline) {
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  struct pollfd p = {.fd = fds[0], .events = POLLIN};
  int64_t deadline = mproc_now_ms() + 50;
  mproc_assert_err(mproc__poll_until(&p, 1, deadline), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms(), deadline);
  /* The same under a storm of signals: EINTR neither ends nor stretches it. */
  start_alarms();
  deadline = mproc_now_ms() + 50;
  mproc_assert_err(mproc__poll_until(&p, 1, deadline), MPROC_ETIMEDOUT);
  int64_t end = mproc_now_ms();
  stop_alarms();
  ck_assert_int_ge(end, deadline);
  ck_assert_int_gt(alarms, 0);
  mproc_assert_err(mproc__poll1(fds[0], POLLIN, mproc_now_ms() + 10), MPROC_ETIMEDOUT);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

START_TEST(test_poll_until_reports_ready_fds) {
  int a[2], b[2];
  ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(b, O_CLOEXEC), 0);
  ck_assert_int_eq(write(b[1], "x", 1), 1);
  struct pollfd p[2] = {{.fd = a[0], .events = POLLIN}, {.fd = b[0], .events = POLLIN}};
  ck_assert_int_eq(mproc__poll_until(p, 2, -1), 1);
  ck_assert_int_eq(p[0].revents, 0);
  ck_assert_int_eq(p[1].revents, POLLIN);
  /* A deadline already passed polls once: ready fds are still reported,
   * and nothing ready is an immediate timeout. */
  ck_assert_int_eq(mproc__poll_until(p, 2, 0), 1);
  ck_assert_int_eq(mproc__poll1(b[0], POLLIN, 0), POLLIN);
  mproc_assert_err(mproc__poll_until(p, 1, 0), MPROC_ETIMEDOUT);
  /* An error other than EINTR is returned as -errno: poll refuses more
   * entries than the fd limit. */
  struct rlimit old, low = {.rlim_cur = 64, .rlim_max = 0};
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  low.rlim_max = old.rlim_max;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  struct pollfd many[65];
  for (size_t i = 0; i < 65; i++)
    many[i] = (struct pollfd){.fd = -1};
  int r = mproc__poll_until(many, 65, -1);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  mproc_assert_err(r, -EINVAL);
  for (int i = 0; i < 2; i++) {
    close(a[i]);
    close(b[i]);
  }
}
END_TEST

START_TEST(test_futex_wait_capped) {
  _Atomic uint32_t word = 1;
  /* A word that already moved: no sleep. */
  mproc_assert_ok(mproc__futex_wait_capped(&word, 0, -1, 1000, false));
  /* A deadline already passed: time out without sleeping. */
  mproc_assert_err(mproc__futex_wait_capped(&word, 1, 0, 1000, false), MPROC_ETIMEDOUT);
  /* Nobody wakes: the sleep ends after the re-check interval, long before
   * the deadline, with 0 (the caller re-checks its condition). */
  int64_t deadline = mproc_now_ms() + 60000;
  mproc_assert_ok(mproc__futex_wait_capped(&word, 1, deadline, 10, false));
  ck_assert_int_lt(mproc_now_ms(), deadline);
  mproc_assert_ok(mproc__futex_wait_capped(&word, 1, -1, 10, false));
}
END_TEST

/* The loop of every capped wait, under signals: the deadline is reached
 * through returns of 0 (the caller's condition is re-checked at the
 * deadline), and the timeout is never reported early. */
START_TEST(test_futex_wait_capped_times_out_at_the_deadline) {
  _Atomic uint32_t word = 7;
  start_alarms();
  int64_t deadline = mproc_now_ms() + 50;
  int r, rounds = 0;
  while ((r = mproc__futex_wait_capped(&word, 7, deadline, 20, true)) == 0)
    rounds++;
  int64_t end = mproc_now_ms();
  stop_alarms();
  mproc_assert_err(r, MPROC_ETIMEDOUT);
  ck_assert_int_ge(end, deadline);
  ck_assert_int_ge(rounds, 3); /* two slices of 20 ms and the one ending at 50 */
}
END_TEST

int main(void) {
  Suite *s = suite_create("clock");
  TCase *tc = mproc_test_tcase(s, "deadline waits", 30);
  tcase_add_test(tc, test_poll_until_times_out_at_the_deadline);
  tcase_add_test(tc, test_poll_until_reports_ready_fds);
  tcase_add_test(tc, test_futex_wait_capped);
  tcase_add_test(tc, test_futex_wait_capped_times_out_at_the_deadline);
  return mproc_test_run(s);
}
