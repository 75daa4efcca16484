/* mproc run: --bar, --eta and --progress.
 *
 * Design notes.  Progress is for a person watching, so it is the library's
 * progress bar (mproc_progress_bar, the one map and imap draw) in AUTO mode:
 * drawn on stderr only when stderr is a terminal, so a run whose output is
 * captured gets nothing extra.  The bar shows done/total, percent, elapsed
 * time, ETA and rate, which covers all three options.  The total is given
 * once the input is known to be complete (::: lists at once, stdin at its
 * end); until then the bar shows the count and rate without guessing an
 * ETA. */
#include "run.h"

void run_progress_begin(struct run_progress *p, const struct run_opts *o) {
  *p = (struct run_progress){0};
  if (o->bar || o->eta || o->progress)
    mproc_progress_bar_new(&p->bar, MPROC_PROGRESS_AUTO, 0, NULL, NULL);
}

void run_progress_draw(struct run_progress *p, uint64_t done, uint64_t total, bool final) {
  if (p->bar == NULL)
    return;
  if (total != p->total) {
    p->total = total;
    mproc_progress_bar_set_total(p->bar, (size_t)total);
  }
  if (final)
    mproc_progress_bar_finish(p->bar, (size_t)done);
  else
    mproc_progress_bar_update(p->bar, (size_t)done);
}

void run_progress_end(struct run_progress *p) {
  mproc_progress_bar_free(p->bar);
  p->bar = NULL;
}
