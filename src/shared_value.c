/* Value and Array: typed elements in a shared mapping (of a memfd, so it can
 * be handed to processes that did not inherit it: handoff.c).
 *
 * Design notes.  One mapping per object, laid out as
 *
 *   [0, 64)    header: magic, flags, type, element size, count
 *   [64, 192)  the RLock's storage (unused by a raw value: MPROC_VALUE_RAW)
 *   [192, ...) the elements, 16-byte aligned, so every scalar element is
 *              naturally aligned and can be used with atomics
 *
 * except that elements of at most 16 bytes in all (a scalar Value, a small
 * Array) with a lock sit at [112, 128): on the cache line of the RLock's
 * word, in the part of its storage the RLock never uses (lock.c checks
 * MPROC__RLOCK_HOT_SIZE).  A locked increment by two processes then moves
 * one cache line between them per increment, not two.  `data_off` records
 * which, and is checked like every header field of a mapping from an fd.
 *
 * The handle is the mapping's address: a child forked after mproc_value_new
 * finds the same object at the same address.  Python's Value/Array default
 * to an RLock, as here.  The atomic helpers act on one element with the GCC
 * __atomic builtins (lock-free for 1/2/4/8-byte integers on every Linux
 * target we build for) and do not take the lock: mixing them with locked
 * read-modify-write sequences on the same element is the caller's choice. */
#include "sync.h"

#include <string.h>

#define MPROC__MAGIC_VALUE 0x554c4156u /* "VALU" */
#define VALUE_HDR 64
#define VALUE_DATA (VALUE_HDR + MPROC_RLOCK_SIZE)
/* Small elements beside the lock (see above). */
#define VALUE_NEAR (VALUE_HDR + MPROC__RLOCK_HOT_SIZE)
#define VALUE_NEAR_MAX 16
_Static_assert(VALUE_NEAR % 16 == 0 && VALUE_NEAR + VALUE_NEAR_MAX <= VALUE_HDR + 64,
               "small values must fit the lock's cache line, 16-aligned");

struct mproc_value {
  struct mproc__sync_hdr hdr;
  uint32_t type;     /* mproc_type */
  uint32_t raw;      /* 1: no lock */
  uint64_t count;    /* elements */
  uint64_t elsize;   /* bytes per element */
  uint64_t mapsize;  /* bytes mapped, for munmap */
  uint64_t data_off; /* where the elements start: VALUE_NEAR or VALUE_DATA */
};

_Static_assert(sizeof(struct mproc_value) <= VALUE_HDR, "value header too big");
_Static_assert(VALUE_HDR + MPROC_RLOCK_SIZE <= VALUE_DATA, "value lock does not fit");

static size_t type_size(mproc_type t) {
  switch (t) {
  case MPROC_TYPE_INT8:
  case MPROC_TYPE_UINT8:
  case MPROC_TYPE_CHAR:
    return 1;
  case MPROC_TYPE_INT16:
  case MPROC_TYPE_UINT16:
    return 2;
  case MPROC_TYPE_INT32:
  case MPROC_TYPE_UINT32:
  case MPROC_TYPE_FLOAT:
    return 4;
  case MPROC_TYPE_INT64:
  case MPROC_TYPE_UINT64:
  case MPROC_TYPE_DOUBLE:
    return 8;
  case MPROC_TYPE_SIZE:
    return sizeof(size_t);
  default:
    return 0;
  }
}

/* Where the elements of a value of this shape start. */
static uint64_t data_off_for(bool raw, uint64_t count, uint64_t elsize) {
  return !raw && count * elsize <= VALUE_NEAR_MAX ? VALUE_NEAR : VALUE_DATA;
}

static char *data_of(const mproc_value *v) { return (char *)v + v->data_off; }
static mproc_rlock *lock_of(const mproc_value *v) {
  return (mproc_rlock *)(void *)((char *)v + VALUE_HDR);
}

/* Whether the header's shape fields agree with each other: the mapping's
 * size is the data's end, the data sits where the shape puts it, and an
 * integer element has the width of an atomic access.  Any process mapping
 * the value can scribble over the header; a field it changed alone (a
 * count, a size, an offset) no longer agrees with the others, so no
 * element is ever read or written outside the mapping.  A few compares on
 * one cache line the call reads anyway. */
static bool value_shape_ok(const mproc_value *v) {
  uint64_t bytes;
  if (v->raw > 1 || v->count == 0 || __builtin_mul_overflow(v->count, v->elsize, &bytes) ||
      bytes > UINT64_MAX - VALUE_DATA || v->mapsize != VALUE_DATA + bytes ||
      v->data_off != data_off_for(v->raw, v->count, v->elsize))
    return false;
  return v->type == MPROC_TYPE_BYTES || type_size((mproc_type)v->type) == v->elsize;
}

/* 0, MPROC_EINVAL (not a value: NULL, freed, foreign) or MPROC_ECORRUPT
 * (a value whose header was damaged). */
static int value_check(const mproc_value *v) {
  if (!mproc__sync_ok(v, MPROC__MAGIC_VALUE))
    return MPROC_EINVAL;
  return MPROC__LIKELY(value_shape_ok(v)) ? 0 : MPROC_ECORRUPT;
}

static bool value_ok(const mproc_value *v) { return value_check(v) == 0; }

struct value_args {
  mproc_type type;
  size_t count, elsize;
  const void *init; /* count * elsize bytes, or NULL for zeroes */
  bool raw;
};

static int value_setup(void *obj, const void *arg) {
  const struct value_args *a = arg;
  struct mproc_value *v = obj;
  v->type = (uint32_t)a->type;
  v->raw = a->raw;
  v->count = a->count;
  v->elsize = a->elsize;
  v->mapsize = VALUE_DATA + a->count * a->elsize;
  v->data_off = data_off_for(a->raw, a->count, a->elsize);
  if (!v->raw) {
    mproc_rlock *l;
    int r = mproc_rlock_init(&l, lock_of(v), MPROC_RLOCK_SIZE);
    if (r != 0)
      return r;
  }
  if (a->init != NULL)
    memcpy(data_of(v), a->init, a->count * a->elsize); /* a fresh mapping is zeroed otherwise */
  return 0;
}

static size_t value_size_of(const void *obj) { return ((const struct mproc_value *)obj)->mapsize; }

/* Refused while the caller holds the lock (MPROC_EBUSY). */
static int value_retire(void *obj) {
  const struct mproc_value *v = obj;
  return v->raw ? 0 : mproc_rlock_destroy(lock_of(v));
}

/* Mapped from an fd, refused while the caller holds the lock. */
static int value_detach(void *obj) {
  const struct mproc_value *v = obj;
  return v->raw ? 0 : mproc__rlock_detach(lock_of(v));
}

/* A header read from an fd: a known type whose element size matches, a
 * count that fits the mapping (checked against mapsize by the caller). */
static bool value_valid(const void *obj) {
  const struct mproc_value *v = obj;
  return value_shape_ok(v) && (v->raw || mproc__sync_ok(lock_of(v), MPROC__MAGIC_RLOCK));
}

static const struct mproc__sync_kind value_kind = {.magic = MPROC__MAGIC_VALUE,
                                                   .size_of = value_size_of,
                                                   .setup = value_setup,
                                                   .retire = value_retire,
                                                   .valid = value_valid,
                                                   .unmap_damaged = true,
                                                   .detach = value_detach};

MPROC_EXTERN int mproc_array_new(mproc_value **out, mproc_type type, size_t count, const void *init,
                                 const struct mproc_value_options *opts) {
  if (out == NULL || count == 0)
    return MPROC_EINVAL;
  if (opts != NULL && (opts->flags & ~MPROC_VALUE_RAW) != 0)
    return MPROC_EINVAL;
  size_t elsize;
  if (type == MPROC_TYPE_BYTES) {
    elsize = opts != NULL ? opts->elem_size : 0;
    if (elsize == 0)
      return MPROC_EINVAL;
  } else {
    elsize = type_size(type);
    if (elsize == 0 || (opts != NULL && opts->elem_size != 0 && opts->elem_size != elsize))
      return MPROC_EINVAL;
  }
  if (count > (SIZE_MAX - VALUE_DATA) / elsize)
    return MPROC_EOVERFLOW;
  struct value_args a = {type, count, elsize, init,
                         opts != NULL && (opts->flags & MPROC_VALUE_RAW)};
  return mproc__sync_new(&value_kind, out, VALUE_DATA + count * elsize, &a);
}

MPROC_EXTERN int mproc_value_new(mproc_value **out, mproc_type type, const void *init,
                                 const struct mproc_value_options *opts) {
  return mproc_array_new(out, type, 1, init, opts);
}

MPROC_EXTERN int mproc_value_free(mproc_value *v) {
  return mproc__sync_teardown(&value_kind, v, true);
}

MPROC_EXTERN int mproc_value_from_fd(mproc_value **out, int fd) {
  return mproc__obj_attach(&value_kind, fd, out);
}

MPROC_EXTERN void *mproc_value_ptr(const mproc_value *v) { return value_ok(v) ? data_of(v) : NULL; }

MPROC_EXTERN size_t mproc_value_count(const mproc_value *v) { return value_ok(v) ? v->count : 0; }

MPROC_EXTERN size_t mproc_value_elem_size(const mproc_value *v) {
  return value_ok(v) ? v->elsize : 0;
}

MPROC_EXTERN int mproc_value_get_lock(const mproc_value *v, mproc_rlock **lock) {
  if (lock == NULL)
    return MPROC_EINVAL;
  int r = value_check(v);
  if (r != 0)
    return r;
  if (v->raw)
    return MPROC_ESTATE;
  *lock = lock_of(v);
  return 0;
}

static int range_ok(const mproc_value *v, size_t index, size_t n) {
  return index <= v->count && n <= v->count - index ? 0 : MPROC_ERANGE;
}

/* Copy under the lock.  A lock inherited from a dead holder is reported but
 * repaired at once: the copy is whole, the caller decides what the data is
 * worth. */
static int locked_copy(mproc_value *v, void *dst, const void *src, size_t len, int64_t timeout_ms) {
  int r = 0;
  if (!v->raw) {
    r = mproc_rlock_acquire(lock_of(v), timeout_ms);
    if (r != 0 && r != MPROC_EOWNERDEAD)
      return r;
    if (r == MPROC_EOWNERDEAD)
      mproc_rlock_consistent(lock_of(v));
  }
  memcpy(dst, src, len);
  if (!v->raw)
    mproc_rlock_release(lock_of(v));
  return r;
}

/* Copies n elements from `index` on out of the value (into `out`) or into
 * it (from `in`); the other pointer is NULL. */
static int copy_elems(mproc_value *v, size_t index, size_t n, void *out, const void *in,
                      int64_t timeout_ms) {
  if (!mproc__obj_mapped(v) || (out == NULL && in == NULL && n > 0) ||
      mproc__check_timeout(timeout_ms) != 0)
    return MPROC_EINVAL;
  int r = value_check(v);
  if (r == 0)
    r = range_ok(v, index, n);
  if (r != 0 || n == 0)
    return r;
  char *at = data_of(v) + index * v->elsize;
  size_t len = n * v->elsize;
  if (out != NULL)
    return locked_copy(v, out, at, len, timeout_ms);
  return in != NULL ? locked_copy(v, at, in, len, timeout_ms) : MPROC_EINVAL; /* checked above */
}

MPROC_EXTERN int mproc_value_get(mproc_value *v, size_t index, size_t n, void *out,
                                 int64_t timeout_ms) {
  return copy_elems(v, index, n, out, NULL, timeout_ms);
}

MPROC_EXTERN int mproc_value_set(mproc_value *v, size_t index, size_t n, const void *in,
                                 int64_t timeout_ms) {
  return copy_elems(v, index, n, NULL, in, timeout_ms);
}

static bool is_integer(uint32_t t) {
  return t != MPROC_TYPE_FLOAT && t != MPROC_TYPE_DOUBLE && t != MPROC_TYPE_BYTES;
}

static bool is_signed(uint32_t t) {
  return t == MPROC_TYPE_INT8 || t == MPROC_TYPE_INT16 || t == MPROC_TYPE_INT32 ||
         t == MPROC_TYPE_INT64 || (t == MPROC_TYPE_CHAR && (char)-1 < 0);
}

/* The element's bits widened to int64_t as C converts the element type. */
static int64_t widen(uint32_t t, size_t size, uint64_t bits) {
  switch (size) {
  case 1:
    return is_signed(t) ? (int64_t)(int8_t)bits : (int64_t)(uint8_t)bits;
  case 2:
    return is_signed(t) ? (int64_t)(int16_t)bits : (int64_t)(uint16_t)bits;
  case 4:
    return is_signed(t) ? (int64_t)(int32_t)bits : (int64_t)(uint32_t)bits;
  default:
    return (int64_t)bits;
  }
}

/* The address of integer element `index` for an atomic operation.  `need` is
 * the caller's pointer argument that must not be NULL (v itself when the
 * operation has none), so every check of the call is made here. */
static int int_elem(mproc_value *v, size_t index, const void *need, void **p) {
  if (need == NULL)
    return MPROC_EINVAL;
  int r = value_check(v);
  if (r != 0)
    return r;
  if (!is_integer(v->type))
    return MPROC_ENOTSUP;
  if (index >= v->count)
    return MPROC_ERANGE;
  *p = data_of(v) + index * v->elsize;
  return 0;
}

#define MPROC__ATOMIC_SWITCH(size, OP)                                                             \
  switch (size) {                                                                                  \
  case 1:                                                                                          \
    OP(uint8_t);                                                                                   \
    break;                                                                                         \
  case 2:                                                                                          \
    OP(uint16_t);                                                                                  \
    break;                                                                                         \
  case 4:                                                                                          \
    OP(uint32_t);                                                                                  \
    break;                                                                                         \
  default:                                                                                         \
    OP(uint64_t);                                                                                  \
    break;                                                                                         \
  }

MPROC_EXTERN int mproc_value_fetch_add(mproc_value *v, size_t index, int64_t delta, int64_t *old) {
  void *p;
  int r = int_elem(v, index, v, &p);
  if (r != 0)
    return r;
  uint64_t prev = 0;
#define ADD(T) prev = __atomic_fetch_add((T *)p, (T)(uint64_t)delta, __ATOMIC_SEQ_CST)
  MPROC__ATOMIC_SWITCH(v->elsize, ADD)
#undef ADD
  if (old != NULL)
    *old = widen(v->type, v->elsize, prev);
  return 0;
}

MPROC_EXTERN int mproc_value_compare_exchange(mproc_value *v, size_t index, int64_t *expected,
                                              int64_t desired) {
  void *p;
  int r = int_elem(v, index, expected, &p);
  if (r != 0)
    return r;
  bool ok = false;
  uint64_t cur = 0;
#define CAS(T)                                                                                     \
  do {                                                                                             \
    T e = (T)(uint64_t)*expected;                                                                  \
    ok = __atomic_compare_exchange_n((T *)p, &e, (T)(uint64_t)desired, false, __ATOMIC_SEQ_CST,    \
                                     __ATOMIC_SEQ_CST);                                            \
    cur = e;                                                                                       \
  } while (0)
  MPROC__ATOMIC_SWITCH(v->elsize, CAS)
#undef CAS
  if (!ok)
    *expected = widen(v->type, v->elsize, cur);
  return ok ? 1 : 0;
}

MPROC_EXTERN int mproc_value_load(mproc_value *v, size_t index, int64_t *out) {
  void *p;
  int r = int_elem(v, index, out, &p);
  if (r != 0)
    return r;
  uint64_t bits = 0;
#define LOAD(T) bits = __atomic_load_n((T *)p, __ATOMIC_SEQ_CST)
  MPROC__ATOMIC_SWITCH(v->elsize, LOAD)
#undef LOAD
  *out = widen(v->type, v->elsize, bits);
  return 0;
}

MPROC_EXTERN int mproc_value_store(mproc_value *v, size_t index, int64_t value) {
  void *p;
  int r = int_elem(v, index, v, &p);
  if (r != 0)
    return r;
#define STORE(T) __atomic_store_n((T *)p, (T)(uint64_t)value, __ATOMIC_SEQ_CST)
  MPROC__ATOMIC_SWITCH(v->elsize, STORE)
#undef STORE
  return 0;
}
