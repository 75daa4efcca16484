/* The life cycle shared by every process-shared primitive (Lock, RLock,
 * Semaphore, Event, Condition, Barrier) and Value.
 *
 * Design notes.  Each object starts with struct mproc__sync_hdr and goes
 * through the same states, whatever its kind:
 *
 *   storage --_init: check storage, zero, setup, publish magic--> live
 *   (none)  --_new: map, setup, publish magic (unmap on failure)--> live
 *   live    --_destroy/_free: check magic and owner, retire, clear magic,
 *             unmap (_free)--> gone
 *   (fd)    --_from_fd: map, check magic, size and fields--> attached
 *   attached --_free: detach, unmap; the object stays live for the others
 *
 * The magic is published last, with release ordering, so a process that
 * sees it sees a fully set-up object; it is cleared first on the way out,
 * so a stale handle fails the magic check (MPROC_EINVAL) instead of being
 * used.  `hdr.flags` records whether the library mapped the storage, so
 * _destroy is refused on _new objects and _free on _init ones: each object
 * has exactly one way to be released.  A kind supplies only what differs
 * (struct mproc__sync_kind): its setup, and the check and release of its
 * retire step (a held lock refuses to go).  Objects made by _new live in a
 * memfd so they can be handed to processes that did not inherit them
 * (handoff.c).  This file also holds the
 * per-thread tid cache every owner check uses. */
#include "futex.h"
#include "sync.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The calling thread's kernel tid, cached per thread: gettid() and getpid()
 * are system calls, far too slow for every acquire.  A forked child starts
 * with a copy of the forking thread's cache, so a fork handler clears it. */
static _Thread_local pid_t cached_tid;
static pthread_once_t tid_once = PTHREAD_ONCE_INIT;

static void tid_after_fork(void) { cached_tid = 0; }
static void tid_register(void) { pthread_atfork(NULL, NULL, tid_after_fork); }

pid_t mproc__gettid(void) {
  if (MPROC__UNLIKELY(cached_tid == 0)) {
    pthread_once(&tid_once, tid_register);
    cached_tid = gettid();
  }
  return cached_tid;
}

/* Zeroed storage of `size` bytes in, a published object out. */
static int publish(const struct mproc__sync_kind *k, void *obj, uint32_t flags, const void *arg,
                   void *out) {
  struct mproc__sync_hdr *h = obj;
  h->flags = flags;
  int r = k->setup != NULL ? k->setup(obj, arg) : 0;
  if (r != 0)
    return r;
  atomic_store_explicit(&h->magic, k->magic, memory_order_release);
  memcpy(out, &obj, sizeof obj); /* out is a `T **` */
  return 0;
}

int mproc__sync_init(const struct mproc__sync_kind *k, void *out, void *storage, size_t have,
                     size_t need, const void *arg) {
  if (out == NULL || storage == NULL || ((uintptr_t)storage & 7u) != 0 || have < need)
    return MPROC_EINVAL;
  /* Re-initialising a live object would corrupt every process using it. */
  if (mproc__sync_ok(storage, k->magic))
    return MPROC_EBUSY;
  memset(storage, 0, need);
  return publish(k, storage, 0, arg, out);
}

int mproc__sync_new(const struct mproc__sync_kind *k, void *out, size_t size, const void *arg) {
  if (out == NULL)
    return MPROC_EINVAL;
  void *p;
  int r = mproc__obj_map_new(size, &p); /* zeroed by the kernel */
  if (r != 0)
    return r;
  r = publish(k, p, MPROC__SYNC_ALLOCATED, arg, out);
  if (r != 0) {
    bool attached;
    munmap(p, size);
    mproc__obj_forget(p, &attached);
  }
  return r;
}

int mproc__sync_teardown(const struct mproc__sync_kind *k, void *obj, bool allocated) {
  if (!mproc__obj_mapped(obj) || !mproc__sync_ok(obj, k->magic))
    return MPROC_EINVAL;
  struct mproc__sync_hdr *h = obj;
  if (((h->flags & MPROC__SYNC_ALLOCATED) != 0) != allocated)
    return MPROC_EINVAL;
  bool attached;
  if (k->valid != NULL && !k->valid(obj)) {
    /* Damaged by some process that maps it: its fields (a size, a count of
     * parties) cannot be trusted, so it is not taken apart.  Where the kind
     * allows, a mapping this process made or attached is still released,
     * at the size it was mapped with. */
    size_t known;
    if (allocated && k->unmap_damaged && mproc__obj_size(obj, &known)) {
      munmap(obj, known);
      mproc__obj_forget(obj, &attached);
    }
    return MPROC_ECORRUPT;
  }
  /* Read while the object is whole: retire may take it apart. */
  size_t size = k->size_of != NULL ? k->size_of(obj) : k->size;
  attached = allocated && mproc__obj_attached(obj);
  int r = attached ? (k->detach != NULL ? k->detach(obj) : 0)
                   : (k->retire != NULL ? k->retire(obj) : 0);
  if (r != 0)
    return r;
  if (!attached)
    mproc__sync_clear(obj);
  if (allocated) {
    munmap(obj, size);
    mproc__obj_forget(obj, &attached); /* closes the fd of one made here */
  }
  return 0;
}

int mproc__sync_sleep(_Atomic uint32_t *word, _Atomic uint32_t *waiters, bool (*ready)(void *obj),
                      void *obj, int64_t deadline_ms, int64_t recheck_ms) {
  /* seq_cst here and on the waker's side (change the word, then read
   * `waiters`): a waker either sees this sleeper registered or its change is
   * seen by ready() before the sleep. */
  atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
  int r = 0;
  while (r == 0 && !ready(obj))
    r = mproc__futex_wait_capped(word, 0, deadline_ms, recheck_ms, true);
  atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
  return r;
}
