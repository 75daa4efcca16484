/* Queues under process death: producers and consumers that die in the middle
 * of a message (inside and outside the queue's lock, inline and spilled),
 * and a stress run killing a producer and a consumer while others work.
 * Deaths mid-copy are made deterministic by copying from or into memory
 * whose tail is PROT_NONE: the process faults inside the library's memcpy. */
#include "harness.h"
#include "child.h"
#include "internal.h"
#include "queue.h"

#include <dirent.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LONG_MS 60000

static uint64_t sum(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* `valid` bytes of ordinary memory followed by a PROT_NONE page; returns a
 * pointer `valid` bytes before the guard. */
static unsigned char *guarded(size_t valid, void **base, size_t *maplen) {
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  size_t data = (valid + ps - 1) / ps * ps;
  *maplen = data + ps;
  unsigned char *p =
      mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  mprotect(p + data, ps, PROT_NONE);
  *base = p;
  memset(p, 0x5a, data);
  return p + data - valid;
}

struct die_arg {
  mproc_queue *q;
  size_t len;   /* message length claimed */
  size_t valid; /* readable/writable bytes before the fault */
};

/* Puts a message whose source faults after `valid` bytes. */
static int die_putting(void *arg) {
  struct die_arg *a = arg;
  void *base;
  size_t ml;
  unsigned char *p = guarded(a->valid, &base, &ml);
  mproc_queue_put(a->q, p, a->len, LONG_MS);
  return 99; /* not reached: the copy faults */
}

/* Gets a message into a buffer that faults after `valid` bytes. */
static int die_getting(void *arg) {
  struct die_arg *a = arg;
  void *base;
  size_t ml;
  unsigned char *p = guarded(a->valid, &base, &ml);
  size_t len;
  mproc_queue_get(a->q, p, a->len, &len, LONG_MS);
  return 99;
}

static int died(int code) { return code < 0 || code == 1; /* 1: a sanitizer's SEGV exit */ }

/* Whether /dev/shm holds an object named by process pid. */
static int shm_of_pid(pid_t pid) {
  /* Names are "mproc.<pid>.<kind>.<seq>.<rnd>": match the pid field only
   * (a sequence number equal to the pid is another process's entry). */
  char pat[32];
  int n = snprintf(pat, sizeof pat, "mproc.%d.", (int)pid);
  DIR *d = opendir("/dev/shm");
  int found = 0;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL)
    if (strncmp(e->d_name, pat, (size_t)n) == 0)
      found = 1;
  if (d != NULL)
    closedir(d);
  return found;
}

static void put_get_ok(mproc_queue *q, size_t n) {
  unsigned char *buf = malloc(n), *out = malloc(n);
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)(i * 13);
  mproc_assert_ok(mproc_queue_put(q, buf, n, LONG_MS));
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, out, n, &len, LONG_MS));
  ck_assert_uint_eq(len, n);
  ck_assert_int_eq(memcmp(buf, out, n), 0);
  free(buf);
  free(out);
}

/* Producer dies while copying a message in, outside the lock (inline record
 * reserved) and for an oversized (spilled) one: the record is skipped and
 * counted as lost, the next message is delivered, the spill object removed. */
START_TEST(test_producer_dies_mid_copy) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 65536};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  size_t cases[][2] = {{20000, 9000}, {200000, 100000}};
  for (int c = 0; c < 2; c++) {
    struct die_arg a = {q, cases[c][0], cases[c][1]};
    struct child ch = child_start(die_putting, &a);
    ck_assert(died(child_wait(&ch)));
    /* The dead producer's record sits at the head; get must skip it. */
    put_get_ok(q, 3000);
    struct mproc_queue_stats st;
    mproc_assert_ok(mproc_queue_stats(q, &st));
    ck_assert_uint_eq(st.lost, (uint64_t)c + 1);
    ck_assert_int_eq(shm_of_pid(ch.pid), 0);
  }
  ck_assert_int_eq(mproc_queue_qsize(q), 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Producer dies while copying a small message inside the lock: the next
 * locker repairs; nothing was published, nothing is lost or delivered. */
START_TEST(test_producer_dies_holding_lock) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct die_arg a = {q, 800, 300};
  struct child ch = child_start(die_putting, &a);
  ck_assert(died(child_wait(&ch)));
  put_get_ok(q, 100);
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.repairs, 1);
  ck_assert_uint_eq(st.lost, 0);
  ck_assert_uint_eq(st.puts, 1);
  ck_assert_int_eq(mproc_queue_qsize(q), 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Consumer dies while copying a message out, outside the lock: the message
 * is lost (counted), its space is reclaimed, the queue goes on. */
START_TEST(test_consumer_dies_mid_copy) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 65536};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  size_t cases[][2] = {{20000, 9000}, {200000, 100000}};
  for (int c = 0; c < 2; c++) {
    unsigned char *big = calloc(1, cases[c][0]);
    mproc_assert_ok(mproc_queue_put(q, big, cases[c][0], 0));
    free(big);
    struct die_arg a = {q, cases[c][0], cases[c][1]};
    struct child ch = child_start(die_getting, &a);
    ck_assert(died(child_wait(&ch)));
    /* A consumer about to block notices the death (here: on an empty
     * queue, so it then times out). */
    unsigned char m[3000] = {0};
    size_t len;
    mproc_assert_err(mproc_queue_get(q, m, sizeof m, &len, 300), MPROC_ETIMEDOUT);
    /* All the ring's space is back: as many messages fit as in a new ring. */
    int n = 0;
    while (mproc_queue_put_nowait(q, m, sizeof m) == 0)
      n++;
    ck_assert_int_eq(n, 65536 / (3000 + 24));
    for (int i = 0; i < n; i++)
      mproc_assert_ok(mproc_queue_get(q, m, sizeof m, &len, 0));
    struct mproc_queue_stats st;
    mproc_assert_ok(mproc_queue_stats(q, &st));
    ck_assert_uint_eq(st.lost, (uint64_t)c + 1);
    ck_assert_int_eq(shm_of_pid(getpid()), 0); /* the spill object went too */
  }
  /* The ring's space came back: fill it completely once more. */
  for (int i = 0; i < 10; i++)
    put_get_ok(q, 30000);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Consumer dies copying a small message out inside the lock: the message is
 * still at the head and goes, intact, to the next consumer. */
START_TEST(test_consumer_dies_holding_lock) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  unsigned char msg[700];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (unsigned char)i;
  mproc_assert_ok(mproc_queue_put(q, msg, sizeof msg, 0));
  struct die_arg a = {q, sizeof msg, 200};
  struct child ch = child_start(die_getting, &a);
  ck_assert(died(child_wait(&ch)));
  unsigned char out[700];
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, out, sizeof out, &len, LONG_MS));
  ck_assert_uint_eq(len, sizeof msg);
  ck_assert_int_eq(memcmp(out, msg, sizeof msg), 0);
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.repairs, 1);
  ck_assert_uint_eq(st.lost, 0);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Blocks in get on an empty queue: spinning, then asleep. */
static int block_getting(void *arg) {
  mproc_queue *q = arg;
  unsigned char m[64];
  size_t len;
  mproc_queue_get(q, m, sizeof m, &len, LONG_MS);
  return 99; /* killed before anything arrives */
}

/* Consumers killed while waiting for a message (spinning or asleep) take
 * nothing with them: the next message goes to the live consumer, whole, and
 * nothing is counted lost or repaired. */
START_TEST(test_consumer_killed_while_waiting) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  for (int round = 0; round < 20; round++) {
    struct child ch = child_start(block_getting, q);
    /* Killed at once (likely spinning) or after a while (asleep). */
    if (round % 2 == 1) {
      unsigned char m[8];
      size_t len;
      mproc_assert_err(mproc_queue_get(q, m, sizeof m, &len, 30), MPROC_ETIMEDOUT);
    }
    child_kill(&ch);
    put_get_ok(q, 8 + (size_t)round);
  }
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.lost, 0);
  ck_assert_uint_eq(st.repairs, 0);
  ck_assert_uint_eq(st.puts, 20);
  ck_assert_uint_eq(st.gets, 20);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* ---- stress: kill a producer and a consumer while others run ----------- */

#define NMSG 400

struct sp_arg {
  mproc_queue *q;
  uint32_t id;
};

static size_t msg_size(uint32_t id, uint32_t seq) {
  return 32 + ((size_t)seq * 7919 + id * 104729) % 150000; /* some spill */
}

static int stress_producer(void *arg) {
  struct sp_arg *a = arg;
  mproc_queue_detach(a->q, MPROC_QUEUE_CONSUMER);
  unsigned char *buf = malloc(200000);
  for (uint32_t s = 0; s < NMSG; s++) {
    size_t n = msg_size(a->id, s);
    for (size_t i = 16; i < n; i++)
      buf[i] = (unsigned char)(i ^ s ^ a->id);
    uint64_t h = sum(buf + 16, n - 16);
    memcpy(buf, &a->id, 4);
    memcpy(buf + 4, &s, 4);
    memcpy(buf + 8, &h, 8);
    if (mproc_queue_put(a->q, buf, n, LONG_MS) != 0)
      return 3;
  }
  free(buf);
  mproc_queue_free(a->q);
  return 0;
}

struct sc_arg {
  mproc_queue *q;
  mproc_queue *res;
};

static int stress_consumer(void *arg) {
  struct sc_arg *a = arg;
  mproc_queue_detach(a->q, MPROC_QUEUE_PRODUCER);
  mproc_queue_detach(a->res, MPROC_QUEUE_CONSUMER);
  for (;;) {
    void *p;
    size_t len;
    int r = mproc_queue_get_alloc(a->q, &p, &len, LONG_MS);
    if (r == MPROC_ECLOSED)
      return 0;
    if (r != 0 || len < 16)
      return 4;
    unsigned char *b = p;
    uint32_t id, s;
    uint64_t h;
    memcpy(&id, b, 4);
    memcpy(&s, b + 4, 4);
    memcpy(&h, b + 8, 8);
    int ok = len == msg_size(id, s) && h == sum(b + 16, len - 16);
    free(p);
    if (!ok)
      return 5; /* a corrupt or partial message was delivered */
    uint32_t rec[2] = {id, s};
    if (mproc_queue_put(a->res, rec, sizeof rec, LONG_MS) != 0)
      return 6;
  }
}

START_TEST(test_kill_producer_and_consumer_under_load) {
  mproc_queue *q, *res;
  struct mproc_queue_options o = {.capacity = 262144};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_ok(mproc_queue_new(&res, NULL));
  struct sp_arg pa[3] = {{q, 0}, {q, 1}, {q, 2}};
  struct sc_arg ca = {q, res};
  struct child p[3], c[3];
  for (int i = 0; i < 3; i++)
    c[i] = child_start(stress_consumer, &ca);
  for (int i = 0; i < 3; i++)
    p[i] = child_start(stress_producer, &pa[i]);
  mproc_assert_ok(mproc_queue_detach(q, MPROC_QUEUE_BOTH));
  mproc_assert_ok(mproc_queue_close(res));
  static unsigned char seen[3][NMSG];
  int got = 0;
  uint32_t rec[2];
  size_t len;
  /* Kill producer 0 and consumer 0 once work is well under way. */
  for (int k = 0; k < 100; k++) {
    mproc_assert_ok(mproc_queue_get(res, rec, sizeof rec, &len, LONG_MS));
    ck_assert_int_eq(seen[rec[0]][rec[1]], 0);
    seen[rec[0]][rec[1]] = 1;
    got++;
  }
  mproc_assert_ok(mproc__pidfd_kill(p[0].pidfd, SIGKILL));
  mproc_assert_ok(mproc__pidfd_kill(c[0].pidfd, SIGKILL));
  int r;
  while ((r = mproc_queue_get(res, rec, sizeof rec, &len, LONG_MS)) == 0) {
    ck_assert_uint_lt(rec[0], 3);
    ck_assert_uint_lt(rec[1], NMSG);
    ck_assert_int_eq(seen[rec[0]][rec[1]], 0);
    seen[rec[0]][rec[1]] = 1;
    got++;
  }
  mproc_assert_err(r, MPROC_ECLOSED);
  /* Under load a producer may have put all its messages (and a consumer
   * seen the queue close) before the kill reached it: either end is fine,
   * what matters is that nothing else was lost or duplicated. */
  int st0 = child_wait(&p[0]);
  ck_assert_msg(st0 == -SIGKILL || st0 == 0, "producer 0 ended with %d", st0);
  st0 = child_wait(&c[0]);
  ck_assert_msg(st0 == -SIGKILL || st0 == 0, "consumer 0 ended with %d", st0);
  for (int i = 1; i < 3; i++) {
    ck_assert_int_eq(child_wait(&p[i]), 0);
    ck_assert_int_eq(child_wait(&c[i]), 0);
  }
  /* Producers 1 and 2 put everything; what a consumer took and never
   * reported died with consumer 0, and is bounded by what it could hold. */
  int missing = 0;
  for (int i = 1; i < 3; i++)
    for (int s = 0; s < NMSG; s++)
      missing += !seen[i][s];
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_int_le(missing, 2 + (int)st.lost);
  ck_assert_uint_eq(mproc_queue_qsize(q), 0);
  ck_assert_int_ge(got, 2 * NMSG - missing);
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_queue_free(res));
}
END_TEST

/* ---- corrupt shared memory ------------------------------------------------ */

/* The record at the head of q (the next one a get takes). */
static struct mproc__qrec *head_rec(mproc_queue *q) {
  return mproc__q_rec_at(q, atomic_load(&q->h->head));
}

static void get_corrupt(mproc_queue *q) {
  char buf[64];
  size_t n = 0;
  void *p = NULL;
  mproc_assert_err(mproc_queue_get(q, buf, sizeof buf, &n, 0), MPROC_ECORRUPT);
  mproc_assert_err(mproc_queue_get_alloc(q, &p, &n, 0), MPROC_ECORRUPT);
  ck_assert_ptr_null(p);
}

static void get_expect(mproc_queue *q, const void *want, size_t len) {
  void *p = NULL;
  size_t n = 0;
  mproc_assert_ok(mproc_queue_get_alloc(q, &p, &n, 0));
  ck_assert_uint_eq(n, len);
  ck_assert_int_eq(memcmp(p, want, len), 0);
  free(p);
}

/* Wild lengths, kinds, states and positions: reported, never trusted. */
START_TEST(test_corrupt_inline_records) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_assert_ok(mproc_queue_put(q, "hello", 5, 0));
  struct mproc__qrec *r = head_rec(q);
  r->len = (uint64_t)1 << 40; /* far past the ring */
  get_corrupt(q);
  r->len = q->h->cap; /* the ring's size: the record would not fit */
  get_corrupt(q);
  r->len = 5;
  r->kind = 7;
  get_corrupt(q);
  r->kind = MPROC__QK_INLINE;
  atomic_store(&r->state, 42);
  get_corrupt(q);
  atomic_store(&r->state, MPROC__QR_COMMITTED);
  get_expect(q, "hello", 5); /* repaired: nothing was consumed meanwhile */

  /* Positions: a tail beyond the ring would make put overwrite live
   * records, and get read garbage. */
  uint64_t tail = atomic_load(&q->h->tail);
  atomic_store(&q->h->tail, tail + 3 * q->h->cap);
  mproc_assert_err(mproc_queue_put(q, "x", 1, 0), MPROC_ECORRUPT);
  get_corrupt(q);
  atomic_store(&q->h->tail, tail);
  mproc_assert_ok(mproc_queue_put(q, "again", 5, 0));
  get_expect(q, "again", 5);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Spill names: only the queue's own objects are ever read or unlinked, and
 * an object shorter than the record says is not mapped past its end. */
START_TEST(test_corrupt_spill_records) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 4096};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  char big[3000];
  memset(big, 's', sizeof big);
  mproc_assert_ok(mproc_queue_put(q, big, sizeof big, 0));
  struct mproc__qrec *r = head_rec(q);
  ck_assert_uint_eq(r->kind, MPROC__QK_SPILL);
  char mine[MPROC__Q_NAME_MAX];
  memcpy(mine, r + 1, sizeof mine);

  /* Another object of the same user, with a name that is not this queue's. */
  char foreign[128];
  mproc_test_shm_name(foreign, sizeof foreign, "foreign");
  int fd = shm_open(foreign, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, "secret", 6), 6);
  close(fd);
  memset(r + 1, 0, MPROC__Q_NAME_MAX);
  strcpy((char *)(r + 1), foreign);
  r->len = 6;
  get_corrupt(q);
  fd = shm_open(foreign, O_RDONLY | O_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0); /* neither read in nor unlinked */
  close(fd);
  ck_assert_int_eq(shm_unlink(foreign), 0);
  /* A name of the right shape for another queue, and one not terminated
   * inside the record. */
  memcpy(r + 1, mine, sizeof mine);
  ((char *)(r + 1))[strlen(mine) - 12] ^= 1; /* a digit of the queue id */
  r->len = sizeof big;
  get_corrupt(q);
  memset(r + 1, 'a', MPROC__Q_NAME_MAX);
  get_corrupt(q);
  memcpy(r + 1, mine, sizeof mine);
  get_expect(q, big, sizeof big);

  /* The queue's own object, but the record claims more than it holds. */
  mproc_assert_ok(mproc_queue_put(q, big, sizeof big, 0));
  r = head_rec(q);
  r->len = sizeof big + 16 * 4096;
  char *dst = malloc(r->len);
  ck_assert_ptr_nonnull(dst);
  size_t n = 0;
  mproc_assert_err(mproc_queue_get(q, dst, sizeof big + 16 * 4096, &n, 0), MPROC_ECORRUPT);
  free(dst);
  /* The queue goes on. */
  mproc_assert_ok(mproc_queue_put(q, "ok", 2, 0));
  get_expect(q, "ok", 2);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* A child attached and died without detaching; this process was then given
 * its pid (faked by rewriting the slot's pid, as after a pid wrap or in
 * another pid namespace) and its start time is an older process's.  The
 * sweep must still reclaim the dead slot, not take it for one of ours. */
static int exit_attached(void *arg) {
  (void)arg;
  _exit(0);
}

START_TEST(test_recycled_pid_is_not_ours) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct child ch = child_start(exit_attached, NULL);
  ck_assert_int_eq(child_wait(&ch), 0);
  int faked = 0;
  for (uint32_t i = 0; i < q->max_parts; i++)
    if (atomic_load(&q->h->parts[i].pid) == ch.pid) {
      atomic_store(&q->h->parts[i].pid, getpid());
      /* Start times count clock ticks: the child may have started in the
       * same tick as this process; a pid is only recycled later. */
      q->h->parts[i].start_time = 1;
      faked++;
    }
  ck_assert_int_eq(faked, 1);
  mproc__q_sweep(q);
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.consumers, 1);
  ck_assert_uint_eq(st.producers, 1);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* ---- parked side locks (queue.h) ------------------------------------------ */

struct park_arg {
  mproc_queue *q;
  _Atomic uint64_t word; /* the producer's plock word after its first put */
  _Atomic int mode;      /* and its fence mode (parking needs membarrier) */
};

/* Shared with the children: the parent reads what they saw. */
static struct park_arg *park_arg_new(mproc_queue *q) {
  struct park_arg *a =
      mmap(NULL, sizeof *a, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(a, MAP_FAILED);
  a->q = q;
  return a;
}

/* Whether the child's plock was parked, where it could be. */
static void assert_parked(struct park_arg *a) {
  if (atomic_load(&a->mode) == 2)
    ck_assert_uint_ne(atomic_load(&a->word) & MPROC__TIDLOCK_PARK, 0);
}

/* Becomes the queue's only producer (the parent closes its side), puts one
 * message, which parks plock, and records what it did. */
static int put_as_only_producer(struct park_arg *a) {
  mproc_queue *q = a->q;
  if (mproc_queue_detach(q, MPROC_QUEUE_CONSUMER) != 0)
    return 2;
  int64_t until = mproc__deadline(LONG_MS);
  while (atomic_load(&q->h->nproducers) != 1)
    if (mproc_timeout_until(until) == 0)
      return 3;
  unsigned char m[100] = {7};
  if (mproc_queue_put(q, m, sizeof m, LONG_MS) != 0)
    return 4;
  atomic_store(&a->word, atomic_load(&q->h->plock.word));
  atomic_store(&a->mode, atomic_load(&mproc__fence_mode));
  return 0;
}

/* ... then dies copying the next small message in, inside the critical
 * section it entered through the parked word. */
static int park_then_die_putting(void *arg) {
  struct park_arg *a = arg;
  int r = put_as_only_producer(a);
  if (r != 0)
    return r;
  struct die_arg d = {a->q, 800, 300};
  return die_putting(&d);
}

/* ... then stops, outside any critical section. */
static int park_then_stop(void *arg) {
  struct park_arg *a = arg;
  int r = put_as_only_producer(a);
  if (r != 0)
    return r;
  raise(SIGSTOP);
  return 0;
}

/* A new queue whose only producer is a child running fn (park_arg_new's
 * argument), which this process closes its side for; returns once the
 * child's first message arrived. */
static struct park_arg *start_parking_producer(mproc__child_fn fn, struct child *ch) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct park_arg *a = park_arg_new(q);
  *ch = child_start(fn, a);
  mproc_assert_ok(mproc_queue_close(q));
  unsigned char m[100];
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, m, sizeof m, &len, LONG_MS));
  ck_assert_uint_eq(len, sizeof m);
  ck_assert_uint_eq(m[0], 7);
  return a;
}

static void end_parking(struct park_arg *a, uint64_t repairs) {
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(a->q, &st));
  ck_assert_uint_eq(st.repairs, repairs);
  ck_assert_uint_eq(st.lost, 0);
  ck_assert_uint_eq(st.puts, 1);
  mproc_assert_ok(mproc_queue_free(a->q));
  munmap(a, sizeof *a);
}

/* The only producer parked its lock and died inside a critical section
 * entered through it: the consumer's sweep revokes the parking, judges the
 * owner dead, repairs, and the queue reports its producers gone. */
START_TEST(test_parked_producer_dies_inside) {
  struct child ch;
  struct park_arg *a = start_parking_producer(park_then_die_putting, &ch);
  ck_assert(died(child_wait(&ch)));
  assert_parked(a);
  unsigned char m[1000];
  size_t len;
  mproc_assert_err(mproc_queue_get(a->q, m, sizeof m, &len, LONG_MS), MPROC_ECLOSED);
  end_parking(a, 1);
}
END_TEST

/* A producer stopped while its lock is parked, outside a critical section,
 * does not hold the lock: both locks are taken at once, nothing repaired. */
START_TEST(test_parked_producer_stopped) {
  struct child ch;
  struct park_arg *a = start_parking_producer(park_then_stop, &ch);
  int64_t until = mproc__deadline(LONG_MS);
  struct mproc__pstat ps = {0};
  while (mproc__proc_stat(NULL, ch.pid, &ps) == 0 && ps.state != 'T' && ps.state != 't')
    ck_assert_int_gt(mproc_timeout_until(until), 0);
  ck_assert(ps.state == 'T' || ps.state == 't');
  assert_parked(a);
  mproc_assert_ok(mproc__q_lock(a->q));
  mproc__q_unlock(a->q);
  child_kill(&ch);
  end_parking(a, 0);
}
END_TEST

/* Refuses membarrier(2) in the calling process (EPERM), as a sandbox's
 * seccomp filter may. */
static int refuse_membarrier(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {(unsigned short)MPROC__ARRAY_SIZE(f), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

struct handover {
  mproc_queue *q;
  _Atomic int step; /* 1: the child left the queue; 2: the parent parked */
};

static bool reached(_Atomic int *word, int value) {
  int64_t until = mproc__deadline(LONG_MS);
  while (atomic_load(word) < value)
    if (mproc_timeout_until(until) == 0)
      return false;
  return true;
}

/* Leaves the queue (so that the parent is alone on both sides again), then
 * takes both locks without membarrier. */
static int lock_without_membarrier(void *arg) {
  struct handover *h = arg;
  if (mproc_queue_detach(h->q, MPROC_QUEUE_BOTH) != 0)
    return 2;
  atomic_store(&h->step, 1);
  if (!reached(&h->step, 2) || refuse_membarrier() != 0)
    return 3;
  if (mproc__q_lock(h->q) != 0)
    return 4;
  mproc__q_unlock(h->q);
  return 0;
}

/* A process whose membarrier is refused cannot revoke a parking through the
 * heavy fence: it waits for the parker to give each parked word up at its
 * next put or get, which it does on seeing the revoker counted, or when it
 * waits for the other lock itself (the revoker may hold it). */
START_TEST(test_revoker_without_membarrier) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  struct handover *h =
      mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(h, MAP_FAILED);
  h->q = q;
  struct child ch = child_start(lock_without_membarrier, h);
  ck_assert(reached(&h->step, 1));
  uint32_t v = 5, out = 0;
  size_t len;
  mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, 0));
  mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, 0));
  if (atomic_load(&mproc__fence_mode) == 2 && mproc__q_threads_alone())
    ck_assert_uint_ne(atomic_load(&q->h->plock.word) & MPROC__TIDLOCK_PARK, 0);
  atomic_store(&h->step, 2);
  /* Calls until the child is through: each one gives a parked lock up to a
   * revoker counted meanwhile, which is what such a revoker waits for. */
  int64_t until = mproc__deadline(LONG_MS);
  while (child_running(&ch)) {
    ck_assert_int_gt(mproc_timeout_until(until), 0);
    mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, LONG_MS));
    mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, LONG_MS));
    ck_assert_uint_eq(out, 5);
  }
  ck_assert_int_eq(child_wait(&ch), 0);
  mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, 0));
  mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, 0));
  munmap(h, sizeof *h);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

int main(void) {
  Suite *s = suite_create("queue-crash");
  TCase *tc = mproc_test_tcase(s, "crash", 120);
  tcase_add_test(tc, test_producer_dies_mid_copy);
  tcase_add_test(tc, test_producer_dies_holding_lock);
  tcase_add_test(tc, test_consumer_dies_mid_copy);
  tcase_add_test(tc, test_consumer_dies_holding_lock);
  tcase_add_test(tc, test_consumer_killed_while_waiting);
  tcase_add_test(tc, test_kill_producer_and_consumer_under_load);
  tcase_add_test(tc, test_corrupt_inline_records);
  tcase_add_test(tc, test_corrupt_spill_records);
  tcase_add_test(tc, test_recycled_pid_is_not_ours);
  tcase_add_test(tc, test_parked_producer_dies_inside);
  tcase_add_test(tc, test_parked_producer_stopped);
  tcase_add_test(tc, test_revoker_without_membarrier);
  return mproc_test_run(s);
}
