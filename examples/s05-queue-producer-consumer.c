/* S05: producer and consumer processes through a queue */
#include <mproc.h>
#include <stdio.h>

static int producer(const void *arg, size_t len) {
  mproc_queue *q = *(mproc_queue *const *)arg; /* Process(target=producer, args=(q,)) */
  (void)len;
  for (int i = 0; i < 10; i++) {
    mproc_queue_put(q, &i, sizeof i, MPROC_FOREVER);
    printf("producer: put %d\n", i);
  }
  mproc_queue_close(q); /* Python's q.close(): this process puts no more */
  return 0;
}

static int consumer(const void *arg, size_t len) {
  mproc_queue *q = *(mproc_queue *const *)arg;
  (void)len;
  mproc_queue_close(q); /* this process only consumes: it will put nothing */
  int item;
  size_t got;
  /* No race on "empty": get blocks until an item comes, and reports
   * MPROC_ECLOSED once every producer has closed and the queue is drained. */
  int err;
  while ((err = mproc_queue_get(q, &item, sizeof item, &got, MPROC_FOREVER)) == 0)
    printf("consumer: got %d\n", item);
  if (err != MPROC_ECLOSED) {
    printf("consumer: get failed: %s\n", mproc_strerror(err));
    return 1;
  }
  printf("consumer: the producer closed the queue and it is drained: done\n");
  return 0;
}

int main(void) {
  mproc_queue *q = NULL;
  mproc_process *p = NULL, *c = NULL;
  int err = mproc_queue_new(&q, NULL);
  if (err == 0)
    err = mproc_process_new(&p, producer, &q, sizeof q, NULL);
  if (err == 0)
    err = mproc_process_new(&c, consumer, &q, sizeof q, NULL);
  if (err == 0)
    err = mproc_process_start(p);
  if (err == 0)
    err = mproc_process_start(c);
  if (err == 0)
    err = mproc_queue_detach(q, MPROC_QUEUE_BOTH); /* the parent neither puts nor gets */
  int sp = -1, sc = -1;
  if (err == 0)
    err = mproc_process_join(p, 30000);
  if (err == 0)
    err = mproc_process_join(c, 30000);
  if (err == 0) {
    mproc_process_exitcode(p, &sp);
    mproc_process_exitcode(c, &sc);
    printf("parent: producer exited %d, consumer exited %d\n", sp, sc);
  } else {
    fprintf(stderr, "s05: %s\n", mproc_strerror(err));
  }
  mproc_process_free(p);
  mproc_process_free(c);
  mproc_queue_free(q);
  return err == 0 && sp == 0 && sc == 0 ? 0 : 1;
}
