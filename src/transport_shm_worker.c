/* The shm transport's worker process: its main loop and its task context
 * (results and messages written into the ring entry; see task_ctx.h).
 *
 * Design notes.  A worker is forked by the pool's manager thread (so its
 * parent-death signal, SIGKILL, fires when the pool's process dies) into a
 * process group of its own (so the terminal's Ctrl-C does not reach it, and
 * the pool can kill the worker together with any children it started).  The
 * parent may have had other threads holding locks at fork time, so the loop
 * itself uses only system calls, atomics and the shared rings: no malloc, no
 * stdio, no pthread mutex.  Stdio is switched to caller-managed locking
 * because this process is single-threaded and a FILE lock copied in a locked
 * state would otherwise deadlock the first printf of a task.
 *
 * Loop, one ring position at a time:
 *   head == pos: idle -> spin briefly -> announce sleeping -> futex wait
 *   entry QUEUED: CAS to STARTED (the parent may revoke it concurrently; the
 *   CAS decides) -> publish cur/cur_start -> run -> write result -> DONE ->
 *   bump done_seq -> wake the manager if it sleeps -> recycle checks
 *   entry REVOKED: skip (consume its argument fd if it had one)
 * It leaves only through _exit: 0 when asked to stop with an empty ring, when
 * it has run max_tasks, or when its RSS passed the ceiling (the manager then
 * replaces it and re-queues whatever was still queued in its ring). */
#include "pool.h"
#include "futex.h"
#include "map_buf.h"
#include "shm_layout.h"
#include "start.h"
#include "task_ctx.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The shm transport's task context: results and messages go to the ring
 * entry (or, for an initializer, to the slot's init_msg). */
struct shm_ctx {
  mproc_task_ctx base; /* first: the public API sees only this */
  struct mproc__entry *e;
  unsigned char *area; /* the entry's result area in the arena, NULL: none */
  int res_fd;          /* memfd of a large result, -1 none */
  void *res_map;       /* its mapping */
  size_t res_len;      /* its size */
  char *msg;           /* where messages go */
  int32_t *msg_code;
  int fds[MPROC_TASK_MAX_FDS]; /* the task's own fds (closed after it) */
};

static void drop_big(struct shm_ctx *c) {
  if (c->res_map != NULL)
    munmap(c->res_map, c->res_len);
  if (c->res_fd >= 0)
    mproc__close(c->res_fd);
  c->res_map = NULL;
  c->res_fd = -1;
}

static int shm_result_buf(mproc_task_ctx *base, size_t len, void **buf) {
  struct shm_ctx *c = (struct shm_ctx *)base;
  drop_big(c);
  /* The entry describes no result until the new buffer exists: a failure
   * here must never leave a length behind that the parent would copy out of
   * the inline area. */
  c->e->rflags &= ~(uint32_t)(MPROC__EF_RES_FD | MPROC__EF_RES_AREA);
  c->e->res_len = 0;
  if (len <= MPROC__INLINE) {
    c->e->res_len = len;
    *buf = c->e->res;
    return 0;
  }
  if (c->area != NULL && len <= MPROC__MEDIUM) {
    /* Medium: in the entry's arena area, which the parent sees already. */
    c->e->res_len = len;
    c->e->rflags |= MPROC__EF_RES_AREA;
    *buf = c->area;
    return 0;
  }
  /* Too big for the entry: a memfd, mapped here and handed to the parent
   * after the task returns.  The parent maps the same pages: no copy. */
  int fd;
  void *m = NULL;
  int r = mproc__memfd_create("mproc-result", len, &fd);
  if (r == 0 && (r = mproc__map_shared(fd, len, &m)) != 0)
    mproc__close(fd);
  if (r != 0)
    return r;
  c->res_fd = fd;
  c->res_map = m;
  c->res_len = len;
  c->e->res_len = len;
  c->e->rflags |= MPROC__EF_RES_FD;
  *buf = m;
  return 0;
}

static void shm_fail(mproc_task_ctx *base, int code, const char *msg) {
  struct shm_ctx *c = (struct shm_ctx *)base;
  *c->msg_code = code;
  snprintf(c->msg, MPROC__INLINE, "%s", msg);
  if (c->e != NULL)
    c->e->rflags |= MPROC__EF_MSG;
}

static const struct mproc__task_ops shm_task_ops = {.result_buf = shm_result_buf, .fail = shm_fail};

static size_t rss_bytes(void) {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  /* "size resident shared ...": the second field, in pages. */
  const char *p = strchr(buf, ' ');
  if (p == NULL)
    return 0;
  size_t pages = 0;
  for (p++; *p >= '0' && *p <= '9'; p++)
    pages = pages * 10 + (size_t)(*p - '0');
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* The task's function: an address (forked worker) or an index into the
 * function table (exec'd worker), resolved once per index and cached.  A
 * function this image cannot find fails the task with MPROC_ENOFUNC and the
 * reason, naming the function. */
static int task_fn(const struct mproc__worker_args *w, const struct mproc__entry *e,
                   struct shm_ctx *c, void (**fn)(void)) {
  static void (*cache[MPROC__FN_TABLE])(void);
  if (e->fn_kind != MPROC__FN_INDEX) {
    *fn = mproc__taskfn_addr((struct mproc__taskfn){.kind = e->fn_kind, .addr = e->fn_addr});
    return *fn != NULL ? 0 : MPROC_ENOSYS;
  }
  if (w->fn_table == NULL || e->fn_addr >= MPROC__FN_TABLE)
    return mproc_task_fail(&c->base, MPROC_ENOFUNC, "function index %llu out of range",
                           (unsigned long long)e->fn_addr);
  if (cache[e->fn_addr] == NULL) {
    char why[1024];
    mproc_function f;
    if (mproc__fnref_resolve(&w->fn_table[e->fn_addr], &f, why, sizeof why) < 0)
      return mproc_task_fail(&c->base, MPROC_ENOFUNC, "%s", why);
    cache[e->fn_addr] = f;
  }
  *fn = cache[e->fn_addr];
  return 0;
}

static int run_call(const struct mproc__worker_args *w, struct mproc__entry *e, struct shm_ctx *c) {
  const void *arg = e->arg;
  void *argmap = NULL;
  int argfd = -1;
  /* The fds are taken off the socket before anything can fail, so the
   * next task's fds are never read as this one's. */
  int rr = 0;
  if (e->flags & MPROC__EF_FDS) {
    int all[MPROC__MSG_FDS];
    size_t k = 0;
    rr = mproc__recv_fds(w->sock, all, MPROC__MSG_FDS, &k);
    size_t first = (e->flags & MPROC__EF_ARG_FD) ? 1 : 0;
    if (rr == 0 && k < first)
      rr = -EIO;
    if (rr == 0 && first)
      argfd = all[0];
    for (size_t i = first; rr == 0 && i < k && c->base.nfds < MPROC_TASK_MAX_FDS; i++)
      c->fds[c->base.nfds++] = all[i];
  } else if (e->flags & MPROC__EF_ARG_FD) {
    rr = mproc__recv_fd(w->sock, &argfd);
  }
  if (rr != 0) {
    mproc__close(argfd);
    return mproc_task_fail(&c->base, rr, "worker could not receive the task's descriptors: %s",
                           mproc_strerror(rr));
  }
  if (e->flags & MPROC__EF_ARG_AREA) {
    if (e->arg_len > MPROC__MEDIUM || e->area_off == 0)
      return mproc_task_fail(&c->base, MPROC_ECORRUPT, "argument larger than its arena area");
    arg = w->arena + e->area_off;
  }
  if (e->flags & MPROC__EF_ARG_FD) {
    if (e->arg_len > 0 && mproc__map_shared(argfd, e->arg_len, &argmap) != 0) {
      mproc__close(argfd);
      return mproc_task_fail(&c->base, -EIO, "worker could not receive the task's argument");
    }
    arg = argmap;
  }
  void (*raw)(void) = NULL;
  int r = task_fn(w, e, c, &raw);
  if (r == 0)
    r = ((mproc_task_fn)raw)(arg, e->arg_len, &c->base);
  if (argmap != NULL)
    munmap(argmap, e->arg_len);
  mproc__close(argfd);
  return r;
}

/* A map_shm chunk's data: the caller's block, whose fd came with the entry
 * (taken off the socket first, so a failure never leaves it for the next
 * task), mapped through the worker's block cache (map_shm.c). */
static int block_of(const struct mproc__worker_args *w, const struct mproc__entry *e,
                    struct shm_ctx *c, unsigned char **base) {
  int fd = -1;
  size_t len = 0;
  int r = mproc__recv_fd(w->sock, &fd);
  if (r == 0)
    r = mproc__block_cache_map(fd, base, &len);
  if (r != 0)
    return mproc_task_fail(&c->base, r, "worker could not map the shared block: %s",
                           mproc_strerror(r));
  if (!mproc__block_range_ok(len, e->in_off, e->count, e->in_size) ||
      !mproc__block_range_ok(len, e->out_off, e->count, e->out_size))
    return mproc_task_fail(&c->base, MPROC_ECORRUPT, "chunk outside the shared block");
  return 0;
}

/* A map_shm_range chunk: one call over the whole range.  A crash inside it
 * blames the range's first item (progress stays 0); a failure blames the
 * item the function names, kept inside the range. */
static int run_range(struct mproc__entry *e, void (*raw)(void), unsigned char *base) {
  size_t failed = 0;
  const uint64_t count = e->count;
  int r = ((mproc_map_range_fn)raw)(base + e->in_off, base + e->out_off, (size_t)count, &failed);
  if (r != 0)
    atomic_store_explicit(&e->progress, count > 0 && failed >= count ? count - 1 : failed,
                          memory_order_relaxed);
  return r;
}

static int run_map(const struct mproc__worker_args *w, struct mproc__entry *e, struct shm_ctx *c) {
  unsigned char *base = w->arena;
  if (mproc__kind_block(e->kind)) {
    int r = block_of(w, e, c, &base);
    if (r != 0)
      return r;
  }
  void (*raw)(void) = NULL;
  int r0 = task_fn(w, e, c, &raw);
  if (r0 != 0)
    return r0;
  if (e->kind == MPROC__K_MAP_SHM_RANGE)
    return run_range(e, raw, base);
  unsigned char *out = base + e->out_off;
  /* A map_buf chunk runs whole: its items are not of one size. */
  if (raw == (void (*)(void))mproc__map_buf_item && e->kind == MPROC__K_MAP)
    return mproc__map_buf_run(base + e->in_off, e->count, &e->progress);
  if (e->kind != MPROC__K_STARMAP) {
    mproc_map_fn fn = (mproc_map_fn)raw;
    const unsigned char *in = base + e->in_off;
    /* Locals: the element function may write any memory, so fields read
     * through `e` would be loaded again for every item. */
    const uint64_t count = e->count, in_size = e->in_size, out_size = e->out_size;
    _Atomic uint64_t *progress = &e->progress;
    for (uint64_t i = 0; i < count; i++, in += in_size, out += out_size) {
      /* Progress is published per item so a crash is attributed to the item
       * it happened in; a relaxed store to a line this core owns is cheap. */
      atomic_store_explicit(progress, i, memory_order_relaxed);
      int r = fn(in, out);
      if (r != 0)
        return r;
    }
    return 0;
  }
  mproc_starmap_fn fn = (mproc_starmap_fn)raw;
  const void *args[MPROC_STARMAP_MAX_ARGS];
  for (uint64_t i = 0; i < e->count; i++) {
    atomic_store_explicit(&e->progress, i, memory_order_relaxed);
    for (uint32_t j = 0; j < e->nargs; j++)
      args[j] = w->arena + e->col_off[j] + i * e->col_size[j];
    int r = fn(args, out + i * e->out_size);
    if (r != 0)
      return r;
  }
  return 0;
}

static void run_entry(const struct mproc__worker_args *w, struct mproc__entry *e) {
  struct shm_ctx c = {.base = {.ops = &shm_task_ops},
                      .e = e,
                      .area = e->area_off != 0 ? w->arena + e->area_off + MPROC__MEDIUM : NULL,
                      .res_fd = -1,
                      .msg = e->res,
                      .msg_code = &e->code};
  c.base.fds = c.fds;
  e->rflags = 0;
  e->res_len = 0;
  e->code = 0;
  int r = e->kind == MPROC__K_CALL ? run_call(w, e, &c) : run_map(w, e, &c);
  for (size_t i = 0; i < c.base.nfds; i++)
    mproc__close(c.fds[i]);
  r = mproc__task_end(&c.base, r);
  if (r != 0 || c.base.failed) {
    drop_big(&c);
    e->rflags &= ~(uint32_t)(MPROC__EF_RES_FD | MPROC__EF_RES_AREA);
    e->res_len = 0;
    e->code = r != 0 ? r : e->code;
    if (!(e->rflags & MPROC__EF_MSG))
      e->res[0] = '\0';
    return;
  }
  if (c.res_fd >= 0) {
    /* The fd goes out before DONE is published: a parent that sees DONE,
     * even after this worker died, finds the fd in the socket. */
    munmap(c.res_map, c.res_len);
    c.res_map = NULL;
    if (mproc__send_fd(w->sock, c.res_fd) != 0) {
      e->rflags &= ~(uint32_t)MPROC__EF_RES_FD;
      e->code = -EIO;
      snprintf(e->res, MPROC__INLINE, "worker could not hand over a %zu-byte result", c.res_len);
      e->rflags |= MPROC__EF_MSG;
    }
    drop_big(&c);
  }
}

static void wake_manager(const struct mproc__worker_args *w);

static int corrupt_exit(void) {
  fflush(NULL);
  fprintf(stderr, "mproc: pool worker %d: its ring was overwritten; leaving\n", (int)getpid());
  return MPROC__WORKER_EXIT_CORRUPT;
}

/* `quiet`: the entry was EF_QUIET (read before it was published DONE, when
 * the parent may already reuse it). */
static void notify_parent(const struct mproc__worker_args *w, bool quiet) {
  atomic_fetch_add(&w->hdr->done_seq, 1);
  atomic_thread_fence(memory_order_seq_cst);
  /* A parent thread spinning in a wait collects the result itself (and
   * drains once more, under the lock, before it stops spinning); so does
   * the thread that set `quiet`, for the entries marked so (it clears the
   * word and drains before it sleeps). */
  if (atomic_load(&w->hdr->helpers) == 0 && !(quiet && atomic_load(&w->hdr->quiet)))
    wake_manager(w);
}

static void wake_manager(const struct mproc__worker_args *w) {
  if (atomic_load(&w->hdr->mgr_sleeping)) {
    uint64_t one = 1;
    ssize_t n = write(w->efd, &one, sizeof one);
    (void)n; /* a full eventfd already wakes the manager */
  }
}

/* Sleeps until the ring moves past pos, the worker is asked to stop, or a
 * closed block is published past `forgot` (its mapping is then dropped). */
static void idle_wait(const struct mproc__worker_args *w, uint64_t pos, uint64_t forgot) {
  struct mproc__slot_shm *s = w->slot;
  for (int i = 0; i < w->spin; i++) {
    if (atomic_load_explicit(&s->head, memory_order_acquire) != pos || atomic_load(&s->stop))
      return;
    if ((i & 63) == 63)
      sched_yield(); /* never starve a peer sharing this core */
    else
      mproc__cpu_relax();
  }
  uint32_t seen = atomic_load(&s->wake);
  atomic_store(&s->sleeping, 1);
  if (atomic_load(&s->head) == pos && !atomic_load(&s->stop) &&
      atomic_load(&w->hdr->forget_seq) == forgot)
    mproc__futex_wait(&s->wake, seen, -1, true);
  atomic_store(&s->sleeping, 0);
}

/* Drops the cached mappings of shared blocks closed since *seen, so a
 * closed block's memory is not kept alive by an idle worker (map_shm.c). */
static void forget_blocks(const struct mproc__worker_args *w, uint64_t *seen) {
  struct mproc__shm_hdr *h = w->hdr;
  uint64_t now = atomic_load_explicit(&h->forget_seq, memory_order_acquire);
  if (now == *seen)
    return;
  for (uint64_t k = now - *seen > MPROC__FORGET ? now : *seen; k < now; k++)
    mproc__block_cache_forget(
        atomic_load_explicit(&h->forget[k % MPROC__FORGET][0], memory_order_relaxed),
        atomic_load_explicit(&h->forget[k % MPROC__FORGET][1], memory_order_relaxed));
  /* Fell behind, or entries were overwritten while being read: forget all
   * (a block still in use is mapped again by its next chunk). */
  if (atomic_load(&h->forget_seq) - *seen > MPROC__FORGET)
    mproc__block_cache_clear();
  *seen = now;
}

struct mproc__slot_shm *mproc__worker_slot;
unsigned char *mproc__worker_arena;

/* Whether the ring's shared words still make sense at position pos: the
 * parent never publishes more than a ring ahead of the worker, and a
 * published entry this worker has not passed is QUEUED or REVOKED (the
 * parent frees an entry only after the worker moved past it).  Anything
 * else was written by a task scribbling over its own worker's memory; the
 * worker then leaves (MPROC__WORKER_EXIT_CORRUPT) rather than run garbage
 * or skip along a ring for ever, and the pool replaces it.  Checked only
 * where the worker already branches: no cost on the path of a task. */
static bool ring_sane(uint64_t head, uint64_t pos) { return head - pos <= MPROC__RING; }

int mproc__worker_main(void *arg) {
  const struct mproc__worker_args *w = arg;
  struct mproc__slot_shm *s = w->slot;
  mproc__worker_slot = s;
  mproc__worker_arena = w->arena;
  /* Forked from the manager thread, which blocks every signal: a task must
   * see the default signal behaviour (a crash kills the worker). */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  __fsetlocking(stdout, FSETLOCKING_BYCALLER);
  __fsetlocking(stderr, FSETLOCKING_BYCALLER);
  if (w->initializer != NULL) {
    struct shm_ctx c = {.base = {.ops = &shm_task_ops, .is_init = true},
                        .res_fd = -1,
                        .msg = s->init_msg,
                        .msg_code = &s->init_code};
    int r = w->initializer(w->initarg, &c.base);
    if (r != 0 || c.base.failed) {
      if (r != 0)
        s->init_code = r;
      if (!c.base.failed)
        snprintf(s->init_msg, sizeof s->init_msg, "initializer returned %d", r);
      atomic_store(&s->init_state, 2);
      notify_parent(w, false);
      fflush(NULL);
      return 3;
    }
  }
  atomic_store(&s->init_state, 1);
  uint64_t pos = 0;
  uint32_t ran = 0;
  uint64_t forgot = atomic_load(&w->hdr->forget_seq);
  for (;;) {
    forget_blocks(w, &forgot);
    uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
    if (head == pos) {
      if (atomic_load(&s->stop))
        break;
      idle_wait(w, pos, forgot);
      continue;
    }
    if (!ring_sane(head, pos))
      return corrupt_exit();
    struct mproc__entry *e = &s->ring[pos % MPROC__RING];
    uint32_t expect = MPROC__E_QUEUED;
    if (atomic_compare_exchange_strong(&e->state, &expect, MPROC__E_STARTED)) {
      bool timed = (e->flags & MPROC__EF_TIMED) != 0;
      bool quiet = (e->flags & MPROC__EF_QUIET) != 0;
      /* Always stamped: timeouts and the pool's statistics read it. */
      atomic_store(&s->cur_start, mproc_now_ms());
      atomic_store(&s->cur, pos + 1);
      if (timed) {
        /* The manager arms the task's deadline: it must wake even when a
         * parent thread is spinning. */
        atomic_fetch_add(&w->hdr->done_seq, 1);
        wake_manager(w);
      }
      run_entry(w, e);
      atomic_store(&s->cur, 0);
      atomic_store_explicit(&e->state, MPROC__E_DONE, memory_order_release);
      notify_parent(w, quiet);
      ran++;
      pos++;
      atomic_store_explicit(&s->wpos, pos, memory_order_release);
      if ((w->max_tasks > 0 && ran >= w->max_tasks) || (w->max_rss > 0 && rss_bytes() > w->max_rss))
        break;
    } else if (expect != MPROC__E_REVOKED) {
      return corrupt_exit();
    } else {
      /* Revoked before it started (cancel or steal): its argument fd, if
       * any, was already sent and must be consumed to keep fds in order. */
      if (e->flags & MPROC__EF_FDS) {
        int fds[MPROC__MSG_FDS];
        size_t k = 0;
        mproc__recv_fds(w->sock, fds, MPROC__MSG_FDS, &k);
        for (size_t i = 0; i < k; i++)
          mproc__close(fds[i]);
      } else if (e->flags & MPROC__EF_ARG_FD) {
        int fd;
        if (mproc__recv_fd(w->sock, &fd) == 0)
          mproc__close(fd);
      }
      pos++;
      atomic_store_explicit(&s->wpos, pos, memory_order_release);
    }
  }
  fflush(NULL);
  return 0;
}

/* The entry of an exec'd worker (registered below): attaches to the pool's
 * rings through the descriptors of the request and runs the worker loop. */
static int exec_entry(const struct mproc__child_ctx *c) {
  struct mproc__worker_boot b;
  if (c->arg == NULL || c->len < sizeof b || c->nfds != MPROC__BOOT_NFDS)
    return 127;
  memcpy(&b, c->arg, sizeof b);
  if (b.slot >= b.nworkers)
    return 127;
  /* The same pages the parent and the other workers see. */
  size_t hlen = mproc__shm_hdr_len((int)b.nworkers, true);
  void *hdr = mmap(NULL, hlen, PROT_READ | PROT_WRITE, MAP_SHARED, c->fds[MPROC__BOOT_HDR], 0);
  void *arena = mmap(NULL, MPROC__ARENA_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                     c->fds[MPROC__BOOT_ARENA], 0);
  if (hdr == MAP_FAILED || arena == MAP_FAILED) {
    fprintf(stderr, "mproc: pool worker cannot map the pool's rings\n");
    return 127;
  }
  close(c->fds[MPROC__BOOT_HDR]);
  close(c->fds[MPROC__BOOT_ARENA]);
  struct mproc__shm_hdr *h = hdr;
  struct mproc__worker_args w = {
      .hdr = h,
      .slot = &h->slots[b.slot],
      .arena = arena,
      .sock = c->fds[MPROC__BOOT_SOCK],
      .efd = c->fds[MPROC__BOOT_EFD],
      .initializer = (mproc_init_fn)c->fn,
      .initarg = c->len > sizeof b ? (void *)((const char *)c->arg + sizeof b) : NULL,
      .fn_table =
          (const struct mproc__fnref *)((char *)hdr + mproc__shm_hdr_len((int)b.nworkers, false)),
      .max_tasks = b.max_tasks,
      .max_rss = (size_t)b.max_rss,
      .spin = b.spin,
  };
  return mproc__worker_main(&w);
}

__attribute__((constructor(MPROC__ENTRY_PRIORITY))) static void register_entry(void) {
  mproc__start_entry_register(MPROC__ENTRY_POOL_WORKER, exec_entry);
}
