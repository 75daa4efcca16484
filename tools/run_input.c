/* mproc run: input records and the arguments of each job.
 *
 * Design notes.  Inputs stream: the first source (standard input, a file or
 * a ::: list) is read one record at a time and never held whole, so a
 * 10-million-line input costs the memory of one record.  With several
 * sources the jobs are their cross product, the last source varying
 * fastest (GNU parallel's order); every source but the first is therefore
 * read into memory once, which is what a cross product needs anyway.
 *
 *   record (sep '\n' or NUL, -0) --colsep--> columns --+
 *   ... one per source, crossed ----------------------+--> -n N records --> job args
 *
 * A record's trailing separator is dropped; an empty line is an empty
 * argument, as in parallel. */
#include "run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct reader {
  FILE *f;    /* SRC_FILE: the open file */
  bool owned; /* whether f is ours to close (not stdin) */
  const struct run_source *src;
  size_t next; /* SRC_LIST: next item */
};

struct run_input {
  struct reader first;   /* the streamed source */
  struct run_args *rest; /* sources 1..nsrc-1, each record one args entry */
  size_t nrest;
  size_t *idx; /* cross-product position in each of rest */
  char *cur;   /* the first source's current record */
  size_t cur_len;
  bool have_cur;     /* cur holds a record not yet crossed to the end */
  bool eof;          /* the first source is exhausted */
  char sep;          /* record separator */
  bool colsep;       /* whether colsep_re is set */
  regex_t colsep_re; /* --colsep */
  size_t max_args;   /* -n */
  uint64_t yielded;  /* jobs yielded so far */
  char *line;        /* getdelim buffer */
  size_t line_cap;
};

/* ---- argument vectors in an arena ------------------------------------- */

void run_args_clear(struct run_args *a) { a->n = a->len = 0; }

int run_args_push(struct run_args *a, const char *s, size_t len) {
  if (a->len + len + 1 > a->arena_cap) {
    size_t cap = a->arena_cap ? a->arena_cap : 256;
    while (cap < a->len + len + 1)
      cap *= 2;
    char *p = realloc(a->arena, cap);
    if (p == NULL)
      return -ENOMEM;
    /* Rebase the pointers into the moved arena. */
    for (size_t i = 0; i < a->n; i++)
      a->v[i] = p + (a->v[i] - a->arena);
    a->arena = p;
    a->arena_cap = cap;
  }
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 8;
    char **v = realloc(a->v, cap * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  char *dst = a->arena + a->len;
  memcpy(dst, s, len);
  dst[len] = '\0';
  a->v[a->n++] = dst;
  a->len += len + 1;
  return 0;
}

void run_args_free(struct run_args *a) {
  free(a->v);
  free(a->arena);
  *a = (struct run_args){0};
}

int run_args_copy(struct run_args *dst, const struct run_args *src) {
  run_args_clear(dst);
  for (size_t i = 0; i < src->n; i++)
    if (run_args_push(dst, src->v[i], strlen(src->v[i])) < 0)
      return -ENOMEM;
  return 0;
}

/* ---- reading records ---------------------------------------------------- */

static int reader_open(struct reader *r, const struct run_source *s) {
  *r = (struct reader){.src = s};
  if (s->kind == SRC_LIST)
    return 0;
  if (strcmp(s->path, "-") == 0) {
    r->f = stdin;
    return 0;
  }
  r->f = fopen(s->path, "re");
  if (r->f == NULL) {
    fprintf(stderr, "mproc run: %s: %s\n", s->path, strerror(errno));
    return -1;
  }
  r->owned = true;
  return 0;
}

static void reader_close(struct reader *r) {
  if (r->owned && r->f != NULL)
    fclose(r->f);
  r->f = NULL;
}

/* Next record of a reader: 1 (in->line / *len), 0 at the end, -1 on error. */
static int reader_next(struct run_input *in, struct reader *r, const char **rec, size_t *len) {
  if (r->src->kind == SRC_LIST) {
    if (r->next >= r->src->n)
      return 0;
    *rec = r->src->items[r->next++];
    *len = strlen(*rec);
    return 1;
  }
  errno = 0;
  ssize_t n = getdelim(&in->line, &in->line_cap, in->sep, r->f);
  if (n < 0) {
    if (ferror(r->f)) {
      fprintf(stderr, "mproc run: %s: %s\n", r->src->path, strerror(errno ? errno : EIO));
      return -1;
    }
    return 0;
  }
  if (n > 0 && in->line[n - 1] == in->sep)
    n--;
  *rec = in->line;
  *len = (size_t)n;
  return 1;
}

/* Appends one record to a, split into columns with --colsep. */
static int push_record(struct run_input *in, struct run_args *a, const char *rec, size_t len) {
  if (!in->colsep)
    return run_args_push(a, rec, len);
  /* regexec needs a NUL-terminated string: records never contain the
   * separator, and a NUL inside a newline-separated record ends it here. */
  char *copy = strndup(rec, len);
  if (copy == NULL)
    return -ENOMEM;
  const char *p = copy;
  regmatch_t m;
  int r = 0;
  while (r == 0 && regexec(&in->colsep_re, p, 1, &m, p == copy ? 0 : REG_NOTBOL) == 0 &&
         m.rm_eo > m.rm_so) {
    r = run_args_push(a, p, (size_t)m.rm_so);
    p += m.rm_eo;
  }
  if (r == 0)
    r = run_args_push(a, p, strlen(p));
  free(copy);
  return r;
}

int run_input_open(struct run_input **out, const struct run_opts *o) {
  static const struct run_source stdin_src = {.kind = SRC_FILE, .path = "-"};
  struct run_input *in = calloc(1, sizeof *in);
  if (in == NULL)
    return -1;
  in->sep = o->null_sep ? '\0' : '\n';
  in->max_args = o->max_args;
  if (o->colsep != NULL) {
    int e = regcomp(&in->colsep_re, o->colsep, REG_EXTENDED);
    if (e != 0) {
      fprintf(stderr, "mproc run: invalid --colsep regex '%s'\n", o->colsep);
      free(in);
      return -1;
    }
    in->colsep = true;
  }
  const struct run_source *first = o->nsrc ? &o->src[0] : &stdin_src;
  int r = reader_open(&in->first, first);
  if (r == 0 && o->nsrc > 1) {
    in->nrest = o->nsrc - 1;
    in->rest = calloc(in->nrest, sizeof *in->rest);
    in->idx = calloc(in->nrest, sizeof *in->idx);
    r = in->rest && in->idx ? 0 : -1;
    /* Load every other source whole: a cross product revisits them. */
    for (size_t s = 0; r == 0 && s < in->nrest; s++) {
      struct reader rd;
      r = reader_open(&rd, &o->src[s + 1]);
      const char *rec;
      size_t len;
      int k;
      while (r == 0 && (k = reader_next(in, &rd, &rec, &len)) > 0)
        r = run_args_push(&in->rest[s], rec, len) < 0 ? -1 : 0;
      if (r == 0 && k < 0)
        r = -1;
      reader_close(&rd);
      if (r == 0 && in->rest[s].n == 0)
        in->eof = true; /* a product with an empty factor is empty */
    }
  }
  if (r < 0) {
    run_input_close(in);
    return -1;
  }
  *out = in;
  return 0;
}

/* One tuple of the cross product into a: 1, 0 at the end, -1 on error. */
static int next_tuple(struct run_input *in, struct run_args *a) {
  if (in->eof)
    return 0;
  if (!in->have_cur) {
    const char *rec;
    size_t len;
    int r = reader_next(in, &in->first, &rec, &len);
    if (r <= 0) {
      in->eof = true;
      return r;
    }
    char *p = realloc(in->cur, len + 1);
    if (p == NULL)
      return -1;
    memcpy(p, rec, len);
    p[len] = '\0';
    in->cur = p;
    in->cur_len = len;
    in->have_cur = true;
    if (in->nrest > 0)
      memset(in->idx, 0, in->nrest * sizeof *in->idx);
  }
  if (push_record(in, a, in->cur, in->cur_len) < 0)
    return -1;
  for (size_t s = 0; s < in->nrest; s++) {
    const char *v = in->rest[s].v[in->idx[s]];
    if (push_record(in, a, v, strlen(v)) < 0)
      return -1;
  }
  /* Advance the odometer, last source fastest. */
  size_t s = in->nrest;
  while (s > 0) {
    s--;
    if (++in->idx[s] < in->rest[s].n)
      return 1;
    in->idx[s] = 0;
  }
  in->have_cur = false;
  return 1;
}

int run_input_next(struct run_input *in, struct run_args *a) {
  run_args_clear(a);
  size_t got = 0;
  while (got < in->max_args) {
    int r = next_tuple(in, a);
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    got++;
  }
  if (got == 0)
    return 0;
  in->yielded++;
  return 1;
}

uint64_t run_input_total(const struct run_input *in) {
  if (in->eof)
    return in->yielded;
  /* All ::: lists: the total is known up front. */
  if (in->first.src->kind != SRC_LIST)
    return 0;
  uint64_t n = in->first.src->n;
  for (size_t s = 0; s < in->nrest; s++)
    n *= in->rest[s].n;
  return (n + in->max_args - 1) / in->max_args;
}

void run_input_close(struct run_input *in) {
  if (in == NULL)
    return;
  reader_close(&in->first);
  for (size_t s = 0; s < in->nrest && in->rest; s++)
    run_args_free(&in->rest[s]);
  free(in->rest);
  free(in->idx);
  free(in->cur);
  free(in->line);
  if (in->colsep)
    regfree(&in->colsep_re);
  free(in);
}
