/* A program that calls nothing of libmproc_mpi but runs its pool on the
 * transport MPROC_TRANSPORT names: linked with pkg-config mproc-mpi, the
 * library must still be loaded, or "mpi" is unknown. */
#include <mproc.h>
#include <stdio.h>

static int twice(const void *in, void *out) {
  *(int *)out = 2 * *(const int *)in;
  return 0;
}

int main(void) {
  mproc_pool *pool;
  int r = mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 1});
  if (r != 0) {
    printf("pool: %s\n", mproc_strerror(r));
    return 1;
  }
  int in[3] = {1, 2, 3}, out[3] = {0};
  r = mproc_pool_map(pool, twice, in, 3, sizeof in[0], out, sizeof out[0], NULL, NULL, 30000);
  mproc_pool_free(pool);
  printf("pool ok: %d %d %d\n", out[0], out[1], out[2]);
  return r == 0 && out[2] == 6 ? 0 : 1;
}
