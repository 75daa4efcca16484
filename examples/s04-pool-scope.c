/* S04: a pool used as a context manager maps over 10 names */
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char s[16];
} name;
typedef struct {
  char s[32];
} greeting;

static int greet(const void *in, void *out) {
  snprintf(((greeting *)out)->s, sizeof(greeting), "Hello, %s!", ((const name *)in)->s);
  return 0;
}

int main(void) {
  const char *names[] = {"Alice", "Bob",   "Carol", "Dave", "Eve",
                         "Frank", "Grace", "Heidi", "Ivan", "Judy"};
  name in[10];
  greeting out[10];
  for (int i = 0; i < 10; i++)
    snprintf(in[i].s, sizeof in[i].s, "%s", names[i]);
  pid_t workers[4];
  int nworkers = 0;
  {
    /* `with Pool(4) as pool:` -- the pool lives in this scope only. */
    mproc_pool *pool;
    if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4}) != 0)
      return 1;
    nworkers = mproc_pool_worker_pids(pool, workers, 4);
    int r = mproc_pool_map(pool, greet, in, 10, sizeof(name), out, sizeof(greeting), NULL, NULL,
                           MPROC_FOREVER);
    mproc_pool_free(pool); /* the scope's exit: terminate and reap */
    if (r != 0)
      return 1;
  }
  for (int i = 0; i < 10; i++)
    printf("%s\n", out[i].s);
  int alive = 0;
  for (int i = 0; i < nworkers; i++)
    alive += kill(workers[i], 0) == 0;
  printf("pool torn down: %d workers started, %d still alive\n", nworkers, alive);
  return 0;
}
