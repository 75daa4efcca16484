/* Layout of the shared-memory transport's mapping (transport_shm.c, transport_shm_worker.c).
 *
 * One anonymous MAP_SHARED mapping, made before the first worker is forked
 * and so inherited by every worker at the same address, holds a header and
 * one slot per worker.  A slot is a single-producer (the parent, under the
 * pool mutex) single-consumer (the worker) ring of task entries.  No pointers
 * live here: function references, offsets into the data arena and ring
 * positions only.
 *
 * Entry states (the `state` word; every transition is one atomic store or
 * compare-and-swap, so a worker dying at any instant leaves a decidable
 * state):
 *
 *   FREE --parent fills, publishes head--> QUEUED
 *   QUEUED --worker CAS--> STARTED --worker writes result--> DONE
 *   QUEUED --parent CAS (cancel, steal)--> REVOKED
 *   DONE | REVOKED --parent collects at tail--> FREE
 *
 * A worker found dead: DONE entries are delivered results (a crash after the
 * result is not a failure); the single STARTED entry is the task it died in;
 * QUEUED entries never ran and go back to the pool's queue.
 *
 * Memory ordering (who may read what, and why it is complete):
 *  - Publish (parent -> worker).  The parent writes an entry's fields with
 *    plain stores, then `state` = QUEUED (release), then the slot's `head`
 *    (sequentially consistent).  The worker loads `head` with acquire: once
 *    it sees head > pos, every write before that store -- the fields, the
 *    argument bytes in the entry or its arena area, function-table entries
 *    -- is visible to it.
 *  - Claim.  QUEUED -> STARTED (the worker) and QUEUED -> REVOKED (the
 *    parent, cancel or steal) are compare-and-swaps on `state`: exactly one
 *    side wins, so a task never runs after it was taken back.
 *  - Result (worker -> parent).  The worker writes the result fields (res,
 *    res_len, code, rflags, the arena area), then `state` = DONE (release),
 *    then bumps the header's `done_seq`.  The parent collects only after an
 *    acquire load of `state` reads DONE, so the result is complete.
 *  - Reuse.  The worker stores `wpos` (release) once it is past a position;
 *    the parent refills a REVOKED entry only after an acquire load of `wpos`
 *    shows the worker moved past it (it may still be reading it otherwise).
 *  - Sleep and wake, both directions (Dekker).  The sleeper stores its flag
 *    (`sleeping`, or the header's `mgr_sleeping`) and then re-reads the
 *    other side's word (`head`, or `done_seq` / entry states); the waker
 *    stores its word and then reads the flag.  All four are sequentially
 *    consistent, so at least one side sees the other: either the sleeper
 *    does not sleep, or the waker wakes it.  The futex word `wake` is bumped
 *    before the wake-up and read before the flag, so a wake that lands
 *    between the check and futex_wait makes the wait return at once.
 *  - `progress` and `cur`/`cur_start` are hints (relaxed, or read without
 *    ordering against results): progress per item and blame.  They are read
 *    for blame only after the worker's death was seen on its pidfd, and the
 *    kernel's exit and wait order every store the worker made before. */
#ifndef MPROC_SHM_LAYOUT_H
#define MPROC_SHM_LAYOUT_H

#include "fnref.h"
#include "internal.h"

#include <stdalign.h>
#include <stdatomic.h>

#define MPROC__RING 64                      /* entries per worker ring (power of two) */
#define MPROC__ARENA_LEN ((size_t)16 << 30) /* the map/imap data arena */
/* Distinct task functions a pool of exec'd workers can name (fn_table). */
#define MPROC__FN_TABLE 1024
#define MPROC__INLINE 200 /* argument/result bytes carried inside an entry */
/* Larger arguments and results up to this size travel through the entry's
 * own area in the data arena (area_off): an argument area, then a result
 * area, both MPROC__MEDIUM bytes, reserved at the arena's top for every
 * entry of every ring.  Larger ones go as a memfd over the socket. */
#define MPROC__MEDIUM ((size_t)64 << 10)
/* Closed shared blocks the header remembers for workers (power of two). */
#define MPROC__FORGET 16

enum { MPROC__E_FREE, MPROC__E_QUEUED, MPROC__E_STARTED, MPROC__E_DONE, MPROC__E_REVOKED };
enum {
  MPROC__EF_ARG_FD = 1u << 0,   /* argument in a memfd sent over the socket */
  MPROC__EF_RES_FD = 1u << 1,   /* result in a memfd sent over the socket */
  MPROC__EF_MSG = 1u << 2,      /* res[] holds an error message */
  MPROC__EF_TIMED = 1u << 3,    /* has a timeout: tell the manager it started */
  MPROC__EF_FDS = 1u << 4,      /* one message: [argument fd if ARG_FD] + the task's fds */
  MPROC__EF_ARG_AREA = 1u << 5, /* argument in the entry's arena area */
  MPROC__EF_RES_AREA = 1u << 6, /* result in the entry's arena area (+ MPROC__MEDIUM) */
  MPROC__EF_QUIET = 1u << 7,    /* collected by a parent thread while `quiet` is set */
};

struct mproc__entry {
  _Atomic uint32_t state;
  uint32_t kind;   /* MPROC__K_* */
  uint32_t flags;  /* MPROC__EF_ARG_FD, set by the parent */
  uint32_t rflags; /* MPROC__EF_RES_FD | MPROC__EF_MSG, set by the worker */
  int32_t code;    /* the task's return code */
  uint32_t nargs;  /* K_STARMAP columns */
  uint32_t fn_kind;
  uint64_t fn_addr;
  uint64_t arg_len, res_len;
  uint64_t in_off, out_off, count, in_size, out_size;
  _Atomic uint64_t progress; /* item being processed within a chunk */
  uint64_t col_off[MPROC_STARMAP_MAX_ARGS], col_size[MPROC_STARMAP_MAX_ARGS];
  uint64_t area_off; /* K_CALL: arena offset of the entry's area, 0: none */
  unsigned char arg[MPROC__INLINE];
  char res[MPROC__INLINE];
};

struct mproc__slot_shm {
  alignas(64) _Atomic uint64_t head; /* positions < head are published */
  _Atomic uint32_t wake;             /* futex word the idle worker sleeps on */
  _Atomic uint32_t sleeping;         /* worker is (about to be) asleep */
  _Atomic uint32_t stop;             /* exit once the ring is empty */
  alignas(64) _Atomic uint64_t cur;  /* 1 + position of the running entry, 0 idle */
  _Atomic uint64_t wpos;             /* worker is done with positions < wpos */
  _Atomic int64_t cur_start;         /* when it started (mproc_now_ms) */
  _Atomic uint32_t init_state;       /* 0 running initializer, 1 ok, 2 failed */
  int32_t init_code;
  char init_msg[200];
  struct mproc__entry ring[MPROC__RING];
};

struct mproc__shm_hdr {
  alignas(64) _Atomic uint32_t mgr_sleeping; /* manager is in poll(): write efd */
  _Atomic uint32_t helpers;                  /* parent threads spinning to collect */
  /* A parent thread collects EF_QUIET entries itself (an imap's caller
   * between its calls): their end wakes nobody.  Cleared, then the rings
   * read, before that thread sleeps. */
  _Atomic uint32_t quiet;
  alignas(64) _Atomic uint64_t done_seq; /* bumped after every DONE */
  /* Shared blocks (dev, ino) closed by their owner, for workers that cached
   * a mapping of one (map_shm.c): entry k is forget[k % MPROC__FORGET],
   * written by the parent under the pool mutex before forget_seq moves past
   * k.  A worker that fell more than MPROC__FORGET behind drops them all. */
  alignas(64) _Atomic uint64_t forget_seq;
  _Atomic uint64_t forget[MPROC__FORGET][2];
  struct mproc__slot_shm slots[];
  /* After the slots, for exec'd workers (spawn, forkserver), the function
   * table: struct mproc__fnref[MPROC__FN_TABLE], append-only, written by the
   * parent under the pool mutex before the first entry naming it is
   * published (the head's release store orders it).  An entry of kind
   * MPROC__FN_INDEX carries an index into it instead of an address. */
};

/* fn_kind of an entry whose fn_addr is an index into the function table. */
enum { MPROC__FN_INDEX = 2 };

/* How much of the arena the entries' medium areas may take (half); pools
 * with more workers than fit carry medium arguments and results in memory
 * files instead.  A variable so tests can leave no room at all. */
extern uint64_t mproc__shm_areas_max;

/* Distinct functions a pool of exec'd workers names (<= MPROC__FN_TABLE);
 * a variable so tests can fill the table with a few functions. */
extern uint32_t mproc__pool_fn_table_max;

/* The header mapping's size for n workers, with or without the table. */
size_t mproc__shm_hdr_len(int nworkers, bool table);

/* What an exec'd worker is told, as the argument bytes of its start request
 * (the initializer's argument bytes follow).  Its descriptors come with the
 * request, in the order of enum mproc__boot_fd; the request's function is
 * the initializer (none: no initializer). */
enum mproc__boot_fd {
  MPROC__BOOT_HDR,
  MPROC__BOOT_ARENA,
  MPROC__BOOT_SOCK,
  MPROC__BOOT_EFD,
  MPROC__BOOT_NFDS
};
struct mproc__worker_boot {
  uint32_t slot, nworkers;
  uint32_t max_tasks;
  int32_t spin;
  uint64_t max_rss;
};

/* What a worker process is started with (a copy lives in its memory). */
struct mproc__worker_args {
  struct mproc__shm_hdr *hdr;
  struct mproc__slot_shm *slot;
  unsigned char *arena;
  int sock; /* worker end of the fd-passing socket */
  int efd;  /* the manager's eventfd */
  mproc_init_fn initializer;
  void *initarg;
  const struct mproc__fnref *fn_table; /* exec'd workers: the function table */
  uint32_t max_tasks;
  size_t max_rss;
  int spin; /* idle spin iterations before sleeping */
};

/* transport_shm_worker.c: the shm transport's worker process entry point (after fork, or
 * from its start entry in an exec'd image). */
int mproc__worker_main(void *arg);

/* In a worker process: its own slot (NULL elsewhere).  Only for tests that
 * play a task scribbling over the memory it shares with the pool. */
extern struct mproc__slot_shm *mproc__worker_slot;
extern unsigned char *mproc__worker_arena; /* and where it maps the arena */

/* A worker's exit status when its ring no longer makes sense (a task wrote
 * over it): the pool sees a worker death, re-queues what had not started
 * and starts a replacement. */
#define MPROC__WORKER_EXIT_CORRUPT 4

/* fd passing over the per-worker SOCK_SEQPACKET socket (transport_shm.c). */
int mproc__send_fd(int sock, int fd);
int mproc__recv_fd(int sock, int *fd);
/* Several fds in one message (at most MPROC__MSG_FDS); *n receives how many
 * arrived (<= max; extra ones are closed). */
#define MPROC__MSG_FDS (MPROC_TASK_MAX_FDS + 1)
int mproc__send_fds(int sock, const int *fds, size_t n);
int mproc__recv_fds(int sock, int *fds, size_t max, size_t *n);

#endif /* MPROC_SHM_LAYOUT_H */
