/* S15: a large data set split into chunks by CPU count, results merged */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

static int transform(const void *in, void *out) {
  unsigned x = *(const unsigned *)in;
  *(unsigned *)out = (x * 2654435761u) % 1000u;
  return 0;
}

int main(void) {
  enum { N = 4000000 };
  unsigned *data = malloc(N * sizeof *data), *result = malloc(N * sizeof *result);
  if (data == NULL || result == NULL)
    return 1;
  for (unsigned i = 0; i < N; i++)
    data[i] = i;
  mproc_pool *pool;
  if (mproc_pool_new(&pool, NULL) != 0) /* one worker per usable CPU */
    return 1;
  int workers = mproc_pool_workers(pool);
  struct mproc_map_options o = {.chunksize = (N + workers - 1) / workers};
  if (mproc_pool_map(pool, transform, data, N, sizeof *data, result, sizeof *result, &o, NULL,
                     MPROC_FOREVER) != 0)
    return 1;
  mproc_pool_free(pool);
  unsigned long long merged = 0, serial = 0;
  for (unsigned i = 0; i < N; i++) {
    merged += result[i];
    unsigned s;
    transform(&data[i], &s);
    serial += s;
  }
  printf("%d items in %d chunks of %zu (one per CPU)\n", N, workers, o.chunksize);
  printf("merged sum %llu, serial sum %llu: %s\n", merged, serial,
         merged == serial ? "match" : "MISMATCH");
  free(data);
  free(result);
  return merged == serial ? 0 : 1;
}
