/* The seam between the pool and how tasks travel to workers.
 *
 * Today there is one transport, local shared memory (transport_shm.c): one
 * anonymous shared mapping holds a request/response ring per worker.  A later
 * exec-based start method or an MPI backend adds one more file implementing
 * struct mproc__transport_ops; the pool and manager never touch the rings.
 *
 * Function references go through struct mproc__fnref for the same reason:
 * under fork a code address is valid in the worker, elsewhere it is not. */
#ifndef MPROC_TRANSPORT_H
#define MPROC_TRANSPORT_H

#include "internal.h"

#include <stdatomic.h>

struct mproc_pool;
struct mproc__task;

/* A reference to task code.  kind MPROC__FN_ADDR: `addr` is the address of
 * the function in the parent, valid in a forked worker. */
enum { MPROC__FN_ADDR = 1 };
struct mproc__fnref {
  uint32_t kind;
  uint64_t addr;
};
static inline struct mproc__fnref mproc__fnref_of(void (*fn)(void)) {
  struct mproc__fnref r = {MPROC__FN_ADDR, (uint64_t)(uintptr_t)fn};
  return r;
}
/* The callable for a reference, or NULL when it cannot be resolved here. */
static inline void (*mproc__fnref_resolve(struct mproc__fnref r))(void) {
  return r.kind == MPROC__FN_ADDR ? (void (*)(void))(uintptr_t)r.addr : NULL;
}

/* Task kinds. */
enum {
  MPROC__K_CALL = 1, /* fn(arg bytes) -> result bytes */
  MPROC__K_MAP,      /* element function over an arena range */
  MPROC__K_STARMAP,  /* element function over several arena columns */
};

/* How one task ended, as seen by the parent. */
struct mproc__outcome {
  int code;        /* 0, MPROC_ETASK, MPROC_EWORKERDIED, ... */
  int task_code;   /* the task's own non-zero return code */
  pid_t pid;       /* worker pid */
  int signo;       /* killing signal or 0 */
  int exit_status; /* exit status or -1 */
  uint64_t index;  /* item index within a chunk (map) */
  const char *msg; /* message (borrowed, may be empty) */
  void *res;       /* K_CALL result: inline copy (malloc) or mapping */
  size_t res_len;
  size_t res_map_len; /* non-zero when res is an mmap()ed mapping */
};

struct mproc__transport_ops {
  const char *name;
  /* Create the pool's transport state (before any worker starts). */
  int (*init)(struct mproc_pool *p);
  /* Start a worker in slot `slot`; sets the slot's pid and pidfd. */
  int (*start_worker)(struct mproc_pool *p, int slot);
  /* Whether the slot's ring has room for one more task. */
  bool (*can_send)(struct mproc_pool *p, int slot);
  /* Hand a task to the worker of `slot` (room was checked). */
  int (*send_task)(struct mproc_pool *p, int slot, struct mproc__task *t);
  /* Collect finished tasks of `slot` in order, calling done(p, t, outcome)
   * for each; returns how many. */
  int (*poll_results)(struct mproc_pool *p, int slot,
                      void (*done)(struct mproc_pool *, struct mproc__task *,
                                   struct mproc__outcome *));
  /* Take back a task that has not started: true on success. */
  bool (*revoke)(struct mproc_pool *p, struct mproc__task *t);
  /* Whether the task has started on its worker. */
  bool (*started)(struct mproc_pool *p, const struct mproc__task *t);
  /* The task the slot's worker is running and since when (ms), or NULL. */
  struct mproc__task *(*running)(struct mproc_pool *p, int slot, int64_t *since_ms);
  /* The worker's next ring position (*pos, which moves whenever it makes
   * progress), and the first task it has not started that it would take
   * next while it runs nothing -- or NULL.  Used to detect a stalled worker. */
  struct mproc__task *(*waiting)(struct mproc_pool *p, int slot, uint64_t *pos);
  /* Ask the worker to exit once its ring is empty. */
  void (*stop_worker)(struct mproc_pool *p, int slot);
  /* After the worker exited: hand every task still in its ring to
   * left(p, t, started) in order (a started chunk's t->progress holds the
   * item the worker was in), then reset the slot for a new worker. */
  void (*reset_slot)(struct mproc_pool *p, int slot,
                     void (*left)(struct mproc_pool *, struct mproc__task *, bool started));
  /* Whether the slot's worker finished its initializer. */
  bool (*ready)(struct mproc_pool *p, int slot);
  /* The initializer's failure message of a slot's worker, or NULL. */
  const char *(*init_failure)(struct mproc_pool *p, int slot, int *code);
  /* Whether anything finished since *seen (updates *seen); used to decide
   * whether the manager may sleep.  arm() announces the manager sleeps. */
  bool (*arm_sleep)(struct mproc_pool *p, uint64_t *seen);
  void (*disarm_sleep)(struct mproc_pool *p);
  /* A parent thread starts (+1) or stops (-1) spinning to collect results:
   * while one spins, workers need not wake the manager. */
  void (*helping)(struct mproc_pool *p, int delta);
  /* Address of a byte offset of the shared data arena (map/imap data). */
  void *(*arena)(struct mproc_pool *p, uint64_t off);
  /* Release everything (workers already reaped). */
  void (*fini)(struct mproc_pool *p);
};

extern const struct mproc__transport_ops mproc__transport_shm;

/* worker.c: the worker process entry point (fork-only). */
struct mproc__worker_args;
int mproc__worker_main(void *arg);

#endif /* MPROC_TRANSPORT_H */
