/* Revoking a parked lock word (src/park_revoke.c): the one wait shared by
 * the queue's sides (queue.h, "parking a side's lock") and the Lock
 * (sync.h, "parking a Lock"). */
#ifndef MPROC_PARK_REVOKE_H
#define MPROC_PARK_REVOKE_H

#include "tidlock.h"

#include <stdatomic.h>
#include <stdint.h>

/* Takes over the word `cur` (parked by another thread, read by the caller)
 * of `m`: counts the caller in *revoke, makes the heavy fence and waits
 * until the parker is outside its critical section (*busy 0), then takes
 * the word with a compare-and-swap from exactly `cur`.  Returns 0 or
 * MPROC_EOWNERDEAD (the parker died inside) when the caller holds the lock
 * now, 1 when the word changed (start the acquire again), MPROC_ETIMEDOUT
 * at the absolute deadline (mproc_now_ms clock; -1: none), or -errno. */
int mproc__park_revoke(mproc__tidlock *m, uint64_t cur, _Atomic uint32_t *revoke,
                       _Atomic uint32_t *busy, int64_t deadline_ms);

#endif /* MPROC_PARK_REVOKE_H */
