/* mproc run: --bar, --eta and --progress.
 *
 * Design notes.  Progress is for a person watching: it is drawn only when
 * stderr is a terminal (TERM set and not "dumb"), so a run whose stderr is
 * redirected gets nothing extra, as the specification asks.  One line,
 * rewritten with "\r" at most ten times a second and padded to the previous
 * length so a shorter line erases a longer one; the final draw ends it with
 * a newline.  The total is shown once the input is known to be complete
 * (::: lists at once, stdin at its end); until then, ETA and the bar are
 * left out rather than guessed. */
#include "run.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void run_progress_begin(struct run_progress *p, const struct run_opts *o) {
  *p = (struct run_progress){0};
  const char *term = getenv("TERM");
  if (!isatty(STDERR_FILENO) || term == NULL || *term == '\0' || strcmp(term, "dumb") == 0)
    return;
  p->mode = (o->bar ? 1 : 0) | (o->eta ? 2 : 0) | (o->progress ? 4 : 0);
  p->start_ms = p->last_ms = mproc_now_ms();
}

void run_progress_draw(struct run_progress *p, uint64_t done, uint64_t running, uint64_t total,
                       bool final) {
  if (p->mode == 0)
    return;
  int64_t now = mproc_now_ms();
  if (!final && now - p->last_ms < 100)
    return;
  p->last_ms = now;
  double elapsed = (double)(now - p->start_ms) / 1000.0;
  char line[256];
  int n = 0;
  if (p->mode & 4)
    n += snprintf(line + n, sizeof line - (size_t)n, "running %llu done %llu ",
                  (unsigned long long)running, (unsigned long long)done);
  if (total > 0 && (p->mode & 1)) {
    int pct = (int)(done * 100 / total), width = 30, fill = (int)(done * (uint64_t)width / total);
    n += snprintf(line + n, sizeof line - (size_t)n, "%3d%% |", pct);
    for (int i = 0; i < width && n < (int)sizeof line - 2; i++)
      line[n++] = i < fill ? '#' : ' ';
    n += snprintf(line + n, sizeof line - (size_t)n, "| %llu/%llu ", (unsigned long long)done,
                  (unsigned long long)total);
  } else if (p->mode & 1) {
    n += snprintf(line + n, sizeof line - (size_t)n, "%llu done ", (unsigned long long)done);
  }
  if ((p->mode & 2) && total > 0 && done > 0) {
    double eta = elapsed / (double)done * (double)(total - (done < total ? done : total));
    n += snprintf(line + n, sizeof line - (size_t)n, "ETA %.0fs left %llu ", eta,
                  (unsigned long long)(total - (done < total ? done : total)));
  }
  n += snprintf(line + n, sizeof line - (size_t)n, "%.1fs", elapsed);
  char out[300];
  int m = snprintf(out, sizeof out, "\r%-60s%s", line, final ? "\n" : "");
  if (m > 0)
    run_write_all(STDERR_FILENO, out, (size_t)m < sizeof out ? (size_t)m : sizeof out - 1);
  p->drawn = !final;
}
