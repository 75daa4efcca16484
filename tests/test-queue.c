/* Queues (src/queue.c, src/queue_part.c, src/joinable.c): Python's Queue,
 * SimpleQueue and JoinableQueue semantics in one process and across
 * processes, bounds, oversized messages, close semantics, named queues. */
#include "harness.h"
#include "child.h"
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LONG_MS 60000

/* A message: producer id, sequence number, length, checksum of the body. */
struct msg_hdr {
  uint32_t producer;
  uint32_t seq;
  uint64_t len;
  uint64_t sum;
};

static uint64_t body_sum(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* Builds message (producer, seq) of total size `size` into buf. */
static void make_msg(unsigned char *buf, size_t size, uint32_t producer, uint32_t seq) {
  struct msg_hdr h = {producer, seq, size - sizeof h, 0};
  for (size_t i = sizeof h; i < size; i++)
    buf[i] = (unsigned char)(i * 31 + seq * 7 + producer);
  h.sum = body_sum(buf + sizeof h, size - sizeof h);
  memcpy(buf, &h, sizeof h);
}

/* 1 if buf[0..len) is an intact message, and its header. */
static int check_msg(const unsigned char *buf, size_t len, struct msg_hdr *out) {
  if (len < sizeof *out)
    return 0;
  memcpy(out, buf, sizeof *out);
  return out->len == len - sizeof *out && out->sum == body_sum(buf + sizeof *out, out->len);
}

/* ---- single process ---------------------------------------------------- */

START_TEST(test_fifo_and_sizes) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  ck_assert_int_eq(mproc_queue_empty(q), 1);
  ck_assert_int_eq(mproc_queue_full(q), 0);
  static unsigned char big[300000], out[300000];
  size_t sizes[] = {0, 1, 7, 8, 100, 1024, 1025, 4096, 300000};
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(sizes); i++) {
    memset(big, (int)i + 1, sizes[i]);
    mproc_assert_ok(mproc_queue_put(q, sizes[i] ? big : NULL, sizes[i], 0));
  }
  ck_assert_int_eq(mproc_queue_qsize(q), (int)MPROC__ARRAY_SIZE(sizes));
  ck_assert_int_eq(mproc_queue_empty(q), 0);
  size_t len = 0;
  /* Too small: nothing is taken and the size is reported. */
  mproc_assert_ok(mproc_queue_get(q, out, 0, &len, 0));
  ck_assert_uint_eq(len, 0);
  mproc_assert_err(mproc_queue_get(q, out, 0, &len, 0), MPROC_ETOOSMALL);
  ck_assert_uint_eq(len, 1);
  for (size_t i = 1; i < MPROC__ARRAY_SIZE(sizes); i++) {
    mproc_assert_ok(mproc_queue_get(q, out, sizeof out, &len, 0));
    ck_assert_uint_eq(len, sizes[i]);
    for (size_t k = 0; k < len; k++)
      ck_assert_int_eq(out[k], (int)i + 1);
  }
  mproc_assert_err(mproc_queue_get_nowait(q, out, sizeof out, &len), MPROC_EEMPTY);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_queue_get(q, out, sizeof out, &len, 50), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  void *p = (void *)1;
  mproc_assert_err(mproc_queue_get_alloc(q, &p, &len, 0), MPROC_ETIMEDOUT);
  ck_assert_ptr_null(p);
  mproc_assert_ok(mproc_queue_put(q, "hello", 5, 0));
  mproc_assert_ok(mproc_queue_get_alloc(q, &p, &len, 0));
  ck_assert_uint_eq(len, 5);
  ck_assert_int_eq(memcmp(p, "hello", 5), 0);
  free(p);
  /* Wrap-around many times through a small ring. */
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.puts, 10);
  ck_assert_uint_eq(st.gets, 10);
  ck_assert_uint_eq(st.producers, 1);
  ck_assert_uint_eq(st.consumers, 1);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Every length a small message can have, each byte distinct: the short
 * copies made under the lock (whole words, overlapping words, single
 * bytes) move each byte to its place. */
START_TEST(test_small_payload_bytes) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  unsigned char in[48], out[48];
  for (size_t n = 0; n <= sizeof in; n++) {
    for (size_t k = 0; k < n; k++)
      in[k] = (unsigned char)(n * 7 + k + 1);
    memset(out, 0, sizeof out);
    mproc_assert_ok(mproc_queue_put(q, in, n, 0));
    size_t len = 999;
    mproc_assert_ok(mproc_queue_get(q, out, sizeof out, &len, 0));
    ck_assert_uint_eq(len, n);
    ck_assert_int_eq(memcmp(in, out, n), 0);
    for (size_t k = n; k < sizeof out; k++)
      ck_assert_uint_eq(out[k], 0); /* nothing written past the message */
  }
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

START_TEST(test_wraparound_small_ring) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 4096};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  unsigned char buf[2000], out[2000];
  for (uint32_t i = 0; i < 5000; i++) {
    size_t n = sizeof(struct msg_hdr) + (i * 37) % 1500;
    make_msg(buf, n, 0, i);
    mproc_assert_ok(mproc_queue_put(q, buf, n, 0));
    if (i % 3 == 2)
      continue;
    size_t len;
    struct msg_hdr h;
    mproc_assert_ok(mproc_queue_get(q, out, sizeof out, &len, 0));
    ck_assert(check_msg(out, len, &h));
    while (mproc_queue_qsize(q) > 0) {
      mproc_assert_ok(mproc_queue_get(q, out, sizeof out, &len, 0));
      ck_assert(check_msg(out, len, &h));
    }
  }
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Small messages are copied out under the consumers' lock and their records
 * left as they are; the space must still come back, also when they sit
 * between large records (claimed, copied outside the lock) and when a
 * record straddles the ring's end: the ring holds as many messages on every
 * round as on the first. */
START_TEST(test_small_records_release_their_space) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 4096};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  unsigned char buf[1500] = {0}, out[1500];
  size_t len;
  int first = -1;
  for (int round = 0; round < 50; round++) {
    int n = 0;
    while (mproc_queue_put_nowait(q, buf, 8) == 0)
      n++;
    if (first < 0)
      first = n;
    ck_assert_int_eq(n, first);
    for (int i = 0; i < n; i++)
      mproc_assert_ok(mproc_queue_get_nowait(q, out, sizeof out, &len));
    /* A large record among small ones, taken in between. */
    mproc_assert_ok(mproc_queue_put_nowait(q, buf, 8));
    mproc_assert_ok(mproc_queue_put_nowait(q, buf, sizeof buf));
    mproc_assert_ok(mproc_queue_put_nowait(q, buf, 8));
    for (int i = 0; i < 3; i++)
      mproc_assert_ok(mproc_queue_get_nowait(q, out, sizeof out, &len));
    ck_assert_int_eq(mproc_queue_qsize(q), 0);
  }
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

START_TEST(test_bounds) {
  mproc_queue *q;
  struct mproc_queue_options o = {.maxsize = 3};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  for (int i = 0; i < 3; i++)
    mproc_assert_ok(mproc_queue_put_nowait(q, &i, sizeof i));
  ck_assert_int_eq(mproc_queue_full(q), 1);
  int x = 9;
  mproc_assert_err(mproc_queue_put_nowait(q, &x, sizeof x), MPROC_EFULL);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_queue_put(q, &x, sizeof x, 30), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 30);
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, &x, sizeof x, &len, 0));
  ck_assert_int_eq(x, 0);
  mproc_assert_ok(mproc_queue_put(q, &x, sizeof x, 0));
  mproc_assert_ok(mproc_queue_free(q));

  /* Bounded by bytes: a 4 KiB ring holds fewer than 4 KiB of messages. */
  struct mproc_queue_options ob = {.capacity = 4096};
  mproc_assert_ok(mproc_queue_new(&q, &ob));
  char kb[1000] = {0};
  int n = 0;
  while (mproc_queue_put_nowait(q, kb, sizeof kb) == 0)
    n++;
  ck_assert_int_eq(n, 4096 / (1000 + 24 + 0));
  mproc_assert_err(mproc_queue_put_nowait(q, kb, sizeof kb), MPROC_EFULL);
  mproc_assert_ok(mproc_queue_get(q, kb, sizeof kb, &len, 0));
  mproc_assert_ok(mproc_queue_put_nowait(q, kb, sizeof kb));
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Messages larger than the ring (and than half of it) go through. */
START_TEST(test_oversized_messages) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 65536};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  size_t sizes[] = {30000, 40000, 65536, 1 << 20, 16 << 20};
  unsigned char *buf = malloc(16 << 20);
  ck_assert_ptr_nonnull(buf);
  for (uint32_t i = 0; i < MPROC__ARRAY_SIZE(sizes); i++) {
    make_msg(buf, sizes[i], 1, i);
    mproc_assert_ok(mproc_queue_put(q, buf, sizes[i], 0));
  }
  for (uint32_t i = 0; i < MPROC__ARRAY_SIZE(sizes); i++) {
    void *p;
    size_t len;
    struct msg_hdr h;
    mproc_assert_ok(mproc_queue_get_alloc(q, &p, &len, 0));
    ck_assert_uint_eq(len, sizes[i]);
    ck_assert(check_msg(p, len, &h));
    ck_assert_uint_eq(h.seq, i);
    free(p);
  }
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.spilled, 4);
  /* Unconsumed oversized messages are removed with the queue. */
  mproc_assert_ok(mproc_queue_put(q, buf, 1 << 20, 0));
  free(buf);
  mproc_assert_ok(mproc_queue_free(q)); /* the fixture checks /dev/shm */
}
END_TEST

START_TEST(test_bad_arguments) {
  mproc_queue *q;
  struct mproc_queue_options o = {.flags = 1u << 9};
  mproc_assert_err(mproc_queue_new(NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  o = (struct mproc_queue_options){.roles = 8};
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  o = (struct mproc_queue_options){.capacity = (size_t)2 << 30};
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  o = (struct mproc_queue_options){.max_participants = 100000};
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  o = (struct mproc_queue_options){.name = "noslash"};
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  o = (struct mproc_queue_options){.name = "/a/b"};
  mproc_assert_err(mproc_queue_new(&q, &o), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_attach(&q, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_attach(NULL, "/x", 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_attach(&q, "/x", 4), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_unlink(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_unlink("x"), MPROC_EINVAL);
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  char buf[4];
  size_t len;
  struct mproc_queue_stats st;
  mproc_assert_err(mproc_queue_put(NULL, "x", 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_put(q, NULL, 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_put(q, "x", 1, -3), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_put_nowait(NULL, "x", 1), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get(NULL, buf, 4, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get(q, NULL, 4, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get(q, buf, 4, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get(q, buf, 4, &len, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get_nowait(NULL, buf, 4, &len), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_get_alloc(q, NULL, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_qsize(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_empty(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_full(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_stats(NULL, &st), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_stats(q, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_close(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_detach(q, 16), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_task_done(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_task_done(q), MPROC_ESTATE);
  mproc_assert_err(mproc_queue_join(q, 0), MPROC_ESTATE);
  mproc_assert_err(mproc_queue_join(NULL, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_queue_free(NULL));
}
END_TEST

START_TEST(test_close_semantics_local) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_assert_ok(mproc_queue_put(q, "a", 1, 0));
  mproc_assert_ok(mproc_queue_close(q));
  /* Closed for putting, but what is queued can still be taken... */
  mproc_assert_err(mproc_queue_put(q, "b", 1, 0), MPROC_ECLOSED);
  char c;
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, &c, 1, &len, 0));
  /* ...and then, with no producer left, get does not block. */
  mproc_assert_err(mproc_queue_get(q, &c, 1, &len, -1), MPROC_ECLOSED);
  mproc_assert_ok(mproc_queue_detach(q, MPROC_QUEUE_CONSUMER));
  mproc_assert_err(mproc_queue_get(q, &c, 1, &len, 0), MPROC_ECLOSED);
  mproc_assert_ok(mproc_queue_free(q));

  /* Before any consumer has attached, puts queue up (a named queue's
   * consumers may attach later); a get waits for producers likewise. */
  struct mproc_queue_options o = {.roles = MPROC_QUEUE_PRODUCER};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_ok(mproc_queue_put(q, "a", 1, 0));
  mproc_assert_ok(mproc_queue_free(q));
  o.roles = MPROC_QUEUE_CONSUMER;
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_err(mproc_queue_get(q, &c, 1, &len, 20), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

START_TEST(test_create_destroy_cycles) {
  for (int i = 0; i < 1000; i++) {
    mproc_queue *q;
    struct mproc_queue_options o = {.capacity = 65536, .flags = i % 2 ? MPROC_QUEUE_JOINABLE : 0};
    mproc_assert_ok(mproc_queue_new(&q, &o));
    mproc_assert_ok(mproc_queue_put(q, &i, sizeof i, 0));
    mproc_assert_ok(mproc_queue_free(q));
  }
}
END_TEST

/* ---- across processes -------------------------------------------------- */

struct prod_arg {
  mproc_queue *q;
  uint32_t id;
  uint32_t n;
  size_t size;
};

static int producer(void *arg) {
  struct prod_arg *a = arg;
  unsigned char *buf = malloc(a->size);
  if (buf == NULL)
    return 2;
  for (uint32_t i = 0; i < a->n; i++) {
    make_msg(buf, a->size, a->id, i);
    if (mproc_queue_put(a->q, buf, a->size, LONG_MS) != 0)
      return 3;
  }
  free(buf);
  mproc_queue_free(a->q);
  return 0;
}

START_TEST(test_producer_child_then_closed) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 8192};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  struct prod_arg a = {q, 7, 2000, 100};
  struct child ch = child_start(producer, &a);
  /* The parent only consumes: without this, it would itself count as a
   * producer and get would wait for it forever (as in Python). */
  mproc_assert_ok(mproc_queue_close(q));
  unsigned char buf[128];
  size_t len;
  for (uint32_t i = 0; i < a.n; i++) {
    struct msg_hdr h;
    mproc_assert_ok(mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS));
    ck_assert(check_msg(buf, len, &h));
    ck_assert_uint_eq(h.seq, i);
  }
  mproc_assert_err(mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS), MPROC_ECLOSED);
  ck_assert_int_eq(child_wait(&ch), 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

static int exit_without_detaching(void *arg) {
  mproc_queue *q = arg;
  return mproc_queue_put(q, "last", 4, LONG_MS) == 0 ? 0 : 1;
}

static int put_many_and_exit(void *arg) {
  mproc_queue *q = arg;
  char kb[1024];
  for (int i = 0; i < 1000; i++) {
    memset(kb, i & 0xff, sizeof kb);
    if (mproc_queue_put(q, kb, sizeof kb, 0) != 0)
      return 1;
  }
  return 0; /* nothing consumed yet, no close, no free: exits at once */
}

/* A process whose puts nobody has consumed yet exits at once (no feeder
 * thread to flush, cpython #73983), and its messages stay available. */
START_TEST(test_exit_with_unconsumed_puts) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct child ch = child_start(put_many_and_exit, q);
  ck_assert_int_eq(child_wait(&ch), 0); /* reaped before anything was taken */
  ck_assert_int_eq(mproc_queue_qsize(q), 1000);
  char kb[1024];
  size_t len;
  for (int i = 0; i < 1000; i++) {
    mproc_assert_ok(mproc_queue_get(q, kb, sizeof kb, &len, 0));
    ck_assert_uint_eq(len, sizeof kb);
    ck_assert_int_eq((unsigned char)kb[0], i & 0xff);
    ck_assert_int_eq((unsigned char)kb[1023], i & 0xff);
  }
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* A producer that dies (exits without closing) is noticed by a blocked get. */
START_TEST(test_dead_producer_detected) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct child ch = child_start(exit_without_detaching, q);
  mproc_assert_ok(mproc_queue_close(q));
  char buf[8];
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS));
  ck_assert_uint_eq(len, 4);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS), MPROC_ECLOSED);
  ck_assert_int_lt(mproc_now_ms() - t0, LONG_MS);
  ck_assert_int_eq(child_wait(&ch), 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

struct consume_arg {
  mproc_queue *q;
  int go; /* read end: the child exits once a byte comes */
};

static int consume_one_and_exit(void *arg) {
  const struct consume_arg *a = arg;
  char buf[8];
  size_t len;
  if (mproc_queue_get(a->q, buf, sizeof buf, &len, LONG_MS) != 0)
    return 1;
  /* Stay until told: a put made after this get must not race the death. */
  return mproc__poll1(a->go, POLLIN, mproc__deadline(LONG_MS)) > 0 ? 0 : 2;
}

/* A put blocked on a full queue whose last consumer exits reports it. */
START_TEST(test_dead_consumer_detected) {
  mproc_queue *q;
  struct mproc_queue_options o = {.maxsize = 1};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  int go[2];
  ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
  struct consume_arg a = {q, go[0]};
  struct child ch = child_start(consume_one_and_exit, &a);
  mproc_assert_ok(mproc_queue_detach(q, MPROC_QUEUE_CONSUMER));
  mproc_assert_ok(mproc_queue_put(q, "1", 1, LONG_MS));
  mproc_assert_ok(mproc_queue_put(q, "2", 1, LONG_MS)); /* after the child took "1" */
  ck_assert_int_eq(write(go[1], "x", 1), 1);            /* the child may exit now */
  mproc_assert_err(mproc_queue_put(q, "3", 1, LONG_MS), MPROC_ECLOSED);
  close(go[0]);
  close(go[1]);
  ck_assert_int_eq(child_wait(&ch), 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

struct cons_arg {
  mproc_queue *q;
  mproc_queue *results; /* per-message (producer, seq) records go here */
};

static int consumer(void *arg) {
  struct cons_arg *a = arg;
  mproc_queue_close(a->q); /* consumers put nothing */
  unsigned char buf[4096];
  for (;;) {
    size_t len;
    int r = mproc_queue_get(a->q, buf, sizeof buf, &len, LONG_MS);
    if (r == MPROC_ECLOSED)
      break;
    struct msg_hdr h;
    if (r != 0 || !check_msg(buf, len, &h))
      return 5;
    uint32_t rec[2] = {h.producer, h.seq};
    if (mproc_queue_put(a->results, rec, sizeof rec, LONG_MS) != 0)
      return 6;
  }
  return 0;
}

START_TEST(test_mpmc_checksums) {
  mproc_queue *q, *res;
  struct mproc_queue_options o = {.capacity = 16384};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_ok(mproc_queue_new(&res, NULL));
  enum { NP = 2, NC = 2, N = 3000 };
  struct prod_arg pa[NP];
  struct child pc[NP], cc[NC];
  struct cons_arg ca = {q, res};
  for (int i = 0; i < NC; i++)
    cc[i] = child_start(consumer, &ca);
  for (int i = 0; i < NP; i++) {
    pa[i] = (struct prod_arg){q, (uint32_t)i, N, 64 + (size_t)i * 1000};
    pc[i] = child_start(producer, &pa[i]);
  }
  mproc_assert_ok(mproc_queue_detach(q, MPROC_QUEUE_BOTH));
  mproc_assert_ok(mproc_queue_close(res));
  static unsigned char seen[NP][N];
  for (int k = 0; k < NP * N; k++) {
    uint32_t rec[2];
    size_t len;
    mproc_assert_ok(mproc_queue_get(res, rec, sizeof rec, &len, LONG_MS));
    ck_assert_uint_lt(rec[0], NP);
    ck_assert_uint_lt(rec[1], N);
    ck_assert_int_eq(seen[rec[0]][rec[1]], 0);
    seen[rec[0]][rec[1]] = 1;
  }
  for (int i = 0; i < NP; i++)
    ck_assert_int_eq(child_wait(&pc[i]), 0);
  for (int i = 0; i < NC; i++)
    ck_assert_int_eq(child_wait(&cc[i]), 0);
  uint32_t rec[2];
  size_t len;
  mproc_assert_err(mproc_queue_get(res, rec, sizeof rec, &len, LONG_MS), MPROC_ECLOSED);
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_queue_free(res));
}
END_TEST

struct named_arg {
  const char *name;
  size_t size;
};

static int named_child(void *arg) {
  struct named_arg *a = arg;
  mproc_queue *q;
  int r = mproc_queue_attach(&q, a->name, MPROC_QUEUE_PRODUCER);
  if (r != 0)
    return 1;
  unsigned char *buf = malloc(a->size);
  make_msg(buf, a->size, 3, 1);
  r = mproc_queue_put(q, buf, a->size, LONG_MS);
  free(buf);
  mproc_queue_free(q);
  return r == 0 ? 0 : 2;
}

START_TEST(test_named_queue) {
  char name[64];
  mproc_test_shm_name(name, sizeof name, "q");
  mproc_queue *q, *q2;
  struct mproc_queue_options o = {.name = name, .capacity = 65536, .roles = MPROC_QUEUE_CONSUMER};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_err(mproc_queue_new(&q2, &o), -EEXIST);
  /* A process that opens it by name (not through fork): small and big. */
  struct named_arg a = {name, 100};
  struct child ch = child_start(named_child, &a);
  ck_assert_int_eq(child_wait(&ch), 0);
  struct named_arg b = {name, 1 << 20};
  ch = child_start(named_child, &b);
  ck_assert_int_eq(child_wait(&ch), 0);
  for (int i = 0; i < 2; i++) {
    void *p;
    size_t len;
    struct msg_hdr h;
    mproc_assert_ok(mproc_queue_get_alloc(q, &p, &len, LONG_MS));
    ck_assert(check_msg(p, len, &h));
    ck_assert_uint_eq(len, i == 0 ? 100 : (size_t)1 << 20);
    free(p);
  }
  mproc_assert_ok(mproc_queue_attach(&q2, name, 0));
  mproc_assert_ok(mproc_queue_put(q2, "x", 1, 0));
  mproc_assert_ok(mproc_queue_free(q2));
  mproc_assert_ok(mproc_queue_free(q)); /* the creator unlinks the name */
  mproc_assert_err(mproc_queue_attach(&q2, name, 0), -ENOENT);
  mproc_assert_err(mproc_queue_unlink(name), -ENOENT);
}
END_TEST

/* ---- JoinableQueue ----------------------------------------------------- */

static int worker_task_done(void *arg) {
  mproc_queue *q = arg;
  mproc_queue_close(q);
  char buf[16];
  size_t len;
  int r;
  while ((r = mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS)) == 0)
    if (mproc_queue_task_done(q) != 0)
      return 1;
  return r == MPROC_ECLOSED ? 0 : 2;
}

static int worker_dies_holding_task(void *arg) {
  mproc_queue *q = arg;
  char buf[16];
  size_t len;
  if (mproc_queue_get(q, buf, sizeof buf, &len, LONG_MS) != 0)
    return 1;
  raise(SIGKILL); /* never marks it done */
  return 2;
}

START_TEST(test_joinable) {
  mproc_queue *q;
  struct mproc_queue_options o = {.flags = MPROC_QUEUE_JOINABLE};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_ok(mproc_queue_join(q, 0)); /* nothing put yet */
  mproc_assert_err(mproc_queue_task_done(q), MPROC_EOVERRELEASE);
  for (int i = 0; i < 50; i++)
    mproc_assert_ok(mproc_queue_put(q, &i, sizeof i, 0));
  mproc_assert_err(mproc_queue_join(q, 20), MPROC_ETIMEDOUT);
  struct child w1 = child_start(worker_task_done, q);
  struct child w2 = child_start(worker_task_done, q);
  mproc_assert_ok(mproc_queue_join(q, LONG_MS));
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.unfinished, 0);
  /* A worker that dies between get and task_done does not hang join. */
  mproc_assert_ok(mproc_queue_detach(q, MPROC_QUEUE_CONSUMER));
  mproc_assert_ok(mproc_queue_put(q, "t", 1, 0));
  struct child w3 = child_start(worker_dies_holding_task, q);
  /* w1/w2 may take it first and mark it done: either way join returns. */
  mproc_assert_ok(mproc_queue_join(q, LONG_MS));
  mproc_assert_ok(mproc_queue_close(q));
  ck_assert_int_eq(child_wait(&w1), 0);
  ck_assert_int_eq(child_wait(&w2), 0);
  int c3 = child_wait(&w3);
  ck_assert(c3 == -SIGKILL || c3 == 1);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* A named block's keeper (a process the library forks for itself) takes no
 * part in the program's queues: once the only producer closes, consumers
 * see MPROC_ECLOSED, and the keeper is no consumer holding up puts. */
START_TEST(test_library_processes_hold_no_roles) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_shm *s;
  mproc_assert_ok(mproc_shm_create(&s, NULL, 64));
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_le(st.producers, 2); /* the keeper's short-lived launcher may linger */
  mproc_assert_ok(mproc_queue_close(q));
  char buf[8];
  size_t n;
  /* A blocking get sweeps the dead launcher away, then sees no producer. */
  mproc_assert_err(mproc_queue_get(q, buf, sizeof buf, &n, 30000), MPROC_ECLOSED);
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.producers, 0);
  ck_assert_uint_eq(st.consumers, 1);
  mproc_assert_ok(mproc_shm_free(s));
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

int main(void) {
  Suite *s = suite_create("queue");
  TCase *tc = mproc_test_tcase(s, "queue", 60);
  tcase_add_test(tc, test_fifo_and_sizes);
  tcase_add_test(tc, test_small_payload_bytes);
  tcase_add_test(tc, test_wraparound_small_ring);
  tcase_add_test(tc, test_small_records_release_their_space);
  tcase_add_test(tc, test_bounds);
  tcase_add_test(tc, test_oversized_messages);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_close_semantics_local);
  tcase_add_test(tc, test_create_destroy_cycles);
  tcase_add_test(tc, test_producer_child_then_closed);
  tcase_add_test(tc, test_exit_with_unconsumed_puts);
  tcase_add_test(tc, test_dead_producer_detected);
  tcase_add_test(tc, test_dead_consumer_detected);
  tcase_add_test(tc, test_mpmc_checksums);
  tcase_add_test(tc, test_named_queue);
  tcase_add_test(tc, test_joinable);
  tcase_add_test(tc, test_library_processes_hold_no_roles);
  return mproc_test_run(s);
}
