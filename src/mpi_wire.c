/* Messages between ranks: a fixed header, then a payload of any size.
 *
 * Design notes.  Every message starts with a header struct whose first two
 * fields are a job id and the payload length.  A payload up to
 * MPROC__MPI_INLINE bytes travels in the same MPI message as its header (one
 * message per tiny task, the common case).  A larger one follows as pieces
 * of at most mproc__mpi_piece bytes on MPROC__MPI_TAG_DATA, so no MPI count
 * (an int) ever exceeds INT_MAX: GiB arguments and results are fine.  MPI
 * matches messages of one sender, tag and communicator in the order they
 * were started, so the receiver posts the pieces' receives right after the
 * header, from that sender, and they pair up with the right header even
 * when several large messages are in flight.
 *
 * Everything is non-blocking (MPI_Isend / MPI_Irecv, tested with
 * MPI_Test*): a waiting caller polls with its own deadline instead of
 * disappearing into a blocking MPI call.  MPI gives no fd to sleep on, so
 * idle loops back off (mproc__mpi_backoff): they keep polling, yielding
 * between polls, for MPROC__MPI_SPIN_US after their last progress, then
 * sleep growing to 1 ms; a loop that made progress resets its backoff and
 * never sleeps. */
#include "mpi_internal.h"

#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

size_t mproc__mpi_piece = (size_t)64 << 20;

size_t mproc__mpi_pieces(size_t len, size_t piece) {
  if (len <= MPROC__MPI_INLINE)
    return 0;
  if (piece == 0 || piece > INT_MAX)
    piece = INT_MAX;
  return len / piece + (len % piece != 0);
}

static size_t piece_size(void) {
  size_t p = mproc__mpi_piece;
  return p == 0 || p > INT_MAX ? INT_MAX : p;
}

/* The payload length a header announces (its second field). */
static uint64_t hdr_len_field(const void *hdr) {
  uint64_t len;
  memcpy(&len, (const char *)hdr + sizeof(uint64_t), sizeof len);
  return len;
}

/* An op with room for nreqs requests and a header of hdr_len bytes, plus
 * `inline_cap` bytes of payload after it (a message's inline payload). */
static struct mproc__mpi_op *op_new(size_t hdr_len, size_t inline_cap, size_t nreqs) {
  struct mproc__mpi_op *op = calloc(1, sizeof *op);
  if (!op)
    return NULL;
  op->reqs = malloc(nreqs * sizeof *op->reqs);
  op->hdr = malloc(hdr_len + inline_cap);
  if (!op->reqs || !op->hdr) {
    free(op->reqs);
    free(op->hdr);
    free(op);
    return NULL;
  }
  for (size_t i = 0; i < nreqs; i++)
    op->reqs[i] = MPI_REQUEST_NULL;
  op->hdr_len = hdr_len;
  op->source = -1;
  return op;
}

void mproc__mpi_op_free(struct mproc__mpi_op *op) {
  if (!op)
    return;
  if (op->free_data)
    free(op->data);
  free(op->reqs);
  free(op->hdr);
  free(op);
}

void mproc__mpi_op_abandon(struct mproc__mpi_op *op) {
  if (!op)
    return;
  for (int i = 0; i < op->nreqs; i++) {
    if (op->reqs[i] != MPI_REQUEST_NULL) {
      MPI_Cancel(&op->reqs[i]);
      MPI_Request_free(&op->reqs[i]);
    }
  }
  mproc__mpi_op_free(op);
}

int mproc__mpi_isend(MPI_Comm comm, int dest, int tag, const void *hdr, size_t hdr_len, void *data,
                     size_t len, bool own_data, struct mproc__mpi_op **out) {
  size_t np = mproc__mpi_pieces(len, piece_size());
  struct mproc__mpi_op *op = op_new(hdr_len, np ? 0 : len, 1 + np);
  if (!op)
    return MPROC_ENOMEM;
  memcpy(op->hdr, hdr, hdr_len);
  size_t first = hdr_len;
  if (np == 0 && len) {
    memcpy((char *)op->hdr + hdr_len, data, len);
    first += len;
  }
  op->data = data;
  op->len = len;
  op->free_data = own_data;
  op->nreqs = (int)(1 + np);
  int rc = MPI_Isend(op->hdr, (int)first, MPI_BYTE, dest, tag, comm, &op->reqs[0]);
  size_t piece = piece_size();
  for (size_t i = 0; rc == MPI_SUCCESS && i < np; i++) {
    size_t off = i * piece, n = len - off < piece ? len - off : piece;
    rc = MPI_Isend((char *)data + off, (int)n, MPI_BYTE, dest, MPROC__MPI_TAG_DATA, comm,
                   &op->reqs[1 + i]);
  }
  if (rc != MPI_SUCCESS) {
    mproc__mpi_op_abandon(op);
    return MPROC_EIO;
  }
  *out = op;
  return 0;
}

int mproc__mpi_irecv(MPI_Comm comm, int tag, size_t hdr_len, const struct mproc__mpi_place *place,
                     struct mproc__mpi_op **out) {
  int flag = 0;
  MPI_Status st;
  if (MPI_Iprobe(MPI_ANY_SOURCE, tag, comm, &flag, &st) != MPI_SUCCESS)
    return MPROC_EIO;
  if (!flag)
    return 1;
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  if (count < (int)hdr_len || count > (int)(hdr_len + MPROC__MPI_INLINE))
    return MPROC_EIO; /* not one of our headers */
  /* The pieces' count is known only after the header is in: reserve the
   * first request now, grow the array below. */
  struct mproc__mpi_op *op = op_new(hdr_len, (size_t)count - hdr_len, 1);
  if (!op)
    return MPROC_ENOMEM;
  op->source = st.MPI_SOURCE;
  if (MPI_Recv(op->hdr, count, MPI_BYTE, st.MPI_SOURCE, tag, comm, MPI_STATUS_IGNORE) !=
      MPI_SUCCESS) {
    mproc__mpi_op_free(op);
    return MPROC_EIO;
  }
  uint64_t len = hdr_len_field(op->hdr);
  op->len = (size_t)len;
  op->nreqs = 0;
  size_t np = mproc__mpi_pieces(op->len, piece_size());
  if ((np == 0 && (size_t)count != hdr_len + op->len) || (np && (size_t)count != hdr_len)) {
    mproc__mpi_op_free(op);
    return MPROC_EIO;
  }
  if (op->len) {
    /* Straight into the owner's buffer when it has one for this message
     * (no copy after the transfer), else into memory the op owns. */
    op->data = place ? place->at(place->ctx, op->source, op->hdr, op->len, &op->user) : NULL;
    op->free_data = op->data == NULL;
    if (!op->data)
      op->data = malloc(op->len);
    MPI_Request *r = np ? realloc(op->reqs, np * sizeof *r) : op->reqs;
    if (!op->data || !r) {
      /* The pieces are on their way and must still be taken off the wire
       * for the next header to pair up; without memory the job cannot go
       * on: the caller aborts. */
      op->reqs = r ? r : op->reqs;
      mproc__mpi_op_free(op);
      return MPROC_ENOMEM;
    }
    op->reqs = r;
    if (np == 0)
      memcpy(op->data, (char *)op->hdr + hdr_len, op->len);
  }
  size_t piece = piece_size();
  for (size_t i = 0; i < np; i++) {
    size_t off = i * piece, n = op->len - off < piece ? op->len - off : piece;
    if (MPI_Irecv((char *)op->data + off, (int)n, MPI_BYTE, op->source, MPROC__MPI_TAG_DATA, comm,
                  &op->reqs[i]) != MPI_SUCCESS) {
      op->nreqs = (int)i;
      mproc__mpi_op_abandon(op);
      return MPROC_EIO;
    }
    op->nreqs = (int)i + 1;
  }
  *out = op;
  return 0;
}

int mproc__mpi_waiting(MPI_Comm comm, int *tag) {
  int flag = 0;
  MPI_Status st;
  if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &st) != MPI_SUCCESS)
    return MPROC_EIO;
  if (flag)
    *tag = st.MPI_TAG;
  return flag ? 1 : 0;
}

int mproc__mpi_test(struct mproc__mpi_op *op) {
  if (op->nreqs == 0)
    return 1;
  int flag = 0;
  if (MPI_Testall(op->nreqs, op->reqs, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
    return MPROC_EIO;
  return flag ? 1 : 0;
}

/* ---- batches -------------------------------------------------------------- */

size_t mproc__mpi_frame_size(size_t hdr_len, size_t len) {
  return (hdr_len + len + 7) & ~(size_t)7;
}

bool mproc__mpi_batchable(size_t hdr_len, size_t len) {
  return len <= MPROC__MPI_INLINE && mproc__mpi_frame_size(hdr_len, len) <= MPROC__MPI_INLINE / 2;
}

int mproc__mpi_batch_add(struct mproc__mpi_batch *b, const void *hdr, size_t hdr_len,
                         const void *data, size_t len) {
  if (!b->buf && !(b->buf = malloc(MPROC__MPI_INLINE)))
    return MPROC_ENOMEM;
  unsigned char *at = b->buf + b->used;
  memcpy(at, hdr, hdr_len);
  uint64_t len64 = len;
  memcpy(at + sizeof(uint64_t), &len64, sizeof len64); /* the frame's own length */
  if (len)
    memcpy(at + hdr_len, data, len);
  size_t fs = mproc__mpi_frame_size(hdr_len, len);
  memset(at + hdr_len + len, 0, fs - hdr_len - len);
  b->used += fs;
  b->n++;
  return 0;
}

void mproc__mpi_batch_clear(struct mproc__mpi_batch *b) {
  free(b->buf);
  *b = (struct mproc__mpi_batch){0};
}

int mproc__mpi_batch_send(MPI_Comm comm, int dest, int tag, void *hdr, size_t hdr_len,
                          struct mproc__mpi_batch *b, struct mproc__mpi_op **op) {
  uint64_t len64 = b->used;
  memcpy((char *)hdr + sizeof(uint64_t), &len64, sizeof len64);
  /* Inline: the frames are copied next to the header, the buffer goes with
   * the op. */
  int rc = mproc__mpi_isend(comm, dest, tag, hdr, hdr_len, b->buf, b->used, true, op);
  if (rc)
    free(b->buf);
  *b = (struct mproc__mpi_batch){0};
  return rc;
}

int mproc__mpi_batch_next(const struct mproc__mpi_op *batch, size_t *at,
                          struct mproc__mpi_op **out) {
  size_t hdr_len = batch->hdr_len;
  if (*at >= batch->len)
    return 0;
  if (batch->len - *at < hdr_len)
    return MPROC_EIO;
  const unsigned char *f = (const unsigned char *)batch->data + *at;
  uint64_t len = hdr_len_field(f);
  if (len > MPROC__MPI_INLINE || mproc__mpi_frame_size(hdr_len, (size_t)len) > batch->len - *at)
    return MPROC_EIO;
  struct mproc__mpi_op *op = op_new(hdr_len, 0, 1); /* the payload is copied out */
  if (!op || (len && !(op->data = malloc((size_t)len)))) {
    mproc__mpi_op_free(op);
    return MPROC_ENOMEM;
  }
  memcpy(op->hdr, f, hdr_len);
  if (len) {
    memcpy(op->data, f + hdr_len, (size_t)len);
    op->free_data = true;
  }
  op->len = (size_t)len;
  op->nreqs = 0; /* complete: nothing to wait for */
  op->source = batch->source;
  *at += mproc__mpi_frame_size(hdr_len, (size_t)len);
  *out = op;
  return 1;
}

int64_t mproc__mpi_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Spinning is bounded by time, not by a count of yields: on an idle CPU a
 * yield returns at once (64 of them passed in microseconds, and the loop
 * then slept through the answer it was waiting for), on a loaded one each
 * may take a whole time slice. */
void mproc__mpi_backoff(struct mproc__mpi_idle *w) {
  int64_t now = mproc__mpi_now_us();
  if (w->since_us == 0)
    w->since_us = now;
  if (now - w->since_us < MPROC__MPI_SPIN_US) {
    sched_yield();
    return;
  }
  unsigned n = w->naps++;
  long us = 16L << (n / 8 < 6 ? n / 8 : 6); /* 16 us .. 1 ms */
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

int mproc__mpi_wait_op(struct mproc__mpi_op *op, int64_t deadline) {
  struct mproc__mpi_idle idle = {0};
  for (;;) {
    int rc = mproc__mpi_test(op);
    if (rc != 0)
      return rc < 0 ? rc : 0;
    if (deadline >= 0 && mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    mproc__mpi_backoff(&idle);
  }
}
