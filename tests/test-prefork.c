/* The prefork server (S16) under a real HTTP load generator (wrk): accepted
 * sockets travel to pool workers with their tasks; thousands of requests
 * over many connections with zero errors; a worker SIGKILLed under load
 * loses at most the connection it was serving.
 * ctest-labels: threads */
#include "pool-helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

extern char **environ;

static int serve(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg;
  (void)len;
  const int *fds;
  if (mproc_task_fds(ctx, &fds) != 1)
    return 1;
  char req[4096];
  size_t got = 0;
  while (got < 4 || memcmp(req + got - 4, "\r\n\r\n", 4) != 0) {
    if (got == sizeof req)
      return 1;
    ssize_t n = read(fds[0], req + got, sizeof req - got);
    if (n <= 0)
      return 0;
    got += (size_t)n;
  }
  char body[64], resp[256];
  int blen = snprintf(body, sizeof body, "pid %d\n", (int)getpid());
  int rlen =
      snprintf(resp, sizeof resp,
               "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", blen, body);
  send(fds[0], resp, (size_t)rlen, MSG_NOSIGNAL);
  return 0;
}

struct server {
  mproc_pool *pool;
  int lfd, stop;
  int port;
  pthread_t thread;
  _Atomic long accepted;
};

static void *accept_main(void *arg) {
  struct server *s = arg;
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
    atomic_fetch_add(&s->accepted, 1);
  }
}

static void server_start(struct server *s, int workers) {
  memset(s, 0, sizeof *s);
  struct mproc_pool_options o = {.workers = workers};
  mproc_assert_ok(mproc_pool_new(&s->pool, &o));
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(listen(s->lfd, 1024), 0);
  ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
  s->port = ntohs(a.sin_port);
  s->stop = eventfd(0, EFD_CLOEXEC);
  ck_assert_int_eq(pthread_create(&s->thread, NULL, accept_main, s), 0);
}

static void server_stop(struct server *s) {
  uint64_t one = 1;
  ck_assert_int_eq(write(s->stop, &one, sizeof one), 8);
  pthread_join(s->thread, NULL);
  close(s->stop);
  close(s->lfd);
  mproc_assert_ok(mproc_pool_free(s->pool));
}

/* One plain request; returns the pid in the response (0 on failure). */
static pid_t get_pid(int port) {
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  pid_t pid = 0;
  if (connect(c, (struct sockaddr *)&a, sizeof a) == 0) {
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    send(c, req, strlen(req), MSG_NOSIGNAL);
    char buf[512];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(c, buf + got, sizeof buf - 1 - got)) > 0)
      got += (size_t)n;
    buf[got] = '\0';
    char *b = strstr(buf, "\r\n\r\npid ");
    if (strncmp(buf, "HTTP/1.1 200 OK", 15) == 0 && b != NULL)
      pid = (pid_t)atoi(b + 8);
  }
  close(c);
  return pid;
}

static bool is_worker(mproc_pool *p, pid_t pid) {
  pid_t pids[16];
  int n = mproc_pool_worker_pids(p, pids, 16);
  for (int i = 0; i < n; i++)
    if (pids[i] == pid)
      return true;
  return false;
}

/* Start wrk; its output goes to *out_fd. */
static pid_t wrk_start(int port, const char *secs, int *out_fd) {
  int pp[2];
  ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  char *argv[] = {"wrk", "-t2", "-c32", "-d", (char *)secs, "--timeout", "20s", url, NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pp[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pp[1], 2);
  pid_t pid;
  int r = posix_spawnp(&pid, "wrk", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pp[1]);
  ck_assert_msg(r == 0, "cannot run wrk (Debian package wrk; `make test` installs it): %s",
                strerror(r));
  *out_fd = pp[0];
  return pid;
}

struct wrk_result {
  long requests, errors, non2xx;
  char text[8192];
};

static void wrk_finish(pid_t pid, int fd, struct wrk_result *w) {
  size_t got = 0;
  ssize_t n;
  while (got < sizeof w->text - 1 && (n = read(fd, w->text + got, sizeof w->text - 1 - got)) > 0)
    got += (size_t)n;
  w->text[got] = '\0';
  close(fd);
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wrk failed:\n%s", w->text);
  const char *r = strstr(w->text, " requests in ");
  ck_assert_msg(r != NULL, "no request count in wrk's output:\n%s", w->text);
  while (r > w->text && r[-1] >= '0' && r[-1] <= '9')
    r--;
  w->requests = atol(r);
  w->errors = 0;
  const char *e = strstr(w->text, "Socket errors:");
  if (e != NULL) {
    long c = 0, rd = 0, wr = 0, to = 0;
    sscanf(e, "Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &c, &rd, &wr, &to);
    w->errors = c + rd + wr + to;
  }
  const char *x = strstr(w->text, "Non-2xx or 3xx responses:");
  w->non2xx = x != NULL ? atol(x + strlen("Non-2xx or 3xx responses:")) : 0;
}

START_TEST(test_load_without_errors) {
  struct server s;
  server_start(&s, 4);
  for (int i = 0; i < 8; i++) {
    pid_t pid = get_pid(s.port);
    ck_assert_msg(pid > 0 && is_worker(s.pool, pid), "response from pid %d, not a worker", pid);
  }
  int fd;
  pid_t w = wrk_start(s.port, "2s", &fd);
  struct wrk_result r;
  wrk_finish(w, fd, &r);
  ck_assert_msg(r.requests >= 1000, "only %ld requests:\n%s", r.requests, r.text);
  ck_assert_msg(r.errors == 0 && r.non2xx == 0, "errors under load:\n%s", r.text);
  server_stop(&s);
}
END_TEST

START_TEST(test_worker_killed_under_load) {
  struct server s;
  server_start(&s, 4);
  int fd;
  pid_t w = wrk_start(s.port, "3s", &fd);
  /* Once the load is real, kill a busy worker. */
  pid_t victim = 0;
  int64_t dl = mproc_now_ms() + 30000;
  while (victim == 0 && mproc_now_ms() < dl) {
    struct mproc_pool_stats st;
    struct mproc_worker_stats ws[4];
    int n = mproc_pool_stats(s.pool, &st, ws, 4);
    for (int i = 0; st.done >= 300 && i < n; i++)
      if (ws[i].state == MPROC_WORKER_BUSY)
        victim = ws[i].pid;
    if (victim == 0)
      sleep_ms(1);
  }
  ck_assert_msg(victim > 0, "the load never reached the workers");
  ck_assert_int_eq(kill(victim, SIGKILL), 0);
  struct wrk_result r;
  wrk_finish(w, fd, &r);
  ck_assert_msg(r.requests >= 1000, "only %ld requests:\n%s", r.requests, r.text);
  ck_assert_msg(r.errors + r.non2xx <= 1, "more than the one connection lost:\n%s", r.text);
  /* Replaced, and still serving from live workers. */
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws[4];
  ck_assert_int_eq(mproc_pool_stats(s.pool, &st, ws, 4), 4);
  uint64_t replaced = 0;
  for (int i = 0; i < 4; i++)
    replaced += ws[i].replaced;
  ck_assert_uint_eq(replaced, 1);
  ck_assert(!is_worker(s.pool, victim));
  for (int i = 0; i < 8; i++) {
    pid_t pid = get_pid(s.port);
    ck_assert_msg(pid > 0 && pid != victim && is_worker(s.pool, pid), "response from pid %d", pid);
  }
  server_stop(&s);
}
END_TEST

int main(void) {
  Suite *s = suite_create("prefork");
  TCase *tc = mproc_test_tcase(s, "prefork", 90);
  tcase_add_test(tc, test_load_without_errors);
  tcase_add_test(tc, test_worker_killed_under_load);
  return mproc_test_run(s);
}
