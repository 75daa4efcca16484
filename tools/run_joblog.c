/* mproc run: --joblog, --resume and --resume-failed.
 *
 * Design notes.  The log has GNU parallel's columns, tab-separated:
 *   Seq Host Starttime JobRuntime Send Receive Exitval Signal Command
 * Host is ":" (this machine), Send is 0 (nothing is sent to jobs), Receive
 * counts the bytes the job wrote to stdout.  One line per finished job, in
 * completion order, flushed at once so that a run that is killed leaves an
 * accurate log to resume from.  A job killed by --halt now is not logged, so
 * --resume runs it again; a timed-out job has Exitval -1.
 *
 * --resume reads the old log into a bit set of seq numbers (one bit per job,
 * so even ten million jobs cost a little over a megabyte) and appends to it;
 * --resume-failed keeps only the jobs that succeeded, so the failed ones run
 * again. */
#include "run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool run_doneset_has(const struct run_doneset *d, uint64_t seq) {
  return seq < d->nbits && (d->bits[seq / 8] >> (seq % 8) & 1);
}

static int doneset_add(struct run_doneset *d, uint64_t seq) {
  if (seq >= d->nbits) {
    uint64_t nbits = d->nbits ? d->nbits : 1024;
    while (nbits <= seq)
      nbits *= 2;
    uint8_t *b = realloc(d->bits, nbits / 8);
    if (b == NULL)
      return -ENOMEM;
    memset(b + d->nbits / 8, 0, (nbits - d->nbits) / 8);
    d->bits = b;
    d->nbits = nbits;
  }
  d->bits[seq / 8] |= (uint8_t)(1u << (seq % 8));
  return 0;
}

void run_doneset_free(struct run_doneset *d) {
  free(d->bits);
  *d = (struct run_doneset){0};
}

static int read_log(FILE *f, bool failed_too, struct run_doneset *done) {
  char *line = NULL;
  size_t cap = 0;
  int r = 0;
  while (r == 0 && getline(&line, &cap, f) >= 0) {
    char *field[8], *p = line;
    size_t n = 0;
    for (; n < 8; n++) {
      field[n] = p;
      char *tab = strchr(p, '\t');
      if (tab == NULL)
        break;
      *tab = '\0';
      p = tab + 1;
    }
    char *end;
    unsigned long long seq = strtoull(field[0], &end, 10);
    if (n < 8 || *end != '\0' || end == field[0])
      continue; /* the header, or a line cut short by a crash */
    bool ok = strtol(field[6], NULL, 10) == 0 && strtol(field[7], NULL, 10) == 0;
    if (ok || !failed_too)
      r = doneset_add(done, seq);
  }
  free(line);
  return r;
}

FILE *run_joblog_open(const char *path, bool resume, bool failed_too, struct run_doneset *done) {
  FILE *f = NULL;
  if (resume) {
    FILE *old = fopen(path, "re");
    if (old != NULL) {
      int r = read_log(old, failed_too, done);
      fclose(old);
      if (r < 0) {
        fprintf(stderr, "mproc run: %s: out of memory\n", path);
        return NULL;
      }
      f = fopen(path, "ae");
    }
  }
  bool fresh = f == NULL;
  if (fresh)
    f = fopen(path, "we");
  if (f == NULL) {
    fprintf(stderr, "mproc run: --joblog %s: %s\n", path, strerror(errno));
    return NULL;
  }
  if (fresh) {
    fputs("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n", f);
    fflush(f);
  }
  return f;
}

void run_joblog_line(FILE *f, uint64_t seq, double start_s, double runtime_s, uint64_t received,
                     int exitval, int sig, const char *cmd) {
  fprintf(f, "%llu\t:\t%.3f\t%10.3f\t0\t%llu\t%d\t%d\t%s\n", (unsigned long long)seq, start_s,
          runtime_s, (unsigned long long)received, exitval, sig, cmd);
  fflush(f);
}
