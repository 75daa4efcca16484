/* S26: a map over an array already in shared memory, written in place (mproc_pool_map_shm) */
#include <mproc.h>
#include <stdio.h>

/* Python keeps a big array in a SharedMemory buffer, views it as a NumPy
 * array in every worker and lets each worker fill its slice of the output:
 * nothing is pickled.  mproc_pool_map_shm does the same with a plain
 * element function: the input and output arrays live in one shared block,
 * each worker maps the block once and writes its outputs where the caller
 * reads them.  mproc_pool_map would copy 16 MiB into the pool's arena and
 * 16 MiB back out. */

enum { N = 1 << 21 }; /* 2 M doubles in, 2 M doubles out: 32 MiB */

/* out = 3t^2 - 2t + 1, a cheap element function: the kind whose work
 * costs less than copying its data. */
static int poly(const void *in, void *out) {
  double t = *(const double *)in;
  *(double *)out = (3 * t - 2) * t + 1;
  return 0;
}

int main(void) {
  mproc_pool *pool;
  int r = mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2});
  if (r != 0) {
    printf("pool: %s\n", mproc_strerror(r));
    return 1;
  }
  /* Made after the pool: the workers are handed the block with each chunk. */
  mproc_shm *block;
  r = mproc_shm_new(&block, 2 * (size_t)N * sizeof(double));
  if (r != 0) {
    printf("shm: %s\n", mproc_strerror(r));
    mproc_pool_free(pool);
    return 1;
  }
  double *in = mproc_shm_addr(block), *out = in + N;
  for (size_t i = 0; i < N; i++)
    in[i] = (double)i / 1024;
  struct mproc_task_error err;
  r = mproc_pool_map_shm(pool, poly, block, 0, sizeof(double), N * sizeof(double), sizeof(double),
                         N, NULL, &err, MPROC_FOREVER);
  int status = 0;
  if (r != 0) {
    printf("map_shm: %s (item %zu: %s)\n", mproc_strerror(r), err.index, err.message);
    status = 1;
  } else {
    /* Every output checked against the same function run here. */
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
      double want;
      poly(&in[i], &want);
      bad += out[i] != want;
    }
    printf("%d outputs written in place by the workers, %zu wrong\n", N, bad);
    printf("the last: in[%d] = %.4f, out[%d] = 3t^2 - 2t + 1 = %.4f\n", N - 1, in[N - 1], N - 1,
           out[N - 1]);
    status = bad == 0 ? 0 : 1;
  }
  mproc_shm_free(block); /* the workers let go of the block too */
  return mproc_pool_free(pool) == 0 ? status : 1;
}
