/* mproc — processes (Python's multiprocessing.Process). */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include "common.h"

#endif /* MPROC_PROCESS_H */
