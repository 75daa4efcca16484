/* mproc — shared memory blocks and typed shared values/arrays (Python's SharedMemory, Value,
 * Array). */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include "common.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- shared memory blocks ---------------------------------------------
 *
 * A block is a run of bytes mapped read-write into every process that uses
 * it.  The handle (mproc_shm) is private to the process; the bytes are
 * shared.  Two kinds:
 *
 *  - anonymous (mproc_shm_new): a memfd, never visible in /dev/shm, freed by
 *    the kernel with its last fd and mapping.  Children forked after it share
 *    the mapping; an unrelated process gets it by receiving the fd
 *    (mproc_shm_fd) and calling mproc_shm_from_fd.
 *  - named (mproc_shm_create / mproc_shm_attach, Python's SharedMemory): an
 *    object in /dev/shm, created exclusively with mode 0600, attachable by name.
 *    Ownership: the name lives exactly as long as some process has the block
 *    attached.  It is removed when the last attached process closes it or
 *    dies, and never while a live process still has it attached (unless a user
 *    calls mproc_shm_unlink explicitly).  Deaths are covered by a tiny keeper
 *    process per named block (see docs/reference/shm.md).
 *
 * Blocks of any size the system allows work, including above 4 GiB (pages are
 * allocated when first touched). */
typedef struct mproc_shm mproc_shm;

/* Longest name accepted, including the leading '/'. */
#define MPROC_SHM_NAME_MAX 200

/* Create an anonymous block of `size` (> 0) zeroed bytes. */
MPROC_EXTERN int mproc_shm_new(mproc_shm **out, size_t size);
/* Map a block received as an fd (e.g. over a Unix socket).  The fd is
 * duplicated: the caller keeps ownership of `fd`.  The fd of a named block
 * maps its bytes (after the header), without a name. */
MPROC_EXTERN int mproc_shm_from_fd(mproc_shm **out, int fd);

/* Create a named block of `size` (> 0) zeroed bytes.  `name` is "/something"
 * (one leading slash, no other, at most MPROC_SHM_NAME_MAX bytes) or NULL for
 * a fresh name the library makes up (read it with mproc_shm_name; one that
 * happens to exist is replaced by another).  A name that already exists is
 * never reused: -EEXIST. */
MPROC_EXTERN int mproc_shm_create(mproc_shm **out, const char *name, size_t size);
/* Attach to an existing named block.  -ENOENT if there is no such name (or it
 * is being removed), -EACCES if the object belongs to another user,
 * MPROC_ECORRUPT if the object was not made by mproc_shm_create (a squatted
 * name). */
MPROC_EXTERN int mproc_shm_attach(mproc_shm **out, const char *name);

/* The block's bytes (page aligned), size, name (NULL for anonymous blocks),
 * and fd (valid until close; the caller must not close it).  NULL/0/-1 for a
 * NULL handle. */
MPROC_EXTERN void *mproc_shm_addr(const mproc_shm *shm);
MPROC_EXTERN size_t mproc_shm_size(const mproc_shm *shm);
MPROC_EXTERN const char *mproc_shm_name(const mproc_shm *shm);
MPROC_EXTERN int mproc_shm_fd(const mproc_shm *shm);

/* Remove the name of a named block now: no new process can attach, processes
 * already attached keep their mapping.  MPROC_EINVAL for an anonymous block,
 * -ENOENT if the name was already removed. */
MPROC_EXTERN int mproc_shm_unlink(mproc_shm *shm);
/* Unmap the block and free the handle.  For a named block, the last attached
 * process to close also removes the name. */
MPROC_EXTERN int mproc_shm_free(mproc_shm *shm);

/* ---- typed shared values and arrays (Python's Value, Array, Raw*) -------- */

typedef enum {
  MPROC_TYPE_INT8 = 1,
  MPROC_TYPE_UINT8,
  MPROC_TYPE_INT16,
  MPROC_TYPE_UINT16,
  MPROC_TYPE_INT32,
  MPROC_TYPE_UINT32,
  MPROC_TYPE_INT64,
  MPROC_TYPE_UINT64,
  MPROC_TYPE_FLOAT,
  MPROC_TYPE_DOUBLE,
  MPROC_TYPE_CHAR,
  MPROC_TYPE_SIZE,  /* size_t */
  MPROC_TYPE_BYTES, /* opaque elements of opts->elem_size bytes */
} mproc_type;

/* No lock: Python's RawValue/RawArray.  mproc_value_get_lock fails. */
#define MPROC_VALUE_RAW (1u << 0)

struct mproc_value_options {
  unsigned flags;   /* MPROC_VALUE_* */
  size_t elem_size; /* element size for MPROC_TYPE_BYTES, else 0 */
};

/* A Value is an Array of one element; both live in an anonymous shared
 * mapping, so processes forked after the call share them. */
typedef struct mproc_value mproc_value;

/* A value of `type` initialised from *init (NULL: zero). */
MPROC_EXTERN int mproc_value_new(mproc_value **out, mproc_type type, const void *init,
                                 const struct mproc_value_options *opts);
/* An array of `count` (> 0) elements initialised from init[0..count) (NULL:
 * zeros). */
MPROC_EXTERN int mproc_array_new(mproc_value **out, mproc_type type, size_t count, const void *init,
                                 const struct mproc_value_options *opts);
MPROC_EXTERN int mproc_value_free(mproc_value *v);
/* Map a Value/Array made by another process from its fd (mproc_object_fd
 * there; the caller keeps `fd`).  Released with mproc_value_free, which then
 * only unmaps it here.  Errors: MPROC_EINVAL (not a Value's fd),
 * MPROC_ECORRUPT (damaged header), -errno. */
MPROC_EXTERN int mproc_value_from_fd(mproc_value **out, int fd);

/* The elements themselves (Python's .value / indexing without the lock). */
MPROC_EXTERN void *mproc_value_ptr(const mproc_value *v);
MPROC_EXTERN size_t mproc_value_count(const mproc_value *v);
MPROC_EXTERN size_t mproc_value_elem_size(const mproc_value *v);
/* The lock guarding the value (an RLock, as in Python).  MPROC_ESTATE for a
 * raw value. */
MPROC_EXTERN int mproc_value_get_lock(const mproc_value *v, mproc_rlock **lock);

/* Copy elements [index, index+n) out / in, holding the lock (if any) for the
 * copy.  MPROC_ERANGE if the range leaves the array.  Blocks on the lock for
 * at most timeout_ms.  May return MPROC_EOWNERDEAD (copy done, the lock's
 * previous owner died: see mproc_rlock_acquire; the lock is marked consistent
 * again before returning since the copy itself is complete). */
MPROC_EXTERN int mproc_value_get(mproc_value *v, size_t index, size_t n, void *out,
                                 int64_t timeout_ms);
MPROC_EXTERN int mproc_value_set(mproc_value *v, size_t index, size_t n, const void *in,
                                 int64_t timeout_ms);

/* Lock-free atomic helpers for integer element types (INT*, UINT*, CHAR,
 * SIZE) on element `index`: *old (optional) receives the previous value.
 * Values are converted to/from the element type as C converts integers.
 * MPROC_ENOTSUP for float, double and bytes elements.  Never block. */
MPROC_EXTERN int mproc_value_fetch_add(mproc_value *v, size_t index, int64_t delta, int64_t *old);
/* Compare-exchange: if element == *expected, store desired and return 1;
 * otherwise store the current value in *expected and return 0. */
MPROC_EXTERN int mproc_value_compare_exchange(mproc_value *v, size_t index, int64_t *expected,
                                              int64_t desired);
MPROC_EXTERN int mproc_value_load(mproc_value *v, size_t index, int64_t *out);
MPROC_EXTERN int mproc_value_store(mproc_value *v, size_t index, int64_t value);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_SHM_H */
