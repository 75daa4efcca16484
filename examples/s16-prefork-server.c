/* S16: a prefork HTTP server: the parent accepts, pool workers serve */
#include <arpa/inet.h>
#include <mproc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Requests for "/together" meet here before they are answered, so that the
 * demo can show them served at the same time by different workers.  Made
 * before the pool, so every worker inherits it. */
static mproc_barrier *together;
#define TOGETHER 4

/* Runs in a worker: the accepted socket arrived with the task. */
static int serve(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  const int *fds;
  if (mproc_task_fds(ctx, &fds) != 1)
    return 1;
  char req[4096];
  size_t got = 0;
  while (got < sizeof req - 1 && (got < 4 || memcmp(req + got - 4, "\r\n\r\n", 4) != 0)) {
    ssize_t n = read(fds[0], req + got, sizeof req - 1 - got);
    if (n <= 0)
      return 0; /* the client went away */
    got += (size_t)n;
  }
  req[got] = '\0';
  if (strncmp(req, "GET /together ", 14) == 0) {
    /* A worker runs one task at a time, so TOGETHER requests can only meet
     * here if TOGETHER different workers hold them; a lost client breaks the
     * wait after a bounded time instead of holding the workers. */
    mproc_barrier_wait(together, 30000);
    mproc_barrier_leave(together);
  }
  char body[64], resp[256];
  int blen = snprintf(body, sizeof body, "served by pid %d\n", (int)getpid());
  int rlen = snprintf(resp, sizeof resp,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n%s",
                      blen, body);
  send(fds[0], resp, (size_t)rlen, MSG_NOSIGNAL);
  return 0; /* the worker closes the socket when the task returns */
}

/* The parent: accept each connection and hand the socket to the pool. */
static void accept_loop(mproc_pool *pool, int lfd, int64_t until_ms) {
  while (until_ms < 0 || mproc_now_ms() < until_ms) {
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0)
      continue;
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    mproc_future *f;
    struct mproc_submit_options o = {.retries = -1, .fds = &c, .nfds = 1};
    if (mproc_pool_submit_ex(pool, serve, NULL, 0, &o, &f) == 0)
      mproc_future_free(f); /* fire and forget: the pool owns a copy of c */
    close(c);
  }
}

static int port;

static int connect_to_server(void) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
    close(s);
    return -1;
  }
  return s;
}

/* Reads the response on s and returns the worker pid it names (0 if none). */
static int read_response(int s) {
  char buf[512];
  size_t got = 0;
  ssize_t n;
  while (got < sizeof buf - 1 && (n = read(s, buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)n;
  buf[got] = '\0';
  char *body = strstr(buf, "\r\n\r\n");
  int pid = 0;
  if (body == NULL || sscanf(body + 4, "served by pid %d", &pid) != 1)
    return 0;
  return pid;
}

static void send_request(int s, const char *path) {
  char req[128];
  int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: demo\r\n\r\n", path);
  send(s, req, (size_t)len, MSG_NOSIGNAL);
}

/* The demo's client.  Requests sent one after another each find every worker
 * idle, and the first idle worker takes each of them: one pid serves them
 * all, which is what a pool should do.  Requests in flight at the same time
 * are spread over the workers. */
static void *client(void *arg) {
  printf("three requests, one after another:\n");
  for (int i = 0; i < 3; i++) {
    int s = connect_to_server();
    if (s < 0)
      continue;
    send_request(s, "/");
    int pid = read_response(s);
    printf("  request %d: served by pid %d\n", i, pid);
    close(s);
  }
  printf("%d requests at the same time, each held until all %d are in a worker:\n", TOGETHER,
         TOGETHER);
  int socks[TOGETHER], pids[TOGETHER], distinct = 0;
  for (int i = 0; i < TOGETHER; i++) {
    socks[i] = connect_to_server();
    if (socks[i] >= 0)
      send_request(socks[i], "/together");
  }
  for (int i = 0; i < TOGETHER; i++) {
    pids[i] = socks[i] >= 0 ? read_response(socks[i]) : 0;
    if (socks[i] >= 0)
      close(socks[i]);
    printf("  concurrent request %d: served by pid %d\n", i, pids[i]);
    bool seen = pids[i] == 0;
    for (int j = 0; j < i && !seen; j++)
      seen = pids[j] == pids[i];
    distinct += !seen;
  }
  printf("%d concurrent requests, served by %d different workers\n", TOGETHER, distinct);
  atomic_store((_Atomic int *)arg, 1);
  return NULL;
}

int main(int argc, char **argv) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET}; /* port 0: the kernel picks */
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1024) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
    return 1;
  port = ntohs(a.sin_port);
  mproc_pool *pool;
  if (mproc_barrier_new(&together, TOGETHER) != 0)
    return 1;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4}) != 0) {
    mproc_barrier_free(together);
    return 1;
  }
  pid_t pids[4];
  int n = mproc_pool_worker_pids(pool, pids, 4);
  printf("listening on 127.0.0.1:%d with %d workers:", port, n);
  for (int i = 0; i < n; i++)
    printf(" %d", (int)pids[i]);
  printf("\n");
  fflush(stdout);
  if (argc > 1) { /* "s16-prefork-server SECONDS": serve that long (load tests) */
    accept_loop(pool, lfd, mproc_now_ms() + 1000 * atoi(argv[1]));
  } else { /* demo: serve our own client's requests */
    pthread_t t;
    _Atomic int done = 0;
    pthread_create(&t, NULL, client, &done);
    while (!atomic_load(&done))
      accept_loop(pool, lfd, mproc_now_ms() + 100);
    pthread_join(t, NULL);
  }
  close(lfd);
  mproc_pool_free(pool);
  mproc_barrier_free(together);
  return 0;
}
