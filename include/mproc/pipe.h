/* mproc — connections: framed messages and fd passing (Python's Pipe/Connection). */
#ifndef MPROC_PIPE_H
#define MPROC_PIPE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One end of a connection (Python's multiprocessing.connection.Connection).
 * A connection carries whole messages of any length (64-bit framing) and,
 * attached to them, file descriptors.  The handle lives in the memory of the
 * process that created it; a child forked afterwards has its own copy of the
 * handle and of the descriptor, usable there: a connection made before
 * mproc_process_start() works in the child (Python's
 * Process(target=f, args=(child_conn,))), as in a plain fork().  Pool
 * workers do not keep it (hand a task descriptors with
 * mproc_submit_options.fds).  One handle must not be used by two threads at
 * once. */
typedef struct mproc_conn mproc_conn;

/* mproc_pipe() flags. */
enum {
  /* Python's Pipe(duplex=False): the first end only receives, the second only
   * sends.  Without it both ends do both. */
  MPROC_PIPE_ONEWAY = 1u << 0,
};

/* Options of mproc_pipe(); NULL or all-zero means a duplex pipe. */
struct mproc_pipe_options {
  unsigned flags; /* MPROC_PIPE_* */
};

/* Creates a connected pair (Python's Pipe()).  On success *a and *b are owned
 * by the caller and released with mproc_conn_free().  On failure nothing is
 * left behind.  Errors: MPROC_EINVAL (NULL pointer, unknown flag), -EMFILE,
 * -ENFILE, -ENOMEM.  Does not block. */
MPROC_EXTERN int mproc_pipe(mproc_conn **a, mproc_conn **b, const struct mproc_pipe_options *opts);

/* Adopts a connected AF_UNIX SOCK_STREAM socket `fd` (for instance one end of a
 * pipe received through another connection) as a duplex connection; the
 * connection owns fd from then on (closed by mproc_conn_free), also on
 * failure.  Errors: MPROC_EINVAL (negative fd, nonzero flags), -ENOTSOCK,
 * -ENOMEM. */
MPROC_EXTERN int mproc_conn_adopt(mproc_conn **c, int fd, unsigned flags);

/* Closes the connection and frees the handle; the peer sees MPROC_EEOF once it
 * has read what was already sent.  Descriptors received but not yet handed
 * out are closed.  NULL is a no-op returning 0. */
MPROC_EXTERN int mproc_conn_free(mproc_conn *c);

/* The socket, for event loops (epoll, poll, libuv).  It is readable when new
 * bytes arrive; complete messages may also wait in the handle's own buffer
 * (a send that had to wait reads what the peer sends meanwhile), so after a
 * readable event receive with timeout 0 until MPROC_ETIMEDOUT, or check with
 * mproc_conn_poll(c, 0).  The descriptor stays owned by the connection.
 * Returns the fd, or MPROC_EINVAL for NULL. */
MPROC_EXTERN int mproc_conn_fd(const mproc_conn *c);

/* Sends one message of `len` bytes (len may be 0; buf may be NULL only when
 * len is 0).  Blocks until the whole message is in the socket or the deadline
 * passes.  While it waits for room it keeps reading what the peer sends into
 * the handle's buffer, so two ends sending large messages to each other at
 * once never deadlock.  Errors: MPROC_EINVAL, MPROC_ESTATE (receive-only end),
 * MPROC_EEOF (the peer closed), MPROC_ETIMEDOUT (nothing was sent if it
 * happened before the first byte went out; after that the connection is
 * MPROC_EBROKEN for sending, since the peer would see a partial frame),
 * MPROC_EBROKEN, -errno. */
MPROC_EXTERN int mproc_conn_send(mproc_conn *c, const void *buf, size_t len, int64_t timeout_ms);

/* As mproc_conn_send(), with `nfds` descriptors attached (Python's
 * reduction.send_handle; at most MPROC_CONN_MAX_FDS).  The caller keeps its
 * own descriptors; the receiver gets duplicates.  Extra error: MPROC_EINVAL
 * for nfds above the maximum or a negative fd, -EBADF for a closed one. */
#define MPROC_CONN_MAX_FDS 250
MPROC_EXTERN int mproc_conn_send_fds(mproc_conn *c, const void *buf, size_t len, const int *fds,
                                     size_t nfds, int64_t timeout_ms);

/* Receives the next message into buf[0..cap).  On success returns 0 and sets
 * *len.  If the message is longer than cap, returns MPROC_ETOOSMALL with *len
 * set to the needed size, and consumes nothing: the same message is returned
 * by the next receive.  Blocks until a whole message is there or the
 * deadline passes (MPROC_ETIMEDOUT; bytes already read stay buffered in the
 * handle, nothing is lost).  A message that carries descriptors is refused
 * here with MPROC_ETOOSMALL (receive it with mproc_conn_recv_fds).  Errors:
 * MPROC_EINVAL, MPROC_ESTATE (send-only end), MPROC_EEOF (the peer closed and
 * everything it sent has been read), MPROC_ECORRUPT (the stream is not mproc
 * framing), -ENOMEM, -errno. */
MPROC_EXTERN int mproc_conn_recv(mproc_conn *c, void *buf, size_t cap, size_t *len,
                                 int64_t timeout_ms);

/* Receives the next message into a buffer it allocates with malloc (Python's
 * recv_bytes()).  On success *buf (owned by the caller, free() it; never NULL,
 * even for an empty message) and *len are set; on failure *buf is NULL.
 * Errors as mproc_conn_recv() except MPROC_ETOOSMALL. */
MPROC_EXTERN int mproc_conn_recv_alloc(mproc_conn *c, void **buf, size_t *len, int64_t timeout_ms);

/* Receives the next message and the descriptors attached to it.  *nfds is
 * the capacity of fds on entry and the number received on return.  If buf or
 * fds is too small, returns MPROC_ETOOSMALL with *len and *nfds set to the
 * needed sizes, consuming nothing.  The received descriptors are
 * close-on-exec and owned by the caller. */
MPROC_EXTERN int mproc_conn_recv_fds(mproc_conn *c, void *buf, size_t cap, size_t *len, int *fds,
                                     size_t *nfds, int64_t timeout_ms);

/* Waits until a receive would not block (a message, or end of stream, is
 * there): returns 0, or MPROC_ETIMEDOUT when the deadline passes first
 * (Python's poll(timeout) returning False).  timeout 0 checks without
 * waiting.  Errors: MPROC_EINVAL, MPROC_ESTATE (send-only end), -errno. */
MPROC_EXTERN int mproc_conn_poll(mproc_conn *c, int64_t timeout_ms);

/* One object of mproc_conn_wait(): a connection, or (conn NULL) a plain
 * descriptor such as a pidfd (a process sentinel), a socket or an eventfd. */
struct mproc_wait_item {
  mproc_conn *conn; /* waited for a receivable message or end of stream */
  int fd;           /* used when conn is NULL: waited for readability */
  int ready;        /* out: 1 if ready, 0 if not */
};

/* Python's multiprocessing.connection.wait(): blocks until at least one item
 * is ready or the deadline passes.  Returns the number of ready items (> 0)
 * with each item's `ready` set, MPROC_ETIMEDOUT, MPROC_EINVAL (NULL items, n of 0, a negative fd, a
 * send-only connection, n above 4096), or -errno.  A descriptor that is closed or reports an error
 * or hang-up counts as ready. */
MPROC_EXTERN int mproc_conn_wait(struct mproc_wait_item *items, size_t n, int64_t timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_PIPE_H */
