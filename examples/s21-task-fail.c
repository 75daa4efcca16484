/* S21: a task reports its own failure: mproc_task_fail, a plain return code, a failing map item */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python raises an exception in the worker and the caller catches it:
 *   def parse(line):
 *       if "=" not in line: raise ValueError(f"no '=' in {line!r}")
 * In C a task fails by returning non-zero; mproc_task_fail adds a code and a
 * message of the task's choosing, which the caller reads in
 * struct mproc_task_error. */

struct setting {
  char key[16];
  int value;
};

static int parse(const char *line, struct setting *out, mproc_task_ctx *ctx) {
  const char *eq = strchr(line, '=');
  if (eq == NULL)
    return mproc_task_fail(ctx, MPROC_EINVAL, "no '=' in \"%s\"", line);
  if (eq == line || (size_t)(eq - line) >= sizeof out->key)
    return mproc_task_fail(ctx, 0, "bad key in \"%s\"", line); /* 0: MPROC_ETASK */
  memset(out, 0, sizeof *out);
  memcpy(out->key, line, (size_t)(eq - line));
  if (sscanf(eq + 1, "%d", &out->value) != 1)
    return 2; /* a plain code: the message reads "task returned 2" */
  return 0;
}

/* A pool task: one line in, one setting out. */
static int parse_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  struct setting s;
  int err = parse(arg, &s, ctx);
  return err != 0 ? err : mproc_task_return(ctx, &s, sizeof s);
}

static void apply_one(mproc_pool *pool, const char *line) {
  void *res = NULL;
  size_t len;
  struct mproc_task_error e;
  int err = mproc_pool_apply(pool, parse_task, line, strlen(line) + 1, &res, &len, &e, 30000);
  if (err == 0) {
    const struct setting *s = res;
    printf("%-12s ok: %s = %d\n", line, s->key, s->value);
  } else {
    char code[32]; /* the task's own code: a name when it is one of mproc's */
    if (e.task_code < 0)
      snprintf(code, sizeof code, "%s", mproc_err_name(e.task_code));
    else
      snprintf(code, sizeof code, "%d", e.task_code);
    printf("%-12s failed: %s, task code %s, message: %s\n", line, mproc_err_name(err), code,
           e.message);
  }
  free(res);
}

/* A map element function: the same parse, on fixed-size lines. */
typedef char line_t[24];
static int parse_item(const void *in, void *out) { return parse(in, out, NULL); }

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2}) != 0)
    return 1;
  apply_one(pool, "workers=4");
  apply_one(pool, "verbose");    /* mproc_task_fail with a code and a message */
  apply_one(pool, "=7");         /* mproc_task_fail with code 0 */
  apply_one(pool, "depth=deep"); /* return 2 */
  /* A map fails as a whole; the error names the first failing item. */
  line_t lines[] = {"a=1", "b=2", "c=x", "d=4"};
  struct setting out[4];
  struct mproc_task_error e;
  int err = mproc_pool_map(pool, parse_item, lines, 4, sizeof(line_t), out, sizeof out[0], NULL, &e,
                           30000);
  if (err == 0)
    printf("map: every line parsed\n");
  else
    printf("map failed: %s at item %zu (\"%s\"): %s\n", mproc_err_name(err), e.index,
           lines[e.index], e.message);
  return mproc_pool_free(pool) == 0 ? 0 : 1;
}
