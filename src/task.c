/* The task-side API, called inside a task or an initializer in a worker.
 *
 * Design notes.  Argument checks and the rules common to every transport
 * live here; the transport's worker side does the storage (see task_ctx.h).
 * A failed result buffer is remembered (until a later result call
 * succeeds): a task that ignores the failure and returns 0 still fails, because a result that does
 * not exist must never be reported as success. */
#include "task_ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

MPROC_EXTERN int mproc_task_fds(mproc_task_ctx *c, const int **fds) {
  if (c == NULL || fds == NULL)
    return MPROC_EINVAL;
  *fds = c->nfds > 0 ? c->fds : NULL;
  return (int)c->nfds;
}

static int result_buf(mproc_task_ctx *c, size_t len, void **buf) {
  int r = c->ops->result_buf(c, len, buf);
  c->res_err = r;
  c->res_want = len;
  return r;
}

MPROC_EXTERN void *mproc_task_result_buf(mproc_task_ctx *c, size_t len) {
  void *buf = NULL;
  if (c == NULL || c->is_init || result_buf(c, len, &buf) != 0)
    return NULL;
  return buf;
}

MPROC_EXTERN int mproc_task_return(mproc_task_ctx *c, const void *data, size_t len) {
  if (c == NULL || (data == NULL && len > 0) || c->is_init)
    return MPROC_EINVAL;
  void *buf = NULL;
  int r = result_buf(c, len, &buf);
  if (r == 0 && len > 0)
    memcpy(buf, data, len);
  return r;
}

MPROC_EXTERN int mproc_task_fail(mproc_task_ctx *c, int code, const char *fmt, ...) {
  if (code == 0)
    code = MPROC_ETASK;
  if (c == NULL)
    return code;
  char msg[MPROC__TASK_MSG] = "";
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
  }
  c->failed = true;
  c->ops->fail(c, code, msg);
  return code;
}

int mproc__task_end(mproc_task_ctx *c, int r) {
  if (r == 0 && !c->failed && c->res_err != 0)
    mproc_task_fail(c, c->res_err, "could not make the task's %zu-byte result: %s", c->res_want,
                    mproc_strerror(c->res_err));
  return r;
}
