/* mproc — the process pool and futures (Python's Pool and ProcessPoolExecutor). */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "common.h"

#endif /* MPROC_POOL_H */
