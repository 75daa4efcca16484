/* S14: bounded concurrency with max_workers=4 */
#include <mproc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

/* A page every worker shares (mapped before the pool forks them). */
static struct { _Atomic int running, peak; } * counters;

static int job(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  int now = atomic_fetch_add(&counters->running, 1) + 1;
  int peak = atomic_load(&counters->peak);
  while (now > peak && !atomic_compare_exchange_weak(&counters->peak, &peak, now)) {
  }
  nanosleep(&(struct timespec){0, 50000000}, NULL); /* 50 ms of "work" */
  atomic_fetch_sub(&counters->running, 1);
  return 0;
}

int main(void) {
  counters =
      mmap(NULL, sizeof *counters, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (counters == MAP_FAILED)
    return 1;
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4}) != 0)
    return 1;
  mproc_future *fs[12];
  for (int i = 0; i < 12; i++)
    mproc_pool_submit(pool, job, NULL, 0, &fs[i]);
  int done = mproc_futures_wait(fs, 12, MPROC_ALL_COMPLETED, MPROC_FOREVER);
  for (int i = 0; i < 12; i++)
    mproc_future_free(fs[i]);
  printf("%d tasks done on %d workers\n", done, mproc_pool_workers(pool));
  printf("most tasks running at once: %d\n", atomic_load(&counters->peak));
  mproc_pool_free(pool);
  munmap(counters, sizeof *counters);
  return 0;
}
