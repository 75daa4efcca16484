/* Futex helpers (src/futex.c). */
#ifndef MPROC_FUTEX_H
#define MPROC_FUTEX_H

#include "internal.h"

#include <stdatomic.h>

/* Sleep while *addr == expected, until woken or the absolute deadline
 * (mproc_now_ms() clock, -1 forever).  Returns 0 when woken, when the value
 * already differed, or on a signal (callers loop and re-check), or
 * MPROC_ETIMEDOUT, or -errno. */
int mproc__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline_ms, bool shared);
/* Wake up to n waiters (INT_MAX for all).  Returns how many were woken, or
 * -errno. */
int mproc__futex_wake(_Atomic uint32_t *addr, int n, bool shared);

#endif /* MPROC_FUTEX_H */
