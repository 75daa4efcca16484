/* Pool statistics: counters, worker states, CPU time and memory.
 *
 * Design notes.  The counters live in the pool and its slots and change
 * under the pool mutex (task_done, the transport's result collection, the
 * manager's death handling); a stats call copies them, with each slot's pid
 * and running task, in one short lock hold.  The expensive part -- three
 * small /proc reads per worker -- happens after the unlock, so a monitor
 * polling 100 times a second never holds up dispatch or result collection.
 * A worker may exit between the copy and the reads: its /proc files are
 * then gone (or belong to a zombie) and its CPU and memory read as zero.
 *
 * The recent throughput is re-sampled when the previous sample is at least
 * 250 ms old, so it tracks the last moments of a run rather than its whole
 * lifetime (throughput_avg gives that). */
#include "pool.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t len) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n;
  while ((n = read(fd, buf, len - 1)) < 0 && errno == EINTR) {
  }
  close(fd);
  if (n < 0)
    return -1;
  buf[n] = '\0';
  return n;
}

/* CPU times from /proc/<pid>/stat. */
static void read_cpu(pid_t pid, struct mproc_worker_stats *w) {
  struct mproc__pstat ps;
  if (mproc__proc_stat(NULL, pid, &ps) != 0)
    return;
  long hz = sysconf(_SC_CLK_TCK);
  w->cpu_user_s = (double)ps.utime / (double)hz;
  w->cpu_system_s = (double)ps.stime / (double)hz;
}

static void read_mem(pid_t pid, struct mproc_worker_stats *w) {
  char buf[2048];
  unsigned long long size, res;
  if (read_proc(pid, "statm", buf, sizeof buf) > 0 && sscanf(buf, "%llu %llu", &size, &res) == 2)
    w->rss = (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
  if (read_proc(pid, "status", buf, sizeof buf) > 0) {
    const char *h = strstr(buf, "VmHWM:");
    unsigned long long kb;
    if (h != NULL && sscanf(h + 6, " %llu", &kb) == 1)
      w->peak_rss = (size_t)kb * 1024;
  }
}

MPROC_EXTERN int mproc_pool_stats(mproc_pool *p, struct mproc_pool_stats *st,
                                  struct mproc_worker_stats *ws, size_t n) {
  if (p == NULL || (ws == NULL && n > 0))
    return MPROC_EINVAL;
  if (mproc__pool_foreign(p))
    return MPROC_ESTATE;
  size_t k = n < (size_t)p->nworkers ? n : (size_t)p->nworkers;
  if (k > 0)
    memset(ws, 0, k * sizeof *ws);
  struct mproc_pool_stats s = {.workers = p->nworkers};
  int64_t now = mproc_now_ms();
  pthread_mutex_lock(&p->mu);
  bool live = p->slots != NULL && p->tp_state != NULL;
  for (int i = 0; live && i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    int64_t since = 0;
    struct mproc__task *t = sl->alive ? mproc__worker_running(p, i, &since) : NULL;
    if (t != NULL)
      s.running++;
    if ((size_t)i >= k)
      continue;
    struct mproc_worker_stats *w = &ws[i];
    w->pid = sl->pid;
    w->tasks_done = sl->n_done;
    w->tasks_failed = sl->n_failed;
    w->replaced = sl->n_replaced;
    if (!sl->alive)
      w->state = MPROC_WORKER_NONE;
    else if (sl->stopping)
      w->state = MPROC_WORKER_EXITING;
    else if (t != NULL)
      w->state = MPROC_WORKER_BUSY;
    else if (!mproc__worker_ready(p, i))
      w->state = MPROC_WORKER_STARTING;
    else
      w->state = MPROC_WORKER_IDLE;
    if (t != NULL) {
      w->task_id = t->id;
      w->task_ms = now > since ? now - since : 0;
    }
  }
  s.queued = p->outstanding > s.running ? p->outstanding - s.running : 0;
  s.done = p->n_done;
  s.failed = p->n_failed;
  s.cancelled = p->n_cancelled;
  s.retried = p->n_retried;
  uint64_t finished = s.done + s.failed + s.cancelled;
  s.uptime_ms = now - p->created_ms;
  if (s.uptime_ms > 0)
    s.throughput_avg = (double)finished * 1000.0 / (double)s.uptime_ms;
  if (p->rate_ms == 0) {
    p->rate_ms = p->created_ms;
    p->rate = s.throughput_avg;
  }
  if (now - p->rate_ms >= 250) {
    p->rate = (double)(finished - p->rate_n) * 1000.0 / (double)(now - p->rate_ms);
    p->rate_ms = now;
    p->rate_n = finished;
  }
  s.throughput = p->rate;
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < k; i++)
    if (ws[i].pid > 0) {
      read_cpu(ws[i].pid, &ws[i]);
      read_mem(ws[i].pid, &ws[i]);
    }
  if (st != NULL)
    *st = s;
  return (int)k;
}
