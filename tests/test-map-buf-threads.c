/* ctest-labels: threads */
/* The results of mproc_pool_map_buf handed between threads: threads map
 * over two pools at once, each freeing result sets another thread made,
 * and a pool is freed while threads still hold and read its results.  The
 * registry of result sets and each pool's view of its arena (both shared
 * by every thread) must lose nothing and leave nothing mapped.  Packed
 * results (mproc_pool_map_packed) large enough to be mappings of their own
 * go through the process's cache of released mappings from every thread. */
#include "pool-helpers.h"

#define THREADS 3
#define ROUNDS 12
#define N 400
#define HELD 8

/* The result: the item's bytes reversed. */
static int reverse(const void *in, size_t len, mproc_item_ctx *ctx) {
  char buf[64];
  if (len > sizeof buf)
    return mproc_item_fail(ctx, 7, "item of %zu bytes", len);
  for (size_t i = 0; i < len; i++)
    buf[i] = ((const char *)in)[len - 1 - i];
  return mproc_item_return(ctx, buf, len);
}

/* A result set and what it must hold: the items "<i>.<seed>" reversed. */
struct held {
  struct mproc_buf *out;
  unsigned seed;
};

struct shelf {
  pthread_mutex_t mu;
  struct held slot[HELD];
};

/* 0 when every result of a set made with `seed` is right. */
static int check_set(const struct held *h) {
  for (size_t i = 0; i < N; i++) {
    char want[40], got[40];
    int k = snprintf(want, sizeof want, "%zu.%u", i, h->seed);
    for (int j = 0; j < k; j++)
      got[j] = want[k - 1 - j];
    got[k] = '\0';
    const struct mproc_buf *r = &h->out[i];
    if (r->len != (size_t)k || (uintptr_t)r->data % 16 != 0 || strcmp(r->data, got) != 0)
      return -1;
  }
  return 0;
}

/* Maps with `seed` on pool p: 0, or a failure. */
static int make_set(mproc_pool *p, unsigned seed, struct held *h) {
  static _Thread_local char text[N][40];
  struct mproc_buf in[N];
  for (size_t i = 0; i < N; i++) {
    int k = snprintf(text[i], sizeof text[i], "%zu.%u", i, seed);
    in[i] = (struct mproc_buf){text[i], (size_t)k};
  }
  struct mproc_map_options o = {.chunksize = 37};
  h->seed = seed;
  int r = mproc_pool_map_buf(p, reverse, in, N, &h->out, &o, NULL, 60000);
  return r != 0 ? r : check_set(h);
}

/* Swaps h with the shelf's slot k (under its lock): a thread frees what
 * another left there. */
static void swap_slot(struct shelf *s, size_t k, struct held *h) {
  pthread_mutex_lock(&s->mu);
  struct held t = s->slot[k];
  s->slot[k] = *h;
  *h = t;
  pthread_mutex_unlock(&s->mu);
}

struct targ {
  mproc_pool *pool[2];
  struct shelf *shelf;
  unsigned id;
  int result;
};

static void *mapper(void *arg) {
  struct targ *a = arg;
  for (unsigned r = 0; r < ROUNDS && a->result == 0; r++) {
    struct held h;
    a->result = make_set(a->pool[(a->id + r) % 2], a->id * 1000 + r, &h);
    if (a->result != 0)
      break;
    swap_slot(a->shelf, (a->id * 5 + r * 3) % HELD, &h);
    if (h.out != NULL && (a->result = check_set(&h)) == 0)
      mproc_bufs_free(h.out);
  }
  return NULL;
}

START_TEST(test_result_sets_cross_threads_and_outlive_their_pool) {
  int maps = mproc_test_count_shared_maps();
  struct shelf shelf = {.mu = PTHREAD_MUTEX_INITIALIZER};
  struct targ a[THREADS];
  pthread_t t[THREADS];
  mproc_pool *p0 = make_pool(2), *p1 = make_pool(1);
  for (unsigned i = 0; i < THREADS; i++) {
    a[i] = (struct targ){{p0, p1}, &shelf, i, 0};
    ck_assert_int_eq(pthread_create(&t[i], NULL, mapper, &a[i]), 0);
  }
  for (unsigned i = 0; i < THREADS; i++) {
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    mproc_assert_ok(a[i].result);
  }
  /* The shelf holds sets of both pools: free one pool, then let threads
   * read and free every held set while one more maps on the other pool. */
  mproc_assert_ok(mproc_pool_free(p0));
  for (unsigned i = 0; i < THREADS; i++) {
    a[i] = (struct targ){{p1, p1}, &shelf, 10 + i, 0};
    ck_assert_int_eq(pthread_create(&t[i], NULL, mapper, &a[i]), 0);
  }
  for (unsigned i = 0; i < THREADS; i++) {
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    mproc_assert_ok(a[i].result);
  }
  for (size_t k = 0; k < HELD; k++) {
    if (shelf.slot[k].out != NULL) {
      ck_assert_int_eq(check_set(&shelf.slot[k]), 0);
      mproc_bufs_free(shelf.slot[k].out);
    }
  }
  mproc_assert_ok(mproc_pool_free(p1));
  ck_assert_int_eq(mproc_test_count_shared_maps(), maps);
}
END_TEST

/* Packed maps whose ends array is over 4 MiB: one byte an item, the
 * result its successor. */
#define PACKED_N ((size_t)600000)

static int next_byte(const void *in, size_t len, mproc_item_ctx *ctx) {
  unsigned char b = len == 1 ? (unsigned char)(*(const unsigned char *)in + 1) : 0;
  return mproc_item_return(ctx, &b, 1);
}

struct parg {
  mproc_pool *pool;
  unsigned id;
  int result;
};

static void *packed_mapper(void *arg) {
  struct parg *a = arg;
  unsigned char *data = malloc(PACKED_N);
  size_t *ends = malloc(PACKED_N * sizeof *ends);
  if (data == NULL || ends == NULL)
    a->result = MPROC_ENOMEM;
  for (size_t i = 0; a->result == 0 && i < PACKED_N; i++) {
    data[i] = (unsigned char)(i * 7 + a->id);
    ends[i] = i + 1;
  }
  struct mproc_packed in = {data, ends, PACKED_N}, out;
  for (unsigned r = 0; r < 3 && a->result == 0; r++) {
    a->result = mproc_pool_map_packed(a->pool, next_byte, &in, &out, NULL, NULL, 120000);
    for (size_t i = 0; a->result == 0 && i < PACKED_N; i += 997) {
      const unsigned char *got = out.data;
      if (out.ends[i] != i + 1 || got[i] != (unsigned char)(data[i] + 1))
        a->result = -1;
    }
    mproc_packed_free(&out);
  }
  free(data);
  free(ends);
  return NULL;
}

START_TEST(test_packed_results_across_threads) {
  mproc_pool *p = make_pool(2);
  struct parg a[THREADS];
  pthread_t t[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    a[i] = (struct parg){p, i, 0};
    ck_assert_int_eq(pthread_create(&t[i], NULL, packed_mapper, &a[i]), 0);
  }
  for (unsigned i = 0; i < THREADS; i++) {
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    mproc_assert_ok(a[i].result);
  }
  mproc_assert_ok(mproc_pool_free(p));
}
END_TEST

int main(void) {
  Suite *s = suite_create("map-buf-threads");
  TCase *tc = mproc_test_tcase(s, "threads", 240);
  tcase_add_test(tc, test_result_sets_cross_threads_and_outlive_their_pool);
  tcase_add_test(tc, test_packed_results_across_threads);
  return mproc_test_run(s);
}
