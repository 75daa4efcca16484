/* Typed convenience over the byte-level map and imap: element sizes come
 * from the types, and a mismatch between an array and the element function
 * is a compile-time error instead of silent corruption.
 *
 *   static long square(long x) { return x * x; }
 *   MPROC_ELEMENT_FN(square_elem, square, long, long)
 *   ...
 *   long in[8] = {...}, out[8];
 *   MPROC_MAP_ARRAY(pool, square_elem, in, out, NULL, &err, MPROC_FOREVER);
 *
 * Design notes.  A C function pointer cannot carry its element types to a
 * later call, so MPROC_ELEMENT_FN defines, next to the byte-level element
 * function, two typedefs named after it (mproc__in_<name>, mproc__out_<name>)
 * that the calling macros look up by name.  Checks are _Static_assert
 * declarations inside an unevaluated sizeof(struct {...}), which C17 allows
 * in any expression: the function's type against the declared element types
 * (_Generic on the function designator), each array's element type against
 * them (_Generic on in[0] and out[0], whose qualifiers lvalue conversion
 * drops, so a const input array is accepted), and for the _ARRAY forms that
 * both arguments are arrays, not pointers (with GCC or Clang, where
 * __builtin_types_compatible_p tells an array from a pointer), and that the
 * output array holds as many elements as the input.  Everything expands to
 * the public byte-level calls of pool.h, so the typed and untyped forms can
 * be mixed freely.
 *
 * Element types must be complete object types that are not arrays (wrap a
 * fixed-size string in a struct): _Generic cannot match an array type.
 * Macro arguments that name arrays are evaluated more than once, inside
 * sizeof only for all but one use; pass plain names or simple expressions. */
#ifndef MPROC_TYPED_H
#define MPROC_TYPED_H

#include "pool.h"

#include <string.h>

/* _Generic and _Static_assert in expressions are C; C++ has templates. */
#ifndef __cplusplus

/* Defines `static int name(const void *in, void *out)`, an element function
 * for map/imap that calls `out_type fn(in_type)`.  Fails to compile when fn
 * does not have exactly that type. */
#define MPROC_ELEMENT_FN(name, fn, in_type, out_type)                                              \
  typedef in_type mproc__in_##name;                                                                \
  typedef out_type mproc__out_##name;                                                              \
  _Static_assert(_Generic((fn), out_type(*)(in_type) : 1, default : 0),                            \
                 "MPROC_ELEMENT_FN: " #fn " is not " #out_type " " #fn "(" #in_type ")");          \
  static int name(const void *mproc__in, void *mproc__out) {                                       \
    *(out_type *)mproc__out = (fn)(*(const in_type *)mproc__in);                                   \
    return 0;                                                                                      \
  }

/* The same for an element function that can fail:
 * `int fn(const in_type *in, out_type *out)` returning 0 or a non-zero code
 * (which fails the map with MPROC_ETASK, the code and the item's index). */
#define MPROC_ELEMENT_FN_CHECKED(name, fn, in_type, out_type)                                      \
  typedef in_type mproc__in_##name;                                                                \
  typedef out_type mproc__out_##name;                                                              \
  _Static_assert(_Generic((fn), int (*)(const in_type *, out_type *) : 1, default : 0),            \
                 "MPROC_ELEMENT_FN_CHECKED: " #fn " is not int " #fn "(const " #in_type            \
                 " *, " #out_type " *)");                                                          \
  static int name(const void *mproc__in, void *mproc__out) {                                       \
    return (fn)((const in_type *)mproc__in, (out_type *)mproc__out);                               \
  }

/* 0, evaluated at compile time; fails to compile unless `expr` (not
 * evaluated) has type `type` after lvalue conversion. */
#define MPROC__CHECK_TYPE(expr, type, msg)                                                         \
  (0 * sizeof(struct {                                                                             \
     _Static_assert(_Generic((expr), type : 1, default : 0), msg);                                 \
     int mproc__unused;                                                                            \
   }))

/* With GCC and Clang: 0, failing to compile when `a` is a pointer rather
 * than an array (sizeof would then measure the pointer). */
#if defined(__GNUC__) || defined(__clang__)
#define MPROC__CHECK_ARRAY(a, msg)                                                                 \
  (0 * sizeof(struct {                                                                             \
     _Static_assert(!__builtin_types_compatible_p(__typeof__(a), __typeof__(&(a)[0])), msg);       \
     int mproc__unused;                                                                            \
   }))
#else
#define MPROC__CHECK_ARRAY(a, msg) 0
#endif

/* Elements in array `a` (an array, not a pointer: checked with GCC/Clang). */
#define MPROC_COUNTOF(a)                                                                           \
  (MPROC__CHECK_ARRAY(a, "MPROC_COUNTOF: " #a " is a pointer, not an array") +                     \
   sizeof(a) / sizeof((a)[0]))

/* Both element types of `name`'s arrays checked; 0 at compile time. */
#define MPROC__CHECK_ELEMENTS(name, in, out)                                                       \
  (MPROC__CHECK_TYPE((in)[0], mproc__in_##name,                                                    \
                     "the elements of " #in " are not the input type of " #name) +                 \
   MPROC__CHECK_TYPE((out)[0], mproc__out_##name,                                                  \
                     "the elements of " #out " are not the output type of " #name))

/* mproc_pool_map over n elements of `in` into `out` (pointers or arrays),
 * element sizes from `name`'s types. */
#define MPROC_MAP(pool, name, in, n, out, opts, err, timeout_ms)                                   \
  mproc_pool_map((pool), name, (in), (n) + MPROC__CHECK_ELEMENTS(name, in, out),                   \
                 sizeof(mproc__in_##name), (out), sizeof(mproc__out_##name), (opts), (err),        \
                 (timeout_ms))

/* mproc_pool_map over every element of array `in` into array `out`, which
 * must have at least as many elements. */
#define MPROC_MAP_ARRAY(pool, name, in, out, opts, err, timeout_ms)                                \
  MPROC_MAP(pool, name, in,                                                                        \
            MPROC_COUNTOF(in) +                                                                    \
                MPROC__CHECK_ARRAY(out, "MPROC_MAP_ARRAY: " #out " is a pointer") +                \
                MPROC__CHECK_FITS(in, out),                                                        \
            out, opts, err, timeout_ms)
#define MPROC__CHECK_FITS(in, out)                                                                 \
  (0 * sizeof(struct {                                                                             \
     _Static_assert(sizeof(out) / sizeof((out)[0]) >= sizeof(in) / sizeof((in)[0]),                \
                    "MPROC_MAP_ARRAY: " #out " has fewer elements than " #in);                     \
     int mproc__unused;                                                                            \
   }))

/* mproc_pool_map_async, typed as MPROC_MAP; *f as mproc_pool_map_async's. */
#define MPROC_MAP_ASYNC(pool, name, in, n, out, opts, f)                                           \
  mproc_pool_map_async((pool), name, (in), (n) + MPROC__CHECK_ELEMENTS(name, in, out),             \
                       sizeof(mproc__in_##name), (out), sizeof(mproc__out_##name), (opts), (f))

/* mproc_pool_imap with element sizes from `name`'s types.  The generator
 * writes a mproc__in_<name> per item (the type is not checked through the
 * generator's void pointer). */
#define MPROC_IMAP(pool, name, gen, gen_ctx, opts, it)                                             \
  mproc_pool_imap((pool), name, (gen), (gen_ctx), sizeof(mproc__in_##name),                        \
                  sizeof(mproc__out_##name), (opts), (it))

/* mproc_imap_next into *outp, checked to point at `name`'s output type. */
#define MPROC_IMAP_NEXT(it, name, outp, index, err, timeout_ms)                                    \
  mproc_imap_next((it),                                                                            \
                  (outp) + MPROC__CHECK_TYPE(*(outp), mproc__out_##name,                           \
                                             #outp                                                 \
                                             " does not point at the output type of " #name),      \
                  (index), (err), (timeout_ms))

/* Defines `static ssize_t name(const void *in, size_t len, void *out,
 * size_t room)`, an in-place item function for mproc_pool_map_bytes that
 * calls `out_type fn(const char *s, size_t len)` on each item (its bytes,
 * not NUL-terminated) and writes the value it returns as the item's result.
 * Fails to compile when fn does not have exactly that type. */
#define MPROC_STRING_FN(name, fn, out_type)                                                        \
  typedef out_type mproc__out_##name;                                                              \
  _Static_assert(_Generic((fn), out_type(*)(const char *, size_t) : 1, default : 0),               \
                 "MPROC_STRING_FN: " #fn " is not " #out_type " " #fn "(const char *, size_t)");   \
  static ssize_t name(const void *mproc__in, size_t mproc__len, void *mproc__out,                  \
                      size_t mproc__room) {                                                        \
    if (mproc__room < sizeof(out_type))                                                            \
      return (ssize_t)sizeof(out_type);                                                            \
    out_type mproc__r = (fn)((const char *)mproc__in, mproc__len);                                 \
    memcpy(mproc__out, &mproc__r, sizeof mproc__r);                                                \
    return (ssize_t)sizeof mproc__r;                                                               \
  }

/* mproc_pool_map_bytes of a MPROC_STRING_FN over the packed strings *in:
 * out[i] = fn(string i), `out` (an array or a pointer) holding in->n values
 * of `name`'s output type (checked).  Returns as mproc_pool_map_bytes. */
#define MPROC_MAP_STRINGS(pool, name, in, out, opts, err, timeout_ms)                              \
  mproc__map_strings((pool), name, (in),                                                           \
                     (out) + MPROC__CHECK_TYPE((out)[0], mproc__out_##name,                        \
                                               "the elements of " #out                             \
                                               " are not the output type of " #name),              \
                     sizeof(mproc__out_##name), (opts), (err), (timeout_ms))

/* MPROC_MAP_STRINGS's call: every result is `size` bytes (MPROC_STRING_FN
 * writes nothing else), so the packed results are the array itself. */
static inline int mproc__map_strings(mproc_pool *pool, mproc_map_bytes_fn fn,
                                     const struct mproc_packed *in, void *out, size_t size,
                                     const struct mproc_map_options *opts,
                                     struct mproc_task_error *err, int64_t timeout_ms) {
  struct mproc_packed res;
  int r = mproc_pool_map_bytes(pool, fn, in, &res, opts, err, timeout_ms);
  if (r == 0 && res.n > 0) {
    if (res.ends[res.n - 1] != res.n * size)
      r = MPROC_ECORRUPT; /* not made by a MPROC_STRING_FN of this size */
    else
      memcpy(out, res.data, res.n * size);
  }
  mproc_packed_free(&res);
  return r;
}

#endif /* __cplusplus */
#endif /* MPROC_TYPED_H */
