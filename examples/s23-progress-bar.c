/* S23: a progress bar over a map, and a progress callback for programs that draw their own */
#include <mproc.h>
#include <stdio.h>

/* Python: for r in tqdm(pool.imap(count_primes, bounds), total=len(bounds)): ...
 * mproc draws the bar itself (on stderr, at most 10 redraws a second) when
 * asked with .progress; on a file or a pipe it writes one summary line
 * instead.  MPROC_PROGRESS=0 or 1 in the environment overrides the program. */

/* Primes below *in, by trial division: a little CPU work per item. */
static int count_primes(const void *in, void *out) {
  int bound = *(const int *)in, count = 0;
  for (int n = 2; n < bound; n++) {
    int prime = 1;
    for (int d = 2; d * d <= n && prime; d++)
      prime = n % d != 0;
    count += prime;
  }
  *(int *)out = count;
  return 0;
}

/* A callback sees the same reports as the bar: done, total, rate, ETA. */
struct watch {
  unsigned reports;
  size_t last_done, total;
  int went_back; /* a report with fewer items done than the one before */
};
static void on_progress(const struct mproc_progress *pr, void *ud) {
  struct watch *w = ud;
  if (pr->done < w->last_done)
    w->went_back = 1;
  w->reports++;
  w->last_done = pr->done;
  w->total = pr->total;
  if (pr->finished)
    printf("callback: finished, %zu of %zu items\n", pr->done, pr->total);
}

enum { N = 400 };

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, NULL) != 0)
    return 1;
  static int bounds[N], primes[N];
  for (int i = 0; i < N; i++)
    bounds[i] = 20000 + 50 * i;
  struct watch w = {0};
  /* The default chunksize: the workers count the items done inside a
   * running chunk, so the bar moves per item all the same. */
  struct mproc_map_options o = {
      .progress = MPROC_PROGRESS_ON, .progress_cb = on_progress, .progress_ud = &w};
  struct mproc_task_error e;
  int err = mproc_pool_map(pool, count_primes, bounds, N, sizeof *bounds, primes, sizeof *primes,
                           &o, &e, 300000);
  fflush(stderr);
  if (err != 0) {
    printf("map failed: %s: %s\n", mproc_err_name(err), e.message);
    mproc_pool_free(pool);
    return 1;
  }
  printf("count_primes over %d bounds: %d primes below %d, ..., %d primes below %d\n", N, primes[0],
         bounds[0], primes[N - 1], bounds[N - 1]);
  printf("callback: %s\n", w.went_back ? "a report went backwards" : "every report moved forward");
  return mproc_pool_free(pool) == 0 ? 0 : 1;
}
