/* mproc run: the command template and its replacement strings.
 *
 * Design notes.  The template's words are parsed once into segments, literal
 * text or a replacement string:
 *
 *   {}  {.}  {/}  {//}  {/.}   the arguments, without extension, basename,
 *                              dirname, basename without extension
 *   {N} {N.} {N/} {N//} {N/.}  the same for the N-th argument only
 *   {#} {%}                    job number, slot number
 *
 * A job's command line is the words joined by spaces, every replaced value
 * shell-quoted the way GNU parallel quotes it; with no replacement string in
 * the template the arguments are appended.  That line is what --joblog and
 * --dry-run show, and what /bin/sh -c runs when a shell is needed.
 *
 * Why exec directly: a shell costs a fork+exec of its own per job.  When
 * the template's literal text has nothing a shell would interpret (only
 * [A-Za-z0-9_./+-:@%^], no '=' in the first word, no empty word), running
 * the words as argv gives exactly what the shell would have run: replaced
 * values were quoted, so each stays one word.  The one exception, a word
 * mixing text with a multi-valued {} (several arguments per job), makes the
 * shell decide that job.  -q/--no-shell always exec the words as given,
 * which is GNU parallel's -q result without its double quoting. */
#include "run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_ALL, OP_NOEXT, OP_BASE, OP_DIR, OP_BASENOEXT };

struct seg {
  const char *text; /* literal: points into the template word */
  size_t len;       /* literal length */
  bool repl;        /* a replacement string */
  char special;     /* '#', '%', or 0 */
  size_t pos;       /* 0: every argument; N: the N-th */
  enum op op;
};

struct word {
  struct seg *s;
  size_t n;
};

struct run_template {
  struct word *w;
  size_t nw;
  bool append;   /* no replacement string: arguments go at the end */
  bool shell;    /* the literal text needs /bin/sh */
  bool no_shell; /* -q/--no-shell */
};

/* ---- strings ---------------------------------------------------------- */

int run_str_add(struct run_str *s, const char *p, size_t n) {
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 128;
    while (cap < s->len + n + 1)
      cap *= 2;
    char *q = realloc(s->p, cap);
    if (q == NULL)
      return -ENOMEM;
    s->p = q;
    s->cap = cap;
  }
  memcpy(s->p + s->len, p, n);
  s->len += n;
  s->p[s->len] = '\0';
  return 0;
}

static bool quote_free(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         strchr("_./+-", c) != NULL;
}

int run_str_quote(struct run_str *s, const char *p) {
  bool plain = *p != '\0';
  for (const char *q = p; *q && plain; q++)
    plain = quote_free((unsigned char)*q);
  if (plain)
    return run_str_add(s, p, strlen(p));
  int r = run_str_add(s, "'", 1);
  for (const char *q = p; *q && r == 0; q++)
    r = *q == '\'' ? run_str_add(s, "'\"'\"'", 5) : run_str_add(s, q, 1);
  return r ? r : run_str_add(s, "'", 1);
}

/* ---- parsing ----------------------------------------------------------- */

/* Recognizes a replacement string at p ("{...}"); returns its length or 0. */
static size_t parse_token(const char *p, struct seg *sg) {
  if (p[0] != '{')
    return 0;
  const char *q = p + 1;
  *sg = (struct seg){.repl = true};
  if ((*q == '#' || *q == '%') && q[1] == '}') {
    sg->special = *q;
    return 3;
  }
  while (*q >= '0' && *q <= '9') {
    sg->pos = sg->pos * 10 + (size_t)(*q - '0');
    if (sg->pos > 1000000)
      return 0;
    q++;
  }
  if (q > p + 1 && sg->pos == 0)
    return 0; /* {0} is not a replacement string */
  static const struct {
    const char *s;
    enum op op;
  } ops[] = {
      {"}", OP_ALL}, {".}", OP_NOEXT}, {"/}", OP_BASE}, {"//}", OP_DIR}, {"/.}", OP_BASENOEXT}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    size_t l = strlen(ops[i].s);
    if (strncmp(q, ops[i].s, l) == 0) {
      sg->op = ops[i].op;
      return (size_t)(q - p) + l;
    }
  }
  return 0;
}

static int add_seg(struct word *w, struct seg sg) {
  struct seg *v = realloc(w->s, (w->n + 1) * sizeof *v);
  if (v == NULL)
    return -ENOMEM;
  w->s = v;
  w->s[w->n++] = sg;
  return 0;
}

/* Whether literal text would mean something to /bin/sh. */
static bool needs_shell(const char *p, size_t n, bool first_word) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (quote_free(c) || strchr(":@%^", c) != NULL)
      continue;
    if (c == '=' && !first_word)
      continue;
    return true;
  }
  return false;
}

static int parse_word(struct run_template *t, struct word *w, const char *p, bool first) {
  const char *lit = p;
  int r = 0;
  if (*p == '\0')
    t->shell = true; /* an empty word vanishes in the shell's line */
  while (*p && r == 0) {
    struct seg sg;
    size_t n = parse_token(p, &sg);
    if (n == 0) {
      p++;
      continue;
    }
    if (p > lit) {
      t->shell |= needs_shell(lit, (size_t)(p - lit), first);
      r = add_seg(w, (struct seg){.text = lit, .len = (size_t)(p - lit)});
    }
    if (r == 0)
      r = add_seg(w, sg);
    t->append = false;
    p += n;
    lit = p;
  }
  if (r == 0 && p > lit) {
    t->shell |= needs_shell(lit, (size_t)(p - lit), first);
    r = add_seg(w, (struct seg){.text = lit, .len = (size_t)(p - lit)});
  }
  return r;
}

int run_template_new(struct run_template **out, const struct run_opts *o) {
  struct run_template *t = calloc(1, sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  t->append = true;
  t->no_shell = o->no_shell;
  t->shell = o->ncmd == 0; /* input lines are the commands */
  t->w = calloc(o->ncmd ? o->ncmd : 1, sizeof *t->w);
  int r = t->w ? 0 : -ENOMEM;
  for (size_t i = 0; r == 0 && i < o->ncmd; i++, t->nw++)
    r = parse_word(t, &t->w[i], o->cmd[i], i == 0);
  if (t->no_shell)
    t->shell = false;
  if (r < 0) {
    run_template_free(t);
    return r;
  }
  *out = t;
  return 0;
}

void run_template_free(struct run_template *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->nw; i++)
    free(t->w[i].s);
  free(t->w);
  free(t);
}

/* ---- expansion ---------------------------------------------------------- */

/* Applies a replacement operator to one value. */
static int apply(struct run_str *s, const char *v, enum op op) {
  const char *slash = strrchr(v, '/');
  const char *base = slash ? slash + 1 : v;
  switch (op) {
  case OP_ALL:
    return run_str_add(s, v, strlen(v));
  case OP_BASE:
    return run_str_add(s, base, strlen(base));
  case OP_DIR:
    if (slash == NULL)
      return run_str_add(s, ".", 1);
    return slash == v ? run_str_add(s, "/", 1) : run_str_add(s, v, (size_t)(slash - v));
  case OP_NOEXT:
  case OP_BASENOEXT: {
    /* Drop the last ".ext" of the last path component (parallel's
     * s:\.[^/.]*$::). */
    const char *from = op == OP_NOEXT ? v : base;
    const char *dot = strrchr(base, '.');
    size_t n = dot ? (size_t)(dot - from) : strlen(from);
    return run_str_add(s, from, n);
  }
  }
  return 0;
}

/* The values of a replacement segment, each through `emit`. */
typedef int (*emit_fn)(void *ctx, const char *v, size_t n, bool last);

static int seg_values(const struct seg *sg, const struct run_args *a, uint64_t seq, int slot,
                      struct run_str *tmp, emit_fn emit, void *ctx) {
  char num[32];
  if (sg->special) {
    int n = snprintf(num, sizeof num, "%llu",
                     (unsigned long long)(sg->special == '#' ? seq : (uint64_t)slot));
    return emit(ctx, num, (size_t)n, true);
  }
  size_t from = sg->pos ? sg->pos - 1 : 0, to = sg->pos ? sg->pos : a->n;
  if (sg->pos > a->n)
    return emit(ctx, NULL, 0, true); /* a missing argument: nothing at all */
  for (size_t i = from; i < to; i++) {
    tmp->len = 0;
    int r = apply(tmp, a->v[i], sg->op);
    if (r == 0)
      r = emit(ctx, tmp->p ? tmp->p : "", tmp->len, i + 1 == to);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Shell line: each value quoted, several separated by spaces. */
static int emit_quoted(void *ctx, const char *v, size_t n, bool last) {
  struct run_str *s = ctx;
  if (v == NULL)
    return 0;
  char *copy = strndup(v, n);
  if (copy == NULL)
    return -ENOMEM;
  int r = run_str_quote(s, copy);
  free(copy);
  return r == 0 && !last ? run_str_add(s, " ", 1) : r;
}

struct argv_ctx {
  struct run_str word; /* the word being built */
  char **argv;
  size_t argc, cap;
  bool split; /* each value is a word of its own */
};

static int argv_push(struct argv_ctx *c) {
  if (c->argc + 2 > c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    char **v = realloc(c->argv, cap * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    c->argv = v;
    c->cap = cap;
  }
  char *w = strndup(c->word.p ? c->word.p : "", c->word.len);
  if (w == NULL)
    return -ENOMEM;
  c->argv[c->argc++] = w;
  c->argv[c->argc] = NULL;
  c->word.len = 0;
  return 0;
}

static int emit_argv(void *ctx, const char *v, size_t n, bool last) {
  struct argv_ctx *c = ctx;
  if (v == NULL)
    return 0;
  int r = run_str_add(&c->word, v, n);
  return r == 0 && c->split && !last ? argv_push(c) : r;
}

static void free_argv(char **argv) {
  for (size_t i = 0; argv && argv[i]; i++)
    free(argv[i]);
  free(argv);
}

/* The direct argv of a job, or NULL in *out when the shell must decide. */
static int build_argv(const struct run_template *t, const struct run_args *a, uint64_t seq,
                      int slot, char ***out, size_t *argc) {
  struct argv_ctx c = {0};
  struct run_str tmp = {0};
  int r = 0;
  *out = NULL;
  for (size_t i = 0; r == 0 && i < t->nw; i++) {
    const struct word *w = &t->w[i];
    bool whole = w->n == 1 && w->s[0].repl;
    for (size_t k = 0; r == 0 && k < w->n; k++) {
      const struct seg *sg = &w->s[k];
      if (!sg->repl) {
        r = run_str_add(&c.word, sg->text, sg->len);
        continue;
      }
      bool multi = !sg->special && sg->pos == 0 && a->n > 1;
      if (multi && !whole) {
        r = 1; /* text glued to several values: let the shell split */
        break;
      }
      c.split = multi;
      r = seg_values(sg, a, seq, slot, &tmp, emit_argv, &c);
    }
    /* A whole-word {N} naming a missing argument vanishes, as unquoted
     * empty text does in the shell. */
    bool vanished = whole && w->s[0].pos > a->n;
    if (r == 0 && !vanished)
      r = argv_push(&c);
  }
  for (size_t i = 0; r == 0 && t->append && i < a->n; i++) {
    r = run_str_add(&c.word, a->v[i], strlen(a->v[i]));
    if (r == 0)
      r = argv_push(&c);
  }
  free(c.word.p);
  free(tmp.p);
  if (r != 0 || c.argc == 0) {
    free_argv(c.argv);
    return r > 0 || c.argc == 0 ? 0 : r;
  }
  *out = c.argv;
  *argc = c.argc;
  return 0;
}

int run_template_expand(const struct run_template *t, const struct run_args *a, uint64_t seq,
                        int slot, unsigned want, struct run_cmd *out) {
  *out = (struct run_cmd){0};
  struct run_str line = {0}, tmp = {0};
  int r = 0;
  if (!t->shell && t->nw > 0)
    r = build_argv(t, a, seq, slot, &out->argv, &out->argc);
  /* The line is only shown (joblog, dry run, timeout warning) or run by
   * the shell: a directly exec'd job nobody will see spares building it. */
  bool line_needed = out->argv == NULL || (want & RUN_WANT_LINE);
  if (r == 0 && !line_needed)
    r = run_str_add(&line, "", 0);
  else if (r == 0 && t->nw == 0) {
    /* No template: the input is the command line itself. */
    for (size_t i = 0; r == 0 && i < a->n; i++) {
      if (i > 0)
        r = run_str_add(&line, " ", 1);
      if (r == 0)
        r = run_str_add(&line, a->v[i], strlen(a->v[i]));
    }
  }
  for (size_t i = 0; r == 0 && line_needed && i < t->nw; i++) {
    if (i > 0)
      r = run_str_add(&line, " ", 1);
    const struct word *w = &t->w[i];
    if (t->no_shell && w->n == 1 && !w->s[0].repl) {
      /* -q: the words are data, shown quoted. */
      char *copy = strndup(w->s[0].text, w->s[0].len);
      r = copy ? run_str_quote(&line, copy) : -ENOMEM;
      free(copy);
      continue;
    }
    for (size_t k = 0; r == 0 && k < w->n; k++) {
      const struct seg *sg = &w->s[k];
      r = sg->repl ? seg_values(sg, a, seq, slot, &tmp, emit_quoted, &line)
                   : run_str_add(&line, sg->text, sg->len);
    }
  }
  for (size_t i = 0; r == 0 && line_needed && t->append && t->nw > 0 && i < a->n; i++) {
    r = run_str_add(&line, " ", 1);
    if (r == 0)
      r = run_str_quote(&line, a->v[i]);
  }
  if (r == 0 && line.p == NULL)
    r = run_str_add(&line, "", 0);
  if (r == 0 && (want & RUN_WANT_TAG)) {
    struct run_str tag = {0};
    for (size_t i = 0; r == 0 && i < a->n; i++) {
      if (i > 0)
        r = run_str_add(&tag, " ", 1);
      if (r == 0)
        r = run_str_add(&tag, a->v[i], strlen(a->v[i]));
    }
    if (r == 0)
      r = run_str_add(&tag, "\t", 1);
    out->tag = tag.p;
  }
  free(tmp.p);
  out->line = line.p;
  if (r < 0) {
    run_cmd_free(out);
    return -ENOMEM;
  }
  return 0;
}

void run_cmd_free(struct run_cmd *c) {
  free(c->line);
  free_argv(c->argv);
  free(c->tag);
  *c = (struct run_cmd){0};
}
