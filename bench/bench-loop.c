/* Benchmarks of issue 6: what a stats reader costs a running map
 * (stats_overhead), and the prefork server's requests per second under wrk
 * (prefork_rps: mproc's parent-accepts/worker-serves against a minimal
 * single-process epoll server, impl os, same client and response). */
#include "bench.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mproc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int quick;

/* ---- stats_overhead ---------------------------------------------------------- */

static int el_work(const void *in, void *out) {
  unsigned x = *(const unsigned *)in;
  for (int i = 0; i < 200; i++)
    x = x * 1103515245u + 12345u;
  *(unsigned *)out = x;
  return 0;
}

static _Atomic int reader_stop;
static void *stats_reader(void *arg) { /* 100 reads a second */
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws[64];
  while (!atomic_load(&reader_stop)) {
    mproc_pool_stats(arg, &st, ws, 64);
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void bench_stats(void) {
  size_t n = quick ? 200000 : 4000000;
  unsigned *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  for (size_t i = 0; i < n; i++)
    in[i] = (unsigned)i;
  mproc_pool *p;
  if (mproc_pool_new(&p, NULL) != 0)
    exit(1);
  double off[BENCH_REPS], on[BENCH_REPS];
  struct mproc_map_options mo = {.chunksize = 2000};
  for (int r = 0; r < BENCH_REPS; r++) {
    for (int with = 0; with < 2; with++) {
      pthread_t t;
      atomic_store(&reader_stop, 0);
      if (with)
        pthread_create(&t, NULL, stats_reader, p);
      double t0 = bench_now_s();
      mproc_pool_map(p, el_work, in, n, sizeof *in, out, sizeof *out, &mo, NULL, -1);
      double rate = (double)n / (bench_now_s() - t0);
      if (with) {
        atomic_store(&reader_stop, 1);
        pthread_join(t, NULL);
      }
      (with ? on : off)[r] = rate;
    }
  }
  bench_report("map_items_no_stats_reader", "mproc", off, BENCH_REPS, "items/s");
  bench_report("map_items_stats_reader_100hz", "mproc", on, BENCH_REPS, "items/s");
  double ovh[BENCH_REPS];
  double moff = bench_median(off, BENCH_REPS), mon = bench_median(on, BENCH_REPS);
  for (int r = 0; r < BENCH_REPS; r++)
    ovh[r] = 100.0 * (moff - mon) / moff;
  bench_report("stats_overhead", "mproc", ovh, BENCH_REPS, "%");
  mproc_pool_free(p);
  free(in);
  free(out);
}

/* ---- prefork_rps --------------------------------------------------------------- */

static const char RESPONSE_FMT[] =
    "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s";

static int respond(int fd) {
  char req[4096];
  size_t got = 0;
  while (got < 4 || memcmp(req + got - 4, "\r\n\r\n", 4) != 0) {
    ssize_t n = read(fd, req + got, sizeof req - got);
    if (n <= 0)
      return n < 0 && errno == EAGAIN ? 1 : -1;
    got += (size_t)n;
    if (got == sizeof req)
      return -1;
  }
  char body[64], resp[256];
  int blen = snprintf(body, sizeof body, "served by pid %d\n", (int)getpid());
  int rlen = snprintf(resp, sizeof resp, RESPONSE_FMT, blen, body);
  send(fd, resp, (size_t)rlen, MSG_NOSIGNAL);
  return 0;
}

static int serve(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  const int *fds;
  if (mproc_task_fds(ctx, &fds) == 1)
    respond(fds[0]);
  return 0;
}

static int listen_any(int *port) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1024) != 0 ||
      getsockname(l, (struct sockaddr *)&a, &al) != 0)
    exit(1);
  *port = ntohs(a.sin_port);
  return l;
}

struct srv {
  int lfd, stop;
  mproc_pool *pool; /* NULL: the single-process epoll server */
};

static void *prefork_main(void *arg) {
  struct srv *s = arg;
  for (;;) {
    struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop, .events = POLLIN}};
    if (poll(p, 2, -1) <= 0)
      continue;
    if (p[1].revents)
      return NULL;
    int c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    mproc_future *f;
    struct mproc_submit_options o = {.retries = -1, .fds = &c, .nfds = 1};
    if (mproc_pool_submit_ex(s->pool, serve, NULL, 0, &o, &f) == 0)
      mproc_future_free(f);
    close(c);
  }
}

static void *epoll_main(void *arg) {
  struct srv *s = arg;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->lfd, &ev);
  ev.data.fd = s->stop;
  epoll_ctl(ep, EPOLL_CTL_ADD, s->stop, &ev);
  for (;;) {
    struct epoll_event got[64];
    int n = epoll_wait(ep, got, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = got[i].data.fd;
      if (fd == s->stop) {
        close(ep);
        return NULL;
      }
      if (fd == s->lfd) {
        int c;
        while ((c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
      } else if (respond(fd) <= 0) {
        close(fd); /* answered or failed; a partial request waits for more */
      }
    }
  }
}

static double run_wrk(int port, const char *secs, int conns) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "wrk -t%d -c%d -d%s --timeout 10s http://127.0.0.1:%d/ 2>&1",
           conns < 2 ? 1 : 2, conns, secs, port);
  FILE *f = popen(cmd, "r");
  if (f == NULL)
    return -1;
  char line[512];
  double rps = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "Requests/sec:", 13) == 0)
      rps = atof(line + 13);
  pclose(f);
  return rps;
}

static void bench_prefork(void) {
  if (system("command -v wrk >/dev/null 2>&1") != 0) {
    printf("# prefork_rps: wrk not installed (Debian package wrk): skipped\n");
    return;
  }
  int reps = quick ? 1 : 5;
  const char *secs = quick ? "1s" : "2s";
  for (int impl = 0; impl < 2; impl++) {
    struct srv s = {.stop = eventfd(0, EFD_CLOEXEC)};
    int port;
    s.lfd = listen_any(&port);
    if (impl == 0 && mproc_pool_new(&s.pool, NULL) != 0)
      exit(1);
    if (impl == 1) /* the epoll server accepts until EAGAIN */
      fcntl(s.lfd, F_SETFL, fcntl(s.lfd, F_GETFL) | O_NONBLOCK);
    pthread_t t;
    pthread_create(&t, NULL, impl == 0 ? prefork_main : epoll_main, &s);
    double v[5];
    for (int r = 0; r < reps; r++)
      v[r] = run_wrk(port, secs, 32);
    /* The prefork_conns curve: requests/s against wrk's connection count
     * (one 1 s run per point; quick: the first point only). */
    static const int conns[] = {1, 4, 16, 64, 256, 512};
    for (int c = 0; c < (quick ? 1 : 6); c++) {
      printf("CURVE prefork_conns %s %d %.6g\n", impl == 0 ? "mproc" : "os", conns[c],
             run_wrk(port, "1s", conns[c]));
      fflush(stdout);
    }
    uint64_t one = 1;
    if (write(s.stop, &one, sizeof one) != 8)
      exit(1);
    pthread_join(t, NULL);
    close(s.stop);
    close(s.lfd);
    if (s.pool != NULL)
      mproc_pool_free(s.pool);
    bench_report("prefork_rps", impl == 0 ? "mproc" : "os", v, reps, "req/s");
  }
}

int main(void) {
  quick = getenv("MPROC_BENCH_QUICK") != NULL && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  bench_stats();
  bench_prefork();
  return 0;
}
