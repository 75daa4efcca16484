/* S11: sleeping tasks: apply_async in submission order, imap_unordered in completion order */
#include <mproc.h>
#include <stdio.h>
#include <time.h>

/* One unit = 200 ms: wide enough that completion order survives a loaded
 * machine (results must still arrive fastest-first). */
static void nap(int units) {
  struct timespec ts = {units / 5, (units % 5) * 200000000L};
  nanosleep(&ts, NULL);
}

static int sleep_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  nap(*(const int *)arg);
  return mproc_task_return(ctx, arg, len);
}

static int sleep_item(const void *in, void *out) {
  nap(*(const int *)in);
  *(int *)out = *(const int *)in;
  return 0;
}

static int power(const void *const *args, void *out) {
  int r = 1;
  for (int i = 0; i < *(const int *)args[1]; i++)
    r *= *(const int *)args[0];
  *(int *)out = r;
  return 0;
}

struct list {
  const int *v;
  int n, i;
};
static int next_item(void *ctx, void *item) {
  struct list *l = ctx;
  if (l->i == l->n)
    return 0;
  *(int *)item = l->v[l->i++];
  return 1;
}

int main(void) {
  const int naps[] = {3, 1, 4, 2, 5};
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 5}) != 0)
    return 1;

  /* apply_async, then wait + get each result in submission order. */
  mproc_future *fs[5];
  for (int i = 0; i < 5; i++)
    mproc_pool_apply_async(pool, sleep_task, &naps[i], sizeof(int), NULL, NULL, NULL, &fs[i]);
  printf("apply_async, in submission order:");
  for (int i = 0; i < 5; i++) {
    const void *r;
    size_t len;
    if (mproc_future_result(fs[i], &r, &len, MPROC_FOREVER) == 0)
      printf(" %d", *(const int *)r);
  }
  printf("\n");
  for (int i = 0; i < 5; i++)
    mproc_future_free(fs[i]);

  /* imap_unordered: the fastest result first. */
  struct list l = {naps, 5, 0};
  mproc_imap *it;
  struct mproc_imap_options o = {.flags = MPROC_IMAP_UNORDERED};
  mproc_pool_imap(pool, sleep_item, next_item, &l, sizeof(int), sizeof(int), &o, &it);
  printf("imap_unordered, fastest first:");
  int v;
  while (mproc_imap_next(it, &v, NULL, NULL, MPROC_FOREVER) == 0)
    printf(" %d", v);
  printf("\n");
  mproc_imap_free(it);

  /* starmap: several arguments per task. */
  const int bases[] = {2, 3, 4}, exps[] = {3, 2, 2};
  const void *args[] = {bases, exps};
  size_t sizes[] = {sizeof(int), sizeof(int)};
  int powers[3];
  mproc_pool_starmap(pool, power, 2, args, sizes, 3, powers, sizeof(int), NULL, NULL,
                     MPROC_FOREVER);
  printf("starmap(power, [(2,3), (3,2), (4,2)]) = %d %d %d\n", powers[0], powers[1], powers[2]);
  return mproc_pool_free(pool) == 0 ? 0 : 1;
}
