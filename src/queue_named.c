/* Named queues: a name that lives exactly as long as the queue's users.
 *
 * Design notes.  The creator's mproc_queue_free() removes the name, as
 * before; the last user to free removes what is left in the ring (spill
 * objects).  This file covers the other way out: every user killed.  Then
 * nobody runs free, and without help the name and the spill objects of the
 * messages still queued would stay in /dev/shm for good.  So a named queue
 * gets the same guarantee as a named shm block, with the same machinery
 * (keeper.c):
 *
 *   - the queue is built unnamed (O_TMPFILE in /dev/shm) and initialised;
 *     the creator takes LOCK_SH on its open file description, starts the
 *     keeper, and only then gives the object its name with linkat (EEXIST
 *     if taken).  Openers therefore never see a half-made queue, and a
 *     creator dying at any point leaves nothing behind;
 *   - an opener takes LOCK_SH on its own description before mapping.  The
 *     lock outlives the fd: the mapping holds the description, in forked
 *     children too, so "someone still has the queue mapped" is exactly
 *     "someone holds LOCK_SH";
 *   - when the last mapping goes, however it goes, the keeper gets LOCK_EX:
 *     it maps the queue read-only, unlinks the spill objects of the records
 *     still in the ring (each name checked to be one of this queue's own,
 *     as consumers check them), removes the name if it still refers to this
 *     object, and exits;
 *   - an opener that finds LOCK_EX held (the keeper at work) or the object
 *     unlinked gets -ENOENT. */
#include "queue.h"

#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int mproc__q_named_tmpfile(size_t size, int *fd_out) {
  int fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0) {
    int err = mproc__neg_errno();
    mproc__close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

/* Runs in the keeper once no process has the queue mapped: system calls and
 * lock-free code only (see mproc__keeper_fn).  Nobody is left to take the
 * queue's locks, and nobody will come back: the records are only read. */
static void remove_spills(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct mproc__qhdr))
    return;
  struct mproc__qhdr *peek = mmap(NULL, sizeof *peek, PROT_READ, MAP_SHARED, fd, 0);
  if (peek == MAP_FAILED)
    return;
  struct mproc_queue q;
  memset(&q, 0, sizeof q);
  size_t hdr = 0;
  int err = mproc__q_geometry(peek, (size_t)st.st_size, &q, &hdr);
  munmap(peek, sizeof *peek);
  if (err != 0 || mproc__q_map(fd, hdr, q.cap, PROT_READ, &q) != 0)
    return;
  uint64_t pos = atomic_load(&q.h->release), tail = atomic_load(&q.h->tail);
  uint64_t size = tail - pos <= q.cap ? 1 : 0;
  while (pos < tail && size != 0) {
    struct mproc__qrec *r = mproc__q_rec_at(&q, pos);
    uint32_t state = atomic_load(&r->state);
    size = mproc__q_rec_check(&q, r, tail - pos);
    /* DONE records were read (the reader unlinked the object); DEAD ones
     * were reclaimed (the sweep did). */
    if (size != 0 && state != MPROC__QR_DONE && state != MPROC__QR_DEAD)
      mproc__q_drop_record(&q, r);
    pos += size;
  }
  munmap(q.h, q.map_len);
}

int mproc__q_named_publish(int fd, const char *name) {
  if (flock(fd, LOCK_SH) != 0)
    return mproc__neg_errno();
  return mproc__keeper_link(fd, name, remove_spills);
}

int mproc__q_named_join(int fd) {
  if (flock(fd, LOCK_SH | LOCK_NB) != 0)
    return errno == EWOULDBLOCK ? -ENOENT : mproc__neg_errno(); /* being removed */
  struct stat st;
  if (fstat(fd, &st) != 0)
    return mproc__neg_errno();
  return st.st_nlink == 0 ? -ENOENT : 0; /* removed between open and lock */
}
