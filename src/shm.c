/* Shared memory blocks: anonymous (memfd) and named (/dev/shm).
 *
 * Design notes.  Anonymous blocks are a memfd mapped MAP_SHARED: the kernel
 * frees them with the last fd and mapping, nothing can leak.
 *
 * Named blocks carry the lifetime rule "the name disappears when the last
 * user closes it or dies, and never while a live process has it attached".
 * It is built on flock(2), whose locks belong to an open file description and
 * are dropped by the kernel when the last fd of it closes, including at
 * death:
 *
 *   - every attached process holds LOCK_SH on its own fd for as long as it is
 *     attached;
 *   - mproc_shm_free tries LOCK_EX|LOCK_NB: success proves no one else
 *     holds LOCK_SH, so the closer is the last user and unlinks the name
 *     (if it still refers to this object).  Only the process that opened
 *     the handle tries: a forked child shares the opener's description, and
 *     its lock with it, so it just closes its fd;
 *   - for the case where the last user dies instead, each named block has a
 *     keeper process (keeper.c) blocked in flock(LOCK_EX) on its own open
 *     file description: it gets the lock only when no process is attached
 *     any more, unlinks the name if it still refers to this object, and
 *     exits;
 *   - an attacher that finds LOCK_EX held (a closer or the keeper removing
 *     the name) or the object already unlinked (st_nlink == 0) gets -ENOENT.
 *
 * Creation must be exclusive and must never expose a half-initialised
 * object: the creator builds the object unnamed (O_TMPFILE in /dev/shm), sizes
 * it, writes the header, takes LOCK_SH, starts the keeper, and only then
 * gives it its name with linkat(2), which fails with EEXIST if the name is
 * taken: a pre-existing or squatted name is never reused.  A creator dying at
 * any point leaves nothing: before linkat the object has no name; after it,
 * the keeper is already waiting.
 *
 * Life of a named block:
 *
 *   create: unnamed (O_TMPFILE; creator holds LOCK_SH; keeper waiting)
 *     --linkat--> NAMED, users attached (each holds LOCK_SH on its fd)
 *       --mproc_shm_unlink--> unnamed early; attached users keep the memory
 *       --last user frees (its LOCK_EX|LOCK_NB succeeds)--> it unlinks
 *       --last user dies--> the keeper's LOCK_EX succeeds, it unlinks
 *     --> the memory goes with the last fd and mapping (keeper exits)
 *
 * The first page of a named object is a header (magic, version, user size):
 * attach rejects objects not made this way (MPROC_ECORRUPT), or owned by
 * another user (-EACCES).  The user's bytes start on the second page. */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHM_DIR "/dev/shm"
#define SHM_HDR 4096
#define SHM_MAGIC 0x4d48532d434f5250ull /* "PROC-SHM" */
#define SHM_VERSION 1u

struct shm_header {
  uint64_t magic;
  uint32_t version;
  uint32_t hdrsize; /* offset of the user's bytes */
  uint64_t size;    /* user's bytes */
  int32_t creator;  /* pid of the creating process (informational) */
};

struct mproc_shm {
  int fd;         /* O_CLOEXEC, registered; holds LOCK_SH for named blocks */
  void *map;      /* whole mapping (header page first for named blocks) */
  size_t mapsize; /* bytes mapped */
  size_t size;    /* user's bytes */
  char *name;     /* "/name" for named blocks, NULL for anonymous ones */
  bool named;     /* named block (name may be unlinked by now) */
  dev_t dev;      /* identity of the object, to unlink only our own name */
  ino_t ino;
  pid_t opener; /* process that opened fd; a forked child shares its lock */
};

static int check_name(const char *name) {
  size_t n = name != NULL ? strnlen(name, MPROC_SHM_NAME_MAX + 1) : 0;
  if (n < 2 || n > MPROC_SHM_NAME_MAX || name[0] != '/' || strchr(name + 1, '/') != NULL)
    return MPROC_EINVAL;
  if (strcmp(name, "/.") == 0 || strcmp(name, "/..") == 0)
    return MPROC_EINVAL;
  return 0;
}

static void path_of(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s%s", SHM_DIR, name);
}

/* Whether `path` names the object (dev, ino). */
static bool path_is(const char *path, dev_t dev, ino_t ino) {
  struct stat st;
  return stat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static int map_fd(int fd, size_t mapsize, void **out) {
  void *p = mmap(NULL, mapsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return mproc__neg_errno();
  *out = p;
  return 0;
}

static int new_handle(int fd, void *map, size_t mapsize, size_t off, const char *name,
                      mproc_shm **out) {
  struct mproc_shm *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MPROC_ENOMEM;
  if (name != NULL && (s->name = strdup(name)) == NULL) {
    free(s);
    return MPROC_ENOMEM;
  }
  struct stat st;
  if (fstat(fd, &st) == 0) {
    s->dev = st.st_dev;
    s->ino = st.st_ino;
  }
  /* The block's fd stays open in mproc_process children (fdreg.c): a block
   * made before start is usable there, mproc_shm_fd() included. */
  mproc__fd_register_user(fd);
  s->fd = fd;
  s->opener = getpid();
  s->map = map;
  s->mapsize = mapsize;
  s->size = mapsize - off;
  s->named = name != NULL;
  *out = s;
  return 0;
}

/* Whether a mapping of `mapsize` bytes starts with a valid named-block
 * header. */
static bool header_ok(const void *map, size_t mapsize) {
  const struct shm_header *h = map;
  return mapsize > SHM_HDR && __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == SHM_MAGIC &&
         h->version == SHM_VERSION && h->hdrsize == SHM_HDR && h->size == mapsize - SHM_HDR;
}

/* ---- anonymous blocks ---------------------------------------------------- */

MPROC_EXTERN int mproc_shm_new(mproc_shm **out, size_t size) {
  if (out == NULL || size == 0 || size > (size_t)INT64_MAX)
    return MPROC_EINVAL;
  int fd;
  int r = mproc__memfd_create("mproc-shm", size, &fd);
  if (r != 0)
    return r;
  void *p;
  if ((r = map_fd(fd, size, &p)) == 0 && (r = new_handle(fd, p, size, 0, NULL, out)) != 0)
    munmap(p, size);
  if (r != 0)
    mproc__close(fd);
  return r;
}

MPROC_EXTERN int mproc_shm_from_fd(mproc_shm **out, int fd) {
  struct stat st;
  if (out == NULL || fd < 0)
    return MPROC_EINVAL;
  if (fstat(fd, &st) != 0)
    return mproc__neg_errno();
  if (!S_ISREG(st.st_mode) || st.st_size <= 0)
    return MPROC_EINVAL;
  int mine = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (mine < 0)
    return mproc__neg_errno();
  mine = mproc__fd_own(mine);
  size_t size = (size_t)st.st_size;
  void *p;
  int r = map_fd(mine, size, &p);
  if (r == 0) {
    /* The fd of a named block: its bytes start after the header.  The
     * duplicate shares the sender's open file description, and so its lock:
     * the name stays while this process keeps the block. */
    size_t off = header_ok(p, size) ? SHM_HDR : 0;
    if ((r = new_handle(mine, p, size, off, NULL, out)) != 0)
      munmap(p, size);
  }
  if (r != 0)
    mproc__close(mine);
  return r;
}

/* ---- named blocks -------------------------------------------------------- */

/* How many made-up names mproc_shm_create(NULL) tries before it reports
 * MPROC_EEXIST: a collision needs the same pid, sequence number and 32
 * random bits, so a second one in a row means someone squats our names. */
#define MADE_UP_TRIES 8

/* Starts the keeper for `name`, then gives the object that name.  A made-up
 * name (made != NULL) that exists already is replaced by a fresh one: the
 * keeper started for the taken name finds it is not ours when it wakes up
 * and leaves it alone. */
static int keep_and_link(int fd, const char *name, char *made, size_t made_len) {
  for (int attempt = 1;; attempt++) {
    int r = mproc__keeper_link(fd, name, NULL);
    if (r != -EEXIST || made == NULL || attempt == MADE_UP_TRIES)
      return r;
    r = mproc__shm_make_name(made, made_len, "shm");
    if (r != 0)
      return r;
  }
}

/* The last step of create and attach (r: how far they got): a handle on
 * success; on failure the mapping and the fd go, so nothing is left. */
static int finish_open(int r, int fd, void *p, size_t mapsize, const char *name, mproc_shm **out) {
  if (r == 0)
    r = new_handle(fd, p, mapsize, SHM_HDR, name, out);
  if (r != 0) {
    if (p != NULL)
      munmap(p, mapsize);
    mproc__close(fd);
  }
  return r;
}

MPROC_EXTERN int mproc_shm_create(mproc_shm **out, const char *name, size_t size) {
  char made[MPROC_SHM_NAME_MAX + 1];
  bool made_up = name == NULL;
  if (out == NULL || size == 0 || size > (size_t)INT64_MAX - SHM_HDR)
    return MPROC_EINVAL;
  if (made_up) {
    int r = mproc__shm_make_name(made, sizeof made, "shm");
    if (r != 0)
      return r;
    name = made;
  }
  if (check_name(name) != 0)
    return MPROC_EINVAL;

  int fd = open(SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    return mproc__neg_errno();
  fd = mproc__fd_own(fd);
  size_t mapsize = SHM_HDR + size;
  void *p = NULL;
  int r = 0;
  if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)mapsize) != 0)
    r = mproc__neg_errno();
  if (r == 0)
    r = map_fd(fd, mapsize, &p);
  if (r == 0) {
    struct shm_header *h = p;
    h->version = SHM_VERSION;
    h->hdrsize = SHM_HDR;
    h->size = size;
    h->creator = (int32_t)getpid();
    __atomic_store_n(&h->magic, SHM_MAGIC, __ATOMIC_RELEASE);
    if (flock(fd, LOCK_SH) != 0)
      r = mproc__neg_errno();
  }
  if (r == 0)
    r = keep_and_link(fd, name, made_up ? made : NULL, sizeof made);
  /* On failure a keeper that was started gets its lock once fd closes,
   * finds the object unnamed and exits.  (If new_handle failed after the
   * link, the keeper removes the name.) */
  return finish_open(r, fd, p, mapsize, name, out);
}

MPROC_EXTERN int mproc_shm_attach(mproc_shm **out, const char *name) {
  if (out == NULL || check_name(name) != 0)
    return MPROC_EINVAL;
  int fd = shm_open(name, O_RDWR, 0); /* O_NOFOLLOW | O_CLOEXEC added by glibc */
  if (fd < 0)
    return errno == ELOOP ? MPROC_ECORRUPT : mproc__neg_errno();
  fd = mproc__fd_own(fd);
  struct stat st;
  int r = 0;
  void *p = NULL;
  size_t mapsize = 0;
  if (fstat(fd, &st) != 0)
    r = mproc__neg_errno();
  else if (!S_ISREG(st.st_mode))
    r = MPROC_ECORRUPT;
  else if (st.st_uid != geteuid())
    r = MPROC_EACCES;
  else if (flock(fd, LOCK_SH | LOCK_NB) != 0)
    r = errno == EWOULDBLOCK ? MPROC_ENOENT : mproc__neg_errno(); /* being removed */
  else if (fstat(fd, &st) != 0)
    r = mproc__neg_errno();
  else if (st.st_nlink == 0)
    r = MPROC_ENOENT; /* removed between our open and our lock */
  else if (st.st_size <= SHM_HDR)
    r = MPROC_ECORRUPT;
  if (r == 0) {
    mapsize = (size_t)st.st_size;
    r = map_fd(fd, mapsize, &p);
  }
  if (r == 0 && !header_ok(p, mapsize))
    r = MPROC_ECORRUPT;
  return finish_open(r, fd, p, mapsize, name, out);
}

/* ---- accessors, unlink, close ------------------------------------------------ */

MPROC_EXTERN void *mproc_shm_addr(const mproc_shm *s) {
  return s != NULL ? (char *)s->map + (s->mapsize - s->size) : NULL;
}

MPROC_EXTERN size_t mproc_shm_size(const mproc_shm *s) { return s != NULL ? s->size : 0; }

MPROC_EXTERN const char *mproc_shm_name(const mproc_shm *s) { return s != NULL ? s->name : NULL; }

MPROC_EXTERN int mproc_shm_fd(const mproc_shm *s) { return s != NULL ? s->fd : -1; }

MPROC_EXTERN int mproc_shm_unlink(mproc_shm *s) {
  if (s == NULL || !s->named)
    return MPROC_EINVAL;
  char path[MPROC_SHM_NAME_MAX + 16];
  path_of(path, sizeof path, s->name);
  if (!path_is(path, s->dev, s->ino))
    return MPROC_ENOENT;
  if (unlink(path) != 0)
    return mproc__neg_errno();
  return 0;
}

size_t mproc__shm_data_off(const mproc_shm *s) { return s->mapsize - s->size; }

MPROC_EXTERN int mproc_shm_free(mproc_shm *s) {
  if (s == NULL)
    return MPROC_EINVAL;
  /* Pool workers that mapped the block for map_shm let go of it too: their
   * mappings would keep its memory (and a named block's keeper) alive. */
  if (s->opener == getpid())
    mproc__map_shm_forget(s->fd);
  munmap(s->map, s->mapsize);
  /* In a forked child the fd is the opener's open file description, whose
   * lock is the opener's too: converting it would let the child remove the
   * name while the opener still uses it.  The keeper removes the name once
   * the description is gone everywhere. */
  if (s->named && s->opener == getpid() && flock(s->fd, LOCK_EX | LOCK_NB) == 0) {
    /* No one else holds LOCK_SH: we are the last user. */
    char path[MPROC_SHM_NAME_MAX + 16];
    path_of(path, sizeof path, s->name);
    if (path_is(path, s->dev, s->ino))
      unlink(path);
  }
  int r = mproc__close(s->fd);
  free(s->name);
  free(s);
  return r;
}
