/* Waiting on futures: the shared wait loop, concurrent.futures.wait and
 * as_completed.
 *
 * Design notes.  Every blocking call of the pool module waits through
 * mproc__wait_until(): check the condition; spin a little while helping the
 * pools collect results (only while recent waits on the pool were short, so
 * a wait for a 50 ms task never takes a core from the workers); announce the
 * spinning to the workers, which then skip waking the manager; stop spinning
 * with one more collection under the pool mutex (so no result a worker did
 * not signal is stranded); then sleep on the process-wide epoch futex with
 * the caller's absolute deadline.  SIGINT, for MPROC_POOL_SIGINT pools, bumps
 * the epoch and ends the wait with MPROC_EINTERRUPTED.
 *
 * mproc_futures_wait reads each future until it has finished, and no more:
 * states are final, so a check resumes at the first pending future;
 * as_completed likewise starts its scans at the first future not yet
 * yielded, and finds the set's pools once, at creation.
 *
 * mproc_futures_wait and as_completed help at most the first 8 distinct
 * pools of their set (and take the SIGINT flag from those); futures of
 * further pools are still seen, through the epoch, only without help.
 * as_completed keeps one `yielded` flag per future: each call scans the set
 * and yields a finished future not yet yielded (the lowest index among
 * those finished at that scan, so futures finishing close together may come
 * out in index rather than completion order), MPROC_EEOF once all were. */
#include "pool.h"
#include "futex.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void cpu_relax(int i) {
  if ((i & 63) == 63)
    sched_yield();
  else
    mproc__cpu_relax();
}

/* Wait until cond(ctx) holds: spin while helping the pools, then sleep on the
 * epoch.  Shared by every blocking wait of the pool module. */
int mproc__wait_until(bool (*cond)(void *), void *ctx, struct mproc_pool *const *pools,
                      size_t npools, bool sigint, int64_t deadline_ms) {
  uint32_t mark = mproc__sigint_mark();
  /* Spin only while waits on this pool have recently been short: spinning
   * through a 50 ms task would take a core from the workers. */
  int spin = atomic_load_explicit(&pools[0]->wait_ema_us, memory_order_relaxed) < 200
                 ? mproc__spin_budget()
                 : 16;
  /* A deadline already passed (timeout 0) polls: the caller asked not to
   * wait, so no spin either. */
  if (deadline_ms >= 0 && mproc__poll_timeout(deadline_ms) == 0)
    spin = 0;
  int64_t t0 = now_us();
  int r = 0;
  /* A pool made by the process we were forked from never completes
   * anything here: a wait that is not already over would be for ever. */
  bool foreign = false;
  for (size_t k = 0; k < npools; k++)
    foreign = foreign || mproc__pool_foreign(pools[k]);
  /* While this thread spins it collects results itself, so workers need not
   * wake the manager for each one. */
  bool helping = spin > 16;
  for (size_t k = 0; helping && k < npools; k++)
    mproc__pool_helping(pools[k], +1);
  for (int i = 0;; i++) {
    if (cond(ctx))
      break;
    if (foreign) {
      r = MPROC_ESTATE;
      break;
    }
    if (sigint && mproc__sigint_since(mark)) {
      r = MPROC_EINTERRUPTED;
      break;
    }
    if (i < spin) {
      for (size_t k = 0; k < npools; k++)
        mproc__pool_help(pools[k]);
      cpu_relax(i);
      /* A yield can take milliseconds on a loaded machine: the spin must
       * not outlast a short deadline. */
      if ((i & 63) == 63 && deadline_ms >= 0 && mproc__poll_timeout(deadline_ms) == 0)
        spin = i + 1;
      continue;
    }
    if (helping) {
      helping = false;
      for (size_t k = 0; k < npools; k++)
        mproc__pool_helping(pools[k], -1);
      continue;
    }
    uint32_t seen = atomic_load(&mproc__epoch);
    for (size_t k = 0; k < npools; k++)
      mproc__pool_help(pools[k]);
    if (cond(ctx))
      break;
    r = mproc__epoch_wait(seen, deadline_ms);
    if (r == MPROC_ETIMEDOUT) {
      r = cond(ctx) ? 0 : MPROC_ETIMEDOUT;
      break;
    }
    if (r < 0)
      break;
  }
  for (size_t k = 0; helping && k < npools; k++)
    mproc__pool_helping(pools[k], -1);
  if (r == 0) {
    int64_t took = now_us() - t0;
    int64_t ema = atomic_load_explicit(&pools[0]->wait_ema_us, memory_order_relaxed);
    atomic_store_explicit(&pools[0]->wait_ema_us, (ema * 7 + took) / 8, memory_order_relaxed);
  }
  return r;
}

/* ---- wait / as_completed ---------------------------------------------------- */

/* A future's state is final once set, so the futures before `first` (all
 * finished, their failures folded into `failed`) are never read again: a
 * wait for all of n futures that wakes once per completion costs O(1)
 * amortised per check, not a rescan of the whole set. */
struct wait_ctx {
  mproc_future *const *fs;
  size_t n;
  int mode;
  size_t ndone;
  size_t first; /* every future before it has finished */
  bool failed;  /* one of those failed or was cancelled */
};

static bool future_failed(int s) { return s == MPROC_FUTURE_FAILED || s == MPROC_FUTURE_CANCELED; }

static bool wait_cond(void *arg) {
  struct wait_ctx *w = arg;
  for (; w->first < w->n; w->first++) {
    int s = atomic_load_explicit(&w->fs[w->first]->state, memory_order_acquire);
    if (s < MPROC_FUTURE_DONE)
      break;
    w->failed = w->failed || future_failed(s);
  }
  if (w->first == w->n) {
    w->ndone = w->n;
    return true;
  }
  /* Only the first-completed and first-exception modes look past the first
   * pending future; all-completed needs it to finish anyway. */
  if (w->mode == MPROC_ALL_COMPLETED)
    return false;
  size_t done = w->first;
  bool failed = w->failed;
  for (size_t i = w->first + 1; i < w->n; i++) {
    int s = atomic_load_explicit(&w->fs[i]->state, memory_order_acquire);
    if (s >= MPROC_FUTURE_DONE)
      done++;
    failed = failed || future_failed(s);
  }
  w->ndone = done;
  if (w->mode == MPROC_FIRST_COMPLETED)
    return done > 0;
  return failed;
}

/* The distinct pools of a set of futures (at most `max`). */
static size_t pools_of(mproc_future *const *fs, size_t n, struct mproc_pool **out, size_t max,
                       bool *sigint) {
  size_t k = 0;
  *sigint = false;
  for (size_t i = 0; i < n && k < max; i++) {
    bool seen = false;
    for (size_t j = 0; j < k; j++)
      seen = seen || out[j] == fs[i]->pool;
    if (!seen) {
      out[k++] = fs[i]->pool;
      *sigint = *sigint || (fs[i]->pool->opts.flags & MPROC_POOL_SIGINT);
    }
  }
  return k;
}

MPROC_EXTERN int mproc_futures_wait(mproc_future *const *fs, size_t n, int mode,
                                    int64_t timeout_ms) {
  if ((fs == NULL && n > 0) || mode < MPROC_FIRST_COMPLETED || mode > MPROC_ALL_COMPLETED ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (fs[i] == NULL)
      return MPROC_EINVAL;
  if (n == 0)
    return 0;
  struct wait_ctx w = {.fs = fs, .n = n, .mode = mode};
  struct mproc_pool *pools[8];
  bool sigint;
  size_t np = pools_of(fs, n, pools, 8, &sigint);
  int r = mproc__wait_until(wait_cond, &w, pools, np, sigint, mproc__deadline(timeout_ms));
  return r == 0 ? (int)w.ndone : r;
}

struct mproc_as_completed {
  mproc_future **fs;
  bool *yielded;
  size_t n, left;
  size_t lo; /* every future before it was yielded: scans start here */
  mproc_future *next;
  struct mproc_pool *pools[8]; /* the set's pools, found once */
  size_t npools;
  bool sigint;
};

MPROC_EXTERN int mproc_as_completed_new(mproc_as_completed **out, mproc_future *const *fs,
                                        size_t n) {
  if (out == NULL || (fs == NULL && n > 0))
    return MPROC_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (fs[i] == NULL)
      return MPROC_EINVAL;
  mproc_as_completed *it = calloc(1, sizeof *it);
  if (it == NULL)
    return MPROC_ENOMEM;
  it->fs = malloc((n > 0 ? n : 1) * sizeof *it->fs);
  it->yielded = calloc(n > 0 ? n : 1, sizeof *it->yielded);
  if (it->fs == NULL || it->yielded == NULL) {
    free(it->fs);
    free(it->yielded);
    free(it);
    return MPROC_ENOMEM;
  }
  if (n > 0)
    memcpy(it->fs, fs, n * sizeof *fs);
  it->n = it->left = n;
  it->npools = pools_of(it->fs, n, it->pools, 8, &it->sigint);
  *out = it;
  return 0;
}

static bool ac_cond(void *arg) {
  mproc_as_completed *it = arg;
  while (it->lo < it->n && it->yielded[it->lo])
    it->lo++;
  for (size_t i = it->lo; i < it->n; i++) {
    if (!it->yielded[i] && mproc_future_done(it->fs[i])) {
      it->yielded[i] = true;
      it->left--;
      it->next = it->fs[i];
      return true;
    }
  }
  return false;
}

MPROC_EXTERN int mproc_as_completed_next(mproc_as_completed *it, mproc_future **f,
                                         int64_t timeout_ms) {
  if (it == NULL || f == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (it->left == 0)
    return MPROC_EEOF;
  it->next = NULL;
  int r = mproc__wait_until(ac_cond, it, it->pools, it->npools, it->sigint,
                            mproc__deadline(timeout_ms));
  if (r == 0)
    *f = it->next;
  return r;
}

MPROC_EXTERN void mproc_as_completed_free(mproc_as_completed *it) {
  if (it == NULL)
    return;
  free(it->fs);
  free(it->yielded);
  free(it);
}
