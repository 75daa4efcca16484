/* mproc — the MPI backend (optional component, library mproc_mpi).
 *
 * One binary for a laptop and a cluster, like `python -m mpi4py.futures`:
 * call mproc_mpi_init() at the top of main().  Under `mpiexec -n N`, ranks
 * 1..N-1 never return from it: each serves tasks sent by rank 0 until rank 0
 * is done, then exits the process.  Rank 0 returns and the program goes on.
 * Without mpiexec (not under MPI at all, or a single rank) it returns at once
 * and the program runs with local workers only.
 *
 * On a worker rank every task runs inside a local supervised worker (a
 * local mproc pool; tiny tasks arriving together go to it as one unit), so a task that crashes,
 * calls exit() or overruns its timeout fails that task only (MPROC_EWORKERDIED or MPROC_ETIMEDOUT,
 * the message naming the rank and its host) and the rank carries on (unless
 * the job chose MPROC_MPI_INRANK: tasks then run in the rank itself).  A rank
 * that dies as a whole ends the job (fail fast; see docs/reference/mpi.md).
 *
 * Tasks name their functions by reference: any function travels as its
 * object's build-id and its offset in that object, valid on every rank that
 * runs the same binary; a task may name a function registered with
 * mproc_function_register (mproc/function.h) on every rank instead.  Every
 * rank checks at startup that it runs the same program as rank 0.
 *
 * Pools over the ranks: a pool created with the option transport = "mpi"
 * (mproc/pool.h), or any pool under the environment variable
 * MPROC_TRANSPORT=mpi, puts its workers on the worker ranks; before
 * mproc_mpi_init found ranks (and so without mpiexec) the name means local
 * workers.  A program linked with mproc_mpi and started with
 * MPROC_TRANSPORT=mpi under mpiexec joins the job before main by itself
 * (worker ranks never reach main), so it runs unchanged; its own later call
 * of mproc_mpi_init then returns 0.
 *
 * This header needs no MPI header; link with mproc_mpi (pkg-config
 * mproc-mpi, or find_package(mproc CONFIG COMPONENTS mpi) and the target
 * mproc::mproc_mpi). */
#ifndef MPROC_MPI_H
#define MPROC_MPI_H

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
  /* In-rank mode, for trusted tasks: worker ranks run the tasks (calls, map
   * and starmap chunks) in the rank process itself, as mpi4py.futures and a
   * hand-written MPI task farm do, instead of in a local supervised worker:
   * no hop, a round trip and a tiny task cost about what plain MPI costs.
   * The trade-off: a task that crashes or calls exit() takes its rank down,
   * which ends the whole job (fail fast: every pending future fails, mpiexec
   * exits non-zero); and a task cannot be timed out, so a timeout is
   * refused: a task submitted with one fails with MPROC_ENOTSUP, a pool
   * created with task_timeout_ms is refused with MPROC_ENOTSUP.  A pool
   * with an initializer keeps running its tasks in its local workers, where
   * the initializer ran.  Only rank 0's options count: the flag travels
   * with each task. */
  MPROC_MPI_INRANK = 1u << 0,
};

struct mproc_mpi_options {
  unsigned flags; /* MPROC_MPI_*; others: MPROC_EINVAL */
  /* Tasks rank 0 keeps in flight on each worker rank, per worker of the
   * rank's share of a pool (the next ones wait on rank 0); 0: 32, so a rank
   * always has its next tasks at hand and tiny tasks travel in batches.  A
   * task sent to a rank stays there: for long tasks of uneven length, 1 or 2
   * balance the load better. */
  int tasks_per_rank;
  /* Deadline of the startup handshake (every rank reports to rank 0);
   * 0: 60 s. */
  int64_t startup_timeout_ms;
};

/* Join the MPI job, if any.  Rank 0, a single rank, or a program not started
 * by mpiexec: returns 0.  Worker ranks: serve tasks until rank 0 calls
 * mproc_mpi_finalize (or exits), then exit(0) without returning.  argc/argv
 * go to MPI_Init (both NULL, or both set).  Errors (rank 0): MPROC_EINVAL
 * (bad options), MPROC_ESTATE (called twice), MPROC_EBROKEN (a rank runs
 * another program, or MPI failed to start; the message is on stderr and the
 * worker ranks exit with status 0, leaving the job's outcome to rank 0).  A rank that does not
 * report within startup_timeout_ms aborts the job with a message. */
MPROC_EXTERN int mproc_mpi_init(int *argc, char ***argv, const struct mproc_mpi_options *opts);
/* This process's rank (0 when not under MPI). */
MPROC_EXTERN int mproc_mpi_rank(void);
/* Number of worker ranks (0 when not under MPI, with one rank, or before
 * mproc_mpi_init). */
MPROC_EXTERN int mproc_mpi_worker_ranks(void);
/* Rank 0: stop every worker rank (what they still run is cancelled) and
 * leave MPI, waiting at most timeout_ms (-1: forever) for the ranks to
 * confirm; one that does not ends the job with a message, so no rank is left
 * behind.  Called from exit() when the program did not.  Returns 0 (also
 * again, or outside MPI), MPROC_EINVAL, MPROC_ESTATE (before init). */
MPROC_EXTERN int mproc_mpi_finalize(int64_t timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_MPI_H */
