/* mproc — shared memory blocks and typed shared values/arrays (Python's SharedMemory, Value,
 * Array). */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include "common.h"

#endif /* MPROC_SHM_H */
