/* S17: an epoll loop keeps a 10 ms timer on time while the pool crunches */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

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

static int results;
static void on_result(mproc_future *f, void *ud) { /* runs in the loop's thread */
  const void *d;
  size_t n;
  if (mproc_future_result(f, &d, &n, 0) == 0)
    printf("task %d done: %llu odd numbers in its 40 M random steps\n", (int)(intptr_t)ud,
           (unsigned long long)*(const uint64_t *)d);
  results++;
  mproc_future_free(f);
}

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.flags = MPROC_POOL_LOOP}) != 0)
    return 1;
  for (int i = 0; i < TASKS; i++) {
    mproc_future *f;
    mproc_pool_apply_async(pool, crunch, &i, sizeof i, on_result, on_result, (void *)(intptr_t)i,
                           &f);
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  struct itimerspec every10ms = {{0, 10000000}, {0, 10000000}};
  timerfd_settime(tfd, 0, &every10ms, NULL);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = tfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
  ev.data.fd = mproc_pool_loop_fd(pool);
  epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);

  long ticks = 0;
  int64_t last = mproc_now_ms(), worst = 0;
  while (results < TASKS) {
    struct epoll_event got[2];
    int n = epoll_wait(ep, got, 2, 5000);
    for (int k = 0; k < n; k++) {
      if (got[k].data.fd == tfd) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) > 0)
          ticks++;
        int64_t now = mproc_now_ms();
        worst = now - last > worst ? now - last : worst;
        last = now;
      } else {
        mproc_pool_loop_run(pool, 0, NULL); /* runs on_result for each completion */
      }
    }
  }
  printf("all %d results arrived; the timer ticked %ld times\n", results, ticks);
  printf("longest gap between two ticks: %lld ms (1000 or more is a stall): %s\n", (long long)worst,
         worst < 1000 ? "never stalled" : "STALLED");
  close(tfd);
  close(ep);
  mproc_pool_free(pool);
  return 0;
}
