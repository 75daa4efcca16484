/* S01: square every number of a list on a pool of 4 */
#include <mproc.h>
#include <stdio.h>

static int square(const void *in, void *out) {
  int n = *(const int *)in;
  *(int *)out = n * n;
  return 0;
}

int main(void) {
  int numbers[] = {1, 2, 3, 4, 5, 6, 7, 8}, squares[8];
  mproc_pool *pool;
  int r = mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4});
  if (r == 0)
    r = mproc_pool_map(pool, square, numbers, 8, sizeof(int), squares, sizeof(int), NULL, NULL,
                       MPROC_FOREVER);
  if (r != 0) {
    fprintf(stderr, "pool: %s\n", mproc_strerror(r));
    return 1;
  }
  mproc_pool_close(pool);
  mproc_pool_join(pool, MPROC_FOREVER);
  mproc_pool_free(pool);
  printf("squares:");
  for (int i = 0; i < 8; i++)
    printf(" %d", squares[i]);
  printf("\n");
  return 0;
}
