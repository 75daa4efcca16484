/* S08: fetch several files in parallel, one item per (url, filename) pair */
/* The pairs are strings of any length: each item packs "url\0filename\0"
 * and mproc_pool_map_buf carries items and results of any size. */
#include <mproc.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The file the server sends for /files/<name>: "<name> line k" repeated; the
 * line count depends on the name, so every file has its own size. */
static size_t make_body(const char *name, char *buf, size_t cap) {
  size_t len = 0, lines = 50 + 40 * strlen(name);
  for (size_t k = 0; k < lines && len < cap; k++)
    len += (size_t)snprintf(buf + len, cap - len, "%s line %zu\n", name, k);
  return len < cap ? len : cap;
}

/* ---- a tiny local HTTP server, run in its own process -------------------- */

static int serve(const void *arg, size_t len) {
  (void)len;
  int lfd = *(const int *)arg;
  static char body[1 << 16];
  for (;;) {
    int c = accept(lfd, NULL, NULL);
    if (c < 0 && errno == EINTR)
      continue;
    if (c < 0)
      return 1;
    struct timeval tv = {.tv_sec = 5}; /* a silent client cannot stall the others */
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[1024] = "", name[64] = "";
    size_t got = 0;
    ssize_t k;
    while (got < sizeof req - 1 && !strstr(req, "\r\n\r\n") &&
           (k = read(c, req + got, sizeof req - 1 - got)) > 0)
      got += (size_t)k;
    if (sscanf(req, "GET /files/%63[a-z0-9.] HTTP/1.", name) == 1) {
      size_t n = make_body(name, body, sizeof body);
      dprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
      if (write(c, body, n) != (ssize_t)n)
        perror("server write");
    } else {
      dprintf(c, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
    close(c);
  }
}

/* ---- the task: download(url, filename) ------------------------------------ */

/* A new string formatted like printf (NULL when out of memory). */
__attribute__((format(printf, 1, 2))) static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s) {
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  return s;
}

static int download(const void *item, size_t len, mproc_item_ctx *ctx) {
  const char *url = item, *filename = url + strlen(url) + 1;
  if (filename >= url + len)
    return mproc_item_fail(ctx, 1, "item is not \"url\\0filename\\0\"");
  unsigned port;
  int at = 0;
  if (sscanf(url, "http://127.0.0.1:%u%n", &port, &at) != 1 || url[at] != '/')
    return mproc_item_fail(ctx, 1, "not a local http URL: %s", url);
  const char *path = url + at;
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {.tv_sec = 10}; /* never hang on a silent server */
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(s);
    return 2;
  }
  dprintf(s, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  static char resp[1 << 17];
  size_t got = 0;
  ssize_t k;
  while (got < sizeof resp - 1 && (k = read(s, resp + got, sizeof resp - 1 - got)) > 0)
    got += (size_t)k;
  close(s);
  resp[got] = '\0';
  char *body = strstr(resp, "\r\n\r\n");
  if (strncmp(resp, "HTTP/1.0 200", 12) != 0 || !body)
    return 3;
  body += 4;
  FILE *f = fopen(filename, "wb");
  size_t n = got - (size_t)(body - resp);
  if (!f || fwrite(body, 1, n, f) != n || fclose(f) != 0)
    return 4;
  long written = (long)n;
  return mproc_item_return(ctx, &written, sizeof written); /* bytes written */
}

int main(void) {
  /* The server listens on 127.0.0.1, on a port the kernel picks. */
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t salen = sizeof sa;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 16) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) {
    perror("listen");
    return 1;
  }
  printf("serving on http://127.0.0.1:%u/files/\n", ntohs(sa.sin_port));
  mproc_process *server;
  if (mproc_process_new(&server, serve, &lfd, sizeof lfd, NULL) != 0 ||
      mproc_process_start(server) != 0)
    return 1;
  close(lfd); /* the server process has its own copy */

  char dir[] = "/tmp/s08-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  const char *names[] = {"a.txt", "bb.txt", "report.csv", "notes.md", "data1.json", "x.log"};
  enum { N = 6 };
  /* Each item: the URL and the file name, each NUL-terminated, of any length. */
  char *pairs[N], *urls[N], *files[N];
  struct mproc_buf items[N];
  for (int i = 0; i < N; i++) {
    urls[i] = format("http://127.0.0.1:%u/files/%s", ntohs(sa.sin_port), names[i]);
    files[i] = format("%s/%s", dir, names[i]);
    pairs[i] = format("%s%c%s", urls[i] ? urls[i] : "", '\0', files[i] ? files[i] : "");
    if (!urls[i] || !files[i] || !pairs[i])
      return 1;
    items[i] = (struct mproc_buf){pairs[i], strlen(urls[i]) + strlen(files[i]) + 2};
  }

  /* pool.starmap(download, zip(urls, files)) */
  mproc_pool *pool;
  struct mproc_buf *results = NULL;
  struct mproc_task_error err;
  int r = mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4});
  if (r == 0) {
    r = mproc_pool_map_buf(pool, download, items, N, &results,
                           &(struct mproc_map_options){.chunksize = 1}, &err, 30000);
    mproc_pool_free(pool);
  }
  mproc_process_terminate(server, 0);
  mproc_process_join(server, 10000);
  mproc_process_free(server);
  if (r != 0)
    fprintf(stderr, "map_buf: %s (item %zu: %s)\n", mproc_strerror(r), err.index, err.message);

  /* Check every fetched file against what the server sent. */
  int ok = 0;
  static char want[1 << 16], have[1 << 16];
  for (int i = 0; i < N && r == 0; i++) {
    size_t wn = make_body(names[i], want, sizeof want);
    FILE *f = fopen(files[i], "rb");
    size_t hn = f ? fread(have, 1, sizeof have, f) : 0;
    if (f)
      fclose(f);
    long size = -1;
    if (results[i].len == sizeof size)
      memcpy(&size, results[i].data, sizeof size);
    int same = hn == wn && (long)hn == size && memcmp(want, have, wn) == 0;
    printf("GET %-22s -> %-10s %5ld bytes %s\n", strstr(urls[i], "/files/"), names[i], size,
           same ? "ok" : "MISMATCH");
    ok += same;
  }
  mproc_bufs_free(results);
  for (int i = 0; i < N; i++) {
    unlink(files[i]);
    free(urls[i]);
    free(files[i]);
    free(pairs[i]);
  }
  rmdir(dir);
  printf("downloaded %d of %d files\n", ok, N);
  return ok == N ? 0 : 1;
}
