/* Handing shared objects to processes that did not inherit them: the fd of
 * an object made by a library _new, and re-opening it from that fd.
 *
 * Design notes.  Pool workers are forked when the pool starts (and again
 * when one is replaced), so an object made afterwards is not mapped in them:
 * its address means nothing there.  Every object the library allocates
 * (Lock, RLock, Semaphore, Event, Condition, Barrier, Value/Array; queues and
 * shm blocks keep theirs in their handles) therefore lives in a memfd whose
 * descriptor the creating process keeps, so that it can travel with a task
 * (mproc_submit_options.fds) or over a Unix socket, and be mapped again on
 * the other side (mproc_<kind>_from_fd).
 *
 * The process-local table below records, per mapping the library made:
 *
 *   created  (address, size, fd): made by _new in this process; _free
 *            closes the fd.  A forked child does not inherit the entry: it
 *            closes the fd at once (atfork handler, before anything else in
 *            the child runs), keeps the mapping, and frees it as any
 *            inherited object (the kind knows its size).
 *   attached (address, size, fd -1): mapped by _from_fd; _free only
 *            unmaps it (the object lives on for the others), after the
 *            kind's detach step (a held Lock refuses, a Barrier party
 *            leaves).  A forked child keeps the entry with the mapping.
 *
 * The table is only consulted by _fd, _from_fd and _free, never by the calls
 * that use an object, so it costs nothing on the fast paths.  If a memfd
 * cannot be made (e.g. the process is out of descriptors) an object falls
 * back to an anonymous mapping: it works as before but has no fd to hand
 * (mproc_object_fd reports MPROC_ESTATE).  The same happens once objects
 * hold a quarter of the process's descriptor limit (RLIMIT_NOFILE), so that
 * they never starve the program's own files and sockets.
 *
 * Misuse: the address of an object made after a worker was forked, sent in
 * a task's argument, points at nothing in the worker.  The calls that may
 * take a system call anyway (_free/_destroy, Value's get/set) first check
 * that the address is mapped (mproc__obj_mapped) and return MPROC_EINVAL
 * instead of faulting; the fast paths (acquire, fetch_add...) cannot afford
 * the system call and fault as with any wild pointer. */
#include "sync.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

struct entry {
  void *addr;
  size_t size;
  int fd; /* created here: its memfd; attached: -1 */
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static struct entry *table;
static size_t used, cap;
static size_t nfds; /* entries holding a descriptor */

static void before_fork(void) { pthread_mutex_lock(&table_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&table_lock); }

/* The child keeps the mappings; the fds are the parent's to hand out. */
static void after_fork_child(void) {
  size_t kept = 0;
  for (size_t i = 0; i < used; i++) {
    if (table[i].fd >= 0)
      mproc__close(table[i].fd);
    else
      table[kept++] = table[i];
  }
  used = kept;
  nfds = 0;
  pthread_mutex_unlock(&table_lock);
}

static void table_init(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

static int table_add(void *addr, size_t size, int fd) {
  pthread_once(&table_once, table_init);
  pthread_mutex_lock(&table_lock);
  int r = 0;
  struct entry *t = mproc__grow(table, &cap, used, sizeof *t, 16);
  if (t == NULL)
    r = MPROC_ENOMEM;
  else {
    table = t;
    table[used++] = (struct entry){addr, size, fd};
    nfds += fd >= 0;
  }
  pthread_mutex_unlock(&table_lock);
  return r;
}

/* Finds the entry of `addr`; with `remove`, takes it out.  False if none. */
static bool table_find(const void *addr, struct entry *out, bool remove) {
  pthread_once(&table_once, table_init);
  pthread_mutex_lock(&table_lock);
  bool found = false;
  for (size_t i = 0; i < used && !found; i++) {
    if (table[i].addr != addr)
      continue;
    found = true;
    *out = table[i];
    if (remove) {
      nfds -= table[i].fd >= 0;
      table[i] = table[--used];
    }
  }
  pthread_mutex_unlock(&table_lock);
  return found;
}

/* Whether another object may keep a descriptor: objects never take more
 * than a quarter of the process's descriptor limit, so a program making
 * thousands of locks does not starve its own open() and socket() calls. */
static bool fd_budget_left(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return true;
  pthread_mutex_lock(&table_lock);
  size_t held = nfds;
  pthread_mutex_unlock(&table_lock);
  return held < rl.rlim_cur / 4;
}

int mproc__obj_map_new(size_t size, void **addr_out) {
  int fd;
  if (!fd_budget_left() || mproc__memfd_create("mproc-object", size, &fd) != 0)
    return mproc__map_anon_shared(size, addr_out); /* works, cannot be handed */
  int r = mproc__map_shared(fd, size, addr_out);
  if (r == 0 && table_add(*addr_out, size, fd) != 0) {
    munmap(*addr_out, size);
    r = MPROC_ENOMEM;
  }
  if (r != 0)
    mproc__close(fd);
  return r;
}

bool mproc__obj_forget(void *addr, bool *attached) {
  struct entry e;
  if (!table_find(addr, &e, true))
    return false;
  *attached = e.fd < 0;
  mproc__close(e.fd);
  return true;
}

bool mproc__obj_size(const void *addr, size_t *size) {
  struct entry e;
  if (!table_find(addr, &e, false))
    return false;
  *size = e.size;
  return true;
}

bool mproc__obj_attached(const void *addr) {
  struct entry e;
  return table_find(addr, &e, false) && e.fd < 0;
}

/* Smallest size any kind's header needs to be read safely. */
#define MIN_OBJECT 64

int mproc__obj_attach(const struct mproc__sync_kind *k, int fd, void *out) {
  if (out == NULL || fd < 0)
    return MPROC_EINVAL;
  struct stat st;
  if (fstat(fd, &st) != 0)
    return mproc__neg_errno();
  if (!S_ISREG(st.st_mode) || st.st_size < MIN_OBJECT)
    return MPROC_EINVAL; /* not an object's memfd */
  size_t size = (size_t)st.st_size;
  void *p;
  int r = mproc__map_shared(fd, size, &p);
  if (r != 0)
    return r == -EACCES ? r : MPROC_EINVAL;
  const struct mproc__sync_hdr *h = p;
  if (!mproc__sync_ok(p, k->magic) || (h->flags & MPROC__SYNC_ALLOCATED) == 0)
    r = MPROC_EINVAL; /* another kind, a destroyed object, or not one at all */
  else if ((k->size_of != NULL ? k->size_of(p) : k->size) != size ||
           (k->valid != NULL && !k->valid(p)))
    r = MPROC_ECORRUPT;
  if (r == 0)
    r = table_add(p, size, -1);
  if (r != 0) {
    munmap(p, size);
    return r;
  }
  memcpy(out, &p, sizeof p); /* out is a `T **` */
  return 0;
}

MPROC_EXTERN int mproc_object_fd(const void *obj) {
  if (obj == NULL || ((uintptr_t)obj & 7u) != 0)
    return MPROC_EINVAL;
  struct entry e;
  if (!table_find(obj, &e, false))
    return MPROC_ESTATE; /* not made by a _new of this process */
  return e.fd >= 0 ? e.fd : MPROC_ESTATE;
}

bool mproc__obj_mapped(const void *p) {
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t base = (uintptr_t)p & ~(uintptr_t)(page - 1);
  /* msync fails with ENOMEM on an address no mapping covers; it reads
   * nothing, so it cannot fault. */
  return p != NULL && msync((void *)base, 1, MS_ASYNC) == 0;
}
