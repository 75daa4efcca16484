/* S17: a libuv loop keeps a 10 ms timer on time while the pool crunches */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#define TASKS 8

static int crunch(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  uint64_t x = (uint64_t) * (const int *)arg + 1, sum = 0;
  for (long i = 0; i < 40000000; i++) { /* ~50-100 ms of CPU */
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    sum += x & 1;
  }
  return mproc_task_return(ctx, &sum, sizeof sum);
}

static mproc_pool *pool;
static uv_timer_t timer;
static uv_poll_t completions;
static int results;
static long ticks;
static uint64_t last_ms, worst_ms;

static void on_result(mproc_future *f, void *ud) { /* runs in the loop's thread */
  const void *d;
  size_t n;
  if (mproc_future_result(f, &d, &n, 0) == 0)
    printf("task %d done: %llu odd numbers in its 40 M random steps\n", (int)(intptr_t)ud,
           (unsigned long long)*(const uint64_t *)d);
  mproc_future_free(f);
  if (++results == TASKS) { /* all in: let the loop end */
    uv_timer_stop(&timer);
    uv_poll_stop(&completions);
  }
}

static void on_tick(uv_timer_t *t) {
  uint64_t now = uv_now(t->loop);
  worst_ms = now - last_ms > worst_ms ? now - last_ms : worst_ms;
  last_ms = now;
  ticks++;
}

static void on_completions(uv_poll_t *h, int status, int events) {
  (void)h, (void)status, (void)events;
  mproc_pool_loop_run(pool, 0, NULL);
}

int main(void) {
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.flags = MPROC_POOL_LOOP}) != 0)
    return 1;
  for (int i = 0; i < TASKS; i++) {
    mproc_future *f;
    mproc_pool_apply_async(pool, crunch, &i, sizeof i, on_result, on_result, (void *)(intptr_t)i,
                           &f);
  }
  uv_loop_t *loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  last_ms = uv_now(loop);
  uv_timer_start(&timer, on_tick, 10, 10);
  uv_poll_init(loop, &completions, mproc_pool_loop_fd(pool));
  uv_poll_start(&completions, UV_READABLE, on_completions);
  uv_run(loop, UV_RUN_DEFAULT);
  printf("all %d results arrived; the timer ticked %ld times\n", results, ticks);
  printf("longest gap between two ticks: %lld ms (1000 or more is a stall): %s\n",
         (long long)worst_ms, worst_ms < 1000 ? "never stalled" : "STALLED");
  uv_close((uv_handle_t *)&timer, NULL);
  uv_close((uv_handle_t *)&completions, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  mproc_pool_free(pool);
  return 0;
}
