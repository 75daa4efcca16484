/* The raw mechanisms shared by bench-raw.c, bench-queue.c and
 * bench-scale.c: shared memory, a futex wait that spins first, an SPSC ring
 * of 8-byte slots (the limit of mproc's queue with one producer and one
 * consumer) and a ring of 8-byte slots under one process-shared mutex (the
 * MPMC limit).  bench-queue.c runs the two rings alternately with mproc's
 * queue, so that a burst of load hits both sides of a ratio alike. */
#ifndef MPROC_BENCH_RAW_H
#define MPROC_BENCH_RAW_H

#include "bench.h"
#include "futex.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 64

static inline void *shared_map(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("bench: mmap");
    exit(1);
  }
  return p;
}

static inline void wait_child(pid_t pid) {
  int st;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench: child failed\n");
    exit(1);
  }
}

/* Whether waiters may spin before sleeping, and for how long: mproc's
 * queue's budget (SPIN_NS of src/queue_ring.c). */
static bool spin_ok;
#define RAW_SPIN_NS 20000

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The sleepers of one futex word.  A sleeper registers in its own slot
 * the value it sleeps on; a waker that changed the word wakes only for
 * slots registered on a value the word no longer holds, clearing each such
 * slot itself (so one system call per sleep, however many changes follow)
 * and leaving those registered on the current value, which sleep for the
 * next change.  `n` counts the slots
 * set, so that a waker reads only it while nobody sleeps or everybody
 * asleep was already woken: one load on the fast path. */
#define RAW_SLEEPERS 16
#define RAW_ASLEEP ((uint64_t)1 << 32) /* a registered slot: this bit | value */
struct raw_wait {
  _Atomic uint32_t n;                  /* slots set */
  _Atomic uint64_t slot[RAW_SLEEPERS]; /* RAW_ASLEEP | value, or 0 */
};

/* Sleeps until *word differs from seen; `me` < RAW_SLEEPERS names the
 * sleeper's slot, used by no other process at the same time.  Spins up to
 * RAW_SPIN_NS first (when spin_ok), one pause instruction per look.  A Dekker pair: the sleeper
 * stores its slot before its last look at the word, the waker changes the word before it reads the
 * count and the slots (all sequentially consistent), so either the waker sees the registration or
 * the sleeper sees the change (and the futex re-checks the word in the kernel).
 *
 * (This once was one flag per word that a waker cleared with an exchange
 * before its wake-up.  That lost wake-ups: a sleeper that had already seen
 * the new value set the flag for the next change, the waker of the value it
 * saw cleared it and woke nobody (the sleeper was not in the kernel yet),
 * and the sleeper then slept with the flag down, so the next change woke
 * nobody either: both sides of a ring could end asleep with the word
 * changed.  A registration now carries its value, and only a waker of
 * another value may clear it.) */
static inline void await_change(_Atomic uint32_t *word, uint32_t seen, struct raw_wait *w, int me) {
  if (spin_ok) {
    int64_t until = now_ns() + RAW_SPIN_NS;
    do {
      for (int i = 0; i < 64; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen)
          return;
        mproc__cpu_relax();
      }
    } while (now_ns() < until);
  }
  /* Counted before the slot is set: a waker that reads n as 0 has seen
   * every earlier registration cleared. */
  atomic_fetch_add(&w->n, 1);
  atomic_store(&w->slot[me], RAW_ASLEEP | seen);
  while (atomic_load(word) == seen)
    mproc__futex_wait(word, seen, -1, true);
  /* Leaving: our slot, unless a waker cleared it (and counted it out). */
  uint64_t mine = RAW_ASLEEP | seen;
  if (atomic_compare_exchange_strong(&w->slot[me], &mine, 0))
    atomic_fetch_sub(&w->n, 1);
}

/* After a sequentially consistent change of *word.  A slot is judged
 * against the word as it is now, not against the value this waker wrote:
 * with several wakers, a sleeper may already have seen a later value than
 * a slow waker's, and clearing its slot would leave it asleep unregistered
 * for the next change. */
static inline void wake(_Atomic uint32_t *word, struct raw_wait *w) {
  if (atomic_load(&w->n) == 0)
    return;
  uint64_t now = RAW_ASLEEP | atomic_load(word);
  bool any = false;
  for (int i = 0; i < RAW_SLEEPERS; i++) {
    uint64_t a = atomic_load(&w->slot[i]);
    if (a != 0 && a != now && atomic_compare_exchange_strong(&w->slot[i], &a, 0)) {
      atomic_fetch_sub(&w->n, 1);
      any = true;
    }
  }
  if (any)
    mproc__futex_wake(word, INT32_MAX, true);
}

static inline void bump(_Atomic uint32_t *word, struct raw_wait *w) {
  atomic_fetch_add(word, 1); /* seq_cst: before the loads of wake() */
  wake(word, w);
}

/* ---- MPMC ring under one mutex ------------------------------------------ */

#define RAW_SLOTS ((uint32_t)1 << 17) /* 1 MiB of 8-byte slots, as the queue benches */

struct raw_mpmc {
  pthread_mutex_t m;
  uint32_t head, tail;                 /* guarded by m */
  _Alignas(LINE) _Atomic uint32_t put; /* bumped after every put (futex word) */
  struct raw_wait put_wait;            /* consumers asleep on put */
  _Alignas(LINE) _Atomic uint32_t got; /* bumped after every get (futex word) */
  struct raw_wait got_wait;            /* producers asleep on got */
  _Alignas(LINE) uint64_t slot[RAW_SLOTS];
};

/* n puts (producer) or n gets, each under the mutex; a full (empty) ring
 * waits for the next get (put).  `me` is the process's sleeper slot. */
static inline void raw_mpmc_side(struct raw_mpmc *r, long n, bool producer, int me) {
  _Atomic uint32_t *mine = producer ? &r->put : &r->got, *theirs = producer ? &r->got : &r->put;
  struct raw_wait *my_wait = producer ? &r->put_wait : &r->got_wait;
  struct raw_wait *their_wait = producer ? &r->got_wait : &r->put_wait;
  for (long i = 0; i < n;) {
    pthread_mutex_lock(&r->m);
    bool blocked = producer ? r->tail - r->head == RAW_SLOTS : r->tail == r->head;
    uint32_t seen = atomic_load(theirs);
    if (!blocked && producer)
      r->slot[r->tail++ % RAW_SLOTS] = (uint64_t)i;
    else if (!blocked)
      r->head++;
    pthread_mutex_unlock(&r->m);
    if (blocked) {
      await_change(theirs, seen, their_wait, me);
      continue;
    }
    bump(mine, my_wait);
    i++;
  }
}

/* k producer and k consumer processes (k <= 8) moving n 8-byte messages:
 * messages per second.  Waiters spin while the k processes of the side
 * they wait for fit the CPUs: 2+2 on 2 CPUs spin (measured a little faster
 * than sleeping at once), 8+8 do not (spinning would take the CPU from the
 * process waited for). */
static inline double raw_mpmc_rate(int k, long n) {
  struct raw_mpmc *r = shared_map(sizeof *r);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&r->m, &a);
  pthread_mutexattr_destroy(&a);
  spin_ok = k <= sysconf(_SC_NPROCESSORS_ONLN);
  pid_t pid[16];
  double t0 = bench_now_s();
  for (int i = 0; i < 2 * k; i++) {
    if ((pid[i] = fork()) == 0) {
      raw_mpmc_side(r, n / k, i >= k, i);
      _exit(0);
    }
  }
  for (int i = 0; i < 2 * k; i++)
    wait_child(pid[i]);
  double t = bench_now_s() - t0;
  pthread_mutex_destroy(&r->m);
  munmap(r, sizeof *r);
  return (double)(n / k * k) / t;
}

/* ---- SPSC ring ----------------------------------------------------------- */

struct raw_spsc {
  _Alignas(LINE) _Atomic uint32_t head; /* next slot to read, consumer-owned */
  struct raw_wait head_wait;            /* the producer asleep on a full ring */
  _Alignas(LINE) _Atomic uint32_t tail; /* next slot to write, producer-owned */
  struct raw_wait tail_wait;            /* the consumer asleep on an empty ring */
  _Alignas(LINE) uint64_t slot[RAW_SLOTS];
};

/* One producer process, the caller consuming n 8-byte messages: messages
 * per second.  Both sides spin before they sleep (with 2 CPUs or more). */
static inline double raw_spsc_rate(long n) {
  struct raw_spsc *r = shared_map(sizeof *r);
  spin_ok = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
  double t0 = bench_now_s();
  pid_t pid = fork();
  if (pid == 0) {
    /* Each side keeps its last look at the other's index and reads the
     * shared one again only when that look says full (empty): the usual
     * SPSC ring, which spares a cache-line transfer per message. */
    uint32_t tail = 0, head = 0;
    for (long i = 0; i < n; i++) {
      while (tail - head == RAW_SLOTS &&
             tail - (head = atomic_load_explicit(&r->head, memory_order_acquire)) == RAW_SLOTS)
        await_change(&r->head, head, &r->head_wait, 0);
      r->slot[tail % RAW_SLOTS] = (uint64_t)i;
      tail++;
      /* Publishing every message, as a queue must: the consumer may be
       * waiting for exactly this one. */
      atomic_store(&r->tail, tail);
      wake(&r->tail, &r->tail_wait);
    }
    _exit(0);
  }
  uint32_t head = 0, tail = 0;
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) {
    while (tail == head && (tail = atomic_load_explicit(&r->tail, memory_order_acquire)) == head)
      await_change(&r->tail, tail, &r->tail_wait, 0);
    sum += r->slot[head % RAW_SLOTS];
    head++;
    atomic_store(&r->head, head);
    wake(&r->head, &r->head_wait);
  }
  double t = bench_now_s() - t0;
  wait_child(pid);
  if (sum != (uint64_t)n * (uint64_t)(n - 1) / 2) {
    fprintf(stderr, "bench: raw spsc ring lost messages\n");
    exit(1);
  }
  munmap(r, sizeof *r);
  return (double)n / t;
}

#endif /* MPROC_BENCH_RAW_H */
