/* S13: a task fails and the caller sees why */
#include <mproc.h>
#include <stdio.h>

struct division {
  int a, b;
};

/* Integer division by zero: the worker dies of SIGFPE.  (The attribute only
 * keeps the undefined-behaviour sanitizer from reporting it first.) */
#if defined(__clang__)
__attribute__((no_sanitize("integer-divide-by-zero")))
#elif defined(__GNUC__)
__attribute__((no_sanitize_undefined))
#endif
static int
divide(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  const struct division *d = arg;
  int q = d->a / d->b;
  return mproc_task_return(ctx, &q, sizeof q);
}

static void run(mproc_pool *pool, int a, int b) {
  struct division d = {a, b};
  mproc_future *f;
  const void *r;
  size_t len;
  if (mproc_pool_submit(pool, divide, &d, sizeof d, &f) != 0)
    return;
  int err = mproc_future_result(f, &r, &len, MPROC_FOREVER);
  if (err == 0) {
    printf("divide(%d, %d) = %d\n", a, b, *(const int *)r);
  } else {
    struct mproc_task_error e;
    mproc_future_error(f, &e);
    printf("divide(%d, %d) failed: %s: %s\n", a, b, mproc_err_name(err), e.message);
  }
  mproc_future_free(f);
}

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2}) != 0)
    return 1;
  run(pool, 10, 0);
  run(pool, 10, 2); /* the pool carries on */
  return mproc_pool_free(pool) == 0 ? 0 : 1;
}
