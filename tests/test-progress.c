/* Progress bars (through a real pseudo-terminal) and progress callbacks.
 * ctest-labels: threads */
#include "pool-helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>

static int el_slow(const void *in, void *out) {
  sleep_ms(*(const int *)in);
  *(int *)out = *(const int *)in;
  return 0;
}

static int star_slow(const void *const *args, void *out) { return el_slow(args[0], out); }

#define N 40

/* Runs one map with stderr redirected to `fd`, returns what was written to
 * `rd` (the other end) in buf. */
static int64_t last_map_ms; /* how long the last map_into's map took */

static size_t map_into(int fd, int rd, int mode, char *buf, size_t cap) {
  mproc_pool *p;
  struct mproc_pool_options po = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  int in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = 8;
  fflush(stderr);
  int saved = dup(2);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(fd, 2), 2);
  struct mproc_map_options mo = {.chunksize = 1, .progress = mode};
  int64_t t0 = mproc_now_ms();
  int r = mproc_pool_map(p, el_slow, in, N, sizeof in[0], out, sizeof out[0], &mo, NULL, 60000);
  last_map_ms = mproc_now_ms() - t0;
  dup2(saved, 2);
  close(saved);
  mproc_assert_ok(r);
  mproc_assert_ok(mproc_pool_free(p));
  size_t n = 0;
  struct pollfd pf = {.fd = rd, .events = POLLIN};
  while (n + 1 < cap && poll(&pf, 1, 200) == 1 && (pf.revents & POLLIN)) {
    ssize_t k = read(rd, buf + n, cap - 1 - n);
    if (k <= 0)
      break;
    n += (size_t)k;
  }
  buf[n] = '\0';
  return n;
}

static void check_bar(int cols) {
  int master, slave;
  struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
  ck_assert_int_eq(openpty(&master, &slave, NULL, NULL, &ws), 0);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  fcntl(slave, F_SETFD, FD_CLOEXEC);
  /* Raw output: the terminal must not turn "\n" into "\r\n". */
  struct termios t;
  tcgetattr(slave, &t);
  cfmakeraw(&t);
  tcsetattr(slave, TCSANOW, &t);
  setenv("TERM", "xterm", 1);
  unsetenv("MPROC_PROGRESS");
  static char buf[65536];
  size_t n = map_into(slave, master, MPROC_PROGRESS_AUTO, buf, sizeof buf);
  ck_assert_msg(n > 0, "nothing drawn on the terminal");
  ck_assert_msg(buf[0] == '\r', "bar does not start with a carriage return: %s", buf);
  ck_assert_msg(buf[n - 1] == '\n', "bar does not end with a newline");
  ck_assert_msg(strchr(buf, '\n') == buf + n - 1, "more than one line");
  /* The last redraw: complete, 100% (on a wide enough terminal). */
  char *last = strrchr(buf, '\r');
  if (cols >= 60) {
    ck_assert_ptr_nonnull(strstr(last, "40/40"));
    ck_assert_ptr_nonnull(strstr(last, "100%"));
    ck_assert_ptr_nonnull(strstr(last, "it/s"));
    ck_assert_ptr_nonnull(strstr(last, "|#"));
  }
  /* Every redraw fits the width; at most 10 a second (plus the first and
   * the final one). */
  int redraws = 0;
  for (char *s = buf; (s = strchr(s, '\r')) != NULL; s++) {
    char *e = strpbrk(s + 1, "\r\n");
    size_t len = e != NULL ? (size_t)(e - s - 1) : strlen(s + 1);
    ck_assert_msg((int)len <= cols - 1, "line of %zu columns on a %d-column terminal", len, cols);
    redraws++;
  }
  ck_assert_int_ge(redraws, 1);
  ck_assert_msg(redraws <= last_map_ms / 100 + 2, "%d redraws in %lld ms", redraws,
                (long long)last_map_ms);
  close(master);
  close(slave);
}

START_TEST(test_bar_on_terminal) {
  check_bar(60);
  check_bar(20); /* narrow: the numbers only, cut to the width */
}
END_TEST

START_TEST(test_no_carriage_returns_into_a_pipe) {
  int pp[2];
  ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
  unsetenv("MPROC_PROGRESS");
  static char buf[65536];
  /* auto: not a terminal, nothing at all. */
  ck_assert_uint_eq(map_into(pp[1], pp[0], MPROC_PROGRESS_AUTO, buf, sizeof buf), 0);
  /* on: one summary line, no carriage return. */
  size_t n = map_into(pp[1], pp[0], MPROC_PROGRESS_ON, buf, sizeof buf);
  ck_assert_uint_gt(n, 0);
  ck_assert_ptr_null(strchr(buf, '\r'));
  ck_assert_ptr_null(strchr(buf, '\x1b'));
  ck_assert_msg(strchr(buf, '\n') == buf + n - 1, "not one line: %s", buf);
  ck_assert_ptr_nonnull(strstr(buf, "40/40"));
  /* The environment overrides the program: 0 silences, 1 enables. */
  setenv("MPROC_PROGRESS", "0", 1);
  ck_assert_uint_eq(map_into(pp[1], pp[0], MPROC_PROGRESS_ON, buf, sizeof buf), 0);
  setenv("MPROC_PROGRESS", "1", 1);
  ck_assert_uint_gt(map_into(pp[1], pp[0], MPROC_PROGRESS_OFF, buf, sizeof buf), 0);
  ck_assert_ptr_null(strchr(buf, '\r'));
  unsetenv("MPROC_PROGRESS");
  close(pp[0]);
  close(pp[1]);
}
END_TEST

struct rec {
  int calls, finals;
  size_t last_done, total;
  int64_t last_ms;
  int too_fast;
  bool monotonic;
};

static void on_progress(const struct mproc_progress *pr, void *ud) {
  struct rec *r = ud;
  int64_t now = mproc_now_ms();
  if (r->calls > 0 && !pr->finished && now - r->last_ms < 90)
    r->too_fast++;
  if (pr->done < r->last_done)
    r->monotonic = false;
  r->last_ms = now;
  r->calls++;
  r->finals += pr->finished;
  r->last_done = pr->done;
  r->total = pr->total;
}

static size_t gen_left;
static int gen_ints(void *ctx, void *item) {
  (void)ctx;
  if (gen_left == 0)
    return 0;
  gen_left--;
  *(int *)item = 5;
  return 1;
}

START_TEST(test_callbacks) {
  unsetenv("MPROC_PROGRESS");
  mproc_pool *p;
  struct mproc_pool_options po = {.workers = 2};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  int in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = 8;
  struct rec r = {.monotonic = true};
  struct mproc_map_options mo = {.chunksize = 2, .progress_cb = on_progress, .progress_ud = &r};
  mproc_assert_ok(
      mproc_pool_map(p, el_slow, in, N, sizeof in[0], out, sizeof out[0], &mo, NULL, 60000));
  ck_assert_int_eq(r.finals, 1);
  ck_assert_uint_eq(r.last_done, N);
  ck_assert_uint_eq(r.total, N);
  ck_assert(r.monotonic);
  ck_assert_int_eq(r.too_fast, 0);
  /* starmap */
  const void *cols[1] = {in};
  size_t sizes[1] = {sizeof in[0]};
  memset(&r, 0, sizeof r);
  r.monotonic = true;
  mproc_assert_ok(
      mproc_pool_starmap(p, star_slow, 1, cols, sizes, N, out, sizeof out[0], &mo, NULL, 60000));
  ck_assert_int_eq(r.finals, 1);
  ck_assert_uint_eq(r.last_done, N);
  /* imap_unordered with a known total, then imap without one. */
  for (int unordered = 0; unordered < 2; unordered++) {
    memset(&r, 0, sizeof r);
    r.monotonic = true;
    gen_left = 25;
    struct mproc_imap_options io = {.flags = unordered ? MPROC_IMAP_UNORDERED : 0,
                                    .progress_cb = on_progress,
                                    .progress_ud = &r,
                                    .progress_total = unordered ? 25 : 0};
    mproc_imap *it;
    mproc_assert_ok(
        mproc_pool_imap(p, el_slow, gen_ints, NULL, sizeof(int), sizeof(int), &io, &it));
    int v, got = 0;
    while (mproc_imap_next(it, &v, NULL, NULL, 60000) == 0)
      got++;
    ck_assert_int_eq(got, 25);
    ck_assert_int_eq(r.finals, 1);
    ck_assert_uint_eq(r.last_done, 25);
    ck_assert_uint_eq(r.total, unordered ? 25 : 0);
    ck_assert(r.monotonic);
    mproc_imap_free(it);
    ck_assert_int_eq(r.finals, 1); /* free after the end reports nothing more */
  }
  /* Bad modes. */
  mo.progress = 7;
  mproc_assert_err(
      mproc_pool_map(p, el_slow, in, N, sizeof in[0], out, sizeof out[0], &mo, NULL, 60000),
      MPROC_EINVAL);
  mproc_assert_err(
      mproc_pool_starmap(p, star_slow, 1, cols, sizes, N, out, sizeof out[0], &mo, NULL, 60000),
      MPROC_EINVAL);
  struct mproc_imap_options bad = {.progress = -1};
  mproc_imap *it;
  mproc_assert_err(mproc_pool_imap(p, el_slow, gen_ints, NULL, sizeof(int), sizeof(int), &bad, &it),
                   MPROC_EINVAL);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* Item i (its input) runs once the progress callback has reported i items
 * done: the map can only finish if progress moves inside a chunk. */
static int el_gated(const void *in, void *out) {
  int i = *(const int *)in;
  while (atomic_load(&S->release) < i) /* ends when the callback opens it or the */
    sleep_ms(1);                       /* map's deadline kills this worker */
  *(int *)out = i;
  return 0;
}

struct gate_rec {
  struct rec r;
  size_t distinct; /* distinct values of done reported */
};

static void on_gate_progress(const struct mproc_progress *pr, void *ud) {
  struct gate_rec *g = ud;
  if (g->r.calls == 0 || pr->done != g->r.last_done)
    g->distinct++;
  on_progress(pr, &g->r);
  atomic_store(&S->release, (int)pr->done);
}

START_TEST(test_progress_per_item_within_a_chunk) {
  unsetenv("MPROC_PROGRESS");
  S = shared_new();
  mproc_pool *p;
  struct mproc_pool_options po = {.workers = 1};
  mproc_assert_ok(mproc_pool_new(&p, &po));
  enum { M = 12 };
  int in[M], out[M];
  for (int i = 0; i < M; i++)
    in[i] = i;
  /* One chunk holds every item. */
  struct gate_rec g = {.r = {.monotonic = true}};
  struct mproc_map_options mo = {
      .chunksize = M, .progress_cb = on_gate_progress, .progress_ud = &g};
  struct mproc_task_error e;
  int64_t t0 = mproc_now_ms();
  mproc_assert_ok(
      mproc_pool_map(p, el_gated, in, M, sizeof in[0], out, sizeof out[0], &mo, &e, 30000));
  int64_t took = mproc_now_ms() - t0;
  for (int i = 0; i < M; i++)
    ck_assert_int_eq(out[i], i);
  /* Every count from 0 to M was reported (the gate needs each of them). */
  ck_assert_uint_ge(g.distinct, M);
  ck_assert(g.r.monotonic);
  ck_assert_int_eq(g.r.finals, 1);
  ck_assert_uint_eq(g.r.last_done, M);
  /* Still at most 10 reports a second. */
  ck_assert_int_eq(g.r.too_fast, 0);
  ck_assert_int_le(g.r.calls, took / 100 + 2);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

int main(void) {
  Suite *s = suite_create("progress");
  TCase *tc = mproc_test_tcase(s, "progress", 60);
  tcase_add_test(tc, test_bar_on_terminal);
  tcase_add_test(tc, test_no_carriage_returns_into_a_pipe);
  tcase_add_test(tc, test_callbacks);
  tcase_add_test(tc, test_progress_per_item_within_a_chunk);
  return mproc_test_run(s);
}
