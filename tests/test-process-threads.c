/* ctest-labels: threads */
/* Process objects used from several threads at once (src/process.c): the
 * registry and the reap-exactly-once rule under concurrency. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static int64_t long_ms(void) { return mproc_test_scaled_ms(30000); }

static int ret_len(const void *arg, size_t len) {
  (void)arg;
  return (int)len;
}

static int sleep_forever(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  for (;;)
    pause();
  return 0;
}

/* Each thread runs its own start/join/free cycles. */
static void *cycles(void *arg) {
  intptr_t errors = 0;
  char bytes[8] = {0};
  size_t len = (size_t)(intptr_t)arg;
  for (int i = 0; i < 50; i++) {
    mproc_process *p;
    int code = -1;
    if (mproc_process_new(&p, ret_len, bytes, len, NULL) != 0 || mproc_process_start(p) != 0 ||
        mproc_process_join(p, long_ms()) != 0 || mproc_process_exitcode(p, &code) != 0 ||
        code != (int)len)
      errors++;
    mproc_process_free(p);
    if (mproc_active_children(NULL, 0) < 0)
      errors++;
  }
  return (void *)errors;
}

START_TEST(test_parallel_cycles) {
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, cycles, (void *)(i + 1)), 0);
  for (int i = 0; i < 4; i++) {
    void *errors;
    ck_assert_int_eq(pthread_join(t[i], &errors), 0);
    ck_assert_int_eq((intptr_t)errors, 0);
  }
  /* Under MPROC_START_METHOD=forkserver the server is a child too: not one
   * of the processes. */
  mproc_forkserver_stop();
  ck_assert_int_eq(mproc_test_count_children(), 0);
}
END_TEST

struct shared {
  mproc_process *p;
  int code; /* exit code seen by this thread */
  int result;
};

static void *join_it(void *arg) {
  struct shared *s = arg;
  s->result = mproc_process_join(s->p, long_ms());
  if (s->result == 0)
    s->result = mproc_process_exitcode(s->p, &s->code);
  return NULL;
}

static void *poll_it(void *arg) {
  struct shared *s = arg;
  int64_t deadline = mproc__deadline(long_ms());
  while (mproc_process_is_alive(s->p) == 1 && mproc_timeout_until(deadline) > 0)
    mproc_active_children(NULL, 0);
  s->result = mproc_process_exitcode(s->p, &s->code);
  return NULL;
}

/* Several threads join and poll one child: it is reaped exactly once and
 * every thread sees the same exit code. */
START_TEST(test_shared_object) {
  mproc_process *p;
  mproc_assert_ok(mproc_process_new(&p, sleep_forever, NULL, 0, NULL));
  mproc_assert_ok(mproc_process_start(p));
  struct shared s[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    s[i] = (struct shared){.p = p, .code = 0, .result = -1};
    ck_assert_int_eq(pthread_create(&t[i], NULL, i % 2 ? poll_it : join_it, &s[i]), 0);
  }
  mproc_assert_ok(mproc_process_kill(p, 0));
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    mproc_assert_ok(s[i].result);
    ck_assert_int_eq(s[i].code, -SIGKILL);
  }
  mproc_process_free(p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("process-threads");
  TCase *tc = mproc_test_tcase(s, "threads", 120);
  tcase_add_test(tc, test_parallel_cycles);
  tcase_add_test(tc, test_shared_object);
  return mproc_test_run(s);
}
