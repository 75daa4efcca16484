/* S06: 5 processes increment one shared counter */
/* Python:
 *     counter = Value('i', 0)
 *     def work(counter):
 *         with counter.get_lock():
 *             counter.value += 1
 *     procs = [Process(target=work, args=(counter,)) for _ in range(5)]
 *     for p in procs: p.start()
 *     for p in procs: p.join()
 *
 * The Value lives in an anonymous shared mapping every child inherits, so the
 * children reach it through a global, as Python's children reach `counter`. */
#include <mproc.h>
#include <stdio.h>

static mproc_value *counter; /* Value('i', 0) */
static mproc_value *hits;    /* a raw int64 for the lock-free variant */

static int work(const void *arg, size_t len) {
  (void)len;
  mproc_rlock *lock;
  mproc_value_get_lock(counter, &lock);
  mproc_rlock_acquire(lock, MPROC_FOREVER); /* with counter.get_lock(): */
  int *value = mproc_value_ptr(counter);
  *value += 1; /*     counter.value += 1 */
  printf("worker %d incremented the counter to %d\n", *(const int *)arg, *value);
  mproc_rlock_release(lock);
  return 0;
}

static int add_1000(const void *arg, size_t len) {
  (void)arg, (void)len;
  for (int k = 0; k < 1000; k++)
    mproc_value_fetch_add(hits, 0, 1, NULL);
  return 0;
}

/* Start 5 processes running fn (each with its index), then join them all. */
static int run5(mproc_process_fn fn) {
  mproc_process *procs[5] = {0};
  int r = 0;
  for (int i = 0; i < 5 && r == 0; i++) {
    r = mproc_process_new(&procs[i], fn, &i, sizeof i, NULL);
    if (r == 0)
      r = mproc_process_start(procs[i]);
  }
  for (int i = 0; i < 5; i++) {
    if (procs[i] != NULL && r == 0)
      r = mproc_process_join(procs[i], 30000);
    mproc_process_free(procs[i]);
  }
  return r;
}

int main(void) {
  int r = mproc_value_new(&counter, MPROC_TYPE_INT32, NULL, NULL);
  if (r == 0)
    r = mproc_value_new(&hits, MPROC_TYPE_INT64, NULL,
                        &(struct mproc_value_options){.flags = MPROC_VALUE_RAW});
  if (r == 0)
    r = run5(work);
  int final = 0;
  if (r == 0)
    r = mproc_value_get(counter, 0, 1, &final, MPROC_FOREVER);
  if (r == 0)
    printf("final value with the lock: %d\n", final);

  /* And the lock-free way: an atomic add on the shared integer. */
  int64_t total = 0;
  if (r == 0)
    r = run5(add_1000);
  if (r == 0)
    r = mproc_value_load(hits, 0, &total);
  if (r == 0)
    printf("5 processes x 1000 atomic adds: %lld\n", (long long)total);
  else
    fprintf(stderr, "s06: %s\n", mproc_strerror(r));
  mproc_value_free(hits);
  mproc_value_free(counter);
  return r == 0 && final == 5 && total == 5000 ? 0 : 1;
}
