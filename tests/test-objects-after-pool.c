/* Objects made after a pool started (src/handoff.c, mproc_queue_from_fd,
 * mproc_shm_from_fd), handed to its tasks by fd and used there concurrently;
 * and the errors of handing them over.
 * ctest-labels: threads */
#include "harness.h"
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 60000 /* hang detection only: every wait ends on an event */

/* A pool of 2, made before any object of the test. */
static mproc_pool *pool_of_2(void) {
  struct mproc_pool_options o = {.workers = 2};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  return p;
}

/* Waits for f to succeed, then frees it. */
static void expect_ok(mproc_future *f) {
  const void *d;
  size_t len;
  mproc_assert_ok(mproc_future_result(f, &d, &len, WAIT_MS));
  mproc_future_free(f);
}

/* Submits n copies of fn(i) carrying `fds`, waits for every one to succeed. */
static void run_tasks(mproc_pool *p, mproc_task_fn fn, int n, const int *fds, size_t nfds) {
  mproc_future *f[128];
  ck_assert_int_le(n, 128);
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = nfds};
  for (int i = 0; i < n; i++)
    mproc_assert_ok(mproc_pool_submit_ex(p, fn, &i, sizeof i, &so, &f[i]));
  for (int i = 0; i < n; i++)
    expect_ok(f[i]);
}

/* The task's i-th fd, or -1. */
static int task_fd(mproc_task_ctx *ctx, int i) {
  const int *fds;
  int n = mproc_task_fds(ctx, &fds);
  return i < n ? fds[i] : -1;
}

/* ---- Value: incremented under its own lock by 100 tasks ------------------ */

static int task_value_inc(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  mproc_value *v;
  int r = mproc_value_from_fd(&v, task_fd(ctx, 0));
  if (r != 0)
    return r;
  mproc_rlock *l;
  if ((r = mproc_value_get_lock(v, &l)) == 0 && (r = mproc_rlock_acquire(l, WAIT_MS)) == 0) {
    int64_t *x = mproc_value_ptr(v);
    int64_t seen = *x;
    sched_yield(); /* a lost update shows without the lock */
    *x = seen + 1;
    r = mproc_rlock_release(l);
  }
  int f = mproc_value_free(v);
  return r != 0 ? r : f;
}

START_TEST(test_value_made_after_pool) {
  mproc_pool *p = pool_of_2();
  mproc_value *v;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT64, NULL, NULL));
  int fd = mproc_object_fd(v);
  ck_assert_int_ge(fd, 0);
  run_tasks(p, task_value_inc, 100, &fd, 1);
  int64_t x = 0;
  mproc_assert_ok(mproc_value_get(v, 0, 1, &x, 0));
  ck_assert_int_eq(x, 100);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_value_free(v));
}
END_TEST

/* ---- every sync kind in one task, 40 tasks --------------------------------- */

enum { K_LOCK, K_RLOCK, K_SEM, K_EVENT, K_COND, K_COUNTERS, K_N };

/* Read, yield, write: only exclusion makes the count exact. */
static void bump(int64_t *c) {
  int64_t seen = *c;
  sched_yield();
  *c = seen + 1;
}

static int use_all_kinds(mproc_lock *l, mproc_rlock *rl, mproc_sem *s, mproc_event *e,
                         mproc_cond *c, mproc_value *counters) {
  int64_t *n = mproc_value_ptr(counters);
  int r = mproc_event_wait(e, WAIT_MS); /* set by the parent after submitting */
  if (r == 0 && (r = mproc_lock_acquire(l, WAIT_MS)) == 0) {
    bump(&n[0]);
    r = mproc_lock_release(l);
  }
  if (r == 0 && (r = mproc_rlock_acquire(rl, WAIT_MS)) == 0 &&
      (r = mproc_rlock_acquire(rl, WAIT_MS)) == 0) {
    bump(&n[1]);
    mproc_rlock_release(rl);
    r = mproc_rlock_release(rl);
  }
  if (r == 0 && (r = mproc_sem_acquire(s, WAIT_MS)) == 0) {
    bump(&n[2]);
    r = mproc_sem_release(s);
  }
  if (r == 0 && (r = mproc_cond_acquire(c, WAIT_MS)) == 0) {
    bump(&n[3]);
    mproc_cond_notify_all(c);
    r = mproc_cond_release(c);
  }
  return r;
}

static int task_all_kinds(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  mproc_lock *l = NULL;
  mproc_rlock *rl = NULL;
  mproc_sem *s = NULL;
  mproc_event *e = NULL;
  mproc_cond *c = NULL;
  mproc_value *counters = NULL;
  int r = mproc_lock_from_fd(&l, task_fd(ctx, K_LOCK));
  if (r == 0)
    r = mproc_rlock_from_fd(&rl, task_fd(ctx, K_RLOCK));
  if (r == 0)
    r = mproc_sem_from_fd(&s, task_fd(ctx, K_SEM));
  if (r == 0)
    r = mproc_event_from_fd(&e, task_fd(ctx, K_EVENT));
  if (r == 0)
    r = mproc_cond_from_fd(&c, task_fd(ctx, K_COND));
  if (r == 0)
    r = mproc_value_from_fd(&counters, task_fd(ctx, K_COUNTERS));
  if (r == 0)
    r = use_all_kinds(l, rl, s, e, c, counters);
  /* Release what was mapped, whatever failed. */
  if (l != NULL)
    mproc_lock_free(l);
  if (rl != NULL)
    mproc_rlock_free(rl);
  if (s != NULL)
    mproc_sem_free(s);
  if (e != NULL)
    mproc_event_free(e);
  if (c != NULL)
    mproc_cond_free(c);
  if (counters != NULL)
    mproc_value_free(counters);
  return r;
}

struct all_kinds {
  mproc_lock *l;
  mproc_rlock *rl;
  mproc_sem *s;
  mproc_event *e;
  mproc_cond *c;
  mproc_value *counters;
};

static int reached(void *arg) { return ((int64_t *)arg)[3] >= 40; }

START_TEST(test_sync_kinds_made_after_pool) {
  mproc_pool *p = pool_of_2();
  struct all_kinds k;
  mproc_assert_ok(mproc_lock_new(&k.l));
  mproc_assert_ok(mproc_rlock_new(&k.rl));
  mproc_assert_ok(mproc_sem_new(&k.s, 1, NULL));
  mproc_assert_ok(mproc_event_new(&k.e));
  mproc_assert_ok(mproc_cond_new(&k.c));
  struct mproc_value_options raw = {.flags = MPROC_VALUE_RAW};
  mproc_assert_ok(mproc_array_new(&k.counters, MPROC_TYPE_INT64, 4, NULL, &raw));
  int fds[K_N] = {mproc_object_fd(k.l), mproc_object_fd(k.rl), mproc_object_fd(k.s),
                  mproc_object_fd(k.e), mproc_object_fd(k.c),  mproc_object_fd(k.counters)};
  for (int i = 0; i < K_N; i++)
    ck_assert_int_ge(fds[i], 0);
  mproc_future *f[40];
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = K_N};
  for (int i = 0; i < 40; i++)
    mproc_assert_ok(mproc_pool_submit_ex(p, task_all_kinds, NULL, 0, &so, &f[i]));
  mproc_assert_ok(mproc_event_set(k.e));
  /* The condition's notifications tell the parent when all 40 are through. */
  int64_t *n = mproc_value_ptr(k.counters);
  mproc_assert_ok(mproc_cond_acquire(k.c, WAIT_MS));
  mproc_assert_ok(mproc_cond_wait_for(k.c, reached, n, WAIT_MS));
  mproc_assert_ok(mproc_cond_release(k.c));
  for (int i = 0; i < 40; i++)
    expect_ok(f[i]);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(n[i], 40);
  ck_assert_int_eq(mproc_sem_value(k.s), 1);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_lock_free(k.l));
  mproc_assert_ok(mproc_rlock_free(k.rl));
  mproc_assert_ok(mproc_sem_free(k.s));
  mproc_assert_ok(mproc_event_free(k.e));
  mproc_assert_ok(mproc_cond_free(k.c));
  mproc_assert_ok(mproc_value_free(k.counters));
}
END_TEST

/* ---- Barrier: the parent and two tasks meet, three rounds ------------------ */

static int task_barrier(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  mproc_barrier *b;
  int r = mproc_barrier_from_fd(&b, task_fd(ctx, 0));
  if (r != 0)
    return r;
  for (int round = 0; round < 3 && r >= 0; round++)
    r = mproc_barrier_wait(b, WAIT_MS);
  int f = mproc_barrier_free(b); /* the task's party leaves */
  return r < 0 ? r : f;
}

START_TEST(test_barrier_made_after_pool) {
  mproc_pool *p = pool_of_2();
  mproc_barrier *b;
  mproc_assert_ok(mproc_barrier_new(&b, 3));
  int fd = mproc_object_fd(b);
  mproc_future *f[2];
  struct mproc_submit_options so = {.retries = -1, .fds = &fd, .nfds = 1};
  for (int i = 0; i < 2; i++)
    mproc_assert_ok(mproc_pool_submit_ex(p, task_barrier, NULL, 0, &so, &f[i]));
  for (int round = 0; round < 3; round++)
    ck_assert_int_ge(mproc_barrier_wait(b, WAIT_MS), 0);
  for (int i = 0; i < 2; i++)
    expect_ok(f[i]);
  ck_assert_int_eq(mproc_barrier_broken(b), 0);
  mproc_assert_ok(mproc_barrier_leave(b));
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_barrier_free(b));
}
END_TEST

/* ---- Queue: fed by 50 tasks, drained by the parent ------------------------- */

static int task_queue_put(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  mproc_queue *q;
  int r = mproc_queue_from_fd(&q, task_fd(ctx, 0), MPROC_QUEUE_PRODUCER);
  if (r != 0)
    return r;
  r = mproc_queue_put(q, arg, sizeof(int), WAIT_MS);
  int f = mproc_queue_free(q); /* gives the producer role up */
  return r != 0 ? r : f;
}

START_TEST(test_queue_made_after_pool) {
  mproc_pool *p = pool_of_2();
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  int fd = mproc_queue_fd(q);
  ck_assert_int_ge(fd, 0);
  run_tasks(p, task_queue_put, 50, &fd, 1);
  int seen[50] = {0};
  for (int i = 0; i < 50; i++) {
    int x;
    size_t len;
    mproc_assert_ok(mproc_queue_get(q, &x, sizeof x, &len, WAIT_MS));
    ck_assert_uint_eq(len, sizeof x);
    ck_assert(x >= 0 && x < 50);
    seen[x]++;
  }
  for (int i = 0; i < 50; i++)
    ck_assert_int_eq(seen[i], 1);
  /* Every task gave its role up: only this process takes part. */
  struct mproc_queue_stats st;
  mproc_assert_ok(mproc_queue_stats(q, &st));
  ck_assert_uint_eq(st.producers, 1);
  ck_assert_uint_eq(st.consumers, 1);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* ---- shm block: each task writes its own slot ------------------------------ */

static int task_shm_write(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  mproc_shm *m;
  int r = mproc_shm_from_fd(&m, task_fd(ctx, 0));
  if (r != 0)
    return r;
  int i = *(const int *)arg;
  ((int *)mproc_shm_addr(m))[i] = i * i;
  return mproc_shm_free(m);
}

START_TEST(test_shm_made_after_pool) {
  mproc_pool *p = pool_of_2();
  mproc_shm *m;
  mproc_assert_ok(mproc_shm_new(&m, 64 * sizeof(int)));
  int fd = mproc_shm_fd(m);
  run_tasks(p, task_shm_write, 64, &fd, 1);
  for (int i = 0; i < 64; i++)
    ck_assert_int_eq(((int *)mproc_shm_addr(m))[i], i * i);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_shm_free(m));
}
END_TEST

/* ---- what a task leaves behind in its worker -------------------------------- */

/* What the worker holds: its pid, open descriptors, and memfd mappings
 * (every object, queue and block handed by fd is one). */
struct census {
  int pid, fds, memfd_maps;
};

static int task_census(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  struct census c = {(int)getpid(), -1, 0};
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -errno;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    c.fds += e->d_name[0] != '.';
  closedir(d); /* its own descriptor was counted: -1 above */
  FILE *m = fopen("/proc/self/maps", "re");
  if (m == NULL)
    return -errno;
  char line[512];
  while (fgets(line, sizeof line, m) != NULL)
    c.memfd_maps += strstr(line, "/memfd:") != NULL;
  fclose(m);
  return mproc_task_return(ctx, &c, sizeof c);
}

static struct census census_of(mproc_pool *p) {
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_census, NULL, 0, &f));
  const void *d;
  size_t len;
  mproc_assert_ok(mproc_future_result(f, &d, &len, WAIT_MS));
  ck_assert_uint_eq(len, sizeof(struct census));
  struct census c;
  memcpy(&c, d, sizeof c);
  mproc_future_free(f);
  return c;
}

enum { H_LOCK, H_RLOCK, H_SEM, H_EVENT, H_COND, H_BARRIER, H_VALUE, H_QUEUE, H_SHM, H_N };

/* Maps every kind from its fd, uses it a little and releases it; with a
 * non-zero argument it forgets to release the Lock. */
static int task_every_kind(const void *arg, size_t len, mproc_task_ctx *ctx) {
  bool forget = len == sizeof(int) && *(const int *)arg != 0;
  mproc_lock *l = NULL;
  mproc_rlock *rl = NULL;
  mproc_sem *s = NULL;
  mproc_event *e = NULL;
  mproc_cond *c = NULL;
  mproc_barrier *b = NULL;
  mproc_value *v = NULL;
  mproc_queue *q = NULL;
  mproc_shm *m = NULL;
  int r = mproc_lock_from_fd(&l, task_fd(ctx, H_LOCK));
  if (r == 0)
    r = mproc_rlock_from_fd(&rl, task_fd(ctx, H_RLOCK));
  if (r == 0)
    r = mproc_sem_from_fd(&s, task_fd(ctx, H_SEM));
  if (r == 0)
    r = mproc_event_from_fd(&e, task_fd(ctx, H_EVENT));
  if (r == 0)
    r = mproc_cond_from_fd(&c, task_fd(ctx, H_COND));
  if (r == 0)
    r = mproc_barrier_from_fd(&b, task_fd(ctx, H_BARRIER));
  if (r == 0)
    r = mproc_value_from_fd(&v, task_fd(ctx, H_VALUE));
  if (r == 0)
    r = mproc_queue_from_fd(&q, task_fd(ctx, H_QUEUE), MPROC_QUEUE_PRODUCER);
  if (r == 0)
    r = mproc_shm_from_fd(&m, task_fd(ctx, H_SHM));
  if (r == 0 && (r = mproc_lock_acquire(l, WAIT_MS)) == 0) {
    int64_t x = 0;
    r = mproc_value_get(v, 0, 1, &x, WAIT_MS);
    x++;
    if (r == 0)
      r = mproc_value_set(v, 0, 1, &x, WAIT_MS);
    ((int *)mproc_shm_addr(m))[0]++;
    mproc_lock_release(l);
  }
  if (r == 0)
    r = mproc_queue_put(q, "x", 1, WAIT_MS);
  if (l != NULL && !forget)
    mproc_lock_free(l);
  mproc_rlock_free(rl);
  mproc_sem_free(s);
  mproc_event_free(e);
  mproc_cond_free(c);
  mproc_barrier_free(b);
  mproc_value_free(v);
  mproc_queue_free(q);
  mproc_shm_free(m);
  return r;
}

/* A task that releases what it mapped leaves nothing in its worker, however
 * many run there; one that forgets a handle leaves its mapping (never a
 * descriptor: the pool closes the task's fds when the task ends). */
START_TEST(test_tasks_leave_no_fds_or_mappings_in_the_worker) {
  struct mproc_pool_options po = {.workers = 1};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  mproc_lock *l;
  mproc_rlock *rl;
  mproc_sem *s;
  mproc_event *e;
  mproc_cond *c;
  mproc_barrier *b;
  mproc_value *v;
  mproc_queue *q;
  mproc_shm *m;
  mproc_assert_ok(mproc_lock_new(&l));
  mproc_assert_ok(mproc_rlock_new(&rl));
  mproc_assert_ok(mproc_sem_new(&s, 1, NULL));
  mproc_assert_ok(mproc_event_new(&e));
  mproc_assert_ok(mproc_cond_new(&c));
  mproc_assert_ok(mproc_barrier_new(&b, 1));
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT64, NULL, NULL));
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_assert_ok(mproc_shm_new(&m, 4096));
  int fds[H_N] = {mproc_object_fd(l), mproc_object_fd(rl), mproc_object_fd(s),
                  mproc_object_fd(e), mproc_object_fd(c),  mproc_object_fd(b),
                  mproc_object_fd(v), mproc_queue_fd(q),   mproc_shm_fd(m)};
  for (int i = 0; i < H_N; i++)
    ck_assert_int_ge(fds[i], 0);
  struct census before = census_of(p);
  int forget = 0;
  struct mproc_submit_options so = {.retries = -1, .fds = fds, .nfds = H_N};
  for (int i = 0; i < 60; i++) {
    mproc_future *f;
    mproc_assert_ok(mproc_pool_submit_ex(p, task_every_kind, &forget, sizeof forget, &so, &f));
    expect_ok(f);
    char x;
    size_t len;
    mproc_assert_ok(mproc_queue_get(q, &x, 1, &len, WAIT_MS));
  }
  struct census after = census_of(p);
  ck_assert_int_eq(after.pid, before.pid); /* the same worker ran them all */
  ck_assert_int_eq(after.fds, before.fds);
  ck_assert_int_eq(after.memfd_maps, before.memfd_maps);
  int64_t n = 0;
  mproc_assert_ok(mproc_value_get(v, 0, 1, &n, WAIT_MS));
  ck_assert_int_eq(n, 60);
  ck_assert_int_eq(((int *)mproc_shm_addr(m))[0], 60);
  /* A forgotten Lock handle: one mapping more in the worker, no descriptor. */
  forget = 1;
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit_ex(p, task_every_kind, &forget, sizeof forget, &so, &f));
  expect_ok(f);
  after = census_of(p);
  ck_assert_int_eq(after.pid, before.pid);
  ck_assert_int_eq(after.fds, before.fds);
  ck_assert_int_eq(after.memfd_maps, before.memfd_maps + 1);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_lock_free(l));
  mproc_assert_ok(mproc_rlock_free(rl));
  mproc_assert_ok(mproc_sem_free(s));
  mproc_assert_ok(mproc_event_free(e));
  mproc_assert_ok(mproc_cond_free(c));
  mproc_assert_ok(mproc_barrier_free(b));
  mproc_assert_ok(mproc_value_free(v));
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_shm_free(m));
}
END_TEST

/* ---- errors ------------------------------------------------------------------ */

START_TEST(test_from_fd_errors) {
  mproc_lock *l, *l2;
  mproc_sem *s;
  mproc_value *v, *v2;
  mproc_barrier *b, *b2;
  mproc_queue *q;
  mproc_assert_ok(mproc_lock_new(&l));
  int lfd = mproc_object_fd(l);
  /* Bad arguments, an fd of another kind, an fd of no object. */
  mproc_assert_err(mproc_lock_from_fd(NULL, lfd), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_from_fd(&l2, -1), MPROC_EINVAL);
  mproc_assert_err(mproc_sem_from_fd(&s, lfd), MPROC_EINVAL);
  mproc_assert_err(mproc_value_from_fd(&v, lfd), MPROC_EINVAL);
  /* Another kind of object is no queue (documented MPROC_ECORRUPT). */
  mproc_assert_err(mproc_queue_from_fd(&q, lfd, 0), MPROC_ECORRUPT);
  mproc_assert_err(mproc_queue_from_fd(&q, lfd, 0x100), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_from_fd(NULL, lfd, 0), MPROC_EINVAL);
  int pfd[2];
  ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
  mproc_assert_err(mproc_lock_from_fd(&l2, pfd[0]), MPROC_EINVAL);
  mproc_assert_err(mproc_queue_from_fd(&q, pfd[0], 0), MPROC_EINVAL);
  close(pfd[0]);
  close(pfd[1]);
  mproc_assert_err(mproc_lock_from_fd(&l2, 1000000), -EBADF);

  /* A second mapping in the same process is a separate handle: freeing it
   * leaves the object alive; held, it refuses to go; destroy is not its way. */
  mproc_assert_ok(mproc_lock_from_fd(&l2, lfd));
  ck_assert_ptr_ne(l2, l);
  mproc_assert_ok(mproc_lock_acquire(l2, 0));
  mproc_assert_err(mproc_lock_acquire(l, 0), MPROC_EBUSY); /* same lock, same thread */
  mproc_assert_err(mproc_lock_free(l2), MPROC_EBUSY);
  mproc_assert_err(mproc_lock_destroy(l2), MPROC_EINVAL);
  mproc_assert_err(mproc_object_fd(l2), MPROC_ESTATE);
  mproc_assert_ok(mproc_lock_release(l2));
  mproc_assert_ok(mproc_lock_free(l2));
  mproc_assert_ok(mproc_lock_acquire(l, 0));
  mproc_assert_ok(mproc_lock_release(l));
  mproc_assert_ok(mproc_lock_free(l));

  /* mproc_object_fd: NULL, misaligned, made with _init, already freed. */
  mproc_assert_err(mproc_object_fd(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_object_fd((char *)&lfd + 1), MPROC_EINVAL);
  _Alignas(64) static char store[MPROC_LOCK_SIZE];
  mproc_assert_ok(mproc_lock_init(&l, store, sizeof store));
  mproc_assert_err(mproc_object_fd(l), MPROC_ESTATE);
  mproc_assert_ok(mproc_lock_destroy(l));
  mproc_assert_err(mproc_object_fd(l2), MPROC_ESTATE);

  /* Damaged headers: a Value whose count does not fit its memory, a barrier
   * with no parties. */
  mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_INT32, 8, NULL, NULL));
  uint64_t *count = (uint64_t *)((char *)v + 16), saved = *count;
  *count = 1000;
  mproc_assert_err(mproc_value_from_fd(&v2, mproc_object_fd(v)), MPROC_ECORRUPT);
  *count = saved;
  mproc_assert_ok(mproc_value_from_fd(&v2, mproc_object_fd(v)));
  ck_assert_uint_eq(mproc_value_count(v2), 8);
  mproc_assert_ok(mproc_value_free(v2));
  mproc_assert_ok(mproc_value_free(v));
  mproc_assert_ok(mproc_barrier_new(&b, 2));
  uint32_t *parties = (uint32_t *)((char *)b + 8);
  ck_assert_uint_eq(*parties, 2);
  *parties = 0;
  mproc_assert_err(mproc_barrier_from_fd(&b2, mproc_object_fd(b)), MPROC_ECORRUPT);
  *parties = 2;
  mproc_assert_ok(mproc_barrier_free(b));

  /* Queues: only an anonymous queue made here has an fd to hand. */
  mproc_assert_err(mproc_queue_fd(NULL), MPROC_EINVAL);
  char name[64];
  struct mproc_queue_options o = {.name = mproc_test_shm_name(name, sizeof name, "q")};
  mproc_assert_ok(mproc_queue_new(&q, &o));
  mproc_assert_err(mproc_queue_fd(q), MPROC_ESTATE);
  mproc_assert_ok(mproc_queue_free(q));
  mproc_queue *q2;
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  mproc_assert_ok(mproc_queue_from_fd(&q2, mproc_queue_fd(q), MPROC_QUEUE_CONSUMER));
  mproc_assert_err(mproc_queue_fd(q2), MPROC_ESTATE);
  mproc_assert_ok(mproc_queue_put(q, "x", 1, 0));
  char c;
  size_t len;
  mproc_assert_ok(mproc_queue_get(q2, &c, 1, &len, 0));
  ck_assert_int_eq(c, 'x');
  mproc_assert_ok(mproc_queue_free(q2));
  mproc_assert_ok(mproc_queue_free(q));
}
END_TEST

/* ---- a forked child inherits the objects, not their fds -------------------- */

/* In a child of a plain fork: the objects work (inherited mappings), their
 * fds were closed at the fork, and there is nothing to hand on. */
static int child_checks(mproc_lock *l, int lfd, mproc_queue *q, int qfd) {
  if (fcntl(lfd, F_GETFD) != -1 || fcntl(qfd, F_GETFD) != -1)
    return 1;
  if (mproc_object_fd(l) != MPROC_ESTATE || mproc_queue_fd(q) != MPROC_ESTATE)
    return 2;
  if (mproc_lock_acquire(l, 0) != 0 || mproc_lock_release(l) != 0)
    return 3;
  return mproc_queue_put(q, "c", 1, 0) == 0 ? 0 : 4;
}

START_TEST(test_fork_child_gets_no_fds) {
  mproc_lock *l;
  mproc_queue *q;
  mproc_assert_ok(mproc_lock_new(&l));
  mproc_assert_ok(mproc_queue_new(&q, NULL));
  int lfd = mproc_object_fd(l), qfd = mproc_queue_fd(q);
  ck_assert_int_ge(lfd, 0);
  ck_assert_int_ge(qfd, 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(child_checks(l, lfd, q, qfd));
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  /* The parent's fds are intact. */
  ck_assert_int_eq(mproc_object_fd(l), lfd);
  ck_assert_int_ne(fcntl(lfd, F_GETFD), -1);
  ck_assert_int_ne(fcntl(qfd, F_GETFD), -1);
  char c;
  size_t len;
  mproc_assert_ok(mproc_queue_get(q, &c, 1, &len, WAIT_MS));
  mproc_assert_ok(mproc_queue_free(q));
  mproc_assert_ok(mproc_lock_free(l));
}
END_TEST

/* ---- objects never take more than a quarter of the descriptor limit ------- */

START_TEST(test_objects_leave_fds_to_the_program) {
  struct rlimit saved, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
  low = saved;
  low.rlim_cur = 256;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  mproc_lock *l[100];
  int with_fd = 0;
  for (int i = 0; i < 100; i++) {
    mproc_assert_ok(mproc_lock_new(&l[i]));
    with_fd += mproc_object_fd(l[i]) >= 0;
  }
  ck_assert_int_eq(with_fd, 64); /* 256 / 4: the rest work without one */
  mproc_assert_err(mproc_object_fd(l[99]), MPROC_ESTATE);
  for (int i = 0; i < 100; i++) {
    mproc_assert_ok(mproc_lock_acquire(l[i], 0));
    mproc_assert_ok(mproc_lock_release(l[i]));
    mproc_assert_ok(mproc_lock_free(l[i]));
  }
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
}
END_TEST

/* ---- misuse: the address of an object the process does not have ---------- */

/* Python's "should only be shared through inheritance": the task got the
 * parent's address of a Value made after the worker was forked. */
static int task_value_by_address(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  (void)ctx;
  mproc_value *v = *(mproc_value *const *)arg;
  int x;
  return mproc_value_get(v, 0, 1, &x, 0);
}

START_TEST(test_foreign_address_is_an_error) {
  /* In this process: an address no mapping covers any more. */
  void *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(gone, MAP_FAILED);
  munmap(gone, 4096);
  int x;
  mproc_assert_err(mproc_value_get(gone, 0, 1, &x, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_value_set(gone, 0, 1, &x, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_value_free(gone), MPROC_EINVAL);
  mproc_assert_err(mproc_lock_free(gone), MPROC_EINVAL);
  mproc_assert_err(mproc_barrier_destroy(gone), MPROC_EINVAL);
  mproc_assert_err(mproc_object_fd(gone), MPROC_ESTATE);

  /* In a worker forked before the Value: an error, not a crashed worker. */
  mproc_pool *p = pool_of_2();
  mproc_value *v;
  mproc_assert_ok(mproc_value_new(&v, MPROC_TYPE_INT32, NULL, NULL));
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_value_by_address, &v, sizeof v, &f));
  const void *d;
  size_t len;
  mproc_assert_err(mproc_future_result(f, &d, &len, WAIT_MS), MPROC_ETASK);
  struct mproc_task_error err;
  mproc_assert_ok(mproc_future_error(f, &err));
  ck_assert_int_eq(err.task_code, MPROC_EINVAL); /* the task's own code: no crash */
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc_value_free(v));
}
END_TEST

int main(void) {
  Suite *s = suite_create("objects-after-pool");
  TCase *tc = mproc_test_tcase(s, "handed", 120);
  tcase_add_test(tc, test_value_made_after_pool);
  tcase_add_test(tc, test_sync_kinds_made_after_pool);
  tcase_add_test(tc, test_barrier_made_after_pool);
  tcase_add_test(tc, test_queue_made_after_pool);
  tcase_add_test(tc, test_shm_made_after_pool);
  tcase_add_test(tc, test_tasks_leave_no_fds_or_mappings_in_the_worker);
  tc = mproc_test_tcase(s, "errors", 60);
  tcase_add_test(tc, test_from_fd_errors);
  tcase_add_test(tc, test_foreign_address_is_an_error);
  tcase_add_test(tc, test_fork_child_gets_no_fds);
  tcase_add_test(tc, test_objects_leave_fds_to_the_program);
  return mproc_test_run(s);
}
