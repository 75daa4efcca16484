/* mproc — a progress bar for loops the program drives itself (tqdm's
 * manual mode: tqdm(total=n) and update()).
 *
 * It is the same bar map, starmap and imap draw with their `progress`
 * option: one line on stderr, redrawn at most ten times a second, showing
 * done/total, percent, elapsed time, ETA and rate, with the same modes and
 * the same MPROC_PROGRESS=0|1 override.  A program that runs its own work
 * (the `mproc run` tool, a loop over commands) reports progress with it:
 *
 *   mproc_progress_bar *bar;
 *   mproc_progress_bar_new(&bar, MPROC_PROGRESS_AUTO, n, NULL, NULL);
 *   for (size_t i = 0; i < n; i++) { work(i); mproc_progress_bar_update(bar, i + 1); }
 *   mproc_progress_bar_finish(bar, n);
 *   mproc_progress_bar_free(bar);
 *
 * One bar is used by one thread at a time. */
#ifndef MPROC_PROGRESS_BAR_H
#define MPROC_PROGRESS_BAR_H

#include "common.h"
#include "pool.h" /* struct mproc_progress, mproc_progress_fn, MPROC_PROGRESS_* */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_progress_bar mproc_progress_bar;

/* A bar in `mode` (MPROC_PROGRESS_OFF, _ON, _AUTO) for `total` items (0:
 * unknown: no percent or ETA until mproc_progress_bar_set_total()), its clock
 * starting now.  cb (may be NULL) gets the same reports as the bar, at most
 * ten a second and once more at the end.  Errors: MPROC_EINVAL (NULL out,
 * unknown mode), MPROC_ENOMEM. */
MPROC_EXTERN int mproc_progress_bar_new(mproc_progress_bar **out, int mode, size_t total,
                                        mproc_progress_fn cb, void *ud);
/* Sets the total once it is known.  Errors: MPROC_EINVAL (NULL). */
MPROC_EXTERN int mproc_progress_bar_set_total(mproc_progress_bar *bar, size_t total);
/* Reports `done` items; draws only if 100 ms passed since the last report.
 * Errors: MPROC_EINVAL (NULL), MPROC_ESTATE (already finished). */
MPROC_EXTERN int mproc_progress_bar_update(mproc_progress_bar *bar, size_t done);
/* The final report: ends the bar's line (or writes the one summary line of
 * MPROC_PROGRESS_ON without a terminal).  Errors: MPROC_EINVAL,
 * MPROC_ESTATE (already finished). */
MPROC_EXTERN int mproc_progress_bar_finish(mproc_progress_bar *bar, size_t done);
/* Releases the bar (without a final report); NULL is a no-op. */
MPROC_EXTERN void mproc_progress_bar_free(mproc_progress_bar *bar);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_PROGRESS_BAR_H */
