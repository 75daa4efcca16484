/* mproc — process-shared synchronization (Python's Lock, RLock, Semaphore, Event, Condition,
 * Barrier). */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include "common.h"

#endif /* MPROC_SYNC_H */
