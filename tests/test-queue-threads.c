/* ctest-labels: threads */
/* Queues shared by threads of one process (and by processes at the same
 * time): producer and consumer threads on one handle, checksums on every
 * message, blocking and close semantics with threads waiting. */
#include "harness.h"
#include "internal.h"
#include "queue.h"

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LONG_MS 60000
#define PER_THREAD 5000

struct targ {
  mproc_queue *q;
  uint32_t id;
  int result;
  unsigned char *seen; /* [4][PER_THREAD], consumers mark what they got */
  pthread_mutex_t *seen_lock;
};

static uint64_t sum(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static void *producer(void *arg) {
  struct targ *a = arg;
  unsigned char buf[3000];
  for (uint32_t s = 0; s < PER_THREAD; s++) {
    size_t n = 16 + (s * 131 + a->id * 17) % 2900;
    for (size_t i = 16; i < n; i++)
      buf[i] = (unsigned char)(i + s + a->id);
    uint64_t h = sum(buf + 16, n - 16);
    memcpy(buf, &a->id, 4);
    memcpy(buf + 4, &s, 4);
    memcpy(buf + 8, &h, 8);
    if (mproc_queue_put(a->q, buf, n, LONG_MS) != 0) {
      a->result = 1;
      return NULL;
    }
  }
  a->result = 0;
  return NULL;
}

static void *consumer(void *arg) {
  struct targ *a = arg;
  unsigned char buf[3000];
  size_t len;
  int r;
  a->result = 0;
  while ((r = mproc_queue_get(a->q, buf, sizeof buf, &len, LONG_MS)) == 0) {
    uint32_t id, s;
    uint64_t h;
    memcpy(&id, buf, 4);
    memcpy(&s, buf + 4, 4);
    memcpy(&h, buf + 8, 8);
    if (id >= 2 || s >= PER_THREAD || h != sum(buf + 16, len - 16)) {
      a->result = 2;
      return NULL;
    }
    pthread_mutex_lock(a->seen_lock);
    a->seen[id * PER_THREAD + s]++;
    pthread_mutex_unlock(a->seen_lock);
  }
  if (r != MPROC_ECLOSED)
    a->result = 3;
  return NULL;
}

START_TEST(test_threads_share_a_handle) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = 32768};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  static unsigned char seen[2 * PER_THREAD];
  pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
  struct targ a[4];
  pthread_t t[4];
  for (uint32_t i = 0; i < 4; i++) {
    a[i] = (struct targ){q, i % 2, -1, seen, &seen_lock};
    ck_assert_int_eq(pthread_create(&t[i], NULL, i < 2 ? consumer : producer, &a[i]), 0);
  }
  ck_assert_int_eq(pthread_join(t[2], NULL), 0);
  ck_assert_int_eq(pthread_join(t[3], NULL), 0);
  ck_assert_int_eq(a[2].result, 0);
  ck_assert_int_eq(a[3].result, 0);
  /* The process puts no more: once the consumers have drained the queue,
   * their blocked gets return MPROC_ECLOSED. */
  mproc_assert_ok(mproc_queue_close(q));
  ck_assert_int_eq(pthread_join(t[0], NULL), 0);
  ck_assert_int_eq(pthread_join(t[1], NULL), 0);
  ck_assert_int_eq(a[0].result, 0);
  ck_assert_int_eq(a[1].result, 0);
  for (int i = 0; i < 2 * PER_THREAD; i++)
    ck_assert_int_eq(seen[i], 1);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* Puts 0, 1, 2... (a second thread of a process that parked its locks). */
static void *put_in_order(void *arg) {
  mproc_queue *q = arg;
  for (uint32_t s = 0; s < PER_THREAD; s++)
    if (mproc_queue_put(q, &s, sizeof s, LONG_MS) != 0)
      return q;
  return NULL;
}

/* The process's only thread parked both sides' locks (queue.h); a second
 * thread's first put revokes the producer side's parking while the first
 * thread keeps getting: every message arrives once, in order, and the
 * queue works on after the thread is gone. */
START_TEST(test_thread_joins_a_parked_queue) {
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  uint32_t v = 7, out = 0;
  size_t len;
  mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, 0));
  mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, 0));
  if (atomic_load(&mproc__fence_mode) == 2 && mproc__q_threads_alone()) {
    ck_assert_uint_ne(atomic_load(&q->h->plock.word) & MPROC__TIDLOCK_PARK, 0);
    ck_assert_uint_ne(atomic_load(&q->h->clock.word) & MPROC__TIDLOCK_PARK, 0);
  }
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, put_in_order, q), 0);
  for (uint32_t s = 0; s < PER_THREAD; s++) {
    mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, LONG_MS));
    ck_assert_uint_eq(len, sizeof out);
    ck_assert_uint_eq(out, s);
  }
  void *res = q;
  ck_assert_int_eq(pthread_join(t, &res), 0);
  ck_assert_ptr_null(res);
  mproc_assert_ok(mproc_queue_put(q, &v, sizeof v, 0));
  mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, 0));
  ck_assert_uint_eq(out, 7);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* ---- a waker must not consume a later sleeper's request --------------- */

#define WAKE_ROUNDS 10

/* The sleeping consumer thread stops inside its announcement (between its
 * read of the sequence word and its clearing of `pending`, queue_ring.c)
 * until the main thread let it go: the main thread's put wakes for a
 * change the sleeper will have seen, and its own get takes the message. */
static sem_t in_window, go_on;
static _Atomic pid_t hook_tid;
static _Atomic bool hook_armed;

static bool sem_wait_ms(sem_t *s, int64_t ms) {
  int64_t deadline = mproc_now_ms() + mproc_test_scaled_ms(ms);
  while (sem_trywait(s) != 0) {
    if (mproc_now_ms() >= deadline)
      return false;
    sched_yield(); /* bounded polling of a real event */
  }
  return true;
}

static void hold_announcement(void) {
  if ((pid_t)syscall(SYS_gettid) != atomic_load(&hook_tid) || !atomic_exchange(&hook_armed, false))
    return;
  sem_post(&in_window);
  sem_wait_ms(&go_on, LONG_MS);
}

struct waiter {
  mproc_queue *q;
  int side; /* MPROC__Q_GET: gets one message (2); MPROC__Q_PUT: puts 2 */
};

/* Gets or puts one message, waiting as long as it takes. */
static void *wait_one(void *arg) {
  struct waiter *w = arg;
  atomic_store(&hook_tid, (pid_t)syscall(SYS_gettid));
  uint32_t v = 2;
  size_t len;
  if (w->side == MPROC__Q_PUT)
    return mproc_queue_put(w->q, &v, sizeof v, LONG_MS) == 0 ? NULL : w;
  v = 0;
  return mproc_queue_get(w->q, &v, sizeof v, &len, LONG_MS) == 0 && v == 2 ? NULL : w;
}

/* Whether thread `tid` of this process is blocked in futex(2). */
static bool in_futex(pid_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
  FILE *f = fopen(path, "r");
  long nr = -1;
  if (f != NULL) {
    if (fscanf(f, "%ld", &nr) != 1)
      nr = -1;
    fclose(f);
  }
  return nr == SYS_futex;
}

/* Takes the queue's one message and checks it is `want`. */
static void get_expect(mproc_queue *q, uint32_t want) {
  uint32_t out = 0;
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, &out, sizeof out, &len, 0));
  ck_assert_uint_eq(out, want);
}

/* A consumer (_i 0) or producer (_i 1) announces itself as a sleeper while
 * a wake-up of its side for an earlier change is on its way, and this
 * thread uses that change up (takes the message, fills the room): the next
 * change must still wake it.  Before, that waker's exchange of `pending`
 * ate the sleeper's request and the next change skipped its wake-up: the
 * sleeper slept to its 100 ms cap, every round. */
START_TEST(test_waker_keeps_a_later_sleepers_request) {
  int side = _i == 0 ? MPROC__Q_GET : MPROC__Q_PUT;
  mproc_queue *q;
  struct mproc_queue_options o = {.maxsize = 1}; /* a producer waits behind one message */
  mproc_assert_ok(mproc_queue_new(&q, &o));
  ck_assert_int_eq(sem_init(&in_window, 0, 0), 0);
  ck_assert_int_eq(sem_init(&go_on, 0, 0), 0);
  atomic_store(&mproc__q_announce_hook, hold_announcement);
  int capped = 0;
  for (int round = 0; round < WAKE_ROUNDS; round++) {
    uint32_t zero = 0, one = 1;
    if (side == MPROC__Q_PUT)
      mproc_assert_ok(mproc_queue_put(q, &zero, sizeof zero, 0)); /* full */
    mproc__q_sweep(q); /* the sleeper's sleep below then does not sweep */
    uint64_t capped0 = atomic_load(&mproc__q_capped_sleeps);
    atomic_store(&hook_tid, 0);
    atomic_store(&hook_armed, true);
    struct waiter w = {q, side};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, wait_one, &w), 0);
    ck_assert(sem_wait_ms(&in_window, LONG_MS));
    /* A change that wakes the waiter's side, used up again at once. */
    if (side == MPROC__Q_GET) {
      mproc_assert_ok(mproc_queue_put(q, &one, sizeof one, 0));
      get_expect(q, 1);
    } else {
      get_expect(q, 0);
      mproc_assert_ok(mproc_queue_put(q, &one, sizeof one, 0));
    }
    sem_post(&go_on);
    /* Until it sleeps: its own futex wait (it left the hook's semaphore,
     * and nothing it waits for can come before the change below). */
    pid_t tid = atomic_load(&hook_tid);
    int64_t deadline = mproc_now_ms() + mproc_test_scaled_ms(LONG_MS);
    while (!in_futex(tid) && mproc_now_ms() < deadline)
      sched_yield();
    uint32_t two = 2;
    if (side == MPROC__Q_GET)
      mproc_assert_ok(mproc_queue_put(q, &two, sizeof two, 0));
    else
      get_expect(q, 1);
    void *res = q;
    ck_assert_int_eq(pthread_join(t, &res), 0);
    ck_assert_ptr_null(res);
    if (side == MPROC__Q_PUT)
      get_expect(q, 2);
    capped += atomic_load(&mproc__q_capped_sleeps) != capped0;
  }
  atomic_store(&mproc__q_announce_hook, NULL);
  /* A round may end by the cap when this thread is descheduled for 100 ms
   * between seeing the sleeper asleep and its change: a few, not all. */
  ck_assert_int_le(capped, WAKE_ROUNDS / 3);
  sem_destroy(&in_window);
  sem_destroy(&go_on);
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

int main(void) {
  Suite *s = suite_create("queue-threads");
  TCase *tc = mproc_test_tcase(s, "threads", 120);
  tcase_add_test(tc, test_threads_share_a_handle);
  tcase_add_test(tc, test_thread_joins_a_parked_queue);
  tcase_add_loop_test(tc, test_waker_keeps_a_later_sleepers_request, 0, 2);
  return mproc_test_run(s);
}
