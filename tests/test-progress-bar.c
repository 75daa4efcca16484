/* The standalone progress bar (src/progress_bar.c): what it draws on a
 * terminal and elsewhere, its callback, its states and argument errors. */
#include "harness.h"

#include <fcntl.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct calls {
  int n, finished;
  size_t last_done, last_total;
};

static void count(const struct mproc_progress *p, void *ud) {
  struct calls *c = ud;
  c->n++;
  c->finished += p->finished;
  c->last_done = p->done;
  c->last_total = p->total;
}

/* Runs a bar of `n` items with stderr on `fd`; returns what `rd` holds. */
static size_t run_bar(int fd, int rd, int mode, size_t total_at_start, char *buf, size_t cap,
                      struct calls *c) {
  unsetenv("MPROC_PROGRESS");
  fflush(stderr);
  int saved = dup(2);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(fd, 2), 2);
  mproc_progress_bar *b = NULL;
  mproc_assert_ok(mproc_progress_bar_new(&b, mode, total_at_start, count, c));
  mproc_assert_ok(mproc_progress_bar_set_total(b, 5));
  for (size_t i = 1; i <= 5; i++)
    mproc_assert_ok(mproc_progress_bar_update(b, i));
  mproc_assert_ok(mproc_progress_bar_finish(b, 5));
  mproc_assert_err(mproc_progress_bar_update(b, 6), MPROC_ESTATE);
  mproc_assert_err(mproc_progress_bar_finish(b, 6), MPROC_ESTATE);
  mproc_progress_bar_free(b);
  dup2(saved, 2);
  close(saved);
  size_t n = 0;
  ssize_t k;
  fcntl(rd, F_SETFL, O_NONBLOCK);
  while (n + 1 < cap && (k = read(rd, buf + n, cap - 1 - n)) > 0)
    n += (size_t)k;
  buf[n] = '\0';
  return n;
}

START_TEST(test_not_a_terminal) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  char buf[4096];
  struct calls c = {0};
  /* ON without a terminal: one summary line at the end, no carriage return. */
  run_bar(p[1], p[0], MPROC_PROGRESS_ON, 0, buf, sizeof buf, &c);
  ck_assert_msg(strstr(buf, "100% 5/5") != NULL, "summary: '%s'", buf);
  ck_assert_ptr_null(strchr(buf, '\r'));
  ck_assert_int_eq(c.finished, 1);
  ck_assert_int_ge(c.n, 1); /* updates within 100 ms are throttled; the final is not */
  ck_assert_uint_eq(c.last_done, 5);
  ck_assert_uint_eq(c.last_total, 5);
  /* AUTO without a terminal, and OFF: nothing drawn, callback still called. */
  c = (struct calls){0};
  ck_assert_uint_eq(run_bar(p[1], p[0], MPROC_PROGRESS_AUTO, 5, buf, sizeof buf, &c), 0);
  ck_assert_int_eq(c.finished, 1);
  c = (struct calls){0};
  ck_assert_uint_eq(run_bar(p[1], p[0], MPROC_PROGRESS_OFF, 5, buf, sizeof buf, &c), 0);
  ck_assert_int_eq(c.finished, 1);
  close(p[0]);
  close(p[1]);
}
END_TEST

START_TEST(test_terminal) {
  int master, slave;
  struct winsize ws = {.ws_row = 24, .ws_col = 100};
  ck_assert_int_eq(openpty(&master, &slave, NULL, NULL, &ws), 0);
  setenv("TERM", "xterm", 1);
  char buf[8192];
  struct calls c = {0};
  run_bar(slave, master, MPROC_PROGRESS_AUTO, 0, buf, sizeof buf, &c);
  ck_assert_msg(strchr(buf, '\r') != NULL && strstr(buf, "100% 5/5") != NULL, "bar: '%s'", buf);
  ck_assert_msg(strchr(buf, '|') != NULL, "no bar drawn: '%s'", buf);
  close(master);
  close(slave);
}
END_TEST

START_TEST(test_errors) {
  mproc_progress_bar *b = NULL;
  mproc_assert_err(mproc_progress_bar_new(NULL, MPROC_PROGRESS_OFF, 0, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_progress_bar_new(&b, 7, 0, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_progress_bar_new(&b, -1, 0, NULL, NULL), MPROC_EINVAL);
  ck_assert_ptr_null(b);
  mproc_assert_err(mproc_progress_bar_set_total(NULL, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_progress_bar_update(NULL, 1), MPROC_EINVAL);
  mproc_assert_err(mproc_progress_bar_finish(NULL, 1), MPROC_EINVAL);
  mproc_progress_bar_free(NULL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("progress-bar");
  TCase *tc = mproc_test_tcase(s, "basics", 30);
  tcase_add_test(tc, test_not_a_terminal);
  tcase_add_test(tc, test_terminal);
  tcase_add_test(tc, test_errors);
  return mproc_test_run(s);
}
