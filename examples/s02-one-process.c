/* S02: start one worker process and wait for it */
#include <mproc.h>
#include <stdio.h>
#include <unistd.h>

static int worker(const void *arg, size_t len) {
  (void)arg, (void)len;
  printf("worker %d: hello from the child (parent %d)\n", (int)getpid(), mproc_parent_pid());
  return 0; /* the exit code */
}

int main(void) {
  mproc_process *p = NULL;
  int code = -1;
  int r = mproc_process_new(&p, worker, NULL, 0, NULL); /* Process(target=worker) */
  if (r == 0)
    r = mproc_process_start(p);
  if (r == 0)
    r = mproc_process_join(p, 10000); /* at most 10 s */
  if (r == 0)
    r = mproc_process_exitcode(p, &code);
  if (r == 0)
    printf("parent %d: %s exited with code %d\n", (int)getpid(), mproc_process_name(p), code);
  else
    fprintf(stderr, "s02: %s\n", mproc_strerror(r));
  mproc_process_free(p);
  return r == 0 ? 0 : 1;
}
