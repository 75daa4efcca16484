/* Barrier (src/sync_barrier.c) across processes: indices, action, timeout,
 * abort, reset, and a party killed before arriving. */
#include "sync-util.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

struct shared {
  mproc_barrier *b;
  _Atomic int actions;   /* times the action ran */
  _Atomic int seen_mask; /* bit i: some party got index i */
  int ready;
  pid_t victim;
};

static int count_action(void *arg) {
  struct shared *s = arg;
  atomic_fetch_add(&s->actions, 1);
  return 0;
}

static int fail_action(void *arg) {
  (void)arg;
  return -1;
}

static int party(void *arg) {
  struct shared *s = arg;
  for (int round = 0; round < 3; round++) {
    int idx = mproc_barrier_wait_action(s->b, count_action, s, 30000);
    if (idx < 0 || idx >= 3)
      return 10;
    atomic_fetch_or(&s->seen_mask, 1 << (idx + 3 * round));
  }
  return mproc_barrier_leave(s->b) == 0 ? 0 : 11;
}

START_TEST(test_barrier_rounds) {
  struct shared *s = anon_new(sizeof *s);
  mproc_assert_ok(mproc_barrier_new(&s->b, 3));
  ck_assert_int_eq(mproc_barrier_parties(s->b), 3);
  ck_assert_int_eq(mproc_barrier_n_waiting(s->b), 0);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 0);
  struct child c[3];
  for (int i = 0; i < 3; i++)
    c[i] = child_start(party, s);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(child_wait(&c[i]), 0);
  /* Every index 0..2 handed out exactly once per round, one action each. */
  ck_assert_int_eq(atomic_load(&s->seen_mask), 0777);
  ck_assert_int_eq(atomic_load(&s->actions), 3);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 0);
  mproc_assert_ok(mproc_barrier_free(s->b));
  munmap(s, sizeof *s);
}
END_TEST

static int wait_expect_broken(void *arg) {
  struct shared *s = arg;
  say_ready(s->ready);
  int r = mproc_barrier_wait(s->b, 600000);
  mproc_barrier_leave(s->b);
  return r == MPROC_EBROKEN ? 0 : 10;
}

static int wait_n(struct shared *s, int n) {
  int64_t deadline = mproc__deadline(30000);
  while (mproc_barrier_n_waiting(s->b) != n) {
    if (mproc_timeout_until(deadline) == 0)
      return 0;
    sched_yield();
  }
  return 1;
}

START_TEST(test_barrier_timeout_abort_reset) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_barrier_new(&s->b, 2));
  /* Alone at a barrier of 2: the timeout breaks it (as in Python). */
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_barrier_wait(s->b, 60), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 60);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 1);
  mproc_assert_err(mproc_barrier_wait(s->b, 0), MPROC_EBROKEN);
  mproc_assert_ok(mproc_barrier_reset(s->b));
  ck_assert_int_eq(mproc_barrier_broken(s->b), 0);

  /* abort wakes a waiter with MPROC_EBROKEN. */
  struct child c = child_start(wait_expect_broken, s);
  wait_byte(p[0]);
  ck_assert(wait_n(s, 1));
  mproc_assert_ok(mproc_barrier_abort(s->b));
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 1);
  mproc_assert_ok(mproc_barrier_reset(s->b));

  /* reset with a waiter: it gets MPROC_EBROKEN, the barrier is usable. */
  c = child_start(wait_expect_broken, s);
  wait_byte(p[0]);
  ck_assert(wait_n(s, 1));
  mproc_assert_ok(mproc_barrier_reset(s->b));
  ck_assert_int_eq(child_wait(&c), 0);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 0);
  ck_assert_int_eq(mproc_barrier_n_waiting(s->b), 0);

  /* A failing action breaks it for everyone. */
  c = child_start(wait_expect_broken, s);
  wait_byte(p[0]);
  ck_assert(wait_n(s, 1));
  mproc_assert_err(mproc_barrier_wait_action(s->b, fail_action, NULL, 30000), MPROC_EBROKEN);
  ck_assert_int_eq(child_wait(&c), 0);
  mproc_assert_ok(mproc_barrier_free(s->b));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

static int join_and_hang(void *arg) {
  struct shared *s = arg;
  if (mproc_barrier_join(s->b) != 0)
    return 10;
  say_ready(s->ready);
  for (;;)
    pause();
}

/* Kills the victim once `n` parties wait (so it dies while they wait). */
static int kill_when_waiting(void *arg) {
  struct shared *s = arg;
  if (!wait_n(s, 2))
    return 10;
  return kill(s->victim, SIGKILL) == 0 ? 0 : 11;
}

START_TEST(test_barrier_party_killed_while_others_wait) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_barrier_new(&s->b, 3));
  struct child victim = child_start(join_and_hang, s);
  wait_byte(p[0]);
  s->victim = victim.pid;
  struct child other = child_start(wait_expect_broken, s);
  wait_byte(p[0]);
  struct child killer = child_start(kill_when_waiting, s);
  /* We wait too (10-minute deadline): the victim's death must break the
   * barrier for both of us promptly (the reaps are bounded by 30 s). */
  mproc_assert_err(mproc_barrier_wait(s->b, 600000), MPROC_EBROKEN);
  ck_assert_int_eq(child_wait(&killer), 0);
  ck_assert_int_eq(child_wait(&victim), -SIGKILL);
  ck_assert_int_eq(child_wait(&other), 0);
  ck_assert_int_eq(mproc_barrier_broken(s->b), 1);
  /* Still broken for late arrivals, until reset forgets the dead party. */
  mproc_assert_err(mproc_barrier_wait(s->b, 0), MPROC_EBROKEN);
  mproc_assert_ok(mproc_barrier_reset(s->b));
  ck_assert_int_eq(mproc_barrier_broken(s->b), 0);
  mproc_assert_ok(mproc_barrier_free(s->b));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

START_TEST(test_barrier_party_killed_before_others_arrive) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  mproc_assert_ok(mproc_barrier_new(&s->b, 2));
  struct child victim = child_start(join_and_hang, s);
  wait_byte(p[0]);
  child_kill(&victim);
  /* Arriving after the death: broken at once, no waiting for a deadline. */
  mproc_assert_err(mproc_barrier_wait(s->b, 600000), MPROC_EBROKEN);
  mproc_assert_ok(mproc_barrier_reset(s->b));
  mproc_assert_ok(mproc_barrier_free(s->b));
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

/* A registered party died; this thread was then given its tid and pid
 * (faked by rewriting the recorded ids, as after a pid wrap or in another
 * pid namespace).  It must not be taken for that party: the party is dead
 * and has not arrived, so the barrier is broken at once. */
START_TEST(test_barrier_recycled_ids_are_not_the_party) {
  struct shared *s = anon_new(sizeof *s);
  int p[2];
  pipe_new(p);
  s->ready = p[1];
  size_t size = mproc_barrier_size(2);
  void *mem = anon_new(size);
  mproc_assert_ok(mproc_barrier_init(&s->b, mem, size, 2));
  struct child victim = child_start(join_and_hang, s);
  wait_byte(p[0]);
  child_kill(&victim);
  /* The victim is a single-threaded process: its tid is its pid. */
  ck_assert_int_ge(recycle_id(mem, size, victim.pid, gettid()), 2);
  mproc_assert_err(mproc_barrier_wait(s->b, 10000), MPROC_EBROKEN);
  mproc_assert_ok(mproc_barrier_reset(s->b));
  mproc_assert_ok(mproc_barrier_destroy(s->b));
  munmap(mem, size);
  pipe_close(p);
  munmap(s, sizeof *s);
}
END_TEST

START_TEST(test_barrier_errors) {
  mproc_barrier *b;
  _Alignas(64) static char store[MPROC_BARRIER_SIZE(4)];
  memset(store, 0, sizeof store);
  ck_assert_uint_eq(mproc_barrier_size(0), 0);
  ck_assert_uint_eq(mproc_barrier_size(MPROC_BARRIER_MAX_PARTIES + 1), 0);
  ck_assert_uint_eq(mproc_barrier_size(4), MPROC_BARRIER_SIZE(4));
  mproc_assert_err(mproc_barrier_new(&b, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_new(&b, MPROC_BARRIER_MAX_PARTIES + 1), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_new(NULL, 2), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_init(&b, store, MPROC_BARRIER_SIZE(4), 5), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_init(&b, store + 8, MPROC_BARRIER_SIZE(3), 4), MPROC_EINVAL);
  mproc_barrier *bogus = (mproc_barrier *)(void *)store;
  mproc_assert_err(mproc_barrier_wait(bogus, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_join(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_leave(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_abort(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_reset(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_parties(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_n_waiting(bogus), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_broken(NULL), MPROC_EINVAL);
  mproc_assert_ok(mproc_barrier_init(&b, store, sizeof store, 4));
  mproc_assert_err(mproc_barrier_init(&b, store, sizeof store, 4), MPROC_EBUSY);
  mproc_assert_err(mproc_barrier_wait(b, -4), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_leave(b), MPROC_ESTATE); /* not joined */
  mproc_assert_ok(mproc_barrier_join(b));
  mproc_assert_ok(mproc_barrier_join(b)); /* already a party */
  mproc_assert_ok(mproc_barrier_leave(b));
  mproc_assert_err(mproc_barrier_free(b), MPROC_EINVAL);
  mproc_assert_ok(mproc_barrier_join(b)); /* destroy releases our own slot */
  mproc_assert_ok(mproc_barrier_destroy(b));
  mproc_assert_err(mproc_barrier_destroy(b), MPROC_EINVAL);
  /* One party: wait returns at once with index 0 and runs the action. */
  struct shared s = {0};
  mproc_assert_ok(mproc_barrier_new(&b, 1));
  ck_assert_int_eq(mproc_barrier_wait_action(b, count_action, &s, 0), 0);
  ck_assert_int_eq(atomic_load(&s.actions), 1);
  mproc_assert_ok(mproc_barrier_free(b));
}
END_TEST

START_TEST(test_barrier_cycles) {
  int fds = mproc_test_count_fds(), maps = mproc_test_count_shared_maps();
  _Alignas(64) static char store[MPROC_BARRIER_SIZE(2)];
  for (int i = 0; i < 10000; i++) {
    mproc_barrier *b;
    mproc_assert_ok(mproc_barrier_new(&b, 1));
    ck_assert_int_eq(mproc_barrier_wait(b, 0), 0);
    mproc_assert_ok(mproc_barrier_free(b));
    mproc_assert_ok(mproc_barrier_init(&b, store, sizeof store, 2));
    mproc_assert_ok(mproc_barrier_join(b));
    mproc_assert_ok(mproc_barrier_destroy(b));
  }
  ck_assert_int_eq(mproc_test_count_fds(), fds);
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sync-barrier");
  TCase *tc = mproc_test_tcase(s, "barrier", 60);
  tcase_add_test(tc, test_barrier_rounds);
  tcase_add_test(tc, test_barrier_timeout_abort_reset);
  tcase_add_test(tc, test_barrier_party_killed_while_others_wait);
  tcase_add_test(tc, test_barrier_party_killed_before_others_arrive);
  tcase_add_test(tc, test_barrier_errors);
  tcase_add_test(tc, test_barrier_recycled_ids_are_not_the_party);
  tc = mproc_test_tcase(s, "cycles", 120);
  tcase_add_test(tc, test_barrier_cycles);
  return mproc_test_run(s);
}
