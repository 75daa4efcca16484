/* mproc run: the command line.
 *
 * Design notes.  GNU parallel's syntax: options first, then the command
 * template (its first word is the first argument that is not an option),
 * then input sources introduced by ":::" (the arguments up to the next
 * separator) or "::::" (file names, "-" for standard input).  Options take
 * their value as the next argument or glued on ("-j4", "--jobs=4").  Every
 * value is checked here so that the scheduler never sees a bad one, and a
 * bad one is reported in one line with exit status 255, as parallel does. */
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

void run_usage(FILE *f) {
  fputs("Usage: mproc run [OPTIONS] [COMMAND [ARG...]] [::: ARGS...] [:::: FILES...]\n"
        "Runs COMMAND once per input (stdin lines by default) on every CPU.\n"
        "Replacement strings: {} {.} {/} {//} {/.} {#} {%} {N} {N.} {N/} {N//} {N/.}\n"
        "  -j, --jobs N|N%|+N|-N|0  jobs at once (default: usable CPUs; 0: as many as possible)\n"
        "  -0, --null              input records end with NUL\n"
        "  -a, --arg-file FILE     read input from FILE (like :::: FILE)\n"
        "  -C, --colsep REGEX      split records into columns {1} {2}...\n"
        "  -n, --max-args N        N records per job\n"
        "  -k, --keep-order        print output in input order\n"
        "      --line-buffer       print whole lines as soon as they come\n"
        "      --tag               prefix output lines with the arguments\n"
        "  -u, --ungroup           no grouping: jobs write straight to stdout\n"
        "  -q, --quote, --no-shell run the words directly, never through /bin/sh\n"
        "      --joblog FILE       log every job (GNU parallel's columns)\n"
        "      --resume            skip jobs the joblog lists\n"
        "      --resume-failed     skip jobs the joblog lists as succeeded\n"
        "      --retries N         run a failing job up to N times\n"
        "      --timeout SECS      kill a job's whole process tree after SECS\n"
        "      --halt now|soon,fail|success|done=N|N%   stop early\n"
        "      --delay SECS        wait SECS between job starts\n"
        "      --dry-run           print the commands, run nothing\n"
        "      --bar, --eta, --progress   progress on a terminal\n"
        "  -h, --help, --version\n"
        "Exit: 0; 1-100 failed jobs; 101 more; 130 Ctrl-C; 255 other errors.\n"
        "See mproc(1).\n",
        f);
}

static int bad(const char *what, const char *v) {
  fprintf(stderr, "mproc run: invalid %s: '%s'\n", what, v ? v : "");
  return -1;
}

static bool parse_uint(const char *s, unsigned long *out) {
  char *end;
  errno = 0;
  if (s == NULL || *s == '\0' || *s == '-')
    return false;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  *out = v;
  return true;
}

static bool parse_secs(const char *s, double *out) {
  char *end;
  if (s == NULL || *s == '\0')
    return false;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0) || !isfinite(v) || v > 1e9)
    return false;
  *out = v;
  return true;
}

uint64_t run_fd_allowance(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return (uint64_t)rl.rlim_cur;
}

/* -j 0: as many as the descriptors allow: each job holds a pidfd and up to
 * two outputs, and -k's window two more per finished job. */
static int max_jobs(void) {
  uint64_t fds = run_fd_allowance();
  uint64_t n = fds > 64 ? (fds - 32) / 4 : 1;
  return n > 10000 ? 10000 : (int)n;
}

static int parse_jobs(const char *v, int *jobs) {
  int cpus = mproc_cpu_count();
  unsigned long n;
  size_t len = v ? strlen(v) : 0;
  if (len > 1 && v[len - 1] == '%') {
    char num[32];
    if (len - 1 >= sizeof num)
      return bad("--jobs", v);
    memcpy(num, v, len - 1);
    num[len - 1] = '\0';
    if (!parse_uint(num, &n) || n > 100000)
      return bad("--jobs", v);
    double j = cpus * (double)n / 100.0;
    *jobs = j < 1 ? 1 : (int)j;
  } else if (len > 1 && (v[0] == '+' || v[0] == '-')) {
    if (!parse_uint(v + 1, &n) || n > 100000)
      return bad("--jobs", v);
    long j = v[0] == '+' ? cpus + (long)n : cpus - (long)n;
    *jobs = j < 1 ? 1 : (int)j;
  } else if (parse_uint(v, &n) && n <= 100000) {
    *jobs = n == 0 ? max_jobs() : (int)n;
  } else {
    return bad("--jobs", v);
  }
  return 0;
}

static int parse_halt(const char *v, struct run_halt *h) {
  static const struct {
    const char *legacy, *full;
  } expand[] = {{"0", "never"},
                {"1", "soon,fail=1"},
                {"2", "now,fail=1"},
                {"-1", "soon,success=1"},
                {"-2", "now,success=1"}};
  char buf[64];
  if (v == NULL || strlen(v) >= sizeof buf - 10)
    return bad("--halt", v);
  strcpy(buf, v);
  for (size_t i = 0; i < sizeof expand / sizeof expand[0]; i++)
    if (strcmp(v, expand[i].legacy) == 0)
      strcpy(buf, expand[i].full);
  size_t len = strlen(buf);
  if (len > 1 && buf[len - 1] == '%' && strchr(buf, ',') == NULL) { /* "5%" */
    snprintf(buf, sizeof buf, "soon,fail=%s", v);
  }
  *h = (struct run_halt){0};
  if (strcmp(buf, "never") == 0)
    return 0;
  char *when = buf, *on = strchr(buf, ',');
  if (on == NULL)
    return bad("--halt (want now|soon,fail|success|done=N|N%)", v);
  *on++ = '\0';
  char *num = strchr(on, '=');
  if (num == NULL)
    return bad("--halt (want now|soon,fail|success|done=N|N%)", v);
  *num++ = '\0';
  if (strcmp(when, "now") == 0)
    h->when = HALT_NOW;
  else if (strcmp(when, "soon") == 0)
    h->when = HALT_SOON;
  else
    return bad("--halt (want now or soon)", v);
  if (strcmp(on, "fail") == 0)
    h->on = HALT_FAIL;
  else if (strcmp(on, "success") == 0)
    h->on = HALT_SUCCESS;
  else if (strcmp(on, "done") == 0)
    h->on = HALT_DONE;
  else
    return bad("--halt (want fail, success or done)", v);
  unsigned long n;
  len = strlen(num);
  if (len > 1 && num[len - 1] == '%') {
    num[len - 1] = '\0';
    if (!parse_uint(num, &n) || n == 0 || n > 100)
      return bad("--halt percentage", v);
    h->pct = (unsigned)n;
  } else {
    if (!parse_uint(num, &n) || n == 0 || n > 1000000000)
      return bad("--halt count", v);
    h->count = (unsigned)n;
  }
  return 0;
}

static int add_source(struct run_opts *o, struct run_source s) {
  struct run_source *v = realloc(o->src, (o->nsrc + 1) * sizeof *v);
  if (v == NULL) {
    fprintf(stderr, "mproc run: out of memory\n");
    return -1;
  }
  o->src = v;
  o->src[o->nsrc++] = s;
  return 0;
}

/* Options taking a value: the value glued on (-j4, --jobs=4) or next. */
static const char *value_of(const char *arg, const char *sname, const char *lname, int *i, int argc,
                            char **argv, bool *matched) {
  size_t sl = sname ? strlen(sname) : 0, ll = strlen(lname);
  *matched = false;
  if (strcmp(arg, lname) == 0 || (sname && strcmp(arg, sname) == 0)) {
    *matched = true;
    return *i + 1 < argc ? argv[++*i] : NULL;
  }
  if (strncmp(arg, lname, ll) == 0 && arg[ll] == '=') {
    *matched = true;
    return arg + ll + 1;
  }
  if (sname && sl == 2 && strncmp(arg, sname, 2) == 0 && arg[2] != '\0') {
    *matched = true;
    return arg + 2;
  }
  return NULL;
}

/* The options with a value.  Returns 1 if `arg` was one (handled), 0 if
 * not, -1 on a bad value. */
static int value_option(struct run_opts *o, const char *arg, int *i, int argc, char **argv) {
  bool m;
  unsigned long n;
  const char *v;
  if ((v = value_of(arg, "-j", "--jobs", i, argc, argv, &m)), m)
    return parse_jobs(v, &o->jobs) < 0 ? -1 : 1;
  if ((v = value_of(arg, "-P", "--max-procs", i, argc, argv, &m)), m)
    return parse_jobs(v, &o->jobs) < 0 ? -1 : 1;
  if ((v = value_of(arg, "-n", "--max-args", i, argc, argv, &m)), m) {
    if (!parse_uint(v, &n) || n == 0 || n > 1000000)
      return bad("--max-args", v);
    o->max_args = n;
    return 1;
  }
  if ((v = value_of(arg, "-C", "--colsep", i, argc, argv, &m)), m) {
    if (v == NULL || *v == '\0')
      return bad("--colsep", v);
    o->colsep = v;
    return 1;
  }
  if ((v = value_of(arg, "-a", "--arg-file", i, argc, argv, &m)), m) {
    if (v == NULL)
      return bad("--arg-file", v);
    return add_source(o, (struct run_source){.kind = SRC_FILE, .path = v}) < 0 ? -1 : 1;
  }
  if ((v = value_of(arg, NULL, "--joblog", i, argc, argv, &m)), m) {
    if (v == NULL || *v == '\0')
      return bad("--joblog", v);
    o->joblog = v;
    return 1;
  }
  if ((v = value_of(arg, NULL, "--retries", i, argc, argv, &m)), m) {
    if (!parse_uint(v, &n) || n > 1000000)
      return bad("--retries", v);
    o->retries = (unsigned)n;
    return 1;
  }
  if ((v = value_of(arg, NULL, "--timeout", i, argc, argv, &m)), m)
    return parse_secs(v, &o->timeout_s) && o->timeout_s > 0 ? 1 : bad("--timeout", v);
  if ((v = value_of(arg, NULL, "--delay", i, argc, argv, &m)), m)
    return parse_secs(v, &o->delay_s) ? 1 : bad("--delay", v);
  if ((v = value_of(arg, NULL, "--halt", i, argc, argv, &m)), m)
    return parse_halt(v, &o->halt) < 0 ? -1 : 1;
  return 0;
}

static int flag_option(struct run_opts *o, const char *a) {
  static const struct {
    const char *s, *l;
    size_t off;
  } flags[] = {
      {"-0", "--null", offsetof(struct run_opts, null_sep)},
      {"-k", "--keep-order", offsetof(struct run_opts, keep_order)},
      {NULL, "--line-buffer", offsetof(struct run_opts, line_buffer)},
      {NULL, "--lb", offsetof(struct run_opts, line_buffer)},
      {NULL, "--tag", offsetof(struct run_opts, tag)},
      {"-u", "--ungroup", offsetof(struct run_opts, ungroup)},
      {NULL, "--dry-run", offsetof(struct run_opts, dry_run)},
      {"-q", "--quote", offsetof(struct run_opts, no_shell)},
      {NULL, "--no-shell", offsetof(struct run_opts, no_shell)},
      {NULL, "--bar", offsetof(struct run_opts, bar)},
      {NULL, "--eta", offsetof(struct run_opts, eta)},
      {NULL, "--progress", offsetof(struct run_opts, progress)},
      {NULL, "--resume", offsetof(struct run_opts, resume)},
      {NULL, "--resume-failed", offsetof(struct run_opts, resume_failed)},
  };
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if ((flags[i].s && strcmp(a, flags[i].s) == 0) || strcmp(a, flags[i].l) == 0) {
      *(bool *)((char *)o + flags[i].off) = true;
      return 1;
    }
  /* Accepted for command lines written for GNU parallel. */
  return strcmp(a, "--will-cite") == 0 || strcmp(a, "--gnu") == 0;
}

static bool is_sep(const char *a) { return strcmp(a, ":::") == 0 || strcmp(a, "::::") == 0; }

/* The sources after the template: ::: lists and :::: files. */
static int parse_sources(struct run_opts *o, int i, int argc, char **argv) {
  while (i < argc) {
    bool files = strcmp(argv[i], "::::") == 0;
    int start = ++i;
    while (i < argc && !is_sep(argv[i]))
      i++;
    if (files) {
      if (i == start) {
        fprintf(stderr, "mproc run: '::::' needs at least one file\n");
        return -1;
      }
      for (int k = start; k < i; k++)
        if (add_source(o, (struct run_source){.kind = SRC_FILE, .path = argv[k]}) < 0)
          return -1;
    } else if (add_source(o, (struct run_source){.kind = SRC_LIST,
                                                 .items = argv + start,
                                                 .n = (size_t)(i - start)}) < 0) {
      return -1;
    }
  }
  return 0;
}

int run_opts_parse(struct run_opts *o, int argc, char **argv) {
  *o = (struct run_opts){.jobs = mproc_cpu_count(), .max_args = 1};
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (is_sep(a) || a[0] != '-' || a[1] == '\0')
      break;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      run_usage(stdout);
      return 1;
    }
    if (strcmp(a, "--version") == 0) {
      printf("mproc run %s\n", MPROC_VERSION_STRING);
      return 1;
    }
    int r = value_option(o, a, &i, argc, argv);
    if (r < 0)
      return -1;
    if (r == 0 && !flag_option(o, a)) {
      fprintf(stderr, "mproc run: unknown option '%s' (see mproc run --help)\n", a);
      return -1;
    }
  }
  o->cmd = argv + i;
  while (i < argc && !is_sep(argv[i]))
    i++;
  o->ncmd = (size_t)(argv + i - o->cmd);
  if (parse_sources(o, i, argc, argv) < 0)
    return -1;
  if (o->resume || o->resume_failed) {
    if (o->joblog == NULL) {
      fprintf(stderr, "mproc run: --resume and --resume-failed need --joblog\n");
      return -1;
    }
  }
  if (o->no_shell && o->ncmd == 0) {
    fprintf(stderr, "mproc run: --quote/--no-shell need a command\n");
    return -1;
  }
  return 0;
}

void run_opts_free(struct run_opts *o) {
  free(o->src);
  o->src = NULL;
}
