/* Connections: whole messages over a socketpair (Python's Pipe/Connection).
 *
 * Design notes.  A connection is an AF_UNIX SOCK_STREAM socket (so
 * descriptors can travel with messages) and a process-local handle.  Every
 * message is one frame: a 16-byte header (u64 length, u32 descriptor count,
 * u32 magic) followed by the payload, so lengths are 64-bit and a message of
 * several GiB is just a longer frame (cpython #79333 was a 32-bit length).
 *
 * Receive side.  Bytes are read into the handle's buffer, rbuf[rpos..rlen):
 * one recvmsg usually brings a small message's header and payload together,
 * so a small receive costs one system call, like a raw read.  A payload
 * larger than what is buffered is read straight into the caller's memory.
 * Nothing is ever lost:
 *   - a too-small buffer is detected from the header before anything is
 *     consumed (MPROC_ETOOSMALL, the same message is returned next time);
 *   - a deadline that passes half-way through a payload pushes the header and
 *     the bytes read so far back into rbuf, and the next receive resumes.
 * Every receive takes its deadline once, at entry (recv_header): waiting for
 * the header and reading the payload share it.
 *
 * Send side, and why two large senders never deadlock.  A frame is written
 * with non-blocking sendmsg (MSG_NOSIGNAL: a vanished peer is MPROC_EEOF,
 * never SIGPIPE).  When the socket is full the sender polls for room AND for
 * input, and reads whatever the peer sends into rbuf meanwhile.  So if both
 * ends send multi-GiB messages at once, each keeps draining the other and
 * both complete (the cost is buffering the incoming message in memory).  A
 * send whose deadline passes before its first byte leaves the connection as
 * it was; one that stopped mid-frame marks the handle send_broken, because
 * the peer would otherwise parse the rest of the stream as garbage.
 *
 * States of a handle: open (READ and/or WRITE) -> [eof seen: receives drain
 * rbuf then report MPROC_EEOF] -> freed (mproc_conn_free).  Two flags are
 * sticky: send_broken, and recv_err (descriptors the kernel dropped or that
 * could not be queued, fdpass.c: the message that needed them then fails
 * with that code instead of being handed out short). */
#include "conn.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define RBUF_CHUNK 65536

struct frame {
  uint64_t len;
  uint32_t nfds;
  uint32_t magic;
};
_Static_assert(sizeof(struct frame) == MPROC__FRAME_HDR, "frame header is 16 bytes");

static int conn_new(int fd, unsigned mode, mproc_conn **out) {
  mproc_conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MPROC_ENOMEM;
  c->fd = fd;
  c->mode = mode;
  *out = c;
  return 0;
}

MPROC_EXTERN int mproc_pipe(mproc_conn **a, mproc_conn **b, const struct mproc_pipe_options *opts) {
  unsigned flags = opts != NULL ? opts->flags : 0;
  if (a == NULL || b == NULL || (flags & ~(unsigned)MPROC_PIPE_ONEWAY))
    return MPROC_EINVAL;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return mproc__neg_errno();
  sv[0] = mproc__fd_above_std(sv[0]);
  sv[1] = mproc__fd_above_std(sv[1]);
  mproc__fd_register_user(sv[0]);
  mproc__fd_register_user(sv[1]);
  bool oneway = flags & MPROC_PIPE_ONEWAY;
  unsigned both = MPROC__CONN_READ | MPROC__CONN_WRITE;
  mproc_conn *ca = NULL, *cb = NULL;
  int err = conn_new(sv[0], oneway ? MPROC__CONN_READ : both, &ca);
  if (err == 0)
    err = conn_new(sv[1], oneway ? MPROC__CONN_WRITE : both, &cb);
  if (err != 0) {
    free(ca);
    mproc__close(sv[0]);
    mproc__close(sv[1]);
    return err;
  }
  *a = ca;
  *b = cb;
  return 0;
}

MPROC_EXTERN int mproc_conn_adopt(mproc_conn **c, int fd, unsigned flags) {
  if (fd < 0)
    return MPROC_EINVAL;
  int type = 0, domain = 0, err = 0;
  socklen_t l1 = sizeof type, l2 = sizeof domain;
  if (c == NULL || flags != 0)
    err = MPROC_EINVAL;
  else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) != 0 ||
           getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l2) != 0)
    err = mproc__neg_errno();
  else if (type != SOCK_STREAM || domain != AF_UNIX)
    err = MPROC_EINVAL;
  else if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
    err = mproc__neg_errno();
  if (err == 0)
    err = conn_new(fd, MPROC__CONN_READ | MPROC__CONN_WRITE, c);
  if (err != 0) {
    close(fd); /* owned from the call on, also on failure */
    return err;
  }
  mproc__fd_register_user(fd);
  return 0;
}

MPROC_EXTERN int mproc_conn_free(mproc_conn *c) {
  if (c == NULL)
    return 0;
  int err = mproc__close(c->fd);
  mproc__conn_drop_fds(c);
  free(c->fdq);
  free(c->rbuf);
  free(c);
  return err;
}

MPROC_EXTERN int mproc_conn_fd(const mproc_conn *c) { return c != NULL ? c->fd : MPROC_EINVAL; }

/* ---- receive buffer --------------------------------------------------- */

static size_t avail(const struct mproc_conn *c) { return c->rlen - c->rpos; }

/* Room for `need` more bytes after rlen (compacting first). */
static int rbuf_reserve(struct mproc_conn *c, size_t need) {
  if (c->rpos > 0 && c->rcap - c->rlen < need) {
    memmove(c->rbuf, c->rbuf + c->rpos, avail(c));
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  if (c->rcap - c->rlen >= need)
    return 0;
  size_t ncap = c->rcap ? c->rcap : RBUF_CHUNK;
  while (ncap - c->rlen < need)
    ncap *= 2;
  char *n = realloc(c->rbuf, ncap);
  if (n == NULL)
    return MPROC_ENOMEM;
  c->rbuf = n;
  c->rcap = ncap;
  return 0;
}

/* One read into rbuf.  Returns >0 bytes, 0 at end of stream (eof set), or
 * -errno (-EAGAIN when dontwait and nothing is there). */
static ssize_t fill_once(struct mproc_conn *c, bool dontwait) {
  int err = rbuf_reserve(c, RBUF_CHUNK);
  if (err != 0)
    return err;
  ssize_t n = mproc__conn_recvmsg(c, c->rbuf + c->rlen, c->rcap - c->rlen, dontwait);
  if (n > 0)
    c->rlen += (size_t)n;
  else if (n == 0)
    c->eof = true;
  return n;
}

/* Reads more bytes into rbuf, waiting until the deadline.  Returns 0 when
 * something was read or the end of stream was reached, else an error. */
static int fill_wait(struct mproc_conn *c, int64_t deadline) {
  for (;;) {
    ssize_t n = fill_once(c, deadline >= 0);
    if (n >= 0)
      return 0;
    if (n != -EAGAIN)
      return (int)n;
    int r = mproc__poll1(c->fd, POLLIN, deadline);
    if (r < 0)
      return r;
  }
}

bool mproc__conn_has_message(const struct mproc_conn *c) {
  if (avail(c) < MPROC__FRAME_HDR)
    return false;
  struct frame h;
  memcpy(&h, c->rbuf + c->rpos, sizeof h);
  return avail(c) - MPROC__FRAME_HDR >= h.len;
}

/* Waits for the next frame header and returns it without consuming it. */
static int peek_header(struct mproc_conn *c, struct frame *h, int64_t deadline) {
  while (avail(c) < MPROC__FRAME_HDR) {
    if (c->eof)
      return MPROC_EEOF; /* a partial header at end of stream is a truncated frame */
    int r = fill_wait(c, deadline);
    if (r < 0)
      return r;
  }
  memcpy(h, c->rbuf + c->rpos, sizeof *h);
  if (h->magic != MPROC__FRAME_MAGIC || h->nfds > MPROC__SCM_MAX_FD)
    return MPROC_ECORRUPT;
  if (h->nfds > c->fdq_len)
    return c->recv_err != 0 ? c->recv_err : MPROC_ECORRUPT;
  return 0;
}

/* Reads the payload of the frame whose header `h` sits at rbuf[rpos] into
 * dst, and consumes the frame.  On a deadline or error mid-payload, the
 * header and the bytes read so far go back into rbuf: nothing is lost. */
static int read_payload(struct mproc_conn *c, const struct frame *h, char *dst, int64_t deadline) {
  size_t len = (size_t)h->len;
  size_t got = avail(c) - MPROC__FRAME_HDR;
  if (got >= len) {
    if (len > 0)
      memcpy(dst, c->rbuf + c->rpos + MPROC__FRAME_HDR, len);
    c->rpos += MPROC__FRAME_HDR + len;
    if (c->rpos == c->rlen)
      c->rpos = c->rlen = 0;
    return 0;
  }
  /* Everything buffered belongs to this frame: move it out and read the
   * rest of the payload straight into the caller's memory. */
  memcpy(dst, c->rbuf + c->rpos + MPROC__FRAME_HDR, got);
  c->rpos = c->rlen = 0;
  int err = 0;
  while (got < len) {
    if (c->eof) {
      err = MPROC_EEOF; /* the peer died mid-frame: the message is truncated */
      break;
    }
    ssize_t n = mproc__conn_recvmsg(c, dst + got, len - got, deadline >= 0);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      c->eof = true;
    } else if (n == -EAGAIN) {
      int r = mproc__poll1(c->fd, POLLIN, deadline);
      if (r < 0) {
        err = r;
        break;
      }
    } else {
      err = (int)n;
      break;
    }
  }
  if (err == 0)
    return 0;
  if (err == MPROC_EEOF)
    return err;
  /* Push the partial frame back so the next receive resumes it. */
  int e2 = rbuf_reserve(c, MPROC__FRAME_HDR + got);
  if (e2 != 0)
    return e2;
  memcpy(c->rbuf + c->rlen, h, MPROC__FRAME_HDR);
  memcpy(c->rbuf + c->rlen + MPROC__FRAME_HDR, dst, got);
  c->rlen += MPROC__FRAME_HDR + got;
  return err;
}

/* Hands the frame's descriptors (the oldest queued ones) to the caller. */
static void pop_fds(struct mproc_conn *c, size_t n, int *out) {
  if (n == 0)
    return;
  memcpy(out, c->fdq, n * sizeof *out);
  memmove(c->fdq, c->fdq + n, (c->fdq_len - n) * sizeof *c->fdq);
  c->fdq_len -= n;
}

static int recv_check(mproc_conn *c, int64_t timeout_ms) {
  if (c == NULL || mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  if (!(c->mode & MPROC__CONN_READ))
    return MPROC_ESTATE;
  return 0;
}

/* The start of every receive: the handle, the timeout and the caller's
 * arguments (args_ok) are checked, the deadline is taken once for the whole
 * call, and the next frame's header is waited for. */
static int recv_header(mproc_conn *c, int64_t timeout_ms, bool args_ok, struct frame *h,
                       int64_t *deadline) {
  int err = recv_check(c, timeout_ms);
  if (err != 0)
    return err;
  if (!args_ok)
    return MPROC_EINVAL;
  *deadline = mproc__deadline(timeout_ms);
  return peek_header(c, h, *deadline);
}

MPROC_EXTERN int mproc_conn_recv_fds(mproc_conn *c, void *buf, size_t cap, size_t *len, int *fds,
                                     size_t *nfds, int64_t timeout_ms) {
  struct frame h;
  int64_t deadline;
  int err = recv_header(c, timeout_ms,
                        len != NULL && (buf != NULL || cap == 0) && nfds != NULL &&
                            (fds != NULL || *nfds == 0),
                        &h, &deadline);
  if (err != 0)
    return err;
  if (h.len > cap || h.nfds > *nfds) {
    *len = (size_t)h.len;
    *nfds = h.nfds;
    return MPROC_ETOOSMALL;
  }
  int tmp[MPROC__SCM_MAX_FD];
  err = read_payload(c, &h, buf, deadline);
  if (err != 0)
    return err;
  pop_fds(c, h.nfds, tmp);
  if (h.nfds > 0)
    memcpy(fds, tmp, h.nfds * sizeof *fds);
  *len = (size_t)h.len;
  *nfds = h.nfds;
  return 0;
}

MPROC_EXTERN int mproc_conn_recv(mproc_conn *c, void *buf, size_t cap, size_t *len,
                                 int64_t timeout_ms) {
  struct frame h;
  int64_t deadline;
  int err = recv_header(c, timeout_ms, len != NULL && (buf != NULL || cap == 0), &h, &deadline);
  if (err != 0)
    return err;
  if (h.len > cap || h.nfds > 0) {
    *len = (size_t)h.len;
    return MPROC_ETOOSMALL;
  }
  err = read_payload(c, &h, buf, deadline);
  if (err == 0)
    *len = (size_t)h.len;
  return err;
}

MPROC_EXTERN int mproc_conn_recv_alloc(mproc_conn *c, void **buf, size_t *len, int64_t timeout_ms) {
  if (buf != NULL)
    *buf = NULL;
  struct frame h;
  int64_t deadline;
  int err = recv_header(c, timeout_ms, buf != NULL && len != NULL, &h, &deadline);
  if (err != 0)
    return err;
  if (h.nfds > 0) {
    *len = (size_t)h.len;
    return MPROC_ETOOSMALL;
  }
  char *p = malloc(h.len > 0 ? (size_t)h.len : 1);
  if (p == NULL)
    return MPROC_ENOMEM;
  err = read_payload(c, &h, p, deadline);
  if (err != 0) {
    free(p);
    return err;
  }
  *buf = p;
  *len = (size_t)h.len;
  return 0;
}

MPROC_EXTERN int mproc_conn_poll(mproc_conn *c, int64_t timeout_ms) {
  int err = recv_check(c, timeout_ms);
  if (err != 0)
    return err;
  if (avail(c) > 0 || c->eof)
    return 0;
  int r = mproc__poll1(c->fd, POLLIN, mproc__deadline(timeout_ms));
  return r < 0 ? r : 0;
}

/* ---- send ------------------------------------------------------------- */

static int send_frame(mproc_conn *c, const void *buf, size_t len, const int *fds, size_t nfds,
                      int64_t timeout_ms) {
  if (c == NULL || (buf == NULL && len > 0) || mproc__check_timeout(timeout_ms) != 0 ||
      nfds > MPROC_CONN_MAX_FDS || (fds == NULL && nfds > 0))
    return MPROC_EINVAL;
  for (size_t i = 0; i < nfds; i++)
    if (fds[i] < 0)
      return MPROC_EINVAL;
  if (!(c->mode & MPROC__CONN_WRITE))
    return MPROC_ESTATE;
  if (c->send_broken)
    return MPROC_EBROKEN;
  int64_t deadline = mproc__deadline(timeout_ms);
  struct frame h = {.len = len, .nfds = (uint32_t)nfds, .magic = MPROC__FRAME_MAGIC};
  const char *p = buf;
  size_t total = MPROC__FRAME_HDR + len, sent = 0;
  int err = 0;
  for (;;) {
    struct iovec iov[2];
    int cnt = 0;
    if (sent < MPROC__FRAME_HDR) {
      iov[cnt++] = (struct iovec){(char *)&h + sent, MPROC__FRAME_HDR - sent};
      if (len > 0)
        iov[cnt++] = (struct iovec){(void *)p, len};
    } else {
      size_t off = sent - MPROC__FRAME_HDR;
      iov[cnt++] = (struct iovec){(void *)(p + off), len - off};
    }
    /* Descriptors ride on the first byte of the header. */
    ssize_t n = mproc__conn_sendmsg(c, iov, cnt, fds, sent == 0 ? nfds : 0);
    if (n > 0) {
      sent += (size_t)n;
      if (sent == total)
        return 0;
      continue;
    }
    if (n == -EPIPE || n == -ECONNRESET) {
      err = MPROC_EEOF;
      break;
    }
    if (n != -EAGAIN) {
      err = (int)n;
      break;
    }
    short ev = POLLOUT;
    if ((c->mode & MPROC__CONN_READ) && !c->eof)
      ev |= POLLIN;
    int r = mproc__poll1(c->fd, ev, deadline);
    if (r < 0) {
      err = r;
      break;
    }
    if (r & POLLIN) {
      /* Drain the peer into rbuf so it can finish its own send. */
      ssize_t m = fill_once(c, true);
      if (m < 0 && m != -EAGAIN) {
        err = (int)m;
        break;
      }
    }
  }
  if (sent > 0)
    c->send_broken = true;
  return err;
}

MPROC_EXTERN int mproc_conn_send(mproc_conn *c, const void *buf, size_t len, int64_t timeout_ms) {
  return send_frame(c, buf, len, NULL, 0, timeout_ms);
}

MPROC_EXTERN int mproc_conn_send_fds(mproc_conn *c, const void *buf, size_t len, const int *fds,
                                     size_t nfds, int64_t timeout_ms) {
  return send_frame(c, buf, len, fds, nfds, timeout_ms);
}
