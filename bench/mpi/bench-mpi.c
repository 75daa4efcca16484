/* MPI benchmarks, run by bench/run.sh under `mpiexec -n 3`:
 *   bench-mpi raw     plain MPI in C ("os" lines): an 8-byte ping-pong
 *                     between ranks 0 and 1, and a task farm where rank 0
 *                     hands tiny tasks to ranks 1..n-1, two in flight each
 *   bench-mpi mproc   the same through the pool API over the worker ranks
 *                     (transport "mpi"; "mproc" lines): one task at a time,
 *                     many tasks at once, and map
 * bench/mpi/bench_mpi4py.py measures mpi4py.futures ("python" lines).
 * Metrics: mpi_roundtrip (us), mpi_tasks (tasks/s), mpi_map (items/s). */
#include "bench.h"
#include <mpi.h>
#include <mproc.h>
#include <mproc/mpi.h>

#include <string.h>

static bool quick;

static int square_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  int64_t v = 0;
  memcpy(&v, arg, len < sizeof v ? len : sizeof v);
  v *= v;
  return mproc_task_return(ctx, &v, sizeof v);
}

static int square(const void *in, void *out) {
  int64_t v;
  memcpy(&v, in, sizeof v);
  v *= v;
  memcpy(out, &v, sizeof v);
  return 0;
}

/* ---- plain MPI ---------------------------------------------------------- */

static void raw(void) {
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int n = quick ? 2000 : 100000;
  double v[BENCH_REPS];
  int64_t x = 3;
  for (int r = 0; r < BENCH_REPS; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
      if (rank == 0) {
        MPI_Send(&x, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(&x, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Recv(&x, 1, MPI_INT64_T, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(&x, 1, MPI_INT64_T, 0, 0, MPI_COMM_WORLD);
      }
    }
    v[r] = (bench_now_s() - t0) / n * 1e6;
  }
  if (rank == 0)
    bench_report("mpi_roundtrip", "os", v, BENCH_REPS, "us");
  /* The farm: tag 1 a task, tag 2 stop; two tasks in flight per rank. */
  n = quick ? 5000 : 200000;
  for (int r = 0; r < BENCH_REPS; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = bench_now_s();
    if (rank == 0) {
      int sent = 0, got = 0;
      for (int k = 1; k < size; k++)
        for (int w = 0; w < 2 && sent < n; w++, sent++)
          MPI_Send(&x, 1, MPI_INT64_T, k, 1, MPI_COMM_WORLD);
      while (got < n) {
        MPI_Status st;
        int64_t res;
        MPI_Recv(&res, 1, MPI_INT64_T, MPI_ANY_SOURCE, 1, MPI_COMM_WORLD, &st);
        got++;
        if (sent < n) {
          MPI_Send(&x, 1, MPI_INT64_T, st.MPI_SOURCE, 1, MPI_COMM_WORLD);
          sent++;
        }
      }
      for (int k = 1; k < size; k++)
        MPI_Send(&x, 1, MPI_INT64_T, k, 2, MPI_COMM_WORLD);
      v[r] = n / (bench_now_s() - t0);
    } else {
      for (;;) {
        MPI_Status st;
        int64_t t;
        MPI_Recv(&t, 1, MPI_INT64_T, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        if (st.MPI_TAG == 2)
          break;
        t *= t;
        MPI_Send(&t, 1, MPI_INT64_T, 0, 1, MPI_COMM_WORLD);
      }
    }
  }
  if (rank == 0)
    bench_report("mpi_tasks", "os", v, BENCH_REPS, "tasks/s");
}

/* ---- mproc over MPI: the pool API, transport "mpi" ------------------------ */

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "bench-mpi: %s: %s\n", what, mproc_strerror(rc));
    exit(1);
  }
}

static void over_mproc(void) {
  mproc_pool *pool;
  check(mproc_pool_new(&pool, &(struct mproc_pool_options){.transport = "mpi"}), "pool");
  double v[BENCH_REPS];
  /* One task at a time: submit, wait, result. */
  int n = quick ? 500 : 20000;
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
      int64_t x = i, *res;
      size_t len;
      check(mproc_pool_apply(pool, square_task, &x, sizeof x, (void **)&res, &len, NULL, -1),
            "apply");
      free(res);
    }
    v[r] = (bench_now_s() - t0) / n * 1e6;
  }
  bench_report("mpi_roundtrip", "mproc", v, BENCH_REPS, "us");
  /* Many tiny tasks at once. */
  n = quick ? 2000 : 100000;
  mproc_future **fs = malloc((size_t)n * sizeof *fs);
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
      int64_t x = i;
      check(mproc_pool_submit(pool, square_task, &x, sizeof x, &fs[i]), "submit");
    }
    for (int i = 0; i < n; i++) {
      const void *res;
      size_t len;
      check(mproc_future_result(fs[i], &res, &len, -1), "result");
      mproc_future_free(fs[i]);
    }
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report("mpi_tasks", "mproc", v, BENCH_REPS, "tasks/s");
  free(fs);
  /* map: 4 chunks per worker rank, as mpi4py's side. */
  size_t items = quick ? 20000 : 2000000;
  int64_t *in = malloc(items * sizeof *in), *out = malloc(items * sizeof *out);
  for (size_t i = 0; i < items; i++)
    in[i] = (int64_t)i;
  struct mproc_map_options mo = {.chunksize = items / (4 * (size_t)mproc_pool_workers(pool))};
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    check(mproc_pool_map(pool, square, in, items, sizeof *in, out, sizeof *out, &mo, NULL, -1),
          "map");
    v[r] = (double)items / (bench_now_s() - t0);
  }
  bench_report("mpi_map", "mproc", v, BENCH_REPS, "items/s");
  free(in);
  free(out);
  mproc_pool_free(pool);
}

int main(int argc, char **argv) {
  quick = getenv("MPROC_BENCH_QUICK") && strcmp(getenv("MPROC_BENCH_QUICK"), "1") == 0;
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "raw") == 0) {
    MPI_Init(&argc, &argv);
    raw();
    MPI_Finalize();
    return 0;
  }
  if (strcmp(mode, "mproc") != 0) {
    fprintf(stderr, "usage: mpiexec -n 3 bench-mpi raw|mproc\n");
    return 2;
  }
  if (mproc_mpi_init(&argc, &argv, NULL) != 0)
    return 1;
  if (mproc_mpi_worker_ranks() == 0) {
    fprintf(stderr, "bench-mpi: run under mpiexec with at least 2 ranks\n");
    return 1;
  }
  over_mproc();
  return mproc_mpi_finalize(60000) == 0 ? 0 : 1;
}
