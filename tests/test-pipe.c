/* Connections (src/conn.c, src/fdpass.c, src/conn_wait.c): Python's Pipe and
 * Connection semantics across processes, framing edge cases, multi-GiB
 * messages, simultaneous large sends, descriptor passing. */
#include "harness.h"
#include "internal.h"
#include "conn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LONG_MS 60000

/* ---- helper processes ------------------------------------------------- */

struct child {
  pid_t pid;
  int pidfd;
};

static struct child start(mproc__child_fn fn, void *arg, int keep_fd) {
  struct mproc__spawn_opts o = {.fn = fn, .arg = arg, .keep_fds = &keep_fd, .nkeep = 1};
  struct child ch;
  mproc_assert_ok(mproc__spawn(&o, &ch.pid, &ch.pidfd));
  return ch;
}

static int finish(struct child ch) {
  int code = -1000;
  mproc_assert_ok(mproc__reap(ch.pidfd, &code, mproc__deadline(LONG_MS * 3)));
  mproc_assert_ok(mproc__close(ch.pidfd));
  return code;
}

/* Fills p with a pattern that depends on seed and position (fast, so GiB
 * buffers stay cheap), and checks it. */
static void pattern(unsigned char *p, size_t n, uint64_t seed) {
  uint64_t *w = (uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    w[i] = (i * 0x9e3779b97f4a7c15ull) ^ seed;
  for (size_t i = n / 8 * 8; i < n; i++)
    p[i] = (unsigned char)(i ^ seed);
}
static int pattern_ok(const unsigned char *p, size_t n, uint64_t seed) {
  const uint64_t *w = (const uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    if (w[i] != ((i * 0x9e3779b97f4a7c15ull) ^ seed))
      return 0;
  for (size_t i = n / 8 * 8; i < n; i++)
    if (p[i] != (unsigned char)(i ^ seed))
      return 0;
  return 1;
}

/* ---- basics ----------------------------------------------------------- */

/* Child: echo every message back with its bytes reversed, until EOF. */
static int echo_child(void *arg) {
  mproc_conn *c = arg;
  for (;;) {
    void *buf;
    size_t len;
    int r = mproc_conn_recv_alloc(c, &buf, &len, LONG_MS);
    if (r == MPROC_EEOF)
      return 0;
    if (r != 0)
      return 10;
    unsigned char *b = buf;
    for (size_t i = 0; i < len / 2; i++) {
      unsigned char t = b[i];
      b[i] = b[len - 1 - i];
      b[len - 1 - i] = t;
    }
    r = mproc_conn_send(c, b, len, LONG_MS);
    free(buf);
    if (r != 0)
      return 11;
  }
}

START_TEST(test_duplex_across_processes) {
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  struct child ch = start(echo_child, b, mproc_conn_fd(b));
  mproc_assert_ok(mproc_conn_free(b));
  const char *msgs[] = {"hello", "", "x", "a longer message with some words"};
  for (size_t i = 0; i < 4; i++) {
    size_t n = strlen(msgs[i]);
    mproc_assert_ok(mproc_conn_send(a, msgs[i], n, LONG_MS));
    char buf[64];
    size_t len = 99;
    mproc_assert_ok(mproc_conn_recv(a, buf, sizeof buf, &len, LONG_MS));
    ck_assert_uint_eq(len, n);
    for (size_t k = 0; k < n; k++)
      ck_assert_int_eq(buf[k], msgs[i][n - 1 - k]);
  }
  /* Many messages in flight at once keep their boundaries and order. */
  for (int i = 0; i < 1000; i++)
    mproc_assert_ok(mproc_conn_send(a, &i, sizeof i, LONG_MS));
  for (int i = 0; i < 1000; i++) {
    unsigned char buf[4];
    size_t len;
    mproc_assert_ok(mproc_conn_recv(a, buf, sizeof buf, &len, LONG_MS));
    ck_assert_uint_eq(len, 4);
    unsigned char want[4];
    memcpy(want, &i, 4);
    for (int k = 0; k < 4; k++)
      ck_assert_int_eq(buf[k], want[3 - k]);
  }
  mproc_assert_ok(mproc_conn_free(a));
  ck_assert_int_eq(finish(ch), 0);
}
END_TEST

START_TEST(test_oneway) {
  mproc_conn *r, *w;
  struct mproc_pipe_options o = {.flags = MPROC_PIPE_ONEWAY};
  mproc_assert_ok(mproc_pipe(&r, &w, &o));
  char buf[8];
  size_t len;
  mproc_assert_err(mproc_conn_send(r, "x", 1, 0), MPROC_ESTATE);
  mproc_assert_err(mproc_conn_recv(w, buf, sizeof buf, &len, 0), MPROC_ESTATE);
  mproc_assert_err(mproc_conn_poll(w, 0), MPROC_ESTATE);
  mproc_assert_ok(mproc_conn_send(w, "abc", 3, 0));
  mproc_assert_ok(mproc_conn_poll(r, 0));
  mproc_assert_ok(mproc_conn_recv(r, buf, sizeof buf, &len, 0));
  ck_assert_uint_eq(len, 3);
  ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
  struct mproc_wait_item it = {.conn = w};
  mproc_assert_err(mproc_conn_wait(&it, 1, 0), MPROC_EINVAL);
  mproc_assert_ok(mproc_conn_free(r));
  mproc_assert_ok(mproc_conn_free(w));
}
END_TEST

START_TEST(test_too_small_loses_nothing) {
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  mproc_assert_ok(mproc_conn_send(a, "0123456789", 10, 0));
  mproc_assert_ok(mproc_conn_send(a, "z", 1, 0));
  char buf[16];
  size_t len = 0;
  mproc_assert_err(mproc_conn_recv(b, buf, 4, &len, 0), MPROC_ETOOSMALL);
  ck_assert_uint_eq(len, 10);
  mproc_assert_err(mproc_conn_recv(b, NULL, 0, &len, 0), MPROC_ETOOSMALL);
  mproc_assert_ok(mproc_conn_recv(b, buf, len, &len, 0));
  ck_assert_uint_eq(len, 10);
  ck_assert_int_eq(memcmp(buf, "0123456789", 10), 0);
  void *p;
  mproc_assert_ok(mproc_conn_recv_alloc(b, &p, &len, 0));
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(*(char *)p, 'z');
  free(p);
  mproc_assert_ok(mproc_conn_free(a));
  mproc_assert_ok(mproc_conn_free(b));
}
END_TEST

START_TEST(test_timeouts_poll_and_eof) {
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  char buf[8];
  size_t len;
  void *p = (void *)1;
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 50), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  mproc_assert_err(mproc_conn_recv_alloc(b, &p, &len, 0), MPROC_ETIMEDOUT);
  ck_assert_ptr_null(p);
  mproc_assert_err(mproc_conn_poll(b, 0), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_conn_poll(b, 20), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_conn_send(a, "hi", 2, 0));
  mproc_assert_ok(mproc_conn_free(a));
  /* Messages sent before the close are still delivered, then EOF. */
  mproc_assert_ok(mproc_conn_poll(b, 0));
  mproc_assert_ok(mproc_conn_recv(b, buf, sizeof buf, &len, 0));
  ck_assert_uint_eq(len, 2);
  mproc_assert_ok(mproc_conn_poll(b, 0));
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, -1), MPROC_EEOF);
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, -1), MPROC_EEOF);
  /* Sending to a closed peer is an error, never SIGPIPE. */
  mproc_assert_err(mproc_conn_send(b, "x", 1, 0), MPROC_EEOF);
  mproc_assert_ok(mproc_conn_free(b));
}
END_TEST

/* A frame that arrives in pieces: a deadline mid-payload loses nothing. */
START_TEST(test_partial_frame_resumes) {
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  int raw = mproc_conn_fd(a);
  uint64_t hdr[2] = {6, 0x6d70636eull << 32};
  ck_assert_int_eq(write(raw, hdr, 10), 10);
  char buf[16];
  size_t len;
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 20), MPROC_ETIMEDOUT);
  ck_assert_int_eq(write(raw, (char *)hdr + 10, 6), 6);
  ck_assert_int_eq(write(raw, "abc", 3), 3);
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 20), MPROC_ETIMEDOUT);
  mproc_assert_err(mproc_conn_recv(b, buf, 2, &len, 0), MPROC_ETOOSMALL);
  ck_assert_uint_eq(len, 6);
  ck_assert_int_eq(write(raw, "def", 3), 3);
  mproc_assert_ok(mproc_conn_recv(b, buf, sizeof buf, &len, 0));
  ck_assert_uint_eq(len, 6);
  ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
  /* Garbage is reported, not parsed. */
  ck_assert_int_eq(write(raw, "garbage-garbage-", 16), 16);
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 0), MPROC_ECORRUPT);
  mproc_assert_ok(mproc_conn_free(a));
  mproc_assert_ok(mproc_conn_free(b));
}
END_TEST

START_TEST(test_bad_arguments) {
  mproc_conn *a, *b;
  struct mproc_pipe_options bad = {.flags = 1u << 7};
  mproc_assert_err(mproc_pipe(NULL, &b, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pipe(&a, NULL, NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_pipe(&a, &b, &bad), MPROC_EINVAL);
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  char buf[4];
  size_t len, nfds = 1;
  int fds[1] = {-1};
  mproc_assert_err(mproc_conn_send(NULL, "x", 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_send(a, NULL, 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_send(a, "x", 1, -2), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_send_fds(a, "x", 1, fds, 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_send_fds(a, "x", 1, NULL, 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_send_fds(a, "x", 1, fds, MPROC_CONN_MAX_FDS + 1, 0), MPROC_EINVAL);
  fds[0] = 1000;
  mproc_assert_err(mproc_conn_send_fds(a, "x", 1, fds, 1, 0), -EBADF);
  mproc_assert_err(mproc_conn_recv(NULL, buf, 4, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv(b, NULL, 4, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv(b, buf, 4, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv(b, buf, 4, &len, -5), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv_alloc(b, NULL, &len, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv_fds(b, buf, 4, &len, NULL, &nfds, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_recv_fds(b, buf, 4, &len, fds, NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_poll(NULL, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_fd(NULL), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_wait(NULL, 1, 0), MPROC_EINVAL);
  struct mproc_wait_item it = {.fd = -1};
  mproc_assert_err(mproc_conn_wait(&it, 1, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_wait(&it, 0, 0), MPROC_EINVAL);
  mproc_assert_err(mproc_conn_adopt(NULL, -1, 0), MPROC_EINVAL);
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  mproc_conn *c;
  mproc_assert_err(mproc_conn_adopt(&c, pfd[0], 0), -ENOTSOCK); /* closes pfd[0] */
  close(pfd[1]);
  mproc_assert_ok(mproc_conn_free(NULL));
  /* The descriptor errors left the stream intact. */
  mproc_assert_ok(mproc_conn_send(a, "ok", 2, 0));
  mproc_assert_ok(mproc_conn_recv(b, buf, sizeof buf, &len, 0));
  ck_assert_uint_eq(len, 2);
  mproc_assert_ok(mproc_conn_free(a));
  mproc_assert_ok(mproc_conn_free(b));
}
END_TEST

START_TEST(test_adopt) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_conn_adopt(&a, sv[0], 0));
  mproc_assert_ok(mproc_conn_adopt(&b, sv[1], 0));
  mproc_assert_ok(mproc_conn_send(a, "hey", 3, 0));
  char buf[4];
  size_t len;
  mproc_assert_ok(mproc_conn_recv(b, buf, sizeof buf, &len, 0));
  ck_assert_uint_eq(len, 3);
  mproc_assert_ok(mproc_conn_free(a));
  mproc_assert_ok(mproc_conn_free(b));
}
END_TEST

START_TEST(test_create_destroy_cycles) {
  for (int i = 0; i < 1000; i++) {
    mproc_conn *a, *b;
    mproc_assert_ok(mproc_pipe(&a, &b, NULL));
    mproc_assert_ok(mproc_conn_send(a, &i, sizeof i, 0));
    mproc_assert_ok(mproc_conn_free(a));
    mproc_assert_ok(mproc_conn_free(b));
  }
}
END_TEST

/* ---- large messages --------------------------------------------------- */

struct big_arg {
  mproc_conn *c;
  size_t size;
};

/* Child: receives one big message into its own buffer, checks it, answers
 * with its checksum. */
static int big_recv_child(void *arg) {
  struct big_arg *a = arg;
  unsigned char *buf = malloc(a->size);
  if (buf == NULL)
    return 20;
  size_t len;
  if (mproc_conn_recv(a->c, buf, a->size, &len, LONG_MS) != 0 || len != a->size)
    return 21;
  int ok = pattern_ok(buf, len, 7);
  free(buf);
  return mproc_conn_send(a->c, &ok, sizeof ok, LONG_MS) == 0 ? 0 : 22;
}

START_TEST(test_three_gib_message) {
  size_t size = (size_t)3 << 30;
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  struct big_arg arg = {b, size};
  struct child ch = start(big_recv_child, &arg, mproc_conn_fd(b));
  mproc_assert_ok(mproc_conn_free(b));
  unsigned char *buf = malloc(size);
  ck_assert_ptr_nonnull(buf);
  pattern(buf, size, 7);
  mproc_assert_ok(mproc_conn_send(a, buf, size, LONG_MS));
  free(buf);
  int ok = 0;
  size_t len;
  mproc_assert_ok(mproc_conn_recv(a, &ok, sizeof ok, &len, LONG_MS));
  ck_assert_int_eq(ok, 1);
  mproc_assert_ok(mproc_conn_free(a));
  ck_assert_int_eq(finish(ch), 0);
}
END_TEST

/* Child: sends its big message while the parent sends its own. */
static int big_both_child(void *arg) {
  struct big_arg *a = arg;
  unsigned char *out = malloc(a->size);
  if (out == NULL)
    return 30;
  pattern(out, a->size, 2);
  if (mproc_conn_send(a->c, out, a->size, LONG_MS) != 0)
    return 31;
  free(out);
  void *in;
  size_t len;
  if (mproc_conn_recv_alloc(a->c, &in, &len, LONG_MS) != 0 || len != a->size)
    return 32;
  int ok = pattern_ok(in, len, 1);
  free(in);
  return ok ? 0 : 33;
}

START_TEST(test_large_both_ways_at_once) {
  size_t size = (size_t)1 << 30;
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  struct big_arg arg = {b, size};
  struct child ch = start(big_both_child, &arg, mproc_conn_fd(b));
  mproc_assert_ok(mproc_conn_free(b));
  unsigned char *out = malloc(size);
  ck_assert_ptr_nonnull(out);
  pattern(out, size, 1);
  /* Both ends are in send now: neither reads until its send is done. */
  mproc_assert_ok(mproc_conn_send(a, out, size, LONG_MS));
  free(out);
  void *in;
  size_t len;
  mproc_assert_ok(mproc_conn_recv_alloc(a, &in, &len, LONG_MS));
  ck_assert_uint_eq(len, size);
  ck_assert(pattern_ok(in, len, 2));
  free(in);
  mproc_assert_ok(mproc_conn_free(a));
  ck_assert_int_eq(finish(ch), 0);
}
END_TEST

/* ---- descriptor passing ----------------------------------------------- */

/* Child: receives a listening socket and an accepted one; answers on the
 * accepted one, accepts one more client on the listener and answers it. */
static int socket_child(void *arg) {
  mproc_conn *c = arg;
  char buf[32];
  size_t len, nfds = 2;
  int fds[2];
  if (mproc_conn_recv_fds(c, buf, sizeof buf, &len, fds, &nfds, LONG_MS) != 0 || nfds != 2)
    return 40;
  if (!(fcntl(fds[0], F_GETFD) & FD_CLOEXEC) || !(fcntl(fds[1], F_GETFD) & FD_CLOEXEC))
    return 41;
  char req[8] = {0};
  if (read(fds[1], req, 4) != 4 || memcmp(req, "ping", 4) != 0)
    return 42;
  if (write(fds[1], "pong", 4) != 4)
    return 43;
  int s2 = accept4(fds[0], NULL, NULL, SOCK_CLOEXEC);
  if (s2 < 0 || write(s2, "hello", 5) != 5)
    return 44;
  close(s2);
  close(fds[0]);
  close(fds[1]);
  return 0;
}

START_TEST(test_pass_tcp_sockets) {
  int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(lst, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ck_assert_int_eq(bind(lst, (struct sockaddr *)&sa, sizeof sa), 0);
  ck_assert_int_eq(listen(lst, 4), 0);
  socklen_t sl = sizeof sa;
  ck_assert_int_eq(getsockname(lst, (struct sockaddr *)&sa, &sl), 0);
  int cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(connect(cli, (struct sockaddr *)&sa, sizeof sa), 0);
  int acc = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
  ck_assert_int_ge(acc, 0);

  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  struct child ch = start(socket_child, b, mproc_conn_fd(b));
  mproc_assert_ok(mproc_conn_free(b));
  int fds[2] = {lst, acc};
  /* A message without descriptors first: order and pairing are kept. */
  mproc_assert_ok(mproc_conn_send_fds(a, "sock", 4, fds, 2, LONG_MS));
  close(acc); /* the child has its own duplicate now */
  close(lst);
  ck_assert_int_eq(write(cli, "ping", 4), 4);
  char buf[8] = {0};
  ck_assert_int_eq(read(cli, buf, 4), 4);
  ck_assert_str_eq(buf, "pong");
  close(cli);
  int cli2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(connect(cli2, (struct sockaddr *)&sa, sizeof sa), 0);
  memset(buf, 0, sizeof buf);
  ck_assert_int_eq(read(cli2, buf, 5), 5);
  ck_assert_str_eq(buf, "hello");
  close(cli2);
  mproc_assert_ok(mproc_conn_free(a));
  ck_assert_int_eq(finish(ch), 0);
}
END_TEST

START_TEST(test_fds_in_order_and_too_small) {
  mproc_conn *a, *b;
  mproc_assert_ok(mproc_pipe(&a, &b, NULL));
  int p1[2], p2[2];
  ck_assert_int_eq(pipe2(p1, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(p2, O_CLOEXEC), 0);
  mproc_assert_ok(mproc_conn_send_fds(a, "one", 3, &p1[1], 1, 0));
  mproc_assert_ok(mproc_conn_send(a, "plain", 5, 0));
  mproc_assert_ok(mproc_conn_send_fds(a, "two", 3, &p2[1], 1, 0));
  close(p1[1]);
  close(p2[1]);
  char buf[8];
  size_t len, nfds = 0;
  int fd = -1;
  /* Plain receive refuses a message with descriptors; no room for fds too. */
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 0), MPROC_ETOOSMALL);
  mproc_assert_err(mproc_conn_recv_fds(b, buf, sizeof buf, &len, NULL, &nfds, 0), MPROC_ETOOSMALL);
  ck_assert_uint_eq(nfds, 1);
  ck_assert_uint_eq(len, 3);
  mproc_assert_ok(mproc_conn_recv_fds(b, buf, sizeof buf, &len, &fd, &nfds, 0));
  ck_assert_int_eq(write(fd, "1", 1), 1);
  close(fd);
  nfds = 1;
  mproc_assert_ok(mproc_conn_recv_fds(b, buf, sizeof buf, &len, &fd, &nfds, 0));
  ck_assert_uint_eq(nfds, 0);
  ck_assert_uint_eq(len, 5);
  nfds = 1;
  mproc_assert_ok(mproc_conn_recv_fds(b, buf, sizeof buf, &len, &fd, &nfds, 0));
  ck_assert_uint_eq(nfds, 1);
  ck_assert_int_eq(write(fd, "2", 1), 1);
  close(fd);
  char c;
  ck_assert_int_eq(read(p1[0], &c, 1), 1);
  ck_assert_int_eq(c, '1');
  ck_assert_int_eq(read(p2[0], &c, 1), 1);
  ck_assert_int_eq(c, '2');
  close(p1[0]);
  close(p2[0]);
  /* Descriptors never handed out are closed with the connection. */
  int p3[2];
  ck_assert_int_eq(pipe2(p3, O_CLOEXEC), 0);
  mproc_assert_ok(mproc_conn_send_fds(a, "x", 1, &p3[1], 1, 0));
  close(p3[1]);
  mproc_assert_ok(mproc_conn_poll(b, 0));
  mproc_assert_err(mproc_conn_recv(b, buf, sizeof buf, &len, 0), MPROC_ETOOSMALL);
  mproc_assert_ok(mproc_conn_free(b));
  ck_assert_int_eq(read(p3[0], &c, 1), 0); /* every write end is closed */
  close(p3[0]);
  mproc_assert_ok(mproc_conn_free(a));
}
END_TEST

/* ---- wait on many ----------------------------------------------------- */

static int send_after_msg(void *arg) {
  mproc_conn *c = arg;
  char buf[4];
  size_t len;
  if (mproc_conn_recv(c, buf, sizeof buf, &len, LONG_MS) != 0)
    return 50;
  return mproc_conn_send(c, "done", 4, LONG_MS) == 0 ? 0 : 51;
}

START_TEST(test_wait_many) {
  mproc_conn *a1, *b1, *a2, *b2;
  mproc_assert_ok(mproc_pipe(&a1, &b1, NULL));
  mproc_assert_ok(mproc_pipe(&a2, &b2, NULL));
  struct child ch = start(send_after_msg, b1, mproc_conn_fd(b1));
  struct mproc_wait_item items[3] = {{.conn = a1}, {.conn = a2}, {.fd = ch.pidfd}};
  mproc_assert_err(mproc_conn_wait(items, 3, 30), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_conn_send(a1, "go", 2, 0));
  /* Either the message or the child's exit comes first; wait for both. */
  int seen_msg = 0, seen_exit = 0;
  while (!(seen_msg && seen_exit)) {
    int n = mproc_conn_wait(items, 3, LONG_MS);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(items[1].ready, 0);
    if (items[0].ready) {
      char buf[8];
      size_t len;
      mproc_assert_ok(mproc_conn_recv(a1, buf, sizeof buf, &len, 0));
      ck_assert_uint_eq(len, 4);
      seen_msg = 1;
      items[0].conn = a2; /* stop watching a1 (its peer closes with the child) */
    }
    if (items[2].ready)
      seen_exit = 1;
    if (seen_exit)
      items[2] = (struct mproc_wait_item){.conn = a2};
  }
  ck_assert_int_eq(finish(ch), 0);
  /* A message buffered in the handle (not in the socket) counts as ready. */
  mproc_assert_ok(mproc_conn_send(b2, "m1", 2, 0));
  mproc_assert_ok(mproc_conn_send(b2, "m2", 2, 0));
  char buf[4];
  size_t len;
  mproc_assert_ok(mproc_conn_recv(a2, buf, sizeof buf, &len, 0));
  struct mproc_wait_item one = {.conn = a2};
  ck_assert_int_eq(mproc_conn_wait(&one, 1, 0), 1);
  mproc_assert_ok(mproc_conn_recv(a2, buf, sizeof buf, &len, 0));
  mproc_assert_err(mproc_conn_wait(&one, 1, 0), MPROC_ETIMEDOUT);
  mproc_assert_ok(mproc_conn_free(a1));
  mproc_assert_ok(mproc_conn_free(b1));
  mproc_assert_ok(mproc_conn_free(a2));
  mproc_assert_ok(mproc_conn_free(b2));
}
END_TEST

/* A frame header that arrives late, then no payload: each receive call
 * times out at its one deadline, taken at entry, not at a second deadline
 * started once the header is in. */
struct late_header {
  int fd;
  int delay_ms;
};

static void *send_header_late(void *arg) {
  const struct late_header *l = arg;
  struct timespec ts = {l->delay_ms / 1000, (long)(l->delay_ms % 1000) * 1000000L};
  nanosleep(&ts, NULL); /* the lateness under test, not synchronisation */
  struct {
    uint64_t len;
    uint32_t nfds, magic;
  } h = {16, 0, MPROC__FRAME_MAGIC};
  ssize_t n = write(l->fd, &h, sizeof h);
  (void)n;
  return NULL;
}

START_TEST(test_recv_deadline_covers_the_payload) {
  for (int which = 0; which < 3; which++) {
    mproc_conn *a, *b;
    mproc_assert_ok(mproc_pipe(&a, &b, NULL));
    struct late_header l = {mproc_conn_fd(a), 1500};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, send_header_late, &l), 0);
    char buf[64];
    size_t len, nfds = 0;
    void *p = NULL;
    int64_t t0 = mproc_now_ms();
    int r = which == 0   ? mproc_conn_recv(b, buf, sizeof buf, &len, 2000)
            : which == 1 ? mproc_conn_recv_fds(b, buf, sizeof buf, &len, NULL, &nfds, 2000)
                         : mproc_conn_recv_alloc(b, &p, &len, 2000);
    int64_t took = mproc_now_ms() - t0;
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    mproc_assert_err(r, MPROC_ETIMEDOUT);
    ck_assert_ptr_null(p);
    ck_assert_int_ge(took, 2000);
    /* A second deadline would end at 1500 + 2000 ms. */
    ck_assert_msg(took < 3000, "call %d took %lld ms", which, (long long)took);
    mproc_assert_ok(mproc_conn_free(a));
    mproc_assert_ok(mproc_conn_free(b));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("pipe");
  TCase *tc = mproc_test_tcase(s, "pipe", 60);
  tcase_add_test(tc, test_duplex_across_processes);
  tcase_add_test(tc, test_oneway);
  tcase_add_test(tc, test_too_small_loses_nothing);
  tcase_add_test(tc, test_timeouts_poll_and_eof);
  tcase_add_test(tc, test_partial_frame_resumes);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_adopt);
  tcase_add_test(tc, test_create_destroy_cycles);
  tcase_add_test(tc, test_pass_tcp_sockets);
  tcase_add_test(tc, test_fds_in_order_and_too_small);
  tcase_add_test(tc, test_wait_many);
  tcase_add_test(tc, test_recv_deadline_covers_the_payload);
  TCase *big = mproc_test_tcase(s, "large", 240);
  tcase_add_test(big, test_three_gib_message);
  tcase_add_test(big, test_large_both_ways_at_once);
  return mproc_test_run(s);
}
