/* Descriptor passing over connections (SCM_RIGHTS).
 *
 * Design notes.  Python's multiprocessing.reduction sends a handle as a
 * separate one-byte message; here descriptors ride on the frame header of the
 * message they belong to, so one message and its descriptors arrive together
 * and can never be paired wrongly.  Linux never merges stream segments that
 * carry descriptors with earlier ones in one recvmsg, and recvmsg returns the
 * descriptors together with the first byte they were attached to.  The
 * receiver therefore appends every descriptor it gets to a per-handle FIFO,
 * and the header's descriptor count says how many of them the message takes.
 * That holds even when bytes are read early (a sender draining its peer while
 * it waits for room): the FIFO order is the stream order.
 *
 * Received descriptors are close-on-exec from birth (MSG_CMSG_CLOEXEC).  They
 * belong to the user once handed out, so they are not registered with the
 * library's fd registry; the ones still queued when the handle closes are
 * closed with it.  MSG_CTRUNC (descriptors dropped by the kernel, e.g. at
 * RLIMIT_NOFILE) is reported as -EMFILE rather than silently losing them.
 *
 * The socket-level pair mproc__sendmsg_fds / mproc__recvmsg_fds is the one
 * SCM_RIGHTS implementation of the library: connections use it here, the
 * start methods' requests (start_spawn.c) and the shm transport's worker
 * channel (transport_shm.c) call it; nothing else builds control messages. */
#include "conn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int fdq_push(struct mproc_conn *c, int fd) {
  int *q = mproc__grow(c->fdq, &c->fdq_cap, c->fdq_len, sizeof *q, 8);
  if (q == NULL)
    return MPROC_ENOMEM;
  c->fdq = q;
  c->fdq[c->fdq_len++] = fd;
  return 0;
}

ssize_t mproc__recvmsg_fds(int sock, void *dst, size_t n, int flags, int *fds, size_t max,
                           size_t *nfds, int *fd_err) {
  union {
    char buf[CMSG_SPACE(MPROC__SCM_MAX_FD * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  if (max > MPROC__SCM_MAX_FD)
    max = MPROC__SCM_MAX_FD;
  *nfds = 0;
  *fd_err = 0;
  struct iovec iov = {.iov_base = dst, .iov_len = n};
  ssize_t r;
  struct msghdr m;
  /* A datagram or seqpacket peer that closed with messages unread in its
   * own queue leaves ECONNRESET pending here, reported once BEFORE the
   * messages it sent earlier (a stream socket reports it only after them):
   * read once more so they are not lost.  Reported again, it is the end. */
  int resets = 0;
  do {
    m = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1};
    /* Room for `max` descriptors only: the kernel drops any beyond and
     * reports it with MSG_CTRUNC, so none can arrive unseen. */
    if (max > 0) {
      m.msg_control = ctl.buf;
      m.msg_controllen = CMSG_SPACE(max * sizeof(int));
    }
    r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
  } while (r < 0 && (errno == EINTR || (errno == ECONNRESET && resets++ == 0)));
  if (r < 0)
    return errno == ECONNRESET ? 0 : mproc__neg_errno(); /* a vanished peer: end of stream */
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
      if (*nfds < max)
        fds[(*nfds)++] = fd;
      else
        close(fd); /* cannot happen with the control room above; never leak */
    }
  }
  if (m.msg_flags & MSG_CTRUNC)
    *fd_err = -EMFILE;
  return r;
}

ssize_t mproc__sendmsg_fds(int sock, struct iovec *iov, int iovcnt, int flags, const int *fds,
                           size_t nfds) {
  union {
    char buf[CMSG_SPACE(MPROC__SCM_MAX_FD * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  if (nfds > MPROC__SCM_MAX_FD)
    return -EINVAL;
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
  if (nfds > 0) {
    memset(ctl.buf, 0, sizeof ctl.buf);
    m.msg_control = ctl.buf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(h), fds, nfds * sizeof(int));
  }
  for (;;) {
    ssize_t r = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
    if (r >= 0)
      return r;
    if (errno != EINTR)
      return mproc__neg_errno();
  }
}

/* ---- connections ----------------------------------------------------------- */

ssize_t mproc__conn_recvmsg(struct mproc_conn *c, void *dst, size_t n, bool dontwait) {
  int fds[MPROC__SCM_MAX_FD];
  size_t k;
  int lost, err = 0;
  ssize_t r = mproc__recvmsg_fds(c->fd, dst, n, dontwait ? MSG_DONTWAIT : 0, fds, MPROC__SCM_MAX_FD,
                                 &k, &lost);
  for (size_t i = 0; i < k; i++) {
    if (err == 0)
      err = fdq_push(c, fds[i]);
    if (err != 0)
      close(fds[i]); /* cannot keep it: do not leak it either */
  }
  if (err == 0)
    err = lost;
  /* The bytes are consumed from the socket and must be kept even when
   * descriptors were lost; the loss is remembered and reported by every
   * later receive, since the FIFO no longer matches the stream. */
  if (err != 0 && c->recv_err == 0)
    c->recv_err = err;
  return r;
}

ssize_t mproc__conn_sendmsg(struct mproc_conn *c, struct iovec *iov, int iovcnt, const int *fds,
                            size_t nfds) {
  return mproc__sendmsg_fds(c->fd, iov, iovcnt, MSG_DONTWAIT, fds, nfds);
}

void mproc__conn_drop_fds(struct mproc_conn *c) {
  for (size_t i = 0; i < c->fdq_len; i++)
    close(c->fdq[i]);
  c->fdq_len = 0;
}
