/* S05: producer and consumer processes through a queue */
/* Python:
 *     q = Queue()
 *     producer = Process(target=produce, args=(q,))
 *     consumer = Process(target=consume, args=(q,))
 *     producer.start(); consumer.start()
 *     producer.join(); consumer.join()
 *
 * The queue lives in shared memory every child inherits; the children reach
 * it through a global, as Python's children reach `q`. */
#include <mproc.h>
#include <stdio.h>

static mproc_queue *q;

static int produce(const void *arg, size_t len) {
  (void)arg, (void)len;
  for (int i = 0; i < 10; i++) {
    mproc_queue_put(q, &i, sizeof i, MPROC_FOREVER);
    printf("producer: put %d\n", i);
  }
  mproc_queue_close(q); /* Python's q.close(): this process puts no more */
  return 0;
}

static int consume(const void *arg, size_t len) {
  (void)arg, (void)len;
  mproc_queue_close(q); /* this process only consumes: it will put nothing */
  int item, err;
  size_t n;
  /* No race on "empty": get blocks until an item comes, and reports
   * MPROC_ECLOSED once every producer has closed and the queue is drained. */
  while ((err = mproc_queue_get(q, &item, sizeof item, &n, MPROC_FOREVER)) == 0)
    printf("consumer: got %d\n", item);
  printf("consumer: %s\n", mproc_strerror(err));
  return err == MPROC_ECLOSED ? 0 : 1;
}

int main(void) {
  mproc_process *producer = NULL, *consumer = NULL;
  int pcode = -1, ccode = -1;
  int r = mproc_queue_new(&q, NULL);
  if (r == 0)
    r = mproc_process_new(&producer, produce, NULL, 0, NULL);
  if (r == 0)
    r = mproc_process_new(&consumer, consume, NULL, 0, NULL);
  if (r == 0)
    r = mproc_process_start(producer);
  if (r == 0)
    r = mproc_process_start(consumer);
  if (r == 0) /* the parent neither puts nor gets */
    r = mproc_queue_detach(q, MPROC_QUEUE_BOTH);
  if (r == 0)
    r = mproc_process_join(producer, 30000);
  if (r == 0)
    r = mproc_process_join(consumer, 30000);
  if (r == 0)
    r = mproc_process_exitcode(producer, &pcode);
  if (r == 0)
    r = mproc_process_exitcode(consumer, &ccode);
  if (r == 0)
    printf("parent: producer exited %d, consumer exited %d\n", pcode, ccode);
  else
    fprintf(stderr, "s05: %s\n", mproc_strerror(r));
  mproc_process_free(producer);
  mproc_process_free(consumer);
  mproc_queue_free(q);
  return r == 0 && pcode == 0 && ccode == 0 ? 0 : 1;
}
