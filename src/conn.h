/* Internals of connections (src/conn.c, src/fdpass.c, src/conn_wait.c). */
#ifndef MPROC_PIPE_INTERNAL_H
#define MPROC_PIPE_INTERNAL_H

#include "internal.h"

/* Frame header, in host byte order (both ends are on one machine):
 * u64 payload length, u32 number of descriptors attached, u32 magic. */
#define MPROC__FRAME_MAGIC 0x6d70636eu /* "mpcn" */
#define MPROC__FRAME_HDR 16

enum {
  MPROC__CONN_READ = 1u << 0,  /* this end may receive */
  MPROC__CONN_WRITE = 1u << 1, /* this end may send */
};

struct mproc_conn {
  int fd;           /* the socket, O_CLOEXEC, registered, blocking mode */
  unsigned mode;    /* MPROC__CONN_READ | MPROC__CONN_WRITE */
  bool send_broken; /* a send stopped mid-frame: the stream is unusable */
  bool eof;         /* the peer's end of stream has been read */
  int recv_err;     /* sticky: descriptors were lost (-EMFILE/MPROC_ENOMEM) */
  char *rbuf;       /* bytes read but not consumed: rbuf[rpos..rlen) */
  size_t rcap;      /* allocated size of rbuf */
  size_t rpos;      /* first unconsumed byte */
  size_t rlen;      /* end of the buffered bytes */
  int *fdq;         /* received descriptors not handed out, in order */
  size_t fdq_len;   /* how many are queued */
  size_t fdq_cap;   /* allocated entries of fdq */
};

/* One recvmsg(MSG_CMSG_CLOEXEC) into dst[0..n): descriptors that arrive are
 * appended to c->fdq (a message's descriptors travel with its header, so the
 * queue holds them in message order).  Returns bytes read (> 0), 0 at end of
 * stream, or -errno (-EAGAIN when `dontwait` and nothing is there). */
ssize_t mproc__conn_recvmsg(struct mproc_conn *c, void *dst, size_t n, bool dontwait);
/* One sendmsg(MSG_NOSIGNAL|MSG_DONTWAIT) of the iovecs, with fds attached as
 * SCM_RIGHTS when nfds > 0.  Returns bytes sent or -errno. */
struct iovec;
ssize_t mproc__conn_sendmsg(struct mproc_conn *c, struct iovec *iov, int iovcnt, const int *fds,
                            size_t nfds);
/* Closes every queued received descriptor (connection teardown). */
void mproc__conn_drop_fds(struct mproc_conn *c);
/* Whether a whole message (header and payload) is already buffered. */
bool mproc__conn_has_message(const struct mproc_conn *c);

#endif /* MPROC_PIPE_INTERNAL_H */
