/* S22: a large result written in place in the worker (mproc_task_result_buf) */
#include <mproc.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

/* Python pickles a large result in the worker and unpickles it in the
 * parent: two copies and a pass through a pipe.  An mproc task can ask for
 * its result buffer up front and write into it: a result larger than
 * 64 KiB lives in a memory file that the parent maps, so the bytes the
 * worker wrote are the bytes the caller reads. */

enum { PER_TASK = 1 << 19, TASKS = 4 }; /* 2^21 numbers, 1 MiB of results per task */

/* Steps of the Collatz sequence from n down to 1. */
static uint16_t collatz_steps(uint64_t n) {
  uint16_t steps = 0;
  while (n != 1) {
    n = (n & 1) ? 3 * n + 1 : n / 2;
    steps++;
  }
  return steps;
}

/* Fills steps[i] for the numbers first .. first + PER_TASK - 1. */
static int steps_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  uint64_t first = *(const uint64_t *)arg;
  uint16_t *steps = mproc_task_result_buf(ctx, PER_TASK * sizeof *steps);
  if (steps == NULL)
    return mproc_task_fail(ctx, -ENOMEM, "no memory for a %zu-byte result",
                           PER_TASK * sizeof *steps);
  for (size_t i = 0; i < PER_TASK; i++)
    steps[i] = collatz_steps(first + i);
  return 0; /* the buffer is the result: nothing to copy */
}

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2}) != 0)
    return 1;
  mproc_future *fs[TASKS];
  int status = 0, made = 0;
  for (; made < TASKS; made++) {
    uint64_t first = 1 + (uint64_t)made * PER_TASK;
    if (mproc_pool_submit(pool, steps_task, &first, sizeof first, &fs[made]) != 0) {
      status = 1;
      break;
    }
  }
  uint64_t best_n = 0;
  unsigned best = 0;
  size_t bytes = 0;
  for (int t = 0; t < made; t++) {
    const void *r;
    size_t len;
    int err = mproc_future_result(fs[t], &r, &len, 120000);
    if (err != 0 || len != PER_TASK * sizeof(uint16_t)) {
      printf("task %d: %s\n", t, err != 0 ? mproc_strerror(err) : "short result");
      status = 1;
      continue;
    }
    bytes += len;
    const uint16_t *steps = r; /* borrowed from the future: no copy */
    for (size_t i = 0; i < PER_TASK; i++) {
      if (steps[i] > best) {
        best = steps[i];
        best_n = 1 + (uint64_t)t * PER_TASK + i;
      }
    }
    if (t == 0) /* spot-check against the parent's own computation */
      printf("steps(27) = %u (checked here: %u)\n", steps[26], collatz_steps(27));
  }
  printf("%d results of %zu KiB each, %zu KiB in all, written in place by the workers\n", made,
         PER_TASK * sizeof(uint16_t) / 1024, bytes / 1024);
  printf("longest chain below %d: n = %llu, %u steps (checked here: %u)\n", TASKS * PER_TASK + 1,
         (unsigned long long)best_n, best, collatz_steps(best_n));
  for (int t = 0; t < made; t++)
    mproc_future_free(fs[t]);
  return mproc_pool_free(pool) == 0 ? status : 1;
}
