/* The MPI backend's cases, one per run: `mpi-cases CASE`, launched by
 * run-case.sh under `mpiexec --oversubscribe -n 3` (or without mpiexec for
 * the one-binary fallback).  Every rank runs this same program; rank 0 runs
 * the case and prints "PASS CASE" when every check held, worker ranks serve
 * from mproc_mpi_init.  A failed check prints both values and exits 1.
 *
 * Built twice: mpi-cases-other is the same source with another build-id,
 * for the startup check that every rank runs the same program. */
#include "mpi_internal.h"
#include "pool.h"
#include "mpi-test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MPROC_TEST_OTHER_BUILD
const char mproc_test_variant[] = "other build";
#else
const char mproc_test_variant[] = "main build";
#endif

/* ---- task and map functions ------------------------------------------------ */

/* Returns the sum of its bytes and a copy with every byte incremented. */
static int echo_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  unsigned char *out = mproc_task_result_buf(ctx, len);
  if (len && !out)
    return mproc_task_fail(ctx, 1, "no result buffer");
  const unsigned char *in = arg;
  for (size_t i = 0; i < len; i++)
    out[i] = (unsigned char)(in[i] + 1);
  return 0;
}

/* The length and first, middle and last bytes of its argument. */
static int probe_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  const unsigned char *in = arg;
  uint64_t r[4] = {len, len ? in[0] : 0, len ? in[len / 2] : 0, len ? in[len - 1] : 0};
  return mproc_task_return(ctx, r, sizeof r);
}

static int exit_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  exit(3);
}

static int fail_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  return mproc_task_fail(ctx, 42, "the task's own failure");
}

static int only_on_rank0(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static struct mproc__mpi_fn ref_of(mproc_task_fn fn) {
  struct mproc__mpi_fn r;
  CHECK_ERR(mproc__mpi_fn_of(&r, MPROC__MPI_FN_TASK, (void (*)(void))fn), 0);
  return r;
}

static struct mproc__mpi_job *submit(mproc_task_fn fn, const void *arg, size_t len,
                                     int64_t timeout_ms) {
  struct mproc__mpi_fn r = ref_of(fn);
  struct mproc__mpi_job *j;
  CHECK_ERR(mproc__mpi_submit(&r, arg, len, timeout_ms, &j), 0);
  return j;
}

/* Wait for j and return its code, with err filled. */
static int outcome(struct mproc__mpi_job *j, struct mproc_task_error *err) {
  CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
  return mproc__mpi_job_result(j, NULL, NULL, err);
}

static int64_t squared_on_ranks(int64_t v) {
  struct mproc__mpi_job *j = submit(square_task, &v, sizeof v, 0);
  const void *data;
  size_t len;
  struct mproc_task_error err;
  CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
  int rc = mproc__mpi_job_result(j, &data, &len, &err);
  CHECK(rc == 0, "square failed: %s: %s", mproc_err_name(rc), err.message);
  CHECK(len == sizeof(int64_t), "len %zu", len);
  int64_t r;
  memcpy(&r, data, sizeof r);
  mproc__mpi_job_free(j);
  return r;
}

/* Every worker rank still serves: two tasks sent to each rank, answered. */
static void ranks_still_serve(void) {
  int n = mproc_mpi_worker_ranks();
  struct mproc__mpi_job *js[16];
  struct mproc__mpi_fn r = ref_of(square_task);
  for (int i = 0; i < 2 * n; i++) {
    int64_t v = i;
    CHECK_ERR(
        mproc__mpi_submit_to((struct mproc__mpi_to){1 + i % n, 0}, &r, &v, sizeof v, 0, &js[i]), 0);
  }
  for (int i = 0; i < 2 * n; i++) {
    struct mproc_task_error err;
    const void *data;
    CHECK_ERR(mproc__mpi_wait(js[i], scaled(60000)), 0);
    int rc = mproc__mpi_job_result(js[i], &data, NULL, &err);
    CHECK(rc == 0 && *(const int64_t *)data == (int64_t)i * i, "task %d: %s %s", i,
          mproc_err_name(rc), err.message);
    CHECK(mproc__mpi_job_rank(js[i]) == 1 + i % n, "task %d ran on rank %d", i,
          mproc__mpi_job_rank(js[i]));
    mproc__mpi_job_free(js[i]);
  }
  /* A pool never opened on the rank: the job finishes, failed with
   * MPROC_ESTATE -- a code the caller must not take for "not finished". */
  struct mproc__mpi_job *nj;
  CHECK_ERR(mproc__mpi_submit_to((struct mproc__mpi_to){1, 12345}, &r, NULL, 0, 0, &nj), 0);
  CHECK_ERR(mproc__mpi_wait(nj, scaled(60000)), 0);
  CHECK(mproc__mpi_job_done(nj), "done");
  struct mproc_task_error nerr;
  CHECK_ERR(mproc__mpi_job_result(nj, NULL, NULL, &nerr), MPROC_ESTATE);
  CHECK(strstr(nerr.message, "its pool is not open on this rank"), "%s", nerr.message);
  mproc__mpi_job_free(nj);
  /* No rank 0 or beyond the last. */
  CHECK_ERR(mproc__mpi_submit_to((struct mproc__mpi_to){n + 1, 0}, &r, NULL, 0, 0, &js[0]),
            MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_submit_to((struct mproc__mpi_to){-1, 0}, &r, NULL, 0, 0, &js[0]),
            MPROC_EINVAL);
}

static void expect_rank_and_host(const struct mproc_task_error *err, int rank) {
  char want[100];
  snprintf(want, sizeof want, "rank %d on %s: ", rank, mproc__mpi.hosts[rank]);
  CHECK(strncmp(err->message, want, strlen(want)) == 0, "message '%s' lacks '%s'", err->message,
        want);
}

/* ---- the cases ------------------------------------------------------------------ */

static void case_basic(void) {
  CHECK(mproc_mpi_worker_ranks() == 2, "worker ranks %d", mproc_mpi_worker_ranks());
  CHECK(mproc_mpi_rank() == 0, "rank %d", mproc_mpi_rank());
  /* By address (object + offset) and by registered name. */
  CHECK(squared_on_ranks(12) == 144, "square");
  struct mproc__mpi_fn named;
  CHECK_ERR(mproc__mpi_fn_named(&named, MPROC__MPI_FN_TASK, "square"), 0);
  CHECK(named.named == 1, "named %u", named.named);
  int64_t v = 9;
  struct mproc__mpi_job *j;
  CHECK_ERR(mproc__mpi_submit(&named, &v, sizeof v, 0, &j), 0);
  const void *data;
  size_t len;
  CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
  CHECK_ERR(mproc__mpi_job_result(j, &data, &len, NULL), 0);
  CHECK(len == 8 && *(const int64_t *)data == 81, "named square");
  mproc__mpi_job_free(j);
  /* Many at once, over both ranks, in any order. */
  struct mproc__mpi_job *js[200];
  for (int i = 0; i < 200; i++) {
    v = i;
    js[i] = submit(square_task, &v, sizeof v, 0);
  }
  int per_rank[3] = {0};
  for (int i = 199; i >= 0; i--) {
    CHECK_ERR(mproc__mpi_wait(js[i], scaled(60000)), 0);
    CHECK_ERR(mproc__mpi_job_result(js[i], &data, &len, NULL), 0);
    CHECK(*(const int64_t *)data == (int64_t)i * i, "item %d", i);
    per_rank[mproc__mpi_job_rank(js[i])]++;
    mproc__mpi_job_free(js[i]);
  }
  CHECK(per_rank[1] > 0 && per_rank[2] > 0, "spread %d/%d", per_rank[1], per_rank[2]);
  /* A task's own failure comes back as it is. */
  struct mproc_task_error err;
  j = submit(fail_task, NULL, 0, 0);
  CHECK_ERR(outcome(j, &err), MPROC_ETASK);
  CHECK(err.task_code == 42 && strcmp(err.message, "the task's own failure") == 0, "%d %s",
        err.task_code, err.message);
  mproc__mpi_job_free(j);
  /* A map chunk: elements in, elements out; a failing element named. */
  int32_t in[1000];
  for (int i = 0; i < 1000; i++)
    in[i] = i;
  struct mproc__mpi_fn mf;
  CHECK_ERR(mproc__mpi_fn_of(&mf, MPROC__MPI_FN_MAP, (void (*)(void))triple), 0);
  CHECK_ERR(mproc__mpi_submit_map((struct mproc__mpi_to){0, 0}, &mf, in, 1000, sizeof in[0], NULL,
                                  sizeof(int64_t), &j),
            0);
  CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
  CHECK_ERR(mproc__mpi_job_result(j, &data, &len, NULL), 0);
  CHECK(len == 1000 * sizeof(int64_t), "map len %zu", len);
  for (int i = 0; i < 1000; i++)
    CHECK(((const int64_t *)data)[i] == 3 * i, "map item %d", i);
  mproc__mpi_job_free(j);
  /* The same, the output received straight into the caller's buffer. */
  static int64_t res[1000];
  CHECK_ERR(mproc__mpi_submit_map((struct mproc__mpi_to){0, 0}, &mf, in, 1000, sizeof in[0], res,
                                  sizeof(int64_t), &j),
            0);
  CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
  CHECK_ERR(mproc__mpi_job_result(j, &data, &len, NULL), 0);
  CHECK(data == NULL && len == sizeof res, "placed: data %p len %zu", data, len);
  for (int i = 0; i < 1000; i++)
    CHECK(res[i] == 3 * i, "placed map item %d: %lld", i, (long long)res[i]);
  mproc__mpi_job_free(j);
  /* Freed before it finished: the buffers are the caller's again at once --
   * the output is complete (its receive was under way) or untouched, and
   * stays so when the answer comes. */
  memset(res, 0x55, sizeof res);
  CHECK_ERR(mproc__mpi_submit_map((struct mproc__mpi_to){1, 0}, &mf, in, 1000, sizeof in[0], res,
                                  sizeof(int64_t), &j),
            0);
  mproc__mpi_flush();
  mproc__mpi_job_free(j);
  static int64_t snap[1000];
  memcpy(snap, res, sizeof res);
  bool whole = true, untouched = true;
  for (int i = 0; i < 1000; i++) {
    whole = whole && res[i] == 3 * i;
    untouched = untouched && res[i] == (int64_t)0x5555555555555555;
  }
  CHECK(whole || untouched, "a freed job's output is half written");
  CHECK(squared_on_ranks(6) == 36 && squared_on_ranks(7) == 49, "after a freed map");
  /* Rank 1 answers in order: the freed map's answer came before these. */
  CHECK(memcmp(snap, res, sizeof res) == 0, "a freed job's output changed after the free");
  in[617] = -1;
  CHECK_ERR(mproc__mpi_submit_map((struct mproc__mpi_to){0, 0}, &mf, in, 1000, sizeof in[0], NULL,
                                  sizeof(int64_t), &j),
            0);
  CHECK_ERR(outcome(j, &err), MPROC_ETASK);
  CHECK(err.index == 617 && err.task_code == 5, "index %zu code %d", err.index, err.task_code);
  mproc__mpi_job_free(j);
  /* Freed before it finished: its result is dropped when it arrives. */
  v = 3;
  mproc__mpi_job_free(submit(square_task, &v, sizeof v, 0));
  CHECK(squared_on_ranks(5) == 25, "after a freed job");
}

/* Payloads larger than a piece travel in pieces (the piece size is lowered
 * on every rank before init, see main). */
static void case_large(void) {
  size_t n = (size_t)3 << 20; /* 3 MiB = 768 pieces of 4 KiB */
  unsigned char *buf = malloc(n);
  CHECK(buf, "malloc");
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)(i * 7);
  struct mproc__mpi_job *a = submit(echo_task, buf, n, 0);
  struct mproc__mpi_job *b = submit(echo_task, buf, n / 2 + 1, 0);
  const void *data;
  size_t len;
  for (int k = 0; k < 2; k++) {
    struct mproc__mpi_job *j = k ? b : a;
    size_t want = k ? n / 2 + 1 : n;
    CHECK_ERR(mproc__mpi_wait(j, scaled(60000)), 0);
    CHECK_ERR(mproc__mpi_job_result(j, &data, &len, NULL), 0);
    CHECK(len == want, "len %zu want %zu", len, want);
    for (size_t i = 0; i < len; i++)
      CHECK(((const unsigned char *)data)[i] == (unsigned char)(buf[i] + 1), "byte %zu", i);
    mproc__mpi_job_free(j);
  }
  free(buf);
  CHECK(mproc__mpi_pieces(n, 4096) == 768, "pieces");
  CHECK(mproc__mpi_pieces((size_t)5 << 30, (size_t)64 << 20) == 80, "pieces of 5 GiB");
  CHECK(mproc__mpi_pieces(MPROC__MPI_INLINE, 4096) == 0, "inline");
}

/* One argument above INT_MAX bytes, with the default piece size (results
 * take the same path back, shown by case_large; a small one here keeps the
 * case's memory to a few GiB). */
static void case_huge(void) {
  size_t n = ((size_t)1 << 31) + 4099;
  unsigned char *buf = malloc(n);
  CHECK(buf, "malloc");
  memset(buf, 0x5a, n);
  buf[n / 2] = 0x33;
  buf[n - 1] = 0x11;
  struct mproc__mpi_job *j = submit(probe_task, buf, n, 0);
  free(buf);
  const void *data;
  size_t len;
  CHECK_ERR(mproc__mpi_wait(j, scaled(300000)), 0);
  struct mproc_task_error err;
  int rc = mproc__mpi_job_result(j, &data, &len, &err);
  CHECK(rc == 0, "%s %s", mproc_err_name(rc), err.message);
  const uint64_t *r = data;
  CHECK(len == sizeof(uint64_t[4]) && r[0] == n && r[1] == 0x5a && r[2] == 0x33 && r[3] == 0x11,
        "len %zu: %llu %llx %llx %llx", len, (unsigned long long)r[0], (unsigned long long)r[1],
        (unsigned long long)r[2], (unsigned long long)r[3]);
  mproc__mpi_job_free(j);
}

static void crash_case(mproc_task_fn fn, int want_signo, int want_status) {
  int n = mproc_mpi_worker_ranks();
  struct mproc__mpi_job *js[2];
  for (int i = 0; i < n && i < 2; i++)
    js[i] = submit(fn, NULL, 0, 0);
  for (int i = 0; i < n && i < 2; i++) {
    struct mproc_task_error err;
    CHECK_ERR(outcome(js[i], &err), MPROC_EWORKERDIED);
    CHECK(err.signo == want_signo && err.exit_status == want_status, "signo %d status %d",
          err.signo, err.exit_status);
    expect_rank_and_host(&err, mproc__mpi_job_rank(js[i]));
    printf("rank %d: %s\n", mproc__mpi_job_rank(js[i]), mproc_err_name(err.code));
    mproc__mpi_job_free(js[i]);
  }
  ranks_still_serve();
}

/* Cancel a running task of fn: its local worker is killed, the rank goes
 * on. */
static void cancel_running(mproc_task_fn fn) {
  struct mproc__mpi_job *j = submit(fn, NULL, 0, 0);
  struct mproc__mpi_job *probe = submit(square_task, &(int64_t){4}, sizeof(int64_t), 0);
  CHECK_ERR(mproc__mpi_wait(probe, scaled(60000)), 0); /* j has surely reached its rank */
  mproc__mpi_job_free(probe);
  CHECK_ERR(mproc__mpi_cancel(j), 0);
  struct mproc_task_error err;
  CHECK_ERR(outcome(j, &err), MPROC_ECANCELED);
  CHECK_ERR(mproc__mpi_cancel(j), MPROC_ESTATE);
  mproc__mpi_job_free(j);
}

static void case_timeout(void) {
  int64_t t0 = mproc_now_ms();
  struct mproc__mpi_job *j = submit(sleep_task, NULL, 0, 300);
  struct mproc_task_error err;
  CHECK_ERR(outcome(j, &err), MPROC_ETIMEDOUT);
  int64_t took = mproc_now_ms() - t0;
  CHECK(took >= 300 && took < scaled(30000), "took %lld ms", (long long)took);
  expect_rank_and_host(&err, mproc__mpi_job_rank(j));
  mproc__mpi_job_free(j);
  cancel_running(sleep_task);
  ranks_still_serve();
}

/* A task whose local worker stops itself (SIGSTOP). */
static int stop_self_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len, (void)ctx;
  raise(SIGSTOP);
  return 0;
}

/* A rank's local worker stopped in a task: the task's timeout still ends
 * it (a kill works on a stopped process), and so does a cancel; the rank
 * replaces the worker and goes on. */
static void case_stopped(void) {
  struct mproc__mpi_job *j = submit(stop_self_task, NULL, 0, 300);
  struct mproc_task_error err;
  CHECK_ERR(outcome(j, &err), MPROC_ETIMEDOUT);
  mproc__mpi_job_free(j);
  cancel_running(stop_self_task);
  ranks_still_serve();
}

static void case_unresolvable(void) {
  struct mproc__mpi_fn r;
  /* A name nobody registered: refused on rank 0 already. */
  CHECK_ERR(mproc__mpi_fn_named(&r, MPROC__MPI_FN_TASK, "no-such-function"), MPROC_ENOENT);
  /* A name registered on rank 0 only. */
  CHECK_ERR(mproc__mpi_fn_named(&r, MPROC__MPI_FN_TASK, "rank0-only"), 0);
  struct mproc__mpi_job *j;
  CHECK_ERR(mproc__mpi_submit(&r, NULL, 0, 0, &j), 0);
  struct mproc_task_error err;
  CHECK_ERR(outcome(j, &err), MPROC_ENOFUNC);
  CHECK(strstr(err.message, "task function 'rank0-only' is not registered on this rank"), "%s",
        err.message);
  expect_rank_and_host(&err, mproc__mpi_job_rank(j));
  mproc__mpi_job_free(j);
  /* An object no rank has loaded. */
  r = ref_of(fail_task);
  CHECK(!r.named && r.ref.build_id_len > 0, "named %u", r.named);
  r.ref.build_id[0] ^= 0xff;
  CHECK_ERR(mproc__mpi_submit(&r, NULL, 0, 0, &j), 0);
  CHECK_ERR(outcome(j, &err), MPROC_ENOFUNC);
  CHECK(strstr(err.message, "task function <program>+0x") &&
            strstr(err.message, "no loaded object has its build-id"),
        "%s", err.message);
  mproc__mpi_job_free(j);
  /* The right object, an offset outside its code. */
  r = ref_of(fail_task);
  r.ref.offset = (uint64_t)1 << 40;
  CHECK_ERR(mproc__mpi_submit(&r, NULL, 0, 0, &j), 0);
  CHECK_ERR(outcome(j, &err), MPROC_ENOFUNC);
  CHECK(strstr(err.message, "offset outside the object's code"), "%s", err.message);
  mproc__mpi_job_free(j);
  /* A task reference used for a map, and the reverse. */
  r = ref_of(square_task);
  CHECK_ERR(mproc__mpi_submit_map((struct mproc__mpi_to){0, 0}, &r, "abcd", 1, 4, NULL, 4, &j),
            MPROC_EINVAL);
  ranks_still_serve();
}

static void case_killrank(void) {
  /* Ends the whole job: mpiexec exits non-zero (run-case.sh checks how
   * fast).  Nothing after the wait may run. */
  struct mproc__mpi_job *j = submit(kill_rank_task, NULL, 0, 0);
  struct mproc_task_error err;
  int rc = outcome(j, &err);
  printf("UNEXPECTED: the job went on (%s)\n", mproc_err_name(rc));
  exit(1);
}

/* A message of a tag the wire does not know ends the job with a message
 * naming it (run-case.sh checks both), rather than lying unread while the
 * rank goes on.  Nothing after the wait may run. */
static void case_badtag(void) {
  struct mproc__mpi_task bogus = {.kind = MPROC__MPI_CALL};
  CHECK(MPI_Send(&bogus, (int)sizeof bogus, MPI_BYTE, 1, 999, mproc__mpi.comm) == MPI_SUCCESS,
        "send");
  struct mproc__mpi_fn r = ref_of(square_task);
  struct mproc__mpi_job *j;
  int64_t v = 3;
  CHECK_ERR(mproc__mpi_submit_to((struct mproc__mpi_to){1, 0}, &r, &v, sizeof v, 0, &j), 0);
  struct mproc_task_error err;
  int rc = outcome(j, &err);
  printf("UNEXPECTED: the job went on (%s)\n", mproc_err_name(rc));
  exit(1);
}

/* Runs until mpiexec is interrupted (run-case.sh sends SIGINT). */
static void case_sigint(void) {
  struct mproc__mpi_job *j = submit(sleep_task, NULL, 0, 0);
  printf("RUNNING\n");
  fflush(stdout);
  mproc__mpi_wait(j, scaled(120000));
  printf("UNEXPECTED: still running\n");
  exit(1);
}

/* The pool's MPI transport driven through its ops table, as the pool's
 * manager would (under the pool mutex, which nothing else contends here). */
struct outcomes {
  int n;
  int code[16];
  int64_t value[16];
  char msg[16][200];
  struct mproc__task *t[16];
};
static struct outcomes g_out;

static void on_done(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  (void)p;
  int k = g_out.n++;
  g_out.t[k] = t;
  g_out.code[k] = o->code;
  snprintf(g_out.msg[k], sizeof g_out.msg[k], "%s", o->msg ? o->msg : "");
  if (o->code == 0 && o->res_len == sizeof(int64_t))
    memcpy(&g_out.value[k], o->res, sizeof(int64_t));
  free(o->res);
}

static struct mproc__task *left_task[16];
static int n_left;
static void on_left(struct mproc_pool *p, struct mproc__task *t, bool started) {
  (void)p;
  CHECK(started, "a task handed back from a rank counts as started");
  left_task[n_left++] = t;
}

static void case_transport(void) {
  const struct mproc__transport_ops *tp = &mproc__transport_mpi;
  static struct mproc_pool p;
  struct mproc__slot slots[2];
  memset(slots, 0, sizeof slots);
  p.slots = slots;
  p.opts.workers = 3; /* more workers than ranks: one slot per rank */
  CHECK_ERR(tp->init(&p), 0);
  CHECK(p.nworkers == 2 && p.opts.start_method == MPROC_START_SPAWN, "slots %d", p.nworkers);
  tp->fini(&p);
  p.opts.workers = 0; /* one worker per rank */
  CHECK_ERR(tp->init(&p), 0);
  for (int i = 0; i < 2; i++) {
    slots[i].pidfd = -1;
    CHECK_ERR(tp->start_worker(&p, i, MPROC__PHASE_LAUNCH), 0);
    CHECK_ERR(tp->start_worker(&p, i, MPROC__PHASE_READY), 0);
    struct mproc__activity ai = {0};
    tp->activity(&p, i, &ai);
    CHECK(slots[i].pidfd == -1 && ai.init == MPROC__INIT_READY, "slot %d", i);
  }
  struct mproc__task t[6];
  memset(t, 0, sizeof t);
  int64_t args[6] = {2, 3, 4, 5, 6, 7};
  for (int i = 0; i < 6; i++) {
    t[i].kind = MPROC__K_CALL;
    t[i].fn = mproc__taskfn_of((void (*)(void))square_task);
    t[i].arg = &args[i];
    t[i].arg_len = sizeof args[i];
    t[i].arg_fd = -1;
  }
  t[2].fn = mproc__taskfn_of((void (*)(void))segv_task); /* slot 1's first */
  t[3].timeout_ms = 200;
  t[3].fn = mproc__taskfn_of((void (*)(void))sleep_task);
  /* Two per slot: t0, t1 on slot 0; t2, t3 on slot 1. */
  for (int i = 0; i < 4; i++) {
    int slot = i / 2;
    CHECK_ERR(tp->send_task(&p, slot, &t[i]), 0);
    CHECK(tp->revoke(&p, slot, &t[i], NULL) == 0, "task %d is its rank's", i);
  }
  tp->flush(&p); /* the round of send_task calls is over: they go out */
  /* tasks_per_rank (2) each: no room. */
  CHECK_ERR(tp->send_task(&p, 0, &t[4]), -EAGAIN);
  CHECK_ERR(tp->send_task(&p, 1, &t[4]), -EAGAIN);
  CHECK(tp->revoke(&p, 1, NULL, NULL) == 0, "nothing sent is revoked");
  struct mproc__activity a = {0};
  tp->activity(&p, 1, &a);
  CHECK(a.running == &t[2] && a.since > 0 && a.waiting == NULL, "slot 1 runs t2");
  int64_t deadline = mproc_now_ms() + scaled(60000);
  while (g_out.n < 4 && mproc_now_ms() < deadline) {
    int got = tp->poll_results(&p, 0, on_done) + tp->poll_results(&p, 1, on_done);
    if (!got)
      CHECK(tp->sleep(&p, NULL, 0, 1000) >= 0, "sleep"); /* at most ~1 ms */
  }
  CHECK(g_out.n == 4, "outcomes %d", g_out.n);
  for (int k = 0; k < 4; k++) {
    int i = (int)(g_out.t[k] - t);
    if (i < 2)
      CHECK(g_out.code[k] == 0 && g_out.value[k] == args[i] * args[i], "t%d: %s %lld", i,
            mproc_err_name(g_out.code[k]), (long long)g_out.value[k]);
    else
      CHECK(g_out.code[k] == (i == 2 ? MPROC_EWORKERDIED : MPROC_ETIMEDOUT) &&
                strncmp(g_out.msg[k], "rank 2 on ", 10) == 0,
            "t%d: %s '%s'", i, mproc_err_name(g_out.code[k]), g_out.msg[k]);
  }
  /* Descriptors cannot travel to another node. */
  int fds[1] = {0};
  struct mproc__task m = t[0];
  m.fds = fds;
  m.nfds = 1;
  CHECK_ERR(tp->send_task(&p, 0, &m), MPROC_ENOTSUP);
  /* A slot reset hands its tasks back, started. */
  t[4].fn = mproc__taskfn_of((void (*)(void))sleep_task);
  CHECK_ERR(tp->send_task(&p, 0, &t[4]), 0);
  CHECK_ERR(tp->send_task(&p, 0, &t[5]), 0);
  tp->flush(&p);
  tp->reset_slot(&p, 0, on_left);
  CHECK(n_left == 2 && left_task[0] == &t[4] && left_task[1] == &t[5], "left %d", n_left);
  tp->activity(&p, 0, &a);
  CHECK(a.running == NULL, "slot 0 empty");
  tp->fini(&p);
  CHECK(p.tp_state == NULL, "fini");
  ranks_still_serve();
}

/* Not under mpiexec: no worker ranks; the program runs with local workers. */
static void case_fallback(void) {
  CHECK(mproc_mpi_worker_ranks() == 0 && mproc_mpi_rank() == 0, "ranks %d",
        mproc_mpi_worker_ranks());
  struct mproc__mpi_fn r = ref_of(square_task);
  struct mproc__mpi_job *j;
  CHECK_ERR(mproc__mpi_submit(&r, NULL, 0, 0, &j), MPROC_ESTATE);
  mproc_pool *pool;
  CHECK_ERR(mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2}), 0);
  int64_t v = 11, *res;
  size_t len;
  CHECK_ERR(mproc_pool_apply(pool, square_task, &v, sizeof v, (void **)&res, &len, NULL, 10000), 0);
  CHECK(*res == 121, "%lld", (long long)*res);
  free(res);
  mproc_pool_free(pool);
  CHECK_ERR(mproc_mpi_init(NULL, NULL, NULL), MPROC_ESTATE);
  CHECK_ERR(mproc_mpi_finalize(-2), MPROC_EINVAL);
  CHECK_ERR(mproc_mpi_finalize(1000), 0);
}

/* The idle loops' backoff, without MPI: it spins for MPROC__MPI_SPIN_US of
 * wall time after going idle (not a count of yields, which pass in
 * microseconds on an idle CPU), then sleeps, growing to 1 ms.  nanosleep
 * sleeps at least what it is asked, so the lower bounds hold under load. */
static void case_backoff(void) {
  struct mproc__mpi_idle w = {0};
  mproc__mpi_backoff(&w); /* going idle: marks the time, only yields */
  CHECK(w.since_us > 0 && w.naps == 0, "since %lld naps %u", (long long)w.since_us, w.naps);
  /* Within the window: still no sleep, however many rounds (a mark in the
   * future keeps the window open whatever the load). */
  w.since_us = mproc__mpi_now_us() + 10 * 1000000;
  for (int i = 0; i < 1000; i++)
    mproc__mpi_backoff(&w);
  CHECK(w.naps == 0, "slept %u times within the spin window", w.naps);
  /* Past the window: the first nap is 16 us, then they grow. */
  w.since_us = mproc__mpi_now_us() - MPROC__MPI_SPIN_US - 1;
  int64_t t0 = mproc__mpi_now_us();
  mproc__mpi_backoff(&w);
  CHECK(w.naps == 1 && mproc__mpi_now_us() - t0 >= 16, "naps %u after %lld us", w.naps,
        (long long)(mproc__mpi_now_us() - t0));
  /* Long idle: naps of 1 ms, never longer (the loop still notices news and
   * deadlines within about a millisecond). */
  w.naps = 1000;
  t0 = mproc__mpi_now_us();
  mproc__mpi_backoff(&w);
  int64_t took = mproc__mpi_now_us() - t0;
  CHECK(took >= 1000, "a long-idle nap took %lld us", (long long)took);
  /* Progress resets it: spinning again. */
  w = (struct mproc__mpi_idle){0};
  mproc__mpi_backoff(&w);
  CHECK(w.naps == 0, "naps %u after a reset", w.naps);
}

/* Bad arguments, without MPI (before init). */
static void case_errors(void) {
  /* Names are the core's registry (mproc_function_register); a name too
   * long for the wire is refused. */
  char longname[100];
  memset(longname, 'a', sizeof longname - 1);
  longname[99] = '\0';
  struct mproc__mpi_fn nr;
  CHECK_ERR(mproc__mpi_fn_named(&nr, MPROC__MPI_FN_TASK, longname), MPROC_ENAMETOOLONG);
  CHECK_ERR(mproc__mpi_fn_named(&nr, MPROC__MPI_FN_TASK, NULL), MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_fn_named(&nr, MPROC__MPI_FN_TASK, "square"), MPROC_ENOENT);
  CHECK_ERR(mproc_function_register("square", MPROC_FUNCTION(square_task)), 0);
  CHECK_ERR(mproc__mpi_fn_named(&nr, MPROC__MPI_FN_TASK, "square"), 0);
  char why[160];
  CHECK(mproc__mpi_fn_resolve(&nr, why, sizeof why) == MPROC_FUNCTION(square_task), "by name");
  CHECK_ERR(mproc_mpi_finalize(0), MPROC_ESTATE); /* before init */
  CHECK_ERR(mproc_mpi_worker_ranks(), 0);
  struct mproc_mpi_options bad = {.flags = 1u << 1};
  CHECK_ERR(mproc_mpi_init(NULL, NULL, &bad), MPROC_EINVAL);
  bad = (struct mproc_mpi_options){.tasks_per_rank = -1};
  CHECK_ERR(mproc_mpi_init(NULL, NULL, &bad), MPROC_EINVAL);
  bad = (struct mproc_mpi_options){.startup_timeout_ms = -5};
  CHECK_ERR(mproc_mpi_init(NULL, NULL, &bad), MPROC_EINVAL);
  int argc = 0;
  CHECK_ERR(mproc_mpi_init(&argc, NULL, NULL), MPROC_EINVAL);
  struct mproc__mpi_fn r;
  CHECK_ERR(mproc__mpi_fn_of(&r, MPROC__MPI_FN_TASK, NULL), MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_fn_of(&r, MPROC__MPI_FN_TASK, (void (*)(void))echo_task), 0);
  CHECK(!r.named && r.ref.build_id_len > 0 && r.ref.is_main, "named %u", r.named);
  CHECK(mproc__mpi_fn_resolve(&r, why, sizeof why) == (void (*)(void))echo_task, "resolve");
  /* Data is not code. */
  CHECK_ERR(mproc__mpi_fn_of(&r, MPROC__MPI_FN_TASK, (void (*)(void))(uintptr_t)mproc_test_variant),
            MPROC_ENOFUNC);
  CHECK_ERR(mproc__mpi_submit(NULL, NULL, 0, 0, NULL), MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_wait(NULL, 0), MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_cancel(NULL), MPROC_EINVAL);
  CHECK_ERR(mproc__mpi_job_result(NULL, NULL, NULL, NULL), MPROC_EINVAL);
}

/* Batches on the wire: frames in, frames out, and what is not a batch. */
static void batch_frames(void) {
  CHECK(mproc__mpi_batchable(sizeof(struct mproc__mpi_task), 8), "a tiny task is batchable");
  CHECK(!mproc__mpi_batchable(sizeof(struct mproc__mpi_task), MPROC__MPI_INLINE / 2),
        "half the inline size is not");
  struct mproc__mpi_batch b = {0};
  struct mproc__mpi_task h[3] = {{.id = 7, .kind = MPROC__MPI_CALL},
                                 {.id = 8, .kind = MPROC__MPI_CALL},
                                 {.id = 9, .kind = MPROC__MPI_CANCEL}};
  const char *payload[3] = {"abc", "", "0123456789"};
  for (int i = 0; i < 3; i++)
    CHECK_ERR(mproc__mpi_batch_add(&b, &h[i], sizeof h[i], payload[i], strlen(payload[i])), 0);
  CHECK(b.n == 3 && b.used % 8 == 0, "n %u used %zu", b.n, b.used);
  struct mproc__mpi_op in = {.hdr_len = sizeof h[0], .data = b.buf, .len = b.used, .source = 2};
  size_t at = 0;
  struct mproc__mpi_op *f;
  for (int i = 0; i < 3; i++) {
    CHECK_ERR(mproc__mpi_batch_next(&in, &at, &f), 1);
    const struct mproc__mpi_task *t = f->hdr;
    CHECK(t->id == h[i].id && t->kind == h[i].kind && f->len == strlen(payload[i]) &&
              (f->len == 0 || memcmp(f->data, payload[i], f->len) == 0) && f->source == 2 &&
              mproc__mpi_test(f) == 1,
          "frame %d: id %llu len %zu", i, (unsigned long long)t->id, f->len);
    mproc__mpi_op_free(f);
  }
  CHECK_ERR(mproc__mpi_batch_next(&in, &at, &f), 0);
  /* Truncated, or a frame claiming more than is there: malformed. */
  in.len = b.used - 8;
  at = 0;
  for (int i = 0; i < 2; i++) {
    CHECK_ERR(mproc__mpi_batch_next(&in, &at, &f), 1);
    mproc__mpi_op_free(f);
  }
  CHECK_ERR(mproc__mpi_batch_next(&in, &at, &f), MPROC_EIO);
  in.len = sizeof h[0] - 1;
  at = 0;
  CHECK_ERR(mproc__mpi_batch_next(&in, &at, &f), MPROC_EIO);
  mproc__mpi_batch_clear(&b);
  CHECK(b.buf == NULL && b.n == 0 && b.used == 0, "cleared");
}

/* Tasks queued for one rank together travel in one batch, and each keeps
 * its own outcome: a result, its own failure, a crash, a timeout, a cancel. */
static void case_batch(void) {
  batch_frames();
  uint64_t sent0, recv0, sent, recv;
  mproc__mpi_batch_counts(&sent0, &recv0);
  struct mproc__mpi_fn sq = ref_of(square_task), fl = ref_of(fail_task), sg = ref_of(segv_task),
                       sl = ref_of(sleep_task);
  struct mproc__mpi_to to = {1, 0};
  struct mproc__mpi_job *j[7];
  int64_t v[7] = {2, 0, 0, 3, 0, 0, 4};
  CHECK_ERR(mproc__mpi_submit_to(to, &sq, &v[0], sizeof v[0], 0, &j[0]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &fl, NULL, 0, 0, &j[1]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &sg, NULL, 0, 0, &j[2]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &sq, &v[3], sizeof v[3], 0, &j[3]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &sl, NULL, 0, 300, &j[4]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &sl, NULL, 0, 0, &j[5]), 0);
  CHECK_ERR(mproc__mpi_submit_to(to, &sq, &v[6], sizeof v[6], 0, &j[6]), 0);
  CHECK(mproc__mpi_job_sent_ms(j[0]) == -1, "submit only queues");
  mproc__mpi_flush();
  mproc__mpi_batch_counts(&sent, &recv);
  CHECK(sent == sent0 + 1, "7 tasks for rank 1 went as %llu batches",
        (unsigned long long)(sent - sent0));
  for (int i = 0; i < 7; i++)
    CHECK(mproc__mpi_job_sent_ms(j[i]) >= 0 && mproc__mpi_job_rank(j[i]) == 1, "task %d sent", i);
  /* j[5] sleeps until cancelled: cancel it once j[4] (before it, on the
   * rank's only local worker) timed out, so it surely runs by then. */
  struct mproc_task_error err;
  for (int i = 0; i < 7; i++) {
    if (i == 5) {
      CHECK_ERR(mproc__mpi_cancel(j[5]), 0);
      CHECK_ERR(outcome(j[5], &err), MPROC_ECANCELED);
      continue;
    }
    const void *data;
    CHECK_ERR(mproc__mpi_wait(j[i], scaled(60000)), 0);
    int rc = mproc__mpi_job_result(j[i], &data, NULL, &err);
    if (v[i]) {
      CHECK(rc == 0 && *(const int64_t *)data == v[i] * v[i], "task %d: %s %s", i,
            mproc_err_name(rc), err.message);
    } else if (i == 1) {
      CHECK(rc == MPROC_ETASK && err.task_code == 42, "task 1: %s %d", mproc_err_name(rc),
            err.task_code);
    } else {
      CHECK_ERR(rc, i == 2 ? MPROC_EWORKERDIED : MPROC_ETIMEDOUT);
      expect_rank_and_host(&err, 1);
    }
  }
  for (int i = 0; i < 7; i++)
    mproc__mpi_job_free(j[i]);
  /* Many tiny tasks at once: the rank answers those that finished together
   * in batches too. */
  enum { MANY = 400 };
  struct mproc__mpi_job *m[MANY];
  for (int i = 0; i < MANY; i++) {
    int64_t x = i;
    CHECK_ERR(mproc__mpi_submit_to(to, &sq, &x, sizeof x, 0, &m[i]), 0);
  }
  mproc__mpi_flush();
  for (int i = 0; i < MANY; i++) {
    const void *data;
    CHECK_ERR(mproc__mpi_wait(m[i], scaled(60000)), 0);
    int rc = mproc__mpi_job_result(m[i], &data, NULL, &err);
    CHECK(rc == 0 && *(const int64_t *)data == (int64_t)i * i, "task %d: %s", i,
          mproc_err_name(rc));
    mproc__mpi_job_free(m[i]);
  }
  mproc__mpi_batch_counts(&sent, &recv);
  CHECK(sent >= sent0 + 1 + MANY / 19 && recv > recv0, "batches: %llu sent, %llu received",
        (unsigned long long)(sent - sent0), (unsigned long long)(recv - recv0));
  ranks_still_serve();
}

static void case_segv(void) { crash_case(segv_task, SIGSEGV, -1); }
static void case_exit(void) { crash_case(exit_task, 0, 3); }

/* ---- units (mpi_unit.c), on one machine ----------------------------------- */

/* Its worker's pid and parent's pid. */
static int pid_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  int64_t p[2] = {getpid(), getppid()};
  return mproc_task_return(ctx, p, sizeof p);
}

/* A result larger than a unit's area can hold. */
static int big_task(const void *arg, size_t len, mproc_task_ctx *ctx) {
  (void)arg, (void)len;
  unsigned char *b = mproc_task_result_buf(ctx, 100000);
  if (!b)
    return 5;
  memset(b, 0xab, 100000);
  return 0;
}

static void unit_wait(mproc_future *f, int want) {
  CHECK_ERR(mproc_future_wait(f, scaled(60000)), 0);
  const void *d;
  CHECK_ERR(mproc_future_result(f, &d, NULL, 0), want);
}

/* Task i of unit k is DONE: its pid (pid_task) or failure code. */
static int64_t unit_pid(int k, uint32_t i, int *code) {
  CHECK(mproc__mpi_unit_state(k, i) == MPROC__MPI_U_DONE, "task %u state %u", i,
        mproc__mpi_unit_state(k, i));
  const void *d;
  size_t len;
  const char *msg;
  int pid;
  *code = mproc__mpi_unit_outcome(k, i, &d, &len, &msg, &pid);
  int64_t p[2] = {0, 0};
  if (*code == 0 && len == sizeof p)
    memcpy(p, d, sizeof p);
  CHECK(*code != 0 || p[0] == pid, "task %u ran in %lld, the unit in %d", i, (long long)p[0], pid);
  return p[0];
}

/* Wait (bounded) until task i of unit k runs. */
static void until_running(int k, uint32_t i) {
  int64_t end = mproc_now_ms() + scaled(60000);
  while (mproc__mpi_unit_state(k, i) != MPROC__MPI_U_RUNNING) {
    CHECK(mproc_now_ms() < end, "task %u never started", i);
    usleep(1000);
  }
}

/* A unit of three argument-less tasks, started: its area's index. */
static int unit_of3(mproc_pool *pool, mproc_task_fn a, mproc_task_fn b, mproc_task_fn c,
                    mproc_future **f) {
  int k = mproc__mpi_unit_new();
  CHECK(k >= 0, "no unit");
  mproc_task_fn fns[3] = {a, b, c};
  for (int i = 0; i < 3; i++)
    CHECK_ERR(mproc__mpi_unit_add(k, fns[i], NULL, 0), 0);
  CHECK_ERR(mproc__mpi_unit_start(k, pool, f), 0);
  return k;
}

/* Unit k ended (*f) before its task `last` ran: the tasks before are
 * answered, the unit runs again, and `last` (a pid_task) then succeeds;
 * returns the worker it ran in (*f: the new run's future). */
static int64_t unit_rerun(mproc_pool *pool, int k, uint32_t last, mproc_future **f) {
  mproc_future_free(*f);
  for (uint32_t i = 0; i < last; i++)
    mproc__mpi_unit_take(k, i);
  CHECK_ERR(mproc__mpi_unit_start(k, pool, f), 0);
  unit_wait(*f, 0);
  int code;
  int64_t pid = unit_pid(k, last, &code);
  CHECK_ERR(code, 0);
  return pid;
}

static void case_units(void) {
  CHECK_ERR(mproc__mpi_units_prepare(), 0);
  mproc_pool *pool;
  CHECK_ERR(mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 2,
                                                               .transport = "shm",
                                                               .start_method = MPROC_START_FORK}),
            0);
  int64_t x = 3;
  int code;
  mproc_future *f;
  /* One unit is one task of the pool: every task of it runs in one worker
   * (of two); a task's own failure is its own; a result too large for the
   * area ends the unit there as the unit's result, the rest runs again. */
  int k = mproc__mpi_unit_new();
  CHECK(k >= 0, "no unit");
  for (int i = 0; i < 3; i++)
    CHECK_ERR(mproc__mpi_unit_add(k, pid_task, NULL, 0), 0);
  CHECK_ERR(mproc__mpi_unit_add(k, fail_task, NULL, 0), 0);
  CHECK_ERR(mproc__mpi_unit_add(k, square_task, &x, sizeof x), 0);
  CHECK_ERR(mproc__mpi_unit_add(k, big_task, NULL, 0), 0);
  CHECK_ERR(mproc__mpi_unit_add(k, pid_task, NULL, 0), 0);
  CHECK_ERR(mproc__mpi_unit_start(k, pool, &f), 0);
  unit_wait(f, 0);
  int64_t p0 = unit_pid(k, 0, &code);
  CHECK(unit_pid(k, 1, &code) == p0 && unit_pid(k, 2, &code) == p0, "one worker per unit");
  const void *d;
  size_t len;
  const char *msg;
  int pid;
  CHECK(mproc__mpi_unit_state(k, 3) == MPROC__MPI_U_DONE, "fail ran");
  CHECK(mproc__mpi_unit_outcome(k, 3, &d, &len, &msg, &pid) == 42 && msg &&
            strcmp(msg, "the task's own failure") == 0 && len == 0,
        "fail_task's outcome");
  CHECK(mproc__mpi_unit_outcome(k, 4, &d, &len, &msg, &pid) == 0 && len == sizeof x &&
            *(const int64_t *)d == 9 && !msg,
        "square_task's outcome");
  CHECK(mproc__mpi_unit_state(k, 5) == MPROC__MPI_U_IN_FUTURE, "big result: %u",
        mproc__mpi_unit_state(k, 5));
  CHECK_ERR(mproc_future_result(f, &d, &len, 0), 0);
  CHECK(len == 100000 && ((const unsigned char *)d)[99999] == 0xab, "big result %zu", len);
  CHECK(mproc__mpi_unit_state(k, 6) == MPROC__MPI_U_PENDING, "after the big one: not run");
  unit_rerun(pool, k, 6, &f);
  mproc_future_free(f);
  mproc__mpi_unit_release(k);
  /* A crash fails the task it was in; the one before keeps its result, the
   * ones after never started and run again on the replacement worker. */
  k = unit_of3(pool, pid_task, segv_task, pid_task, &f);
  unit_wait(f, MPROC_EWORKERDIED);
  p0 = unit_pid(k, 0, &code);
  CHECK(mproc__mpi_unit_state(k, 1) == MPROC__MPI_U_RUNNING, "the crash: %u",
        mproc__mpi_unit_state(k, 1));
  CHECK(mproc__mpi_unit_state(k, 2) == MPROC__MPI_U_PENDING, "after the crash: not run");
  CHECK(unit_rerun(pool, k, 2, &f) != p0, "ran again elsewhere");
  mproc_future_free(f);
  mproc__mpi_unit_release(k);
  /* Cancel: a task not started never runs; a running one asks for its
   * worker to be killed, and the tasks after it never start there. */
  k = unit_of3(pool, sleep_task, pid_task, pid_task, &f);
  until_running(k, 0);
  CHECK(!mproc__mpi_unit_cancel(k, 1), "a pending task is cancelled in place");
  CHECK(mproc__mpi_unit_state(k, 1) == MPROC__MPI_U_CANCELLED, "cancelled");
  CHECK(mproc__mpi_unit_cancel(k, 0), "a running one needs its worker killed");
  CHECK(mproc__mpi_unit_state(k, 0) == MPROC__MPI_U_CANCEL_REQ, "cancel asked");
  CHECK_ERR(mproc_future_cancel(f), 0);
  unit_wait(f, MPROC_ECANCELED);
  CHECK(mproc__mpi_unit_state(k, 2) == MPROC__MPI_U_PENDING, "not run after the cancel");
  unit_rerun(pool, k, 2, &f);
  CHECK(!mproc__mpi_unit_cancel(k, 2), "a finished task is not cancelled");
  CHECK(mproc__mpi_unit_state(k, 2) == MPROC__MPI_U_DONE, "still done");
  mproc_future_free(f);
  mproc__mpi_unit_release(k);
  /* Limits: tasks per unit, arguments per unit, areas. */
  k = mproc__mpi_unit_new();
  int n = 0;
  while (mproc__mpi_unit_add(k, pid_task, NULL, 0) == 0)
    n++;
  CHECK(n == MPROC__MPI_UNIT_MAX, "%d tasks in a unit", n);
  mproc__mpi_unit_release(k);
  k = mproc__mpi_unit_new();
  static unsigned char big[40000];
  CHECK_ERR(mproc__mpi_unit_add(k, pid_task, big, sizeof big), 1);
  mproc__mpi_unit_release(k);
  int ks[64], got = 0;
  while (got < 64 && (ks[got] = mproc__mpi_unit_new()) >= 0)
    got++;
  CHECK(got == 64 && mproc__mpi_unit_new() == -1, "%d areas", got);
  while (got > 0)
    mproc__mpi_unit_release(ks[--got]);
  mproc_pool_free(pool);
  mproc__mpi_units_discard();
  /* In-rank: the same task context, its result on the heap. */
  void *res;
  char m[MPROC__MPI_MSG];
  bool has_msg;
  CHECK_ERR(mproc__mpi_inrank_call(square_task, &x, sizeof x, &res, &len, m, &has_msg), 0);
  CHECK(len == sizeof x && *(int64_t *)res == 9 && !has_msg, "in-rank square");
  free(res);
  CHECK_ERR(mproc__mpi_inrank_call(fail_task, NULL, 0, &res, &len, m, &has_msg), 42);
  CHECK(has_msg && strcmp(m, "the task's own failure") == 0 && !res && !len, "in-rank failure");
  CHECK_ERR(mproc__mpi_inrank_call(square_task, NULL, 0, &res, &len, m, &has_msg), 7);
}

/* Tasks sent together run as units on their rank (mpi_rank.c): each keeps
 * its own outcome; a crash fails the task it was in and the tasks after it
 * run on the replacement worker; a cancel of a running task in a unit
 * fails it alone. */
static void case_units_rank(void) {
  struct mproc__mpi_fn pt = ref_of(pid_task), sg = ref_of(segv_task), sl = ref_of(sleep_task);
  struct mproc__mpi_to to = {1, 0};
  struct mproc__mpi_job *j[8];
  for (int i = 0; i < 5; i++)
    CHECK_ERR(mproc__mpi_submit_to(to, i == 2 ? &sg : &pt, NULL, 0, 0, &j[i]), 0);
  mproc__mpi_flush();
  struct mproc_task_error err;
  int64_t pid[8][2];
  for (int i = 0; i < 5; i++) {
    const void *d;
    size_t len;
    CHECK_ERR(mproc__mpi_wait(j[i], scaled(60000)), 0);
    int rc = mproc__mpi_job_result(j[i], &d, &len, &err);
    if (i == 2) {
      CHECK_ERR(rc, MPROC_EWORKERDIED);
      expect_rank_and_host(&err, 1);
      continue;
    }
    CHECK(rc == 0 && len == sizeof pid[i], "task %d: %s %s", i, mproc_err_name(rc), err.message);
    memcpy(pid[i], d, sizeof pid[i]);
    /* Supervised: in a local worker, whose parent is the rank. */
    CHECK(pid[i][1] != getppid(), "task %d ran in the rank itself", i);
  }
  CHECK(pid[1][0] == pid[0][0], "tasks before the crash: one worker");
  CHECK(pid[3][0] != pid[0][0] && pid[4][0] == pid[3][0], "after it: the replacement");
  for (int i = 0; i < 5; i++)
    mproc__mpi_job_free(j[i]);
  /* A running task of a unit cancelled: it alone fails. */
  for (int i = 0; i < 8; i++)
    CHECK_ERR(mproc__mpi_submit_to(to, i == 1 ? &sl : &pt, NULL, 0, 0, &j[i]), 0);
  mproc__mpi_flush();
  CHECK_ERR(outcome(j[0], &err), 0); /* answered while j[1] runs */
  CHECK_ERR(mproc__mpi_cancel(j[1]), 0);
  CHECK_ERR(outcome(j[1], &err), MPROC_ECANCELED);
  for (int i = 2; i < 8; i++)
    CHECK_ERR(outcome(j[i], &err), 0);
  for (int i = 0; i < 8; i++)
    mproc__mpi_job_free(j[i]);
}

static int square_elem(const void *in, void *out) {
  int64_t v;
  memcpy(&v, in, sizeof v);
  v *= v;
  memcpy(out, &v, sizeof v);
  return 0;
}

static int starmap_square(const void *const *args, void *out) { return square_elem(args[0], out); }

/* MPROC_MPI_INRANK: tasks run in the rank process itself (their parent is
 * the launcher, as rank 0's), with their own outcomes; timeouts are
 * refused. */
static void case_inrank(void) {
  struct mproc__mpi_fn pt = ref_of(pid_task);
  struct mproc__mpi_job *j[6];
  for (int i = 0; i < 6; i++)
    CHECK_ERR(mproc__mpi_submit(&pt, NULL, 0, 0, &j[i]), 0);
  struct mproc_task_error err;
  for (int i = 0; i < 6; i++) {
    const void *d;
    size_t len;
    CHECK_ERR(mproc__mpi_wait(j[i], scaled(60000)), 0);
    CHECK_ERR(mproc__mpi_job_result(j[i], &d, &len, &err), 0);
    int64_t p[2];
    CHECK(len == sizeof p, "len %zu", len);
    memcpy(p, d, sizeof p);
    CHECK(p[1] == getppid(), "task %d: parent %lld, not the launcher %d", i, (long long)p[1],
          (int)getppid());
    mproc__mpi_job_free(j[i]);
  }
  struct mproc__mpi_job *f = submit(fail_task, NULL, 0, 0);
  CHECK_ERR(outcome(f, &err), MPROC_ETASK);
  CHECK(err.task_code == 42 && strcmp(err.message, "the task's own failure") == 0, "%d %s",
        err.task_code, err.message);
  mproc__mpi_job_free(f);
  CHECK_ERR(mproc__mpi_submit(&pt, NULL, 0, 300, &f), MPROC_ENOTSUP);
  /* Through the pool API: apply, map, starmap; a timeout is refused. */
  mproc_pool *pool;
  CHECK_ERR(mproc_pool_new(
                &pool, &(struct mproc_pool_options){.transport = "mpi", .task_timeout_ms = 1000}),
            MPROC_ENOTSUP);
  CHECK_ERR(mproc_pool_new(&pool, &(struct mproc_pool_options){.transport = "mpi"}), 0);
  int64_t x = 7, *r;
  size_t len;
  CHECK_ERR(mproc_pool_apply(pool, square_task, &x, sizeof x, (void **)&r, &len, NULL, -1), 0);
  CHECK(*r == 49, "apply");
  free(r);
  enum { N = 100000 }; /* 800 KB a column: chunks arrive in blocks */
  static int64_t in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  CHECK_ERR(mproc_pool_map(pool, square_elem, in, N, sizeof *in, out, sizeof *out, NULL, NULL,
                           scaled(60000)),
            0);
  for (int i = 0; i < N; i++)
    CHECK(out[i] == (int64_t)i * i, "map %d", i);
  const void *cols[1] = {in};
  size_t sizes[1] = {sizeof *in};
  memset(out, 0, sizeof out);
  CHECK_ERR(mproc_pool_starmap(pool, starmap_square, 1, cols, sizes, N, out, sizeof *out, NULL,
                               NULL, scaled(60000)),
            0);
  for (int i = 0; i < N; i++)
    CHECK(out[i] == (int64_t)i * i, "starmap %d", i);
  mproc_future *fu;
  CHECK_ERR(mproc_pool_submit_ex(pool, square_task, &x, sizeof x,
                                 &(struct mproc_submit_options){.timeout_ms = 500, .retries = -1},
                                 &fu),
            0);
  const void *d;
  CHECK_ERR(mproc_future_result(fu, &d, NULL, scaled(60000)), MPROC_ENOTSUP);
  mproc_future_free(fu);
  mproc_pool_free(pool);
}

/* MPROC_MPI_INRANK: a task that crashes takes its rank down, and the whole
 * job ends (run-case.sh checks it ends non-zero in bounded time).  Nothing
 * after the wait may run. */
static void case_inrank_segv(void) {
  struct mproc__mpi_job *j = submit(segv_task, NULL, 0, 0);
  struct mproc_task_error err;
  int rc = outcome(j, &err);
  printf("UNEXPECTED: the job went on (%s)\n", mproc_err_name(rc));
  exit(1);
}

int main(int argc, char **argv) {
  const char *c = argc > 1 ? argv[1] : "";
  if (strcmp(c, "errors") == 0 || strcmp(c, "backoff") == 0 || strcmp(c, "units") == 0) {
    if (strcmp(c, "errors") == 0)
      case_errors();
    else if (strcmp(c, "units") == 0)
      case_units();
    else
      case_backoff();
    printf("PASS %s\n", c);
    return 0;
  }
  if (mproc_function_register("square", MPROC_FUNCTION(square_task)) != 0)
    return 1;
  int env_rank = -1;
  mproc__mpi_launched(&env_rank);
  if (env_rank <= 0 && mproc_function_register("rank0-only", MPROC_FUNCTION(only_on_rank0)) != 0)
    return 1;
  if (strcmp(c, "large") == 0)
    mproc__mpi_piece = 4096; /* on every rank: sender and receiver agree */
  /* The transport case counts on two tasks in flight per rank. */
  struct mproc_mpi_options mo = {.tasks_per_rank = strcmp(c, "transport") == 0 ? 2 : 0};
  if (strncmp(c, "inrank", 6) == 0)
    mo.flags = MPROC_MPI_INRANK;
  int rc = mproc_mpi_init(&argc, &argv, &mo);
  /* Worker ranks never get here. */
  if (strcmp(c, "mismatch") == 0) {
    CHECK_ERR(rc, MPROC_EBROKEN);
    CHECK(mproc_mpi_worker_ranks() == 0, "no ranks after a failed init");
    printf("PASS %s\n", c);
    return 0;
  }
  CHECK_ERR(rc, 0);
  static const struct mpi_case cases[] = {
      {"basic", case_basic},
      {"large", case_large},
      {"huge", case_huge},
      {"timeout", case_timeout},
      {"stopped", case_stopped},
      {"unresolvable", case_unresolvable},
      {"killrank", case_killrank},
      {"badtag", case_badtag},
      {"sigint", case_sigint},
      {"fallback", case_fallback},
      {"transport", case_transport},
      {"segv", case_segv},
      {"exit", case_exit},
      {"batch", case_batch},
      {"units-rank", case_units_rank},
      {"inrank", case_inrank},
      {"inrank-segv", case_inrank_segv},
  };
  return run_case(cases, sizeof cases / sizeof cases[0], c);
}
