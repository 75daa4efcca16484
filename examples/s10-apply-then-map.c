/* S10: one task submitted and waited on, then a list mapped */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

/* As a task (bytes in, bytes out) for apply... */
static int task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  int n = *(const int *)arg, sq = n * n;
  return mproc_task_return(ctx, &sq, sizeof sq);
}

/* ...and as an element function for map. */
static int square(const void *in, void *out) {
  *(int *)out = *(const int *)in * *(const int *)in;
  return 0;
}

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, NULL) != 0)
    return 1;
  int five = 5;
  void *res;
  size_t len;
  if (mproc_pool_apply(pool, task, &five, sizeof five, &res, &len, NULL, MPROC_FOREVER) != 0)
    return 1;
  printf("apply(task, 5) = %d\n", *(int *)res);
  free(res);
  int in[] = {1, 2, 3, 4, 5}, out[5];
  if (mproc_pool_map(pool, square, in, 5, sizeof(int), out, sizeof(int), NULL, NULL,
                     MPROC_FOREVER) != 0)
    return 1;
  printf("map(task, [1..5]) =");
  for (int i = 0; i < 5; i++)
    printf(" %d", out[i]);
  printf("\n");
  return mproc_pool_free(pool) == 0 ? 0 : 1;
}
