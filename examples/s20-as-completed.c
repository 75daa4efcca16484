/* S20: as_completed: each result as soon as it is ready, a failing task among them */
#include <mproc.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Python:
 *   futures = {ex.submit(parse_port, s): s for s in texts}
 *   for f in as_completed(futures):
 *       try: print(futures[f], "->", f.result())
 *       except ValueError as e: print(futures[f], "failed:", e)
 * The dict from future to input is the future's own pointer here
 * (mproc_future_set_data), so no search is needed. */

/* Parses a TCP port number; anything else fails the task with a message. */
static int parse_port(const void *arg, size_t len, mproc_task_ctx *ctx) {
  const char *s = arg;
  long v = 0;
  if (len < 2) /* the text and its terminating NUL */
    return mproc_task_fail(ctx, MPROC_EINVAL, "empty text");
  for (size_t i = 0; i + 1 < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return mproc_task_fail(ctx, MPROC_EINVAL, "'%s' is not a number", s);
    v = v * 10 + (s[i] - '0');
    if (v > 65535)
      return mproc_task_fail(ctx, -ERANGE, "%s is above 65535", s);
  }
  int port = (int)v;
  return mproc_task_return(ctx, &port, sizeof port);
}

int main(void) {
  static const char *texts[] = {"80", "8080", "http", "443", "70000", "22"};
  enum { N = sizeof texts / sizeof *texts };
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 3}) != 0)
    return 1;
  mproc_future *fs[N];
  size_t submitted = 0;
  for (; submitted < N; submitted++) {
    const char *t = texts[submitted];
    if (mproc_pool_submit(pool, parse_port, t, strlen(t) + 1, &fs[submitted]) != 0)
      break;
    mproc_future_set_data(fs[submitted], (void *)t); /* the input, found again below */
  }
  int status = submitted == N ? 0 : 1, ok = 0, failed = 0;
  mproc_as_completed *it;
  if (submitted > 0 && mproc_as_completed_new(&it, fs, submitted) == 0) {
    mproc_future *f;
    int err;
    /* Completion order: a fast task is reported before a slow one submitted
     * earlier.  A failure is one more completed future, not the end. */
    while ((err = mproc_as_completed_next(it, &f, 30000)) == 0) {
      const char *text = mproc_future_data(f);
      const void *r;
      size_t len;
      int code = mproc_future_result(f, &r, &len, 0);
      if (code == 0) {
        printf("%-6s -> port %d\n", text, *(const int *)r);
        ok++;
      } else {
        struct mproc_task_error e;
        mproc_future_error(f, &e);
        printf("%-6s -> failed: %s (%s)\n", text, e.message, mproc_err_name(e.task_code));
        failed++;
      }
    }
    if (err != MPROC_EEOF)
      status = 1; /* a deadline passed */
    mproc_as_completed_free(it);
  }
  printf("%d parsed, %d failed\n", ok, failed);
  for (size_t i = 0; i < submitted; i++)
    mproc_future_free(fs[i]);
  return mproc_pool_free(pool) == 0 ? status : 1;
}
