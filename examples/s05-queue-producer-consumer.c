/* S05: producer and consumer processes through a queue */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void producer(mproc_queue *q) {
  for (int i = 0; i < 10; i++) {
    mproc_queue_put(q, &i, sizeof i, MPROC_FOREVER);
    printf("producer: put %d\n", i);
  }
  mproc_queue_close(q); /* Python's q.close(): this process puts no more */
}

static void consumer(mproc_queue *q) {
  mproc_queue_close(q); /* this process only consumes: it will put nothing */
  int item;
  size_t len;
  /* No race on "empty": get blocks until an item comes, and reports
   * MPROC_ECLOSED once every producer has closed and the queue is drained. */
  int err;
  while ((err = mproc_queue_get(q, &item, sizeof item, &len, MPROC_FOREVER)) == 0)
    printf("consumer: got %d\n", item);
  printf("consumer: %s\n", mproc_strerror(err));
}

/* Runs fn(q) in a child process.  (mproc's Process API does this for you; plain
 * fork works too: the child is attached to the queue during fork.) */
static pid_t start(void (*fn)(mproc_queue *), mproc_queue *q) {
  pid_t pid = fork();
  if (pid == 0) {
    fn(q);
    fflush(stdout);
    _exit(0);
  }
  return pid;
}

int main(void) {
  mproc_queue *q;
  int err = mproc_queue_new(&q, NULL);
  if (err != 0) {
    fprintf(stderr, "queue: %s\n", mproc_strerror(err));
    return 1;
  }
  pid_t p = start(producer, q);
  pid_t c = start(consumer, q);
  mproc_queue_detach(q, MPROC_QUEUE_BOTH); /* the parent neither puts nor gets */
  int sp, sc;
  waitpid(p, &sp, 0);
  waitpid(c, &sc, 0);
  printf("parent: producer exited %d, consumer exited %d\n", WEXITSTATUS(sp), WEXITSTATUS(sc));
  mproc_queue_free(q);
  return 0;
}
