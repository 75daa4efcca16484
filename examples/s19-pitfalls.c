/* S19: pitfalls -- leaky workers recycled, dead workers replaced, default size */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *volatile leaked; /* never freed: memory grows with every task */

static int leaky(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  leaked = malloc(1 << 20);
  int pid = (int)getpid();
  return mproc_task_return(ctx, &pid, sizeof pid);
}

static int dies(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  _exit(3);
}

static int pid_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  int pid = (int)getpid();
  return mproc_task_return(ctx, &pid, sizeof pid);
}

static int run_pid(mproc_pool *pool, mproc_task_fn fn) {
  void *r;
  size_t len;
  struct mproc_task_error e;
  int err = mproc_pool_apply(pool, fn, NULL, 0, &r, &len, &e, MPROC_FOREVER);
  if (err != 0) {
    printf("task failed: %s: %s\n", mproc_err_name(err), e.message);
    return -1;
  }
  int pid = *(int *)r;
  free(r);
  return pid;
}

int main(void) {
  /* 1. maxtasksperchild: a leaking worker is replaced after 3 tasks. */
  mproc_pool *pool;
  struct mproc_pool_options o = {.workers = 1, .max_tasks_per_worker = 3};
  if (mproc_pool_new(&pool, &o) != 0)
    return 1;
  int pids[9], distinct = 0;
  for (int i = 0; i < 9; i++) {
    pids[i] = run_pid(pool, leaky);
    distinct += i == 0 || pids[i] != pids[i - 1];
  }
  printf("9 leaky tasks ran in %d successive workers (3 tasks each)\n", distinct);
  mproc_pool_free(pool);

  /* 2. a worker that dies is replaced; the pool carries on. */
  mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 1});
  int before = run_pid(pool, pid_task);
  run_pid(pool, dies);
  int after = run_pid(pool, pid_task);
  printf("worker replaced: %s\n", after > 0 && after != before ? "yes" : "no");
  mproc_pool_free(pool);

  /* 3. the default pool size is the number of usable CPUs. */
  mproc_pool_new(&pool, NULL);
  printf("default workers: %d, usable CPUs: %d\n", mproc_pool_workers(pool), mproc_cpu_count());
  mproc_pool_free(pool);
  return 0;
}
