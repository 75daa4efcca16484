/* Corrupt shared memory: whatever a peer (a buggy task, a foreign process)
 * writes into memory the library shares between processes, the reading
 * process must not crash, hang past its deadline, loop for ever or allocate
 * without bound; it reports MPROC_ECORRUPT (or another documented error)
 * and leaks nothing.
 *
 * Each attack runs in a forked child, so a crash is seen as the way the
 * child ended, and a hang as a child still running after a generous bound
 * (it is then killed and the test fails naming the pattern it was in). */
#include "child.h"
#include "internal.h"
#include "map_buf.h"
#include "pool-helpers.h"
#include "queue.h"
#include "shm_layout.h"
#include "sync.h"
#include "tidlock.h"

#include <limits.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

/* A bound for a child that runs calls with short deadlines: a hang only. */
#define HANG_MS mproc_test_scaled_ms(20000)
/* A bound for "returns promptly" around a deadline that is honoured. */
#define SLACK_MS mproc_test_scaled_ms(10000)
/* The deadline each blocking call in an attack is given. */
#define SHORT_MS 5

/* ---- the bounded child ------------------------------------------------------ */

/* Where the child says which pattern it is in, read by the parent when the
 * child crashed or hung. */
struct where {
  char what[120];
};

static struct where *where_page(void) {
  void *p = NULL;
  mproc_assert_ok(mproc__map_anon_shared(sizeof(struct where), &p));
  return p;
}

static void where_set(struct where *w, const char *kind, const char *pattern, int k) {
  snprintf(w->what, sizeof w->what, "%s / %s / %d", kind, pattern, k);
}

/* Runs fn(arg) in a child and asserts it ended by itself with status 0
 * within HANG_MS: no signal, no hang. */
static void survives(const char *what, mproc__child_fn fn, void *arg, struct where *w) {
  struct child c = child_start(fn, arg);
  int r = mproc__poll1(c.pidfd, POLLIN, mproc__deadline(HANG_MS));
  if (r == MPROC_ETIMEDOUT) {
    child_kill(&c);
    ck_abort_msg("%s: still running after %lld ms, in %s", what, (long long)HANG_MS, w->what);
  }
  int code = child_wait(&c);
  ck_assert_msg(code == 0, "%s: the child ended with %d, in %s", what, code, w->what);
}

/* A small deterministic generator (xorshift64*), so a failure repeats. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- corruption patterns over an object's bytes ----------------------------- */

/* Patterns: whole body filled, random bodies, and one word at a time set
 * to a value at an edge (the other words intact). */
enum { P_FF, P_RANDOM, P_WORD32, P_WORD64, P_NPAT };
static const char *const pat_name[P_NPAT] = {"all 0xff", "random", "one 32-bit word",
                                             "one 64-bit word"};
#define RANDOM_ROUNDS 24

/* 32-bit words: counts at the edges, and futex words of a robust mutex
 * that say "held" by no thread (all ones, waiters only, owner died). */
static uint32_t edge32(int k) {
  static const uint32_t v[] = {0xffffffffu, INT_MAX, 0x80000000u, 0x40000000u, 0x7fffffffu - 1};
  return v[k % 5];
}

/* 64-bit words: all ones, the top bit, the caller's own owner word (the
 * tid and start time of this thread), and the tid of a live process that
 * has nothing to do with the object (the parent) with a wrong token. */
static uint64_t edge64(int k) {
  switch (k % 5) {
  case 0:
    return UINT64_MAX;
  case 1:
    return (uint64_t)1 << 63;
  case 2:
    return mproc__tidlock_self();
  case 3:
    return (uint64_t)getppid() | ((uint64_t)0x12345 << 32);
  default:
    return (uint64_t)INT64_MAX;
  }
}

/* How many variants pattern p has over a body of `len` bytes. */
static int variants(int p, size_t len) {
  switch (p) {
  case P_FF:
    return 1;
  case P_RANDOM:
    return RANDOM_ROUNDS;
  case P_WORD32:
    return (int)(len / 4) * 5;
  default:
    return (int)(len / 8) * 5;
  }
}

/* Applies variant k of pattern p to body[0, len) (len a multiple of 8);
 * false if the variant does not apply. */
static bool corrupt(unsigned char *body, size_t len, int p, int k, bool live_owner) {
  uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(k + 1);
  switch (p) {
  case P_FF:
    memset(body, 0xff, len);
    break;
  case P_RANDOM:
    for (size_t i = 0; i < len; i++)
      body[i] = (unsigned char)rnd(&seed);
    break;
  case P_WORD32: {
    uint32_t v = edge32(k);
    memcpy(body + (size_t)(k / 5) * 4, &v, 4);
    break;
  }
  default: {
    if (k % 5 == 3 && !live_owner)
      return false;
    uint64_t v = edge64(k);
    memcpy(body + (size_t)(k / 5) * 8, &v, 8);
    break;
  }
  }
  return true;
}

/* ---- synchronization objects and Values -------------------------------------- */

/* One kind of shared object under attack: made fresh for every variant,
 * its bytes past the 8-byte header (magic and flags: a damaged magic is the
 * foreign-object case, MPROC_EINVAL) overwritten, then every public call
 * made on it with short deadlines, and freed (which may refuse). */
struct kind {
  const char *name;
  size_t size;                /* bytes of the object */
  void *(*make)(void);        /* a fresh object */
  void (*use)(void *obj);     /* every call, results ignored */
  void (*release)(void *obj); /* free it, refusals ignored */
  /* Whether a word naming a live unrelated thread is attacked too.  Not
   * for the Barrier: its state lock is a robust pthread mutex, whose word
   * holds a bare tid, so a live thread named there cannot be told from a
   * holder (docs/reference/sync.md, "Damaged objects"). */
  bool live_owner;
  /* The shared bytes of obj, when they are not at the handle (NULL: the
   * handle is the object). */
  unsigned char *(*bytes)(void *obj);
};

static void *make_lock(void) {
  mproc_lock *l;
  mproc_assert_ok(mproc_lock_new(&l));
  return l;
}
static void use_lock(void *o) {
  mproc_lock *l = o;
  mproc_lock_acquire(l, 0);
  mproc_lock_acquire(l, SHORT_MS);
  mproc_lock_consistent(l);
  mproc_lock_release(l);
  mproc_lock_release(l);
  mproc_lock_acquire(l, SHORT_MS);
  mproc_lock_release(l);
}
static void free_lock(void *o) { mproc_lock_free(o); }

static void *make_rlock(void) {
  mproc_rlock *l;
  mproc_assert_ok(mproc_rlock_new(&l));
  return l;
}
static void use_rlock(void *o) {
  mproc_rlock *l = o;
  mproc_rlock_depth(l);
  mproc_rlock_acquire(l, 0);
  mproc_rlock_acquire(l, SHORT_MS);
  mproc_rlock_depth(l);
  mproc_rlock_consistent(l);
  mproc_rlock_release(l);
  mproc_rlock_release(l);
  mproc_rlock_release(l);
  mproc_rlock_acquire(l, SHORT_MS);
  mproc_rlock_release(l);
}
static void free_rlock(void *o) { mproc_rlock_free(o); }

static void *make_sem(void) {
  mproc_sem *s;
  mproc_assert_ok(mproc_sem_new(&s, 1, NULL));
  return s;
}
static void use_sem(void *o) {
  mproc_sem *s = o;
  mproc_sem_value(s);
  mproc_sem_acquire(s, 0);
  mproc_sem_acquire(s, SHORT_MS);
  mproc_sem_release(s);
  mproc_sem_release(s);
  mproc_sem_value(s);
  mproc_sem_acquire(s, SHORT_MS);
}
static void free_sem(void *o) { mproc_sem_free(o); }

static void *make_event(void) {
  mproc_event *e;
  mproc_assert_ok(mproc_event_new(&e));
  return e;
}
static void use_event(void *o) {
  mproc_event *e = o;
  mproc_event_is_set(e);
  mproc_event_wait(e, 0);
  mproc_event_wait(e, SHORT_MS);
  mproc_event_set(e);
  mproc_event_wait(e, SHORT_MS);
  mproc_event_clear(e);
  mproc_event_wait(e, SHORT_MS);
}
static void free_event(void *o) { mproc_event_free(o); }

static void *make_cond(void) {
  mproc_cond *c;
  mproc_assert_ok(mproc_cond_new(&c));
  return c;
}
static int never(void *arg) {
  (void)arg;
  return 0;
}
static void use_cond(void *o) {
  mproc_cond *c = o;
  mproc_cond_notify(c, 1);
  mproc_cond_notify_all(c);
  if (mproc_cond_acquire(c, SHORT_MS) == 0) {
    mproc_cond_wait(c, SHORT_MS);
    mproc_cond_notify(c, 3);
    mproc_cond_notify_all(c);
    mproc_cond_wait_for(c, never, NULL, SHORT_MS);
    mproc_cond_release(c);
  }
  mproc_cond_wait(c, SHORT_MS);
  mproc_cond_release(c);
}
static void free_cond(void *o) { mproc_cond_free(o); }

#define PARTIES 2
static void *make_barrier(void) {
  mproc_barrier *b;
  mproc_assert_ok(mproc_barrier_new(&b, PARTIES));
  return b;
}
static void use_barrier(void *o) {
  mproc_barrier *b = o;
  mproc_barrier_parties(b);
  mproc_barrier_n_waiting(b);
  mproc_barrier_broken(b);
  mproc_barrier_wait(b, 0);
  mproc_barrier_join(b);
  mproc_barrier_wait(b, SHORT_MS);
  mproc_barrier_leave(b);
  mproc_barrier_reset(b);
  mproc_barrier_wait(b, 0);
  mproc_barrier_abort(b);
  mproc_barrier_n_waiting(b);
  mproc_barrier_reset(b);
}
static void free_barrier(void *o) { mproc_barrier_free(o); }

#define ARRAY_N 10
static void *make_array(void) {
  mproc_value *v;
  mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_INT64, ARRAY_N, NULL, NULL));
  return v;
}
static void *make_raw_array(void) {
  mproc_value *v;
  struct mproc_value_options o = {.flags = MPROC_VALUE_RAW};
  mproc_assert_ok(mproc_array_new(&v, MPROC_TYPE_INT32, ARRAY_N, NULL, &o));
  return v;
}
static void use_value(void *o) {
  mproc_value *v = o;
  int64_t buf[ARRAY_N] = {0}, old = 0, want = 0;
  mproc_rlock *l = NULL;
  mproc_value_count(v);
  mproc_value_elem_size(v);
  mproc_value_get_lock(v, &l);
  for (size_t i = 0; i < ARRAY_N; i++) {
    mproc_value_load(v, i, &old);
    mproc_value_store(v, i, 7);
    mproc_value_fetch_add(v, i, 1, &old);
    mproc_value_compare_exchange(v, i, &want, 3);
  }
  mproc_value_get(v, 0, 1, buf, SHORT_MS);
  mproc_value_get(v, 0, 2, buf, SHORT_MS);
  mproc_value_set(v, 1, 1, buf, SHORT_MS);
  mproc_value_set(v, 0, 2, buf, SHORT_MS);
}
static void free_value(void *o) { mproc_value_free(o); }

/* A queue's shared header and the first participant slots; the ring's
 * records are attacked by test-queue-crash.c.  No message spills to a
 * memory file here: a queue whose positions were written over cannot walk
 * its records, so the spill files of the records still queued are left in
 * /dev/shm when it goes (not handled yet). */
#define QUEUE_BYTES (sizeof(struct mproc__qhdr) + 2 * sizeof(struct mproc__qpart))
static void *make_queue(void) {
  struct mproc_queue_options o = {.capacity = 4096, .max_participants = 4};
  mproc_queue *q;
  mproc_assert_ok(mproc_queue_new(&q, &o));
  for (int i = 0; i < 3; i++)
    mproc_assert_ok(mproc_queue_put(q, &i, sizeof i, 0));
  return q;
}
static unsigned char *queue_bytes(void *o) { return (unsigned char *)((mproc_queue *)o)->h; }
static void use_queue(void *o) {
  mproc_queue *q = o;
  char buf[64];
  size_t len = 0;
  void *got = NULL;
  mproc_queue_qsize(q);
  mproc_queue_empty(q);
  mproc_queue_full(q);
  mproc_queue_get_nowait(q, buf, sizeof buf, &len);
  mproc_queue_get(q, buf, sizeof buf, &len, SHORT_MS);
  if (mproc_queue_get_alloc(q, &got, &len, 0) == 0)
    free(got);
  mproc_queue_put_nowait(q, buf, 8);
  mproc_queue_put(q, buf, sizeof buf, SHORT_MS);
  mproc_queue_get(q, buf, sizeof buf, &len, 0);
  struct mproc_queue_stats st;
  mproc_queue_stats(q, &st);
  mproc_queue_close(q);
  mproc_queue_detach(q, MPROC_QUEUE_PRODUCER);
}
static void free_queue(void *o) { mproc_queue_free(o); }

static const struct kind kinds[] = {
    {.name = "lock",
     .size = MPROC_LOCK_SIZE,
     .make = make_lock,
     .use = use_lock,
     .release = free_lock,
     .live_owner = true},
    {.name = "rlock",
     .size = MPROC_RLOCK_SIZE,
     .make = make_rlock,
     .use = use_rlock,
     .release = free_rlock,
     .live_owner = true},
    {.name = "sem",
     .size = MPROC_SEM_SIZE,
     .make = make_sem,
     .use = use_sem,
     .release = free_sem,
     .live_owner = true},
    {.name = "event",
     .size = MPROC_EVENT_SIZE,
     .make = make_event,
     .use = use_event,
     .release = free_event,
     .live_owner = true},
    {.name = "cond",
     .size = MPROC_COND_SIZE,
     .make = make_cond,
     .use = use_cond,
     .release = free_cond,
     .live_owner = true},
    {.name = "barrier",
     .size = MPROC_BARRIER_SIZE(PARTIES),
     .make = make_barrier,
     .use = use_barrier,
     .release = free_barrier,
     .live_owner = false},
    {.name = "array",
     .size = 64,
     .make = make_array,
     .use = use_value,
     .release = free_value,
     .live_owner = true},
    {.name = "raw array",
     .size = 64,
     .make = make_raw_array,
     .use = use_value,
     .release = free_value,
     .live_owner = true},
    {.name = "queue",
     .size = QUEUE_BYTES,
     .make = make_queue,
     .use = use_queue,
     .release = free_queue,
     .live_owner = true,
     .bytes = queue_bytes},
};

struct attack {
  const struct kind *k;
  int p; /* the pattern */
  struct where *w;
};

/* In the child: every variant of one pattern, each on a fresh object. */
static int attack_kind(void *arg) {
  const struct attack *a = arg;
  int p = a->p, n = variants(p, a->k->size - 8);
  for (int k = 0; k < n; k++) {
    where_set(a->w, a->k->name, pat_name[p], k);
    unsigned char *obj = a->k->make();
    unsigned char *b = a->k->bytes != NULL ? a->k->bytes(obj) : obj;
    if (corrupt(b + 8, a->k->size - 8, p, k, a->k->live_owner))
      a->k->use(obj);
    a->k->release(obj);
  }
  return 0;
}

START_TEST(test_corrupt_sync_objects) {
  struct where *w = where_page();
  const struct kind *k = &kinds[_i / P_NPAT];
  struct attack a = {k, _i % P_NPAT, w};
  survives(k->name, attack_kind, &a, w);
  munmap(w, sizeof *w);
}
END_TEST

/* ---- the pool: a task that writes over its own worker's ring ---------------- */

/* What a task (run in the worker) overwrites after it has set its result;
 * each case names a way the parent could be misled. */
enum scribble {
  SC_FD_NEVER_SENT, /* claims a result file the worker never sends */
  SC_AREA_OFFSET,   /* points its arena area far outside the arena */
  SC_FILE_SHORTER,  /* claims more bytes than its result file holds */
  SC_MESSAGE,       /* fails with a message that never ends */
  SC_NEXT_STATE,    /* sets the next (queued) entry's state to garbage */
  SC_HEAD,          /* moves the ring's published head far ahead */
  SC_HELPERS,       /* claims parent threads collect results (none does) */
  SC_MGR_AWAKE,     /* claims the pool's manager is awake (it sleeps) */
};

#define MEDIUM_RESULT 1000       /* travels in the entry's arena area */
#define FILE_RESULT (200 * 1024) /* travels in a result file */

/* The running entry of this worker's ring. */
static struct mproc__entry *my_entry(void) {
  struct mproc__slot_shm *s = mproc__worker_slot;
  ck_assert_ptr_nonnull(s);
  return &s->ring[(atomic_load(&s->cur) - 1) % MPROC__RING];
}

static int task_scribble(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len;
  int how = *(const int *)arg;
  struct mproc__slot_shm *s = mproc__worker_slot;
  struct mproc__entry *e = my_entry();
  switch (how) {
  case SC_FD_NEVER_SENT: {
    int v = 1;
    mproc_task_return(ctx, &v, sizeof v);
    e->rflags |= MPROC__EF_RES_FD;
    return 0;
  }
  case SC_AREA_OFFSET: {
    unsigned char *b = mproc_task_result_buf(ctx, MEDIUM_RESULT);
    for (int i = 0; i < MEDIUM_RESULT; i++)
      b[i] = (unsigned char)i;
    e->area_off = (uint64_t)1 << 62;
    return 0;
  }
  case SC_FILE_SHORTER: {
    unsigned char *b = mproc_task_result_buf(ctx, FILE_RESULT);
    memset(b, 7, FILE_RESULT);
    e->res_len = FILE_RESULT + (1u << 20);
    return 0;
  }
  case SC_MESSAGE:
    mproc_task_fail(ctx, 5, "short");
    /* To the end of the slot: the message and every later entry. */
    memset(e->res, 'A', (size_t)((char *)(s + 1) - e->res));
    return 5;
  case SC_NEXT_STATE: {
    /* Once the next task is queued behind this one. */
    uint64_t pos = atomic_load(&s->cur) - 1;
    int64_t dl = mproc_now_ms() + mproc_test_scaled_ms(10000);
    while (atomic_load(&s->head) < pos + 2 && mproc_now_ms() < dl)
      sleep_ms(1);
    atomic_store(&s->ring[(pos + 1) % MPROC__RING].state, 77);
    return 0;
  }
  case SC_HEAD:
    atomic_store(&s->head, atomic_load(&s->head) + ((uint64_t)1 << 40));
    return 0;
  default: {
    /* One worker: its slot is the header's first. */
    struct mproc__shm_hdr *h =
        (struct mproc__shm_hdr *)(void *)((char *)s - offsetof(struct mproc__shm_hdr, slots));
    int v = 1;
    mproc_task_return(ctx, &v, sizeof v);
    if (how == SC_HELPERS)
      atomic_store(&h->helpers, 1000);
    else
      atomic_store(&h->mgr_sleeping, 0);
    return 0;
  }
  }
}

/* A pool of one worker (every task shares the ring) runs the scribbler and
 * a task queued behind it; the scribbler's outcome is checked by the case,
 * then the queued task and a fresh one must finish with their right results
 * in bounded time: the pool carries on. */
START_TEST(test_task_scribbles_its_ring) {
  int how = _i;
  struct mproc_pool_options po = {.workers = 1};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  mproc_future *f, *next;
  mproc_assert_ok(mproc_pool_submit(p, task_scribble, &how, sizeof how, &f));
  int x = 9;
  mproc_assert_ok(mproc_pool_submit(p, task_square, &x, sizeof x, &next));
  const void *d;
  size_t n;
  int r = mproc_future_result(f, &d, &n, SLACK_MS);
  ck_assert_msg(r != MPROC_ETIMEDOUT, "case %d: the scribbler's future never completed", how);
  struct mproc_task_error err;
  switch (how) {
  case SC_FD_NEVER_SENT:
  case SC_FILE_SHORTER:
    mproc_assert_err(r, MPROC_ECORRUPT);
    break;
  case SC_AREA_OFFSET:
    /* The parent finds the area where it put it: the right bytes. */
    mproc_assert_ok(r);
    ck_assert_uint_eq(n, MEDIUM_RESULT);
    for (int i = 0; i < MEDIUM_RESULT; i++)
      ck_assert_uint_eq(((const unsigned char *)d)[i], (unsigned char)i);
    break;
  case SC_MESSAGE:
    mproc_assert_err(r, MPROC_ETASK);
    mproc_assert_ok(mproc_future_error(f, &err));
    ck_assert_uint_le(strlen(err.message), MPROC__INLINE - 1);
    break;
  default:
    /* The scribble comes after the result: it stands. */
    mproc_assert_ok(r);
    break;
  }
  r = mproc_future_result(next, &d, &n, SLACK_MS);
  if (how == SC_NEXT_STATE) {
    /* Its entry was destroyed under it: it fails or (re-queued on a
     * replacement worker) runs, but it ends. */
    ck_assert_msg(r == MPROC_ECORRUPT || r == 0, "queued task: %s", mproc_err_name(r));
  } else {
    mproc_assert_ok(r);
  }
  if (r == 0)
    ck_assert_int_eq(*(const int *)d, 81);
  mproc_future_free(f);
  mproc_future_free(next);
  x = 12;
  void *res = NULL;
  mproc_assert_ok(mproc_pool_apply(p, task_square, &x, sizeof x, &res, &n, NULL, SLACK_MS));
  ck_assert_int_eq(*(const int *)res, 144);
  free(res);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A map_buf element function that writes over the result entry of an item
 * before it in its chunk (the worker has written that entry already): a
 * wild pointer the parent would otherwise hand to the caller. */
#define MB_ITEMS 8
static int mb_scribble(const void *in, size_t len, mproc_item_ctx *ctx) {
  (void)len;
  int k = *(const int *)in;
  if (k == MB_ITEMS - 1) {
    struct mproc__slot_shm *s = mproc__worker_slot;
    struct mproc__entry *e = &s->ring[(atomic_load(&s->cur) - 1) % MPROC__RING];
    unsigned char *h = mproc__worker_arena + e->in_off - MPROC__MB_HDR;
    struct mproc_buf *outs = (struct mproc_buf *)(h + ((struct mproc__mb_hdr *)h)->outs_at);
    outs[2].data = (const void *)(uintptr_t)0x10;
  }
  int r = k * k;
  return mproc_item_return(ctx, &r, sizeof r);
}

START_TEST(test_map_buf_entry_scribbled) {
  struct mproc_pool_options po = {.workers = 1};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  int v[MB_ITEMS];
  struct mproc_buf in[MB_ITEMS];
  for (int i = 0; i < MB_ITEMS; i++) {
    v[i] = i;
    in[i] = (struct mproc_buf){&v[i], sizeof v[i]};
  }
  struct mproc_map_options mo = {.chunksize = MB_ITEMS};
  struct mproc_buf *out = NULL;
  struct mproc_task_error err;
  int r = mproc_pool_map_buf(p, mb_scribble, in, MB_ITEMS, &out, &mo, &err, SLACK_MS);
  if (r == 0) {
    /* Only possible if the arena way was not taken: every result real. */
    for (int i = 0; i < MB_ITEMS; i++)
      ck_assert_int_eq(*(const int *)out[i].data, i * i);
    mproc_bufs_free(out);
  } else {
    mproc_assert_err(r, MPROC_ECORRUPT);
    ck_assert_uint_eq(err.index, 2);
  }
  /* The pool carries on. */
  for (int i = 0; i < MB_ITEMS; i++)
    v[i] = MB_ITEMS - 2 - i; /* no item scribbles now */
  mproc_assert_ok(mproc_pool_map_buf(p, mb_scribble, in, MB_ITEMS, &out, &mo, &err, SLACK_MS));
  mproc_bufs_free(out);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A task that says it started in the future (its worker's cur_start: an
 * hour ahead, or the largest time, whose sum with the timeout overflows)
 * and then runs for ever: the pool's task timeout still stops it. */
static int task_future_start(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)len, (void)ctx;
  int64_t when = *(const int *)arg == 0 ? mproc_now_ms() + 3600 * 1000 : INT64_MAX;
  atomic_store(&mproc__worker_slot->cur_start, when);
  for (;;)
    pause();
  return 0;
}

START_TEST(test_task_start_time_scribbled) {
  struct mproc_pool_options po = {.workers = 1, .task_timeout_ms = 200};
  mproc_pool *p;
  mproc_assert_ok(mproc_pool_new(&p, &po));
  mproc_future *f;
  int how = _i;
  mproc_assert_ok(mproc_pool_submit(p, task_future_start, &how, sizeof how, &f));
  const void *d;
  size_t n;
  mproc_assert_err(mproc_future_result(f, &d, &n, SLACK_MS), MPROC_ETIMEDOUT);
  struct mproc_task_error err;
  mproc_assert_ok(mproc_future_error(f, &err));
  ck_assert_int_eq(err.code, MPROC_ETIMEDOUT);
  mproc_future_free(f);
  int x = 5;
  void *res = NULL;
  mproc_assert_ok(mproc_pool_apply(p, task_square, &x, sizeof x, &res, &n, NULL, SLACK_MS));
  ck_assert_int_eq(*(const int *)res, 25);
  free(res);
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

/* A semaphore's count overwritten past MPROC_SEM_VALUE_MAX: its value is
 * MPROC_ECORRUPT, not a negative number that reads as another error, and
 * a release at that count refuses instead of wrapping to zero. */
START_TEST(test_sem_count_past_max) {
  mproc_sem *sem;
  mproc_assert_ok(mproc_sem_new(&sem, 12345, NULL));
  uint32_t *count = NULL;
  for (size_t off = 8; off < MPROC_SEM_SIZE; off += 4)
    if (*(uint32_t *)(void *)((char *)sem + off) == 12345)
      count = (uint32_t *)(void *)((char *)sem + off);
  ck_assert_ptr_nonnull(count);
  *count = 0xffffffffu;
  mproc_assert_err(mproc_sem_value(sem), MPROC_ECORRUPT);
  mproc_assert_err(mproc_sem_release(sem), MPROC_EOVERFLOW);
  mproc_assert_ok(mproc_sem_acquire(sem, 0));
  *count = 3;
  ck_assert_int_eq(mproc_sem_value(sem), 3);
  mproc_assert_ok(mproc_sem_free(sem));
}
END_TEST

/* A Barrier's robust mutexes with their type word overwritten by a type
 * glibc aborts on (priority-protect, 0x40): every call answers without
 * the process dying.  The words are found by the value the library's own
 * mutexes have. */
static int attack_mutex_types(void *arg) {
  (void)arg;
  pthread_mutex_t ref;
  ck_assert_int_eq(mproc__rmutex_init(&ref, false), 0);
  int kind = ref.__data.__kind;
  pthread_mutex_destroy(&ref);
  for (size_t target = 0;; target++) {
    mproc_barrier *b = make_barrier();
    size_t seen = 0;
    bool hit = false;
    for (size_t off = 8; off + 4 <= MPROC_BARRIER_SIZE(PARTIES); off += 4) {
      int *w = (int *)(void *)((char *)b + off);
      if (*w == kind && seen++ == target) {
        *w = 0x40;
        hit = true;
      }
    }
    if (!hit)
      break; /* every mutex of the barrier was attacked */
    mproc_assert_err(mproc_barrier_wait(b, 0), MPROC_ECORRUPT);
    use_barrier(b);
    mproc_assert_err(mproc_barrier_free(b), MPROC_ECORRUPT);
  }
  return 0;
}

START_TEST(test_barrier_mutex_type_scribbled) {
  struct where *w = where_page();
  where_set(w, "barrier", "mutex type 0x40", 0);
  survives("barrier mutex types", attack_mutex_types, NULL, w);
  munmap(w, sizeof *w);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault-corrupt");
  TCase *tc = mproc_test_tcase(s, "sync", 120);
  tcase_add_loop_test(tc, test_corrupt_sync_objects, 0,
                      (int)(sizeof kinds / sizeof kinds[0]) * P_NPAT);
  tcase_add_test(tc, test_sem_count_past_max);
  tcase_add_test(tc, test_barrier_mutex_type_scribbled);
  tc = mproc_test_tcase(s, "pool", 60);
  tcase_add_loop_test(tc, test_task_scribbles_its_ring, SC_FD_NEVER_SENT, SC_MGR_AWAKE + 1);
  tcase_add_test(tc, test_map_buf_entry_scribbled);
  tcase_add_loop_test(tc, test_task_start_time_scribbled, 0, 2);
  return mproc_test_run(s);
}
