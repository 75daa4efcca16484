/* mproc run: a finished job.
 *
 * Design notes.  When a job is reaped:
 *
 *   failed and attempts left (--retries)? -> back to the retry queue, its
 *        output dropped (only the last attempt's is shown and logged)
 *   else: joblog line -> output (now, or with -k when its turn comes)
 *        -> counters -> --halt check (GNU parallel's should_we_halt)
 *
 * Exit statuses follow GNU parallel: with --halt, fail=1 gives the failing
 * job's status (128 + signal when killed), fail=N the number of failed
 * jobs (at most 101), fail=N% the percentage of failed jobs, success=N 0.
 * The percentage is of all the jobs the input holds, known at once for :::
 * lists; for a stream not read to its end yet, of the jobs started so far. */
#include "run_sched.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void run_fatal(struct sched *s, const char *what, int err) {
  fprintf(stderr, "mproc run: %s: %s\n", what, mproc_strerror(err));
  s->fatal = true;
  s->stop_starting = true;
}

/* ---- output ------------------------------------------------------------------ */

void run_emit(struct sched *s, int r) {
  if (r == -EPIPE) {
    /* Our reader left (e.g. `| head`): nothing more can be delivered. */
    s->stop_starting = true;
    s->fatal = true;
  } else if (r < 0 && !s->fatal) {
    run_fatal(s, "writing output", r);
  }
}

/* Prints a finished job's grouped output. */
static void print_job(struct sched *s, struct job *j) {
  if (j == &run_skipped || s->o->ungroup)
    return;
  if (s->o->line_buffer) {
    run_emit(s, run_job_release_held_output(j)); /* -k: lines held while older jobs ran */
    return;
  }
  if (j->out >= 0)
    run_emit(s, run_copy_file(STDOUT_FILENO, j->out, j->cmd.tag));
  if (j->err >= 0)
    run_emit(s, run_copy_file(STDERR_FILENO, j->err, j->cmd.tag));
}

/* -k: prints every finished job from next_print on, in order. */
void run_flush_ring(struct sched *s, bool all) {
  while (s->next_print < s->next_seq) {
    struct job **e = &s->ring[s->next_print % s->window];
    if (*e == NULL) {
      if (!all)
        break;
    } else {
      print_job(s, *e);
      run_job_free(*e);
      *e = NULL;
    }
    s->next_print++;
  }
  /* --line-buffer: the running job that is now the oldest not printed shows
   * what it held and writes its further lines as they come. */
  if (s->o->line_buffer)
    for (size_t i = 0; i < s->nrun; i++)
      if (s->run[i]->seq == s->next_print)
        run_emit(s, run_job_release_held_output(s->run[i]));
}

static void deliver(struct sched *s, struct job *j) {
  if (!s->o->keep_order) {
    print_job(s, j);
    run_job_free(j);
    return;
  }
  s->ring[j->seq % s->window] = j;
  run_flush_ring(s, false);
}

/* ---- halting (GNU parallel's should_we_halt) --------------------------------- */

static uint64_t total_jobs(const struct sched *s) {
  uint64_t t = run_input_total(s->in);
  return t ? t : s->started;
}

static void halt_check(struct sched *s, const struct job *j) {
  const struct run_halt *h = &s->o->halt;
  bool bad = j->exitval != 0 || j->sig != 0;
  if (h->when == HALT_NEVER)
    return;
  uint64_t limit;
  if (h->on == HALT_DONE)
    limit = s->completed;
  else if (h->on == HALT_FAIL && bad)
    limit = s->failed;
  else if (h->on == HALT_SUCCESS && !bad)
    limit = s->completed - s->failed;
  else
    return;
  double count = h->pct ? (double)total_jobs(s) * h->pct / 100.0 : (double)h->count;
  if ((double)limit < count)
    return;
  if (!s->halt_set) {
    s->halt_set = true;
    if (h->on == HALT_SUCCESS) {
      s->halt_status = 0;
    } else if (h->pct) {
      s->halt_status = (int)ceil((double)s->failed * 100.0 / (double)total_jobs(s));
    } else {
      s->halt_status = (int)(s->failed > 101 ? 101 : s->failed);
    }
    if (h->on != HALT_SUCCESS && count == 1)
      s->halt_status = j->exitval ? j->exitval : j->sig ? j->sig + 128 : 0;
  }
  if (s->nrun > 0 && h->when == HALT_SOON)
    fprintf(stderr, "mproc run: starting no more jobs; waiting for %zu to finish\n", s->nrun);
  s->stop_starting = true;
  if (h->when == HALT_NOW)
    run_stop_all(s, STOP_GRACE_MS);
}

void run_finish(struct sched *s, size_t i) {
  struct job *j = s->run[i];
  s->full_until_finish = false;
  int code = 0;
  mproc_command_exitcode(j->c, &code);
  bool timed_out = mproc_command_timed_out(j->c) == 1;
  double runtime = (double)(mproc_now_ms() - j->start_ms) / 1000.0;
  if (s->o->line_buffer) {
    if (j->out >= 0)
      run_job_drain(s, j, 1, true);
    if (j->err >= 0)
      run_job_drain(s, j, 2, true);
  }
  j->exitval = code >= 0 ? code : 0;
  j->sig = code < 0 ? -code : 0;
  if (timed_out) {
    j->exitval = -1;
    fprintf(stderr, "mproc run: warning: this job was killed because it timed out:\n%s\n",
            j->cmd.line);
  }
  struct stat st;
  if (j->own_fds && fstat(j->out, &st) == 0)
    j->received = (uint64_t)st.st_size;
  mproc_command_free(j->c);
  j->c = NULL;
  run_job_remove(s, i);
  bool bad = j->exitval != 0 || j->sig != 0;
  if (bad && j->tries < s->o->retries && !s->stop_starting) {
    /* Run it again later; only the last attempt's output is shown. */
    run_job_close_outputs(j);
    run_cmd_free(&j->cmd);
    s->retry[(s->retry_head + s->nretry++) % s->window] = j;
    return;
  }
  if (s->joblog != NULL)
    run_joblog_line(s->joblog, j->seq, j->start_wall, runtime, j->received, j->exitval, j->sig,
                    j->cmd.line);
  s->completed++;
  if (bad)
    s->failed++;
  struct job copy = *j;
  deliver(s, j);
  halt_check(s, &copy);
}

/* Stops every running job: SIGTERM to each whole tree, up to grace_ms for
 * them to exit, then SIGKILL (mproc_command_free).  They are not logged. */

void run_finish_unstarted(struct sched *s, struct job *j, int status) {
  run_job_close_outputs(j);
  j->exitval = status;
  s->started++;
  if (s->joblog != NULL)
    run_joblog_line(s->joblog, j->seq, j->start_wall, 0.0, 0, status, 0, j->cmd.line);
  s->completed++;
  s->failed++;
  struct job copy = *j;
  deliver(s, j);
  halt_check(s, &copy);
}

/* The next job to run: a retry first, then the input.  NULL when there is
 * none for now. */
