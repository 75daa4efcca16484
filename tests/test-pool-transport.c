/* The transport seam, shown: a tiny transport that carries tasks over a
 * socketpair per worker (no shared rings, no arena), plugged into the pool
 * by one assignment, runs the pool's promises that do not need an arena:
 * results, task errors, worker deaths, timeouts, cancel, replacement.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"
#include "task_ctx.h"

#include <poll.h>
#include <sys/socket.h>

/* ---- the wire: one request, one reply per task, in order ------------------ */

enum { SOCK_RING = 4, SOCK_MAX = 4096 };

struct sock_req {
  uint64_t fn;
  uint64_t len;
  unsigned char arg[SOCK_MAX];
};

struct sock_rep {
  int32_t code; /* 0, or the task's failure code */
  uint32_t len; /* result bytes, or message bytes when code != 0 */
  unsigned char data[SOCK_MAX];
};

/* ---- worker side ---------------------------------------------------------- */

struct sock_ctx {
  mproc_task_ctx base;
  struct sock_rep *rep;
};

static int sock_result_buf(mproc_task_ctx *base, size_t len, void **buf) {
  struct sock_ctx *c = (struct sock_ctx *)base;
  c->rep->len = 0;
  if (len > SOCK_MAX)
    return -EMSGSIZE;
  c->rep->len = (uint32_t)len;
  *buf = c->rep->data;
  return 0;
}

static void sock_fail(mproc_task_ctx *base, int code, const char *msg) {
  struct sock_ctx *c = (struct sock_ctx *)base;
  c->rep->code = code;
  c->rep->len = (uint32_t)snprintf((char *)c->rep->data, SOCK_MAX, "%s", msg) + 1;
}

static const struct mproc__task_ops sock_task_ops = {.result_buf = sock_result_buf,
                                                     .fail = sock_fail};

struct sock_worker {
  int sock, efd;
};

static int sock_worker_main(void *arg) {
  struct sock_worker *w = arg;
  static struct sock_req req;
  static struct sock_rep rep;
  for (;;) {
    ssize_t n = recv(w->sock, &req, sizeof req, 0);
    if (n <= 0)
      return n == 0 ? 0 : 1; /* the pool closed its end: stop */
    memset(&rep, 0, offsetof(struct sock_rep, data));
    struct sock_ctx c = {.base = {.ops = &sock_task_ops}, .rep = &rep};
    mproc_task_fn fn = (mproc_task_fn)mproc__taskfn_addr(
        (struct mproc__taskfn){.kind = MPROC__FN_ADDR, .addr = req.fn});
    int r = mproc__task_end(&c.base, fn(req.arg, req.len, &c.base));
    if (r != 0 && !c.base.failed)
      sock_fail(&c.base, r, mproc_strerror(r));
    size_t len = offsetof(struct sock_rep, data) + rep.len;
    if (send(w->sock, &rep, len, MSG_NOSIGNAL) != (ssize_t)len)
      return 2;
    uint64_t one = 1;
    ssize_t wr = write(w->efd, &one, sizeof one); /* wake the manager */
    (void)wr;
  }
}

/* ---- parent side ---------------------------------------------------------- */

struct sock_slot {
  int sock;
  struct mproc__task *fifo[SOCK_RING]; /* sent, in order */
  uint64_t head, tail;
  int64_t since; /* when the oldest started (it runs as soon as it is oldest) */
};

static struct sock_slot *slot_of(struct mproc_pool *p, int i) {
  return &((struct sock_slot *)p->tp_state)[i];
}

static void sock_fini(struct mproc_pool *p) {
  struct sock_slot *s = p->tp_state;
  for (int i = 0; s != NULL && i < p->nworkers; i++)
    mproc__close(s[i].sock);
  free(s);
  p->tp_state = NULL;
}

static int sock_init(struct mproc_pool *p) {
  if (p->opts.initializer != NULL)
    return MPROC_ENOTSUP;
  struct sock_slot *s = calloc((size_t)p->nworkers, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  for (int i = 0; i < p->nworkers; i++)
    s[i].sock = -1;
  p->tp_state = s;
  return 0;
}

static int sock_start_worker(struct mproc_pool *p, int i) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  mproc__fd_register(sv[0]);
  mproc__fd_register(sv[1]);
  struct sock_worker w = {.sock = sv[1], .efd = p->efd};
  int keep[2] = {sv[1], p->efd};
  struct mproc__spawn_opts so = {.fn = sock_worker_main,
                                 .arg = &w,
                                 .keep_fds = keep,
                                 .nkeep = 2,
                                 .pdeathsig = SIGKILL,
                                 .flags = MPROC__SPAWN_NEWPGRP | MPROC__SPAWN_NOFLUSH};
  int r = mproc__spawn(&so, &p->slots[i].pid, &p->slots[i].pidfd);
  mproc__close(sv[1]);
  if (r != 0) {
    mproc__close(sv[0]);
    p->slots[i].pid = 0;
    p->slots[i].pidfd = -1;
    return r;
  }
  slot_of(p, i)->sock = sv[0];
  return 0;
}

static int sock_send_task(struct mproc_pool *p, int i, struct mproc__task *t) {
  struct sock_slot *s = slot_of(p, i);
  if (s->head - s->tail >= SOCK_RING)
    return -EAGAIN;
  if (t->kind != MPROC__K_CALL || t->arg_fd >= 0 || t->nfds > 0)
    return MPROC_ENOTSUP;
  static struct sock_req req;
  req.fn = t->fn.addr;
  req.len = t->arg_len;
  if (t->arg_len > 0)
    memcpy(req.arg, t->arg, t->arg_len);
  size_t len = offsetof(struct sock_req, arg) + t->arg_len;
  if (send(s->sock, &req, len, MSG_NOSIGNAL) != (ssize_t)len)
    return -errno;
  if (s->head == s->tail)
    s->since = mproc_now_ms();
  s->fifo[s->head++ % SOCK_RING] = t;
  t->slot = i;
  return 0;
}

static int sock_poll_results(struct mproc_pool *p, int i,
                             void (*done)(struct mproc_pool *, struct mproc__task *,
                                          struct mproc__outcome *)) {
  struct sock_slot *s = slot_of(p, i);
  static struct sock_rep rep;
  int n = 0;
  while (s->tail < s->head) {
    ssize_t k = recv(s->sock, &rep, sizeof rep, MSG_DONTWAIT);
    if (k < (ssize_t)offsetof(struct sock_rep, data))
      break;
    struct mproc__task *t = s->fifo[s->tail++ % SOCK_RING];
    s->since = mproc_now_ms();
    struct mproc__outcome o = {.pid = p->slots[i].pid, .exit_status = -1, .msg = ""};
    if (rep.code != 0) {
      o.code = MPROC_ETASK;
      o.task_code = rep.code;
      o.msg = (const char *)rep.data;
    } else if (rep.len > 0 && (o.res = malloc(rep.len)) != NULL) {
      memcpy(o.res, rep.data, rep.len);
      o.res_len = rep.len;
    } else if (rep.len > 0) {
      o.code = -ENOMEM;
    }
    t->slot = -1;
    done(p, t, &o);
    n++;
  }
  return n;
}

/* A sent task cannot be taken back: cancel kills the worker instead. */
static int sock_revoke(struct mproc_pool *p, int i, struct mproc__task *t,
                       void (*each)(struct mproc_pool *, struct mproc__task *)) {
  (void)p, (void)i, (void)t, (void)each;
  return 0;
}

static void sock_activity(struct mproc_pool *p, int i, struct mproc__activity *a) {
  struct sock_slot *s = slot_of(p, i);
  if (s->tail < s->head) {
    a->running = s->fifo[s->tail % SOCK_RING]; /* the oldest runs */
    a->since = s->since;
  }
}

static void sock_stop(struct mproc_pool *p, int i, int how, struct mproc__task *t) {
  (void)t;
  if (how == MPROC__STOP_IDLE)
    shutdown(slot_of(p, i)->sock, SHUT_WR);
  else
    mproc__pidfd_kill(p->slots[i].pidfd, SIGKILL);
}

static void sock_reset_slot(struct mproc_pool *p, int i,
                            void (*left)(struct mproc_pool *, struct mproc__task *, bool)) {
  struct sock_slot *s = slot_of(p, i);
  for (uint64_t k = s->tail; k < s->head; k++) {
    struct mproc__task *t = s->fifo[k % SOCK_RING];
    t->slot = -1;
    t->progress = 0;
    left(p, t, k == s->tail); /* only the oldest had started */
  }
  s->head = s->tail = 0;
  mproc__close(s->sock);
  s->sock = -1;
}

static int sock_sleep(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms) {
  (void)p;
  return poll(pfd, (nfds_t)n, timeout_ms);
}

static const struct mproc__transport_ops sock_transport = {
    .name = "socketpair",
    .init = sock_init,
    .fini = sock_fini,
    .start_worker = sock_start_worker,
    .send_task = sock_send_task,
    .poll_results = sock_poll_results,
    .revoke = sock_revoke,
    .activity = sock_activity,
    .stop = sock_stop,
    .reset_slot = sock_reset_slot,
    .sleep = sock_sleep,
};

/* ---- the pool, over it ---------------------------------------------------- */

static mproc_pool *sock_pool(int workers, int64_t task_timeout_ms) {
  mproc_assert_ok(mproc__transport_register(&sock_transport));
  mproc_pool *p;
  struct mproc_pool_options o = {
      .workers = workers, .task_timeout_ms = task_timeout_ms, .transport = "socketpair"};
  mproc_assert_ok(mproc_pool_new(&p, &o));
  return p;
}

static int task_fail_7(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  return mproc_task_fail(c, 7, "seven %d", 7);
}

static int task_die(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l, (void)c;
  raise(SIGKILL);
  return 0;
}

static int map_copy(const void *in, void *out) {
  memcpy(out, in, sizeof(int));
  return 0;
}

START_TEST(test_results_over_socketpair) {
  mproc_pool *p = sock_pool(2, 0);
  mproc_future *f[20];
  for (int i = 0; i < 20; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_square, &i, sizeof i, &f[i]));
  for (int i = 0; i < 20; i++) {
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f[i], &d, &n, 30000));
    ck_assert_uint_eq(n, sizeof(int));
    ck_assert_int_eq(*(const int *)d, i * i);
    mproc_future_free(f[i]);
  }
  /* A task error travels with its message. */
  mproc_future *e;
  mproc_assert_ok(mproc_pool_submit(p, task_fail_7, NULL, 0, &e));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(e, &d, &n, 30000), MPROC_ETASK);
  struct mproc_task_error err;
  mproc_assert_ok(mproc_future_error(e, &err));
  ck_assert_int_eq(err.task_code, 7);
  ck_assert_str_eq(err.message, "seven 7");
  mproc_future_free(e);
  /* No arena: map says so. */
  int in = 1, out;
  mproc_assert_err(
      mproc_pool_map(p, map_copy, &in, 1, sizeof in, &out, sizeof out, NULL, NULL, 30000),
      MPROC_ENOTSUP);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_deaths_timeouts_cancel_over_socketpair) {
  S = shared_new();
  mproc_pool *p = sock_pool(1, 0);
  /* A worker death fails its task and the worker is replaced. */
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_die, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_EWORKERDIED);
  mproc_future_free(f);
  int x = 6;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &f));
  mproc_assert_ok(mproc_future_result(f, &d, &n, 30000));
  ck_assert_int_eq(*(const int *)d, 36);
  mproc_future_free(f);
  /* Cancel of a running task kills its worker. */
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f));
  int64_t dl = mproc_now_ms() + 10000;
  while (atomic_load(&S->pid) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  mproc_future_cancel(f);
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ECANCELED);
  mproc_future_free(f);
  /* A per-task timeout. */
  struct mproc_submit_options so = {.timeout_ms = 200, .retries = -1};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_block, NULL, 0, &so, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, 30000), MPROC_ETIMEDOUT);
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

/* Choosing a transport: by the option, by MPROC_TRANSPORT, and every way of
 * getting it wrong. */
START_TEST(test_registry) {
  mproc_assert_ok(mproc__transport_register(&sock_transport));
  mproc_assert_ok(mproc__transport_register(&sock_transport)); /* twice: harmless */
  struct mproc__transport_ops clash = sock_transport;
  mproc_assert_err(mproc__transport_register(&clash), -EEXIST);
  clash.name = "clash";
  clash.sleep = NULL; /* a required operation missing */
  mproc_assert_err(mproc__transport_register(&clash), MPROC_EINVAL);
  clash.name = "";
  mproc_assert_err(mproc__transport_register(&clash), MPROC_EINVAL);
  mproc_assert_err(mproc__transport_register(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc__transport_unregister(&mproc__transport_shm), MPROC_EINVAL);
  mproc_assert_err(mproc__transport_unregister(&clash), -ENOENT);
  mproc_assert_err(mproc__transport_unregister(NULL), MPROC_EINVAL);
  /* The table is small and says when it is full. */
  static struct mproc__transport_ops many[16];
  static char names[16][16];
  int added = 0, r = 0;
  for (; added < 16; added++) {
    many[added] = sock_transport;
    snprintf(names[added], sizeof names[added], "t%d", added);
    many[added].name = names[added];
    if ((r = mproc__transport_register(&many[added])) != 0)
      break;
  }
  mproc_assert_err(r, -ENOSPC);
  for (int i = 0; i < added; i++)
    mproc_assert_ok(mproc__transport_unregister(&many[i]));

  mproc_pool *p;
  struct mproc_pool_options o = {.workers = 1, .transport = "nosuch"};
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  /* The environment chooses for a whole program; the option wins over it. */
  ck_assert_int_eq(setenv("MPROC_TRANSPORT", "nosuch", 1), 0);
  o.transport = NULL;
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
  ck_assert_int_eq(setenv("MPROC_TRANSPORT", "socketpair", 1), 0);
  mproc_assert_ok(mproc_pool_new(&p, &o));
  ck_assert(p->tp == &sock_transport);
  mproc_assert_ok(mproc_pool_free(p));
  o.transport = "shm";
  mproc_assert_ok(mproc_pool_new(&p, &o));
  ck_assert(p->tp == &mproc__transport_shm);
  mproc_assert_ok(mproc_pool_free(p));
  ck_assert_int_eq(unsetenv("MPROC_TRANSPORT"), 0);
  o.transport = NULL;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  ck_assert(p->tp == &mproc__transport_shm);
  mproc_assert_ok(mproc_pool_free(p));
  mproc_assert_ok(mproc__transport_unregister(&sock_transport));
  o.transport = "socketpair";
  mproc_assert_err(mproc_pool_new(&p, &o), MPROC_EINVAL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool-transport");
  TCase *tc = mproc_test_tcase(s, "transport", 60);
  tcase_add_test(tc, test_registry);
  tcase_add_test(tc, test_results_over_socketpair);
  tcase_add_test(tc, test_deaths_timeouts_cancel_over_socketpair);
  return mproc_test_run(s);
}
