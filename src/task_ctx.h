/* The task-side context (mproc_task_ctx) shared by every transport.
 *
 * Design notes.  The public task API (task.c: mproc_task_return,
 * mproc_task_result_buf, mproc_task_fail, mproc_task_fds) validates its
 * arguments and keeps the rules that hold for every transport -- an
 * initializer has no result, a result that could not be made fails the
 * task, messages are formatted once -- and reaches the transport's worker
 * side only through this small table.  A transport's context embeds
 * struct mproc_task_ctx as its first member. */
#ifndef MPROC_TASK_CTX_H
#define MPROC_TASK_CTX_H

#include "internal.h"

#define MPROC__TASK_MSG 200 /* bytes of a failure message, with its NUL */

struct mproc__task_ops {
  /* Replace the task's result by a buffer of `len` bytes: 0 and *buf, or
   * -errno with no result left at all. */
  int (*result_buf)(mproc_task_ctx *c, size_t len, void **buf);
  /* Record the task's (or initializer's) failure: `code`, `msg`. */
  void (*fail)(mproc_task_ctx *c, int code, const char *msg);
};

struct mproc_task_ctx {
  const struct mproc__task_ops *ops;
  bool is_init;    /* an initializer: no result */
  bool failed;     /* mproc_task_fail was called */
  int res_err;     /* the last result buffer could not be made: -errno, else 0 */
  size_t res_want; /* the size that buffer was asked for */
  const int *fds;  /* the task's own descriptors (owned by the transport) */
  size_t nfds;
};

/* After the task function returned `r`: the code the task ends with (a
 * result that could not be made fails it, with a message). */
int mproc__task_end(mproc_task_ctx *c, int r);

#endif /* MPROC_TASK_CTX_H */
