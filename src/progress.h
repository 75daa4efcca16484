/* Progress reporting for map/imap (progress.c). */
#ifndef MPROC_PROGRESS_INTERNAL_H
#define MPROC_PROGRESS_INTERNAL_H

#include "internal.h"

struct mproc__progress {
  int draw;             /* 0 nothing, 1 bar on a terminal, 2 one summary line */
  int fd;               /* where it draws: stderr */
  mproc_progress_fn cb; /* the program's own callback, or NULL */
  void *ud;
  size_t total;     /* 0: unknown */
  int64_t start_ms; /* when the call began */
  int64_t last_ms;  /* last report (reports are at most 10 a second) */
  bool drawn;       /* a bar line is on the screen */
  bool ended;       /* the final report was made */
};

/* Whether `mode` is a valid MPROC_PROGRESS_* value. */
bool mproc__progress_valid(int mode);
/* Set up: resolves auto and the MPROC_PROGRESS override. */
void mproc__progress_begin(struct mproc__progress *pr, int mode, mproc_progress_fn cb, void *ud,
                           size_t total);
/* Whether anything will be reported at all. */
bool mproc__progress_active(const struct mproc__progress *pr);
/* Report `done` items (throttled to 10 a second unless `final`); the final
 * report ends the bar with a newline.  Later calls do nothing. */
void mproc__progress_update(struct mproc__progress *pr, size_t done, bool final);

#endif /* MPROC_PROGRESS_INTERNAL_H */
