/* S06: 5 processes increment one shared counter */
/* Python:
 *     counter = Value('i', 0)
 *     def work(counter):
 *         with counter.get_lock():
 *             counter.value += 1
 *     procs = [Process(target=work, args=(counter,)) for _ in range(5)]
 *
 * The Process API is not used here: plain fork() is enough for a shared
 * Value, which lives in an anonymous shared mapping every child inherits. */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void work(mproc_value *counter, int id) {
  mproc_rlock *lock;
  mproc_value_get_lock(counter, &lock);
  mproc_rlock_acquire(lock, MPROC_FOREVER); /* with counter.get_lock(): */
  int *value = mproc_value_ptr(counter);
  *value += 1; /*     counter.value += 1 */
  printf("worker %d incremented the counter to %d\n", id, *value);
  fflush(stdout);
  mproc_rlock_release(lock);
}

int main(void) {
  mproc_value *counter;
  int r = mproc_value_new(MPROC_TYPE_INT32, NULL, NULL, &counter); /* Value('i', 0) */
  if (r != 0) {
    fprintf(stderr, "Value: %s\n", mproc_strerror(r));
    return 1;
  }
  pid_t pids[5];
  for (int i = 0; i < 5; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      work(counter, i);
      _exit(0);
    }
  }
  for (int i = 0; i < 5; i++)
    waitpid(pids[i], NULL, 0);

  int final = 0;
  mproc_value_get(counter, 0, 1, &final, MPROC_FOREVER);
  printf("final value with the lock: %d\n", final);

  /* And the lock-free way: an atomic add on the shared integer. */
  mproc_value *hits;
  mproc_value_new(MPROC_TYPE_INT64, NULL, &(struct mproc_value_options){.flags = MPROC_VALUE_RAW},
                  &hits);
  for (int i = 0; i < 5; i++)
    if ((pids[i] = fork()) == 0) {
      for (int k = 0; k < 1000; k++)
        mproc_value_fetch_add(hits, 0, 1, NULL);
      _exit(0);
    }
  for (int i = 0; i < 5; i++)
    waitpid(pids[i], NULL, 0);
  int64_t total = 0;
  mproc_value_load(hits, 0, &total);
  printf("5 processes x 1000 atomic adds: %lld\n", (long long)total);

  mproc_value_free(hits);
  mproc_value_free(counter);
  return final == 5 && total == 5000 ? 0 : 1;
}
