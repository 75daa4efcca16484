/* The registry of library-owned file descriptors.
 *
 * Design notes: a bitmap of MPROC__FDREG_MAX bits, one per fd number, updated
 * with atomic or/and.  It exists for one reader: a child right after fork,
 * which must close every library fd it was not handed without taking a lock
 * (another parent thread may have been inside the registry at fork time; with
 * atomics the worst case is one fd whose bit was being flipped, and that fd is
 * O_CLOEXEC anyway).  Registration is best effort by design: fds above the map
 * are simply not tracked.
 *
 * State of one bit: 0 (not ours) -> register -> 1 -> unregister/close -> 0.
 *
 * A second bitmap, `usermap`, marks the registered fds that back an object
 * the user holds (a connection, a shm block): a mproc_process child is a fork
 * of the program, and as with Python's fork start method, what the program
 * made before start (`parent, child = Pipe(); Process(target=f,
 * args=(child,))`) must work in it.  Such a child keeps those fds and closes
 * only the library's private ones (other children's pidfds, pools' sockets,
 * keepers' descriptors).  A user bit is only ever set together with the
 * registry bit and cleared with it. */
#include "internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#define WORD_BITS 64
static _Atomic uint64_t fdmap[MPROC__FDREG_MAX / WORD_BITS];
static _Atomic uint64_t usermap[MPROC__FDREG_MAX / WORD_BITS];
/* Words of fdmap ever used (one past the highest): a child scans only
 * those, so it reads none of the maps' untouched pages (each would be a
 * page fault in every child). */
static _Atomic int words_used;

static void note_word(int w) {
  int cur = atomic_load_explicit(&words_used, memory_order_relaxed);
  while (cur <= w && !atomic_compare_exchange_weak_explicit(
                         &words_used, &cur, w + 1, memory_order_relaxed, memory_order_relaxed)) {
  }
}

static uint64_t bit_of(int fd) { return (uint64_t)1 << (fd % WORD_BITS); }

void mproc__fd_register(int fd) {
  if (fd < 0 || fd >= MPROC__FDREG_MAX)
    return;
  note_word(fd / WORD_BITS);
  atomic_fetch_or_explicit(&fdmap[fd / WORD_BITS], bit_of(fd), memory_order_relaxed);
}

/* The program may have closed its standard streams (a daemon does), and
 * the lowest free number is what every open returns: a descriptor of ours
 * on 0, 1 or 2 would then take the program's printf, perror or progress
 * bar, or a child's inherited stdio, into a pool's arena, a worker's
 * socket or a connection.  So ours never stay there: moved (close-on-exec,
 * like every descriptor of ours) to the lowest number above 2.  When no
 * number is free for the move it stays where it is, as before. */
int mproc__fd_above_std(int fd) {
  if (fd < 0 || fd > STDERR_FILENO)
    return fd;
  int up = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  if (up < 0)
    return fd;
  close(fd);
  return up;
}

int mproc__fd_own(int fd) {
  fd = mproc__fd_above_std(fd);
  mproc__fd_register(fd);
  return fd;
}

void mproc__fd_register_user(int fd) {
  if (fd < 0 || fd >= MPROC__FDREG_MAX)
    return;
  note_word(fd / WORD_BITS);
  atomic_fetch_or_explicit(&usermap[fd / WORD_BITS], bit_of(fd), memory_order_relaxed);
  atomic_fetch_or_explicit(&fdmap[fd / WORD_BITS], bit_of(fd), memory_order_relaxed);
}

void mproc__fd_unregister(int fd) {
  if (fd < 0 || fd >= MPROC__FDREG_MAX)
    return;
  atomic_fetch_and_explicit(&fdmap[fd / WORD_BITS], ~bit_of(fd), memory_order_relaxed);
  /* Read first: most fds are not a user's, and a write to a page shared
   * with a recent fork's child is a copy-on-write fault. */
  if (atomic_load_explicit(&usermap[fd / WORD_BITS], memory_order_relaxed) & bit_of(fd))
    atomic_fetch_and_explicit(&usermap[fd / WORD_BITS], ~bit_of(fd), memory_order_relaxed);
}

int mproc__close(int fd) {
  if (fd < 0)
    return 0;
  mproc__fd_unregister(fd);
  /* On Linux close() releases the fd even when it reports EINTR, so retrying
   * could close an fd another thread just opened: never retry. */
  if (close(fd) == 0 || errno == EINTR)
    return 0;
  return mproc__neg_errno();
}

static bool kept(int fd, const int *keep, size_t nkeep) {
  for (size_t i = 0; i < nkeep; i++)
    if (keep[i] == fd)
      return true;
  return false;
}

void mproc__fd_close_registered_except(const int *keep, size_t nkeep, bool keep_user) {
  size_t used = (size_t)atomic_load_explicit(&words_used, memory_order_relaxed);
  for (size_t w = 0; w < used && w < MPROC__ARRAY_SIZE(fdmap); w++) {
    uint64_t bits = atomic_load_explicit(&fdmap[w], memory_order_relaxed);
    if (keep_user)
      bits &= ~atomic_load_explicit(&usermap[w], memory_order_relaxed);
    while (bits != 0) {
      int bit = __builtin_ctzll(bits);
      bits &= bits - 1;
      int fd = (int)(w * WORD_BITS) + bit;
      if (kept(fd, keep, nkeep))
        continue;
      mproc__fd_unregister(fd);
      close(fd);
    }
  }
}
