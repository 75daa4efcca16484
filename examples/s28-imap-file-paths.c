/* S28: imap over file paths of any length, made one by one by a generator */
#include <mproc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Python:
 *   for counts in pool.imap(count_words, paths_from_a_generator()):
 *       print(counts)
 * The paths are strings of any length: the items of mproc_pool_imap_buf are
 * byte strings, and so are its results.  The generator is called on the
 * thread that reads the results, only as far ahead as the pool can take
 * (max_inflight), so a generator over a million paths runs in bounded
 * memory. */

enum { FILES = 6, MISSING = 3 /* this one is never written: its item fails */ };

/* The item function: the item is a path (sent with its NUL); the result is
 * a line of text, as long as it needs to be. */
static int count_words(const void *in, size_t len, mproc_item_ctx *ctx) {
  (void)len;
  const char *path = in;
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return mproc_item_fail(ctx, -errno, "cannot open a path of %zu bytes: %s", strlen(path),
                           strerror(errno));
  long lines = 0, words = 0;
  int c, in_word = 0;
  while ((c = getc(f)) != EOF) {
    lines += c == '\n';
    int space = c == ' ' || c == '\n' || c == '\t';
    words += !space && !in_word;
    in_word = !space;
  }
  fclose(f);
  char text[96];
  int n = snprintf(text, sizeof text, "%ld line%s, %ld words", lines, lines == 1 ? "" : "s", words);
  return mproc_item_return(ctx, text, (size_t)n + 1);
}

/* The generator: path i of `dir`, written into one buffer that is reused for
 * every item (an item's bytes need stay valid only until the next call). */
struct paths {
  const char *dir;
  int next;
  char path[1024];
};
static int next_path(void *ctx, struct mproc_buf *item) {
  struct paths *g = ctx;
  if (g->next == FILES)
    return 0; /* the end */
  int n = snprintf(g->path, sizeof g->path, "%s/file-%d.txt", g->dir, g->next++);
  *item = (struct mproc_buf){g->path, (size_t)n + 1};
  return 1;
}

/* A directory whose path is longer than 300 bytes, with FILES - 1 text files
 * in it (file i has i + 1 lines of 3 words), MISSING left out. */
static int make_files(char *top, char *dir, size_t cap) {
  if (mkdtemp(top) == NULL)
    return -1;
  char sub[201];
  memset(sub, 'd', sizeof sub - 1);
  sub[sizeof sub - 1] = '\0';
  snprintf(dir, cap, "%s/%s", top, sub);
  if (mkdir(dir, 0700) != 0)
    return -1;
  size_t len = strlen(dir);
  snprintf(dir + len, cap - len, "/%.120s", sub);
  if (mkdir(dir, 0700) != 0)
    return -1;
  for (int i = 0; i < FILES; i++) {
    if (i == MISSING)
      continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/file-%d.txt", dir, i);
    FILE *f = fopen(path, "w");
    if (f == NULL)
      return -1;
    for (int k = 0; k <= i; k++)
      fprintf(f, "line %d of file %d\n", k, i);
    fclose(f);
  }
  return 0;
}

static void remove_files(const char *top, char *dir) {
  for (int i = 0; i < FILES; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/file-%d.txt", dir, i);
    unlink(path);
  }
  rmdir(dir);
  *strrchr(dir, '/') = '\0';
  rmdir(dir);
  rmdir(top);
}

int main(void) {
  char top[] = "/tmp/s28-XXXXXX", dir[1024];
  if (make_files(top, dir, sizeof dir) != 0) {
    perror("s28: making the files");
    return 1;
  }
  mproc_pool *pool;
  int r = mproc_pool_new(&pool, NULL);
  if (r != 0) {
    printf("pool: %s\n", mproc_strerror(r));
    remove_files(top, dir);
    return 1;
  }
  printf("%d paths of %zu bytes each\n", FILES, strlen(dir) + strlen("/file-0.txt"));
  struct paths gen = {.dir = dir};
  mproc_imap_buf *it;
  r = mproc_pool_imap_buf(pool, count_words, next_path, &gen, NULL, &it);
  int ok = 0, failed = 0;
  if (r == 0) {
    struct mproc_buf res;
    size_t i;
    struct mproc_task_error err;
    /* Results in input order; a failed item is reported at its place and
     * the iteration goes on, as each item is its own chunk by default. */
    while ((r = mproc_imap_buf_next(it, &res, &i, &err, 60000)) != MPROC_EEOF) {
      if (r == 0) {
        printf("file-%zu.txt: %s\n", i, (const char *)res.data);
        ok++;
      } else if (r == MPROC_ETASK) {
        printf("file-%zu.txt: failed: %s (%s)\n", i, err.message, mproc_err_name(err.task_code));
        failed++;
      } else {
        printf("imap: %s\n", mproc_strerror(r));
        break;
      }
    }
    mproc_imap_buf_free(it);
  } else {
    printf("imap_buf: %s\n", mproc_strerror(r));
  }
  printf("%d files counted, %d failed\n", ok, failed);
  mproc_pool_free(pool);
  remove_files(top, dir);
  return r == MPROC_EEOF && ok == FILES - 1 && failed == 1 ? 0 : 1;
}
