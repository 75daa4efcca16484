/* S03: start 5 processes, each with its own argument */
#include <mproc.h>
#include <stdio.h>

static int worker(const void *arg, size_t len) {
  (void)len;
  int i = *(const int *)arg; /* the child's copy of the argument */
  printf("worker %d started\n", i);
  return 0;
}

int main(void) {
  enum { N = 5 };
  mproc_process *procs[N] = {0};
  int r = 0;
  for (int i = 0; i < N && r == 0; i++) { /* Process(target=worker, args=(i,)) */
    r = mproc_process_new(&procs[i], worker, &i, sizeof i, NULL);
    if (r == 0)
      r = mproc_process_start(procs[i]);
  }
  for (int i = 0; i < N && r == 0; i++) {
    int code;
    r = mproc_process_join(procs[i], 10000);
    if (r == 0)
      r = mproc_process_exitcode(procs[i], &code);
    if (r == 0)
      printf("joined %s (worker %d), exit code %d\n", mproc_process_name(procs[i]), i, code);
  }
  if (r == 0)
    printf("all %d workers joined\n", N);
  else
    fprintf(stderr, "s03: %s\n", mproc_strerror(r));
  for (int i = 0; i < N; i++)
    mproc_process_free(procs[i]); /* stops any child left running by an error */
  return r == 0 ? 0 : 1;
}
