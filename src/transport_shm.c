/* The local shared-memory transport: per-worker rings in one mapping, a data
 * arena for map/imap, and fd passing for large arguments and results.
 *
 * Design notes.  The parent side runs under the pool mutex (one producer per
 * ring); each worker is the single consumer of its ring (see shm_layout.h for
 * the entry state machine).  Wake-ups are paid only when the peer sleeps:
 * the worker announces `sleeping` before its futex wait and the parent wakes
 * it only then; the manager announces `mgr_sleeping` before poll() and
 * workers write the eventfd only then.  Both use the store-then-load (Dekker)
 * order with sequentially consistent atomics so no wake-up is lost.  The
 * manager is not woken either while a parent thread spins (`helpers`), nor
 * for an EF_QUIET entry while `quiet` is set (an imap's caller collects
 * those itself, and clears the word before it waits: see imap.c).
 *
 * The arena is one memfd of MPROC__ARENA_LEN bytes mapped before the workers
 * fork: virtual space only until touched.  map/imap allocate extents in it
 * (first fit, parent memory only) and reuse them, because writing pages that
 * are already mapped is an order of magnitude faster than faulting fresh
 * ones; extents above MPROC__ARENA_KEEP are punched out when freed so a huge
 * map does not pin its memory for the pool's lifetime.
 *
 * A REVOKED entry is collected only once the worker has moved past it
 * (`wpos`): otherwise the parent could refill that entry with a newer
 * position while the worker is still looking at the old one. */
#include "pool.h"
#include "futex.h"
#include "shm_layout.h"
#include "start.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MPROC__ARENA_KEEP ((uint64_t)256 << 20)
#define ARENA_ALIGN 64

struct extent {
  uint64_t off, len;
};

/* The parent's side of one worker's ring (under the pool mutex). */
struct shm_slot {
  uint64_t head;             /* next ring position to fill */
  uint64_t tail;             /* oldest position not yet collected */
  struct mproc__task **jobs; /* ring position -> task (NULL: revoked) */
  int sock;                  /* parent end of the fd-passing socket, -1 none */
  /* An exec'd worker launched but not yet ready (see shm_start_worker). */
  struct mproc__start_pending pend;
  bool pending;
  /* When the parent first saw the entry at seen_pos running: an upper
   * bound of its start, whatever the worker's cur_start says. */
  uint64_t seen_pos;
  int64_t seen_at;
};

struct shm_state {
  struct shm_slot *slots; /* one per worker slot */
  struct mproc__shm_hdr *hdr;
  size_t hdr_len;
  int hdr_fd; /* exec'd workers: the header's memfd, else -1 */
  /* Exec'd workers: the function table's entries by address (parent side). */
  struct mproc__fnref *fn_table;
  uint32_t nfn;
  uint64_t fn_addr[MPROC__FN_TABLE];
  int arena_fd;
  unsigned char *arena;
  struct extent *free_ext; /* sorted by offset, coalesced */
  size_t nfree, capfree;
  int spin;
  uint64_t mgr_seen;  /* done_seq when the manager last looked (manager only) */
  bool blocks;        /* a shared block was handed to a worker (map_shm) */
  uint64_t area_base; /* arena offset of the entries' medium areas, 0: none */
};

/* The arena area of ring entry `pos` of slot i: MPROC__MEDIUM bytes for the
 * argument, as many for the result. */
static uint64_t area_of(const struct shm_state *s, int i, uint64_t pos) {
  return s->area_base + ((uint64_t)i * MPROC__RING + pos % MPROC__RING) * 2 * MPROC__MEDIUM;
}

static struct shm_state *st(struct mproc_pool *p) { return p->tp_state; }
static struct shm_slot *sslot(struct mproc_pool *p, int i) { return &st(p)->slots[i]; }
static struct mproc__slot_shm *sshm(struct mproc_pool *p, int i) { return &st(p)->hdr->slots[i]; }

/* The worker channel's descriptors go through the library's one SCM_RIGHTS
 * implementation (fdpass.c: close-on-exec from birth, MSG_CTRUNC reported,
 * a dead peer's pending ECONNRESET read past so earlier messages are not
 * lost); a message is one byte carrying its descriptors. */
int mproc__send_fds(int sock, const int *fds, size_t n) {
  char byte = 0;
  struct iovec iov = {&byte, 1};
  ssize_t r = mproc__sendmsg_fds(sock, &iov, 1, 0, fds, n);
  return r == 1 ? 0 : r < 0 ? (int)r : -EIO;
}

int mproc__send_fd(int sock, int fd) { return mproc__send_fds(sock, &fd, 1); }

int mproc__recv_fds(int sock, int *fds, size_t max, size_t *n_out) {
  char byte;
  int tmp[MPROC__MSG_FDS];
  size_t k = 0;
  int lost = 0;
  *n_out = 0;
  ssize_t n = mproc__recvmsg_fds(sock, &byte, 1, 0, tmp, MPROC__MSG_FDS, &k, &lost);
  int r = n < 0 ? (int)n : n == 0 ? -EIO : lost != 0 ? lost : k == 0 ? -EIO : 0;
  if (r != 0) {
    /* End of stream, or descriptors dropped at the fd limit (the message
     * is incomplete, so none of it is used): never a partial message. */
    for (size_t i = 0; i < k; i++)
      close(tmp[i]);
    return r;
  }
  for (size_t i = 0; i < k; i++) {
    tmp[i] = mproc__fd_own(tmp[i]);
    if (i < max)
      fds[i] = tmp[i];
    else
      mproc__close(tmp[i]);
  }
  *n_out = k < max ? k : max;
  return 0;
}

int mproc__recv_fd(int sock, int *fd_out) {
  size_t k;
  return mproc__recv_fds(sock, fd_out, 1, &k);
}

/* The result file of a DONE entry claiming res_len bytes: the worker sent
 * it before it published DONE, so it is in the socket already, and is not
 * waited for (an entry a task wrote over may name a file never sent).  It
 * must hold res_len bytes, or reading the mapping would fault.  Returns 0,
 * -EMFILE when it came but this process had no descriptor free for it (the
 * kernel dropped it: the result is lost, nothing is corrupt), or
 * MPROC_ECORRUPT. */
static int file_result(int sock, uint64_t res_len, int *fd_out) {
  char byte;
  int fd = -1, lost = 0;
  size_t k = 0;
  ssize_t n = mproc__recvmsg_fds(sock, &byte, 1, MSG_DONTWAIT, &fd, 1, &k, &lost);
  if (n <= 0 || k != 1 || lost != 0) {
    if (k == 1)
      close(fd);
    return n > 0 && lost != 0 ? lost : MPROC_ECORRUPT;
  }
  fd = mproc__fd_own(fd);
  struct stat sb;
  if (fstat(fd, &sb) != 0 || sb.st_size < 0 || (uint64_t)sb.st_size < res_len) {
    mproc__close(fd);
    return MPROC_ECORRUPT;
  }
  *fd_out = fd;
  return 0;
}

/* ---- arena ------------------------------------------------------------------ */

static int shm_arena_alloc(struct mproc_pool *p, size_t len, uint64_t *off) {
  struct shm_state *s = st(p);
  uint64_t need = ((uint64_t)len + ARENA_ALIGN - 1) & ~(uint64_t)(ARENA_ALIGN - 1);
  if (need == 0)
    need = ARENA_ALIGN;
  for (size_t i = 0; i < s->nfree; i++) {
    if (s->free_ext[i].len < need)
      continue;
    *off = s->free_ext[i].off;
    s->free_ext[i].off += need;
    s->free_ext[i].len -= need;
    if (s->free_ext[i].len == 0) {
      memmove(&s->free_ext[i], &s->free_ext[i + 1], (s->nfree - i - 1) * sizeof *s->free_ext);
      s->nfree--;
    }
    return 0;
  }
  return MPROC_ENOMEM;
}

static void shm_arena_free(struct mproc_pool *p, uint64_t off, size_t len) {
  struct shm_state *s = st(p);
  uint64_t n = ((uint64_t)len + ARENA_ALIGN - 1) & ~(uint64_t)(ARENA_ALIGN - 1);
  if (n == 0)
    n = ARENA_ALIGN;
  if (off + n > MPROC__ARENA_KEEP) {
    uint64_t from = off > MPROC__ARENA_KEEP ? off : MPROC__ARENA_KEEP;
    fallocate(s->arena_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
              (off_t)(off + n - from));
  }
  size_t i = 0;
  while (i < s->nfree && s->free_ext[i].off < off)
    i++;
  bool merge_prev = i > 0 && s->free_ext[i - 1].off + s->free_ext[i - 1].len == off;
  bool merge_next = i < s->nfree && off + n == s->free_ext[i].off;
  if (merge_prev && merge_next) {
    s->free_ext[i - 1].len += n + s->free_ext[i].len;
    memmove(&s->free_ext[i], &s->free_ext[i + 1], (s->nfree - i - 1) * sizeof *s->free_ext);
    s->nfree--;
  } else if (merge_prev) {
    s->free_ext[i - 1].len += n;
  } else if (merge_next) {
    s->free_ext[i].off = off;
    s->free_ext[i].len += n;
  } else {
    if (s->nfree == s->capfree) {
      size_t cap = s->capfree * 2;
      struct extent *e = realloc(s->free_ext, cap * sizeof *e);
      if (e == NULL)
        return; /* the extent is lost to the arena, never to memory safety */
      s->free_ext = e;
      s->capfree = cap;
    }
    memmove(&s->free_ext[i + 1], &s->free_ext[i], (s->nfree - i) * sizeof *s->free_ext);
    s->free_ext[i] = (struct extent){off, n};
    s->nfree++;
  }
}

/* ---- ops ---------------------------------------------------------------------- */

static void shm_fini(struct mproc_pool *p) {
  struct shm_state *s = st(p);
  if (s == NULL)
    return;
  if (s->hdr != NULL)
    munmap(s->hdr, s->hdr_len);
  if (s->arena != NULL)
    munmap(s->arena, MPROC__ARENA_LEN);
  mproc__close(s->arena_fd);
  mproc__close(s->hdr_fd);
  free(s->free_ext);
  for (int i = 0; s->slots != NULL && i < p->nworkers; i++) {
    mproc__close(s->slots[i].sock);
    free(s->slots[i].jobs);
  }
  free(s->slots);
  free(s);
  p->tp_state = NULL;
}

static int shm_init(struct mproc_pool *p) {
  struct shm_state *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MPROC_ENOMEM;
  s->arena_fd = -1;
  s->hdr_fd = -1;
  p->tp_state = s;
  /* Forked workers inherit the anonymous mapping; exec'd ones map the same
   * pages from a memfd they are given, and find functions in the table. */
  bool exec = p->opts.start_method != MPROC_START_FORK;
  s->hdr_len = mproc__shm_hdr_len(p->nworkers, exec);
  int r;
  if (!exec) {
    r = mproc__map_anon_shared(s->hdr_len, (void **)&s->hdr);
  } else {
    r = mproc__memfd_create("mproc-pool", s->hdr_len, &s->hdr_fd);
    if (r == 0)
      r = mproc__map_shared(s->hdr_fd, s->hdr_len, (void **)&s->hdr);
    if (r == 0)
      s->fn_table =
          (struct mproc__fnref *)((char *)s->hdr + mproc__shm_hdr_len(p->nworkers, false));
  }
  if (r == 0)
    r = mproc__memfd_create("mproc-arena", MPROC__ARENA_LEN, &s->arena_fd);
  if (r == 0)
    r = mproc__map_shared(s->arena_fd, MPROC__ARENA_LEN, (void **)&s->arena);
  if (r == 0) {
    s->slots = calloc((size_t)p->nworkers, sizeof *s->slots);
    r = s->slots != NULL ? 0 : MPROC_ENOMEM;
    for (int i = 0; r == 0 && i < p->nworkers; i++)
      s->slots[i].sock = -1; /* all of them before anything can fail */
    for (int i = 0; r == 0 && i < p->nworkers; i++) {
      s->slots[i].jobs = calloc(MPROC__RING, sizeof *s->slots[i].jobs);
      r = s->slots[i].jobs != NULL ? 0 : MPROC_ENOMEM;
    }
  }
  if (r == 0) {
    s->capfree = 16;
    s->free_ext = malloc(s->capfree * sizeof *s->free_ext);
    r = s->free_ext != NULL ? 0 : MPROC_ENOMEM;
  }
  if (r != 0) {
    shm_fini(p);
    return r;
  }
  /* Medium arguments and results go through areas at the arena's top
   * (virtual space until used) while they take at most half of it. */
  uint64_t areas = (uint64_t)p->nworkers * MPROC__RING * 2 * MPROC__MEDIUM;
  s->area_base = areas <= mproc__shm_areas_max ? MPROC__ARENA_LEN - areas : 0;
  s->free_ext[0] = (struct extent){0, s->area_base != 0 ? s->area_base : MPROC__ARENA_LEN};
  s->nfree = 1;
  /* Idle workers spin briefly before sleeping only while there are spare
   * cores; otherwise a spinning worker would steal time from a busy one. */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  s->spin = p->nworkers < ncpu ? 20000 : 2000;
  return 0;
}

size_t mproc__shm_hdr_len(int nworkers, bool table) {
  size_t n = sizeof(struct mproc__shm_hdr) + (size_t)nworkers * sizeof(struct mproc__slot_shm);
  return table ? n + MPROC__FN_TABLE * sizeof(struct mproc__fnref) : n;
}

/* Launches the worker of slot i by spawn or forkserver: a fresh image told
 * where the rings are (struct mproc__worker_boot), with the initializer as a
 * function reference and its argument bytes.  Its verdict is read at the
 * ready phase. */
static int exec_worker(struct mproc_pool *p, int i, int sock) {
  struct shm_state *s = st(p);
  size_t alen = p->opts.initarg != NULL ? p->opts.initarg_len : 0;
  struct mproc__worker_boot b = {
      .slot = (uint32_t)i,
      .nworkers = (uint32_t)p->nworkers,
      .max_tasks = p->opts.max_tasks_per_worker,
      .spin = s->spin,
      .max_rss = p->opts.max_worker_rss,
  };
  unsigned char *arg = malloc(sizeof b + alen);
  if (arg == NULL)
    return MPROC_ENOMEM;
  memcpy(arg, &b, sizeof b);
  if (alen > 0)
    memcpy(arg + sizeof b, p->opts.initarg, alen);
  int fds[MPROC__BOOT_NFDS];
  fds[MPROC__BOOT_HDR] = s->hdr_fd;
  fds[MPROC__BOOT_ARENA] = s->arena_fd;
  fds[MPROC__BOOT_SOCK] = sock;
  fds[MPROC__BOOT_EFD] = p->efd;
  char name[32];
  snprintf(name, sizeof name, "pool-worker-%d", i);
  /* In a group of its own, as a forked worker: the pool kills the group. */
  struct mproc__start_req req = {
      .method = p->opts.start_method,
      .entry = MPROC__ENTRY_POOL_WORKER,
      .fn = MPROC_FUNCTION(p->opts.initializer),
      .arg = arg,
      .len = sizeof b + alen,
      .name = name,
      .ident = "",
      .flags = MPROC__START_NEWPGRP | MPROC__START_NOFLUSH,
      .fds = fds,
      .nfds = MPROC__BOOT_NFDS,
  };
  int r = mproc__start_launch(&req, &sslot(p, i)->pend);
  free(arg);
  sslot(p, i)->pending = r == 0;
  return r;
}

uint32_t mproc__pool_fn_table_max = MPROC__FN_TABLE;

/* The function table index for fn, adding it on first use (under mu). */
static int fn_index(struct mproc_pool *p, uint64_t addr, uint64_t *idx) {
  struct shm_state *s = st(p);
  for (uint32_t k = 0; k < s->nfn; k++)
    if (s->fn_addr[k] == addr) {
      *idx = k;
      return 0;
    }
  if (s->nfn >= mproc__pool_fn_table_max || s->nfn == MPROC__FN_TABLE)
    return -ENOSPC;
  int r = mproc__fnref_make((mproc_function)(uintptr_t)addr, &s->fn_table[s->nfn]);
  if (r < 0)
    return r;
  s->fn_addr[s->nfn] = addr;
  *idx = s->nfn++;
  return 0;
}

/* Launch: the fd-passing socket, then a fork (complete at once) or an exec
 * (launched: pid and pidfd come at ready, once the new image answers). */
static int shm_start_worker(struct mproc_pool *p, int i, int phase) {
  struct shm_state *s = st(p);
  struct mproc__slot *sl = &p->slots[i];
  if (phase == MPROC__PHASE_READY) {
    struct shm_slot *ss = sslot(p, i);
    if (!ss->pending)
      return 0;
    ss->pending = false;
    int r = mproc__start_finish(&ss->pend, &sl->pid, &sl->pidfd);
    if (r != 0) {
      mproc__close(ss->sock);
      ss->sock = -1;
      sl->pid = 0;
      sl->pidfd = -1;
    }
    return r;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return mproc__neg_errno();
  sv[0] = mproc__fd_own(sv[0]);
  sv[1] = mproc__fd_own(sv[1]);
  struct mproc__worker_args w = {
      .hdr = s->hdr,
      .slot = sshm(p, i),
      .arena = s->arena,
      .sock = sv[1],
      .efd = p->efd,
      .initializer = p->opts.initializer,
      .initarg = p->opts.initarg,
      .max_tasks = p->opts.max_tasks_per_worker,
      .max_rss = p->opts.max_worker_rss,
      .spin = s->spin,
  };
  int keep[2] = {sv[1], p->efd};
  struct mproc__spawn_opts so = {.fn = mproc__worker_main,
                                 .arg = &w,
                                 .keep_fds = keep,
                                 .nkeep = 2,
                                 .pdeathsig = SIGKILL,
                                 .flags = MPROC__SPAWN_NEWPGRP | MPROC__SPAWN_NOFLUSH};
  int r = p->opts.start_method == MPROC_START_FORK ? mproc__spawn(&so, &sl->pid, &sl->pidfd)
                                                   : exec_worker(p, i, sv[1]);
  mproc__close(sv[1]);
  if (r != 0) {
    mproc__close(sv[0]);
    sl->pid = 0;
    sl->pidfd = -1;
    return r;
  }
  sslot(p, i)->sock = sv[0];
  return 0;
}

/* Every argument the pool keeps in memory fits an entry or its area. */
_Static_assert(MPROC__ARG_INLINE <= MPROC__MEDIUM, "an in-memory argument fits an entry's area");

uint64_t mproc__shm_areas_max = MPROC__ARENA_LEN / 2;

/* A memfd holding a task's in-memory argument (-errno on failure). */
static int arg_file(const struct mproc__task *t, int *fd) {
  int r = mproc__memfd_create("mproc-arg", t->arg_len, fd);
  for (size_t done = 0; r == 0 && done < t->arg_len;) {
    ssize_t n = pwrite(*fd, (const char *)t->arg + done, t->arg_len - done, (off_t)done);
    if (n < 0 && errno != EINTR)
      r = mproc__neg_errno();
    done += n > 0 ? (size_t)n : 0;
  }
  if (r != 0 && *fd >= 0)
    mproc__close(*fd);
  return r;
}

/* Sends a call's descriptors: its argument file `argfd` (or -1) and its own
 * fds, flagging the entry. */
static int send_call_fds(struct mproc_pool *p, int i, const struct mproc__task *t, int argfd,
                         struct mproc__entry *e) {
  struct shm_slot *sl = sslot(p, i);
  if (t->nfds > 0) {
    /* The argument fd (if any) and the task's own fds travel in ONE
     * message: a failed send leaves nothing half-sent on the socket for
     * the next task to misread.  A worker that finds the entry revoked
     * consumes the message all the same. */
    int all[MPROC__MSG_FDS];
    size_t k = 0;
    if (argfd >= 0)
      all[k++] = argfd;
    for (uint32_t j = 0; j < t->nfds; j++)
      all[k++] = t->fds[j];
    int r = mproc__send_fds(sl->sock, all, k);
    if (r != 0)
      return r;
    e->flags |= MPROC__EF_FDS | (argfd >= 0 ? MPROC__EF_ARG_FD : 0);
  } else if (argfd >= 0) {
    int r = mproc__send_fd(sl->sock, argfd);
    if (r != 0)
      return r;
    e->flags |= MPROC__EF_ARG_FD;
  }
  return 0;
}

static int shm_send_task(struct mproc_pool *p, int i, struct mproc__task *t) {
  struct shm_slot *sl = sslot(p, i);
  struct mproc__slot_shm *ss = sshm(p, i);
  if (sl->head - sl->tail >= MPROC__RING)
    return -EAGAIN;
  uint64_t pos = sl->head;
  struct mproc__entry *e = &ss->ring[pos % MPROC__RING];
  uint32_t fn_kind = t->fn.kind;
  uint64_t fn_addr = t->fn.addr;
  if (st(p)->fn_table != NULL) {
    int r = fn_index(p, t->fn.addr, &fn_addr);
    if (r < 0)
      return r;
    fn_kind = MPROC__FN_INDEX;
  }
  e->kind = t->kind;
  e->flags = 0;
  e->fn_kind = fn_kind;
  e->fn_addr = fn_addr;
  e->arg_len = t->arg_len;
  e->in_off = t->in_off;
  e->out_off = t->out_off;
  e->count = t->count;
  e->in_size = t->in_size;
  e->out_size = t->out_size;
  e->nargs = t->nargs;
  e->area_off = 0;
  atomic_store_explicit(&e->progress, 0, memory_order_relaxed);
  for (uint32_t j = 0; j < t->nargs; j++) {
    e->col_off[j] = t->col_off[j];
    e->col_size[j] = t->col_size[j];
  }
  if (t->timeout_ms > 0)
    e->flags |= MPROC__EF_TIMED;
  if (t->quiet)
    e->flags |= MPROC__EF_QUIET;
  if (mproc__kind_block(t->kind)) {
    /* The block travels with every chunk: a worker maps it on first sight
     * and finds it in its cache afterwards (map_shm.c). */
    int r = mproc__send_fd(sl->sock, t->arg_fd);
    if (r != 0)
      return r;
    e->flags |= MPROC__EF_ARG_FD;
    st(p)->blocks = true;
  } else if (t->kind == MPROC__K_CALL) {
    e->area_off = st(p)->area_base != 0 ? area_of(st(p), i, pos) : 0;
    /* An argument kept in memory travels inside the entry, in the entry's
     * arena area, or -- for a pool with too many workers for areas -- in a
     * memfd made here, as the pool makes one for larger arguments. */
    bool copied = t->arg_fd < 0 && t->arg_len > 0;
    bool in_area =
        copied && t->arg_len > MPROC__INLINE && e->area_off != 0 && t->arg_len <= MPROC__MEDIUM;
    int own = -1;
    if (copied && t->arg_len > MPROC__INLINE && !in_area) {
      int r = arg_file(t, &own);
      if (r != 0)
        return r;
    }
    int r = send_call_fds(p, i, t, own >= 0 ? own : t->arg_fd, e);
    mproc__close(own);
    if (r != 0)
      return r;
    if (in_area) {
      /* A medium argument: the worker reads it where the parent wrote it. */
      memcpy(st(p)->arena + e->area_off, t->arg, t->arg_len);
      e->flags |= MPROC__EF_ARG_AREA;
    } else if (copied && own < 0) {
      memcpy(e->arg, t->arg, t->arg_len);
    }
  }
  atomic_store_explicit(&e->state, MPROC__E_QUEUED, memory_order_release);
  sl->jobs[pos % MPROC__RING] = t;
  t->slot = i;
  t->tp_ref = pos;
  sl->head = pos + 1;
  atomic_store(&ss->head, pos + 1);
  atomic_fetch_add(&ss->wake, 1);
  if (atomic_load(&ss->sleeping))
    mproc__futex_wake(&ss->wake, 1, true);
  return 0;
}

/* A result field of entry e, read once.  The worker's task can write over
 * its own ring at any time (a bug, a stray pointer), so every field the
 * parent acts on is read exactly once, checked, and only the checked copy
 * is used: never a length checked in one read and copied with in another. */
#define ONCE(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* The outcome of a DONE entry at ring position pos.  The message is copied
 * into msg (MPROC__INLINE bytes, the caller's): the entry's text need not
 * end inside it.  Whatever the entry says, nothing is read outside the
 * entry, its own arena area or a result file of the size it claims, and a
 * result file it names but the worker never sent is not waited for. */
static void outcome_of(struct mproc_pool *p, int i, uint64_t pos, struct mproc__entry *e,
                       struct mproc__task *t, struct mproc__outcome *o, char *msg) {
  memset(o, 0, sizeof *o);
  o->pid = p->slots[i].pid;
  o->exit_status = -1;
  o->msg = "";
  const uint32_t rflags = ONCE(e->rflags);
  const int32_t code = ONCE(e->code);
  const uint64_t res_len = ONCE(e->res_len);
  int fd = -1;
  int fr = (rflags & MPROC__EF_RES_FD) ? file_result(sslot(p, i)->sock, res_len, &fd) : 0;
  if (fr != 0) {
    o->code = fr;
    o->msg = fr == MPROC_ECORRUPT
                 ? "the worker reported a result file it did not send, or a smaller one"
                 : "no descriptor free for the task's result file";
    return;
  }
  if (code != 0) {
    o->code = MPROC_ETASK;
    o->task_code = code;
    /* The item it failed in, kept inside the chunk. */
    uint64_t at = atomic_load_explicit(&e->progress, memory_order_relaxed);
    o->index = t->base_index + (at < t->count ? at : t->count > 0 ? t->count - 1 : 0);
    if (rflags & MPROC__EF_MSG) {
      memcpy(msg, e->res, MPROC__INLINE);
      msg[MPROC__INLINE - 1] = '\0';
      o->msg = msg;
    } else {
      o->msg = mproc_strerror(code);
    }
    mproc__close(fd);
    return;
  }
  if (t->kind != MPROC__K_CALL) {
    mproc__close(fd);
    return;
  }
  const bool in_area = (rflags & MPROC__EF_RES_AREA) && st(p)->area_base != 0;
  if (!(rflags & MPROC__EF_RES_FD) && res_len > (in_area ? MPROC__MEDIUM : MPROC__INLINE)) {
    /* Never copy past the entry's inline area or its arena area, whatever
     * the entry says. */
    mproc__close(fd);
    o->code = MPROC_ECORRUPT;
    o->msg = "the worker reported a result larger than its ring entry";
    return;
  }
  o->res_len = res_len;
  if (rflags & MPROC__EF_RES_FD) {
    void *m = NULL;
    int r = mproc__map_shared(fd, res_len, &m);
    mproc__close(fd);
    if (r != 0) {
      o->code = r;
      o->msg = "could not map the task's result";
      o->res_len = 0;
      return;
    }
    o->res = m;
    o->res_map_len = res_len;
  } else if (res_len > 0) {
    o->res = malloc(res_len);
    if (o->res == NULL) {
      o->code = MPROC_ENOMEM;
      o->msg = "no memory for the task's result";
      o->res_len = 0;
      return;
    }
    /* A medium result is copied out of the entry's area, which the entry's
     * next task reuses; where that area is comes from the parent's own
     * arithmetic, never from the entry. */
    const void *from = in_area
                           ? (const void *)(st(p)->arena + area_of(st(p), i, pos) + MPROC__MEDIUM)
                           : (const void *)e->res;
    memcpy(o->res, from, res_len);
  }
}

/* An entry found at the collecting position, neither DONE nor REVOKED:
 * still to run or running, unless the worker has moved past it (its wpos
 * is stored after the entry's last state), which only a write over the
 * ring can explain.  Then the entry is as good as DONE with a broken
 * result, so the ring moves on instead of waiting for ever. */
static bool overrun(struct mproc__slot_shm *ss, struct mproc__entry *e, uint64_t tail,
                    uint32_t *state) {
  if (atomic_load_explicit(&ss->wpos, memory_order_acquire) <= tail)
    return false;
  *state = atomic_load_explicit(&e->state, memory_order_acquire);
  return true;
}

static int shm_poll_results(struct mproc_pool *p, int i,
                            void (*done)(struct mproc_pool *, struct mproc__task *,
                                         struct mproc__outcome *)) {
  struct shm_slot *sl = sslot(p, i);
  struct mproc__slot_shm *ss = sshm(p, i);
  int n = 0;
  while (sl->tail < sl->head) {
    struct mproc__entry *e = &ss->ring[sl->tail % MPROC__RING];
    uint32_t state = atomic_load_explicit(&e->state, memory_order_acquire);
    if (state == MPROC__E_REVOKED) {
      if (atomic_load_explicit(&ss->wpos, memory_order_acquire) <= sl->tail)
        break;
    } else if (state != MPROC__E_DONE && !overrun(ss, e, sl->tail, &state)) {
      break;
    }
    struct mproc__task *t = sl->jobs[sl->tail % MPROC__RING];
    sl->jobs[sl->tail % MPROC__RING] = NULL;
    if (state != MPROC__E_REVOKED && t != NULL) {
      struct mproc__outcome o;
      char msg[MPROC__INLINE];
      if (state == MPROC__E_DONE) {
        outcome_of(p, i, sl->tail, e, t, &o, msg);
      } else {
        memset(&o, 0, sizeof o);
        o.pid = p->slots[i].pid;
        o.exit_status = -1;
        o.code = MPROC_ECORRUPT;
        o.msg = "the worker passed the task's ring entry without finishing it";
      }
      t->slot = -1;
      done(p, t, &o);
      n++;
    }
    atomic_store_explicit(&e->state, MPROC__E_FREE, memory_order_relaxed);
    sl->tail++;
  }
  return n;
}

static struct mproc__entry *entry_of(struct mproc_pool *p, const struct mproc__task *t) {
  return &sshm(p, t->slot)->ring[t->tp_ref % MPROC__RING];
}

static bool revoke_one(struct mproc_pool *p, struct mproc__task *t) {
  if (t->slot < 0)
    return false;
  uint32_t expect = MPROC__E_QUEUED;
  if (!atomic_compare_exchange_strong(&entry_of(p, t)->state, &expect, MPROC__E_REVOKED))
    return false;
  sslot(p, t->slot)->jobs[t->tp_ref % MPROC__RING] = NULL;
  t->slot = -1;
  return true;
}

static int shm_revoke(struct mproc_pool *p, int i, struct mproc__task *one,
                      void (*each)(struct mproc_pool *, struct mproc__task *)) {
  if (one != NULL)
    return one->slot == i && revoke_one(p, one) ? 1 : 0;
  struct shm_slot *sl = sslot(p, i);
  int n = 0;
  for (uint64_t pos = sl->tail; pos < sl->head; pos++) {
    struct mproc__task *t = sl->jobs[pos % MPROC__RING];
    if (t != NULL && revoke_one(p, t)) {
      each(p, t);
      n++;
    }
  }
  return n;
}

static struct mproc__task *running(struct mproc_pool *p, int i, int64_t *since,
                                   uint64_t *items_done) {
  struct mproc__slot_shm *ss = sshm(p, i);
  struct shm_slot *sl = sslot(p, i);
  uint64_t cur = atomic_load(&ss->cur);
  if (cur == 0 || cur - 1 < sl->tail || cur - 1 >= sl->head)
    return NULL;
  struct mproc__entry *e = &ss->ring[(cur - 1) % MPROC__RING];
  if (atomic_load(&e->state) != MPROC__E_STARTED)
    return NULL;
  /* The start the worker published, no later than when the parent first
   * saw the task running: a task that wrote a time in the future over it
   * still meets its deadline, and neither since + timeout nor now - since
   * can overflow (the monotonic clock is never negative). */
  if (sl->seen_at == 0 || sl->seen_pos != cur) {
    sl->seen_pos = cur;
    sl->seen_at = mproc_now_ms();
  }
  int64_t start = atomic_load(&ss->cur_start);
  *since = start < 0 ? 0 : start < sl->seen_at ? start : sl->seen_at;
  /* The item the worker is in: as many before it are finished. */
  *items_done = atomic_load_explicit(&e->progress, memory_order_relaxed);
  return sl->jobs[(cur - 1) % MPROC__RING];
}

static struct mproc__task *waiting(struct mproc_pool *p, int i, uint64_t *pos) {
  struct mproc__slot_shm *ss = sshm(p, i);
  struct shm_slot *sl = sslot(p, i);
  uint64_t w = atomic_load(&ss->wpos);
  *pos = w;
  if (atomic_load(&ss->cur) != 0)
    return NULL;
  /* Revoked entries the worker has not skipped yet come first. */
  for (uint64_t k = w > sl->tail ? w : sl->tail; k < sl->head; k++) {
    uint32_t state = atomic_load(&ss->ring[k % MPROC__RING].state);
    if (state == MPROC__E_QUEUED)
      return sl->jobs[k % MPROC__RING];
    if (state != MPROC__E_REVOKED)
      return NULL;
  }
  return NULL;
}

/* Where the worker is with its initializer (the slot's init_state word). */
static void init_state(struct mproc_pool *p, int i, struct mproc__activity *a) {
  struct mproc__slot_shm *ss = sshm(p, i);
  uint32_t state = atomic_load(&ss->init_state);
  a->init = state == 1 ? MPROC__INIT_READY : MPROC__INIT_RUNNING;
  if (state == 2) {
    a->init = MPROC__INIT_FAILED;
    a->init_code = ss->init_code;
    ss->init_msg[sizeof ss->init_msg - 1] = '\0';
    a->init_msg = ss->init_msg;
  }
}

static void shm_activity(struct mproc_pool *p, int i, struct mproc__activity *a) {
  a->since = 0;
  a->items_done = 0;
  a->running = running(p, i, &a->since, &a->items_done);
  a->waiting = waiting(p, i, &a->pos);
  init_state(p, i, a);
}

/* Idle: the worker is told to exit once its ring is empty.  A running task
 * cannot be ended inside the worker (it may hold any lock, be in any
 * syscall), so _TASK, like _NOW, kills the worker and its process group.
 * Under the mutex the pool has not reaped it, but the kernel may have (the
 * program ignores SIGCHLD): the group is killed only while it exists. */
static void shm_stop(struct mproc_pool *p, int i, int how, struct mproc__task *t) {
  (void)t;
  struct mproc__slot *sl = &p->slots[i];
  if (how != MPROC__STOP_IDLE) {
    mproc__kill_worker_group(sl->pid, sl->pidfd);
    return;
  }
  struct mproc__slot_shm *ss = sshm(p, i);
  atomic_store(&ss->stop, 1);
  atomic_fetch_add(&ss->wake, 1);
  mproc__futex_wake(&ss->wake, 1, true);
}

static void shm_reset_slot(struct mproc_pool *p, int i,
                           void (*left)(struct mproc_pool *, struct mproc__task *, bool)) {
  struct shm_slot *sl = sslot(p, i);
  struct mproc__slot_shm *ss = sshm(p, i);
  for (uint64_t pos = sl->tail; pos < sl->head; pos++) {
    struct mproc__entry *e = &ss->ring[pos % MPROC__RING];
    struct mproc__task *t = sl->jobs[pos % MPROC__RING];
    uint32_t state = atomic_load(&e->state);
    sl->jobs[pos % MPROC__RING] = NULL;
    atomic_store(&e->state, MPROC__E_FREE);
    if (t == NULL)
      continue;
    t->slot = -1;
    /* Items before it are finished: their outputs are in the arena. */
    t->progress = atomic_load_explicit(&e->progress, memory_order_relaxed);
    if (t->progress >= t->count && t->count > 0)
      t->progress = t->count - 1; /* never blame an item outside the chunk */
    left(p, t, state == MPROC__E_STARTED || state == MPROC__E_DONE);
  }
  sl->head = sl->tail = 0;
  sl->seen_at = 0;
  atomic_store(&ss->head, 0);
  atomic_store(&ss->cur, 0);
  atomic_store(&ss->wpos, 0);
  atomic_store(&ss->stop, 0);
  atomic_store(&ss->sleeping, 0);
  atomic_store(&ss->init_state, 0);
  mproc__close(sl->sock);
  sl->sock = -1;
}

/* The manager announces that it sleeps (workers then write the eventfd),
 * then re-checks done_seq: store-then-load, so a result published in
 * between is either seen here or wakes the poll. */
static int shm_sleep(struct mproc_pool *p, struct pollfd *pfd, int n, int timeout_ms) {
  struct shm_state *s = st(p);
  struct mproc__shm_hdr *h = s->hdr;
  atomic_store(&h->mgr_sleeping, 1);
  uint64_t now = atomic_load(&h->done_seq);
  int r = 0;
  if (now != s->mgr_seen)
    s->mgr_seen = now;
  else
    r = poll(pfd, (nfds_t)n, timeout_ms);
  atomic_store(&h->mgr_sleeping, 0);
  return r;
}

static void shm_helping(struct mproc_pool *p, int delta) {
  atomic_fetch_add(&st(p)->hdr->helpers, (uint32_t)delta);
}

static void shm_quiet(struct mproc_pool *p, bool on) {
  atomic_store(&st(p)->hdr->quiet, on);
  if (!on)
    atomic_thread_fence(memory_order_seq_cst); /* before the caller reads the rings */
}

static void *shm_arena(struct mproc_pool *p, uint64_t off) { return st(p)->arena + off; }

static const struct mproc__arena_ops shm_arena_ops = {
    .alloc = shm_arena_alloc,
    .free = shm_arena_free,
    .at = shm_arena,
};

/* Publishes the closed block in the header and wakes the sleeping workers,
 * which drop their mapping of it before they sleep again. */
static void shm_forget_block(struct mproc_pool *p, uint64_t dev, uint64_t ino) {
  struct shm_state *s = st(p);
  if (!s->blocks)
    return;
  struct mproc__shm_hdr *h = s->hdr;
  uint64_t k = atomic_load_explicit(&h->forget_seq, memory_order_relaxed);
  atomic_store_explicit(&h->forget[k % MPROC__FORGET][0], dev, memory_order_relaxed);
  atomic_store_explicit(&h->forget[k % MPROC__FORGET][1], ino, memory_order_relaxed);
  atomic_store_explicit(&h->forget_seq, k + 1, memory_order_release);
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot_shm *ss = sshm(p, i);
    atomic_fetch_add(&ss->wake, 1);
    if (atomic_load(&ss->sleeping))
      mproc__futex_wake(&ss->wake, 1, true);
  }
}

const struct mproc__transport_ops mproc__transport_shm = {
    .name = "shm",
    .idle_watch = true,
    .init = shm_init,
    .fini = shm_fini,
    .start_worker = shm_start_worker,
    .send_task = shm_send_task,
    .poll_results = shm_poll_results,
    .revoke = shm_revoke,
    .activity = shm_activity,
    .stop = shm_stop,
    .reset_slot = shm_reset_slot,
    .sleep = shm_sleep,
    .helping = shm_helping,
    .quiet = shm_quiet,
    .arena = &shm_arena_ops,
    .forget_block = shm_forget_block,
};
