/* mproc run: shared declarations of the command-line parallel runner.
 *
 * The runner is split by concept, one file each:
 *   run_opts.c      command line -> struct run_opts
 *   run_input.c     input records (::: lists, :::: files, stdin) -> job arguments
 *   run_template.c  the command template and its replacement strings
 *   run_output.c    grouped, tagged, line-buffered output of a job
 *   run_joblog.c    --joblog lines and --resume/--resume-failed
 *   run_progress.c  --bar/--eta/--progress: the library's progress bar
 *   run_sched.c     the scheduler: the poll loop, slots, signals (run_sched.h)
 *   run_job.c       starting a job, reading its pipes
 *   run_finish.c    a finished job: retry, joblog, output, --halt
 * It uses the library's public API only (<mproc.h>). */
#ifndef MPROC_TOOLS_RUN_H
#define MPROC_TOOLS_RUN_H

#include <mproc.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status for anything but failed jobs (GNU parallel's). */
#define RUN_EXIT_ERROR 255
/* Exit status after Ctrl-C (128 + SIGINT). */
#define RUN_EXIT_INTERRUPTED 130

/* ---- run_opts.c ----------------------------------------------------------- */

enum run_src_kind { SRC_LIST, SRC_FILE };
struct run_source {
  enum run_src_kind kind;
  char **items;     /* SRC_LIST: the ::: arguments (borrowed from argv) */
  size_t n;         /* their number */
  const char *path; /* SRC_FILE: "-" is standard input */
};

enum run_halt_when { HALT_NEVER, HALT_SOON, HALT_NOW };
enum run_halt_on { HALT_FAIL, HALT_SUCCESS, HALT_DONE };
struct run_halt {
  enum run_halt_when when;
  enum run_halt_on on;
  unsigned count; /* N jobs, or 0 when pct is used */
  unsigned pct;   /* N% of the jobs, or 0 */
};

struct run_opts {
  int jobs;           /* simultaneous jobs (>= 1) */
  bool null_sep;      /* -0: records end with NUL, not newline */
  const char *colsep; /* --colsep regex, or NULL */
  size_t max_args;    /* -n: records per job (>= 1) */
  bool keep_order;    /* -k */
  bool line_buffer;   /* --line-buffer */
  bool tag;           /* --tag */
  bool ungroup;       /* -u */
  bool dry_run;       /* --dry-run */
  bool no_shell;      /* -q/--quote/--no-shell: exec the words as given */
  bool bar, eta, progress;
  const char *joblog; /* --joblog FILE, or NULL */
  bool resume, resume_failed;
  unsigned retries; /* --retries: attempts in all (0 and 1: one) */
  double timeout_s; /* --timeout: 0 none */
  double delay_s;   /* --delay between job starts */
  struct run_halt halt;
  char **cmd; /* the command template's words (borrowed); ncmd may be 0 */
  size_t ncmd;
  struct run_source *src; /* input sources; none: standard input */
  size_t nsrc;
};

/* Parses argv (after "run").  Returns 0, 1 when --help/--version was handled
 * (exit 0), or -1 after printing an error (exit 255). */
int run_opts_parse(struct run_opts *o, int argc, char **argv);
void run_opts_free(struct run_opts *o);
/* Raises the soft descriptor limit to the hard one; returns the limit. */
uint64_t run_fd_allowance(void);
void run_usage(FILE *f);

/* ---- run_input.c ------------------------------------------------------------ */

/* One job's arguments: v[0..n) (positional {1}..{n}).  Strings live in an
 * arena owned by the struct. */
struct run_args {
  char **v;
  size_t n, cap;
  char *arena; /* all strings, NUL-separated */
  size_t len, arena_cap;
};
void run_args_clear(struct run_args *a);
int run_args_push(struct run_args *a, const char *s, size_t len);
void run_args_free(struct run_args *a);
/* Deep copy (pointers rebased into the copy's arena). */
int run_args_copy(struct run_args *dst, const struct run_args *src);

struct run_input;
/* Opens the sources of o.  Returns 0 or -1 (message printed). */
int run_input_open(struct run_input **in, const struct run_opts *o);
/* The next job's arguments: 1, 0 at the end, -1 on a read error (printed). */
int run_input_next(struct run_input *in, struct run_args *a);
/* Jobs the input will yield in all, or 0 while unknown. */
uint64_t run_input_total(const struct run_input *in);
void run_input_close(struct run_input *in);

/* ---- run_template.c ----------------------------------------------------------- */

struct run_template;
int run_template_new(struct run_template **t, const struct run_opts *o);
void run_template_free(struct run_template *t);

/* A job's command: the shell form (also what --joblog and --dry-run show)
 * and, when no shell is needed, the argv to exec. */
struct run_cmd {
  char *line;  /* the command line as /bin/sh would run it */
  char **argv; /* NULL: run `line` with /bin/sh -c */
  size_t argc;
  char *tag; /* the --tag prefix: the arguments joined by spaces */
};
/* What run_template_expand() must fill in besides the argv. */
enum {
  RUN_WANT_TAG = 1u << 0,  /* the --tag prefix */
  RUN_WANT_LINE = 1u << 1, /* the line even when no shell runs it (joblog...) */
};
/* Expands the template for one job.  Without RUN_WANT_LINE, `line` is ""
 * for a job exec'd directly.  Returns 0 or -ENOMEM. */
int run_template_expand(const struct run_template *t, const struct run_args *a, uint64_t seq,
                        int slot, unsigned want, struct run_cmd *out);
void run_cmd_free(struct run_cmd *c);
/* Appends s to the string buffer as one shell word (quoted when needed, the
 * way GNU parallel does). */
struct run_str {
  char *p;
  size_t len, cap;
};
int run_str_add(struct run_str *s, const char *p, size_t n);
int run_str_quote(struct run_str *s, const char *p);

/* ---- run_output.c ----------------------------------------------------------------- */

/* Partial-line buffer for --line-buffer and --tag. */
struct run_lines {
  char *buf;
  size_t len, cap;
};
/* Writes all of buf to fd; 0 or -errno (EPIPE when the reader left). */
int run_write_all(int fd, const char *buf, size_t n);
/* Copies the first `size` bytes of file fd to out, each line prefixed by tag
 * (NULL: no prefix).  Returns 0 or -errno. */
int run_copy_file(int out, int fd, const char *tag);
/* Feeds data read from a job's pipe: complete lines go to out at once
 * (prefixed); the rest waits for its end of line, or `final`. */
int run_lines_feed(struct run_lines *l, int out, const char *tag, const char *p, size_t n,
                   bool final);
void run_lines_free(struct run_lines *l);

/* ---- run_joblog.c --------------------------------------------------------------- */

/* Seq numbers already done, from a previous joblog (--resume). */
struct run_doneset {
  uint8_t *bits;
  uint64_t nbits;
};
bool run_doneset_has(const struct run_doneset *d, uint64_t seq);
void run_doneset_free(struct run_doneset *d);
/* Opens the joblog: with resume, reads it into *done first and appends;
 * otherwise truncates it and writes the header.  Returns the FILE or NULL
 * (message printed). */
FILE *run_joblog_open(const char *path, bool resume, bool failed_too, struct run_doneset *done);
void run_joblog_line(FILE *f, uint64_t seq, double start_s, double runtime_s, uint64_t received,
                     int exitval, int sig, const char *cmd);

/* ---- run_progress.c ---------------------------------------------------------------- */

struct run_progress {
  mproc_progress_bar *bar; /* NULL: no progress wanted */
  uint64_t total;          /* the total last given to the bar */
};
/* A bar if --bar, --eta or --progress asked for one (drawn only on a
 * terminal). */
void run_progress_begin(struct run_progress *p, const struct run_opts *o);
/* Reports progress; `total` 0 while unknown. */
void run_progress_draw(struct run_progress *p, uint64_t done, uint64_t total, bool final);
void run_progress_end(struct run_progress *p);

/* ---- run_sched.c ------------------------------------------------------------------------ */

/* Runs everything; returns the process exit status. */
int run_main(struct run_opts *o);

#endif /* MPROC_TOOLS_RUN_H */
