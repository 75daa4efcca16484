/* mproc run: starting a job, and reading its pipes.
 *
 * Design notes.  A job is started with mproc_command_start() in a process
 * group of its own (so a terminal's Ctrl-C reaches the runner only, and a
 * timeout can reach the whole group), stdin on /dev/null, and stdout/stderr
 * on two fresh memfds (grouped output: the job writes straight into files
 * of its own, no pipe to service, nothing to buffer) or on pipes
 * (--line-buffer).  A fresh pair per job, not a pair per slot reused: a
 * background process that outlives its job may still write, and its output
 * must never land in another job's.  The template's program is looked up on
 * PATH once (resolve) and exec'd by path, which spares every job the failed
 * execs of posix_spawnp's PATH walk. */
#include "run_sched.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct job run_skipped;

void run_job_free(struct job *j) {
  if (j == NULL || j == &run_skipped)
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
  run_job_release_held(j);
  free(j);
}

void run_job_close_outputs(struct job *j) {
  if (j->own_fds) {
    if (j->out >= 0)
      close(j->out);
    if (j->err >= 0)
      close(j->err);
  }
  j->out = j->err = -1;
  j->own_fds = false;
  run_job_release_held(j);
}

void run_job_release_held(struct job *j) {
  for (int i = 0; i < 2; i++) {
    if (j->held[i] >= 0)
      close(j->held[i]);
    j->held[i] = -1;
  }
}

/* -k --line-buffer: where a line-buffered job's complete lines go now.  Only
 * the oldest job not yet printed writes to the real output, as it runs (GNU
 * parallel's rule); a later job's lines wait in a memfd of its own until every
 * job before it has been printed (run_job_release_held_output). */
static int line_dst(struct sched *s, struct job *j, int which) {
  int real = which == 1 ? STDOUT_FILENO : STDERR_FILENO;
  if (!s->o->keep_order || j->seq == s->next_print)
    return real;
  int *h = &j->held[which - 1];
  if (*h < 0)
    *h = memfd_create(which == 1 ? "mproc-run-held-out" : "mproc-run-held-err", MFD_CLOEXEC);
  return *h >= 0 ? *h : -errno;
}

int run_job_release_held_output(struct job *j) {
  int r = 0;
  for (int i = 0; i < 2 && r == 0; i++)
    if (j->held[i] >= 0)
      r = run_copy_file(i == 0 ? STDOUT_FILENO : STDERR_FILENO, j->held[i], NULL);
  run_job_release_held(j);
  return r;
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- starting a job ---------------------------------------------------------- */

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

/* The file PATH gives for a program name, looked up once per name in a
 * row (the template's first word rarely changes): exec'ing through a
 * cached path spares every job the failed execs of a PATH walk.  NULL when
 * not found; the spawn then reports it. */
static const char *resolve(struct sched *s, const char *name) {
  if (strchr(name, '/') != NULL)
    return NULL;
  if (s->exe_name != NULL && strcmp(s->exe_name, name) == 0)
    return s->exe_path;
  free(s->exe_name);
  free(s->exe_path);
  s->exe_name = strdup(name);
  s->exe_path = NULL;
  const char *path = getenv("PATH");
  for (const char *p = path ? path : "/usr/bin:/bin"; s->exe_name != NULL && *p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    char *f = NULL;
    struct stat st;
    if (asprintf(&f, "%.*s%s%s", (int)len, p, len ? "/" : "", name) < 0)
      break;
    if (stat(f, &st) == 0 && S_ISREG(st.st_mode) && access(f, X_OK) == 0) {
      s->exe_path = f;
      break;
    }
    free(f);
    p += len + (colon != NULL);
  }
  return s->exe_path;
}

/* Starts j in a free slot (see run_sched.h for the results). */
int run_job_start(struct sched *s, struct job *j) {
  j->slot = free_slot(s);
  j->tries++;
  int r = run_template_expand(s->t, &j->args, j->seq, j->slot, s->want, &j->cmd);
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
  else
    co.executable = resolve(s, j->cmd.argv[0]);
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
    run_job_close_outputs(j);
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

void run_job_remove(struct sched *s, size_t i) {
  s->slot_used[s->run[i]->slot] = false;
  s->run[i] = s->run[--s->nrun];
}

/* --line-buffer: reads what a job's pipe holds and prints its whole lines.
 * Returns 1 at end of file (the pipe is closed then), 0 otherwise. */
int run_job_drain(struct sched *s, struct job *j, int which, bool final) {
  int fd = which == 1 ? j->out : j->err;
  struct run_lines *l = which == 1 ? &j->lo : &j->le;
  int dst = line_dst(s, j, which);
  if (dst < 0)
    return dst;
  char buf[65536];
  for (;;) {
    ssize_t k = read(fd, buf, sizeof buf);
    if (k < 0 && errno == EINTR)
      continue;
    if (k > 0) {
      if (which == 1)
        j->received += (uint64_t)k;
      run_emit(s, run_lines_feed(l, dst, j->cmd.tag, buf, (size_t)k, false));
      if (!final)
        return 0; /* one read per wakeup keeps the other jobs served */
      continue;
    }
    bool eof = k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    if (eof || final) {
      run_emit(s, run_lines_feed(l, dst, j->cmd.tag, NULL, 0, true));
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
