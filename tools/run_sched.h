/* mproc run: the scheduler's shared state (run_sched.c, run_job.c,
 * run_finish.c).  Internal to the tool. */
#ifndef MPROC_TOOLS_RUN_SCHED_H
#define MPROC_TOOLS_RUN_SCHED_H

#include "run.h"

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
  int held[2];             /* -k --line-buffer: stdout/stderr lines held (memfds) until
                              this job is the oldest not printed, -1 */
  double start_wall;       /* epoch seconds at start, for the joblog */
  int64_t start_ms;        /* monotonic start */
  unsigned tries;          /* attempts so far */
  uint64_t received;       /* stdout bytes */
  int exitval, sig;        /* result */
};

struct sched {
  struct run_opts *o;      /* the command line */
  struct run_template *t;  /* the parsed command template */
  struct run_input *in;    /* where job arguments come from */
  FILE *joblog;            /* --joblog, or NULL */
  struct run_doneset done; /* --resume: seq numbers not to run again */
  int devnull;             /* every job's stdin */
  int sigfd;               /* signalfd of SIGINT, SIGTERM, SIGHUP */
  struct job **run;        /* running jobs */
  size_t nrun;             /* their number (<= jobs) */
  bool *slot_used;         /* [1..jobs] */
  struct job **retry;      /* FIFO of jobs to run again (a ring of `window`) */
  size_t nretry, retry_head;
  struct job **ring;                   /* -k: finished jobs by seq % window */
  size_t window;                       /* -k's reorder window, a power of two >= 8 * jobs */
  uint64_t next_print;                 /* -k: next seq to print */
  uint64_t next_seq;                   /* next seq to read */
  bool input_done;                     /* the input is exhausted */
  bool full_until_finish;              /* a start hit a system limit: wait for a job to end */
  bool stop_starting;                  /* --halt, Ctrl-C or an error: no new jobs */
  bool interrupted;                    /* a signal stopped the run */
  bool fatal;                          /* an error of the runner's own: exit 255 */
  int stop_signal;                     /* the signal that stopped it */
  bool halt_set;                       /* --halt fixed the exit status */
  int halt_status;                     /* that status */
  uint64_t failed, completed, started; /* job counts (final attempts) */
  int64_t next_start_ms;               /* --delay: earliest next start */
  struct run_progress prog;            /* --bar */
  char *exe_name, *exe_path;           /* the last program looked up on PATH */
  unsigned want;                       /* RUN_WANT_*: what job commands need besides the argv */
};

/* A -k placeholder for a job --resume skipped or --dry-run printed:
 * printed as nothing. */
extern struct job run_skipped;

/* ---- run_job.c: a job's start and its pipes ---- */
void run_job_free(struct job *j);
/* Starts j in a free slot.  Returns 0; 127/126 when its program cannot be
 * exec'd (the job is then finished by run_finish_unstarted); or a negative
 * code for an error that should stop the run. */
int run_job_start(struct sched *s, struct job *j);
/* Closes the job's memfds (pipes belong to its command). */
void run_job_close_outputs(struct job *j);
/* -k --line-buffer: closes a job's held lines; writes them out first. */
void run_job_release_held(struct job *j);
int run_job_release_held_output(struct job *j);
/* Takes running job i off the running list (its slot becomes free). */
void run_job_remove(struct sched *s, size_t i);
/* --line-buffer: reads what a job's pipe holds and prints its whole lines.
 * Returns 1 at end of file (the pipe is closed then), 0 otherwise. */
int run_job_drain(struct sched *s, struct job *j, int which, bool final);

/* ---- run_finish.c: a finished job's retry, log, output and halt ---- */
void run_fatal(struct sched *s, const char *what, int err);
/* Handles a write's result: EPIPE (the reader left) stops the run quietly. */
void run_emit(struct sched *s, int r);
/* -k: prints every finished job from next_print on, in order (all: skipping
 * the gaps of jobs that never finished). */
void run_flush_ring(struct sched *s, bool all);
/* Running job i was reaped: retry it, or log, print and check --halt. */
void run_finish(struct sched *s, size_t i);
/* A job whose program could not be exec'd finishes at once with `status`. */
void run_finish_unstarted(struct sched *s, struct job *j, int status);

/* ---- run_sched.c ---- */
/* Stops every running job: SIGTERM to each whole tree, up to grace_ms for
 * them to exit, then SIGKILL.  They are not logged. */
void run_stop_all(struct sched *s, int64_t grace_ms);

#endif /* MPROC_TOOLS_RUN_SCHED_H */
