/* Progress bars and callbacks for map, starmap, imap and imap_unordered.
 *
 * Design notes.  The bar is drawn by the thread that called map (or
 * mproc_imap_next), never by the manager: it is plain output on stderr,
 * owned by the caller.  States:
 *
 *   begin -> (update: at most one report per 100 ms) -> final update -> ended
 *
 * The mode is decided once at begin: MPROC_PROGRESS=0|1 in the environment
 * overrides the program's choice; AUTO means a bar only when stderr is a
 * terminal and TERM is not "dumb".  On a terminal each report rewrites the
 * line ("\r", padded to the width from TIOCGWINSZ so a shorter line erases a
 * longer one) and the final report ends it with "\n".  Anywhere else (ON with
 * stderr redirected) no carriage return is ever written: one summary line at
 * the end, which is what a log file wants.  The callback gets the same
 * numbers at the same rate, plus the final report, whatever the bar does. */
#include "progress.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

bool mproc__progress_valid(int mode) {
  return mode == MPROC_PROGRESS_OFF || mode == MPROC_PROGRESS_ON || mode == MPROC_PROGRESS_AUTO;
}

static bool is_terminal(int fd) {
  const char *term = getenv("TERM");
  return isatty(fd) && term != NULL && term[0] != '\0' && strcmp(term, "dumb") != 0;
}

void mproc__progress_begin(struct mproc__progress *pr, int mode, mproc_progress_fn cb, void *ud,
                           size_t total) {
  memset(pr, 0, sizeof *pr);
  pr->fd = STDERR_FILENO;
  pr->cb = cb;
  pr->ud = ud;
  pr->total = total;
  pr->start_ms = pr->last_ms = mproc_now_ms();
  const char *env = getenv("MPROC_PROGRESS");
  if (env != NULL && strcmp(env, "0") == 0)
    mode = MPROC_PROGRESS_OFF;
  else if (env != NULL && strcmp(env, "1") == 0)
    mode = MPROC_PROGRESS_ON;
  bool tty = is_terminal(pr->fd);
  if (mode == MPROC_PROGRESS_ON)
    pr->draw = tty ? 1 : 2;
  else if (mode == MPROC_PROGRESS_AUTO)
    pr->draw = tty ? 1 : 0;
}

bool mproc__progress_active(const struct mproc__progress *pr) {
  return pr->draw != 0 || pr->cb != NULL;
}

static int term_width(int fd) {
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 10)
    return ws.ws_col > 400 ? 400 : ws.ws_col;
  return 80;
}

static void fmt_time(char *buf, size_t len, double s) {
  if (s < 0) {
    snprintf(buf, len, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, len, "%02ld:%02ld", t / 60, t % 60);
}

/* Progress output is best effort, and stderr may be a pipe nobody reads
 * any more (`prog 2>&1 | head -1`): the write must then fail with EPIPE,
 * not raise SIGPIPE, whose default action ends the whole program.  So
 * SIGPIPE is blocked in this thread around the writes, and one our write
 * raised is taken back before it is unblocked (one the program had pending
 * already is left alone).  At most ten draws a second pay the calls. */
static void write_all(int fd, const char *s, size_t n) {
  sigset_t pipe_only, old, pending;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  bool was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
  bool broken = false;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      broken = w < 0 && errno == EPIPE;
      break;
    }
    s += w;
    n -= (size_t)w;
  }
  if (broken && !was_pending) {
    const struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* One line of at most `width - 1` columns: "[bar] done/total pct rate ETA". */
static void render(char *line, size_t cap, int width, const struct mproc_progress *p) {
  char rate[32], eta[32], el[32], counts[64];
  snprintf(rate, sizeof rate, "%.1f it/s", p->rate);
  fmt_time(el, sizeof el, p->elapsed_s);
  fmt_time(eta, sizeof eta, p->finished ? 0 : p->eta_s);
  char tail[256];
  if (p->total > 0) {
    int pct = (int)(p->done * 100 / p->total);
    snprintf(counts, sizeof counts, "%zu/%zu", p->done, p->total);
    snprintf(tail, sizeof tail, " %3d%% %s [%s<%s, %s]", pct, counts, el, eta, rate);
  } else {
    snprintf(tail, sizeof tail, " %zu [%s, %s]", p->done, el, rate);
  }
  /* The bar's size comes from the widest tail this call can have (done ==
   * total, 100%), so it does not jump as the numbers grow. */
  char widest[256];
  snprintf(widest, sizeof widest, " 100%% %zu/%zu [%s<%s, %s]", p->total, p->total, el, eta, rate);
  int tail_len = (int)(strlen(widest) > strlen(tail) ? strlen(widest) : strlen(tail));
  int avail = width - 1 - tail_len;
  if (p->total > 0 && avail >= 12) {
    int inner = avail - 2 > 50 ? 50 : avail - 2;
    int fill = (int)((double)inner * (double)p->done / (double)p->total);
    size_t k = 0;
    line[k++] = '|';
    for (int i = 0; i < inner; i++)
      line[k++] = i < fill ? '#' : '.';
    line[k++] = '|';
    snprintf(line + k, cap - k, "%s", tail);
  } else {
    snprintf(line, cap, "%s", tail + 1);
  }
  if ((int)strlen(line) > width - 1)
    line[width - 1] = '\0';
}

void mproc__progress_update(struct mproc__progress *pr, size_t done, bool final) {
  if (pr->ended || !mproc__progress_active(pr))
    return;
  int64_t now = mproc_now_ms();
  if (!final && now - pr->last_ms < 100)
    return;
  pr->last_ms = now;
  struct mproc_progress p = {.done = done, .total = pr->total, .finished = final, .eta_s = -1};
  p.elapsed_s = (double)(now - pr->start_ms) / 1000.0;
  if (p.elapsed_s > 0)
    p.rate = (double)done / p.elapsed_s;
  if (pr->total > 0 && p.rate > 0)
    p.eta_s = (double)(pr->total > done ? pr->total - done : 0) / p.rate;
  if (final)
    pr->ended = true;
  if (pr->cb != NULL)
    pr->cb(&p, pr->ud);
  if (pr->draw == 0 || (pr->draw == 2 && !final))
    return;
  char line[512];
  int width = pr->draw == 1 ? term_width(pr->fd) : 400;
  render(line, sizeof line, width, &p);
  char out[1024];
  int n;
  if (pr->draw == 1) {
    /* Pad so a shorter line erases the previous one. */
    n = snprintf(out, sizeof out, "\r%-*s%s", width - 1, line, final ? "\n" : "");
  } else {
    n = snprintf(out, sizeof out, "%s\n", line);
  }
  if (n > 0)
    write_all(pr->fd, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
  pr->drawn = true;
}
