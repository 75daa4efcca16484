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
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long jobs get to exit after SIGTERM when the run is interrupted or
 * halted, before SIGKILL. */
#define STOP_GRACE_MS 1000

struct job {
  uint64_t seq;            /* 1-based job number ({#}) */
  int slot;                /* 1-based slot ({%}) */
  struct run_args args;    /* kept for a retry */
  struct run_cmd cmd;      /* the expanded command */
  mproc_command *c;        /* while running */
  int out, err;            /* memfds (grouped) or our pipe ends (--line-buffer), -1 */
  bool own_fds;            /* out/err are the job's memfds (else borrowed from c) */
  struct run_lines lo, le; /* --line-buffer partial lines */
  double start_wall;       /* epoch seconds at start, for the joblog */
  int64_t start_ms;        /* monotonic start */
  unsigned tries;          /* attempts so far */
  uint64_t received;       /* stdout bytes */
  int exitval, sig;        /* result */
};

struct sched {
  struct run_opts *o;
  struct run_template *t;
  struct run_input *in;
  FILE *joblog;
  struct run_doneset done;
  int devnull, sigfd;
  struct job **run; /* running jobs */
  size_t nrun;
  bool *slot_used;    /* [1..jobs] */
  struct job **retry; /* FIFO of jobs to run again */
  size_t nretry, retry_head;
  struct job **ring; /* -k: finished jobs by seq % window */
  size_t window;
  uint64_t next_print; /* -k: next seq to print */
  uint64_t next_seq;   /* next seq to read */
  bool input_done, stop_starting, interrupted, fatal;
  int stop_signal;
  bool halt_set;
  int halt_status;
  uint64_t failed, completed, started;
  int64_t next_start_ms; /* --delay */
  struct run_progress prog;
};

/* A -k placeholder for a job --resume skipped: printed as nothing. */
static struct job skipped;

static void job_free(struct job *j) {
  if (j == NULL || j == &skipped)
    return;
  mproc_command_free(j->c);
  if (j->own_fds) {
    if (j->out >= 0)
      close(j->out);
    if (j->err >= 0)
      close(j->err);
  }
  run_args_free(&j->args);
  run_cmd_free(&j->cmd);
  run_lines_free(&j->lo);
  run_lines_free(&j->le);
  free(j);
}

static void close_outputs(struct job *j) {
  if (j->own_fds) {
    if (j->out >= 0)
      close(j->out);
    if (j->err >= 0)
      close(j->err);
  }
  j->out = j->err = -1;
  j->own_fds = false;
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fatal(struct sched *s, const char *what, int err) {
  fprintf(stderr, "mproc run: %s: %s\n", what, mproc_strerror(err));
  s->fatal = true;
  s->stop_starting = true;
}

/* ---- output -------------------------------------------------------------------- */

static void emit(struct sched *s, int r) {
  if (r == -EPIPE) {
    /* Our reader left (e.g. `| head`): nothing more can be delivered. */
    s->stop_starting = true;
    s->fatal = true;
  } else if (r < 0 && !s->fatal) {
    fatal(s, "writing output", r);
  }
}

/* Prints a finished job's grouped output. */
static void print_job(struct sched *s, struct job *j) {
  if (j == &skipped || s->o->ungroup || s->o->line_buffer)
    return;
  if (j->out >= 0)
    emit(s, run_copy_file(STDOUT_FILENO, j->out, j->cmd.tag));
  if (j->err >= 0)
    emit(s, run_copy_file(STDERR_FILENO, j->err, j->cmd.tag));
}

/* -k: prints every finished job from next_print on, in order. */
static void flush_ring(struct sched *s, bool all) {
  while (s->next_print < s->next_seq) {
    struct job **e = &s->ring[s->next_print % s->window];
    if (*e == NULL) {
      if (!all)
        return;
    } else {
      print_job(s, *e);
      job_free(*e);
      *e = NULL;
    }
    s->next_print++;
  }
}

static void deliver(struct sched *s, struct job *j) {
  if (!s->o->keep_order) {
    print_job(s, j);
    job_free(j);
    return;
  }
  s->ring[j->seq % s->window] = j;
  flush_ring(s, false);
}

/* ---- halting (GNU parallel's should_we_halt) ----------------------------------------------- */

static uint64_t total_jobs(const struct sched *s) {
  uint64_t t = run_input_total(s->in);
  return t ? t : s->started;
}

static void stop_all(struct sched *s, int64_t grace_ms);

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
    stop_all(s, STOP_GRACE_MS);
}

/* ---- finishing a job ------------------------------------------------------------------------- */

static void remove_running(struct sched *s, size_t i) {
  s->slot_used[s->run[i]->slot] = false;
  s->run[i] = s->run[--s->nrun];
}

/* --line-buffer: reads what a job's pipe holds and prints its whole lines.
 * Returns 1 at end of file (the pipe is closed then), 0 otherwise. */
static int drain(struct sched *s, struct job *j, int which, bool final) {
  int fd = which == 1 ? j->out : j->err;
  struct run_lines *l = which == 1 ? &j->lo : &j->le;
  int dst = which == 1 ? STDOUT_FILENO : STDERR_FILENO;
  char buf[65536];
  for (;;) {
    ssize_t k = read(fd, buf, sizeof buf);
    if (k < 0 && errno == EINTR)
      continue;
    if (k > 0) {
      if (which == 1)
        j->received += (uint64_t)k;
      emit(s, run_lines_feed(l, dst, j->cmd.tag, buf, (size_t)k, false));
      if (!final)
        return 0; /* one read per wakeup keeps the other jobs served */
      continue;
    }
    bool eof = k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    if (eof || final) {
      emit(s, run_lines_feed(l, dst, j->cmd.tag, NULL, 0, true));
      mproc_command_close_fd(j->c, which);
      if (which == 1)
        j->out = -1;
      else
        j->err = -1;
      return 1;
    }
    return 0;
  }
}

static void finish(struct sched *s, size_t i) {
  struct job *j = s->run[i];
  int code = 0;
  mproc_command_exitcode(j->c, &code);
  bool timed_out = mproc_command_timed_out(j->c) == 1;
  double runtime = (double)(mproc_now_ms() - j->start_ms) / 1000.0;
  if (s->o->line_buffer) {
    if (j->out >= 0)
      drain(s, j, 1, true);
    if (j->err >= 0)
      drain(s, j, 2, true);
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
  remove_running(s, i);
  bool bad = j->exitval != 0 || j->sig != 0;
  if (bad && j->tries < s->o->retries && !s->stop_starting) {
    /* Run it again later; only the last attempt's output is shown. */
    close_outputs(j);
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
static void stop_all(struct sched *s, int64_t grace_ms) {
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
        job_free(s->run[i]);
        remove_running(s, i);
      }
  }
  while (s->nrun > 0) {
    job_free(s->run[s->nrun - 1]); /* SIGKILLs the tree and reaps */
    remove_running(s, s->nrun - 1);
  }
}

/* ---- starting a job ----------------------------------------------------------------------------
 */

static int free_slot(struct sched *s) {
  for (int k = 1; k <= s->o->jobs; k++)
    if (!s->slot_used[k])
      return k;
  return 1;
}

/* The child's stdout/stderr: memfds for grouped output. */
static int open_outputs(struct job *j) {
  j->out = memfd_create("mproc-run-out", MFD_CLOEXEC);
  j->err = j->out >= 0 ? memfd_create("mproc-run-err", MFD_CLOEXEC) : -1;
  if (j->err < 0) {
    int e = -errno;
    if (j->out >= 0)
      close(j->out);
    j->out = -1;
    return e;
  }
  j->own_fds = true;
  return 0;
}

/* Starts j in a free slot.  Returns 0, or a negative code for an error that
 * should stop the run. */
static int start(struct sched *s, struct job *j) {
  j->slot = free_slot(s);
  j->tries++;
  int r = run_template_expand(s->t, &j->args, j->seq, j->slot, s->o->tag, &j->cmd);
  if (r < 0)
    return r;
  mproc_command_options co = {
      .flags = MPROC_COMMAND_NEWPGRP,
      .stdin_fd = s->devnull,
      .timeout_ms = s->o->timeout_s > 0 ? (int64_t)ceil(s->o->timeout_s * 1000.0) : 0,
      .grace_ms = 200,
  };
  bool grouped = !s->o->ungroup && !s->o->line_buffer;
  j->out = j->err = -1;
  if (grouped) {
    r = open_outputs(j);
    if (r < 0)
      return r;
    co.stdout_fd = j->out;
    co.stderr_fd = j->err;
  } else if (s->o->line_buffer) {
    co.stdout_fd = co.stderr_fd = MPROC_COMMAND_PIPE;
  }
  char *shell[] = {j->cmd.line, NULL};
  if (j->cmd.argv == NULL)
    co.flags |= MPROC_COMMAND_SHELL;
  j->start_wall = wall_now();
  j->start_ms = mproc_now_ms();
  /* The command dups the memfds into the child; ours stay the job's. */
  r = mproc_command_start(&j->c, j->cmd.argv ? j->cmd.argv : shell, &co);
  if (j->cmd.argv != NULL && (r == -ENOENT || r == -EACCES || r == -ENOEXEC || r == -ENOTDIR)) {
    /* What /bin/sh would say and do for a program it cannot run. */
    fprintf(stderr, "mproc run: %s: %s\n", j->cmd.argv[0],
            r == -ENOENT ? "command not found" : mproc_strerror(r));
    j->c = NULL;
    return 127 + (r != -ENOENT);
  }
  if (r < 0) {
    close_outputs(j);
    return r;
  }
  if (s->o->line_buffer) {
    j->out = mproc_command_fd(j->c, 1);
    j->err = mproc_command_fd(j->c, 2);
    fcntl(j->out, F_SETFL, O_NONBLOCK);
    fcntl(j->err, F_SETFL, O_NONBLOCK);
  }
  s->slot_used[j->slot] = true;
  s->run[s->nrun++] = j;
  s->started++;
  return 0;
}

/* A job whose program could not be exec'd: finished at once with the
 * shell's status (127 not found, 126 not executable). */
static void finish_unstarted(struct sched *s, struct job *j, int status) {
  close_outputs(j);
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
      fatal(s, "reading input", -ENOMEM);
      return NULL;
    }
    j->out = j->err = -1;
    int r = run_input_next(s->in, &j->args);
    if (r <= 0) {
      job_free(j);
      s->input_done = true;
      if (r < 0)
        s->fatal = true;
      return NULL;
    }
    j->seq = s->next_seq++;
    if (run_doneset_has(&s->done, j->seq)) {
      job_free(j);
      if (s->o->keep_order)
        s->ring[(s->next_seq - 1) % s->window] = &skipped;
      continue;
    }
    return j;
  }
  return NULL;
}

static void dry_run(struct sched *s, struct job *j) {
  j->slot = 1;
  if (run_template_expand(s->t, &j->args, j->seq, j->slot, s->o->tag, &j->cmd) < 0) {
    fatal(s, "expanding the command", -ENOMEM);
  } else {
    struct run_str line = {0};
    if (j->cmd.tag != NULL)
      run_str_add(&line, j->cmd.tag, strlen(j->cmd.tag));
    run_str_add(&line, j->cmd.line, strlen(j->cmd.line));
    run_str_add(&line, "\n", 1);
    if (line.p != NULL)
      emit(s, run_write_all(STDOUT_FILENO, line.p, line.len));
    free(line.p);
  }
  if (s->o->keep_order)
    s->ring[j->seq % s->window] = &skipped;
  job_free(j);
  if (s->o->keep_order)
    flush_ring(s, false);
}

static void start_jobs(struct sched *s) {
  while (!s->stop_starting && s->nrun < (size_t)s->o->jobs) {
    if (s->o->delay_s > 0 && s->next_start_ms > mproc_now_ms())
      return;
    struct job *j = next_job(s);
    if (j == NULL)
      return;
    if (s->o->dry_run) {
      dry_run(s, j);
      continue;
    }
    int r = start(s, j);
    if (r > 0) {
      finish_unstarted(s, j, r);
    } else if (r < 0) {
      fatal(s, "starting a job", r);
      job_free(j);
      return;
    }
    if (s->o->delay_s > 0)
      s->next_start_ms = mproc_now_ms() + (int64_t)(s->o->delay_s * 1000.0);
  }
}

/* ---- the loop
 * ------------------------------------------------------------------------------------- */

static void on_signal(struct sched *s) {
  struct signalfd_siginfo si;
  while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
    s->interrupted = true;
    s->stop_signal = (int)si.ssi_signo;
  }
  s->stop_starting = true;
  stop_all(s, STOP_GRACE_MS);
}

static void loop(struct sched *s) {
  size_t cap = (size_t)s->o->jobs * 3 + 1;
  struct pollfd *p = malloc(cap * sizeof *p);
  struct job **who = malloc(cap * sizeof *who);
  if (p == NULL || who == NULL) {
    fatal(s, "polling", -ENOMEM);
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
    if (s->prog.mode && (due < 0 || mproc_now_ms() + 100 < due))
      due = mproc_now_ms() + 100;
    int64_t left = due < 0 ? -1 : mproc_timeout_until(due);
    int k = poll(p, n, left > 100000 ? 100000 : (int)left);
    if (k < 0 && errno != EINTR) {
      fatal(s, "poll", -errno);
      stop_all(s, 0);
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
      drain(s, who[q], p[q].fd == who[q]->out ? 1 : 2, false);
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
        finish(s, i);
    }
    run_progress_draw(&s->prog, s->completed, s->nrun, run_input_total(s->in), false);
  }
  free(p);
  free(who);
}

static int setup(struct sched *s, struct run_opts *o) {
  *s = (struct sched){.o = o, .devnull = -1, .sigfd = -1, .next_seq = 1, .next_print = 1};
  /* Each job holds a pidfd and two outputs, and -k's window two more per
   * finished job: use the whole descriptor allowance. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
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
  run_progress_begin(&s->prog, o);
  return 0;
}

static void teardown(struct sched *s) {
  stop_all(s, 0);
  for (size_t i = 0; i < s->nretry; i++)
    job_free(s->retry[(s->retry_head + i) % s->window]);
  if (s->ring != NULL)
    for (size_t i = 0; i < s->window; i++)
      job_free(s->ring[i]);
  free(s->ring);
  free(s->retry);
  free(s->run);
  free(s->slot_used);
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
      flush_ring(&s, true);
    run_progress_draw(&s.prog, s.completed, 0, run_input_total(s.in), true);
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
