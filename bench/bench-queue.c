/* Queue and pipe benchmarks: small messages (1 producer, 1 consumer and 2+2
 * processes) against the raw rings of bench-raw.h (impl "raw": an SPSC ring,
 * spin then futex; a ring under one process-shared mutex, spin then futex),
 * 1 MiB messages against plain memcpy, and a pipe ping-pong against a raw
 * socketpair.  Each mproc figure and its limit are measured alternately, so
 * that a burst of load on the machine hits both alike.
 * MPROC_BENCH_QUICK=1 shrinks the sizes. */
#include "bench-raw.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int quick;

struct job {
  mproc_queue *q;
  long n;
  size_t size;
};

static pid_t spawn(mproc__child_fn fn, void *arg, int *pidfd, int keep) {
  struct mproc__spawn_opts o = {.fn = fn, .arg = arg, .flags = MPROC__SPAWN_NOFLUSH};
  if (keep >= 0) {
    o.keep_fds = &keep;
    o.nkeep = 1;
  }
  pid_t pid;
  if (mproc__spawn(&o, &pid, pidfd) != 0) {
    perror("spawn");
    exit(1);
  }
  return pid;
}

static void reap(int pidfd) {
  int code;
  mproc__reap(pidfd, &code, -1);
  mproc__close(pidfd);
  if (code != 0) {
    fprintf(stderr, "bench child failed: %d\n", code);
    exit(1);
  }
}

static int produce(void *arg) {
  struct job *j = arg;
  mproc_queue_detach(j->q, MPROC_QUEUE_CONSUMER);
  char *buf = calloc(1, j->size);
  for (long i = 0; i < j->n; i++) {
    memcpy(buf, &i, sizeof i < j->size ? sizeof i : j->size);
    if (mproc_queue_put(j->q, buf, j->size, -1) != 0)
      return 1;
  }
  mproc_queue_close(j->q);
  free(buf);
  return 0;
}

static int consume(void *arg) {
  struct job *j = arg;
  mproc_queue_close(j->q);
  char *buf = malloc(j->size);
  size_t len;
  while (mproc_queue_get(j->q, buf, j->size, &len, -1) == 0) {
  }
  free(buf);
  return 0;
}

/* One producer process, the caller consumes: messages per second. */
static double spsc(long n, size_t size, size_t cap) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = cap};
  mproc_queue_new(&q, &o);
  struct job j = {q, n, size};
  char *buf = malloc(size);
  double t0 = bench_now_s();
  int pidfd;
  spawn(produce, &j, &pidfd, -1);
  mproc_queue_close(q);
  size_t len;
  long got = 0;
  while (mproc_queue_get(q, buf, size, &len, -1) == 0)
    got++;
  double t = bench_now_s() - t0;
  reap(pidfd);
  mproc_queue_free(q);
  free(buf);
  if (got != n)
    fprintf(stderr, "lost messages: %ld of %ld\n", n - got, n);
  return (double)n / t;
}

/* 2 producers and 2 consumers, all child processes. */
static double mpmc(long n) {
  mproc_queue *q;
  struct mproc_queue_options o = {.capacity = (size_t)1 << 20};
  mproc_queue_new(&q, &o);
  struct job j = {q, n / 2, 8};
  int pf[4];
  double t0 = bench_now_s();
  spawn(consume, &j, &pf[0], -1);
  spawn(consume, &j, &pf[1], -1);
  spawn(produce, &j, &pf[2], -1);
  spawn(produce, &j, &pf[3], -1);
  mproc_queue_detach(q, MPROC_QUEUE_BOTH);
  for (int i = 0; i < 4; i++)
    reap(pf[i]);
  double t = bench_now_s() - t0;
  mproc_queue_free(q);
  return (double)n / t;
}

static double memcpy_rate(long n, size_t size) {
  char *a = malloc(size), *b = malloc(size);
  memset(a, 1, size);
  memset(b, 2, size);
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++) {
    memcpy(b, a, size);
    __asm__ volatile("" : : "r"(b) : "memory");
  }
  double t = bench_now_s() - t0;
  free(a);
  free(b);
  return (double)n * (double)size / t / 1e6;
}

/* ---- pipe ping-pong ------------------------------------------------------ */

struct pp {
  mproc_conn *c;
  int fd;
  long n;
};

static int echo_conn(void *arg) {
  struct pp *p = arg;
  char buf[8];
  size_t len;
  for (long i = 0; i < p->n; i++) {
    if (mproc_conn_recv(p->c, buf, sizeof buf, &len, -1) != 0 ||
        mproc_conn_send(p->c, buf, len, -1) != 0)
      return 1;
  }
  return 0;
}

static int echo_raw(void *arg) {
  struct pp *p = arg;
  char buf[8];
  for (long i = 0; i < p->n; i++)
    if (read(p->fd, buf, 8) != 8 || write(p->fd, buf, 8) != 8)
      return 1;
  return 0;
}

static double pipe_rt(long n) {
  mproc_conn *a, *b;
  mproc_pipe(&a, &b, NULL);
  struct pp p = {b, -1, n};
  int pidfd;
  spawn(echo_conn, &p, &pidfd, mproc_conn_fd(b));
  mproc_conn_free(b);
  char buf[8] = "pingpong";
  size_t len;
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++) {
    mproc_conn_send(a, buf, 8, -1);
    mproc_conn_recv(a, buf, 8, &len, -1);
  }
  double t = bench_now_s() - t0;
  reap(pidfd);
  mproc_conn_free(a);
  return t / (double)n * 1e6;
}

static double raw_rt(long n) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  mproc__fd_register(sv[1]);
  struct pp p = {NULL, sv[1], n};
  int pidfd;
  spawn(echo_raw, &p, &pidfd, sv[1]);
  mproc__close(sv[1]);
  char buf[8] = "pingpong";
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++) {
    if (write(sv[0], buf, 8) != 8 || read(sv[0], buf, 8) != 8)
      exit(1);
  }
  double t = bench_now_s() - t0;
  reap(pidfd);
  close(sv[0]);
  return t / (double)n * 1e6;
}

int main(void) {
  quick = getenv("MPROC_BENCH_QUICK") != NULL && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  double v[BENCH_REPS], raw[BENCH_REPS];
  long small = quick ? 20000 : 4000000;
  for (int r = 0; r < BENCH_REPS; r++) {
    v[r] = spsc(small, 8, (size_t)1 << 20) / 1e6;
    raw[r] = raw_spsc_rate(small) / 1e6;
  }
  bench_report("queue_small_msgs", "mproc", v, BENCH_REPS, "M/s");
  bench_report("queue_small_msgs", "raw", raw, BENCH_REPS, "M/s");

  long big = quick ? 20 : 2000;
  size_t mib = (size_t)1 << 20;
  for (int r = 0; r < BENCH_REPS; r++)
    v[r] = spsc(big, mib, (size_t)16 << 20) * (double)mib / 1e6;
  bench_report("queue_1mib_msgs", "mproc", v, BENCH_REPS, "MB/s");
  for (int r = 0; r < BENCH_REPS; r++)
    v[r] = memcpy_rate(big, mib);
  bench_report("queue_1mib_msgs", "os", v, BENCH_REPS, "MB/s");

  for (int r = 0; r < BENCH_REPS; r++) {
    v[r] = mpmc(small) / 1e6;
    raw[r] = raw_mpmc_rate(2, small) / 1e6;
  }
  bench_report("queue_mpmc_small_msgs", "mproc", v, BENCH_REPS, "M/s");
  bench_report("queue_mpmc_small_msgs", "raw", raw, BENCH_REPS, "M/s");

  long rts = quick ? 2000 : 100000;
  for (int r = 0; r < BENCH_REPS; r++) {
    v[r] = pipe_rt(rts);
    raw[r] = raw_rt(rts);
  }
  bench_report("pipe_roundtrip", "mproc", v, BENCH_REPS, "us");
  bench_report("pipe_roundtrip", "os", raw, BENCH_REPS, "us");
  return 0;
}
