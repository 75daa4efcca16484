/* Descriptor passing over a unix socket (src/fdpass.c): the one SCM_RIGHTS
 * implementation, under connections and the pool's worker channel.  Lost
 * descriptors are reported, never silently dropped or leaked. */
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static void socket_pair(int sv[2]) {
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* Sends "abc" with the given descriptors attached. */
static void send_abc(int sock, const int *fds, size_t n) {
  char msg[] = "abc";
  struct iovec iov = {msg, 3};
  ck_assert_int_eq(mproc__sendmsg_fds(sock, &iov, 1, 0, fds, n), 3);
}

static bool same_file(int a, int b) {
  struct stat sa, sb;
  ck_assert_int_eq(fstat(a, &sa), 0);
  ck_assert_int_eq(fstat(b, &sb), 0);
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

START_TEST(test_round_trip) {
  int sv[2], p[2];
  socket_pair(sv);
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  int out[3] = {p[0], p[1], sv[0]};
  send_abc(sv[0], out, 3);
  char buf[8];
  int in[4];
  size_t n;
  int lost;
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 4, &n, &lost), 3);
  ck_assert_int_eq(lost, 0);
  ck_assert_uint_eq(n, 3);
  ck_assert_mem_eq(buf, "abc", 3);
  for (size_t i = 0; i < n; i++) {
    ck_assert(same_file(in[i], out[i]));
    ck_assert_int_eq(fcntl(in[i], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(in[i]);
  }
  /* Bytes without descriptors; then nothing there; then the peer's end. */
  send_abc(sv[0], NULL, 0);
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 4, &n, &lost), 3);
  ck_assert_uint_eq(n, 0);
  mproc_assert_err((int)mproc__recvmsg_fds(sv[1], buf, sizeof buf, MSG_DONTWAIT, in, 4, &n, &lost),
                   -EAGAIN);
  close(sv[0]);
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 4, &n, &lost), 0);
  close(sv[1]);
  close(p[0]);
  close(p[1]);
}
END_TEST

/* More descriptors than the receiver takes: the kernel drops the rest and
 * the loss is reported (nothing leaks: the fixture counts fds). */
START_TEST(test_more_than_max_is_reported) {
  int sv[2];
  socket_pair(sv);
  int out[3] = {sv[0], sv[0], sv[0]};
  send_abc(sv[0], out, 3);
  char buf[8];
  int in[1];
  size_t n;
  int lost;
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 1, &n, &lost), 3);
  mproc_assert_err(lost, -EMFILE);
  ck_assert_uint_eq(n, 1);
  close(in[0]);
  /* A receiver that takes none learns of them too. */
  send_abc(sv[0], out, 1);
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, NULL, 0, &n, &lost), 3);
  mproc_assert_err(lost, -EMFILE);
  ck_assert_uint_eq(n, 0);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* At the fd limit the kernel cannot install the descriptors (MSG_CTRUNC):
 * the bytes still arrive, and the loss is -EMFILE. */
START_TEST(test_fd_limit_is_reported) {
  int sv[2];
  socket_pair(sv);
  int out[2] = {sv[0], sv[0]};
  send_abc(sv[0], out, 2);
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  int top = sv[0] > sv[1] ? sv[0] : sv[1];
  low = (struct rlimit){.rlim_cur = (rlim_t)top + 1, .rlim_max = old.rlim_max};
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  /* Fill every free slot below the limit. */
  int fill[256], nfill = 0;
  while (nfill < 256 && (fill[nfill] = fcntl(sv[0], F_DUPFD_CLOEXEC, 0)) >= 0)
    nfill++;
  char buf[8];
  int in[2];
  size_t n;
  int lost;
  ssize_t r = mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 2, &n, &lost);
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  ck_assert_int_eq(r, 3);
  mproc_assert_err(lost, -EMFILE);
  for (size_t i = 0; i < n; i++)
    close(in[i]);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_errors) {
  int sv[2];
  socket_pair(sv);
  char msg[] = "x";
  struct iovec iov = {msg, 1};
  int many[MPROC__SCM_MAX_FD + 1];
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(many); i++)
    many[i] = sv[0];
  mproc_assert_err((int)mproc__sendmsg_fds(sv[0], &iov, 1, 0, many, MPROC__ARRAY_SIZE(many)),
                   MPROC_EINVAL);
  int p[2];
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  mproc_assert_err((int)mproc__sendmsg_fds(p[1], &iov, 1, 0, NULL, 0), -ENOTSOCK);
  size_t n;
  int lost;
  mproc_assert_err((int)mproc__recvmsg_fds(p[0], msg, 1, 0, NULL, 0, &n, &lost), -ENOTSOCK);
  close(p[0]);
  close(p[1]);
  /* A peer that is gone: sending is -EPIPE, without SIGPIPE. */
  close(sv[1]);
  mproc_assert_err((int)mproc__sendmsg_fds(sv[0], &iov, 1, 0, NULL, 0), -EPIPE);
  close(sv[0]);
}
END_TEST

/* A seqpacket peer that closed with messages unread in its own queue: the
 * kernel reports ECONNRESET before the messages it sent earlier, which
 * still arrive, then the end of the stream. */
START_TEST(test_messages_before_a_reset_arrive) {
  int sv[2], p[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  send_abc(sv[0], &p[0], 1);
  send_abc(sv[1], NULL, 0); /* never read by sv[0] */
  close(sv[0]);
  char buf[8];
  int in[4];
  size_t n;
  int lost;
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 4, &n, &lost), 3);
  ck_assert_uint_eq(n, 1);
  ck_assert_mem_eq(buf, "abc", 3);
  ck_assert(same_file(in[0], p[0]));
  close(in[0]);
  ck_assert_int_eq(mproc__recvmsg_fds(sv[1], buf, sizeof buf, 0, in, 4, &n, &lost), 0);
  close(sv[1]);
  close(p[0]);
  close(p[1]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fdpass");
  TCase *tc = mproc_test_tcase(s, "scm_rights", 30);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_more_than_max_is_reported);
  tcase_add_test(tc, test_fd_limit_is_reported);
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_messages_before_a_reset_arrive);
  return mproc_test_run(s);
}
