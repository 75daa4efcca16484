/* A standalone progress bar: the public face of progress.c.
 *
 * Design notes.  map and imap own their bar inside the call; a program
 * that drives its own loop (the mproc run tool) needs the same bar as an
 * object.  This file only validates arguments and holds the state;
 * drawing, throttling, the terminal check and the MPROC_PROGRESS override
 * are progress.c's, so every bar of the library looks and behaves the same.
 * States: new -> (update)* -> finished (finish) -> freed; an update or a
 * second finish after the end is MPROC_ESTATE rather than a silent no-op,
 * so a loop that reports past its end is caught. */
#include "progress.h"

#include <stdlib.h>

struct mproc_progress_bar {
  struct mproc__progress pr; /* the drawing state (progress.c) */
  bool finished;             /* the final report was made */
};

int mproc_progress_bar_new(mproc_progress_bar **out, int mode, size_t total, mproc_progress_fn cb,
                           void *ud) {
  if (out == NULL || !mproc__progress_valid(mode))
    return MPROC_EINVAL;
  mproc_progress_bar *b = calloc(1, sizeof *b);
  if (b == NULL)
    return MPROC_ENOMEM;
  mproc__progress_begin(&b->pr, mode, cb, ud, total);
  *out = b;
  return 0;
}

int mproc_progress_bar_set_total(mproc_progress_bar *bar, size_t total) {
  if (bar == NULL)
    return MPROC_EINVAL;
  bar->pr.total = total;
  return 0;
}

static int report(mproc_progress_bar *bar, size_t done, bool final) {
  if (bar == NULL)
    return MPROC_EINVAL;
  if (bar->finished)
    return MPROC_ESTATE;
  bar->finished = final;
  mproc__progress_update(&bar->pr, done, final);
  return 0;
}

int mproc_progress_bar_update(mproc_progress_bar *bar, size_t done) {
  return report(bar, done, false);
}

int mproc_progress_bar_finish(mproc_progress_bar *bar, size_t done) {
  return report(bar, done, true);
}

void mproc_progress_bar_free(mproc_progress_bar *bar) { free(bar); }
