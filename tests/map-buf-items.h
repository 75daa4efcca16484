/* Item functions shared by the map_buf and map_packed suites. */
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

#endif /* MPROC_TEST_MAP_BUF_ITEMS_H */
