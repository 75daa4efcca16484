/* S18: a live table of the pool's workers while a map runs */
#include <mproc.h>
#include <stdio.h>
#include <time.h>

static int slow_square(const void *in, void *out) {
  struct timespec ts = {0, 5000000}; /* 5 ms of "work" per item */
  nanosleep(&ts, NULL);
  *(int *)out = *(const int *)in * *(const int *)in;
  return 0;
}

static const char *state_name(int s) {
  static const char *names[] = {"none", "starting", "idle", "busy", "exiting"};
  return s >= 0 && s <= 4 ? names[s] : "?";
}

static void print_table(mproc_pool *pool) {
  struct mproc_pool_stats st;
  struct mproc_worker_stats ws[64];
  int n = mproc_pool_stats(pool, &st, ws, 64);
  printf("queued %llu running %llu done %llu failed %llu | %.0f tasks/s\n",
         (unsigned long long)st.queued, (unsigned long long)st.running, (unsigned long long)st.done,
         (unsigned long long)st.failed, st.throughput);
  printf("  %7s %-8s %6s %7s %6s %8s %8s %8s\n", "pid", "state", "task", "ran ms", "done", "cpu s",
         "rss KiB", "peak KiB");
  for (int i = 0; i < n; i++)
    printf("  %7d %-8s %6llu %7lld %6llu %8.2f %8zu %8zu\n", (int)ws[i].pid,
           state_name(ws[i].state), (unsigned long long)ws[i].task_id, (long long)ws[i].task_ms,
           (unsigned long long)ws[i].tasks_done, ws[i].cpu_user_s + ws[i].cpu_system_s,
           ws[i].rss / 1024, ws[i].peak_rss / 1024);
}

int main(void) {
  mproc_pool *pool;
  if (mproc_pool_new(&pool, &(struct mproc_pool_options){.workers = 4}) != 0)
    return 1;
  static int in[400], out[400];
  for (int i = 0; i < 400; i++)
    in[i] = i;
  mproc_future *map;
  struct mproc_map_options o = {.chunksize = 10};
  mproc_pool_map_async(pool, slow_square, in, 400, sizeof in[0], out, sizeof out[0], &o, &map);
  while (mproc_future_wait(map, 200) == MPROC_ETIMEDOUT) /* a table every 200 ms */
    print_table(pool);
  printf("map finished: out[399] = %d\n", out[399]);
  print_table(pool);
  mproc_future_free(map);
  mproc_pool_free(pool);
  return 0;
}
