/* mproc run: a job's output.
 *
 * Design notes.  Grouped output (the default) never interleaves: a job
 * writes into unlinked memory files (memfd) of its own, and the runner
 * copies them whole to its stdout and stderr when the job is done (and,
 * with -k, when its turn comes).  Files rather than pipes because a job
 * writing 50 MB must neither block on a full pipe nor make the runner
 * buffer it in memory; sendfile(2) copies them without a trip through user
 * space.  --tag needs every line prefixed, so that path reads the file in
 * blocks and writes prefixed lines through one output buffer.
 *
 * --line-buffer reads pipes instead and prints each complete line as soon
 * as it arrives; a partial line waits for its end (or the job's end), and a
 * line longer than LINE_MAX_HELD is written in pieces so memory stays
 * bounded. */
#include "run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (64 * 1024)
#define LINE_MAX_HELD (1024 * 1024)

int run_write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, buf, n);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    buf += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Output buffer for prefixed lines. */
struct obuf {
  int fd;
  char b[BLOCK];
  size_t n;
};

static int ob_put(struct obuf *o, const char *p, size_t n) {
  if (o->n + n > sizeof o->b) {
    int r = run_write_all(o->fd, o->b, o->n);
    o->n = 0;
    if (r < 0)
      return r;
    if (n > sizeof o->b)
      return run_write_all(o->fd, p, n);
  }
  memcpy(o->b + o->n, p, n);
  o->n += n;
  return 0;
}

/* Writes data as lines with a prefix; *at_bol tells whether the next byte
 * starts a line. */
static int put_prefixed(struct obuf *o, const char *tag, const char *p, size_t n, bool *at_bol) {
  size_t tl = strlen(tag);
  int r = 0;
  while (n > 0 && r == 0) {
    if (*at_bol)
      r = ob_put(o, tag, tl);
    const char *nl = memchr(p, '\n', n);
    size_t k = nl ? (size_t)(nl - p) + 1 : n;
    if (r == 0)
      r = ob_put(o, p, k);
    *at_bol = nl != NULL;
    p += k;
    n -= k;
  }
  return r;
}

int run_copy_file(int out, int fd, const char *tag) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return -errno;
  off_t size = st.st_size, off = 0;
  if (tag == NULL) {
    while (off < size) {
      ssize_t k = sendfile(out, fd, &off, (size_t)(size - off));
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0 && (errno == EINVAL || errno == ENOSYS))
        break; /* an output sendfile cannot write to: copy by hand */
      if (k < 0)
        return -errno;
      if (k == 0)
        return 0; /* truncated meanwhile */
    }
    if (off >= size)
      return 0;
  }
  static struct obuf o;
  o.fd = out;
  o.n = 0;
  char *in = malloc(BLOCK);
  if (in == NULL)
    return -ENOMEM;
  bool at_bol = true;
  int r = 0;
  while (r == 0 && off < size) {
    ssize_t k = pread(fd, in, BLOCK, off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      r = k < 0 ? -errno : 0;
      break;
    }
    off += k;
    r = tag ? put_prefixed(&o, tag, in, (size_t)k, &at_bol) : ob_put(&o, in, (size_t)k);
  }
  if (r == 0)
    r = run_write_all(out, o.b, o.n);
  free(in);
  return r;
}

int run_lines_feed(struct run_lines *l, int out, const char *tag, const char *p, size_t n,
                   bool final) {
  if (n > 0) {
    if (l->len + n > l->cap) {
      size_t cap = l->cap ? l->cap : 4096;
      while (cap < l->len + n)
        cap *= 2;
      char *b = realloc(l->buf, cap);
      if (b == NULL)
        return -ENOMEM;
      l->buf = b;
      l->cap = cap;
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
  }
  /* Everything up to the last newline goes out now; the rest waits, unless
   * this is the end or it grew too long. */
  size_t upto = 0;
  for (size_t i = l->len; i > 0; i--)
    if (l->buf[i - 1] == '\n') {
      upto = i;
      break;
    }
  if (final || l->len - upto > LINE_MAX_HELD)
    upto = l->len;
  if (upto == 0)
    return 0;
  int r;
  if (tag != NULL) {
    static struct obuf o;
    o.fd = out;
    o.n = 0;
    bool at_bol = true;
    r = put_prefixed(&o, tag, l->buf, upto, &at_bol);
    if (r == 0)
      r = run_write_all(out, o.b, o.n);
  } else {
    r = run_write_all(out, l->buf, upto);
  }
  memmove(l->buf, l->buf + upto, l->len - upto);
  l->len -= upto;
  return r;
}

void run_lines_free(struct run_lines *l) {
  free(l->buf);
  *l = (struct run_lines){0};
}
