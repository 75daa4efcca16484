/* MPI benchmarks, run by bench/run.sh under `mpiexec -n 3`:
 *   bench-mpi raw     plain MPI in C ("os" lines): an 8-byte ping-pong
 *                     between ranks 0 and 1, and a task farm where rank 0
 *                     hands tiny tasks to ranks 1..n-1, two in flight each
 *   bench-mpi mproc   the same through the pool API over the worker ranks
 *                     (transport "mpi"; "mproc" lines): one task at a time,
 *                     many tasks at once, and map; each task in a local
 *                     supervised worker of its rank (the default)
 *   bench-mpi inrank  the same with MPROC_MPI_INRANK: tasks run in the
 *                     worker rank itself ("inrank" lines)
 *   bench-mpi floor   the floor under a task that runs in a supervised
 *                     process of its rank, in plain C ("#" note lines, not
 *                     figures of an implementation): a round trip between a
 *                     process and a forked child through shared memory, the
 *                     raw ping-pong passing through such a child on rank 1,
 *                     the raw farm doing so on every worker rank, and a
 *                     local mproc pool's own round trip and throughput
 * bench/mpi/bench_mpi4py.py measures mpi4py.futures ("python" lines).
 * Metrics: mpi_roundtrip (us), mpi_tasks (tasks/s), mpi_map (items/s). */
#include "bench.h"
#include <mpi.h>
#include <mproc.h>
#include <mproc/mpi.h>

#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

struct hop;
static int64_t hop_call(struct hop *h, int64_t x);

/* One round of the raw task farm: tag 1 a task, tag 2 stop; two tasks in
 * flight per worker rank, which squares each one itself (h NULL) or passes
 * it through its child.  Returns tasks/s on rank 0. */
static double farm_round(int rank, int size, int n, struct hop *h) {
  int64_t x = 3;
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
    return n / (bench_now_s() - t0);
  }
  for (;;) {
    MPI_Status st;
    int64_t t;
    MPI_Recv(&t, 1, MPI_INT64_T, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
    if (st.MPI_TAG == 2)
      return 0;
    t = h != NULL ? hop_call(h, t) : t * t;
    MPI_Send(&t, 1, MPI_INT64_T, 0, 1, MPI_COMM_WORLD);
  }
}

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
    double rate = farm_round(rank, size, n, NULL);
    if (rank == 0)
      v[r] = rate;
  }
  if (rank == 0)
    bench_report("mpi_tasks", "os", v, BENCH_REPS, "tasks/s");
}

/* ---- the floor: raw hops through a child process -------------------------
 *
 * mproc runs each task in a supervised local worker of its rank, so a task
 * crosses from the rank into another process and back on top of the MPI
 * round trip.  The cheapest such crossing: a word in shared memory the two
 * processes flip, spinning briefly (a waiter on another CPU sees it within
 * nanoseconds) before sleeping on a futex (on a busy CPU the other side
 * must be scheduled).  The child squares the number it is handed, as the
 * benchmark's task does.  No supervision, no queue, no futures: a floor,
 * not an implementation. */

struct hop {
  _Atomic uint32_t req, ack; /* bumped by the caller, by the child */
  int64_t v;
};

static void futex(_Atomic uint32_t *w, int op, uint32_t v) {
  syscall(SYS_futex, (uint32_t *)w, op, v, NULL, NULL, 0);
}

/* Wait until *w differs from old: spin a little, then sleep. */
static uint32_t hop_wait(_Atomic uint32_t *w, uint32_t old) {
  for (int i = 0; i < 2000; i++) {
    uint32_t v = atomic_load(w);
    if (v != old)
      return v;
  }
  for (;;) {
    uint32_t v = atomic_load(w);
    if (v != old)
      return v;
    futex(w, FUTEX_WAIT, old);
  }
}

static struct hop *hop_start(pid_t *pid) {
  struct hop *h = mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (h == MAP_FAILED)
    exit(1);
  *pid = fork();
  if (*pid == 0) { /* the child never calls MPI */
    uint32_t seen = 0;
    for (;;) {
      seen = hop_wait(&h->req, seen);
      if (seen == UINT32_MAX)
        _exit(0);
      h->v *= h->v;
      atomic_store(&h->ack, seen);
      futex(&h->ack, FUTEX_WAKE, 1);
    }
  }
  return h;
}

static int64_t hop_call(struct hop *h, int64_t x) {
  uint32_t r = atomic_load(&h->req) + 1;
  h->v = x;
  atomic_store(&h->req, r);
  futex(&h->req, FUTEX_WAKE, 1);
  hop_wait(&h->ack, r - 1);
  return h->v;
}

static void hop_stop(struct hop *h, pid_t pid) {
  atomic_store(&h->req, UINT32_MAX);
  futex(&h->req, FUTEX_WAKE, 1);
  waitpid(pid, NULL, 0);
  munmap(h, sizeof *h);
}

/* Ranks not in a measurement wait for rank 0's word without spinning in
 * MPI (Open MPI's blocking calls poll): probe, then nap 1 ms. */
static void idle_until_told(void) {
  for (;;) {
    int flag = 0;
    MPI_Iprobe(0, 9, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    if (flag)
      break;
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  int go;
  MPI_Recv(&go, 1, MPI_INT, 0, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

static void tell_all(int size) {
  int go = 1;
  for (int k = 1; k < size; k++)
    MPI_Send(&go, 1, MPI_INT, k, 9, MPI_COMM_WORLD);
}

static void note(const char *what, double *v, const char *unit) {
  printf("# mpi floor: %s: %.4g %s (median of %d)\n", what, bench_median(v, BENCH_REPS), unit,
         BENCH_REPS);
  fflush(stdout);
}

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "bench-mpi: %s: %s\n", what, mproc_strerror(rc));
    exit(1);
  }
}

/* n tiny tasks submitted at once, then every result collected: tasks per
 * second. */
static double tiny_tasks_rate(mproc_pool *pool, int n) {
  mproc_future **fs = malloc((size_t)n * sizeof *fs);
  check(fs == NULL ? MPROC_ENOMEM : 0, "futures");
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
  double rate = n / (bench_now_s() - t0);
  free(fs);
  return rate;
}

static void floor_(void) {
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  double v[BENCH_REPS];
  int n = quick ? 2000 : 100000;
  pid_t pid = 0;
  struct hop *h = rank > 0 ? hop_start(&pid) : NULL;
  /* 1. Rank 0 and a child of its own, the other ranks idle; then a local
   * mproc pool (one worker) on rank 0: its round trip and throughput. */
  if (rank == 0) {
    struct hop *mine = hop_start(&pid);
    for (int r = 0; r < BENCH_REPS; r++) {
      double t0 = bench_now_s();
      for (int i = 0; i < n; i++)
        if (hop_call(mine, i) != (int64_t)i * i)
          exit(1);
      v[r] = (bench_now_s() - t0) / n * 1e6;
    }
    hop_stop(mine, pid);
    note("round trip between a process and a forked child (shared memory, futex)", v, "us");
    mproc_pool *pool;
    check(mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 1, .transport = "shm"}),
          "local pool");
    for (int r = 0; r < BENCH_REPS; r++) {
      double t0 = bench_now_s();
      for (int i = 0; i < n / 4; i++) {
        int64_t x = i, *res;
        size_t len;
        check(mproc_pool_apply(pool, square_task, &x, sizeof x, (void **)&res, &len, NULL, -1),
              "apply");
        free(res);
      }
      v[r] = (bench_now_s() - t0) / (n / 4) * 1e6;
    }
    note("round trip of a local mproc pool, one worker", v, "us");
    for (int r = 0; r < BENCH_REPS; r++)
      v[r] = tiny_tasks_rate(pool, n);
    mproc_pool_free(pool);
    note("tiny tasks/s of a local mproc pool, one worker", v, "tasks/s");
    tell_all(size);
  } else {
    idle_until_told();
  }
  /* 2. The raw ping-pong, rank 1 passing each number through its child. */
  int64_t x = 3;
  for (int r = 0; r < BENCH_REPS; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = bench_now_s();
    for (int i = 0; i < n && rank < 2; i++) {
      if (rank == 0) {
        MPI_Send(&x, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(&x, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        x = 3;
      } else {
        MPI_Recv(&x, 1, MPI_INT64_T, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        x = hop_call(h, x);
        MPI_Send(&x, 1, MPI_INT64_T, 0, 0, MPI_COMM_WORLD);
      }
    }
    v[r] = (bench_now_s() - t0) / n * 1e6;
  }
  if (rank == 0)
    note("raw MPI ping-pong, rank 1 passing each message through a child", v, "us");
  /* 3. The raw farm (two in flight per rank), each worker rank passing each
   * task through its child. */
  n = quick ? 5000 : 200000;
  for (int r = 0; r < BENCH_REPS; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double rate = farm_round(rank, size, n, h);
    if (rank == 0)
      v[r] = rate;
  }
  if (rank == 0)
    note("raw MPI farm, each worker rank passing each task through a child", v, "tasks/s");
  else
    hop_stop(h, pid);
}

/* ---- mproc over MPI: the pool API, transport "mpi" ------------------------ */

/* Whether to run a phase: all by default, one with MPROC_BENCH_MPI_ONLY
 * (to profile it alone, e.g. perf stat per task). */
static bool phase(const char *name) {
  const char *only = getenv("MPROC_BENCH_MPI_ONLY");
  return !only || !*only || strcmp(only, name) == 0;
}

static void over_mproc(const char *impl) {
  mproc_pool *pool;
  check(mproc_pool_new(&pool, &(struct mproc_pool_options){.transport = "mpi"}), "pool");
  double v[BENCH_REPS];
  if (phase("roundtrip")) {
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
    bench_report("mpi_roundtrip", impl, v, BENCH_REPS, "us");
  }
  if (phase("tasks")) {
    /* Many tiny tasks at once. */
    int n = quick ? 2000 : 100000;
    for (int r = 0; r < BENCH_REPS; r++)
      v[r] = tiny_tasks_rate(pool, n);
    bench_report("mpi_tasks", impl, v, BENCH_REPS, "tasks/s");
  }
  if (phase("map")) {
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
    bench_report("mpi_map", impl, v, BENCH_REPS, "items/s");
    free(in);
    free(out);
  }
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
  if (strcmp(mode, "floor") == 0) {
    /* Plain MPI as in raw; the children (the hops', the local pool's
     * worker) never call MPI. */
    MPI_Init(&argc, &argv);
    floor_();
    MPI_Finalize();
    return 0;
  }
  bool inrank = strcmp(mode, "inrank") == 0;
  if (strcmp(mode, "mproc") != 0 && !inrank) {
    fprintf(stderr, "usage: mpiexec -n 3 bench-mpi raw|floor|mproc|inrank\n");
    return 2;
  }
  struct mproc_mpi_options mo = {.flags = inrank ? MPROC_MPI_INRANK : 0};
  if (mproc_mpi_init(&argc, &argv, &mo) != 0)
    return 1;
  if (mproc_mpi_worker_ranks() == 0) {
    fprintf(stderr, "bench-mpi: run under mpiexec with at least 2 ranks\n");
    return 1;
  }
  over_mproc(inrank ? "inrank" : "mproc");
  return mproc_mpi_finalize(60000) == 0 ? 0 : 1;
}
