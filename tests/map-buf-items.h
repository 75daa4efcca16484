/* Item functions and packed items shared by the map_buf, map_packed and
 * map_bytes suites. */
#ifndef MPROC_TEST_MAP_BUF_ITEMS_H
#define MPROC_TEST_MAP_BUF_ITEMS_H

#include "pool-helpers.h"

/* The result is the item reversed, followed by ":<length>" in decimal;
 * items over 4096 bytes fail with code 7 and a message. */
static inline int reverse_len(const void *in, size_t len, mproc_item_ctx *ctx) {
  char buf[4096 + 32];
  if (len > 4096)
    return mproc_item_fail(ctx, 7, "item of %zu bytes is too long", len);
  const char *s = in;
  for (size_t i = 0; i < len; i++)
    buf[i] = s[len - 1 - i];
  int k = snprintf(buf + len, 32, ":%zu", len);
  return mproc_item_return(ctx, buf, len + (size_t)k);
}

/* Blocks until S->release (or until its worker is killed). */
static inline int block_item(const void *in, size_t len, mproc_item_ctx *ctx) {
  return task_block(in, len, NULL) == 0 && ctx != NULL ? 0 : 1;
}

/* The item "big" returns `BIG` bytes, more than a chunk's results area
 * holds (counted in S->count); "gib" returns a big result, then its own
 * bytes in its place; "bag" the other way round. */
#define BIG ((size_t)20 << 20)
static inline int big_result(const void *in, size_t len, mproc_item_ctx *ctx) {
  bool gib = len == 3 && memcmp(in, "gib", 3) == 0, bag = len == 3 && memcmp(in, "bag", 3) == 0;
  if (bag && mproc_item_return(ctx, in, len) != 0)
    return 98;
  if (len != 3 || (memcmp(in, "big", 3) != 0 && !gib && !bag))
    return mproc_item_return(ctx, in, len);
  atomic_fetch_add(&S->count, 1);
  char *b = malloc(BIG);
  if (b == NULL)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < BIG; i++)
    b[i] = (char)('a' + i % 23);
  int r = mproc_item_return(ctx, b, BIG);
  free(b);
  if (r == 0 && gib)
    r = mproc_item_return(ctx, in, len); /* the second result replaces the first */
  return r;
}

/* r is a "big" result: BIG bytes of the pattern. */
static inline void check_big_bytes(const struct mproc_buf *r) {
  ck_assert_uint_eq(r->len, BIG);
  const char *b = r->data;
  for (size_t i = 0; i < BIG; i += 4099)
    ck_assert_int_eq(b[i], 'a' + (int)(i % 23));
}

/* ---- packed items (the map_packed and map_bytes suites) ---- */

/* Packed items built one by one. */
struct items {
  char *data;
  size_t *ends, n, used, cap;
};

static inline void items_add(struct items *it, const void *bytes, size_t len) {
  if (it->used + len > it->cap) {
    it->cap = (it->used + len) * 2 + 64;
    it->data = realloc(it->data, it->cap);
    ck_assert_ptr_nonnull(it->data);
  }
  it->ends = realloc(it->ends, (it->n + 1) * sizeof *it->ends);
  ck_assert_ptr_nonnull(it->ends);
  if (len > 0)
    memcpy(it->data + it->used, bytes, len);
  it->used += len;
  it->ends[it->n++] = it->used;
}

static inline void items_add_str(struct items *it, const char *s) { items_add(it, s, strlen(s)); }

static inline struct mproc_packed items_packed(const struct items *it) {
  return (struct mproc_packed){it->data, it->ends, it->n};
}

static inline void items_free(struct items *it) {
  free(it->data);
  free(it->ends);
  *it = (struct items){0};
}

/* Item i of a packed set. */
static inline struct mproc_buf packed_item(const struct mproc_packed *p, size_t i) {
  size_t from = i > 0 ? p->ends[i - 1] : 0;
  return (struct mproc_buf){(const char *)p->data + from, p->ends[i] - from};
}

static inline void assert_item_eq(const struct mproc_packed *p, size_t i, const char *want) {
  struct mproc_buf b = packed_item(p, i);
  ck_assert_msg(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0,
                "item %zu: \"%.*s\", want \"%s\"", i, (int)b.len, (const char *)b.data, want);
}

/* reverse_len's result set over `in`. */
static inline void check_reversed_packed(const struct mproc_packed *out,
                                         const struct mproc_packed *in) {
  ck_assert_uint_eq(out->n, in->n);
  for (size_t i = 0; i < in->n; i++) {
    struct mproc_buf a = packed_item(in, i), r = packed_item(out, i);
    char tail[32];
    int k = snprintf(tail, sizeof tail, ":%zu", a.len);
    ck_assert_uint_eq(r.len, a.len + (size_t)k);
    const char *s = a.data, *t = r.data;
    for (size_t j = 0; j < a.len; j++)
      ck_assert_int_eq(t[j], s[a.len - 1 - j]);
    ck_assert(memcmp(t + a.len, tail, (size_t)k) == 0);
  }
}

/* Items of 0 .. 2999 bytes, empty ones too. */
static inline void strings_of_any_length(struct items *it, size_t n) {
  char buf[3000];
  for (size_t i = 0; i < n; i++) {
    size_t len = (i * 37) % 3000;
    for (size_t j = 0; j < len; j++)
      buf[j] = (char)('a' + (i + j) % 26);
    items_add(it, buf, len);
  }
}

#endif /* MPROC_TEST_MAP_BUF_ITEMS_H */
