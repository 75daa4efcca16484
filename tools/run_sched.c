/* mproc run: the scheduler.
 *
 * Design notes.  One thread, one poll loop; no thread per job, no SIGCHLD:
 *
 *   +--> start jobs while a slot is free (and --delay, -k's window and
 *   |    --halt allow): next input -> template -> mproc_command_start
 *   |    (own process group, stdout/stderr into memfds or pipes)
 *   |
 *   |    poll: signalfd (SIGINT/SIGTERM/SIGHUP), every job's pidfd, its
 *   |    pipes with --line-buffer; timeout = the earliest job deadline,
 *   |    --delay, or the progress redraw
 *   |
 *   +--- each job readable or due: mproc_command_wait(c, 0) (it sends the
 *        --timeout signals itself); reaped -> retry, or log + output + halt
 *
 * Jobs live in their own process groups so that a terminal's Ctrl-C reaches
 * the runner only; the runner then stops starting jobs, sends SIGTERM to
 * every job's whole tree, gives them a second, SIGKILLs what is left and
 * exits 130 with nothing left behind.  SIGINT/SIGTERM/SIGHUP are blocked and
 * read from a signalfd, so they are handled in the loop, never in a handler
 * racing with it; jobs start with an empty mask (posix_spawn attributes).
 *
 * Memory stays bounded whatever the input size: jobs are read from the input
 * only when a slot is free, and with -k a finished job waits in a ring of
 * `window` entries; no job more than `window` past the oldest unprinted one
 * is started. */
#include "run_sched.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

void run_stop_all(struct sched *s, int64_t grace_ms) {
  for (size_t i = 0; i < s->nrun; i++)
    mproc_command_signal(s->run[i]->c, SIGTERM, MPROC_SIGNAL_TREE);
  int64_t until = mproc_deadline_after(grace_ms);
  while (s->nrun > 0) {
    struct pollfd p[s->nrun + 1];
    for (size_t i = 0; i < s->nrun; i++)
      p[i] = (struct pollfd){.fd = mproc_command_sentinel(s->run[i]->c), .events = POLLIN};
    p[s->nrun] = (struct pollfd){.fd = s->sigfd, .events = POLLIN};
    int64_t left = mproc_timeout_until(until);
    if (left == 0 || poll(p, s->nrun + 1, (int)left) == 0)
      break;
    if (p[s->nrun].revents & POLLIN)
      break; /* a second Ctrl-C: no more waiting */
    for (size_t i = s->nrun; i-- > 0;)
      if (p[i].revents && mproc_command_wait(s->run[i]->c, 0) == 0) {
        struct job *j = s->run[i];
        run_job_remove(s, i);
        run_job_free(j);
      }
  }
  while (s->nrun > 0) {
    struct job *j = s->run[s->nrun - 1];
    run_job_remove(s, s->nrun - 1);
    run_job_free(j); /* SIGKILLs the tree and reaps */
  }
}

static struct job *next_job(struct sched *s) {
  if (s->nretry > 0) {
    struct job *j = s->retry[s->retry_head];
    s->retry_head = (s->retry_head + 1) % s->window;
    s->nretry--;
    return j;
  }
  while (!s->input_done) {
    if (s->o->keep_order && s->next_seq - s->next_print >= s->window)
      return NULL; /* the reorder window is full: wait for the oldest */
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL) {
      run_fatal(s, "reading input", -ENOMEM);
      return NULL;
    }
    j->out = j->err = j->held[0] = j->held[1] = -1;
    int r = run_input_next(s->in, &j->args);
    if (r <= 0) {
      run_job_free(j);
      s->input_done = true;
      if (r < 0)
        s->fatal = true;
      return NULL;
    }
    j->seq = s->next_seq++;
    if (run_doneset_has(&s->done, j->seq)) {
      run_job_free(j);
      if (s->o->keep_order)
        s->ring[(s->next_seq - 1) % s->window] = &run_skipped;
      continue;
    }
    return j;
  }
  return NULL;
}

static void dry_run(struct sched *s, struct job *j) {
  j->slot = 1;
  if (run_template_expand(s->t, &j->args, j->seq, j->slot, s->want | RUN_WANT_LINE, &j->cmd) < 0) {
    run_fatal(s, "expanding the command", -ENOMEM);
  } else {
    struct run_str line = {0};
    if (j->cmd.tag != NULL)
      run_str_add(&line, j->cmd.tag, strlen(j->cmd.tag));
    run_str_add(&line, j->cmd.line, strlen(j->cmd.line));
    run_str_add(&line, "\n", 1);
    if (line.p != NULL)
      run_emit(s, run_write_all(STDOUT_FILENO, line.p, line.len));
    free(line.p);
  }
  if (s->o->keep_order)
    s->ring[j->seq % s->window] = &run_skipped;
  run_job_free(j);
  if (s->o->keep_order)
    run_flush_ring(s, false);
}

/* Failures of a start that a finishing job will cure. */
static bool transient(int r) {
  return r == -EAGAIN || r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == MPROC_ENOMEM;
}

static void start_jobs(struct sched *s) {
  while (!s->stop_starting && s->nrun < (size_t)s->o->jobs && !s->full_until_finish) {
    if (s->o->delay_s > 0 && s->next_start_ms > mproc_now_ms())
      return;
    struct job *j = next_job(s);
    if (j == NULL)
      return;
    if (s->o->dry_run) {
      dry_run(s, j);
      continue;
    }
    int r = run_job_start(s, j);
    if (r > 0) {
      run_finish_unstarted(s, j, r);
    } else if (r < 0 && s->nrun > 0 && transient(r)) {
      /* Out of processes or descriptors while others run (-j 0 finds the
       * limit this way): put the job back first in line and wait for a
       * slot to finish. */
      j->tries--;
      run_cmd_free(&j->cmd);
      s->retry_head = (s->retry_head + s->window - 1) % s->window;
      s->retry[s->retry_head] = j;
      s->nretry++;
      s->full_until_finish = true;
      return;
    } else if (r < 0) {
      run_fatal(s, "starting a job", r);
      run_job_free(j);
      return;
    }
    if (s->o->delay_s > 0)
      s->next_start_ms = mproc_now_ms() + (int64_t)(s->o->delay_s * 1000.0);
  }
}

/* ---- the loop ---------------------------------------------------------------------- */

static void on_signal(struct sched *s) {
  struct signalfd_siginfo si;
  while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
    s->interrupted = true;
    s->stop_signal = (int)si.ssi_signo;
  }
  s->stop_starting = true;
  run_stop_all(s, STOP_GRACE_MS);
}

static void loop(struct sched *s) {
  size_t cap = (size_t)s->o->jobs * 3 + 1;
  struct pollfd *p = malloc(cap * sizeof *p);
  struct job **who = malloc(cap * sizeof *who);
  if (p == NULL || who == NULL) {
    run_fatal(s, "polling", -ENOMEM);
    free(p);
    free(who);
    return;
  }
  for (;;) {
    start_jobs(s);
    bool more = !s->stop_starting && (!s->input_done || s->nretry > 0);
    if (s->nrun == 0 && !more)
      break;
    size_t n = 0;
    p[n] = (struct pollfd){.fd = s->sigfd, .events = POLLIN};
    who[n++] = NULL;
    int64_t due = -1;
    for (size_t i = 0; i < s->nrun; i++) {
      struct job *j = s->run[i];
      p[n] = (struct pollfd){.fd = mproc_command_sentinel(j->c), .events = POLLIN};
      who[n++] = j;
      if (j->out >= 0 && s->o->line_buffer) {
        p[n] = (struct pollfd){.fd = j->out, .events = POLLIN};
        who[n++] = j;
      }
      if (j->err >= 0 && s->o->line_buffer) {
        p[n] = (struct pollfd){.fd = j->err, .events = POLLIN};
        who[n++] = j;
      }
      int64_t d = mproc_command_due_ms(j->c);
      if (d >= 0 && (due < 0 || d < due))
        due = d;
    }
    if (more && s->o->delay_s > 0 && s->nrun < (size_t)s->o->jobs &&
        (due < 0 || s->next_start_ms < due))
      due = s->next_start_ms;
    if (s->prog.bar != NULL && (due < 0 || mproc_now_ms() + 100 < due))
      due = mproc_now_ms() + 100;
    int64_t left = due < 0 ? -1 : mproc_timeout_until(due);
    int k = poll(p, n, left > 100000 ? 100000 : (int)left);
    if (k < 0 && errno != EINTR) {
      run_fatal(s, "poll", -errno);
      run_stop_all(s, 0);
      break;
    }
    if (p[0].revents & POLLIN) {
      on_signal(s);
      continue;
    }
    /* Pipes first, so a job's last lines are read before it is finished. */
    for (size_t q = 1; q < n; q++) {
      if (!p[q].revents || p[q].fd == mproc_command_sentinel(who[q]->c))
        continue;
      run_job_drain(s, who[q], p[q].fd == who[q]->out ? 1 : 2, false);
    }
    int64_t now = mproc_now_ms();
    for (size_t i = s->nrun; i-- > 0;) {
      if (i >= s->nrun)
        continue; /* --halt now stopped them all meanwhile */
      struct job *j = s->run[i];
      int64_t d = mproc_command_due_ms(j->c);
      bool look = d >= 0 && d <= now;
      for (size_t q = 1; q < n && !look; q++)
        look = who[q] == j && p[q].revents && p[q].fd == mproc_command_sentinel(j->c);
      if (look && mproc_command_wait(j->c, 0) == 0)
        run_finish(s, i);
    }
    run_progress_draw(&s->prog, s->completed, run_input_total(s->in), false);
  }
  free(p);
  free(who);
}

static int setup(struct sched *s, struct run_opts *o) {
  *s = (struct sched){.o = o, .devnull = -1, .sigfd = -1, .next_seq = 1, .next_print = 1};
  /* Each job holds a pidfd and two outputs, and -k's window two more per
   * finished job: use the whole descriptor allowance. */
  run_fd_allowance();
  size_t w = 64;
  while (w < (size_t)o->jobs * 8)
    w *= 2;
  s->window = w;
  s->run = calloc((size_t)o->jobs, sizeof *s->run);
  s->slot_used = calloc((size_t)o->jobs + 1, sizeof *s->slot_used);
  s->retry = calloc(w + (size_t)o->jobs, sizeof *s->retry);
  s->window = w;
  s->ring = o->keep_order ? calloc(w, sizeof *s->ring) : NULL;
  if (!s->run || !s->slot_used || !s->retry || (o->keep_order && !s->ring)) {
    fprintf(stderr, "mproc run: out of memory\n");
    return -1;
  }
  if (run_template_new(&s->t, o) < 0 || run_input_open(&s->in, o) < 0)
    return -1;
  if (o->joblog != NULL && !o->dry_run) {
    s->joblog =
        run_joblog_open(o->joblog, o->resume || o->resume_failed, o->resume_failed, &s->done);
    if (s->joblog == NULL)
      return -1;
  }
  s->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, NULL);
  s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  /* A reader that leaves shows up as EPIPE from write, not as a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (s->devnull < 0 || s->sigfd < 0) {
    fprintf(stderr, "mproc run: setup: %s\n", strerror(errno));
    return -1;
  }
  s->want = (o->tag ? RUN_WANT_TAG : 0u) |
            (o->joblog != NULL || o->timeout_s > 0 || o->dry_run ? RUN_WANT_LINE : 0u);
  run_progress_begin(&s->prog, o);
  return 0;
}

static void teardown(struct sched *s) {
  run_stop_all(s, 0);
  for (size_t i = 0; i < s->nretry; i++)
    run_job_free(s->retry[(s->retry_head + i) % s->window]);
  if (s->ring != NULL)
    for (size_t i = 0; i < s->window; i++)
      run_job_free(s->ring[i]);
  free(s->ring);
  free(s->retry);
  free(s->run);
  free(s->slot_used);
  run_progress_end(&s->prog);
  free(s->exe_name);
  free(s->exe_path);
  run_template_free(s->t);
  run_input_close(s->in);
  if (s->joblog != NULL)
    fclose(s->joblog);
  run_doneset_free(&s->done);
  if (s->devnull >= 0)
    close(s->devnull);
  if (s->sigfd >= 0)
    close(s->sigfd);
}

int run_main(struct run_opts *o) {
  struct sched s;
  int status;
  if (setup(&s, o) < 0) {
    status = RUN_EXIT_ERROR;
  } else {
    loop(&s);
    if (s.ring != NULL && !s.interrupted)
      run_flush_ring(&s, true);
    run_progress_draw(&s.prog, s.completed, run_input_total(s.in), true);
    if (s.interrupted)
      status = s.stop_signal == SIGINT ? RUN_EXIT_INTERRUPTED : 128 + s.stop_signal;
    else if (s.fatal)
      status = RUN_EXIT_ERROR;
    else if (o->halt.when != HALT_NEVER && s.halt_set)
      status = s.halt_status;
    else if (o->halt.when != HALT_NEVER && o->halt.pct)
      status = (int)ceil((double)s.failed * 100.0 / (double)(s.started ? s.started : 1));
    else
      status = (int)(s.failed > 101 ? 101 : s.failed);
  }
  teardown(&s);
  return status;
}
