/* A plugin for mpi-pool's case pool-unresolvable: a task function in a
 * shared object that rank 0 loads and the worker ranks cannot find. */
#include <mproc.h>

int plugin_task(const void *arg, size_t len, mproc_task_ctx *ctx);

int plugin_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  return mproc_task_return(ctx, "plugin", 6);
}
