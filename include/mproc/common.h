/* mproc — common definitions: export macro, error codes, deadlines.
 *
 * Every public call that can fail returns an int: 0 (or a non-negative count)
 * on success, a negative code on failure.  Codes in [-4095, -1] are -errno
 * values from the operating system; codes in [MPROC_ERR_LAST, MPROC_ERR_FIRST]
 * are the library's own conditions.  MPROC_ERRNO_MAP is the single table both
 * the enum and mproc_strerror()/mproc_err_name() are generated from, so names
 * and messages cannot drift apart. */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one export macro: the build compiles with -fvisibility=hidden, so only
 * declarations marked MPROC_EXTERN are part of the shared object's ABI. */
#if defined(MPROC_BUILDING) && defined(__GNUC__)
#define MPROC_EXTERN __attribute__((visibility("default")))
#else
#define MPROC_EXTERN
#endif

/* First and last library-only code.  -10000 is far above any errno value
 * (Linux keeps them below 4096), so the two ranges never overlap. */
#define MPROC_ERR_FIRST (-10000)

/* X(NAME, value, message).  OS-derived entries are negative errno values and
 * are listed so the common ones have short, stable names: a code that means
 * what an errno means IS that errno (MPROC_ETIMEDOUT == -ETIMEDOUT), so a
 * caller may compare with either.  The library entries occupy the reserved
 * range and are never reused once released (MPROC_ERR_FIRST - 0 and - 1 were
 * ETIMEDOUT and ECANCELLED before 0.2; they stay retired). */
#define MPROC_ERRNO_MAP(X)                                                                         \
  X(EPERM, -EPERM, "operation not permitted")                                                      \
  X(ENOENT, -ENOENT, "no such file or directory")                                                  \
  X(E2BIG, -E2BIG, "argument list or environment too long")                                        \
  X(ESRCH, -ESRCH, "no such process")                                                              \
  X(EINTR, -EINTR, "interrupted system call")                                                      \
  X(EIO, -EIO, "i/o error")                                                                        \
  X(EBADF, -EBADF, "bad file descriptor")                                                          \
  X(ECHILD, -ECHILD, "no child processes")                                                         \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                                           \
  X(ENOMEM, -ENOMEM, "not enough memory")                                                          \
  X(EACCES, -EACCES, "permission denied")                                                          \
  X(EFAULT, -EFAULT, "bad address")                                                                \
  X(EBUSY, -EBUSY, "resource busy")                                                                \
  X(EEXIST, -EEXIST, "already exists")                                                             \
  X(EINVAL, -EINVAL, "invalid argument")                                                           \
  X(ENFILE, -ENFILE, "file table overflow")                                                        \
  X(EMFILE, -EMFILE, "too many open files")                                                        \
  X(EFBIG, -EFBIG, "file too large")                                                               \
  X(ENOSPC, -ENOSPC, "no space left on device")                                                    \
  X(EPIPE, -EPIPE, "broken pipe")                                                                  \
  X(ERANGE, -ERANGE, "result out of range")                                                        \
  X(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                                                  \
  X(ENOSYS, -ENOSYS, "system call not available on this kernel")                                   \
  X(EOVERFLOW, -EOVERFLOW, "value too large for defined data type")                                \
  X(EMSGSIZE, -EMSGSIZE, "message too long")                                                       \
  X(ENOTSUP, -ENOTSUP, "operation not supported")                                                  \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer")                                           \
  X(ETIMEDOUT, -ETIMEDOUT, "deadline passed before the operation finished")                        \
  X(ECANCELED, -ECANCELED, "operation was canceled")                                               \
  X(ECLOSED, MPROC_ERR_FIRST - 2, "object is closed, or every peer has gone")                      \
  X(ESTATE, MPROC_ERR_FIRST - 3, "call not valid in the object's current state")                   \
  X(EWORKERDIED, MPROC_ERR_FIRST - 4, "worker process died while running the task")                \
  X(EBROKEN, MPROC_ERR_FIRST - 5, "object is broken and can no longer be used")                    \
  X(EOWNERDEAD, MPROC_ERR_FIRST - 6, "previous owner died; state may be inconsistent")             \
  X(ENOTRECOVERABLE, MPROC_ERR_FIRST - 7,                                                          \
    "lock is not recoverable: owner died and state was not marked consistent")                     \
  X(ENOTOWNER, MPROC_ERR_FIRST - 8, "caller does not own the lock")                                \
  X(EOVERRELEASE, MPROC_ERR_FIRST - 9, "released more times than acquired")                        \
  X(ETASK, MPROC_ERR_FIRST - 10, "task reported an error")                                         \
  X(EINTERRUPTED, MPROC_ERR_FIRST - 11, "interrupted by SIGINT (Ctrl-C)")                          \
  X(EINITFAILED, MPROC_ERR_FIRST - 12, "worker initializer failed")                                \
  X(ETOOSMALL, MPROC_ERR_FIRST - 13, "buffer too small; nothing was consumed")                     \
  X(EEOF, MPROC_ERR_FIRST - 14, "end of stream: the peer closed its end")                          \
  X(EEMPTY, MPROC_ERR_FIRST - 15, "nothing to take: empty")                                        \
  X(EFULL, MPROC_ERR_FIRST - 16, "no room: full")                                                  \
  X(ECORRUPT, MPROC_ERR_FIRST - 17, "shared state failed a consistency check")                     \
  X(ECHILDFAILED, MPROC_ERR_FIRST - 18, "child failed before running its function")                \
  X(ENOFUNC, MPROC_ERR_FIRST - 19, "function cannot be found in the child's program image")

/* The error codes as an enum: MPROC_EINVAL, MPROC_ETIMEDOUT, ... */
typedef enum {
#define MPROC__ERR_ENUM(name, value, msg) MPROC_##name = (value),
  MPROC_ERRNO_MAP(MPROC__ERR_ENUM)
#undef MPROC__ERR_ENUM
      MPROC_ERR_LAST = MPROC_ERR_FIRST - 19
} mproc_errno_t;

/* A human-readable message for any code (library code, -errno, or unknown).
 * The returned string is static; never NULL. */
MPROC_EXTERN const char *mproc_strerror(int err);
/* The symbolic name of a code, e.g. "MPROC_ETIMEDOUT" or "EBADF" for a -errno
 * the table does not list; "MPROC_EUNKNOWN" for anything else.  Static. */
MPROC_EXTERN const char *mproc_err_name(int err);

/* Deadlines.  Every blocking call takes `int64_t timeout_ms`, relative to the
 * moment of the call: -1 waits forever, 0 polls once, >0 waits at most that
 * many milliseconds and then fails with MPROC_ETIMEDOUT.  Callers holding an
 * absolute deadline convert it with mproc_timeout_until().  Signals never
 * shorten or lengthen a wait: interrupted system calls are retried against the
 * same absolute deadline. */
#define MPROC_FOREVER ((int64_t)-1)
#define MPROC_POLL ((int64_t)0)

/* Milliseconds on CLOCK_MONOTONIC: the clock every deadline is measured on. */
MPROC_EXTERN int64_t mproc_now_ms(void);
/* Absolute deadline `timeout_ms` from now (-1 stays -1: forever). */
MPROC_EXTERN int64_t mproc_deadline_after(int64_t timeout_ms);
/* Remaining relative timeout until an absolute deadline: -1 for forever,
 * 0 once the deadline has passed. */
MPROC_EXTERN int64_t mproc_timeout_until(int64_t deadline_ms);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_COMMON_H */
