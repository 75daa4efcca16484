/* S07: sum of squares of chunks of a list, summed in the parent */
#include <mproc.h>
#include <stdio.h>

enum { N = 1000, CHUNK = 100 };

typedef struct {
  int values[CHUNK];
} chunk;

static int sum_of_squares(const void *in, void *out) {
  const chunk *c = in;
  long sum = 0;
  for (int i = 0; i < CHUNK; i++)
    sum += (long)c->values[i] * c->values[i];
  *(long *)out = sum;
  return 0;
}

int main(void) {
  static chunk chunks[N / CHUNK];
  for (int i = 0; i < N; i++)
    chunks[i / CHUNK].values[i % CHUNK] = i + 1;
  long partial[N / CHUNK];
  mproc_pool *pool;
  if (mproc_pool_new(&pool, NULL) != 0)
    return 1;
  int r = mproc_pool_map(pool, sum_of_squares, chunks, N / CHUNK, sizeof(chunk), partial,
                         sizeof(long), NULL, NULL, MPROC_FOREVER);
  mproc_pool_free(pool);
  if (r != 0)
    return 1;
  long total = 0;
  for (int i = 0; i < N / CHUNK; i++) {
    printf("chunk %d: %ld\n", i, partial[i]);
    total += partial[i];
  }
  printf("sum of squares of 1..%d = %ld\n", N, total);
  return 0;
}
