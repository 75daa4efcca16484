/* S25: what a worker sees, and objects made after the pool handed to tasks */
/* Python refuses this outright:
 *     pool = Pool(2)
 *     counter = Value('i', 0)             # made after the pool
 *     pool.map(bump, [counter] * 100)     # RuntimeError: Synchronized objects
 *                                         # should only be shared between
 *                                         # processes through inheritance
 * Workers are forked when the pool is made: a global changed later comes back
 * stale, and an object made later does not exist in them.  mproc hands such
 * objects over by fd: the task maps them again and uses them as they are. */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

static int setting = 1; /* changed after the pool: workers keep the old value */

/* Returns the worker's copy of `setting`. */
static int read_setting(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  return mproc_task_return(ctx, &setting, sizeof setting);
}

/* fds[0]: the counter (a Value); fds[1]: the results queue. */
static int bump(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  const int *fds;
  if (mproc_task_fds(ctx, &fds) != 2)
    return mproc_task_fail(ctx, MPROC_EINVAL, "expected 2 fds");
  mproc_value *counter;
  mproc_queue *results;
  int r = mproc_value_from_fd(&counter, fds[0]);
  if (r != 0)
    return mproc_task_fail(ctx, r, "counter: %s", mproc_strerror(r));
  r = mproc_queue_from_fd(&results, fds[1], MPROC_QUEUE_PRODUCER);
  if (r != 0) {
    mproc_value_free(counter);
    return mproc_task_fail(ctx, r, "queue: %s", mproc_strerror(r));
  }
  mproc_rlock *lock;
  mproc_value_get_lock(counter, &lock);
  mproc_rlock_acquire(lock, -1); /* with counter.get_lock(): counter.value += 1 */
  int *value = mproc_value_ptr(counter);
  *value += 1;
  mproc_rlock_release(lock);
  int task = *(const int *)arg;
  if (task % 25 == 0)
    r = mproc_queue_put(results, &task, sizeof task, 10000);
  /* A worker runs many tasks: release what this one mapped. */
  mproc_queue_free(results);
  mproc_value_free(counter);
  return r;
}

int main(void) {
  mproc_pool *pool = NULL;
  mproc_value *counter = NULL;
  mproc_queue *results = NULL;
  mproc_future *f[100] = {0};
  int r = mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2});
  if (r != 0) {
    fprintf(stderr, "pool: %s\n", mproc_strerror(r));
    return 1;
  }
  setting = 2;
  void *data;
  size_t n;
  r = mproc_pool_apply(pool, read_setting, NULL, 0, &data, &n, NULL, 10000);
  if (r == 0) {
    printf("parent's setting: %d, the worker's copy: %d (forked before the change)\n", setting,
           *(int *)data);
    free(data);
  }
  /* Made after the pool: handed to each task by fd. */
  if (r == 0)
    r = mproc_value_new(&counter, MPROC_TYPE_INT32, NULL, NULL);
  if (r == 0)
    r = mproc_queue_new(&results, NULL);
  int fds[2] = {mproc_object_fd(counter), mproc_queue_fd(results)};
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = 2};
  for (int i = 0; i < 100 && r == 0; i++)
    r = mproc_pool_submit_ex(pool, bump, &i, sizeof i, &so, &f[i]);
  const void *res;
  for (int i = 0; i < 100 && r == 0; i++)
    r = mproc_future_result(f[i], &res, &n, 30000);
  if (r == 0) {
    int value = 0;
    mproc_value_get(counter, 0, 1, &value, -1);
    printf("100 tasks incremented a Value made after the pool: %d\n", value);
    int sum = 0;
    for (int i = 0; i < 4 && r == 0; i++) {
      int task;
      r = mproc_queue_get(results, &task, sizeof task, &n, 10000);
      sum += task;
    }
    printf("the tasks' messages through a queue made after the pool: 4 (sum %d)\n", sum);
  }
  if (r != 0)
    fprintf(stderr, "failed: %s\n", mproc_strerror(r));
  for (int i = 0; i < 100; i++)
    mproc_future_free(f[i]);
  mproc_pool_free(pool);
  mproc_queue_free(results);
  mproc_value_free(counter);
  return r == 0 ? 0 : 1;
}
