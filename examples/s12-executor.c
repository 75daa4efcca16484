/* S12: the executor maps and submits */
#include <mproc.h>
#include <stdio.h>

static int square(const void *in, void *out) {
  *(int *)out = *(const int *)in * *(const int *)in;
  return 0;
}

static int cube(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  int n = *(const int *)arg, c = n * n * n;
  return mproc_task_return(ctx, &c, sizeof c);
}

int main(void) {
  mproc_pool *executor; /* ProcessPoolExecutor() */
  if (mproc_pool_new(&executor, NULL) != 0)
    return 1;
  int in[10], out[10];
  for (int i = 0; i < 10; i++)
    in[i] = i;
  if (mproc_pool_map(executor, square, in, 10, sizeof(int), out, sizeof(int), NULL, NULL,
                     MPROC_FOREVER) != 0)
    return 1;
  printf("executor.map(square, range(10)):");
  for (int i = 0; i < 10; i++)
    printf(" %d", out[i]);
  printf("\n");
  mproc_future *f;
  int three = 3;
  const void *r;
  size_t len;
  if (mproc_pool_submit(executor, cube, &three, sizeof three, &f) != 0 ||
      mproc_future_result(f, &r, &len, MPROC_FOREVER) != 0)
    return 1;
  printf("executor.submit(cube, 3).result() = %d\n", *(const int *)r);
  mproc_future_free(f);
  mproc_pool_shutdown(executor, true, false);
  return mproc_pool_free(executor) == 0 ? 0 : 1;
}
