/* MPI benchmarks, run by bench/run.sh under `mpiexec -n 3`:
 *   bench-mpi raw     plain MPI in C ("os" lines): an 8-byte ping-pong
 *                     between ranks 0 and 1, and a task farm where rank 0
 *                     hands tiny tasks to ranks 1..n-1, two in flight each
 *   bench-mpi mproc   the same over mproc's MPI backend ("mproc" lines):
 *                     one task at a time, many tasks at once, and map chunks
 * bench/mpi/bench_mpi4py.py measures mpi4py.futures ("python" lines).
 * Metrics: mpi_roundtrip (us), mpi_tasks (tasks/s), mpi_map (items/s). */
#include "bench.h"
#include "mpi_internal.h"

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

/* ---- mproc over MPI ------------------------------------------------------ */

static struct mproc__mpi_job *submit(const struct mproc__mpi_fn *fn, int64_t x) {
  struct mproc__mpi_job *j;
  if (mproc__mpi_submit(fn, &x, sizeof x, 0, &j) != 0) {
    fprintf(stderr, "submit failed\n");
    exit(1);
  }
  return j;
}

static void wait_ok(struct mproc__mpi_job *j) {
  if (mproc__mpi_wait(j, -1) != 0 || mproc__mpi_job_result(j, NULL, NULL, NULL) != 0) {
    fprintf(stderr, "task failed\n");
    exit(1);
  }
  mproc__mpi_job_free(j);
}

static void over_mproc(void) {
  struct mproc__mpi_fn fn, mf;
  if (mproc__mpi_fn_of(&fn, MPROC__MPI_FN_TASK, (void (*)(void))square_task) != 0 ||
      mproc__mpi_fn_of(&mf, MPROC__MPI_FN_MAP, (void (*)(void))square) != 0)
    exit(1);
  int n = quick ? 500 : 20000;
  double v[BENCH_REPS];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++)
      wait_ok(submit(&fn, i));
    v[r] = (bench_now_s() - t0) / n * 1e6;
  }
  bench_report("mpi_roundtrip", "mproc", v, BENCH_REPS, "us");
  n = quick ? 2000 : 100000;
  struct mproc__mpi_job **js = malloc((size_t)n * sizeof *js);
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++)
      js[i] = submit(&fn, i);
    for (int i = 0; i < n; i++)
      wait_ok(js[i]);
    v[r] = n / (bench_now_s() - t0);
  }
  bench_report("mpi_tasks", "mproc", v, BENCH_REPS, "tasks/s");
  free(js);
  /* map: n items in chunks, 4 chunks per worker rank. */
  size_t items = quick ? 20000 : 2000000, nchunks = 4 * (size_t)mproc_mpi_worker_ranks();
  size_t chunk = (items + nchunks - 1) / nchunks;
  int64_t *in = malloc(items * sizeof *in);
  for (size_t i = 0; i < items; i++)
    in[i] = (int64_t)i;
  struct mproc__mpi_job *cj[64];
  for (int r = 0; r < BENCH_REPS; r++) {
    double t0 = bench_now_s();
    size_t k = 0;
    for (size_t off = 0; off < items; off += chunk, k++) {
      size_t m = items - off < chunk ? items - off : chunk;
      if (mproc__mpi_submit_map((struct mproc__mpi_to){0, 0}, &mf, in + off, m, sizeof *in,
                                sizeof *in, &cj[k]) != 0)
        exit(1);
    }
    for (size_t i = 0; i < k; i++)
      wait_ok(cj[i]);
    v[r] = (double)items / (bench_now_s() - t0);
  }
  bench_report("mpi_map", "mproc", v, BENCH_REPS, "items/s");
  free(in);
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
