/* The transport seam, shown: a small transport that carries tasks over a
 * socketpair per worker -- no shared rings, map chunks by value, the
 * initializer, descriptors passed with a task -- lives in this file alone,
 * joins the registry and is chosen by the pool option (one line).  It runs
 * the pool's main promises: results, task errors, map, starmap, imap,
 * worker deaths, timeouts, cancel, replacement, initializers, stats, close.
 *
 * It comes in two flavours, run by the same tests:
 *  "socketpair"         workers are local processes the pool watches: their
 *                       pid and pidfd are the slot's, a stop kills them;
 *  "socketpair-remote"  the pool sees no process, as with MPI ranks: the
 *                       transport keeps the pidfd, reports a worker's end
 *                       through poll_results, watches its sockets in
 *                       sleep, and ends only the running task on a timeout
 *                       or cancel (a signal the worker turns into a failed
 *                       task), so the worker survives.
 * The arena is the core's plain allocator of the parent's memory
 * (mproc__arena_local): send_task copies a chunk's inputs out
 * (mproc__task_ranges) and poll_results writes its outputs back before
 * reporting it.
 * ctest-labels: threads */
#include "internal.h"
#include "pool-helpers.h"
#include "pool.h"
#include "task_ctx.h"

#include <mproc/loop.h>
#include <poll.h>
#include <setjmp.h>
#include <sys/socket.h>

/* ---- the wire: one request, one reply per task, in order ------------------ */

/* SOCK_MAX holds any argument the pool keeps in memory (MPROC__ARG_INLINE). */
enum { SOCK_RING = 4, SOCK_MAX = 65536 + 64, SOCK_FDS = MPROC_TASK_MAX_FDS + 1 };
enum { REP_TASK = 1, REP_INIT };

struct sock_req {
  uint32_t kind;   /* MPROC__K_* */
  uint32_t nargs;  /* K_STARMAP columns */
  uint64_t seq;    /* the slot's position of the task (a stop names it) */
  uint64_t fn;     /* the function's address (forked workers) */
  uint64_t len;    /* K_CALL: argument bytes */
  uint32_t arg_fd; /* K_CALL: the first descriptor holds the argument */
  uint32_t nfds;   /* descriptors that came with the message */
  uint64_t count;  /* chunks: items */
  uint64_t in_size[MPROC_STARMAP_MAX_ARGS], out_size;
  unsigned char data[SOCK_MAX]; /* the argument, or the columns one after another */
};

struct sock_rep {
  int32_t kind;   /* REP_* */
  int32_t code;   /* 0, or the task's (initializer's) failure code */
  uint64_t index; /* chunks: the item that failed */
  uint32_t len;   /* result / outputs bytes, or message bytes when code != 0 */
  unsigned char data[SOCK_MAX];
};

#define HDR(type) offsetof(type, data)

/* One message with descriptors (SCM_RIGHTS) beside its bytes. */
static ssize_t send_with_fds(int sock, const void *buf, size_t len, const int *fds, size_t n) {
  struct iovec iov = {(void *)(uintptr_t)buf, len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * SOCK_FDS)];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (n > 0) {
    m.msg_control = u.buf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  }
  ssize_t r;
  while ((r = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return r;
}

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
  mproc_init_fn init;
  void *initarg;
};

/* The worker's one request and reply, and what a stop must undo: static,
 * so a siglongjmp out of a task finds them as they were. */
static struct sock_req w_req;
static struct sock_rep w_rep;
static int w_fds[SOCK_FDS];
static size_t w_nfds;
static void *w_argmap;
static sigjmp_buf w_jmp;
static volatile sig_atomic_t w_in_task;
static volatile uint64_t w_seq;

/* SIGUSR1 carrying a task's position: that task, if it is the one running,
 * ends now (a test transport may; a real one would run tasks in a process
 * of their own). */
static void on_stop_task(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)uc;
  if (w_in_task && (uint64_t)si->si_value.sival_int == (w_seq & INT32_MAX)) {
    w_in_task = 0;
    siglongjmp(w_jmp, 1);
  }
}

static void reply(const struct sock_worker *w, size_t len) {
  if (send(w->sock, &w_rep, HDR(struct sock_rep) + len, MSG_NOSIGNAL) < 0)
    _exit(2);
  uint64_t one = 1;
  ssize_t wr = write(w->efd, &one, sizeof one); /* wake the manager */
  (void)wr;
}

static int run_request(struct sock_ctx *c) {
  struct sock_req *q = &w_req;
  void (*raw)(void) = mproc__taskfn_addr((struct mproc__taskfn){MPROC__FN_ADDR, q->fn});
  if (q->kind == MPROC__K_CALL) {
    const void *arg = q->data;
    if (q->arg_fd) {
      int r = mproc__map_shared(w_fds[0], q->len, &w_argmap);
      if (r != 0)
        return r;
      arg = w_argmap;
    }
    c->base.fds = w_fds + q->arg_fd;
    c->base.nfds = w_nfds - q->arg_fd;
    return ((mproc_task_fn)raw)(arg, q->len, &c->base);
  }
  /* A chunk: inputs came by value, outputs go back in the reply. */
  const unsigned char *col[MPROC_STARMAP_MAX_ARGS];
  const unsigned char *at = q->data;
  uint32_t ncol = q->kind == MPROC__K_MAP ? 1 : q->nargs;
  for (uint32_t j = 0; j < ncol; j++) {
    col[j] = at;
    at += q->count * q->in_size[j];
  }
  w_rep.len = (uint32_t)(q->count * q->out_size);
  for (uint64_t i = 0; i < q->count; i++) {
    const void *args[MPROC_STARMAP_MAX_ARGS];
    for (uint32_t j = 0; j < ncol; j++)
      args[j] = col[j] + i * q->in_size[j];
    void *out = w_rep.data + i * q->out_size;
    int r = q->kind == MPROC__K_MAP ? ((mproc_map_fn)raw)(args[0], out)
                                    : ((mproc_starmap_fn)raw)(args, out);
    if (r != 0) {
      w_rep.index = i;
      return r;
    }
  }
  return 0;
}

static int sock_worker_main(void *arg) {
  const struct sock_worker *w = arg;
  /* Forked from the manager, which blocks every signal. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  struct sigaction sa = {.sa_sigaction = on_stop_task, .sa_flags = SA_SIGINFO};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  if (w->init != NULL) {
    memset(&w_rep, 0, HDR(struct sock_rep));
    w_rep.kind = REP_INIT;
    struct sock_ctx c = {.base = {.ops = &sock_task_ops, .is_init = true}, .rep = &w_rep};
    int r = w->init(w->initarg, &c.base);
    if (r != 0 && !c.base.failed)
      sock_fail(&c.base, r, "initializer failed");
    reply(w, c.base.failed ? w_rep.len : 0);
    if (c.base.failed)
      return 3;
  }
  for (;;) {
    char cbuf[CMSG_SPACE(sizeof(int) * SOCK_FDS)];
    struct iovec iov = {&w_req, sizeof w_req};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n;
    while ((n = recvmsg(w->sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
    if (n <= 0)
      return n == 0 ? 0 : 1; /* the pool closed its end: stop */
    w_nfds = 0;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    if (cm != NULL && cm->cmsg_type == SCM_RIGHTS) {
      w_nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      memcpy(w_fds, CMSG_DATA(cm), w_nfds * sizeof(int));
    }
    memset(&w_rep, 0, HDR(struct sock_rep));
    w_rep.kind = REP_TASK;
    struct sock_ctx c = {.base = {.ops = &sock_task_ops}, .rep = &w_rep};
    int r;
    w_argmap = NULL;
    w_seq = w_req.seq;
    if (sigsetjmp(w_jmp, 1) == 0) {
      w_in_task = 1;
      r = mproc__task_end(&c.base, run_request(&c));
      w_in_task = 0;
    } else {
      r = -ECANCELED; /* stopped by the pool */
    }
    if (w_argmap != NULL)
      munmap(w_argmap, w_req.len);
    for (size_t i = 0; i < w_nfds; i++)
      close(w_fds[i]);
    if (r != 0 && !c.base.failed)
      sock_fail(&c.base, r, mproc_strerror(r));
    reply(w, w_rep.len);
  }
}

/* ---- parent side ---------------------------------------------------------- */

struct sock_slot {
  int sock;
  struct mproc__task *fifo[SOCK_RING]; /* sent, in order */
  uint64_t head, tail;
  int64_t since; /* when the oldest started (it runs as soon as it is oldest) */
  int init, init_code;
  char init_msg[200];
  /* The remote flavour keeps its worker to itself. */
  pid_t pid;
  int pidfd;
  bool ended; /* its end was reported */
};

struct sock_state {
  bool remote;
  struct sock_slot *slots;
  struct pollfd *pfd;  /* sleep: the pool's fds, then the sockets */
  struct sock_req req; /* the message being sent, under the pool mutex */
  struct sock_rep rep; /* the message being read, under the pool mutex */
};

static struct sock_state *sst(struct mproc_pool *p) { return p->tp_state; }

/* What the flush op saw (atomics: sleep runs without the pool mutex, and
 * the test reads them from its own thread). */
static struct {
  _Atomic int unflushed; /* tasks sent since the last flush */
  _Atomic int flushes;
  _Atomic bool late;       /* the pool collected or slept with tasks not flushed */
  _Atomic bool idle_flush; /* a flush after no send_task */
} flush_seen;
static struct sock_slot *slot_of(struct mproc_pool *p, int i) { return &sst(p)->slots[i]; }

static void sock_fini(struct mproc_pool *p) {
  struct sock_state *s = sst(p);
  for (int i = 0; s != NULL && s->slots != NULL && i < p->nworkers; i++) {
    mproc__close(s->slots[i].sock);
    mproc__close(s->slots[i].pidfd);
  }
  if (s != NULL) {
    free(s->slots);
    free(s->pfd);
  }
  free(s);
  p->tp_state = NULL;
}

static int sock_init_as(struct mproc_pool *p, bool remote) {
  struct sock_state *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MPROC_ENOMEM;
  p->tp_state = s;
  s->remote = remote;
  s->slots = calloc((size_t)p->nworkers, sizeof *s->slots);
  s->pfd = calloc(2 * (size_t)p->nworkers + 1, sizeof *s->pfd);
  if (s->slots == NULL || s->pfd == NULL) {
    sock_fini(p);
    return MPROC_ENOMEM;
  }
  for (int i = 0; i < p->nworkers; i++)
    s->slots[i].sock = s->slots[i].pidfd = -1;
  return 0;
}
static int sock_init(struct mproc_pool *p) { return sock_init_as(p, false); }
static int sock_init_remote(struct mproc_pool *p) { return sock_init_as(p, true); }

static int sock_start_worker(struct mproc_pool *p, int i, int phase) {
  if (phase != MPROC__PHASE_LAUNCH)
    return 0; /* started in one step */
  struct sock_slot *s = slot_of(p, i);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  mproc__fd_register(sv[0]);
  mproc__fd_register(sv[1]);
  struct sock_worker w = {
      .sock = sv[1], .efd = p->efd, .init = p->opts.initializer, .initarg = p->opts.initarg};
  int keep[2] = {sv[1], p->efd};
  struct mproc__spawn_opts so = {.fn = sock_worker_main,
                                 .arg = &w,
                                 .keep_fds = keep,
                                 .nkeep = 2,
                                 .pdeathsig = SIGKILL,
                                 .flags = MPROC__SPAWN_NEWPGRP | MPROC__SPAWN_NOFLUSH};
  /* The remote flavour hides the process from the pool. */
  bool remote = sst(p)->remote;
  int r = mproc__spawn(&so, remote ? &s->pid : &p->slots[i].pid,
                       remote ? &s->pidfd : &p->slots[i].pidfd);
  mproc__close(sv[1]);
  if (r != 0) {
    mproc__close(sv[0]);
    return r;
  }
  s->sock = sv[0];
  s->init = p->opts.initializer != NULL ? MPROC__INIT_RUNNING : MPROC__INIT_READY;
  s->ended = false;
  return 0;
}

static int sock_send_task(struct mproc_pool *p, int i, struct mproc__task *t) {
  struct sock_slot *s = slot_of(p, i);
  if (s->head - s->tail >= SOCK_RING)
    return -EAGAIN;
  struct sock_req *q = &sst(p)->req;
  memset(q, 0, HDR(struct sock_req));
  q->kind = t->kind;
  q->seq = s->head;
  q->fn = t->fn.addr;
  int fds[SOCK_FDS];
  size_t nfds = 0, len = 0;
  if (t->kind == MPROC__K_CALL) {
    q->len = t->arg_len;
    if (t->arg_fd >= 0) {
      fds[nfds++] = t->arg_fd; /* a large argument: its memfd travels */
      q->arg_fd = 1;
    } else if (t->arg_len > 0) {
      memcpy(q->data, t->arg, t->arg_len);
      len = t->arg_len;
    }
    for (uint32_t j = 0; j < t->nfds; j++)
      fds[nfds++] = t->fds[j];
  } else {
    /* Map data by value: the workers cannot see this arena. */
    struct mproc__range in[MPROC_STARMAP_MAX_ARGS], out = {0};
    unsigned n = mproc__task_ranges(t, in, &out);
    q->nargs = t->nargs;
    q->count = t->count;
    q->out_size = t->out_size;
    for (unsigned j = 0; j < n; j++) {
      if (len + in[j].len > SOCK_MAX || out.len > SOCK_MAX)
        return -EMSGSIZE;
      memcpy(q->data + len, mproc__arena_at(p, in[j].off), in[j].len);
      len += in[j].len;
      q->in_size[j] = t->count > 0 ? in[j].len / t->count : 0;
    }
  }
  q->nfds = (uint32_t)nfds;
  if (send_with_fds(s->sock, q, HDR(struct sock_req) + len, fds, nfds) < 0)
    return -errno;
  if (s->head == s->tail)
    s->since = mproc_now_ms();
  t->tp_ref = s->head;
  s->fifo[s->head++ % SOCK_RING] = t;
  t->slot = i;
  flush_seen.unflushed++;
  return 0;
}

/* flush: this transport sends each task at once, so there is nothing to
 * hold back; it checks the seam's promise instead, for a transport that
 * would (MPI's batches): every round of send_task is followed by a flush
 * before the pool collects or sleeps, and no flush comes without a task. */
static void sock_flush(struct mproc_pool *p) {
  (void)p;
  if (flush_seen.unflushed == 0)
    flush_seen.idle_flush = true;
  flush_seen.unflushed = 0;
  flush_seen.flushes++;
}

static void flush_expected(void) {
  if (flush_seen.unflushed > 0)
    flush_seen.late = true;
}

/* The remote flavour: its worker ended (its socket said so); reap it and
 * tell the pool, naming it as the transport knows it. */
static void report_end(struct mproc_pool *p, int i,
                       void (*done)(struct mproc_pool *, struct mproc__task *,
                                    struct mproc__outcome *)) {
  struct sock_slot *s = slot_of(p, i);
  int code = 0;
  if (mproc__reap(s->pidfd, &code, mproc__deadline(1000)) != 0) {
    mproc__pidfd_kill(s->pidfd, SIGKILL);
    mproc__reap(s->pidfd, &code, -1);
  }
  mproc__close(s->pidfd);
  s->pidfd = -1;
  s->ended = true;
  char msg[96];
  struct mproc__outcome o = {.code = MPROC_EWORKERDIED, .exit_status = -1, .msg = msg};
  if (code < 0) {
    o.signo = -code;
    snprintf(msg, sizeof msg, "remote worker %d killed by signal %d", i, o.signo);
  } else {
    o.exit_status = code;
    snprintf(msg, sizeof msg, "remote worker %d exited with status %d", i, code);
  }
  done(p, NULL, &o);
}

static int sock_poll_results(struct mproc_pool *p, int i,
                             void (*done)(struct mproc_pool *, struct mproc__task *,
                                          struct mproc__outcome *)) {
  struct sock_slot *s = slot_of(p, i);
  struct sock_rep *rep = &sst(p)->rep;
  int n = 0, resets = 0;
  flush_expected();
  while (s->sock >= 0 && !s->ended) {
    ssize_t k = recv(s->sock, rep, sizeof *rep, MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EINTR))
      break;
    /* A worker that died with requests unread leaves ECONNRESET reported
     * once before the replies it sent: read those first. */
    if (k < 0 && errno == ECONNRESET && resets++ == 0)
      continue;
    if (k < (ssize_t)HDR(struct sock_rep)) {
      if (sst(p)->remote)
        report_end(p, i, done); /* the local flavour's pidfd says it */
      break;
    }
    if (rep->kind == REP_INIT) {
      s->init = rep->code == 0 ? MPROC__INIT_READY : MPROC__INIT_FAILED;
      s->init_code = rep->code;
      snprintf(s->init_msg, sizeof s->init_msg, "%.199s", rep->code != 0 ? (char *)rep->data : "");
      continue;
    }
    if (s->tail == s->head)
      break; /* nothing was sent: not ours to read */
    struct mproc__task *t = s->fifo[s->tail++ % SOCK_RING];
    s->since = mproc_now_ms();
    struct mproc__outcome o = {.pid = p->slots[i].pid, .exit_status = -1, .msg = ""};
    if (rep->code != 0) {
      o.code = MPROC_ETASK;
      o.task_code = rep->code;
      o.msg = (const char *)rep->data;
      o.index = t->base_index + rep->index;
    } else if (t->kind != MPROC__K_CALL) {
      struct mproc__range in[MPROC_STARMAP_MAX_ARGS], out = {0};
      mproc__task_ranges(t, in, &out);
      if (rep->len == out.len)
        memcpy(mproc__arena_at(p, out.off), rep->data, out.len); /* back before done */
      else
        o.code = MPROC_ECORRUPT, o.msg = "a chunk came back with the wrong size";
    } else if (rep->len > 0 && (o.res = malloc(rep->len)) != NULL) {
      memcpy(o.res, rep->data, rep->len);
      o.res_len = rep->len;
    } else if (rep->len > 0) {
      o.code = MPROC_ENOMEM;
    }
    t->slot = -1;
    done(p, t, &o);
    n++;
  }
  return n;
}

/* A sent task cannot be taken back: cancel stops it instead. */
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
  a->init = s->init;
  a->init_code = s->init_code;
  a->init_msg = s->init_msg;
}

static void sock_stop(struct mproc_pool *p, int i, int how, struct mproc__task *t) {
  struct sock_slot *s = slot_of(p, i);
  if (how == MPROC__STOP_IDLE) {
    shutdown(s->sock, SHUT_WR);
  } else if (!sst(p)->remote) {
    mproc__pidfd_kill(p->slots[i].pidfd, SIGKILL);
  } else if (s->pidfd >= 0 && how == MPROC__STOP_TASK) {
    /* Only the task ends; not reaped yet (under the mutex): the pid is its. */
    sigqueue(s->pid, SIGUSR1, (union sigval){.sival_int = (int)(t->tp_ref & INT32_MAX)});
  } else if (s->pidfd >= 0) {
    mproc__pidfd_kill(s->pidfd, SIGKILL);
  }
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
  if (s->pidfd >= 0) { /* a remote worker that never said it ended */
    mproc__pidfd_kill(s->pidfd, SIGKILL);
    mproc__reap(s->pidfd, NULL, -1);
    mproc__close(s->pidfd);
    s->pidfd = -1;
  }
}

/* The remote flavour also watches its sockets: a result, or a worker's end,
 * wakes the manager without any pidfd.  sleep runs without the pool mutex
 * (helpers collect meanwhile): the sockets are read under it, and only the
 * manager, now asleep here, closes one. */
static int sock_sleep(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms) {
  flush_expected();
  struct sock_state *s = sst(p);
  int m = n;
  memcpy(s->pfd, pfd, (size_t)n * sizeof *pfd);
  pthread_mutex_lock(&p->mu);
  for (int i = 0; s->remote && i < p->nworkers; i++)
    if (s->slots[i].sock >= 0 && !s->slots[i].ended)
      s->pfd[m++] = (struct pollfd){.fd = s->slots[i].sock, .events = POLLIN};
  pthread_mutex_unlock(&p->mu);
  int r = poll(s->pfd, (nfds_t)m, timeout_ms);
  for (int k = 0; k < n; k++)
    pfd[k].revents = s->pfd[k].revents;
  return r;
}

static const struct mproc__transport_ops sock_transport = {
    .name = "socketpair",
    .init = sock_init,
    .fini = sock_fini,
    .start_worker = sock_start_worker,
    .send_task = sock_send_task,
    .flush = sock_flush,
    .poll_results = sock_poll_results,
    .revoke = sock_revoke,
    .activity = sock_activity,
    .stop = sock_stop,
    .reset_slot = sock_reset_slot,
    .sleep = sock_sleep,
    .arena = &mproc__arena_local, /* chunks travel by value */
};

static struct mproc__transport_ops sock_remote_transport;

/* ---- the pool, over it ---------------------------------------------------- */

static const char *const flavours[] = {"socketpair", "socketpair-remote"};

static void register_transports(void) {
  sock_remote_transport = sock_transport;
  sock_remote_transport.name = "socketpair-remote";
  sock_remote_transport.init = sock_init_remote;
  mproc_assert_ok(mproc__transport_register(&sock_transport));
  mproc_assert_ok(mproc__transport_register(&sock_remote_transport));
}

static mproc_pool *pool_with(struct mproc_pool_options o, int flavour) {
  register_transports();
  o.transport = flavours[flavour]; /* the one line that chooses it */
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &o));
  return p;
}

static mproc_pool *sock_pool(int workers, int flavour) {
  return pool_with((struct mproc_pool_options){.workers = workers}, flavour);
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

/* Sums its argument bytes (a large argument travels as a memfd). */
static int task_sum(const void *a, size_t l, mproc_task_ctx *c) {
  uint64_t sum = 0;
  for (size_t i = 0; i < l; i++)
    sum += ((const unsigned char *)a)[i];
  return mproc_task_return(c, &sum, sizeof sum);
}

/* Reads what its descriptor holds. */
static int task_read_fd(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  const int *fds;
  if (mproc_task_fds(c, &fds) != 1)
    return mproc_task_fail(c, 1, "expected one descriptor");
  char buf[16];
  ssize_t n = pread(fds[0], buf, sizeof buf, 0);
  if (n < 0)
    return mproc_task_fail(c, 2, "read: %s", strerror(errno));
  return mproc_task_return(c, buf, (size_t)n);
}

static int map_twice(const void *in, void *out) {
  *(int *)out = 2 * *(const int *)in;
  return *(const int *)in == -1 ? 9 : 0;
}

static int star_add(const void *const *args, void *out) {
  *(int *)out = *(const int *)args[0] + *(const int *)args[1];
  return 0;
}

static int gen_upto(void *ctx, void *item) {
  int *k = ctx;
  if (*k >= 100)
    return 0;
  *(int *)item = (*k)++;
  return 1;
}

static int init_value;
static int init_set(void *arg, mproc_task_ctx *c) {
  (void)c;
  init_value = *(int *)arg;
  return 0;
}
static int init_refuse(void *arg, mproc_task_ctx *c) {
  (void)arg;
  return mproc_task_fail(c, 5, "no database");
}
static int task_init_value(const void *a, size_t l, mproc_task_ctx *c) {
  (void)a, (void)l;
  return mproc_task_return(c, &init_value, sizeof init_value);
}

static int result_of(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len, void *out,
                     size_t out_len) {
  void *res;
  size_t n;
  int r = mproc_pool_apply(p, fn, arg, len, &res, &n, NULL, mproc_test_scaled_ms(30000));
  if (r == 0) {
    ck_assert_uint_eq(n, out_len);
    memcpy(out, res, n);
    free(res);
  }
  return r;
}

START_TEST(test_results) {
  mproc_pool *p = sock_pool(2, _i);
  mproc_future *f[20];
  for (int i = 0; i < 20; i++)
    mproc_assert_ok(mproc_pool_submit(p, task_square, &i, sizeof i, &f[i]));
  for (int i = 0; i < 20; i++) {
    const void *d;
    size_t n;
    mproc_assert_ok(mproc_future_result(f[i], &d, &n, mproc_test_scaled_ms(30000)));
    ck_assert_uint_eq(n, sizeof(int));
    ck_assert_int_eq(*(const int *)d, i * i);
    mproc_future_free(f[i]);
  }
  /* Each round of send_task was flushed before the pool went on. */
  ck_assert_int_gt(flush_seen.flushes, 0);
  ck_assert(!flush_seen.late && !flush_seen.idle_flush);
  /* A task error travels with its message. */
  mproc_future *e;
  mproc_assert_ok(mproc_pool_submit(p, task_fail_7, NULL, 0, &e));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(e, &d, &n, mproc_test_scaled_ms(30000)), MPROC_ETASK);
  struct mproc_task_error err;
  mproc_assert_ok(mproc_future_error(e, &err));
  ck_assert_int_eq(err.task_code, 7);
  ck_assert_str_eq(err.message, "seven 7");
  mproc_future_free(e);
  /* A large argument (kept in a memfd) and a descriptor passed with a task. */
  static unsigned char big[100000];
  uint64_t want = 0, sum = 0;
  for (size_t i = 0; i < sizeof big; i++)
    want += big[i] = (unsigned char)(i * 7);
  mproc_assert_ok(result_of(p, task_sum, big, sizeof big, &sum, sizeof sum));
  ck_assert_uint_eq(sum, want);
  int fd;
  mproc_assert_ok(mproc__memfd_create("transport-test", 0, &fd));
  ck_assert_int_eq(pwrite(fd, "via fd", 6, 0), 6);
  struct mproc_submit_options so = {.retries = -1, .fds = &fd, .nfds = 1};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_read_fd, NULL, 0, &so, &e));
  mproc__close(fd);
  mproc_assert_ok(mproc_future_result(e, &d, &n, mproc_test_scaled_ms(30000)));
  ck_assert_uint_eq(n, 6);
  ck_assert(memcmp(d, "via fd", 6) == 0);
  mproc_future_free(e);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* map, starmap and imap over an arena the workers never see. */
START_TEST(test_map_by_value) {
  mproc_pool *p = sock_pool(2, _i);
  enum { N = 1000 };
  static int in[N], in2[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i, in2[i] = 3 * i;
  mproc_assert_ok(mproc_pool_map(p, map_twice, in, N, sizeof(int), out, sizeof(int), NULL, NULL,
                                 mproc_test_scaled_ms(30000)));
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(out[i], 2 * i);
  const void *cols[2] = {in, in2};
  size_t sizes[2] = {sizeof(int), sizeof(int)};
  struct mproc_map_options mo = {.chunksize = 7};
  mproc_assert_ok(mproc_pool_starmap(p, star_add, 2, cols, sizes, N, out, sizeof(int), &mo, NULL,
                                     mproc_test_scaled_ms(30000)));
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(out[i], 4 * i);
  /* A failing item is named. */
  in[567] = -1;
  struct mproc_task_error err;
  mproc_assert_err(mproc_pool_map(p, map_twice, in, N, sizeof(int), out, sizeof(int), &mo, &err,
                                  mproc_test_scaled_ms(30000)),
                   MPROC_ETASK);
  ck_assert_uint_eq(err.index, 567);
  ck_assert_int_eq(err.task_code, 9);
  in[567] = 567;
  /* A chunk too large for the wire fails clearly, never corrupts. */
  static int huge_in[20000], huge_out[20000];
  mo.chunksize = 20000;
  ck_assert_int_lt(mproc_pool_map(p, map_twice, huge_in, 20000, sizeof(int), huge_out, sizeof(int),
                                  &mo, NULL, mproc_test_scaled_ms(30000)),
                   0);
  int k = 0;
  mproc_imap *it;
  struct mproc_imap_options io = {.chunksize = 3};
  mproc_assert_ok(mproc_pool_imap(p, map_twice, gen_upto, &k, sizeof(int), sizeof(int), &io, &it));
  int got = 0, v;
  size_t idx;
  int r;
  while ((r = mproc_imap_next(it, &v, &idx, NULL, mproc_test_scaled_ms(30000))) == 0) {
    ck_assert_uint_eq(idx, (size_t)got);
    ck_assert_int_eq(v, 2 * got);
    got++;
  }
  mproc_assert_err(r, MPROC_EEOF);
  ck_assert_int_eq(got, 100);
  mproc_imap_free(it);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

START_TEST(test_deaths_timeouts_cancel) {
  S = shared_new();
  bool remote = _i == 1;
  mproc_pool *p = sock_pool(1, _i);
  /* A worker death fails its task and the worker is replaced. */
  mproc_future *f;
  mproc_assert_ok(mproc_pool_submit(p, task_die, NULL, 0, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, mproc_test_scaled_ms(30000)), MPROC_EWORKERDIED);
  struct mproc_task_error err;
  mproc_assert_ok(mproc_future_error(f, &err));
  ck_assert_int_eq(err.signo, SIGKILL);
  if (remote) {
    /* Its transport reported it, in its own words; no pid to give. */
    ck_assert_int_eq(err.pid, 0);
    ck_assert_str_eq(err.message, "remote worker 0 killed by signal 9");
  } else {
    ck_assert_int_gt(err.pid, 0);
  }
  mproc_future_free(f);
  int x = 6, y;
  mproc_assert_ok(result_of(p, task_square, &x, sizeof x, &y, sizeof y));
  ck_assert_int_eq(y, 36);
  int pid_before, pid_after;
  mproc_assert_ok(result_of(p, task_pid, NULL, 0, &pid_before, sizeof pid_before));
  /* Cancel of a running task. */
  mproc_assert_ok(mproc_pool_submit(p, task_block, NULL, 0, &f));
  int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(10000);
  while (atomic_load(&S->pid) == 0) {
    ck_assert(mproc_now_ms() < dl);
    sleep_ms(1);
  }
  mproc_future_cancel(f);
  mproc_assert_err(mproc_future_result(f, &d, &n, mproc_test_scaled_ms(30000)), MPROC_ECANCELED);
  mproc_future_free(f);
  /* A per-task timeout. */
  struct mproc_submit_options so = {.timeout_ms = 200, .retries = -1};
  mproc_assert_ok(mproc_pool_submit_ex(p, task_block, NULL, 0, &so, &f));
  mproc_assert_err(mproc_future_result(f, &d, &n, mproc_test_scaled_ms(30000)), MPROC_ETIMEDOUT);
  mproc_future_free(f);
  /* The local flavour killed its worker for each; the remote one ended
   * only the tasks: the same worker runs on. */
  mproc_assert_ok(result_of(p, task_pid, NULL, 0, &pid_after, sizeof pid_after));
  if (remote)
    ck_assert_int_eq(pid_after, pid_before);
  else
    ck_assert_int_ne(pid_after, pid_before);
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws;
  ck_assert_int_ge(mproc_pool_stats(p, &st, &ws, 1), 0);
  ck_assert_uint_eq(ws.replaced, remote ? 1 : 3);
  ck_assert_int_eq(ws.pid, remote ? 0 : pid_after);
  ck_assert_int_eq(ws.state, MPROC_WORKER_IDLE);
  mproc_assert_ok(mproc_pool_free(p));
  shared_free(S);
}
END_TEST

START_TEST(test_initializer) {
  int v = 42, got = 0;
  mproc_pool *p = pool_with(
      (struct mproc_pool_options){.workers = 2, .initializer = init_set, .initarg = &v}, _i);
  mproc_assert_ok(result_of(p, task_init_value, NULL, 0, &got, sizeof got));
  ck_assert_int_eq(got, 42);
  mproc_assert_ok(mproc_pool_free(p));
  /* An initializer that fails breaks the pool, with its message. */
  p = pool_with((struct mproc_pool_options){.workers = 1, .initializer = init_refuse}, _i);
  mproc_future *f;
  int r = mproc_pool_submit(p, task_init_value, NULL, 0, &f);
  if (r == 0) {
    const void *d;
    size_t n;
    mproc_assert_err(mproc_future_result(f, &d, &n, mproc_test_scaled_ms(30000)),
                     MPROC_EINITFAILED);
    struct mproc_task_error err;
    mproc_assert_ok(mproc_future_error(f, &err));
    ck_assert_str_eq(err.message, "no database");
    mproc_future_free(f);
  } else {
    mproc_assert_err(r, MPROC_EBROKEN);
  }
  mproc_pool_free(p);
}
END_TEST

/* close + join end a pool whose workers the pool cannot see; the loop fd
 * works over it. */
static void on_done(mproc_future *f, void *ud) {
  (void)f;
  (*(int *)ud)++;
}

START_TEST(test_close_and_loop) {
  mproc_pool *p =
      pool_with((struct mproc_pool_options){.workers = 2, .flags = MPROC_POOL_LOOP}, _i);
  int calls = 0, x = 3;
  mproc_future *f;
  mproc_assert_ok(
      mproc_pool_apply_async(p, task_square, &x, sizeof x, on_done, on_done, &calls, &f));
  struct pollfd pfd = {.fd = mproc_pool_loop_fd(p), .events = POLLIN};
  int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(30000);
  while (calls == 0) {
    ck_assert(mproc_now_ms() < dl);
    if (poll(&pfd, 1, 100) > 0)
      ck_assert_int_ge(mproc_pool_loop_run(p, 0, NULL), 0);
  }
  mproc_future_free(f);
  mproc_assert_ok(mproc_pool_close(p));
  mproc_assert_ok(mproc_pool_join(p, mproc_test_scaled_ms(30000)));
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* The core's arena in parent memory: offsets, never 0, reused once freed;
 * a size it cannot name is refused. */
START_TEST(test_local_arena) {
  mproc_pool *p = sock_pool(1, 0);
  const struct mproc__arena_ops *a = &mproc__arena_local;
  pthread_mutex_lock(&p->mu);
  uint64_t off[6];
  for (int i = 0; i < 6; i++) {
    mproc_assert_ok(a->alloc(p, 100, &off[i]));
    ck_assert_uint_ne(off[i], 0);
    memset(a->at(p, off[i]), i, 100);
  }
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(((unsigned char *)a->at(p, off[i] + 99))[0], i);
  a->free(p, off[2], 100);
  uint64_t again;
  mproc_assert_ok(a->alloc(p, 0, &again));
  ck_assert_uint_eq(again, off[2]);
  mproc_assert_err(a->alloc(p, (size_t)1 << 41, &again), MPROC_ENOMEM);
  pthread_mutex_unlock(&p->mu);
  mproc_assert_ok(mproc_pool_free(p)); /* frees what is left */
}
END_TEST

/* Choosing a transport: by the option, by MPROC_TRANSPORT, and every way of
 * getting it wrong. */
START_TEST(test_registry) {
  register_transports();
  mproc_assert_ok(mproc__transport_register(&sock_transport)); /* twice: harmless */
  struct mproc__transport_ops clash = sock_transport;
  mproc_assert_err(mproc__transport_register(&clash), -EEXIST);
  clash.name = "clash";
  clash.sleep = NULL; /* a required operation missing */
  mproc_assert_err(mproc__transport_register(&clash), MPROC_EINVAL);
  clash.sleep = sock_transport.sleep;
  struct mproc__arena_ops half = {.alloc = mproc__arena_local.alloc};
  clash.arena = &half; /* an arena without its other operations */
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
  tcase_add_test(tc, test_local_arena);
  tcase_add_loop_test(tc, test_results, 0, 2);
  tcase_add_loop_test(tc, test_map_by_value, 0, 2);
  tcase_add_loop_test(tc, test_deaths_timeouts_cancel, 0, 2);
  tcase_add_loop_test(tc, test_initializer, 0, 2);
  tcase_add_loop_test(tc, test_close_and_loop, 0, 2);
  return mproc_test_run(s);
}
