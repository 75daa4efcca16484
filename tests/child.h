/* Helper processes for the shared-memory and synchronization tests: started
 * with the internal fork core (mproc__spawn) and reaped through pidfds. */
#ifndef MPROC_TEST_CHILD_H
#define MPROC_TEST_CHILD_H

#include "harness.h"
#include "internal.h"

#include <poll.h>
#include <signal.h>

struct child {
  pid_t pid;
  int pidfd;
};

/* Start fn(arg) in a child. */
static inline struct child child_start(mproc__child_fn fn, void *arg) {
  struct child c = {0, -1};
  struct mproc__spawn_opts o = {.fn = fn, .arg = arg};
  mproc_assert_ok(mproc__spawn(&o, &c.pid, &c.pidfd));
  return c;
}

/* Reap the child (60 s bound: hang detection only) and return its
 * Python-style exit code. */
static inline int child_wait(struct child *c) {
  int code = -1000;
  mproc_assert_ok(mproc__reap(c->pidfd, &code, mproc__deadline(60000)));
  mproc_assert_ok(mproc__close(c->pidfd));
  c->pidfd = -1;
  return code;
}

/* SIGKILL the child and reap it. */
static inline void child_kill(struct child *c) {
  mproc_assert_ok(mproc__pidfd_kill(c->pidfd, SIGKILL));
  ck_assert_int_eq(child_wait(c), -SIGKILL);
}

/* Whether the child is still running (its pidfd is not readable yet). */
static inline int child_running(struct child *c) {
  return mproc__poll1(c->pidfd, POLLIN, mproc__deadline(0)) == MPROC_ETIMEDOUT;
}

#endif /* MPROC_TEST_CHILD_H */
