/* Joining the MPI job: mproc_mpi_init, the startup handshake, finalize.
 *
 * Design notes.  States of a process:
 *   not launched by mpiexec -> init returns 0, no MPI at all (local workers)
 *   launched, 1 rank        -> MPI initialised, worker_ranks() == 0
 *   launched, rank 0        -> handshake, return 0; finalize (explicit or at
 *                              exit) stops the ranks and leaves MPI
 *   launched, rank > 0      -> local pool made (before MPI_Init), handshake,
 *                              serve until STOP, MPI_Finalize, exit()
 * A program linked with this library and run with MPROC_TRANSPORT=mpi under
 * a launcher joins in a constructor, before main (see on_load).
 * "Launched" is read from the launcher's environment (Open MPI, MPICH's
 * Hydra, PMIx, Slurm's PMI) rather than by calling MPI_Init: a singleton
 * MPI_Init outside mpiexec may try to start a runtime daemon, which is slow
 * and fails in some containers, and the one-binary promise is that a plain
 * ./app needs no MPI runtime at all.
 *
 * The handshake: each rank sends rank 0 its host name and the build-id of
 * its main program; rank 0 checks every build-id equals its own (so
 * object+offset function references mean the same function everywhere) and
 * broadcasts the verdict.  It uses non-blocking collectives polled against
 * a deadline, so a rank that never reports fails init instead of hanging
 * it.
 *
 * Fork and MPI.  Worker ranks fork the processes that run tasks.  The first
 * one is forked before MPI_Init; replacements (after a task crashed) are
 * forked later, by the local pool's manager thread.  Those children never
 * call MPI and leave through _exit.  Open MPI warns about fork only when a
 * transport with registered (pinned) memory is active (openib/verbs), where
 * the child's copy-on-write could corrupt a DMA buffer of the parent; the
 * children here never touch such buffers, and the warning is left enabled
 * rather than silenced, so a user on such a fabric sees it and can choose
 * (docs/reference/mpi.md). */
#include "mpi_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct mproc__mpi_state mproc__mpi = {.comm = MPI_COMM_NULL};

bool mproc__mpi_launched(int *rank) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                     "MPI_LOCALRANKID"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) {
      if (rank)
        *rank = (int)strtol(v, NULL, 10);
      return true;
    }
  }
  if (rank)
    *rank = -1;
  return false;
}

void mproc__mpi_abort(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "mproc-mpi: rank %d on %s: %s; aborting the job\n", mproc__mpi.rank,
          mproc__mpi.host, msg);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  _exit(1); /* MPI_Abort does not return; be sure */
}

struct hello {
  int32_t wire; /* MPROC__MPI_WIRE_VERSION */
  int32_t id_len;
  uint8_t id[MPROC__BUILD_ID_MAX];
  char host[64];
};

/* Poll a request until done or the deadline. */
static int wait_req(MPI_Request *r, int64_t deadline) {
  struct mproc__mpi_idle w = {0};
  for (;;) {
    int flag = 0;
    if (MPI_Test(r, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return MPROC_EIO;
    if (flag)
      return 0;
    if (mproc_now_ms() >= deadline)
      return MPROC_ETIMEDOUT;
    mproc__mpi_backoff(&w);
  }
}

/* Every rank: exchange hellos; returns 0 when all agree. */
static int handshake(int64_t timeout_ms) {
  int64_t deadline = mproc_now_ms() + timeout_ms;
  struct hello me = {.wire = MPROC__MPI_WIRE_VERSION};
  int n = mproc__mpi_program_build_id(me.id, sizeof me.id);
  me.id_len = n > 0 ? n : 0;
  snprintf(me.host, sizeof me.host, "%s", mproc__mpi.host);
  struct hello *all = NULL;
  if (mproc__mpi.rank == 0) {
    all = calloc((size_t)mproc__mpi.size, sizeof *all);
    mproc__mpi.hosts = calloc((size_t)mproc__mpi.size, sizeof *mproc__mpi.hosts);
    if (!all || !mproc__mpi.hosts)
      mproc__mpi_abort("out of memory in the startup handshake");
  }
  MPI_Request r;
  int rc = MPI_Igather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0,
                       mproc__mpi.comm, &r) == MPI_SUCCESS
               ? wait_req(&r, deadline)
               : MPROC_EIO;
  int32_t verdict = 0; /* 0 ok, else 1 + the first rank that differs */
  if (rc == 0 && mproc__mpi.rank == 0) {
    for (int i = 0; i < mproc__mpi.size; i++) {
      memcpy(mproc__mpi.hosts[i], all[i].host, sizeof all[i].host);
      mproc__mpi.hosts[i][63] = '\0';
      if (!verdict && all[i].wire != me.wire) {
        verdict = 1 + i;
        fprintf(stderr,
                "mproc-mpi: rank %d on %s speaks wire version %d, rank 0 version %d: every "
                "rank must run the same mproc_mpi library\n",
                i, mproc__mpi.hosts[i], (int)all[i].wire, (int)me.wire);
      }
      if (!verdict && (all[i].id_len != me.id_len || memcmp(all[i].id, me.id, sizeof me.id) != 0)) {
        verdict = 1 + i;
        fprintf(stderr,
                "mproc-mpi: rank %d on %s runs a different program than rank 0 (build-ids "
                "differ%s): every rank must run the same binary\n",
                i, mproc__mpi.hosts[i], me.id_len == 0 ? "; rank 0's program has none" : "");
      }
    }
  }
  free(all);
  if (rc == 0)
    rc = MPI_Ibcast(&verdict, 1, MPI_INT32_T, 0, mproc__mpi.comm, &r) == MPI_SUCCESS
             ? wait_req(&r, deadline)
             : MPROC_EIO;
  if (rc == MPROC_ETIMEDOUT)
    mproc__mpi_abort("the startup handshake did not finish within %lld ms", (long long)timeout_ms);
  if (rc)
    return MPROC_EBROKEN;
  return verdict ? MPROC_EBROKEN : 0;
}

/* ---- the "mpi" pool transport ---------------------------------------------
 *
 * A pool names it (the option `transport`, or MPROC_TRANSPORT=mpi for a whole
 * program).  From the moment this library is loaded the name stands for
 * local workers -- a copy of the built-in "shm" transport -- so one binary
 * runs the same pools on a laptop; once mproc_mpi_init finds worker ranks it
 * stands for them (transport_mpi.c).  Pools keep the ops they were made
 * with. */

static struct mproc__transport_ops local_ops;

static void use_local_workers(void) {
  const struct mproc__transport_ops *shm;
  if (local_ops.name || mproc__transport_find("shm", &shm) != 0)
    return;
  local_ops = *shm;
  local_ops.name = mproc__transport_mpi.name;
  mproc__transport_register(&local_ops);
}

static void use_worker_ranks(void) {
  if (local_ops.name)
    mproc__transport_unregister(&local_ops);
  if (mproc__transport_register(&mproc__transport_mpi) != 0)
    fprintf(stderr, "mproc-mpi: the \"mpi\" pool transport could not be registered\n");
}

/* Loaded into a program: "mpi" means local workers until init.  With
 * MPROC_TRANSPORT=mpi under mpiexec the program joins the job right here,
 * before main: worker ranks serve and exit without ever reaching main, so a
 * program written for local pools runs over ranks unchanged. */
__attribute__((constructor)) static void on_load(void) {
  use_local_workers();
  const char *t = getenv("MPROC_TRANSPORT");
  if (!t || strcmp(t, mproc__transport_mpi.name) != 0 || !mproc__mpi_launched(NULL))
    return;
  int rc = mproc_mpi_init(NULL, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "mproc-mpi: MPROC_TRANSPORT=mpi: joining the MPI job failed: %s\n",
            mproc_strerror(rc));
    exit(1);
  }
  mproc__mpi.joined_at_load = true;
}

static void at_exit(void) {
  if (mproc__mpi.initialised && !mproc__mpi.finalized && mproc__mpi.rank == 0)
    mproc_mpi_finalize(10000);
}

/* Leave MPI: finalize it when this library initialised it, or when the
 * process is about to exit anyway (a worker rank: the program's own
 * MPI_Finalize after main is never reached there). */
static int leave_mpi(bool exiting) {
  if (mproc__mpi.comm != MPI_COMM_NULL)
    MPI_Comm_free(&mproc__mpi.comm);
  return mproc__mpi.we_init_mpi || exiting ? MPI_Finalize() : 0;
}

MPROC_EXTERN int mproc_mpi_init(int *argc, char ***argv, const struct mproc_mpi_options *opts) {
  static const struct mproc_mpi_options defaults = {0};
  if (!opts)
    opts = &defaults;
  if ((opts->flags & ~(unsigned)MPROC_MPI_INRANK) || opts->tasks_per_rank < 0 ||
      opts->startup_timeout_ms < 0 || (argc == NULL) != (argv == NULL))
    return MPROC_EINVAL;
  if (mproc__mpi.joined_at_load && !mproc__mpi.called_init) {
    mproc__mpi.called_init = true; /* the program's own call, after on_load's */
    return 0;
  }
  if (mproc__mpi.initialised)
    return MPROC_ESTATE;
  int env_rank = -1;
  if (!mproc__mpi_launched(&env_rank)) {
    mproc__mpi.initialised = true; /* not under MPI: local workers only */
    mproc__mpi.finalized = true;
    return 0;
  }
  if (gethostname(mproc__mpi.host, sizeof mproc__mpi.host - 1) != 0)
    snprintf(mproc__mpi.host, sizeof mproc__mpi.host, "unknown-host");
  mproc__mpi.tasks_per_rank =
      opts->tasks_per_rank ? opts->tasks_per_rank : MPROC__MPI_TASKS_PER_RANK;
  /* Rank 0's choice travels with each task: the worker ranks' own options
   * do not matter. */
  mproc__mpi.inrank = (opts->flags & MPROC_MPI_INRANK) != 0;
  if (env_rank > 0) {
    int rc = mproc__mpi_rank_prepare();
    if (rc)
      return rc;
  }
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided;
    /* SERIALIZED: a pool's manager thread and the threads helping it drive
     * MPI, one at a time (transport_mpi.c's lock). */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
      mproc__mpi_rank_discard();
      return MPROC_EBROKEN;
    }
    mproc__mpi.we_init_mpi = true;
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &mproc__mpi.comm);
  /* Errors come back as codes: a lost rank is reported, then the job is
   * aborted with a message (mproc__mpi_abort), never a silent hang. */
  MPI_Comm_set_errhandler(mproc__mpi.comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(mproc__mpi.comm, &mproc__mpi.rank);
  MPI_Comm_size(mproc__mpi.comm, &mproc__mpi.size);
  mproc__mpi.initialised = true;
  int64_t t = opts->startup_timeout_ms ? opts->startup_timeout_ms : 60000;
  int rc = mproc__mpi.size > 1 ? handshake(t) : 0;
  if (mproc__mpi.rank != 0) {
    /* After a refused handshake the worker ranks leave quietly (status 0):
     * rank 0 reports the failure and decides the job's outcome; a non-zero
     * exit here would make mpiexec kill rank 0 before it could say why. */
    int status = rc == 0 ? mproc__mpi_rank_serve() : 0;
    mproc__mpi_rank_discard();
    mproc__mpi.finalized = true;
    leave_mpi(true);
    fflush(NULL);
    exit(status);
  }
  if (rc) {
    mproc__mpi.finalized = true;
    leave_mpi(false);
    return rc;
  }
  atexit(at_exit);
  /* Pools drive MPI from their threads, one at a time: that needs
   * MPI_THREAD_SERIALIZED (an MPI initialised by the program, or one built
   * without thread support, may give less).  Without it "mpi" pools stay on
   * local workers, and the internal calls from this thread still work. */
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  if (mproc_mpi_worker_ranks() > 0 && level >= MPI_THREAD_SERIALIZED)
    use_worker_ranks();
  else if (mproc_mpi_worker_ranks() > 0)
    fprintf(stderr,
            "mproc-mpi: MPI gives thread level %d, below MPI_THREAD_SERIALIZED: \"mpi\" pools "
            "run on local workers\n",
            level);
  return 0;
}

MPROC_EXTERN int mproc_mpi_rank(void) { return mproc__mpi.rank; }

MPROC_EXTERN int mproc_mpi_worker_ranks(void) {
  return mproc__mpi.initialised && !mproc__mpi.finalized && mproc__mpi.size > 1
             ? mproc__mpi.size - 1
             : 0;
}

MPROC_EXTERN int mproc_mpi_finalize(int64_t timeout_ms) {
  if (timeout_ms < -1)
    return MPROC_EINVAL;
  if (!mproc__mpi.initialised || mproc__mpi.rank != 0)
    return MPROC_ESTATE;
  /* Pools still running (a program that returns from main with a pool
   * alive) drive MPI from their threads: they wait while MPI goes away, and
   * find it gone -- their jobs cancelled, new ones refused -- afterwards. */
  pthread_mutex_lock(&mproc__mpi_mu);
  if (mproc__mpi.finalized) {
    pthread_mutex_unlock(&mproc__mpi_mu);
    return 0;
  }
  int64_t deadline = timeout_ms < 0 ? -1 : mproc_now_ms() + timeout_ms;
  int rc = mproc__mpi.size > 1 ? mproc__mpi_client_stop(deadline) : 0;
  mproc__mpi.finalized = true;
  if (rc) {
    /* A rank that does not confirm cannot be left behind: end the job. */
    mproc__mpi_abort("a worker rank did not stop within %lld ms", (long long)timeout_ms);
  }
  free(mproc__mpi.hosts);
  mproc__mpi.hosts = NULL;
  leave_mpi(false);
  pthread_mutex_unlock(&mproc__mpi_mu);
  return 0;
}
